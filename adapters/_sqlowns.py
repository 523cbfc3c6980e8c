"""Two-way sync on a `sql` target (CONTRACT §7 `owns`): the source writes only the columns it owns, and a
target-side change of an owned column is detected (a conflict), overwritten by the authoritative value, and
recorded.

Detection, per batch and table, inside the batch's transaction: the current values of the owned columns of
the rows the batch updates are read (`SELECT ... FOR UPDATE` on PostgreSQL/MySQL, UPDLOCK on SQL Server;
SQLite's BEGIN IMMEDIATE already excludes other writers) and compared with the `before` of the key's first
change in the batch (what the target should hold if nobody else wrote there), both in one comparable form of
the column's type (adapters/_sqlvalues.comparer_for: DECIMAL 12.5 = "12.50", a timestamptz = its instant,
jsonb = its JSON text). A difference is a conflict unless the target already holds the value being applied.

Where the record goes, and why in this order: the conflict rows are written into `cdc_agent_conflicts` *in
the target database, in the batch's transaction* (so they exist exactly when the overwrite happened: a
rolled-back batch leaves none, a committed one cannot lose them), then copied into the agent's state
(state_dir/spool.db, table conflicts, keyed by target + event id + column: a second copy is ignored) and
deleted from the target. A crash between commit and copy leaves them in the target table; the next open()
copies them. Recording in the spool first would keep records of batches that were then rolled back;
recording after commit only would lose them to a crash in between.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (Column, Float, MetaData, String, Table, Text, and_, bindparam, cast, delete, or_, select,
                        tuple_, type_coerce)
from sqlalchemy import types as sqltypes

CONFLICTS_TABLE = "cdc_agent_conflicts"


def conflicts_table(metadata: MetaData) -> Table:
    return Table(CONFLICTS_TABLE, metadata,
                 Column("agent", String(200), primary_key=True),
                 Column("target", String(200), primary_key=True),
                 Column("event_id", String(64), primary_key=True),
                 Column("col", String(128), primary_key=True),
                 Column("tbl", String(255), nullable=False),
                 Column("row_key", Text, nullable=False),
                 Column("overwritten", Text),
                 Column("applied", Text),
                 Column("detected_at", Float, nullable=False))


@dataclass(slots=True)
class Origin:
    """What the conflict check needs from the event a change came from."""

    event_id: str
    subject: str
    before: dict[str, Any] | None      # owned columns of `before`, target names, target-space values
    unowned: tuple[str, ...] = ()      # source columns the event changed that this source does not own


@dataclass(slots=True)
class Conflict:
    table: str                 # source table
    key: str                   # the row's key, |-joined (the event's subject)
    column: str                # target column
    overwritten: Any           # JSON-able
    applied: Any
    event_id: str
    detected_at: float

    def row(self, agent: str, target: str) -> dict:
        return {"agent": agent, "target": target, "event_id": self.event_id, "col": self.column, "tbl": self.table,
                "row_key": self.key, "overwritten": _dump(self.overwritten), "applied": _dump(self.applied),
                "detected_at": self.detected_at}


@dataclass
class Outcome:
    """What a batch did besides its rows: conflicts found, unowned changes passed over ((table, column) ->
    events)."""

    conflicts: list[Conflict] = field(default_factory=list)
    unowned: Counter = field(default_factory=Counter)


def _dump(v: Any) -> str:
    return orjson.dumps(v).decode()


def jsonable(v: Any, is_json: bool = False) -> Any:
    """A value read from or written to the target as JSON for the record (the event value forms, roughly)."""
    if v is None or isinstance(v, (bool, int, float, str)) and not (is_json and isinstance(v, str)):
        return v
    if is_json:
        try:
            return orjson.loads(v) if isinstance(v, (str, bytes)) else v
        except orjson.JSONDecodeError:
            return v if isinstance(v, str) else v.decode(errors="replace")
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return v.isoformat()
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, (uuid.UUID, dt.timedelta)):
        return str(v)
    if isinstance(v, (dict, list)):
        return v
    return str(v)


def _key_of(values) -> tuple:
    from adapters._sqlvalues import comparable
    return tuple(comparable(v) for v in values)


def read_current(conn, plan, keys: list[tuple], dialect: str) -> dict[tuple, dict[str, Any]]:
    """The owned columns' current values of the rows with `keys`, locked for this transaction, by comparable
    key. Values come as the driver gives them (no SQLAlchemy result processing: a text DATETIME another
    program wrote in SQLite must not fail to parse). One statement per 500 keys, built once per table."""
    owned = sorted(plan.owned)
    stmt = plan.statements.get("current")
    if stmt is None:
        stmt = plan.statements["current"] = _current_statement(plan, owned, dialect)
    out: dict[tuple, dict[str, Any]] = {}
    n = len(plan.key)
    for s in range(0, len(keys), 500):
        chunk = keys[s:s + 500]
        if dialect == "mssql" and n > 1:     # no row-value IN on SQL Server
            t = plan.table
            where = or_(*(and_(*(t.c[c] == v for c, v in zip(plan.key, k))) for k in chunk))
            rows = conn.execute(stmt.where(where))
        else:
            rows = conn.execute(stmt, {"keys": [k[0] for k in chunk] if n == 1 else chunk})
        for r in rows:
            out[_key_of(r[:n])] = dict(zip(owned, r[n:]))
    return out


def _current_statement(plan, owned: list[str], dialect: str):
    t = plan.table
    cols = [type_coerce(t.c[k], sqltypes.NullType()).label(f"k{i}") for i, k in enumerate(plan.key)] + \
           [(cast(t.c[c], Text) if c in plan.text_columns else type_coerce(t.c[c], sqltypes.NullType())).label(f"c{i}")
            for i, c in enumerate(owned)]
    stmt = select(*cols)
    if len(plan.key) == 1:
        stmt = stmt.where(t.c[plan.key[0]].in_(bindparam("keys", expanding=True)))
    elif dialect != "mssql":
        stmt = stmt.where(tuple_(*(t.c[c] for c in plan.key)).in_(bindparam("keys", expanding=True)))
    if dialect in ("postgresql", "mysql", "mariadb"):
        stmt = stmt.with_for_update()
    elif dialect == "mssql":
        stmt = stmt.with_hint(t, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
    return stmt


def check_rows(conn, dialect: str, items: list[tuple], now: float | None = None) -> tuple[list[Conflict], set]:
    """items: (plan, key tuple, row to write, Origin of the key's first change in the batch). Returns the
    conflicts, and the (source table, key) of rows whose owned columns already hold what would be written
    (their upsert is skipped: nothing to change, nothing to echo)."""
    now = time.time() if now is None else now
    conflicts: list[Conflict] = []
    unchanged: set = set()
    by_plan: dict[str, tuple[Any, list]] = {}
    for it in items:
        by_plan.setdefault(it[0].source, (it[0], []))[1].append(it)
    for plan, its in by_plan.values():
        current = read_current(conn, plan, [it[1] for it in its], dialect)
        for _plan, key, row, origin in its:
            cur = current.get(_key_of(key))
            if cur is None:
                continue                        # not in the target (deleted there, or new): inserted
            same = True
            for col in sorted(plan.owned):
                if col not in row:
                    continue
                cmp = plan.comparers[col]
                now_there, to_write = cmp(cur[col]), cmp(row[col])
                if now_there == to_write:
                    continue
                same = False
                before = origin.before or {}
                if col in before and cmp(before[col]) != now_there:
                    is_json = col in plan.json_columns
                    seen = now_there if col in plan.text_columns else _typed(plan, col, cur[col])
                    conflicts.append(Conflict(plan.source, origin.subject, col, jsonable(seen, is_json),
                                              jsonable(row[col], is_json), origin.event_id, now))
            if same:
                unchanged.add((plan.source, key))
    return conflicts, unchanged


def _typed(plan, col: str, raw: Any) -> Any:
    """A value as the driver read it, in the column's own type where it converts (SQLite's REAL 1.5 in a
    NUMERIC column: Decimal 1.5), for the record."""
    try:
        return plan.writers[col](raw)
    except (ValueError, TypeError):
        return raw


# ---------------------------------------------------------------- the record in the target database


def write_journal(conn, table: Table, agent: str, target: str, conflicts: list[Conflict], upsert) -> None:
    """Into cdc_agent_conflicts, in the batch's transaction; `upsert` is the dialect's insert-or-nothing."""
    if conflicts:
        rows = {(c.event_id, c.column): c.row(agent, target) for c in conflicts}
        conn.execute(upsert, list(rows.values()))


def read_journal(conn, table: Table, agent: str, target: str) -> list[dict]:
    t = table
    return [dict(r._mapping) for r in conn.execute(select(t).where(t.c.agent == agent, t.c.target == target))]


def clear_journal(conn, table: Table, agent: str, target: str, rows: list[dict]) -> None:
    t = table
    for r in rows:
        conn.execute(delete(t).where(t.c.agent == agent, t.c.target == target, t.c.event_id == r["event_id"],
                                     t.c.col == r["col"]))
