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

Values: the text protocol over the agent's own client (agent/sources/mysqlwire.py: the rows' bytes as they
come, no driver objects per value), session time zone UTC, through myvalues.select_column / text_rows, so a
row read equals the row the binlog gives for the same data.
The table's columns are read from the catalog around every chunk: a chunk read across an ALTER TABLE is
read again with the new shape.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from ... import myvalues
from ...config import Config
from ...errors import SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact
from ...snapshot import SnapshotError
from ..mysqlwire import AuthError, Connection, ServerError, WireError
from .common import parse_dsn, quote, server_address, signal_create_sql, signal_ident, signal_table

IDLE_CHECK_SECONDS = 300   # a connection idle this long is checked before a request uses it (wait_timeout)
LOCK_WAIT_SECONDS = 10      # a chunk waits this long for a metadata lock (an ALTER TABLE); then it is read again
# errors that end the statement, not the request: the capture loop reconnects and reads the chunk again
_RETRIABLE = {1053, 1152, 1153, 1158, 1159, 1160, 1161, 1205, 1213, 1317, 1927, 1969, 3024, 4031}
_DENIED = {1044, 1045, 1142, 1143, 1227}


class MysqlSnapshotReader:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))
        self.agent = cfg.agent.name
        self.signal = signal_ident(cfg)
        self._used = 0.0                    # when the connection last answered (monotonic)
        self._connect()
        self.mariadb = "mariadb" in self.conn.server_version.lower()
        self._signal_ok = False

    def _connect(self) -> None:
        d = self.dsn
        self.conn = Connection(d.unix_socket or d.host, d.port, d.user, d.password, connect_timeout=d.connect_timeout,
                               ssl_mode=d.ssl_mode, ssl_ca=d.ssl_ca, ssl_cert=d.ssl_cert, ssl_key=d.ssl_key)
        try:
            self.conn.connect()
        except Exception as e:
            raise self._error(e) from None
        # plain SQL semantics whatever the server's defaults: UTC, backslash escapes (the literals), short waits
        self._exec("SET time_zone = '+00:00', sql_mode = 'NO_ENGINE_SUBSTITUTION', "
                   f"lock_wait_timeout = {LOCK_WAIT_SECONDS}")

    def _fresh(self) -> None:
        """Before a request uses a connection that sat idle (no snapshot for a while): the server may have
        closed it (wait_timeout); connect again rather than fail the source. No window is open here."""
        if time.monotonic() - self._used < IDLE_CHECK_SECONDS:
            return
        try:
            self.conn.query("SELECT 1", timeout=self.dsn.connect_timeout)
            self._used = time.monotonic()
        except (ServerError, WireError):
            self.conn.close()
            self._connect()

    def close(self) -> None:
        self.conn.close()

    def _error(self, e: Exception) -> SourceError:
        where = server_address(self.dsn)
        if isinstance(e, AuthError) or (isinstance(e, ServerError) and e.code in _DENIED):
            return SourceFatal(f"MySQL {where} refused the agent's user {self.dsn.user!r}: {redact(str(e))}")
        if isinstance(e, ServerError):
            return SourceUnavailable(f"MySQL {where}: ({e.code}) {redact(e.message)}")
        if isinstance(e, WireError):
            return SourceUnavailable(f"MySQL {where}: {redact(str(e))}")
        raise e

    def _exec(self, sql: str) -> list[bytes]:
        try:
            rows = self.conn.query(sql)
        except (ServerError, WireError) as e:
            raise self._error(e) from None
        self._used = time.monotonic()
        return rows

    def _query(self, sql: str, *args: Any) -> list[list[str | None]]:
        """A catalog query, `%s` filled with literals; values as text."""
        if args:
            sql = sql % tuple(_literal_of(a) for a in args)
        return [[None if v is None else v.decode("utf-8", "replace") for v in myvalues.text_values(r)]
                for r in self._exec(sql)]

    # -- watermarks

    def watermark(self, name: str, kind: str) -> None:
        mark = f"{name}:{kind}"
        self._query(f"INSERT INTO {self.signal} (agent, mark) VALUES (%s, %s) ON DUPLICATE KEY UPDATE mark = %s",
                    self.agent, mark, mark)

    def _check_signal(self) -> None:
        """Once per connection: the signal table exists and the agent may write it. A request that cannot
        run fails with this message; streaming goes on."""
        if self._signal_ok:
            return
        db, name = signal_table(self.cfg)
        fix = (f"run `cdc-agent setup -c {self.cfg.path}` as a user with CREATE on it, or as an admin: "
               f"{signal_create_sql(self.cfg)}; GRANT INSERT, UPDATE ON {quote(db)}.{quote(name)} TO the agent's "
               f"user (docs/snapshots.md)")
        if not self._query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                           db, name):
            raise SnapshotError(f"the snapshot signal table {db}.{name} does not exist: {fix}")
        try:
            # privilege checks without writing a row (a statement that changes nothing logs nothing)
            self.conn.query(f"INSERT INTO {self.signal} (agent, mark) SELECT 'probe', '' FROM DUAL WHERE 1 = 0")
            self.conn.query(f"UPDATE {self.signal} SET mark = mark WHERE 1 = 0")
        except ServerError as e:
            if e.code in _DENIED:
                raise SnapshotError(f"the agent's user {self.dsn.user!r} may not write the snapshot signal table "
                                    f"{db}.{name} ({redact(e.message)}): GRANT INSERT, UPDATE ON "
                                    f"{quote(db)}.{quote(name)} TO '{self.dsn.user}'") from None
            raise self._error(e) from None
        except WireError as e:
            raise self._error(e) from None
        self._signal_ok = True

    # -- the table

    @staticmethod
    def _split(table: str) -> tuple[str, str]:
        schema, _, name = table.partition(".")
        return schema, name

    def key_columns(self, table: str) -> tuple[str, ...]:
        self._fresh()
        schema, name = self._split(table)
        if not self._query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                           schema, name):
            raise SnapshotError(f"table {table} does not exist (or the agent's user cannot see it)")
        self._check_signal()
        rows = self._query("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND "
                           "TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", schema, name)
        return tuple(str(r[0]) for r in rows)

    def estimate(self, table: str) -> int | None:
        rows = self._query("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                           "TABLE_NAME = %s", *self._split(table))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def _shape(self, table: str) -> tuple:
        """The columns as the binlog carries them (every column, generated and invisible ones too), in table
        order: (name, DATA_TYPE, DATETIME_PRECISION, logical type)."""
        schema, name = self._split(table)
        cols = self._query("SELECT COLUMN_NAME, DATA_TYPE, DATETIME_PRECISION FROM information_schema.COLUMNS "
                           "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", schema, name)
        logical: dict[str, str] = {}
        if self.mariadb:
            # what the stream's catalog read finds (myvalues.load_logical_types), for this table only
            checks = self._query("SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM "
                                 "information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND "
                                 "TABLE_NAME = %s AND CHECK_CLAUSE LIKE '%%json_valid(%%'", schema, name)
            types = [(schema, name, c[0], c[1]) for c in cols]
            logical = myvalues.logical_types_from_rows(types, [tuple(c) for c in checks]).get((schema, name), {})
        return tuple((str(c[0]), str(c[1]), int(c[2] or 0), logical.get(str(c[0]))) for c in cols)

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
            lits = [_literal_of(_key_param(types[k], v)) for k, v in zip(keys, after)]
            conds.append(_keyset([quote(k) for k in keys], [_literal(types[k], x) for k, x in zip(keys, lits)]))
        if where:
            conds.append(f"({where})")
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        schema, name = self._split(table)
        sql = (f"SELECT {', '.join(exprs)} FROM {quote(schema)}.{quote(name)}{cond} "
               f"ORDER BY {', '.join(quote(k) for k in keys)} LIMIT {int(limit)}")
        return sql, convs, key_at

    def validate(self, table: str, where: str | None) -> None:
        keys = self.key_columns(table)
        if not keys:
            raise SnapshotError(f"table {table} has no primary key: a snapshot reads in key order; add one "
                                f"(ALTER TABLE ... ADD PRIMARY KEY)")
        sql, _, _ = self._sql(table, self._shape(table), keys, None, where, 0)
        try:
            self.conn.query(sql)
        except ServerError as e:
            raise SnapshotError(f"--where {where!r} fails on {table}: {redact(e.message)}") from None
        except WireError as e:
            raise self._error(e) from None

    def read_chunk(self, table: str, keys: tuple[str, ...], after: list[str] | None, limit: int,
                   where: str | None) -> tuple[list[dict[str, Any]], list[str] | None]:
        for _attempt in range(5):
            shape = self._shape(table)
            sql, convs, key_at = self._sql(table, shape, keys, after, where, limit)
            try:
                raw = self.conn.query(sql)
            except WireError as e:
                raise self._error(e) from None
            except ServerError as e:
                if e.code in _RETRIABLE or e.code in _DENIED:
                    raise self._error(e) from None
                raise SnapshotError(f"snapshot read of {table} failed: ({e.code}) {redact(e.message)}") from None
            if self._shape(table) == shape:
                break
            # the table was altered while the chunk was read: read it again with the new shape
        else:
            raise SnapshotError(f"snapshot read of {table}: the table's columns keep changing")
        if not raw:
            return [], None
        rows = myvalues.text_rows(raw, list(zip([c[0] for c in shape], convs)))
        types = {c[0]: c[1].lower() for c in shape}
        last = myvalues.text_values(raw[-1])
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


def _key_text(dt: str, v: bytes | None) -> str:
    """A key value as stored in the request's progress (JSON): the database's text; binary keys in hex, BIT
    keys as their number."""
    assert v is not None                     # primary key columns are NOT NULL
    kind = _kind(dt)
    if dt == "bit":
        return str(int.from_bytes(v, "big"))
    if kind == "bin":
        return v.hex()
    return v.decode("utf-8", "replace")


def _key_param(dt: str, text: str) -> Any:
    kind = _kind(dt)
    if kind == "int":
        return int(text)
    if kind == "dec":
        return Decimal(text)
    if kind == "bin":
        return bytes.fromhex(text)
    return text


def _literal_of(v: Any) -> str:
    """An SQL literal (the session runs without NO_BACKSLASH_ESCAPES): numbers as they are, bytes as hex,
    text quoted and escaped."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bytes):
        return f"X'{v.hex()}'"
    s = str(v)
    for a, b in (("\\", "\\\\"), ("'", "\\'"), ("\0", "\\0"), ("\n", "\\n"), ("\r", "\\r"), ("\x1a", "\\Z")):
        s = s.replace(a, b)
    return f"'{s}'"
