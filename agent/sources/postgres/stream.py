"""Source kind `postgres`, the stream part: logical decoding with the built-in `pgoutput` plugin, read over
the streaming replication protocol (docs/postgres-source.md says why streaming and not the SQL decoding
functions). `poll` yields Begin / RowChange / Commit / Keepalive items; agent/capture.py batches them.

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
too, so the slot advances over WAL that holds nothing for it. While capture is paused (backpressure),
`keepalive` sends standby status updates so that wal_sender_timeout does not end the connection.

No echo (docs/two-way-sync.md): a transaction whose pgoutput Origin message (sent after Begin) names an origin
starting with `cdc-agent/` was written by a cdc-agent `sql` target; its changes are counted (skipped_echo) and
dropped, its Begin/Commit still go out, so its commit is a checkpoint and the slot is confirmed past it.
"""

from __future__ import annotations

import functools
import logging
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pgerr
from psycopg import pq

from ... import fastpath, pgoutput as po
from ...twoway import is_echo
from ... import pgvalues
from ...changes import Begin, Commit, Item, Keepalive, RowChange, SourceStatus, Watermark
from ...fastrow import RenderedRowChange, RowLayout
from ...snapshot import WATERMARK_PREFIX
from ...config import Config
from ...errors import PositionLost, SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact
from .common import HEARTBEAT_PREFIX, conninfo, ident, literal, translate, translate_result

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 10.0   # standby status update at least this often (pg_stat_replication stays fresh)
RETAINED_CACHE_SECONDS = 1.0
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c bytea_output=hex "
                   "-c extra_float_digits=1")

_UNCHANGED = po.UNCHANGED


# ---------------------------------------------------------------- the source


@dataclass(slots=True)
class RelMeta:
    table: str
    wanted: bool
    key_columns: tuple[str, ...]
    key_index: tuple[int, ...]     # replica identity columns (what a 'K' old image holds)
    layout: RowLayout      # names and key index for rendered rows (agent/fastrow.py)


_OPS = {"I": "insert", "U": "update", "D": "delete"}


def _images(m, meta: RelMeta) -> tuple[dict | None, dict | None, tuple[str, ...]]:
    """(before, after, unavailable) of a decoded Insert / Update / Delete."""
    names = m.relation.names
    k = m.kind
    if k == "I":
        return None, dict(zip(names, m.new)), ()
    if k == "U":
        old = m.old if m.old_kind == "O" else None
        new = m.new
        unavailable: tuple[str, ...] = ()
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
        return before, after, unavailable
    old = m.old
    if m.old_kind == "O":
        before = {n: v for n, v in zip(names, old) if v is not _UNCHANGED}
    else:                               # 'K': only the replica identity columns are in the log
        before = {names[i]: old[i] for i in meta.key_index}
    return before, None, ()


def row_change(m, meta: RelMeta, pos: str, commit_time: str, commit_ts: float, txid: str) -> RowChange:
    """The RowChange of a decoded row message, or its RenderedRowChange when the compiled core rendered it."""
    rendered = m.rendered
    if rendered is not None:        # the compiled core rendered its values (agent/fastrow.py)
        return RenderedRowChange(meta.table, _OPS[m.kind], pos, commit_time, commit_ts, txid, meta.key_columns,
                                 rendered, meta.layout, _rendered_images, m)
    before, after, unavailable = _images(m, meta)
    return RowChange(meta.table, _OPS[m.kind], before, after, pos, commit_time, commit_ts, txid, meta.key_columns,
                     unavailable)


def _rendered_images(m: po.RenderedRow) -> tuple[dict | None, dict | None]:
    before, after, _ = _images(m.decoded(), m.relation.info)     # (a rendered row has no unavailable column)
    return before, after


_OP_NAMES = ("insert", "update", "delete")      # the op of an 'I', 'U', 'D' message, for take_rows


