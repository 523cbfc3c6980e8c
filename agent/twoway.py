"""Two-way sync, the source side. No echo (CONTRACT §4): what a cdc-agent `sql` target writes into a database
carries a marker, and every source skips the changes that carry one, so two-way sync does not loop.

The marker is the text `cdc-agent/<name of the writing agent>`: the PostgreSQL replication origin of the
writing session (pgoutput's Origin message), the trigger changelog's `origin` column (the session variable or
SQLite origin table the triggers read). MariaDB's binlog carries no text, only the `skip_replication` flag
(LOG_EVENT_SKIP_REPLICATION_F) that the writing session sets. A source skips *every* agent's marker, not only
its own: the changes the ERP agent writes into the CRM are the CRM agent's echo. docs/two-way-sync.md.
"""

from __future__ import annotations

ORIGIN_PREFIX = "cdc-agent/"
LOG_EVENT_SKIP_REPLICATION_F = 0x8000     # binlog event header flag of a session with skip_replication = 1


def origin_name(agent: str) -> str:
    """The marker a writing agent sets (a replication origin name, a session variable's value)."""
    return ORIGIN_PREFIX + agent


def is_echo(origin: str | None) -> bool:
    """True for a change a cdc-agent wrote: the sources skip it."""
    return origin is not None and origin.startswith(ORIGIN_PREFIX)


def owned_tables(cfg) -> dict[str, list[str]]:
    """Source table -> the `sql` targets whose `owns` names it (two-way sync). Their conflict detection compares
    the replica's values with the change's `before`, so those tables need a whole old row image in the log
    (PostgreSQL: REPLICA IDENTITY FULL; `cdc-agent check` says so)."""
    out: dict[str, list[str]] = {}
    for t in cfg.targets:
        for table in (getattr(t.options, "owns", None) or {}) if t.kind == "sql" else ():
            out.setdefault(table, []).append(t.name)
    return out
