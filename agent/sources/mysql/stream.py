"""Source kind `mysql`, the stream part: MySQL 8 / MariaDB 10.5+ row binlog, read as a replica. `poll`
yields Begin / RowChange / Commit / Keepalive items; agent/capture.py batches them.

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

XA: the binlog holds a prepared transaction at XA PREPARE and its outcome in a later group (XA COMMIT /
XA ROLLBACK xid; MariaDB writes XA COMMIT ... ONE PHASE as an ordinary transaction). Its changes are kept
in memory, bounded by MAX_PREPARED_XA_CHANGES, and emitted at XA COMMIT with the positions of the commit
group; a rollback drops them. While one is unresolved, checkpoints stay before its XA PREPARE, so a restart
reads it again (what follows is read again with the same positions and the spool drops the copies).

No echo (docs/two-way-sync.md): rows events with the header flag LOG_EVENT_SKIP_REPLICATION_F were written by
a session with skip_replication = 1, as a cdc-agent `sql` target writes into MariaDB: counted (skipped_echo),
not emitted; their transaction's boundaries still move the checkpoint. MySQL has no such flag.

No silent reconnects: a lost connection raises SourceUnavailable and the pipeline calls start() again
with the spool's checkpoint. A position the server no longer has (binlogs purged) raises PositionLost
(fatal, unless source.snapshot = "when_needed": then the pipeline starts again from now with a snapshot).

Snapshot watermarks (agent/sources/mysql/snapshot.py) are row writes to the signal table: they become
Watermark items, not changes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ... import binlog, fastmy, myvalues
from ...changes import Begin, Commit, Item, Keepalive, RowChange, SourceStatus, Watermark
from ...config import Config
from ...errors import PositionLost, SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact
from ...twoway import LOG_EVENT_SKIP_REPLICATION_F
from ..mysqlwire import AuthError, Connection, ServerError, WireError
from .common import (PURGED_HELP, control_connection, driver_error, file_number, format_checkpoint, global_var,
                     gtid_state, master_status, parse_checkpoint, parse_dsn, run_query, server_address, signal_table)

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0          # the server sends a heartbeat after this long without events
DEAD_AFTER_SECONDS = 20.0        # nothing at all (not even a heartbeat) for this long: the connection is gone
MARIA_SLAVE_CAPABILITY_GTID = 4
PAUSED_WRITE_TIMEOUT_SECONDS = 86400  # how long the server waits for a paused agent to read again
MAX_PREPARED_XA_CHANGES = 200_000   # changes of prepared, unresolved XA transactions held in memory

# ---------------------------------------------------------------- the source


class MysqlSource:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))
        self.server_id = cfg.source.server_id
        self._tables = {t: t for t in cfg.source.tables}
        self._signal = ".".join(signal_table(cfg))     # its row events are snapshot watermarks (snapshot.py)
        self._conn: Connection | None = None
        self._error: str | None = None
        self._last_position: str | None = None
        self._last_event_ts: float | None = None
        self._caught_up = False
        self._skipped_echo = 0    # row changes a cdc-agent wrote (skip_replication flag), since start
        self._make_changes: Callable[..., tuple[list[Any], int]] | None = None   # (fastmy.changes_maker)
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
        self._items: list[Item] = []              # what the poll under way yields
        self._txn_start_checkpoint: str | None = None   # the boundary before the transaction being read
        self._xa: str | None = None               # xid of the XA transaction being read (XA START .. PREPARE)
        self._xa_changes: list[RowChange] = []
        self._prepared: dict[str, tuple[str | None, list[RowChange]]] = {}   # xid -> (checkpoint before, changes)
        self._last_packet = time.monotonic()
        self._json_cols: dict[tuple[str, str], dict[str, str]] = {}
        self._json_seen: set[tuple[str, str]] = set()
        self._names: dict[str, str] = {}
        self._lower_names = False

    def start(self, checkpoint: str | None) -> None:
        self.close()
        self._reset_stream_state()
        d = self.dsn
        ctl = control_connection(d)
        try:
            version = run_query(ctl, "SELECT VERSION()")[0][0]
            self.mariadb = "mariadb" in version.lower()
            own_id = int(run_query(ctl, "SELECT @@server_id")[0][0])
            if own_id == self.server_id:
                raise SourceFatal(f"source.server_id {self.server_id} is the database server's own server_id; "
                                  f"give the agent a server_id no other server or replica uses")
            for name, want in (("log_bin", "ON"), ("binlog_format", "ROW")):
                val = str(global_var(ctl, name) or "").upper()
                if val != want:
                    raise SourceFatal(f"{name} is {val or 'unset'} on {server_address(d)}; binlog capture needs {want} "
                                      f"(run `cdc-agent check` for the fix)")
            meta = global_var(ctl, "binlog_row_metadata")
            if meta is not None and str(meta).upper() != "FULL":
                raise SourceFatal(f"binlog_row_metadata is {meta} on {server_address(d)}; the agent needs FULL to name "
                                  f"columns (SET GLOBAL binlog_row_metadata = 'FULL', and in my.cnf)")
            self._lower_names = str(global_var(ctl, "lower_case_table_names") or "0") != "0"
            if self._lower_names:
                self._tables = {t.lower(): t for t in self.cfg.source.tables}
                self._signal = self._signal.lower()
            collations = {int(i): cs for i, cs in run_query(
                ctl, "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")}
            if self.mariadb:
                self._load_json_columns(ctl)
            if checkpoint is None:
                # GTID first: a commit between the two reads is then streamed (resume is by GTID), not skipped
                gtids = gtid_state(str(global_var(ctl, "gtid_binlog_pos") or "")) if self.mariadb else None
                status = master_status(ctl)
                if not status:
                    raise SourceFatal(f"SHOW MASTER STATUS on {server_address(d)} returned nothing: "
                                      "binary logging is off")
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
            raise driver_error(e, d) from None
        ctl.close()

        cp = parse_checkpoint(start)
        self._file, self._pos = cp["file"], int(cp["pos"])
        self._gtids = gtid_state(cp.get("gtid", "")) if self.mariadb else None
        if self.mariadb and "gtid" not in cp:
            self._gtids = {}
        self._checkpoint = start
        self._parser = binlog.BinlogParser(want=self._want, collations=collations,
                                           json_columns=self._json_columns if self.mariadb else None,
                                           render=self._render)
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
            # the server gives up on a dump it cannot write to after net_write_timeout (60 s by default):
            # while backpressure pauses capture nothing reads, so allow a long pause (a reconnect after it)
            conn.execute(f"SET @@session.net_write_timeout = {PAUSED_WRITE_TIMEOUT_SECONDS}")
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
                raise WireError(f"no answer to the binlog request from {server_address(d)} in {d.connect_timeout:.0f}s")
            assert self._parser is not None       # made by start() before it opens the stream
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
            raise SourceFatal(f"MySQL {server_address(d)} refused the agent's user {d.user!r}: "
                              f"{redact(str(e))}") from None
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
        where = server_address(self.dsn)
        if e.code == 1236:
            ckpt = self._returned or self._checkpoint
            msg = e.message.lower()
            if "purged" in msg or "could not find first log" in msg:
                return PositionLost(f"binlogs purged: MySQL {where} no longer has the binlog at the agent's checkpoint "
                                   f"{ckpt} ({e.message}). {PURGED_HELP[0].upper()}{PURGED_HELP[1:]}")
            return SourceFatal(f"MySQL {where} refuses to stream from the agent's checkpoint {ckpt}: {e.message}. "
                               f"The checkpoint does not fit this server's binlog (a different, restored or reset "
                               f"server?). "
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
                            error=self._error, skipped_echo=self._skipped_echo)

    # -- catalog help for the decoder

    def _want(self, schema: str, table: str) -> bool:
        name = f"{schema}.{table}"
        if self._lower_names:
            name = name.lower()
        return name in self._tables or name == self._signal

    def _load_json_columns(self, ctl) -> None:
        """What the binlog cannot tell apart, from the catalog: MariaDB's JSON (LONGTEXT with a json_valid()
        CHECK) from text, and UUID / INET4 / INET6 from BINARY(16) / BINARY(4) (agent/myvalues.py)."""
        self._json_cols = myvalues.load_logical_types(lambda sql: run_query(ctl, sql))

    def _json_columns(self, schema: str, table: str) -> dict[str, str]:
        key = (schema, table)
        if key in self._json_seen:
            # a new shape of a table seen before (ALTER TABLE): read the catalog again
            ctl = control_connection(self.dsn)
            try:
                self._load_json_columns(ctl)
            except Exception as e:
                raise driver_error(e, self.dsn) from None
            finally:
                ctl.close()
        self._json_seen.add(key)
        return self._json_cols.get(key, {})

    # -- streaming

    def poll(self, max_items: int, timeout: float) -> list[Item]:
        """Waits up to `timeout` for the first event, then takes only what has already arrived."""
        conn = self._conn
        if conn is None:
            raise SourceUnavailable("the binlog stream is not connected")
        out: list[Item] = []
        self._items = out
        if self._returned is None and self._checkpoint is not None:
            # first poll after a start without checkpoint: let the spool record where capture begins
            self._returned = self._checkpoint
            out.append(Commit(self._checkpoint))
            return out
        assert self._parser is not None           # made by start()
        parse = self._parser.parse
        try:
            while len(out) < max_items:
                raw = conn.read_event(timeout)
                timeout = 0.0
                if raw is None:
                    if not self._in_txn:
                        self._caught_up = True
                    if time.monotonic() - self._last_packet > DEAD_AFTER_SECONDS:
                        raise SourceUnavailable(f"no data and no heartbeat from MySQL {server_address(self.dsn)} "
                                                f"for {DEAD_AFTER_SECONDS:.0f}s: connection presumed lost")
                    break
                self._last_packet = time.monotonic()
                ev = parse(raw)
                et = ev.type
                if isinstance(ev, binlog.Rows):          # the ROWS_OP event types
                    if ev.rows or ev.rendered:
                        if self._is_signal(ev.table_map):
                            self._watermark(ev, out)
                        elif ev.flags & LOG_EVENT_SKIP_REPLICATION_F:
                            # a `sql` target's write (skip_replication = 1, agent/twoway.py): no echo; the
                            # transaction's GTID and XID still go through, so the checkpoint moves past it
                            self._skipped_echo += len(ev.rows or ev.rendered or ())
                        elif self._xa is None:
                            self._rows(ev, out)
                        else:
                            self._rows(ev, self._xa_changes)
                            self._check_xa_bound()
                    continue
                if isinstance(ev, binlog.TableMapEvent):
                    tm = ev.table_map
                    if tm is not None and not tm.has_names and tm.columns:
                        raise SourceFatal(f"the binlog's TABLE_MAP for {tm.name} carries no column names "
                                          f"(binlog_row_metadata was not FULL when it was written); the agent "
                                          f"cannot label its columns safely. Set binlog_row_metadata=FULL; "
                                          f"events written before that need a fresh snapshot and a reset "
                                          f"checkpoint")
                    continue
                if self._control(ev):
                    resume = self._resume_checkpoint()
                    assert resume is not None     # a transaction boundary was just read
                    self._returned = resume
                    out.append(Commit(resume))
                elif et in (binlog.HEARTBEAT, binlog.HEARTBEAT_V2) and not self._in_txn:
                    out.append(Keepalive())
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
        return out

    def keepalive(self) -> None:
        """Nothing to send while capture is paused: the server's writes to the dump just wait, for as long as
        the session's net_write_timeout, which _open_stream raises to PAUSED_WRITE_TIMEOUT_SECONDS."""

    def _resume_checkpoint(self) -> str | None:
        """Where a restart must resume: after the last boundary read, unless an XA transaction is prepared
        and not yet committed or rolled back; then before the oldest such one, so that a restart reads its
        changes again (the transactions after it come again with the same positions; the spool drops them)."""
        for before, _ in self._prepared.values():
            return before
        return self._checkpoint

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
        if ev.rendered is not None:                    # the rows' values as JSON text (FULL images)
            if self._make_changes is None:
                self._make_changes = fastmy.changes_maker()
            made, missing = self._make_changes(ev.rendered, name, op, ct, cts, txid, keys, tm.layout, ev.images,
                                               prefix, n)
            if missing:                                # values only the dict path writes: those rows as dicts
                for i, ch in enumerate(made):
                    if ch is None:
                        before, after = ev.images(i)
                        made[i] = RowChange(name, op, before, after, f"{prefix}{n + i + 1:08d}", ct, cts, txid, keys)
            changes.extend(made)
            n += len(made)
            self._ordinal = n
            self._last_position = f"{prefix}{n:08d}"
            return
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
        self._last_position = f"{prefix}{n:08d}"

    def _render(self, schema: str, table: str) -> bool:
        """Which tables' rows the parser renders as JSON text: the captured ones, not the signal table (its
        rows are read as watermarks)."""
        name = f"{schema}.{table}"
        return (name.lower() if self._lower_names else name) != self._signal

    def _is_signal(self, tm) -> bool:
        name = tm.name
        return (name.lower() if self._lower_names else name) == self._signal

    def _watermark(self, ev, out: list) -> None:
        """A write to the signal table (a snapshot watermark, agent/sources/mysql/snapshot.py): 'name:kind' in
        the row's `mark`; its position is taken like a row's, so the rows read at it sort right after it."""
        if not self._in_txn:
            self._begin(ev, None, None)
        for row in ev.dict_rows() or ():
            after = row[1] if ev.op == "update" else (row if ev.op == "insert" else None)
            mark = after.get("mark") if after else None
            if isinstance(mark, str):
                self._ordinal += 1
                name, _, kind = mark.rpartition(":")
                out.append(Watermark(name, kind, f"{self._txn_prefix}{self._ordinal:08d}"))

    def snapshot_reader(self):
        from .snapshot import MysqlSnapshotReader
        return MysqlSnapshotReader(self.cfg)

    def _begin(self, ev, gtid: str | None, commit_us: int | None) -> None:
        self._in_txn = True
        self._txn_start_checkpoint = self._checkpoint
        self._txn_has_begin = False
        start = ev.log_pos - ev.size if ev.log_pos else self._pos
        self._txn_prefix = f"{file_number(self._file):08d}:{start:012d}:"
        self._ordinal = 0
        if commit_us:
            sec, usec = divmod(commit_us, 1_000_000)
        else:
            sec, usec = ev.timestamp, 0
        self._txn_time = myvalues.format_timestamp(sec, usec)
        self._txn_ts = sec + usec / 1e6
        self._last_event_ts = self._txn_ts
        self._caught_up = False
        self._txn_gtid = gtid
        self._txid = gtid or f"{self._file}:{start}"
        self._items.append(Begin(self._txid, self._txn_ts))

    def _end(self, ev) -> None:
        self._in_txn = False
        if ev.log_pos:
            self._pos = ev.log_pos
        if self._txn_gtid and self._gtids is not None and self._txn_domain is not None:
            self._gtids[self._txn_domain] = self._txn_gtid
        self._txn_domain = None
        self._checkpoint = format_checkpoint(self._gtids, self._file, self._pos)

    # -- XA: a prepared transaction is written to the binlog at XA PREPARE, and only a later group says
    # whether it committed. Its changes are held (bounded) until XA COMMIT and then emitted with the commit's
    # positions; XA ROLLBACK drops them. While one is held, checkpoints stay before it (_resume_checkpoint).

    def _xa_query(self, ev, q: str) -> bool:
        word = q[:12].upper()
        if word.startswith("XA START"):                 # MySQL (MariaDB flags its GTID event instead)
            if not self._in_txn:
                self._begin(ev, None, None)
            self._txn_has_begin = True
            self._xa, self._xa_changes = q[8:].strip(), []
            return False
        if word.startswith("XA END"):
            if self._xa is not None:
                self._xa = q[6:].strip()
            return False
        if not self._in_txn:
            self._begin(ev, None, None)
        if word.startswith("XA COMMIT"):
            held = self._prepared.pop(q[9:].strip(), None)
            if held is not None:
                self._emit_xa(held[1])
            else:
                log.warning("XA COMMIT %s: its XA PREPARE lies before the position capture started from; its "
                            "changes are not captured", q[9:].strip())
        elif word.startswith("XA ROLLBACK"):
            self._prepared.pop(q[11:].strip(), None)
        self._end(ev)
        return True

    def _emit_xa(self, changes: list[RowChange]) -> None:
        """A prepared transaction committed: its changes take the positions of the group that committed it."""
        n = self._ordinal
        for c in changes:
            n += 1
            c.position = f"{self._txn_prefix}{n:08d}"
            c.commit_time, c.commit_ts, c.txid = self._txn_time, self._txn_ts, self._txid
        self._ordinal = n
        self._items.extend(changes)
        if changes:
            self._last_position = changes[-1].position

    def _check_xa_bound(self) -> None:
        held = len(self._xa_changes) + sum(len(c) for _, c in self._prepared.values())
        if held > MAX_PREPARED_XA_CHANGES:
            raise SourceFatal(f"prepared XA transactions not yet committed or rolled back hold {held} changes, more "
                              f"than the agent keeps in memory ({MAX_PREPARED_XA_CHANGES}); commit or roll back "
                              f"them (XA RECOVER lists them)")

    def _control(self, ev) -> bool:
        """Non-row events. True when the event ends a transaction (a checkpoint is possible after it)."""
        et = ev.type
        if et == binlog.XID:
            self._end(ev)
            return True
        if et == binlog.XA_PREPARE:
            if self._xa is not None:
                if ev.one_phase:                        # committed right here
                    self._emit_xa(self._xa_changes)
                else:
                    self._prepared[self._xa] = (self._txn_start_checkpoint, self._xa_changes)
                self._xa, self._xa_changes = None, []
            self._end(ev)
            return True
        if et == binlog.MARIA_GTID:
            self._begin(ev, ev.gtid, None)
            self._txn_domain = ev.domain
            self._txn_has_begin = not ev.standalone
            if ev.gtid_flags & binlog.FL_PREPARED_XA:   # MariaDB: this group is an XA PREPARE (its xid
                self._xa, self._xa_changes = "", []     # comes with XA END)
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
            if word.startswith("XA "):
                return self._xa_query(ev, q)
            if word in ("COMMIT", "ROLLBACK"):
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


