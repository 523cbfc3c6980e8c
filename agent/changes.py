"""The row change: what every source yields and the mapper turns into events.

Values in `before`/`after` are already in their JSON form as CONTRACT §3 says (integers as int,
numeric as a string with its exact digits, timestamps as strings, bytea as base64, json embedded...),
so the mapper and the encoder never look at source types.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RowChange:
    table: str                          # "schema.table" (mysql: "db.table", sqlite: "main.table")
    op: str                             # "insert" | "update" | "delete" | "read"
    before: dict[str, Any] | None       # old row image, or None when the source has none
    after: dict[str, Any] | None        # new row image (None for deletes)
    position: str                       # fixed-width, unique per change, sorts in source commit order
    commit_time: str                    # source commit time, RFC 3339 UTC with microseconds and "Z"
    commit_ts: float                    # the same as epoch seconds (for lag and latency figures)
    txid: str | None = None             # source transaction id, as a string
    key_columns: tuple[str, ...] = ()   # the table's primary key columns, as the source knows them
    unavailable: tuple[str, ...] = ()   # columns whose new value the log does not carry (unchanged TOAST)
    id_key: str | None = None           # snapshot reads: the event id comes from this (request + row key)
    target: str | None = None           # snapshot reads of `cdc-agent snapshot --target`: only that target


# ---------------------------------------------------------------- what a source yields to the capture core
# A source's `poll` returns a list of these, in stream order; `agent/capture.py` assembles them into
# SourceBatches (batching, carrying an open transaction over, checkpoints) once for every source kind.


@dataclass(slots=True, frozen=True)
class Begin:
    """A source transaction starts; the RowChanges that follow belong to it until its Commit."""

    txid: str | None = None
    commit_ts: float = 0.0              # its commit time as epoch seconds, when known at Begin (lag)


@dataclass(slots=True, frozen=True)
class Commit:
    """The transaction ends. Resuming from `checkpoint` replays nothing before it and skips nothing after.
    A Commit with no changes before it (DDL, a rollback, a position learnt at start) is still a checkpoint."""

    checkpoint: str


@dataclass(slots=True, frozen=True)
class Keepalive:
    """The stream is alive and nothing is in flight (caught up): a batch in hand need not wait longer."""


@dataclass(slots=True, frozen=True)
class Watermark:
    """A marker the agent wrote through the log (snapshot windows, DBLog): `name` identifies the window,
    `kind` is "low" or "high"."""

    name: str
    kind: str
    position: str = ""                  # where it lies in the stream (snapshot rows read at it sort after it)


Item = Begin | RowChange | Commit | Keepalive | Watermark


@dataclass(slots=True)
class SourceBatch:
    """What one `Source.read` call returns.

    `checkpoint` is set when the batch ends on a transaction boundary: resuming from it replays
    nothing of this batch and skips nothing after it. Mid-transaction batches (a huge transaction
    is read in pieces to keep memory bounded) carry None; their changes are spooled, and a restart
    replays the whole transaction, which the spool deduplicates by event identity.
    """

    changes: list[RowChange] = field(default_factory=list)
    checkpoint: str | None = None


@dataclass(slots=True)
class SourceStatus:
    connected: bool = False
    position: str | None = None            # position of the last change read
    lag_seconds: float | None = None       # time since the commit of the oldest change not yet spooled
    retained_wal_bytes: int | None = None  # postgres: WAL the slot holds back
    error: str | None = None               # last connection problem, secrets removed
    skipped_echo: int = 0                  # changes skipped since start: a cdc-agent wrote them (agent/twoway.py)


@dataclass(slots=True)
class CheckItem:
    """One line of `cdc-agent check`: what was checked, whether it passed, and the fix if not."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
    warning: bool = False                  # failed, but capture still works (shown, exit stays 0)


def rule_column_checks(rules: Iterable[Any], table: str, columns: Iterable[str], file: str) -> list[CheckItem]:
    """`cdc-agent check`, for each source kind once it has read a table's columns: an [[events]] rule whose
    changed, key, fields or values name a column the table lacks would never fire (changed), dead-letter
    every change (key), or leave a field out without a word (fields, values)."""
    have = set(columns)
    items: list[CheckItem] = []
    for i, r in enumerate(rules):
        if r.table != table:
            continue
        named = [("changed", c) for c in r.changed or ()] + [("key", c) for c in r.key or ()] \
            + [("fields", c) for _, c in r.fields or ()] + [("values", c) for c in r.values]
        missing = [(k, c) for k, c in named if c not in have]
        if missing:
            k, c = missing[0]
            items.append(CheckItem(f"columns {table}", False,
                                   f"events[{i}] ({r.type}): {k} names column {c!r}, which {table} does not have "
                                   f"(columns: {', '.join(sorted(have))})",
                                   f"fix events[{i}].{k} in {file}, or add the column to the table"))
    return items
