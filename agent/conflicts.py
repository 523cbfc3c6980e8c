"""Conflicts of two-way sync in the agent's state (state_dir/spool.db, migrations/state/004_conflicts.sql) and
`cdc-agent conflicts -c agent.toml [--target NAME] [--json]` (CONTRACT §5).

A `sql` target with `owns` finds a conflict when a column it owns was changed at the target by someone else;
it overwrites the value and records the conflict, first in the target database (in the batch's transaction)
and then here (adapters/_sqlowns.py says why in that order). Here they are keyed by target + event id +
column, so a second copy (after a crash between the two) is ignored. Also counted here: source changes of
columns the source does not own, which the target passed over (`unowned_changes`).

Exit codes of the command: 0 listed (none or some), 1 the state cannot be read, 2 bad arguments.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections import Counter

import orjson

from .errors import SpoolError
from .spool import Spool


def _error(spool: Spool, e: sqlite3.Error) -> SpoolError:
    return SpoolError(f"spool {spool.path}: {e}; check the file and the filesystem of state_dir "
                      f"{spool.path.parent}")


def record(spool: Spool, target: str, rows: list[dict], unowned: Counter) -> None:
    """Store conflict rows (as the target database's cdc_agent_conflicts holds them) and add to the counts of
    unowned changes passed over, in one transaction."""
    if not rows and not unowned:
        return
    db = spool.db
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO conflicts (target, event_id, col, tbl, row_key, overwritten, "
                           "applied, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(target, r["event_id"], r["col"], r["tbl"], r["row_key"], r["overwritten"],
                             r["applied"], r["detected_at"]) for r in rows])
            db.executemany("INSERT INTO unowned_changes (target, tbl, col, changes) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (target, tbl, col) DO UPDATE SET changes = changes + excluded.changes",
                           [(target, t, c, n) for (t, c), n in unowned.items()])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise _error(spool, e) from e


def prune(spool: Spool, targets: list[str], retention_seconds: float, limit: int = 5000) -> int:
    """Drop up to `limit` conflicts of `targets` detected longer than `retention_seconds` ago (the audit trail
    would grow without bound in a long two-way sync); returns how many. By target and time, so each query
    is a range of the conflicts_by_time index. The counts of unowned changes stay (one row per column)."""
    cutoff = time.time() - retention_seconds
    deleted = 0
    try:
        for target in targets:
            if deleted >= limit:
                break
            old = spool.db.execute("SELECT 1 FROM conflicts WHERE target = ? AND detected_at < ? LIMIT 1",
                                   (target, cutoff)).fetchone()
            if old is None:
                continue            # the usual case: no write at all
            deleted += spool.db.execute(
                "DELETE FROM conflicts WHERE rowid IN (SELECT rowid FROM conflicts WHERE target = ? AND "
                "detected_at < ? ORDER BY detected_at LIMIT ?)", (target, cutoff, limit - deleted)).rowcount
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):         # a spool from before 004
            return deleted
        raise _error(spool, e) from e
    except sqlite3.Error as e:
        raise _error(spool, e) from e
    return deleted


def _query(spool: Spool, sql: str, params: tuple = ()) -> list[tuple]:
    try:
        return list(spool.db.execute(sql, params))
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):         # a spool from before 004 (read-only: not migrated)
            return []
        raise _error(spool, e) from e
    except sqlite3.Error as e:
        raise _error(spool, e) from e


def listing(spool: Spool, target: str | None = None) -> list[dict]:
    """Every recorded conflict, oldest first."""
    where, params = ("WHERE target = ?", (target,)) if target else ("", ())
    rows = _query(spool, "SELECT target, tbl, row_key, col, overwritten, applied, detected_at, event_id FROM "
                         f"conflicts {where} ORDER BY detected_at, tbl, row_key, col", params)
    return [{"target": t, "table": tbl, "key": key, "column": col, "overwritten": _load(ov), "applied": _load(ap),
             "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z",
             "event_id": eid} for t, tbl, key, col, ov, ap, at, eid in rows]


def _load(text: str | None):
    return None if text is None else orjson.loads(text)


def counts(spool: Spool) -> dict[str, dict[tuple[str, str], int]]:
    """target -> (table, column) -> conflicts."""
    out: dict[str, dict[tuple[str, str], int]] = {}
    for t, tbl, col, n in _query(spool, "SELECT target, tbl, col, count(*) FROM conflicts GROUP BY 1, 2, 3"):
        out.setdefault(t, {})[(tbl, col)] = n
    return out


def unowned_counts(spool: Spool) -> dict[str, dict[tuple[str, str], int]]:
    """target -> (table, column) -> source changes of that unowned column passed over."""
    out: dict[str, dict[tuple[str, str], int]] = {}
    for t, tbl, col, n in _query(spool, "SELECT target, tbl, col, changes FROM unowned_changes"):
        out.setdefault(t, {})[(tbl, col)] = n
    return out


# ---------------------------------------------------------------- the command


def add_parser(cmd) -> None:
    c = cmd("conflicts", "the conflicts sql targets with owns detected: table, key, column, both values")
    c.add_argument("--target", metavar="NAME", help="only this target's")
    c.add_argument("--json", action="store_true", help="one JSON object per line")


def run(cfg, args) -> int:
    sql_targets = [t.name for t in cfg.targets if t.kind == "sql"]
    if args.target is not None and args.target not in sql_targets:
        print(f"cdc-agent: {args.target!r} is not a sql target of this config (sql targets: "
              f"{', '.join(sql_targets) or 'none'})", file=sys.stderr)
        return 2
    spool = Spool(cfg.agent.state_dir, readonly=True)
    try:
        found = listing(spool, args.target)
    finally:
        spool.close()
    if args.json:
        for c in found:
            sys.stdout.write(orjson.dumps(c).decode() + "\n")
        return 0
    if not found:
        print("no conflicts" + (f" for target {args.target}" if args.target else ""))
        return 0
    for c in found:
        print(f"{c['time']}  {c['target']}  {c['table']} key {c['key']}  {c['column']}: "
              f"{_show(c['overwritten'])} (set at the target) overwritten by {_show(c['applied'])}  "
              f"event {c['event_id']}")
    print(f"{len(found)} conflict(s)")
    return 0


def _show(v) -> str:
    return orjson.dumps(v).decode()