def _frame_images(decoder: po.Decoder, rel: po.Relation, meta: RelMeta,
                  frame: bytes) -> tuple[dict | None, dict | None]:
    """The row images of a change take_rows made (its message is the XLogData frame), on the pure path."""
    before, after, _ = _images(decoder.row_message(frame, 25, rel), meta)
    return before, after


class PostgresSource:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        s = cfg.source
        self.slot, self.publication = s.slot, s.publication
        self.tables = set(s.tables)
        self._conn: psycopg.Connection | None = None      # replication connection
        self._pg: pq.abc.PGconn | None = None              # its libpq connection
        self._poll: select.poll | None = None
        self._meta: psycopg.Connection | None = None      # catalog + status
        self._meta_lock = threading.Lock()
        self._hb_conn: psycopg.Connection | None = None
        self._hb_failing = False
        self._scheduler: BackgroundScheduler | None = None
        self._decoder = po.Decoder()
        # the compiled read loop for runs of row messages (agent/fastpg_glue.c), None on the pure path; _rels:
        # what it needs of each relation it renders (the wanted ones), by relation id
        self._take = fastpath.row_taker() if self._decoder.renders else None
        self._direct = False        # take_rows reads with libpq's PQgetCopyData (fastpath.direct_copy)
        # where take_rows keeps its changes' rendered rows and frames, in chunks (agent/fastpg_rows.c)
        self._arena = fastpath.row_arena() if self._take is not None and fastpath.row_arena is not None else None
        self._rels: dict[int, tuple] = {}
        self._types: dict[int, pgvalues.TypeInfo] = {}
        self._error: str | None = None
        self._server_version = 150000
        self._hb_lock = threading.Lock()
        self._closing = False
        self._skipped_echo = 0             # changes of transactions a cdc-agent wrote (no echo), since start
        self._reset_stream_state(0)

    def _reset_stream_state(self, checkpoint: int) -> None:
        self._skip_before = checkpoint     # transactions committed before this were spooled already
        self._flushed = checkpoint         # what the slot may release (confirmed to the server)
        self._written = checkpoint         # highest LSN received
        self._sent_status = (-1, -1)
        self._last_status = 0.0
        self._in_txn = False
        self._skipping = False
        self._echo = False                 # this transaction's Origin is a cdc-agent's: skip its changes
        self._txn_prefix = ""
        self._txn_lsn = 0
        self._txn_time = ""
        self._txn_ts = 0.0
        self._txn_xid = ""
        self._ordinal = 0
        self._yielded_end = 0              # end LSN of the last Commit handed to the capture core
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
        self._rels.clear()
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
            self._scheduler = scheduler = BackgroundScheduler(daemon=True)
            scheduler.add_job(self._heartbeat, "interval", seconds=self.cfg.source.heartbeat_seconds,
                              id="heartbeat", max_instances=1, coalesce=True, misfire_grace_time=None)
            scheduler.start()

    def _meta_conn(self) -> psycopg.Connection:
        if self._meta is None or self._meta.closed:
            try:
                self._meta = psycopg.connect(conninfo(self.cfg, extra_options="-c statement_timeout=30000"),
                                             autocommit=True)
            except psycopg.Error as e:
                raise translate(e, "cannot connect to PostgreSQL") from None
        return self._meta

    def _meta_query(self, sql: str, params=None) -> list[tuple]:
        with self._meta_lock:
            conn = self._meta_conn()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as e:
                if conn.closed or conn.broken:
                    self._meta = None
                raise translate(e, "catalog query failed") from None

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
            if self._skip_before:
                raise PositionLost(f'replication slot "{self.slot}" does not exist, and the spool\'s checkpoint '
                                   f'{self._skip_before:016X} was read from it: changes since then are gone from '
                                   f'the log; {fix}, or set source.snapshot = "when_needed" to snapshot again')
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
            conn = psycopg.connect(conninfo(self.cfg, replication=True, extra_options=SESSION_OPTIONS),
                                   autocommit=True)
        except psycopg.Error as e:
            raise translate(e, "cannot open a replication connection") from None
        self._conn = conn
        self._pg = pg = conn.pgconn
        self._direct = self._take is not None and fastpath.direct_copy(pg)
        # logical messages (the heartbeat) are only asked for where pgoutput knows the option (14+); the
        # heartbeat still writes WAL in this database on older servers, which the keepalive then confirms
        messages = ", messages 'true'" if self._server_version >= 140000 else ""
        cmd = (f"START_REPLICATION SLOT {ident(self.slot)} LOGICAL {po.lsn_text(ckpt)} "
               f"(proto_version '1', publication_names {literal(ident(self.publication))}{messages})")
        try:
            pg.send_query(cmd.encode())
            res = pg.get_result()
        except psycopg.Error as e:
            raise translate(e, "START_REPLICATION failed") from None
        if res is None or res.status != pq.ExecStatus.COPY_BOTH:
            err = self._result_error(res, "START_REPLICATION failed")
            raise err
        self._poll = poller = select.poll()
        poller.register(pg.socket, select.POLLIN)

    def _result_error(self, res, what: str) -> SourceError:
        if res is None:
            # get_error_message() is already str (psycopg decodes it): .decode() here raised AttributeError
            detail = self._pg.get_error_message().strip() if self._pg else ""
            return SourceUnavailable(redact(f"{what}: {detail or 'the connection closed'}"))
        sqlstate = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        msg = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or res.error_message or b"").decode(errors="replace")
        err = translate_result(sqlstate, msg, what)
        if sqlstate == pgerr.UndefinedObject.sqlstate and "publication" in msg:
            err = SourceFatal(redact(f"{what}: {msg}: run `cdc-agent setup -c {self.cfg.path}`"))
        elif sqlstate == pgerr.ObjectInUse.sqlstate:   # the slot is active for another process: a previous
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

    def _recv(self, timeout: float, tried: bool = False):
        """The next CopyData payload (memoryview), or None when nothing arrives within `timeout`. `tried`:
        poll's take_rows found nothing buffered, read the socket (consume_input) and found nothing again."""
        pg = self._pg
        assert pg is not None       # poll() reads only while the replication connection is open
        n, data = 0, None
        try:
            if not tried:
                n, data = pg.get_copy_data(1)
                if n == 0:
                    pg.consume_input()
                    n, data = pg.get_copy_data(1)
            if n == 0:
                poller = self._poll
                assert poller is not None   # registered with the connection in _start_replication
                deadline = time.monotonic() + timeout
                while n == 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not poller.poll(remaining * 1000):
                        return None
                    pg.consume_input()
                    n, data = pg.get_copy_data(1)
        except psycopg.Error as e:
            self._error = redact(str(e))
            raise translate(e, "replication connection lost") from None
        if n > 0:
            return data
        raise self._stream_ended()

    def _stream_ended(self) -> SourceError:
        """get_copy_data said -1: the server ended the stream; the result says why."""
        assert self._pg is not None
        err = self._result_error(self._pg.get_result(), "replication stream ended")
        self._error = str(err)
        return err

    def poll(self, max_items: int, timeout: float) -> list[Item]:
        """Waits up to `timeout` for the first message, then takes only what has already arrived."""
        if self._pg is None:
            raise SourceUnavailable("the PostgreSQL source is not connected")
        out: list[Item] = []
        append = out.append
        decode = self._decoder.decode
        recv = self._recv
        row = self._row
        take = self._take
        get_copy_data = self._pg.get_copy_data
        # take_rows reads with libpq itself when given the connection's pointer (None once it is closed)
        reader = (getattr(self._pg, "pgconn_ptr", None) or get_copy_data) if self._direct else get_copy_data
        data = None
        waited = False          # a frame came in: wait no longer, take only what has arrived
        consumed = False        # since the last frame: nothing was buffered, the socket was read (as _recv does)
        while True:
            if data is None:
                if take is not None and self._in_txn and not self._skipping and not self._echo:
                    # the row messages that come next, in C, up to the first other frame, which it hands back
                    had = len(out)
                    try:
                        self._ordinal, n, data = take(reader, self._rels, out, max_items, self._txn_lsn,
                                                      self._ordinal, self._txn_time, self._txn_ts, self._txn_xid,
                                                      self._arena)
                        if n == -2:         # (libpq's error, read directly: what psycopg's get_copy_data raises)
                            raise psycopg.OperationalError(f"receiving copy data failed: "
                                                           f"{self._pg.get_error_message()}")
                        if len(out) > had:
                            self._position = out[-1].position   # type: ignore[union-attr]
                            waited, consumed = True, False
                        if data is None and n == 0 and not consumed:
                            self._pg.consume_input()            # nothing buffered: read the socket, take again
                            consumed = True
                            continue
                    except psycopg.Error as e:
                        self._error = redact(str(e))
                        raise translate(e, "replication connection lost") from None
                    if data is None:
                        if n < 0:
                            raise self._stream_ended()
                        if n > 0:
                            break                               # max_items
                        data = recv(0 if waited else timeout, True)
                    consumed = False
                else:
                    data = recv(0 if waited else timeout)
                if data is None:
                    break
                waited = True
            buf = bytes(data)
            data = None
            if buf[0] == 119:                                   # 'w' XLogData: one pgoutput message
                try:
                    m = decode(buf, 25)
                except po.DecodeError as e:
                    raise SourceFatal(f"cannot decode a pgoutput message: {e}") from None
                k = m.kind
                if k == "I" or k == "U" or k == "D":
                    if self._echo:
                        self._skipped_echo += 1
                    elif not self._skipping:
                        c = row(m)
                        if c is not None:
                            append(c)
                            self._position = c.position
                elif k == "B":
                    if self._begin(m):
                        append(Begin(self._txn_xid, self._txn_ts))
                elif k == "C":
                    self._in_txn = False
                    self._echo = False
                    if self._skipping:
                        self._skipping = False
                    else:
                        append(Commit(po.lsn_hex16(m.end_lsn)))
                        self._yielded_end = m.end_lsn
                        if m.end_lsn > self._written:
                            self._written = m.end_lsn
                elif k == "R":
                    self._relation(m)
                elif k == "T":
                    if not self._skipping:
                        log.warning("TRUNCATE of %s is not captured: it produces no row events",
                                    ", ".join(r.qualified for r in m.relations))
                elif k == "M":
                    if not m.transactional:
                        self._idle_advance(m.lsn)
                    elif m.prefix == WATERMARK_PREFIX and not self._skipping:
                        append(self._watermark(m))
                elif k == "O":
                    # a `sql` target's write (agent/twoway.py): its Begin is out already, so the transaction
                    # still ends in a Commit (an empty one: the checkpoint moves, the slot is confirmed past it)
                    self._echo = is_echo(m.name)
                # 'Y' Type: nothing to do (types come from the catalog)
            elif buf[0] == 107:                                 # 'k' keepalive
                ka = po.parse_keepalive(buf)
                if ka.wal_end > self._written:
                    self._written = ka.wal_end
                self._idle_advance(ka.wal_end)
                self._send_status(force=ka.reply_requested)
                if not self._in_txn:
                    append(Keepalive())
            if len(out) >= max_items:
                break
        if time.monotonic() - self._last_status > STATUS_INTERVAL_SECONDS:
            self._send_status(force=True)
        return out

    def keepalive(self) -> None:
        """Capture is paused: tell the walsender we are alive (a standby status update), read nothing. The
        walsender reads replies even while its output is blocked, and each one resets wal_sender_timeout."""
        if self._pg is not None:
            self._send_status(force=True)

    def _begin(self, m: po.Begin) -> bool:
        """False when the transaction was spooled before the checkpoint capture resumed from (skip it)."""
        self._in_txn = True
        self._ordinal = 0
        self._echo = False
        if m.final_lsn < self._skip_before:
            self._skipping = True
            return False
        self._skipping = False
        self._txn_prefix = f"{m.final_lsn:016X}:"
        self._txn_lsn = m.final_lsn
        commit_time = m.commit_time
        if commit_time == 0:
            # decoding reports the *origin's* timestamp for a transaction written under a replication origin,
            # and that is 0 unless the writer set one (pg_replication_origin_xact_setup): take the time it
            # arrived instead of 2000-01-01 (which made lag read as 27 years)
            commit_time = po.pg_time_from_unix(time.time())
        self._txn_time = po.pg_time_rfc3339(commit_time)
        self._txn_ts = po.pg_time_to_unix(commit_time)
        self._txn_xid = str(m.xid)
        if self._pending_since is None:
            self._pending_since = self._txn_ts
        return True

    def _watermark(self, m) -> Watermark:
        """A snapshot watermark (agent/snapshot.py): 'name:kind', written by pg_logical_emit_message in its
        own transaction; its position is taken like a row's, so the rows read at it sort right after it."""
        self._ordinal += 1
        name, _, kind = m.content.decode().rpartition(":")
        return Watermark(name, kind, f"{self._txn_prefix}{self._ordinal:08d}")

    def snapshot_reader(self):
        from .snapshot import PostgresSnapshotReader
        return PostgresSnapshotReader(self.cfg)

    def _row(self, m) -> RowChange | None:
        rel = m.relation
        meta: RelMeta = rel.info
        if not meta.wanted:
            return None
        self._ordinal += 1
        pos = f"{self._txn_prefix}{self._ordinal:08d}"
        return row_change(m, meta, pos, self._txn_time, self._txn_ts, self._txn_xid)

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
        rel.info = meta = RelMeta(table, wanted, key_columns, key_index, RowLayout(rel.names, key_index))
        if wanted:
            self._rels[rel.oid] = (rel.converters, rel.kinds, table, key_columns, meta.layout,
                                   functools.partial(_frame_images, self._decoder, rel, meta), _OP_NAMES)
        else:
            self._rels.pop(rel.oid, None)

    def _load_types(self, oids: list[int]) -> None:
        missing = {o for o in oids if o not in pgvalues.SCALARS and o not in self._types}
        for _ in range(10):                 # arrays of domains over arrays...: a few rounds at most
            if not missing:
                return
            rows = self._meta_query(
                "SELECT oid::int8, typname::text, typtype::text, typcategory::text, typelem::int8, "
                "typbasetype::int8, typdelim::text FROM pg_type WHERE oid = ANY(%s::oid[])", (sorted(missing),))
            nxt: set[int] = set()
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
        # not inside a transaction, and every Commit handed out is confirmed: the core holds nothing unspooled
        if not self._in_txn and self._yielded_end <= self._flushed and lsn > self._flushed:
            self._flushed = lsn
            self._pending_since = None

    def confirm(self, checkpoint: str) -> None:
        lsn = int(checkpoint, 16)
        if lsn > self._flushed:
            self._flushed = lsn
        if lsn >= self._yielded_end:
            self._pending_since = self._txn_ts if (self._in_txn and not self._skipping and self._ordinal) else None
        if self._pg is not None:
            self._send_status(force=True)

    def _send_status(self, force: bool = False) -> None:
        written = max(self._written, self._flushed)
        state = (written, self._flushed)
        if not force and state == self._sent_status:
            return
        msg = po.standby_status(written, self._flushed, self._flushed, po.pg_time_from_unix(time.time()))
        pg = self._pg
        assert pg is not None       # every caller checks that the replication connection is open
        try:
            pg.put_copy_data(msg)
            pg.flush()
        except psycopg.Error as e:
            self._error = redact(str(e))
            raise translate(e, "replication connection lost") from None
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
                self._hb_conn = psycopg.connect(conninfo(self.cfg, extra_options="-c statement_timeout=10000"),
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
                            retained_wal_bytes=self._retained_wal() if connected else None, error=self._error,
                            skipped_echo=self._skipped_echo)

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
