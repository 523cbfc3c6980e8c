"""Outbox routing (docs/catalog.md): an application writes its events into an outbox table in its own
transaction; each inserted row becomes one event of the type its row names, with its payload as `data`.

Updates and deletes of outbox rows emit nothing (the agent's own `delete_after` deletes included). The
event id is derived from the row's primary key, not from its log position: the same row read again (a
replayed transaction, a snapshot) gives the same id, so consumers and the spool deduplicate it. The
outbox key must therefore never be reused (a sequence or a UUID).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import orjson

from . import rawjson
from .changes import RowChange
from .config import EVENT_TYPE_RE, Config, OutboxRule
from .errors import CdcError
from .secrets import redact

log = logging.getLogger(__name__)

EXTENSION_RE = re.compile(r"^[a-z0-9]{1,20}$")      # CloudEvents 1.0 attribute naming
RESERVED = frozenset({"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "position",
                      "txid", "data", "dataschema", "data_base64"})


class OutboxUnmappable(Exception):
    """The row cannot become an event (no type, payload not JSON, ...): a dead letter with the reason."""


def outbox_event_id(agent: str, table: str, key: dict[str, Any]) -> str:
    ident = orjson.dumps([agent, "outbox", table, [[k, v] for k, v in key.items()]], default=rawjson.default)
    return hashlib.blake2b(ident, digest_size=16).hexdigest()


def _json_value(v: Any, what: str) -> Any:
    """A json/jsonb value (RawJson) stays as written; text must hold JSON; bytes (a blob) too."""
    if v is None or type(v) is rawjson.RawJson:
        return v
    if isinstance(v, str):
        parsed = rawjson.raw_json(v)
        if parsed is None:
            raise OutboxUnmappable(f"{what} is text that is not JSON")
        return parsed
    if isinstance(v, (dict, list, int, float, bool)):
        return v
    raise OutboxUnmappable(f"{what} is a {type(v).__name__}, not JSON")


def _scalar(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    return v if isinstance(v, str) else str(v)


def _subject(v: Any) -> str:
    """The aggregate key as the subject, written like a one-column key of a row event (never empty)."""
    from .mapping import subject_part
    return subject_part(v)


class OutboxMapper:
    """One `[[outbox]]` table's rows → events."""

    def __init__(self, rule: OutboxRule, agent: str):
        from .mapping import event_source     # here: mapping imports this module
        self.rule, self.agent = rule, agent
        self.source = event_source(agent, rule.table)
        self.types = frozenset(rule.types) if rule.types else None

    def event(self, ch: RowChange) -> tuple[str, str, str, bytes, dict[str, Any]] | None:
        """(id, type, subject, body, key) for an inserted (or snapshot-read) row; None for updates and deletes."""
        if ch.op not in ("insert", "read"):
            return None
        rule, row = self.rule, ch.after
        if row is None:
            raise OutboxUnmappable(f"{ch.op} on {ch.table} carries no row image")
        for col in (rule.type_column, rule.key_column, rule.payload_column):
            if col not in row:
                raise OutboxUnmappable(f"outbox column {col!r} is not in the row of {ch.table}")
        typ = row[rule.type_column]
        if not isinstance(typ, str) or not EVENT_TYPE_RE.fullmatch(typ):
            raise OutboxUnmappable(f"column {rule.type_column} holds {typ!r}, not an event type like order.placed")
        if self.types is not None and typ not in self.types:
            raise OutboxUnmappable(f"event type {typ!r} is not in the types of the outbox {rule.table} "
                                   f"(known: {', '.join(sorted(self.types))})")
        if not ch.key_columns:
            raise OutboxUnmappable(f"outbox table {ch.table} has no primary key: its rows need one for a stable id")
        key = {c: row.get(c) for c in ch.key_columns}
        subject = row[rule.key_column]
        event: dict[str, Any] = {
            "specversion": "1.0", "id": outbox_event_id(self.agent, rule.table, key), "source": self.source,
            "type": typ, "subject": _subject(subject), "time": ch.commit_time,
            "datacontenttype": "application/json", "position": ch.position, "txid": ch.txid,
        }
        if rule.headers_column is not None:
            event.update(self._extensions(row.get(rule.headers_column)))
        event["data"] = _json_value(row[rule.payload_column], f"column {rule.payload_column}")
        return event["id"], typ, event["subject"], orjson.dumps(event, default=rawjson.default), key

    def _extensions(self, raw: Any) -> dict[str, Any]:
        headers = _json_value(raw, f"column {self.rule.headers_column}")
        if headers is None:
            return {}
        if type(headers) is rawjson.RawJson:
            headers = orjson.loads(headers.text)
        if not isinstance(headers, dict):
            raise OutboxUnmappable(f"column {self.rule.headers_column} must hold a JSON object of attributes")
        out = {}
        for name, v in headers.items():
            if not EXTENSION_RE.match(name) or name in RESERVED:
                raise OutboxUnmappable(f"header {name!r} is not a CloudEvents extension attribute name "
                                       "(a-z0-9, at most 20, not a standard attribute)")
            if not isinstance(v, (str, int, bool)) or isinstance(v, float):
                raise OutboxUnmappable(f"header {name!r} must be a string, integer or boolean")
            out[name] = v
        return out


