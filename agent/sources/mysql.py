"""Source kind `mysql`: MySQL 8 / MariaDB 10.5+ row binlog, read as a replica.

The agent connects like a replica (COM_REGISTER_SLAVE + COM_BINLOG_DUMP over its own small client,
agent/sources/mysqlwire.py) and decodes the stream with the pure decoder agent/binlog.py. Ordinary
queries (server settings, collations, the catalog) go through PyMySQL on short-lived connections.

Checkpoint (what the spool stores, set only after a transaction's XID / COMMIT / DDL):
    MariaDB: "gtid=0-1-42;file=mysql-bin.000003;pos=1234"   (gtid: one domain-server-seq per domain,
             comma-separated; empty when the server has written no GTID yet)
    MySQL:   "file=binlog.000003;pos=1234"
MariaDB resumes by GTID (@slave_connect_state) when the checkpoint has one, otherwise — and on MySQL —
by file and position (the end of the last whole transaction spooled).

Position of a change: "FFFFFFFF:OOOOOOOOOOOO:NNNNNNNN" — binlog file number (8 digits), byte offset of the
transaction's first event in that file (12 digits), ordinal of the change in the transaction (8 digits).
The binlog is written in commit order, so transaction starts sort in commit order; the value depends only
on the binlog, so a replay after a restart gives the same positions (and the same event ids).

No silent reconnects: a lost connection raises SourceUnavailable and the pipeline calls start() again
with the spool's checkpoint. A position the server no longer has (binlogs purged) raises SourceFatal.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .. import binlog
from ..changes import CheckItem, RowChange, SourceBatch, SourceStatus
from ..config import Config
from ..errors import ConfigError, SourceError, SourceFatal, SourceUnavailable, SpoolError
from ..secrets import redact
from .mysqlwire import AuthError, Connection, ServerError, WireError, tls_context

log = logging.getLogger("cdc_agent")

HEARTBEAT_SECONDS = 2.0          # the server sends a heartbeat after this long without events
DEAD_AFTER_SECONDS = 20.0        # nothing at all (not even a heartbeat) for this long: the connection is gone
MIN_RETENTION_SECONDS = 86400    # check warns when binlogs may be purged sooner than this
MARIA_SLAVE_CAPABILITY_GTID = 4

PURGED_HELP = ("the binlog the agent needs is no longer on the server (purged while the agent was stopped, "
               "or the server was reset). Changes between the agent's checkpoint and the oldest binlog are lost "
               "to capture. To go on: re-snapshot the captured tables for the consumers if they need them, then "
               "reset the agent's checkpoint so that it starts from the server's current position (when "
               "`cdc-agent status` shows nothing pending, stop the agent and remove state_dir/spool.db). Keep "
               "binlogs longer than the agent may be down (binlog_expire_logs_seconds)")


# ---------------------------------------------------------------- DSN


@dataclass(frozen=True)
class MysqlDsn:
    host: str
    port: int
    user: str
    password: str
    database: str | None
    unix_socket: str | None = None
    ssl_mode: str = "preferred"
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    connect_timeout: float = 10.0


_SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")


def parse_dsn(dsn: str, file: str = "agent.toml") -> MysqlDsn:
    """mysql://user:password@host:port/db?ssl_mode=required&ssl_ca=/path&unix_socket=/path&connect_timeout=10"""
    try:
        u = urlsplit(dsn)
        port = u.port
    except ValueError as e:
        raise ConfigError(file, "source.dsn", f"not a valid URL: {redact(str(e))}") from None
    if u.scheme not in ("mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql"):
        raise ConfigError(file, "source.dsn", 'must be a URL like "mysql://user:${PASSWORD}@host:3306/db"')
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    unknown = set(q) - {"ssl_mode", "ssl_ca", "ssl_cert", "ssl_key", "unix_socket", "connect_timeout", "charset"}
    if unknown:
        raise ConfigError(file, "source.dsn", f"unknown URL parameter {sorted(unknown)[0]!r} (allowed: ssl_mode, "
                                              f"ssl_ca, ssl_cert, ssl_key, unix_socket, connect_timeout)")
    ssl_mode = q.get("ssl_mode", "preferred").lower()
    if ssl_mode not in _SSL_MODES:
        raise ConfigError(file, "source.dsn", f"ssl_mode must be one of {', '.join(_SSL_MODES)}, got {ssl_mode!r}")
    if not u.username:
        raise ConfigError(file, "source.dsn", "names no user (mysql://USER:${PASSWORD}@host:port/db)")
    try:
        timeout = float(q.get("connect_timeout", 10))
    except ValueError:
        raise ConfigError(file, "source.dsn", "connect_timeout must be a number of seconds") from None
    return MysqlDsn(host=u.hostname or "127.0.0.1", port=port or 3306, user=unquote(u.username),
                    password=unquote(u.password or ""), database=unquote(u.path.lstrip("/")) or None,
                    unix_socket=q.get("unix_socket"), ssl_mode=ssl_mode, ssl_ca=q.get("ssl_ca"),
                    ssl_cert=q.get("ssl_cert"), ssl_key=q.get("ssl_key"), connect_timeout=timeout)


