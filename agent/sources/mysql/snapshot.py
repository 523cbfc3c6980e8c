"""Snapshot reads for the MySQL/MariaDB source (agent/snapshot.py has the method).

Watermarks: MySQL has no logical messages, so a watermark is a row written through the binlog. The agent
keeps a small signal table (`source.signal_table`, default `cdc_<agent>_signal`, in the DSN's database:
agent/sources/mysql/common.py), created by `setup` and by `run` when it may, with one row per agent. A
watermark is one autocommitted `INSERT ... ON DUPLICATE KEY UPDATE mark = '<window>:low|high'`; the binlog
stream (stream.py) turns that row event into a Watermark item instead of a change. The agent's user needs
INSERT and UPDATE on that table (and CREATE for setup to make it).

Chunks: one autocommit keyset SELECT per chunk (`WHERE pk > last ORDER BY pk LIMIT n`) on a normal
connection. InnoDB reads it from a consistent read view without row locks; the table's metadata lock lasts
as long as the statement (ALTER TABLE waits a few milliseconds at most). No FLUSH TABLES WITH READ LOCK, no
transaction left open.

Values: the text protocol without client conversions (text as str, binary data as bytes), session time
zone UTC, through myvalues.select_column, so a row read equals the row the binlog gives for the same data.
The table's columns are read from the catalog around every chunk: a chunk read across an ALTER TABLE is
read again with the new shape.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ... import myvalues
from ...config import Config
from ...secrets import redact
from ...snapshot import SnapshotError
from .common import (control_connection, driver_error, parse_dsn, quote, run_query, signal_create_sql,
                     signal_ident, signal_table)

LOCK_WAIT_SECONDS = 10      # a chunk waits this long for a metadata lock (an ALTER TABLE); then it is read again
# errors that end the statement, not the request: the capture loop reconnects and reads the chunk again
_RETRIABLE = {1053, 1152, 1153, 1158, 1159, 1160, 1161, 1205, 1213, 1317, 1927, 1969, 3024, 4031}
_DENIED = {1044, 1045, 1142, 1143, 1227}


class MysqlSnapshotReader:
    def __init__(self, cfg: Config):
        import pymysql
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))
        self.agent = cfg.agent.name
        self.signal = signal_ident(cfg)
        # no decoders (values come as the server's text), the usual encoders for parameters
        encoders = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
        self.conn = control_connection(self.dsn, conv=encoders)
        self._query("SET time_zone = '+00:00'")
        self._query(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}")
        self.mariadb = "mariadb" in self._query("SELECT VERSION()")[0][0].lower()
        self._signal_ok = False

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def _query(self, sql: str, args=None) -> list[tuple]:
        import pymysql
        try:
            return run_query(self.conn, sql, args)
        except pymysql.MySQLError as e:
            raise driver_error(e, self.dsn) from None

    # -- watermarks

    def watermark(self, name: str, kind: str) -> None:
        mark = f"{name}:{kind}"
        self._query(f"INSERT INTO {self.signal} (agent, mark) VALUES (%s, %s) ON DUPLICATE KEY UPDATE mark = %s",
                    (self.agent, mark, mark))

    def _check_signal(self) -> None:
        """Once per connection: the signal table exists and the agent may write it. A request that cannot
        run fails with this message; streaming goes on."""
        if self._signal_ok:
            return
        import pymysql
        db, name = signal_table(self.cfg)
        fix = (f"run `cdc-agent setup -c {self.cfg.path}` as a user with CREATE on it, or as an admin: "
               f"{signal_create_sql(self.cfg)}; GRANT INSERT, UPDATE ON {quote(db)}.{quote(name)} TO the agent's "
               f"user (docs/snapshots.md)")
        if not self._query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                           (db, name)):
            raise SnapshotError(f"the snapshot signal table {db}.{name} does not exist: {fix}")
        try:
            # privilege checks without writing a row (a statement that changes nothing logs nothing)
            run_query(self.conn, f"INSERT INTO {self.signal} (agent, mark) SELECT 'probe', '' FROM DUAL WHERE 1 = 0")
            run_query(self.conn, f"UPDATE {self.signal} SET mark = mark WHERE 1 = 0")
        except pymysql.MySQLError as e:
            if _code(e) in _DENIED:
                raise SnapshotError(f"the agent's user {self.dsn.user!r} may not write the snapshot signal table "
                                    f"{db}.{name} ({_message(e)}): GRANT INSERT, UPDATE ON {quote(db)}.{quote(name)} "
                                    f"TO '{self.dsn.user}'") from None
            raise driver_error(e, self.dsn) from None
        self._signal_ok = True

    # -- the table

    @staticmethod
    def _split(table: str) -> tuple[str, str]:
        schema, _, name = table.partition(".")
        return schema, name

    def key_columns(self, table: str) -> tuple[str, ...]:
        schema, name = self._split(table)
        if not self._query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                           (schema, name)):
            raise SnapshotError(f"table {table} does not exist (or the agent's user cannot see it)")
        self._check_signal()
        rows = self._query("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND "
                           "TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (schema, name))
        return tuple(r[0] for r in rows)

    def estimate(self, table: str) -> int | None:
        rows = self._query("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                           "TABLE_NAME = %s", (*self._split(table),))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def _shape(self, table: str) -> tuple:
        """The columns as the binlog carries them (every column, generated and invisible ones too), in table
        order: (name, DATA_TYPE, DATETIME_PRECISION, logical type)."""
        schema, name = self._split(table)
        cols = self._query("SELECT COLUMN_NAME, DATA_TYPE, DATETIME_PRECISION FROM information_schema.COLUMNS "
                           "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (schema, name))
        logical: dict[str, str] = {}
        if self.mariadb:
            # what the stream's catalog read finds (myvalues.load_logical_types), for this table only
            checks = self._query("SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM "
                                 "information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND "
                                 "TABLE_NAME = %s AND CHECK_CLAUSE LIKE '%%json_valid(%%'", (schema, name))
            types = [(schema, name, c[0], c[1]) for c in cols]
            logical = myvalues.logical_types_from_rows(types, checks).get((schema, name), {})
        return tuple((str(c[0]), str(c[1]), int(c[2] or 0), logical.get(c[0])) for c in cols)

    def _sql(self, table: str, shape: tuple, keys: tuple[str, ...], after: list[str] | None, where: str | None,
             limit: int) -> tuple[str, list, list[int]]:
        """(SQL, converters, where each key's text is in a result row)."""
        types = {c[0]: c[1].lower() for c in shape}
        exprs, convs = [], []
        for name, dt, fsp, logical in shape:
            expr, conv = myvalues.select_column(quote(name), dt, fsp, logical)
            exprs.append(expr)
            convs.append(conv)
        names = [c[0] for c in shape]
        key_at = []
        for k in keys:
            if types.get(k) in ("enum", "set"):
                # ORDER BY sorts them by index, and a comparison with a number compares the index
                exprs.append(f"({quote(k)} + 0)")
                key_at.append(len(exprs) - 1)
            else:
                key_at.append(names.index(k))
        conds = []
        if after is not None:
            # literals inlined (the connection's escaping): no %-formatting of the names or of --where
            lits = [self.conn.escape(_key_param(types[k], v)) for k, v in zip(keys, after)]
            conds.append(_keyset([quote(k) for k in keys], [_literal(types[k], x) for k, x in zip(keys, lits)]))
        if where:
            conds.append(f"({where})")
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        schema, name = self._split(table)
        sql = (f"SELECT {', '.join(exprs)} FROM {quote(schema)}.{quote(name)}{cond} "
               f"ORDER BY {', '.join(quote(k) for k in keys)} LIMIT {int(limit)}")
        return sql, convs, key_at

    def validate(self, table: str, where: str | None) -> None:
        import pymysql
        keys = self.key_columns(table)
        if not keys:
            raise SnapshotError(f"table {table} has no primary key: a snapshot reads in key order; add one "
                                f"(ALTER TABLE ... ADD PRIMARY KEY)")
        sql, _, _ = self._sql(table, self._shape(table), keys, None, where, 0)
        try:
            run_query(self.conn, sql)
        except pymysql.MySQLError as e:
            raise SnapshotError(f"--where {where!r} fails on {table}: {_message(e)}") from None

    def read_chunk(self, table: str, keys: tuple[str, ...], after: list[str] | None, limit: int,
                   where: str | None) -> tuple[list[dict[str, Any]], list[str] | None]:
        import pymysql
        for _attempt in range(5):
            shape = self._shape(table)
            sql, convs, key_at = self._sql(table, shape, keys, after, where, limit)
            try:
                raw = run_query(self.conn, sql)
            except pymysql.MySQLError as e:
                code = _code(e)
                if code is None or code >= 2000 or code in _RETRIABLE or code in _DENIED:
                    raise driver_error(e, self.dsn) from None
                raise SnapshotError(f"snapshot read of {table} failed: {_message(e)}") from None
            if self._shape(table) == shape:
                break
            # the table was altered while the chunk was read: read it again with the new shape
        else:
            raise SnapshotError(f"snapshot read of {table}: the table's columns keep changing")
        if not raw:
            return [], None
        names = [c[0] for c in shape]
        pairs = list(zip(names, convs))
        rows = []
        for r in raw:
            row: dict[str, Any] = {}
            for (name, conv), v in zip(pairs, r):
                row[name] = v if v is None or conv is None else conv(v)
            rows.append(row)
        types = {c[0]: c[1].lower() for c in shape}
        last = raw[-1]
        return rows, [_key_text(types[k], last[i]) for k, i in zip(keys, key_at)]


def _keyset(cols: list[str], marks: list[str]) -> str:
    """(cols) > (marks), in a form every MySQL and MariaDB turns into a range scan on the primary key."""
    if len(cols) == 1:
        return f"{cols[0]} > {marks[0]}"
    return f"({cols[0]} >= {marks[0]} AND ({cols[0]} > {marks[0]} OR {_keyset(cols[1:], marks[1:])}))"


def _kind(dt: str) -> str:
    if dt in myvalues.INT_TYPES or dt in ("bit", "enum", "set"):
        return "int"
    if dt in ("float", "double", "real", "double precision"):
        return "float"
    if dt == "decimal":
        return "dec"
    if dt in myvalues.BINARY_TYPES:
        return "bin"
    return "str"


def _literal(dt: str, lit: str) -> str:
    return f"CAST({lit} AS DOUBLE)" if _kind(dt) == "float" else lit


def _key_text(dt: str, v: Any) -> str:
    """A key value as stored in the request's progress (JSON): the database's text; binary keys in hex, BIT
    keys as their number."""
    if isinstance(v, bytes):
        return str(int.from_bytes(v, "big")) if dt == "bit" else v.hex()
    return str(v)


def _key_param(dt: str, text: str) -> Any:
    kind = _kind(dt)
    if kind == "int":
        return int(text)
    if kind == "dec":
        return Decimal(text)
    if kind == "bin":
        return bytes.fromhex(text)
    return text


def _code(e: Exception) -> int | None:
    return e.args[0] if e.args and isinstance(e.args[0], int) else None


def _message(e: Exception) -> str:
    return redact(str(e.args[1] if len(e.args) > 1 else e))