# ---------------------------------------------------------------- delete_after


class OutboxCleaner:
    """Deletes outbox rows whose events the spool holds (`delete_after = true`), on an ordinary connection,
    after the spool commit: a row is never deleted before its event is durable. A failed delete is kept
    and tried again with the next batch; rows left by a crash in between stay in the table, and are not
    emitted again (their inserts are behind the checkpoint)."""

    BATCH = 500

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.tables = {o.table for o in cfg.outbox if o.delete_after}
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self._conn: Any = None

    def __bool__(self) -> bool:
        return bool(self.tables)

    def consumed(self, keys: list[tuple[str, dict[str, Any]]]) -> None:
        for table, key in keys:
            if table in self.tables:
                self.pending.setdefault(table, []).append(key)
        if not self.pending:
            return
        try:
            for table in list(self.pending):
                rows = self.pending[table]
                while rows:
                    self._delete(table, rows[: self.BATCH])
                    del rows[: self.BATCH]
                del self.pending[table]
        except CdcError as e:
            self._drop_connection()
            log.warning("could not delete consumed outbox rows (%d waiting; tried again with the next batch): %s",
                        sum(map(len, self.pending.values())), redact(str(e)))

    def close(self) -> None:
        self._drop_connection()

    # -------------------------------------------------------------- per engine

    def _delete(self, table: str, keys: list[dict[str, Any]]) -> None:
        kind = self.cfg.source.kind
        cols = list(keys[0])
        try:
            if kind == "postgres":
                self._pg(table, cols, keys)
            elif kind == "mysql":
                self._mysql(table, cols, keys)
            else:
                self._trigger(table, cols, keys)
        except CdcError:
            raise
        except Exception as e:
            if _is_driver_error(e):
                raise CdcError(f"delete from outbox {table}: {e}") from None
            raise

    def _pg(self, table: str, cols: list[str], keys: list[dict]) -> None:
        import psycopg

        from .sources.postgres.common import conninfo
        if self._conn is None:
            self._conn = psycopg.connect(conninfo(self.cfg), autocommit=True)
        schema, name = table.split(".", 1)
        q = lambda s: '"' + s.replace('"', '""') + '"'   # noqa: E731
        cond = " AND ".join(f"{q(c)} = %s" for c in cols)
        with self._conn.transaction():
            with self._conn.cursor() as cur:
                cur.executemany(f"DELETE FROM {q(schema)}.{q(name)} WHERE {cond}", [[k[c] for c in cols] for k in keys])

    def _mysql(self, table: str, cols: list[str], keys: list[dict]) -> None:
        from .sources.mysql.common import control_connection, parse_dsn
        if self._conn is None:
            self._conn = control_connection(parse_dsn(self.cfg.source.dsn, str(self.cfg.path)))
        schema, name = table.split(".", 1)
        q = lambda s: "`" + s.replace("`", "``") + "`"   # noqa: E731
        cond = " AND ".join(f"{q(c)} = %s" for c in cols)
        with self._conn.cursor() as cur:
            cur.executemany(f"DELETE FROM {q(schema)}.{q(name)} WHERE {cond}", [[k[c] for c in cols] for k in keys])

    def _trigger(self, table: str, cols: list[str], keys: list[dict]) -> None:
        from .sources.trigger.db import Db
        from .sources.trigger.dsn import parse_dsn
        if self._conn is None:
            self._conn = Db(parse_dsn(self.cfg.source.dsn, str(self.cfg.path)), "source database")
        db = self._conn
        schema, name = table.split(".", 1)
        target = db.sql.quote(name) if db.dialect == "sqlite" else f"{db.sql.quote(schema)}.{db.sql.quote(name)}"
        cond = " AND ".join(f"{db.sql.quote(c)} = :k{i}" for i, c in enumerate(cols))
        for k in keys:
            db.execute(f"DELETE FROM {target} WHERE {cond}", {f"k{i}": k[c] for i, c in enumerate(cols)})

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def _is_driver_error(e: Exception) -> bool:
    mod = type(e).__module__
    return mod.startswith(("psycopg", "pymysql", "sqlalchemy", "pyodbc", "sqlite3")) or isinstance(e, OSError)
