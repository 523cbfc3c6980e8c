"""The source's column types, for `format = "debezium"` (agent/debezium.py).

A CloudEvent's data holds values in their contract forms (RFC 3339 strings, decimal strings, base64...),
which do not say that a string is a date. Debezium's envelope encodes by column type (a date as days since
the epoch, a timestamp as epoch micros...), so rendering it needs the types. They are read from the source
database's catalog (pg_attribute / information_schema) the first time a table is rendered, and kept in
`state_dir/column_types.json`, so rendering later (a restart, `dlq retry`, the source down) does not need
the database. A column the file does not know (added since) makes the table be read again, at most once a
minute (if the database cannot be reached then, those columns keep their contract form). A table whose
types were never read waits, like a target that is down, until the database can be reached: the target
never gets a value in another encoding than Debezium's.

Each column is kept as a short encoding name (`encoding_pg`, `encoding_mysql`) rather than the SQL type,
so the renderer has nothing to parse per event.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TargetUnavailable
from .secrets import redact

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

FILE_NAME = "column_types.json"
REFRESH_SECONDS = 60.0

PG_CATALOG_SQL = (
    "SELECT a.attname, t.typname, a.atttypmod, et.typname "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
MY_CATALOG_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, DATETIME_PRECISION FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION")


def _pg_precision(typmod: int) -> int:
    return 6 if typmod < 0 else typmod          # time/timestamp typmod is the precision itself


def encoding_pg(typname: str, typmod: int, elem: str | None = None) -> str:
    """The Debezium encoding of a PostgreSQL column (time.precision.mode=adaptive,
    interval.handling.mode=numeric, binary.handling.mode=bytes, decimal.handling.mode=string)."""
    if elem:
        inner = encoding_pg(elem.lstrip("_"), typmod)
        return f"array:{inner}" if inner else ""
    if typname == "date":
        return "date"
    if typname == "time":
        return "time_ms" if _pg_precision(typmod) <= 3 else "time_us"
    if typname == "timestamp":
        return "ts_ms" if _pg_precision(typmod) <= 3 else "ts_us"
    if typname == "timestamptz":
        return f"zoned_ts:{_pg_precision(typmod)}"
    if typname == "timetz":
        return "zoned_time"
    if typname == "interval":
        return "interval_us"
    if typname in ("json", "jsonb"):
        return "json_text"
    return ""                                   # the contract form is Debezium's too


def encoding_mysql(data_type: str, column_type: str, precision: int | None) -> str:
    """The Debezium MySQL connector's encoding (time.precision.mode=adaptive_time_microseconds,
    bigint.unsigned.handling.mode=long, decimal.handling.mode=string, binary.handling.mode=bytes)."""
    dt, ct = data_type.lower(), column_type.lower()
    if dt == "tinyint" and ct.startswith("tinyint(1)"):
        return "bool_int"                       # the agent's boolean is Debezium's 0/1
    if dt == "bigint" and "unsigned" in ct:
        return "ulong_wrap"
    if dt == "bit":
        n = int(ct[4:-1]) if ct.startswith("bit(") else 1
        return "bool" if n == 1 else f"bits:{n}"
    if dt == "date":
        return "date"
    if dt == "time":
        return "time_us"
    if dt == "datetime":
        return "ts_ms" if (precision or 0) <= 3 else "ts_us"
    if dt == "timestamp":
        return f"zoned_ts:{precision or 0}"
    if dt == "json":
        return "json_text"
    return ""


class ColumnTypes:
    """Column encodings per table for one agent; shared by the targets' workers (thread-safe)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.path = Path(cfg.agent.state_dir) / FILE_NAME
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {"kind": cfg.source.kind, "tables": {}}
        self._tried: dict[str, float] = {}
        try:
            loaded = json.loads(self.path.read_text())
            if loaded.get("kind") == cfg.source.kind:
                self.data = loaded
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s); column types are read from the source again", self.path, e)

    @property
    def server(self) -> dict[str, Any]:
        return self.data.get("server") or {}

    def table(self, table: str, columns) -> dict[str, str]:
        """Encodings of `table`'s columns; reads the catalog when a column in `columns` is not known."""
        with self.lock:
            known = self.data["tables"].get(table)
            if known is not None and all(c in known for c in columns):
                return known
            now = time.monotonic()
            if known is not None and now - self._tried.get(table, -REFRESH_SECONDS) < REFRESH_SECONDS:
                return known                # the rest are renamed fields (or a column dropped since)
            self._tried[table] = now
            for attempt in range(3):    # a brief server error (a temp table in a busy tmpdir) passes
                try:
                    server, cols = self._read(table)
                    break
                except Exception as e:  # noqa: BLE001 - the source down: values keep their contract form
                    error = e
                    time.sleep(0.5 * (attempt + 1))
            else:
                if known is not None:
                    log.warning("column types of %s could not be read again from the source (%s): columns "
                                "added since keep their contract form", table, redact(str(error)))
                    return known
                # never rendered in another shape than Debezium's: the delivery waits and retries, as for a
                # target that is down, with the reason in health
                raise TargetUnavailable(f'format = "debezium" needs the column types of {table} from the '
                                        f"source database, which could not be read: {redact(str(error))}")
            self.data["tables"][table] = cols
            self.data["server"] = {**self.server, **server}
            self._save()
            return cols

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, sort_keys=True))
        os.replace(tmp, self.path)

    def _read(self, table: str) -> tuple[dict, dict[str, str]]:
        schema, _, name = table.partition(".")
        if self.cfg.source.database_kind == "postgres":
            import psycopg
            from .sources.postgres.common import conninfo
            with psycopg.connect(conninfo(self.cfg), autocommit=True) as conn:
                rows = conn.execute(PG_CATALOG_SQL, (schema, name)).fetchall()
                row = conn.execute("SELECT current_database()").fetchone()
                assert row is not None      # SELECT current_database() always returns its one row
                db = row[0]
            return {"db": db}, {r[0]: encoding_pg(r[1], r[2], r[3]) for r in rows}
        if self.cfg.source.database_kind == "mysql":
            from .myvalues import load_logical_types
            from .sources.mysql.common import control_connection, parse_dsn
            from .sources.mysql.common import run_query as _query
            conn = control_connection(parse_dsn(self.cfg.source.dsn))
            try:
                rows = _query(conn, MY_CATALOG_SQL, (schema, name))
                # MariaDB's JSON is LONGTEXT with a json_valid check: the agent's logical type says so
                logical = load_logical_types(lambda sql: _query(conn, sql)).get((schema, name), {})
                (server_id, basename), = _query(conn, "SELECT @@server_id, @@log_bin_basename")
            finally:
                conn.close()
            base = os.path.basename(basename or "mysql-bin")
            return ({"server_id": int(server_id), "binlog_basename": base},
                    {r[0]: "json_text" if logical.get(r[0]) == "json" else encoding_mysql(r[1], r[2], r[3])
                     for r in rows})
        return {}, {}