def _ssl_context(d: MysqlDsn):
    if d.ssl_mode == "disabled":
        return None
    return tls_context(d.ssl_mode, d.ssl_ca, d.ssl_cert, d.ssl_key)


def _where(d: MysqlDsn) -> str:
    return d.unix_socket or f"{d.host}:{d.port}"


def control_connection(d: MysqlDsn):
    """A PyMySQL connection for ordinary queries. Driver errors become SourceUnavailable / SourceFatal."""
    import pymysql
    kw = dict(user=d.user, password=d.password, charset="utf8mb4", autocommit=True,
              connect_timeout=d.connect_timeout, read_timeout=60, write_timeout=60)
    if d.unix_socket:
        kw["unix_socket"] = d.unix_socket
    else:
        kw.update(host=d.host, port=d.port)
    ctx = _ssl_context(d)
    if ctx is not None:
        kw["ssl"] = ctx
    try:
        try:
            return pymysql.connect(**kw)
        except pymysql.err.OperationalError as e:
            if d.ssl_mode == "preferred" and e.args and e.args[0] == 2026 and "ssl" in kw:
                kw.pop("ssl")                      # "preferred": the server offers no TLS, go on without
                return pymysql.connect(**kw)
            raise
    except pymysql.MySQLError as e:
        raise _driver_error(e, d) from None


def _driver_error(e: Exception, d: MysqlDsn) -> SourceError:
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    msg = redact(str(e.args[1] if len(e.args) > 1 else e))
    if code in (1045, 1044, 1142, 1227, 1370, 1698, 1251):          # access denied, privileges, auth plugin
        return SourceFatal(f"MySQL {_where(d)} refused the agent's user {d.user!r}: ({code}) {msg}")
    return SourceUnavailable(f"MySQL {_where(d)}: {msg}" + (f" ({code})" if code else ""))


