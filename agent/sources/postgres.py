"""Source kind `postgres`: logical decoding with the built-in `pgoutput` plugin, read over the streaming
replication protocol (docs/postgres-source.md says why streaming and not the SQL decoding functions).

Connections:
  - a replication connection (`replication=database`) running `START_REPLICATION SLOT ... LOGICAL`; its
    session settings (TimeZone=UTC, DateStyle, IntervalStyle, bytea_output, extra_float_digits) are given as
    startup options, because the walsender formats the values with its own session settings;
  - a normal connection for the catalog (types, primary keys) and for status (retained WAL);
  - a heartbeat connection used by an apscheduler job that writes a tiny non-transactional logical message
    (`pg_logical_emit_message`) every `source.heartbeat_seconds`, so that an idle database's slot has
    something to advance over while other databases on the server write WAL.
The protocol work is pure (agent/pgoutput.py, agent/pgvalues.py); this module does the I/O around it.

Positions and checkpoints:
  position   = the transaction's commit LSN (pgoutput Begin.final_lsn) as 16 hex digits, ':', the change's
               ordinal in the transaction, 8 digits from 1: "00000000016B3748:00000003". Known at Begin, so a
               huge transaction is streamed in pieces without buffering it; a replay gives the same positions.
  checkpoint = the commit *end* LSN of the last whole transaction read, 16 hex digits. `start(checkpoint)`
               asks the server to start there and drops every transaction whose commit lies before it
               (even if the server sends it again), so nothing is read twice and nothing is skipped.
The slot is confirmed (standby status update, flush = checkpoint) only when the pipeline says the spool
holds everything up to it. When idle with everything confirmed, the keepalive's WAL position is confirmed
too, so the slot advances over WAL that holds nothing for it.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import pgoutput as po
from .. import pgvalues
from ..changes import CheckItem, RowChange, SourceBatch, SourceStatus
from ..config import Config
from ..errors import CdcError, SourceFatal, SourceUnavailable
from ..secrets import redact

log = logging.getLogger("cdc_agent")

HEARTBEAT_PREFIX = "cdc-agent-heartbeat"
BATCH_GAP_SECONDS = 0.002        # once a batch has something, stop at the first gap this long in the stream
BATCH_LINGER_SECONDS = 0.01      # ... or this long after its first change (keeps commit-to-spool latency low)
BACKLOG_LINGER_SECONDS = 0.25    # ... unless catching up (a full batch, or changes this old): fill the batch
BACKLOG_AGE_SECONDS = 0.5
STATUS_INTERVAL_SECONDS = 10.0   # standby status update at least this often (pg_stat_replication stays fresh)
RETAINED_CACHE_SECONDS = 1.0
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c bytea_output=hex "
                   "-c extra_float_digits=1")

_UNCHANGED = po.UNCHANGED


# ---------------------------------------------------------------- connections


def _conninfo(cfg: Config, *, replication: bool = False, extra_options: str = "") -> str:
    """The configured DSN plus what the agent needs; settings the user wrote stay unless they must not."""
    dsn = cfg.source.dsn
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as e:
        raise SourceFatal(f"source.dsn is not a valid PostgreSQL connection string: {redact(str(e))}") from None
    extra: dict = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = 10
    if "application_name" not in params:
        extra["application_name"] = f"cdc-agent/{cfg.agent.name}"
    if "keepalives" not in params:             # notice a dead peer (network gone) within about a minute
        extra.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    opts = " ".join(x for x in (params.get("options", ""), extra_options) if x)
    if opts:
        extra["options"] = opts
    if replication:
        extra["replication"] = "database"
    return make_conninfo(dsn, **extra)


def _translate(e: Exception, what: str) -> Exception:
    """A driver error -> SourceUnavailable (retry) or SourceFatal (needs a person), secrets removed."""
    sqlstate = getattr(e, "sqlstate", None)
    diag = getattr(e, "diag", None)
    msg = getattr(diag, "message_primary", None)
    if not msg:
        lines = str(e).strip().splitlines()
        msg = lines[0] if lines else type(e).__name__
    text = redact(f"{what}: {msg}")
    if sqlstate in ("42704", "42501", "28000", "28P01", "3D000", "55000", "0A000", "42601"):
        # undefined object (slot, publication), no privilege, auth failed, no such database,
        # object not in prerequisite state (wal_level, wrong plugin), unsupported
        return SourceFatal(text)
    return SourceUnavailable(text)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_ident(table: str) -> str:
    schema, _, name = table.partition(".")
    return f"{_ident(schema)}.{_ident(name)}"


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# ---------------------------------------------------------------- the source


@dataclass(slots=True)
class _RelMeta:
    table: str
    wanted: bool
    key_columns: tuple[str, ...]
    key_index: tuple[int, ...]     # replica identity columns (what a 'K' old image holds)


class PostgresSource:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        s = cfg.source
        self.slot, self.publication = s.slot, s.publication
        self.tables = set(s.tables)
        self._conn: psycopg.Connection | None = None      # replication connection
        self._pg = None                                    # its libpq connection
        self._poll = None
        self._meta: psycopg.Connection | None = None      # catalog + status
        self._meta_lock = threading.Lock()
        self._hb_conn: psycopg.Connection | None = None
        self._hb_failing = False
        self._scheduler = None
        self._decoder = po.Decoder()
        self._types: dict[int, pgvalues.TypeInfo] = {}
        self._error: str | None = None
        self._server_version = 150000
        self._backlog = False               # the last read was catching up: bigger batches
        self._hb_lock = threading.Lock()
        self._closing = False
        self._reset_stream_state(0)

    def _reset_stream_state(self, checkpoint: int) -> None:
        self._skip_before = checkpoint     # transactions committed before this were spooled already
        self._flushed = checkpoint         # what the slot may release (confirmed to the server)
        self._written = checkpoint         # highest LSN received
        self._sent_status = (-1, -1)
        self._last_status = 0.0
        self._in_txn = False
        self._skipping = False
        self._txn_prefix = ""
        self._txn_time = ""
        self._txn_ts = 0.0
        self._txn_xid = ""
        self._ordinal = 0
        self._carry: list[RowChange] = []
        self._returned_end = 0             # end LSN of the last checkpoint handed out
        self._pending_since: float | None = None   # commit time of the oldest change read but not confirmed
        self._position: str | None = None
        self._retained: tuple[float, int | None] = (0.0, None)

    # -- lifecycle

    def start(self, checkpoint: str | None) -> None:
        ckpt = 0
        if checkpoint:
            try:
                if len(checkpoint) != 16:
                    raise ValueError
                ckpt = int(checkpoint, 16)
            except ValueError:
                raise SourceFatal(f"the spool's checkpoint {checkpoint!r} is not a PostgreSQL LSN (16 hex digits): "
                                  f"was state_dir used with another source kind? Use a new state_dir") from None
        self.close()
        self._reset_stream_state(ckpt)
        self._decoder.reset()
        self._error = None
        try:
            slot = self._check_slot()
            self._flushed = self._written = max(ckpt, slot)
            self._start_replication(ckpt)
        except BaseException:
            self.close()
            raise
        if self.cfg.source.heartbeat_seconds > 0:
            from apscheduler.schedulers.background import BackgroundScheduler
            self._closing = False
            self._scheduler = BackgroundScheduler(daemon=True)
            self._scheduler.add_job(self._heartbeat, "interval", seconds=self.cfg.source.heartbeat_seconds,
                                    id="heartbeat", max_instances=1, coalesce=True, misfire_grace_time=None)
            self._scheduler.start()

    def _meta_conn(self) -> psycopg.Connection:
        if self._meta is None or self._meta.closed:
            try:
                self._meta = psycopg.connect(_conninfo(self.cfg, extra_options="-c statement_timeout=30000"),
                                             autocommit=True)
            except psycopg.Error as e:
                raise _translate(e, "cannot connect to PostgreSQL") from None
        return self._meta

    def _meta_query(self, sql: str, params=None) -> list[tuple]:
        with self._meta_lock:
            conn = self._meta_conn()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as e:
                if conn.closed or conn.broken:
                    self._meta = None
                raise _translate(e, "catalog query failed") from None

    def _check_slot(self) -> int:
        """The slot must exist, be pgoutput, in this database; the publication must exist. Returns the slot's
        confirmed_flush_lsn (never confirm below it: PostgreSQL 15 would move it back)."""
        rows = self._meta_query(
            "SELECT s.plugin, s.database, s.confirmed_flush_lsn::text, current_database(), "
            "       (SELECT count(*) FROM pg_publication WHERE pubname = %s), "
            "       current_setting('server_version_num')::int, "
            "       ARRAY(SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s) "
            "FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = %s",
            (self.publication, self.publication, self.slot))
        plugin, database, confirmed, current_db, pubs, self._server_version, published = rows[0]
        fix = f"run `cdc-agent setup -c {self.cfg.path}` (as a role that may create it)"
        if plugin is None:
            raise SourceFatal(f'replication slot "{self.slot}" does not exist: {fix}')
        if plugin != "pgoutput" or database != current_db:
            raise SourceFatal(f'replication slot "{self.slot}" belongs to database {database!r} with plugin '
                              f'{plugin!r}, not {current_db!r} with pgoutput: choose another source.slot name')
        if not pubs:
            raise SourceFatal(f'publication "{self.publication}" does not exist: {fix}')
        unpublished = sorted(self.tables - set(published))
        if unpublished:
            log.warning("table(s) %s are not in publication %s: their changes are not captured; %s",
                        ", ".join(unpublished), self.publication, fix)
        return po.parse_lsn(confirmed) if confirmed else 0

    def _start_replication(self, ckpt: int) -> None:
        try:
            conn = psycopg.connect(_conninfo(self.cfg, replication=True, extra_options=SESSION_OPTIONS),
                                   autocommit=True)
        except psycopg.Error as e:
            raise _translate(e, "cannot open a replication connection") from None
        self._conn = conn
        self._pg = pg = conn.pgconn
        # logical messages (the heartbeat) are only asked for where pgoutput knows the option (14+); the
        # heartbeat still writes WAL in this database on older servers, which the keepalive then confirms
        messages = ", messages 'true'" if self._server_version >= 140000 else ""
        cmd = (f"START_REPLICATION SLOT {_ident(self.slot)} LOGICAL {po.lsn_text(ckpt)} "
               f"(proto_version '1', publication_names {_literal(_ident(self.publication))}{messages})")
        try:
            pg.send_query(cmd.encode())
            res = pg.get_result()
        except psycopg.Error as e:
            raise _translate(e, "START_REPLICATION failed") from None
        if res is None or res.status != pq.ExecStatus.COPY_BOTH:
            err = self._result_error(res, "START_REPLICATION failed")
            raise err
        self._poll = select.poll()
        self._poll.register(pg.socket, select.POLLIN)

    def _result_error(self, res, what: str) -> Exception:
        if res is None:
            return SourceUnavailable(redact(f"{what}: {self._pg.get_error_message() if self._pg else ''}".strip()))
        sqlstate = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        msg = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or res.error_message or b"").decode(errors="replace")
        err = _translate(_Diag(msg, sqlstate), what)
        if sqlstate == "42704" and "publication" in msg:
            err = SourceFatal(redact(f"{what}: {msg}: run `cdc-agent setup -c {self.cfg.path}`"))
        elif sqlstate == "55006":          # the slot is active for another process: a previous agent's
            err = SourceUnavailable(redact(f"{what}: {msg} (another agent, or the previous connection's "
                                           f"walsender not yet gone)"))
        return err

    def close(self) -> None:
        self._closing = True
        if self._scheduler is not None:
            try:
                self._scheduler.shutdown(wait=False)
            except Exception:
                pass
            self._scheduler = None
        # a heartbeat under way finishes first (bounded by its statement timeout), so it leaks no connection
        locked = self._hb_lock.acquire(timeout=12)
        if self._conn is not None:
            try:
                if not self._conn.closed and self._pg is not None:
                    self._send_status(force=True)
            except Exception:
                pass
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = self._pg = self._poll = None
        for name in ("_meta", "_hb_conn"):
            c = getattr(self, name)
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
                setattr(self, name, None)
        if locked:
            self._hb_lock.release()

    # -- reading

    def _recv(self, timeout: float):
        """The next CopyData payload (memoryview), or None when nothing arrives within `timeout`."""
        pg = self._pg
        try:
            n, data = pg.get_copy_data(1)
            if n == 0:
                pg.consume_input()
                n, data = pg.get_copy_data(1)
            if n == 0:
                deadline = time.monotonic() + timeout
                while n == 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._poll.poll(remaining * 1000):
                        return None
                    pg.consume_input()
                    n, data = pg.get_copy_data(1)
        except psycopg.Error as e:
            self._error = redact(str(e))
            raise _translate(e, "replication connection lost") from None
        if n > 0:
            return data
        # -1: the server ended the stream; the result says why
        res = pg.get_result()
        err = self._result_error(res, "replication stream ended")
        self._error = str(err)
        raise err

    def read(self, max_changes: int, max_wait: float) -> SourceBatch:
        if self._pg is None:
            raise SourceUnavailable("the PostgreSQL source is not connected")
        out = self._carry
        self._carry = []
        boundary = 0            # out[:boundary] are whole transactions
        checkpoint = None
        decode = self._decoder.decode
        recv = self._recv
        append = out.append
        row = self._row
        now = time.monotonic()
        deadline = now + max_wait
        first = now if out else None
        linger = BACKLOG_LINGER_SECONDS if self._backlog else BATCH_LINGER_SECONDS
        while True:
            if first is not None:
                left = first + linger - now
                if len(out) >= max_changes or left <= 0:
                    # a steady stream with no pause is not a backlog by itself: only old changes are
                    self._backlog = len(out) >= max_changes or time.time() - self._txn_ts > BACKLOG_AGE_SECONDS
                    break
                wait = BATCH_GAP_SECONDS if left > BATCH_GAP_SECONDS else left
            else:
                wait = deadline - now
                if wait <= 0:
                    self._backlog = False
                    break
            data = recv(wait)
            if data is None:
                self._backlog = False       # the stream paused: caught up, keep batches short again
                break
            buf = bytes(data)
            if buf[0] == 119:                                   # 'w' XLogData: one pgoutput message
                try:
                    m = decode(buf, 25)
                except po.DecodeError as e:
                    raise SourceFatal(f"cannot decode a pgoutput message: {e}") from None
                k = m.kind
                if k == "I" or k == "U" or k == "D":
                    if not self._skipping:
                        c = row(m)
                        if c is not None:
                            append(c)
                            if first is None:
                                first = now
                elif k == "B":
                    self._begin(m)
                elif k == "C":
                    self._in_txn = False
                    if self._skipping:
                        self._skipping = False
                    else:
                        boundary = len(out)
                        checkpoint = po.lsn_hex16(m.end_lsn)
                        self._returned_end = m.end_lsn
                        if m.end_lsn > self._written:
                            self._written = m.end_lsn
                        if first is None:
                            first = now
                elif k == "R":
                    self._relation(m)
                elif k == "T":
                    if not self._skipping:
                        log.warning("TRUNCATE of %s is not captured: it produces no row events",
                                    ", ".join(r.qualified for r in m.relations))
                elif k == "M":
                    if not m.transactional and not out and checkpoint is None:
                        self._idle_advance(m.lsn)
                # 'Y' Type, 'O' Origin: nothing to do (types come from the catalog)
            elif buf[0] == 107:                                 # 'k' keepalive
                ka = po.parse_keepalive(buf)
                if ka.wal_end > self._written:
                    self._written = ka.wal_end
                if not out and checkpoint is None:
                    self._idle_advance(ka.wal_end)
                self._send_status(force=ka.reply_requested)
            now = time.monotonic()
        if self._in_txn and boundary < len(out):
            if boundary > 0:                # end the batch at the last commit; the open transaction waits
                self._carry = out[boundary:]
                del out[boundary:]
            else:                           # one piece of a large transaction: no checkpoint inside it
                checkpoint = None
        if out:
            self._position = out[-1].position
        if now - self._last_status > STATUS_INTERVAL_SECONDS:
            self._send_status(force=True)
        return SourceBatch(out, checkpoint)

    def _begin(self, m: po.Begin) -> None:
        self._in_txn = True
        self._ordinal = 0
        if m.final_lsn < self._skip_before:     # spooled before the checkpoint we started from
            self._skipping = True
            return
        self._skipping = False
        self._txn_prefix = f"{m.final_lsn:016X}:"
        self._txn_time = po.pg_time_rfc3339(m.commit_time)
        self._txn_ts = po.pg_time_to_unix(m.commit_time)
        self._txn_xid = str(m.xid)
        if self._pending_since is None:
            self._pending_since = self._txn_ts

    def _row(self, m) -> RowChange | None:
        rel = m.relation
        meta: _RelMeta = rel.info
        if not meta.wanted:
            return None
        self._ordinal += 1
        pos = f"{self._txn_prefix}{self._ordinal:08d}"
        names = rel.names
        k = m.kind
        if k == "I":
            return RowChange(meta.table, "insert", None, dict(zip(names, m.new)), pos, self._txn_time,
                             self._txn_ts, self._txn_xid, meta.key_columns)
        if k == "U":
            old = m.old if m.old_kind == "O" else None
            new = m.new
            unavailable = ()
            if _UNCHANGED in new:
                after = {}
                missing = []
                for i, v in enumerate(new):
                    if v is _UNCHANGED:
                        v = old[i] if old is not None else _UNCHANGED
                        if v is _UNCHANGED:
                            missing.append(names[i])
                            continue
                    after[names[i]] = v
                unavailable = tuple(missing)
            else:
                after = dict(zip(names, new))
            before = None
            if old is not None:
                before = dict(zip(names, old))
                if _UNCHANGED in old:       # not expected under FULL; never let the marker out
                    before = {n: v for n, v in before.items() if v is not _UNCHANGED}
            return RowChange(meta.table, "update", before, after, pos, self._txn_time, self._txn_ts,
                             self._txn_xid, meta.key_columns, unavailable)
        old = m.old
        if m.old_kind == "O":
            before = {n: v for n, v in zip(names, old) if v is not _UNCHANGED}
        else:                               # 'K': only the replica identity columns are in the log
            before = {names[i]: old[i] for i in meta.key_index}
        return RowChange(meta.table, "delete", before, None, pos, self._txn_time, self._txn_ts, self._txn_xid,
                         meta.key_columns)

    def _relation(self, rel: po.Relation) -> None:
        table = rel.qualified
        wanted = table in self.tables
        key_index = tuple(i for i, c in enumerate(rel.columns) if c.key)
        key_columns: tuple[str, ...] = ()
        if wanted:
            self._load_types([c.type_oid for c in rel.columns])
            self._decoder.set_converters(rel.oid, pgvalues.converters([c.type_oid for c in rel.columns], self._types))
            rows = self._meta_query(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)", (rel.oid,))
            key_columns = tuple(r[0] for r in rows)
            if not key_columns and rel.replica_identity != "f":
                key_columns = rel.key_names        # REPLICA IDENTITY USING INDEX: that index's columns
        rel.info = _RelMeta(table, wanted, key_columns, key_index)

    def _load_types(self, oids: list[int]) -> None:
        missing = {o for o in oids if o not in pgvalues.SCALARS and o not in self._types}
        for _ in range(10):                 # arrays of domains over arrays...: a few rounds at most
            if not missing:
                return
            rows = self._meta_query(
                "SELECT oid::int8, typname::text, typtype::text, typcategory::text, typelem::int8, "
                "typbasetype::int8, typdelim::text FROM pg_type WHERE oid = ANY(%s::oid[])", (sorted(missing),))
            nxt = set()
            for oid, name, typtype, cat, elem, base, delim in rows:
                self._types[oid] = pgvalues.TypeInfo(oid, name, typtype, cat, elem, base, delim)
                nxt.update(x for x in (elem, base) if x)
            for o in missing - {r[0] for r in rows}:
                self._types[o] = pgvalues.TypeInfo(o)       # gone from the catalog: text
            missing = {o for o in nxt if o not in pgvalues.SCALARS and o not in self._types}

    # -- confirming

    def _idle_advance(self, lsn: int) -> None:
        """Nothing read is waiting for the spool: the slot may release WAL up to `lsn`, which the server
        has fully sent (a keepalive's position, or a message outside any transaction)."""
        if not self._in_txn and not self._carry and self._returned_end <= self._flushed and lsn > self._flushed:
            self._flushed = lsn
            self._pending_since = None

    def confirm(self, checkpoint: str) -> None:
        lsn = int(checkpoint, 16)
        if lsn > self._flushed:
            self._flushed = lsn
        if lsn >= self._returned_end:
            self._pending_since = self._txn_ts if (self._in_txn and not self._skipping and
                                                   (self._carry or self._ordinal)) else None
        if self._pg is not None:
            self._send_status(force=True)

    def _send_status(self, force: bool = False) -> None:
        written = max(self._written, self._flushed)
        state = (written, self._flushed)
        if not force and state == self._sent_status:
            return
        msg = po.standby_status(written, self._flushed, self._flushed, po.pg_time_from_unix(time.time()))
        try:
            self._pg.put_copy_data(msg)
            self._pg.flush()
        except psycopg.Error as e:
            self._error = redact(str(e))
            raise _translate(e, "replication connection lost") from None
        self._sent_status = state
        self._last_status = time.monotonic()

    # -- heartbeat and status (other threads)

    def _heartbeat(self) -> None:
        if not self._hb_lock.acquire(blocking=False):
            return
        try:
            if not self._closing:
                self._beat()
        finally:
            self._hb_lock.release()

    def _beat(self) -> None:
        try:
            if self._hb_conn is None or self._hb_conn.closed:
                self._hb_conn = psycopg.connect(_conninfo(self.cfg, extra_options="-c statement_timeout=10000"),
                                                autocommit=True)
            self._hb_conn.execute("SELECT pg_logical_emit_message(false, %s, now()::text)", (HEARTBEAT_PREFIX,))
            if self._hb_failing:
                log.info("heartbeat works again")
            self._hb_failing = False
        except Exception as e:
            if not self._hb_failing:
                log.warning("heartbeat failed (the slot of an idle database may not advance): %s", redact(str(e)))
            self._hb_failing = True
            try:
                if self._hb_conn is not None:
                    self._hb_conn.close()
            except Exception:
                pass
            self._hb_conn = None

    def status(self) -> SourceStatus:
        conn = self._conn                   # read once: the capture thread may close it meanwhile
        connected = conn is not None and not conn.closed
        lag = None
        if connected:
            since = self._pending_since
            lag = 0.0 if since is None else max(0.0, round(time.time() - since, 3))
        return SourceStatus(connected=connected, position=self._position, lag_seconds=lag,
                            retained_wal_bytes=self._retained_wal() if connected else None, error=self._error)

    def _retained_wal(self) -> int | None:
        at, value = self._retained
        if time.monotonic() - at < RETAINED_CACHE_SECONDS:
            return value
        if not self._meta_lock.acquire(timeout=0.5):     # the capture thread is using it: last value
            return value
        try:
            conn = self._meta_conn()
            row = conn.execute("SELECT (pg_current_wal_lsn() - restart_lsn)::int8 FROM pg_replication_slots "
                               "WHERE slot_name = %s", (self.slot,)).fetchone()
            value = int(row[0]) if row and row[0] is not None else None
        except Exception:
            self._meta = None
        finally:
            self._meta_lock.release()
        self._retained = (time.monotonic(), value)
        return value


class _Diag(Exception):
    """An error from a result (not an exception) shaped like a psycopg error for _translate."""

    def __init__(self, msg: str, sqlstate: str):
        super().__init__(msg)
        self.sqlstate = sqlstate


# ---------------------------------------------------------------- check / setup / teardown


class PostgresAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        s = cfg.source
        self.slot, self.publication, self.tables = s.slot, s.publication, s.tables

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(_conninfo(self.cfg), autocommit=True)
        except psycopg.Error as e:
            raise _translate(e, "cannot connect to PostgreSQL") from None

    # -- what exists

    def _state(self, conn) -> dict:
        slot = conn.execute("SELECT plugin, database, active_pid FROM pg_replication_slots WHERE slot_name = %s",
                            (self.slot,)).fetchone()
        pub = conn.execute("SELECT oid, puballtables FROM pg_publication WHERE pubname = %s",
                           (self.publication,)).fetchone()
        pub_tables = None
        if pub is not None:
            pub_tables = {f"{s}.{t}" for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (self.publication,))}
        return {"slot": slot, "pub": pub, "pub_tables": pub_tables,
                "db": conn.execute("SELECT current_database()").fetchone()[0]}

    def _tables_info(self, conn) -> dict[str, dict]:
        """Per configured table: exists, has a primary key, replica identity, whether we own it."""
        out = {}
        for t in self.tables:
            schema, _, name = t.partition(".")
            row = conn.execute(
                "SELECT c.oid, c.relreplident, c.relkind, "
                "  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
                "  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), "
                "  pg_has_role(c.relowner, 'USAGE') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
            if row is None:
                out[t] = {"exists": False}
            else:
                oid, ident, kind, pk, ident_index, owner = row
                out[t] = {"exists": True, "kind": kind, "pk": pk, "identity": ident, "ident_index": ident_index,
                          "owner": owner}
        return out

    def _unsafe_tables(self, info: dict[str, dict]) -> list[str]:
        """Tables whose UPDATE/DELETE would start failing once published: no replica identity."""
        bad = []
        for t, i in info.items():
            if not i.get("exists"):
                continue
            ident = i["identity"]
            if ident == "n" or (ident == "d" and not i["pk"]) or (ident == "i" and not i["ident_index"]):
                bad.append(t)
        return bad

    def _pub_sql(self, state: dict | None) -> str | None:
        tables = ", ".join(_table_ident(t) for t in self.tables)
        if state is None or state["pub"] is None:
            return f"CREATE PUBLICATION {_ident(self.publication)} FOR TABLE {tables}"
        if state["pub"][1]:                 # FOR ALL TABLES: covers ours already
            return None
        if state["pub_tables"] != set(self.tables):
            return f"ALTER PUBLICATION {_ident(self.publication)} SET TABLE {tables}"
        return None

    def _slot_sql(self) -> str:
        return f"SELECT pg_create_logical_replication_slot({_literal(self.slot)}, 'pgoutput')"

    # -- setup / teardown

    def setup_sql(self) -> list[str]:
        try:
            conn = self._connect()
        except CdcError:
            # no server to ask: everything a first setup would run
            return [self._pub_sql(None), self._slot_sql()]
        with conn:
            st = self._state(conn)
            stmts = []
            info = self._tables_info(conn)
            for t in self._unsafe_tables(info):
                stmts.append(f"-- {t} has no replica identity (no primary key): publishing it would make its UPDATEs "
                             f"and DELETEs fail; first: ALTER TABLE {_table_ident(t)} REPLICA IDENTITY FULL")
            pub = self._pub_sql(st)
            if pub:
                stmts.append(pub)
            if st["slot"] is None:
                stmts.append(self._slot_sql())
            return stmts

    def setup(self) -> list[str]:
        done = []
        with self._connect() as conn:
            st = self._state(conn)
            info = self._tables_info(conn)
            missing = [t for t, i in info.items() if not i["exists"]]
            if missing:
                raise SourceFatal(f"table(s) {', '.join(missing)} do not exist: create them or remove them from "
                                  f"source.tables")
            unsafe = self._unsafe_tables(info)
            if unsafe:
                raise SourceFatal(
                    f"table(s) {', '.join(unsafe)} have no replica identity (no primary key): publishing them would "
                    f"make their UPDATEs and DELETEs fail. Fix first: " +
                    " ".join(f"ALTER TABLE {_table_ident(t)} REPLICA IDENTITY FULL;" for t in unsafe))
            pub = self._pub_sql(st)
            try:
                if pub:
                    conn.execute(pub)
                    done.append(f"{'created' if pub.startswith('CREATE') else 'changed'} publication "
                                f"{self.publication} for {len(self.tables)} table(s)")
                else:
                    done.append(f"publication {self.publication} exists and covers the tables")
                if st["slot"] is None:
                    try:
                        lsn = conn.execute(self._slot_sql()).fetchone()
                        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                           "WHERE slot_name = %s", (self.slot,)).fetchone()
                        done.append(f"created replication slot {self.slot} (pgoutput) at {row[0] if row else lsn}")
                    except psycopg.errors.DuplicateObject:
                        done.append(f"replication slot {self.slot} exists")
                else:
                    plugin, database, _ = st["slot"]
                    if plugin != "pgoutput" or database != st["db"]:
                        raise SourceFatal(f'replication slot "{self.slot}" exists for database {database!r} with '
                                          f'plugin {plugin!r}: choose another source.slot name')
                    done.append(f"replication slot {self.slot} exists")
            except psycopg.Error as e:
                err = _translate(e, "setup failed")
                if getattr(e, "sqlstate", None) == "42501":
                    err = SourceFatal(f"{err}; what is left can be run by the tables' owner or a superuser: "
                                      f"`cdc-agent setup --dry-run -c {self.cfg.path}` prints it"
                                      + (f" (done so far: {'; '.join(done)})" if done else ""))
                raise err from None
        return done

    def teardown_sql(self) -> list[str]:
        return [f"SELECT pg_drop_replication_slot({_literal(self.slot)}) FROM pg_replication_slots "
                f"WHERE slot_name = {_literal(self.slot)}",
                f"DROP PUBLICATION IF EXISTS {_ident(self.publication)}"]

    def teardown(self) -> list[str]:
        done = []
        with self._connect() as conn:
            try:
                # a just-stopped agent's walsender may take a moment to go away
                for attempt in range(30):
                    row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                       (self.slot,)).fetchone()
                    if row is None or row[0] is None:
                        break
                    time.sleep(0.1)
                if row is None:
                    done.append(f"replication slot {self.slot} did not exist")
                elif row[0] is not None:
                    raise SourceFatal(f'replication slot "{self.slot}" is in use by server process {row[0]} (a running '
                                      f'agent?): stop the agent first, then run teardown again')
                else:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                    done.append(f"dropped replication slot {self.slot}")
                exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)).fetchone()
                try:
                    conn.execute(f"DROP PUBLICATION IF EXISTS {_ident(self.publication)}")
                except psycopg.errors.InsufficientPrivilege:
                    raise SourceFatal(f"{'; '.join(done)}; but publication {self.publication} belongs to another "
                                      f"role: as its owner run DROP PUBLICATION {_ident(self.publication)};") from None
                done.append(f"dropped publication {self.publication}" if exists
                            else f"publication {self.publication} did not exist")
            except psycopg.Error as e:
                raise _translate(e, "teardown failed") from None
        return done

    # -- check

    def check(self) -> list[CheckItem]:
        items: list[CheckItem] = []
        try:
            conn = self._connect()
        except CdcError as e:
            items.append(CheckItem("connect", False, str(e),
                                   "check source.dsn (host, port, database, user, the password variable), that the "
                                   "server runs, and that pg_hba.conf lets this user connect from this host"))
            return items
        with conn:
            try:
                self._checks(conn, items)
            except psycopg.Error as e:          # the connection died half way: report it, keep what was found
                items.append(CheckItem("server queries", False, redact(str(e)), "see the server's log"))
        return items

    def _checks(self, conn, items: list[CheckItem]) -> None:
        ver = conn.info.server_version
        user, db = conn.execute("SELECT current_user, current_database()").fetchone()
        items.append(CheckItem("connect", True, f"PostgreSQL {ver // 10000}.{ver % 10000} database {db!r} as {user!r}"))
        items.append(CheckItem("server version", ver >= 100000, f"{ver // 10000}",
                               "logical decoding with pgoutput needs PostgreSQL 10 or newer"))
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_replication_slots', "
            "'max_wal_senders')").fetchall())
        wal_level = settings.get("wal_level")
        items.append(CheckItem("wal_level", wal_level == "logical", f"wal_level = {wal_level}",
                               "ALTER SYSTEM SET wal_level = logical;\nthen restart PostgreSQL "
                               "(e.g. systemctl restart postgresql)"))
        sup, repl = conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user").fetchone()
        items.append(CheckItem("replication privilege", sup or repl,
                               "superuser" if sup else ("REPLICATION" if repl else f"role {user!r} lacks REPLICATION"),
                               f"ALTER ROLE {_ident(user)} REPLICATION;"))
        st = self._state(conn)
        used_slots = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0]
        max_slots = int(settings.get("max_replication_slots") or 0)
        need = 0 if st["slot"] is not None else 1
        items.append(CheckItem("max_replication_slots", used_slots + need <= max_slots,
                               f"{used_slots} of {max_slots} in use",
                               f"ALTER SYSTEM SET max_replication_slots = {max(max_slots + 4, used_slots + 4)};\n"
                               f"then restart PostgreSQL"))
        senders = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()[0]
        max_senders = int(settings.get("max_wal_senders") or 0)
        items.append(CheckItem("max_wal_senders", senders + 1 <= max_senders,
                               f"{senders} of {max_senders} in use",
                               f"ALTER SYSTEM SET max_wal_senders = {max(max_senders + 4, senders + 4)};\n"
                               f"then restart PostgreSQL"))
        if wal_level == "logical" and (sup or repl):
            items.append(self._check_replication_connection())

        info = self._tables_info(conn)
        changed_rules: dict[str, list[str]] = {}
        update_rules: dict[str, list[str]] = {}
        for r in self.cfg.events:
            if r.changed:
                changed_rules.setdefault(r.table, []).append(r.type)
            if "update" in r.on or "delete" in r.on:
                update_rules.setdefault(r.table, []).append(r.type)
        not_owned: list[str] = []
        for t in self.tables:
            i = info[t]
            if not i["exists"]:
                items.append(CheckItem(f"table {t}", False, "does not exist (or this role cannot see it)",
                                       f"create it, or remove {t!r} from source.tables in {self.cfg.path}"))
                continue
            if i["kind"] not in ("r", "p"):
                items.append(CheckItem(f"table {t}", False, "is not a table (a view or another kind of relation)",
                                       f"remove {t!r} from source.tables; capture reads tables"))
                continue
            items.append(CheckItem(f"table {t}", True, "exists"))
            if i["pk"]:
                items.append(CheckItem(f"primary key {t}", True, "present"))
            else:
                items.append(CheckItem(f"primary key {t}", False,
                                       "none: events have no key and subject unless each rule names `key`",
                                       f"ALTER TABLE {_table_ident(t)} ADD PRIMARY KEY (...);"))
            ident = i["identity"]
            full_fix = f"ALTER TABLE {_table_ident(t)} REPLICA IDENTITY FULL;"
            if t in self._unsafe_tables({t: i}):
                items.append(CheckItem(f"replica identity {t}", False,
                                       "none usable: once published, UPDATE and DELETE on it fail", full_fix))
            elif ident == "f":
                items.append(CheckItem(f"replica identity {t}", True, "FULL (old row images in the log)"))
            elif t in changed_rules:
                items.append(CheckItem(f"replica identity {t}", False,
                                       f"{'DEFAULT' if ident == 'd' else 'USING INDEX'}: no old row image, so rules "
                                       f"with `changed` ({', '.join(changed_rules[t])}) cannot tell what changed "
                                       f"(they fire on every update)", full_fix))
            else:
                items.append(CheckItem(f"replica identity {t}", False,
                                       f"{'DEFAULT' if ident == 'd' else 'USING INDEX'}: update events carry no "
                                       f"`before` and unchanged large (TOASTed) values are left out",
                                       full_fix, warning=True))
            if not i["owner"] and not sup:
                not_owned.append(t)

        pub_sql = self._pub_sql(st)
        can_publish = not not_owned
        if st["pub"] is None:
            items.append(CheckItem("publication", can_publish,
                                   f"{self.publication} missing: `cdc-agent setup` creates it" if can_publish else
                                   f"{self.publication} missing, and this role cannot create it (it does not own "
                                   f"{', '.join(not_owned)})", f"as the tables' owner: {pub_sql};"))
        elif pub_sql:
            items.append(CheckItem("publication", can_publish, f"{self.publication} covers other tables: "
                                   f"`cdc-agent setup` changes it", f"as the tables' owner: {pub_sql};"))
        else:
            items.append(CheckItem("publication", True, f"{self.publication} covers the tables"))
        if st["slot"] is None:
            items.append(CheckItem("replication slot", bool(sup or repl),
                                   f"{self.slot} missing: `cdc-agent setup` creates it",
                                   f"{self._slot_sql()};"))
        else:
            plugin, database, active = st["slot"]
            ok = plugin == "pgoutput" and database == st["db"]
            items.append(CheckItem("replication slot", ok,
                                   f"{self.slot} exists" + (f" (in use by server process {active})" if active else "")
                                   if ok else f"{self.slot} belongs to database {database!r} with plugin {plugin!r}",
                                   "choose another source.slot name"))
        if self.cfg.source.heartbeat_seconds > 0:
            ok = conn.execute("SELECT has_function_privilege('pg_logical_emit_message(boolean,text,text)', "
                              "'EXECUTE')").fetchone()[0]
            items.append(CheckItem("heartbeat", ok, "may write logical messages" if ok else
                                   "cannot call pg_logical_emit_message: an idle database's slot may not advance",
                                   f"GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO "
                                   f"{_ident(user)};", warning=not ok))

    def _check_replication_connection(self) -> CheckItem:
        try:
            with psycopg.connect(_conninfo(self.cfg, replication=True), autocommit=True) as rc:
                rc.pgconn.send_query(b"IDENTIFY_SYSTEM")
                res = rc.pgconn.get_result()
                while rc.pgconn.get_result() is not None:
                    pass
                if res is None or res.status != pq.ExecStatus.TUPLES_OK:
                    msg = (res.error_message if res is not None else b"").decode(errors="replace")
                    return CheckItem("replication connection", False, redact(msg.strip()),
                                     "allow replication connections for this user in pg_hba.conf")
        except psycopg.Error as e:
            return CheckItem("replication connection", False, redact(str(e).strip()),
                             "pg_hba.conf must let this user connect to this database from this host "
                             "(replication=database connections match ordinary database lines)")
        return CheckItem("replication connection", True, "accepted")