def _query(conn, sql: str, args=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def _master_status(conn) -> list[tuple]:
    """SHOW MASTER STATUS, or its MySQL 8.2+ name SHOW BINARY LOG STATUS (8.4 dropped the old one)."""
    import pymysql
    try:
        return _query(conn, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:
        return _query(conn, "SHOW BINARY LOG STATUS")


def _replica_hosts(conn) -> list[tuple]:
    """SHOW SLAVE HOSTS, or SHOW REPLICAS (MySQL 8.0.22+; 8.4 dropped the old name). (server_id, host) rows."""
    import pymysql
    try:
        return [(r[0], r[1]) for r in _query(conn, "SHOW SLAVE HOSTS")]
    except pymysql.err.ProgrammingError:
        return [(r[0], r[1]) for r in _query(conn, "SHOW REPLICAS")]


def _var(conn, name: str):
    rows = _query(conn, "SHOW GLOBAL VARIABLES LIKE %s", (name,))
    return rows[0][1] if rows else None


# ---------------------------------------------------------------- checkpoints


def parse_checkpoint(s: str) -> dict[str, str]:
    """'gtid=...;file=...;pos=...' -> dict. Raises SourceFatal for anything else."""
    out = {}
    for part in s.split(";"):
        k, sep, v = part.partition("=")
        if not sep or k not in ("gtid", "file", "pos") or k in out:
            raise SourceFatal(f"the spooled checkpoint {s!r} is not a MySQL binlog checkpoint (was the source "
                              f"kind or server changed? reset the agent's state to start over)")
        out[k] = v
    if "file" not in out or "pos" not in out or not out["pos"].isdigit():
        raise SourceFatal(f"the spooled checkpoint {s!r} lacks a binlog file and position; reset the agent's state")
    return out


def format_checkpoint(gtids: dict[int, str] | None, file: str, pos: int) -> str:
    if gtids is None:
        return f"file={file};pos={pos}"
    state = ",".join(gtids[d] for d in sorted(gtids))
    return f"gtid={state};file={file};pos={pos}"


def _gtid_state(s: str) -> dict[int, str]:
    out = {}
    for g in filter(None, (x.strip() for x in s.split(","))):
        parts = g.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SourceFatal(f"bad MariaDB GTID {g!r} in the checkpoint; reset the agent's state")
        out[int(parts[0])] = g
    return out


@functools.lru_cache(maxsize=16)        # called per transaction; the file changes once per binlog rotation
def _file_number(name: str) -> int:
    m = re.search(r"\.(\d+)$", name)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- the source


class MysqlSource:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))
        self.server_id = cfg.source.server_id
        self._tables = {t: t for t in cfg.source.tables}
        self._conn: Connection | None = None
        self._error: str | None = None
        self._last_position: str | None = None
        self._last_event_ts: float | None = None
        self._caught_up = False
        self._reset_stream_state()

    # -- lifecycle

    def _reset_stream_state(self) -> None:
        self.mariadb = False
        self._parser: binlog.BinlogParser | None = None
        self._file = ""
        self._pos = 4
        self._gtids: dict[int, str] | None = None
        self._in_txn = False
        self._txn_has_begin = False
        self._txn_prefix = ""
        self._txn_gtid: str | None = None
        self._txn_domain: int | None = None
        self._txn_time = ""
        self._txn_ts = 0.0
        self._txid: str | None = None
        self._ordinal = 0
        self._checkpoint: str | None = None       # last transaction boundary read
        self._returned: str | None = None         # last checkpoint handed out
        self._carry: list[RowChange] = []
        self._last_packet = time.monotonic()
        self._json_cols: dict[tuple[str, str], set[str]] = {}
        self._json_seen: set[tuple[str, str]] = set()
        self._names: dict[str, str] = {}
        self._lower_names = False

    def start(self, checkpoint: str | None) -> None:
        self.close()
        self._reset_stream_state()
        d = self.dsn
        ctl = control_connection(d)
        try:
            version = _query(ctl, "SELECT VERSION()")[0][0]
            self.mariadb = "mariadb" in version.lower()
            own_id = int(_query(ctl, "SELECT @@server_id")[0][0])
            if own_id == self.server_id:
                raise SourceFatal(f"source.server_id {self.server_id} is the database server's own server_id; "
                                  f"give the agent a server_id no other server or replica uses")
            for name, want in (("log_bin", "ON"), ("binlog_format", "ROW")):
                val = str(_var(ctl, name) or "").upper()
                if val != want:
                    raise SourceFatal(f"{name} is {val or 'unset'} on {_where(d)}; binlog capture needs {want} "
                                      f"(run `cdc-agent check` for the fix)")
            meta = _var(ctl, "binlog_row_metadata")
            if meta is not None and str(meta).upper() != "FULL":
                raise SourceFatal(f"binlog_row_metadata is {meta} on {_where(d)}; the agent needs FULL to name "
                                  f"columns (SET GLOBAL binlog_row_metadata = 'FULL', and in my.cnf)")
            self._lower_names = str(_var(ctl, "lower_case_table_names") or "0") != "0"
            if self._lower_names:
                self._tables = {t.lower(): t for t in self.cfg.source.tables}
            collations = {int(i): cs for i, cs in _query(
                ctl, "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")}
            if self.mariadb:
                self._load_json_columns(ctl)
            if checkpoint is None:
                # GTID first: a commit between the two reads is then streamed (resume is by GTID), not skipped
                gtids = _gtid_state(str(_var(ctl, "gtid_binlog_pos") or "")) if self.mariadb else None
                status = _master_status(ctl)
                if not status:
                    raise SourceFatal(f"SHOW MASTER STATUS on {_where(d)} returned nothing: binary logging is off")
                file, pos = status[0][0], int(status[0][1])
                start = format_checkpoint(gtids, file, pos)
                self._returned = None                      # hand the starting point to the spool first
            else:
                start = checkpoint
                self._returned = checkpoint
        except SourceError:
            ctl.close()
            raise
        except Exception as e:
            ctl.close()
            raise _driver_error(e, d) from None
        ctl.close()

        cp = parse_checkpoint(start)
        self._file, self._pos = cp["file"], int(cp["pos"])
        self._gtids = _gtid_state(cp.get("gtid", "")) if self.mariadb else None
        if self.mariadb and "gtid" not in cp:
            self._gtids = {}
        self._checkpoint = start
        self._parser = binlog.BinlogParser(want=self._want, collations=collations,
                                           json_columns=self._json_columns if self.mariadb else None)
        self._open_stream(cp)
        log.info("mysql source: %s %s, streaming from %s as replica server_id %d", "MariaDB" if self.mariadb
                 else "MySQL", version, start, self.server_id)

    def _open_stream(self, cp: dict[str, str]) -> None:
        d = self.dsn
        conn = Connection(d.unix_socket or d.host, d.port, d.user, d.password, connect_timeout=d.connect_timeout,
                          ssl_mode=d.ssl_mode, ssl_ca=d.ssl_ca, ssl_cert=d.ssl_cert, ssl_key=d.ssl_key)
        try:
            conn.connect()
            conn.execute("SET @master_binlog_checksum = @@global.binlog_checksum, "
                         "@source_binlog_checksum = @@global.binlog_checksum")
            period = int(HEARTBEAT_SECONDS * 1_000_000_000)
            conn.execute(f"SET @master_heartbeat_period = {period}, @source_heartbeat_period = {period}")
            replica_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"cdc-agent:{self.cfg.agent.name}:{self.server_id}")
            conn.execute(f"SET @slave_uuid = '{replica_uuid}', @replica_uuid = '{replica_uuid}'")
            use_gtid = False
            if self.mariadb:
                conn.execute(f"SET @mariadb_slave_capability = {MARIA_SLAVE_CAPABILITY_GTID}")
                if self._gtids:
                    state = ",".join(self._gtids[k] for k in sorted(self._gtids))
                    conn.execute(f"SET @slave_connect_state = '{state}'")
                    conn.execute("SET @slave_gtid_strict_mode = 0, @slave_gtid_ignore_duplicates = 0")
                    use_gtid = True
            conn.register_replica(self.server_id, hostname=f"cdc-agent:{self.cfg.agent.name}"[:60])
            if use_gtid:
                conn.binlog_dump(self.server_id, "", 4)
            else:
                conn.binlog_dump(self.server_id, cp["file"], int(cp["pos"]))
            # the server answers with its made-up ROTATE, or with an error (1236: position purged): wait for
            # it here so that start() fails fast instead of the first read
            first = conn.read_event(d.connect_timeout)
            if first is None:
                raise WireError(f"no answer to the binlog request from {_where(d)} in {d.connect_timeout:.0f}s")
            ev = self._parser.parse(first)
            if ev.type in binlog.ROWS_OP or ev.type == binlog.TABLE_MAP:
                raise WireError("the binlog stream did not start with a ROTATE event")
            self._control(ev)
        except WireError as e:
            conn.close()
            self._error = redact(str(e))
            raise SourceUnavailable(self._error) from None
        except AuthError as e:
            conn.close()
            raise SourceFatal(f"MySQL {_where(d)} refused the agent's user {d.user!r}: {redact(str(e))}") from None
        except ServerError as e:
            conn.close()
            raise self._server_error(e) from None
        except binlog.BinlogError as e:
            conn.close()
            raise SourceFatal(f"cannot decode the binlog stream's first event: {e}") from None
        self._conn = conn
        self._last_packet = time.monotonic()
        self._error = None

    def _server_error(self, e: ServerError) -> SourceError:
        where = _where(self.dsn)
        if e.code == 1236:
            ckpt = self._returned or self._checkpoint
            msg = e.message.lower()
            if "purged" in msg or "could not find first log" in msg:
                return SourceFatal(f"binlogs purged: MySQL {where} no longer has the binlog at the agent's checkpoint "
                                   f"{ckpt} ({e.message}). {PURGED_HELP[0].upper()}{PURGED_HELP[1:]}")
            return SourceFatal(f"MySQL {where} refuses to stream from the agent's checkpoint {ckpt}: {e.message}. The "
                               f"checkpoint does not fit this server's binlog (a different, restored or reset server?). "
                               f"Reset the agent's checkpoint to start from the server's current position, and "
                               f"re-snapshot the captured tables for the consumers if they need it")
        if e.code in (1227, 1045, 1044, 1142):
            return SourceFatal(f"MySQL {where} refused replication for {self.dsn.user!r}: ({e.code}) {e.message}; "
                               f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the agent's user")
        # 1236-like conditions aside, a server-side error ends the stream: retry from the checkpoint
        return SourceUnavailable(f"MySQL {where} ended the binlog stream: ({e.code}) {e.message}")

    def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            c.close()

    def confirm(self, checkpoint: str) -> None:
        """Nothing to release: the server keeps binlogs by its own retention, not by replica progress."""

    def status(self) -> SourceStatus:
        lag = None
        if self._conn is not None:
            if self._caught_up or self._last_event_ts is None:
                lag = 0.0
            else:
                lag = max(0.0, round(time.time() - self._last_event_ts, 3))
        return SourceStatus(connected=self._conn is not None, position=self._last_position, lag_seconds=lag,
                            error=self._error)

    # -- catalog help for the decoder

    def _want(self, schema: str, table: str) -> bool:
        name = f"{schema}.{table}"
        if self._lower_names:
            name = name.lower()
        return name in self._tables

    def _load_json_columns(self, ctl) -> None:
        """MariaDB's JSON is LONGTEXT with a json_valid() CHECK; the binlog cannot tell it from text."""
        rows = _query(ctl, "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                           "WHERE CHECK_CLAUSE LIKE %s", ("%json_valid(%",))
        cols: dict[tuple[str, str], set[str]] = {}
        for schema, table, clause in rows:
            for col in re.findall(r"json_valid\(`((?:[^`]|``)+)`\)", clause):
                cols.setdefault((schema, table), set()).add(col.replace("``", "`"))
        self._json_cols = cols

    def _json_columns(self, schema: str, table: str) -> set[str]:
        key = (schema, table)
        if key in self._json_seen:
            # a new shape of a table seen before (ALTER TABLE): read the catalog again
            ctl = control_connection(self.dsn)
            try:
                self._load_json_columns(ctl)
            except Exception as e:
                raise _driver_error(e, self.dsn) from None
            finally:
                ctl.close()
        self._json_seen.add(key)
        return self._json_cols.get(key, set())

    # -- streaming

    def read(self, max_changes: int, max_wait: float) -> SourceBatch:
        conn = self._conn
        if conn is None:
            raise SourceUnavailable("the binlog stream is not connected")
        if self._returned is None and self._checkpoint is not None and not self._carry:
            # first read after a start without checkpoint: let the spool record where capture begins
            self._returned = self._checkpoint
            return SourceBatch([], self._checkpoint)
        changes = self._carry
        self._carry = []
        boundary_n, boundary_ckpt = -1, None
        parse = self._parser.parse
        deadline = time.monotonic() + max_wait
        try:
            while len(changes) < max_changes:
                if changes and not self._in_txn:
                    timeout = 0.0                       # a whole transaction in hand: return what is there
                else:
                    timeout = max(0.0, deadline - time.monotonic())
                raw = conn.read_event(timeout)
                if raw is None:
                    if not self._in_txn:
                        self._caught_up = True
                    if time.monotonic() - self._last_packet > DEAD_AFTER_SECONDS:
                        raise SourceUnavailable(f"no data and no heartbeat from MySQL {_where(self.dsn)} for "
                                                f"{DEAD_AFTER_SECONDS:.0f}s: connection presumed lost")
                    break
                self._last_packet = time.monotonic()
                ev = parse(raw)
                et = ev.type
                if et in binlog.ROWS_OP:
                    if ev.rows:
                        self._rows(ev, changes)
                    continue
                if et == binlog.TABLE_MAP:
                    tm = ev.table_map
                    if tm is not None and not tm.has_names and tm.columns:
                        raise SourceFatal(f"the binlog's TABLE_MAP for {tm.name} carries no column names "
                                          f"(binlog_row_metadata was not FULL when it was written); the agent "
                                          f"cannot label its columns safely. Set binlog_row_metadata=FULL; "
                                          f"events written before that need a fresh snapshot and a reset "
                                          f"checkpoint")
                    continue
                if self._control(ev):
                    boundary_n, boundary_ckpt = len(changes), self._checkpoint
        except WireError as e:
            self._fail(str(e))
            raise SourceUnavailable(self._error) from None
        except ServerError as e:
            err = self._server_error(e)
            self._fail(str(err))
            raise err from None
        except binlog.BinlogError as e:
            self._fail(str(e))
            raise SourceFatal(f"cannot decode the binlog at {self._file}:{self._pos}: {e}") from None
        if changes:
            self._last_position = changes[-1].position
        if self._in_txn:
            if boundary_n > 0:
                # end the batch at the last whole transaction; the rest goes into the next batch
                self._carry = changes[boundary_n:]
                changes = changes[:boundary_n]
                self._returned = boundary_ckpt
                return SourceBatch(changes, boundary_ckpt)
            return SourceBatch(changes, None)           # a piece of a large transaction
        if self._checkpoint != self._returned:
            self._returned = self._checkpoint
            return SourceBatch(changes, self._checkpoint)
        return SourceBatch(changes, None)

    def _fail(self, msg: str) -> None:
        self._error = redact(msg)
        self.close()

    def _rows(self, ev, changes: list) -> None:
        tm = ev.table_map
        name = self._names.get(tm.name)
        if name is None:
            name = self._names[tm.name] = self._tables[tm.name.lower() if self._lower_names else tm.name]
        if not self._in_txn:
            self._begin(ev, None, None)
        keys = tm.key_columns
        prefix, n = self._txn_prefix, self._ordinal
        ct, cts, txid = self._txn_time, self._txn_ts, self._txid
        append = changes.append
        op = ev.op
        unavailable: tuple = ()
        if ev.present is not None:                     # partial row images (binlog_row_image not FULL)
            present = ev.present[1] if op == "update" else ev.present[0]
            unavailable = tuple(c.name for c in tm.columns if not present >> c.index & 1) if op != "delete" else ()
        if op == "insert":
            for after in ev.rows:
                n += 1
                append(RowChange(name, "insert", None, after, f"{prefix}{n:08d}", ct, cts, txid, keys, unavailable))
        elif op == "update":
            for before, after in ev.rows:
                n += 1
                append(RowChange(name, "update", before, after, f"{prefix}{n:08d}", ct, cts, txid, keys, unavailable))
        else:
            for before in ev.rows:
                n += 1
                append(RowChange(name, "delete", before, None, f"{prefix}{n:08d}", ct, cts, txid, keys))
        self._ordinal = n

    def _begin(self, ev, gtid: str | None, commit_us: int | None) -> None:
        self._in_txn = True
        self._txn_has_begin = False
        start = ev.log_pos - ev.size if ev.log_pos else self._pos
        self._txn_prefix = f"{_file_number(self._file):08d}:{start:012d}:"
        self._ordinal = 0
        if commit_us:
            sec, usec = divmod(commit_us, 1_000_000)
        else:
            sec, usec = ev.timestamp, 0
        self._txn_time = binlog.format_timestamp(sec, usec)
        self._txn_ts = sec + usec / 1e6
        self._last_event_ts = self._txn_ts
        self._caught_up = False
        self._txn_gtid = gtid
        self._txid = gtid or f"{self._file}:{start}"

    def _end(self, ev) -> None:
        self._in_txn = False
        if ev.log_pos:
            self._pos = ev.log_pos
        if self._txn_gtid and self._gtids is not None and self._txn_domain is not None:
            self._gtids[self._txn_domain] = self._txn_gtid
        self._txn_domain = None
        self._checkpoint = format_checkpoint(self._gtids, self._file, self._pos)

    def _control(self, ev) -> bool:
        """Non-row events. True when the event ends a transaction (a checkpoint is possible after it)."""
        et = ev.type
        if et == binlog.XID or et == binlog.XA_PREPARE:
            self._end(ev)
            return True
        if et == binlog.MARIA_GTID:
            self._begin(ev, ev.gtid, None)
            self._txn_domain = ev.domain
            self._txn_has_begin = not ev.standalone
            return False
        if et in (binlog.GTID, binlog.ANONYMOUS_GTID):
            self._begin(ev, ev.gtid, ev.commit_us)
            return False
        if et == binlog.QUERY or et == binlog.QUERY_COMPRESSED:
            q = ev.query.lstrip().rstrip("; \n\t")
            word = q[:20].upper()
            if word == "BEGIN" or word.startswith("START TRANSACTION"):
                if not self._in_txn:
                    self._begin(ev, None, None)
                self._txn_has_begin = True
                return False
            if word in ("COMMIT", "ROLLBACK") or word.startswith("XA PREPARE") or word.startswith("XA COMMIT") \
                    or word.startswith("XA ROLLBACK"):
                if not self._in_txn:
                    self._begin(ev, None, None)
                self._end(ev)
                return True
            if self._in_txn and self._txn_has_begin:
                return False                            # SAVEPOINT, XA START/END... inside a transaction
            if not self._in_txn:
                self._begin(ev, None, None)
            self._end(ev)                               # DDL: a transaction of its own
            return True
        if et == binlog.ROTATE:
            self._file = ev.filename
            self._pos = ev.position
            if not (ev.flags & binlog.LOG_EVENT_ARTIFICIAL_F) and ev.log_pos and not self._in_txn:
                self._checkpoint = format_checkpoint(self._gtids, self._file, self._pos)
                return True
            return False
        if et in (binlog.HEARTBEAT, binlog.HEARTBEAT_V2):
            if not self._in_txn:
                self._caught_up = True
        return False


# ---------------------------------------------------------------- check / setup / teardown


class MysqlAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))

    def setup_sql(self) -> list[str]:
        return []

    def setup(self) -> list[str]:
        return ["binlog capture needs no objects in the database: nothing to create "
                "(`cdc-agent check` verifies the server settings and grants)"]

    def teardown_sql(self) -> list[str]:
        return []

    def teardown(self) -> list[str]:
        return ["binlog capture created no objects in the database: nothing to remove "
                "(the replica registration ends when the agent disconnects)"]

    def check(self) -> list[CheckItem]:
        d = self.dsn
        items: list[CheckItem] = []
        try:
            ctl = control_connection(d)
        except SourceError as e:
            items.append(CheckItem("connect", False, redact(str(e)),
                                   "check source.dsn (host, port, user, password variable) and that the server "
                                   "accepts connections from this host"))
            return items
        try:
            self._checks(ctl, items)
        except Exception as e:  # the connection died half way: report it, keep what was found
            items.append(CheckItem("server queries", False, redact(str(e)), "see the server's error log"))
        finally:
            ctl.close()
        return items

    def _checks(self, ctl, items: list[CheckItem]) -> None:
        d = self.dsn
        version = _query(ctl, "SELECT VERSION()")[0][0]
        maria = "mariadb" in version.lower()
        items.append(CheckItem("connect", True, f"{'MariaDB' if maria else 'MySQL'} {version} at {_where(d)} "
                                                f"as {d.user!r}"))
        nums = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
        need = (10, 5) if maria else (8, 0)
        items.append(CheckItem("server version", nums >= need, version,
                               f"binlog_row_metadata needs {'MariaDB 10.5' if maria else 'MySQL 8.0'} or newer"))
        v = {k.lower(): v for k, v in _query(ctl, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ("
                                                  "'log_bin', 'binlog_format', 'binlog_row_image', "
                                                  "'binlog_row_metadata', 'server_id', 'expire_logs_days', "
                                                  "'binlog_expire_logs_seconds', 'log_bin_compress', "
                                                  "'binlog_transaction_compression', 'binlog_row_value_options', "
                                                  "'gtid_mode', 'binlog_checksum', 'log_bin_basename')")}

        def setting(name: str, want: str, dynamic: bool = True) -> None:
            val = str(v.get(name, "")).upper()
            ok = val == want.upper()
            fix = ""
            if not ok:
                fix = (f"SET GLOBAL {name} = '{want}';   -- takes effect for new sessions\n" if dynamic else "") + \
                      f"my.cnf, [mysqld] section: {name} = {want}" + ("" if dynamic else "   (needs a restart)")
            items.append(CheckItem(name, ok, f"{name} = {v.get(name, 'not set')}", fix))

        log_bin = str(v.get("log_bin", "")).upper()
        items.append(CheckItem("log_bin", log_bin == "ON", f"log_bin = {v.get('log_bin', 'not set')}",
                               "" if log_bin == "ON" else "my.cnf, [mysqld] section: log_bin = mysql-bin   "
                                                          "(needs a restart)"))
        setting("binlog_format", "ROW")
        setting("binlog_row_image", "FULL")
        setting("binlog_row_metadata", "FULL")
        if str(v.get("log_bin_compress", "OFF")).upper() == "ON":
            items.append(CheckItem("log_bin_compress", True, "log_bin_compress = ON (compressed events are "
                                                             "decompressed by the agent)"))
        if str(v.get("binlog_transaction_compression", "OFF")).upper() == "ON":
            items.append(CheckItem("binlog_transaction_compression", False, "ON: the agent cannot read "
                                   "compressed transaction payloads",
                                   "SET GLOBAL binlog_transaction_compression = OFF;\n"
                                   "my.cnf, [mysqld] section: binlog_transaction_compression = OFF"))
        if "PARTIAL_JSON" in str(v.get("binlog_row_value_options", "")).upper():
            items.append(CheckItem("binlog_row_value_options", False, "PARTIAL_JSON: updates lack full JSON values",
                                   "SET GLOBAL binlog_row_value_options = '';\n"
                                   "my.cnf, [mysqld] section: binlog_row_value_options ="))
        if maria:
            items.append(CheckItem("gtid", True, "MariaDB GTID: checkpoints resume by GTID"))
        else:
            gm = str(v.get("gtid_mode", "OFF")).upper()
            items.append(CheckItem("gtid", True, f"gtid_mode = {gm}: checkpoints resume by binlog file and position"))
        self._privileges(ctl, items, maria)
        self._server_id(ctl, items, v)
        self._retention(ctl, items, v)
        self._tables(ctl, items)

    def _privileges(self, ctl, items: list[CheckItem], maria: bool) -> None:
        try:
            grants = " ".join(r[0] for r in _query(ctl, "SHOW GRANTS FOR CURRENT_USER()")).upper()
        except Exception as e:
            items.append(CheckItem("privileges", False, f"cannot read grants: {redact(str(e))}", ""))
            return
        # global grants only ("ON *.*"); ALL PRIVILEGES covers everything
        glob = {p.strip() for g in re.findall(r"GRANT (.+?) ON \*\.\* TO", grants) for p in g.split(",")}
        all_priv = "ALL PRIVILEGES" in glob
        user = self.dsn.user
        need = [("REPLICATION SLAVE", ("REPLICATION SLAVE", "REPLICATION REPLICA")),
                ("REPLICATION CLIENT" if not maria else "BINLOG MONITOR",
                 ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"))]
        for name, accepted in need:
            ok = all_priv or any(a in glob for a in accepted)
            items.append(CheckItem(f"privilege {name}", ok,
                                   "granted" if ok else f"not granted to {user!r} (SHOW GRANTS)",
                                   "" if ok else f"GRANT {name} ON *.* TO '{user}'@'%';   (as an admin; if it comes "
                                                 f"through a role, make that role the user's default role)"))

    def _server_id(self, ctl, items: list[CheckItem], v: dict) -> None:
        sid = self.cfg.source.server_id
        own = int(v.get("server_id", 0) or 0)
        if own == sid:
            items.append(CheckItem("server_id", False, f"source.server_id {sid} is the database server's own id",
                                   "set source.server_id in agent.toml to a number no server or replica uses"))
            return
        try:
            hosts = _replica_hosts(ctl)
        except Exception as e:
            items.append(CheckItem("server_id", False, f"{sid}: cannot tell whether another replica uses it "
                                                       f"(SHOW SLAVE HOSTS: {redact(str(e))})",
                                   "make sure no other replica uses it (an admin can run SHOW SLAVE HOSTS), or "
                                   "GRANT REPLICATION MASTER ADMIN (MariaDB) to the agent's user so check can see",
                                   warning=True))
            return
        ours = f"cdc-agent:{self.cfg.agent.name}"
        for row in hosts:
            if int(row[0]) == sid:
                host = str(row[1])
                if host == ours[:60]:
                    items.append(CheckItem("server_id", True, f"{sid} is in use by this agent (running now)"))
                else:
                    items.append(CheckItem("server_id", False, f"{sid} is already used by replica {host!r}; two "
                                           f"replicas with one server_id disconnect each other",
                                           "set source.server_id in agent.toml to an unused number "
                                           "(SHOW SLAVE HOSTS lists the ones in use)"))
                return
        items.append(CheckItem("server_id", True, f"{sid} is not used by another replica"))

    def _retention(self, ctl, items: list[CheckItem], v: dict) -> None:
        secs = 0.0
        try:
            secs = float(v.get("binlog_expire_logs_seconds") or 0)
        except ValueError:
            pass
        if not secs:
            try:
                secs = float(v.get("expire_logs_days") or 0) * 86400
            except ValueError:
                pass
        fix = ("SET GLOBAL binlog_expire_logs_seconds = 604800;   -- 7 days\n"
               "my.cnf, [mysqld] section: binlog_expire_logs_seconds = 604800")
        if not secs:
            items.append(CheckItem("binlog retention", True, "binlogs are never purged automatically (watch the disk)"))
        elif secs < MIN_RETENTION_SECONDS:
            items.append(CheckItem("binlog retention", False,
                                   f"binlogs are purged after {secs / 3600:.1f} h: an agent stopped longer loses "
                                   f"its position and needs a re-snapshot", fix, warning=True))
        else:
            items.append(CheckItem("binlog retention", True, f"binlogs are kept {secs / 86400:.1f} days: the agent may "
                                                             f"be stopped that long without losing its position"))
        # the spooled checkpoint, if any, must still be on the server
        import sqlite3

        import pymysql

        from ..spool import Spool
        ckpt = None
        try:
            if (self.cfg.agent.state_dir / "spool.db").exists():
                spool = Spool(self.cfg.agent.state_dir, readonly=True)
                try:
                    ckpt = spool.checkpoint()
                finally:
                    spool.close()
        except (SpoolError, sqlite3.Error):
            pass                                         # a spool being created, or unreadable: nothing to compare
        if not ckpt:
            return
        try:
            file = parse_checkpoint(ckpt)["file"]
            logs = [r[0] for r in _query(ctl, "SHOW BINARY LOGS")]
        except SourceFatal as e:             # not a MySQL checkpoint: the source kind changed under this state_dir
            items.append(CheckItem("checkpoint binlog", False, str(e), "reset the agent's state_dir"))
            return
        except pymysql.MySQLError as e:
            items.append(CheckItem("checkpoint binlog", False, f"cannot list the binary logs: {redact(str(e))}",
                                   f"GRANT REPLICATION CLIENT ON *.* TO '{self.dsn.user}'@'%'"))
            return
        ok = file in logs
        items.append(CheckItem("checkpoint binlog", ok,
                               f"the agent resumes in {file}, " + ("which the server still has" if ok else
                               f"which the server no longer has (oldest: {logs[0] if logs else '-'})"),
                               "" if ok else PURGED_HELP))

    def _tables(self, ctl, items: list[CheckItem]) -> None:
        rules_with_key = {r.table for r in self.cfg.events if r.key}
        for t in self.cfg.source.tables:
            schema, table = t.split(".", 1)
            rows = _query(ctl, "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                          (schema, table))
            if not rows:
                items.append(CheckItem(f"table {t}", False, "does not exist (or the user cannot see it)",
                                       f"create it, fix source.tables, or GRANT SELECT ON {schema}.{table} TO "
                                       f"'{self.dsn.user}'@'%'"))
                continue
            try:
                _query(ctl, f"SELECT 1 FROM `{schema.replace('`', '``')}`.`{table.replace('`', '``')}` LIMIT 0")
            except Exception as e:
                items.append(CheckItem(f"table {t}", False, f"cannot SELECT: {redact(str(e))}",
                                       f"GRANT SELECT ON `{schema}`.`{table}` TO '{self.dsn.user}'@'%'"))
                continue
            pk = _query(ctl, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                             "AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (schema, table))
            if pk:
                items.append(CheckItem(f"table {t}", True, f"primary key ({', '.join(r[0] for r in pk)}), "
                                                           f"engine {rows[0][0]}"))
            else:
                ok = t in rules_with_key
                items.append(CheckItem(f"table {t}", ok, "has no primary key" + (" (rules name their key)" if ok else ""),
                                       f"ALTER TABLE `{schema}`.`{table}` ADD PRIMARY KEY (...), or set key = [...] "
                                       f"in the [[events]] rules for it", warning=not ok))
