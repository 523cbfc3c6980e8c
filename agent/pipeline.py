"""Wires a source, the mapper, the spool and the targets, and owns every checkpoint.

The order that keeps data safe:
  capture:  source.poll → CaptureCore.read (batches, checkpoints) → map → spool.append(events + checkpoint,
            one transaction) → source.confirm
  delivery: spool.fetch → target.send → target confirms → spool.advance(cursor)
Each target runs in its own thread with its own cursor, so a slow or broken target holds back nothing but
itself; the spool absorbs its backlog up to `agent.spool_max_events`, then capture pauses (backpressure)
instead of dropping anything.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time

from . import timing
from .capture import CaptureCore
from .config import Config
from .conflicts import prune as prune_conflicts
from .delivery import DeliveryProcess
from .interfaces import Source
from .errors import CdcError, PositionLost, SourceError, SourceFatal, SpoolError
from .mapping import EventMapper, event_id
from .monitor import Monitor
from .outbox import OutboxCleaner
from .secrets import redact, registered
from .service import Notifier
from .snapshot import SnapshotRunner, new_request, requests, store_request
from .sources import capture_admin, open_source
from .spool import Spool
from .spool_checkpoints import SpoolCheckpointer
from .statefiles import private_state_dir
from .worker import DRAIN_SECONDS, TargetWorker

log = logging.getLogger(__name__)

READ_WAIT_SECONDS = 0.2       # how long one source read waits for a first change
PRUNE_EVERY_SECONDS = 30.0
PRUNE_STEP = 5000             # events deleted per spool transaction


class Agent:
    """One capture loop (this thread), and the targets' delivery (a child process, or one thread per target).

    Spool writes stay on the capture thread on purpose: on a second thread, every row sqlite3 binds needs
    the interpreter lock back from the decoding thread, and the drain measured 20% slower."""

    def __init__(self, cfg: Config, stop: threading.Event):
        self.cfg, self.stop = cfg, stop
        self.monitor = Monitor(cfg.agent.name, cfg.source.kind)
        self._lock_fd = _lock_state_dir(cfg)
        # its commits leave WAL checkpoints to `checkpoints` (as the delivery workers' do): off the change path
        self.spool = Spool(cfg.agent.state_dir, background_checkpoints=True)
        self.checkpoints = SpoolCheckpointer(cfg.agent.state_dir)
        self.spool.ensure_targets([t.name for t in cfg.targets])
        self.mapper = EventMapper(cfg)
        self.outbox_cleaner = OutboxCleaner(cfg)      # `delete_after` outbox rows, once spooled
        self.delivery = None
        if cfg.agent.delivery == "process":
            self.delivery = DeliveryProcess(cfg, self.monitor, registered())
            self.workers = []
        else:
            self.workers = [TargetWorker(cfg, t, self.monitor, stop) for t in cfg.targets]
        self.source: Source | None = None
        self.capture: CaptureCore | None = None
        self._setup_done = False
        self.snapshots = SnapshotRunner(self.spool, cfg.source.snapshot_chunk_rows, cfg.agent.name)
        self.monitor.snapshot_fn = self.snapshots.health
        self.monitor.snapshot_rows_fn = lambda: dict(self.snapshots.rows_total)
        # a batch read from the source that the spool has not accepted yet (a full disk): kept, appended
        # again until it goes in, and only then is the source confirmed
        self._unspooled: tuple | None = None
        # sql targets in two-way sync: their conflicts are pruned after agent.conflicts_retention_days
        self._owning_targets = [t.name for t in cfg.targets if getattr(t.options, "owns", None)]
        self._stamps: dict | None = None         # the batch in hand's stage times (CDC_AGENT_TIMING only)

    def run(self) -> int:
        health = None
        if self.cfg.health.listen:
            # imported only here: the health module pulls in http.server, the dashboard and the alerts
            from .health import HealthServer
            health = HealthServer(self.cfg, self.monitor)
            health.start()
        self.checkpoints.start()
        for w in self.workers:
            w.start()
        if self.delivery:
            self.delivery.start()
        reconciles = None
        if any(t.kind == "sql" for t in self.cfg.targets):      # (agent.reconcile is for sql targets only)
            from .reconcile import start_schedule
            reconciles = start_schedule(self.cfg, self.monitor)     # sql targets' reconcile_every
        log.info("agent %s started: source %s, targets %s", self.cfg.agent.name, self.cfg.source.kind,
                 ", ".join(t.name for t in self.cfg.targets))
        systemd = Notifier()          # Type=notify under systemd (packaging/cdc-agent.service); else nothing
        systemd.ready(f"capturing from {self.cfg.source.kind}, delivering to "
                      + ", ".join(t.name for t in self.cfg.targets))
        last_prune = last_ckpt_log = time.monotonic()
        failures = spool_failures = 0
        try:
            while not self.stop.is_set():
                systemd.watchdog()        # every turn of this loop: a hung capture loop gets restarted
                if self.delivery:
                    self.delivery.ensure_alive()      # also while paused: only delivery can end a pause
                if self.monitor.capture_stopped:
                    self.stop.wait(0.5)               # a bug stopped capture: health says so until a restart
                    continue
                try:
                    if self._backpressure():
                        self._keep_source_alive()
                        self.stop.wait(0.5)
                        continue
                    try:
                        if self._unspooled is not None:
                            self._spool_batch()
                        else:
                            if self.source is None:
                                self._open_source()
                            self._capture_once()
                        failures = 0
                    except SourceError as e:
                        failures += 1
                        self._source_failed(e, failures)
                    now = time.monotonic()
                    if now - last_prune > PRUNE_EVERY_SECONDS:
                        # one small step per loop until nothing is left to prune: capture never waits long
                        if self.spool.prune(self.cfg.agent.spool_retention_seconds, PRUNE_STEP) < PRUNE_STEP:
                            last_prune = now
                            if self._owning_targets:
                                prune_conflicts(self.spool, self._owning_targets,
                                                self.cfg.agent.conflicts_retention_days * 86400)
                    if now - last_ckpt_log > self.cfg.agent.checkpoint_log_seconds:
                        log.info("checkpoint %s, %d changes captured since start", self.spool.checkpoint(),
                                 self.monitor.captured)
                        last_ckpt_log = now
                    spool_failures = 0
                except SpoolError as e:
                    spool_failures += 1
                    self._spool_failed(e, spool_failures)
                except CdcError:
                    raise
                except Exception as e:
                    self._capture_bug(e)
        finally:
            systemd.stopping()
            if self._unspooled is not None:
                log.warning("stopping with a batch the spool did not accept; it is read again from checkpoint "
                            "%s on the next start (the source was not confirmed past it)",
                            self._checkpoint_or_unknown())
            self._close_source()
            self.outbox_cleaner.close()
            # leaving on an error (not on SIGTERM) too: the workers drain and stop, instead of the joins below
            # waiting out their full timeout for workers that were never told
            self.stop.set()
            for w in self.workers:
                w.wake.set()
            for w in self.workers:
                w.join(DRAIN_SECONDS + 5)
            if self.delivery:
                self.delivery.stop(DRAIN_SECONDS + 5)
            if reconciles is not None:
                reconciles.shutdown(wait=False)
            if health:
                health.stop()
            log.info("agent %s stopped at checkpoint %s", self.cfg.agent.name, self._checkpoint_or_unknown())
            self.checkpoints.stop()
            self.spool.close()
            os.close(self._lock_fd)
        return 0

    def _backpressure(self) -> bool:
        pending = self.spool.max_pending()
        limit = self.cfg.agent.spool_max_events
        # hysteresis: once paused, resume only when the backlog is a tenth below the limit, so capture does
        # not flap (and log) on every delivered batch at the limit
        full = pending >= limit if not self.monitor.backpressure else pending > limit - max(1, limit // 10)
        if full != self.monitor.backpressure:
            if full:
                log.warning("spool holds %d undelivered events (limit %d): capture paused until targets catch up",
                            pending, self.cfg.agent.spool_max_events)
            else:
                log.info("spool below its limit again: capture resumes")
            self.monitor.backpressure = full
        return full

    def _open_source(self) -> None:
        checkpoint = self.spool.checkpoint()
        lost = self._lost_at_start(checkpoint)
        if not self._setup_done:
            # `run` creates missing capture objects like `setup` when it has the privileges
            try:
                for line in capture_admin(self.cfg).setup():
                    log.info("setup: %s", line)
                self._setup_done = True
            except CdcError as e:
                log.warning("could not create capture objects (%s); using what exists", redact(str(e)))
        source = open_source(self.cfg)
        if checkpoint is None and self.cfg.source.snapshot != "never" and not requests(self.spool) \
                and not getattr(source, "snapshots_itself", False):      # (debezium: its own snapshot.mode)
            req = new_request(list(self.cfg.source.tables), initial=True)
            store_request(self.spool, req)
            log.info("first run of this state_dir: initial snapshot %s of %s", req["id"], ", ".join(req["tables"]))
        try:
            try:
                if lost is not None:
                    raise lost
                source.start(checkpoint)
            except PositionLost as e:
                if self.cfg.source.snapshot != "when_needed":
                    raise
                self._position_lost(source, e)
                checkpoint = None
        except BaseException:
            try:
                source.close()
            except Exception:
                pass
            raise
        self.source = source
        self.capture = CaptureCore(source, on_watermark=self.snapshots.on_watermark)
        reader_fn = getattr(source, "snapshot_reader", None)
        self.snapshots.attach(reader_fn() if reader_fn else None)
        self.monitor.source_status_fn = source.status
        self.monitor.source_error, self.monitor.source_fatal = None, False
        log.info("source %s connected, resuming after %s", self.cfg.source.kind, checkpoint or "the start of capture")

    def _lost_at_start(self, checkpoint: str | None) -> PositionLost | None:
        """Before `run` creates missing capture objects: is the checkpoint's log position gone (PostgreSQL: the
        slot was dropped while the agent was stopped)? Without "when_needed" that stops here, as it does
        while running, instead of a new slot hiding the gap."""
        probe = getattr(capture_admin(self.cfg), "position_lost", None) if checkpoint else None
        msg = probe(checkpoint) if probe is not None else None
        if msg is None:
            return None
        if self.cfg.source.snapshot != "when_needed":
            raise PositionLost(msg)
        return PositionLost(msg)

    def _position_lost(self, source, e: PositionLost) -> None:
        """snapshot = "when_needed": the log no longer holds the checkpoint; create what capture needs again,
        stream from now and read every table again, instead of stopping."""
        log.warning("%s; snapshot = \"when_needed\": capture starts again from the current position and every "
                    "table is read again (a snapshot)", redact(str(e)))
        for line in capture_admin(self.cfg).setup():
            log.info("setup: %s", line)
        for req in requests(self.spool):
            if req["state"] in ("pending", "running"):
                req["state"], req["error"] = "cancelled", "the log position was lost; a new snapshot replaces it"
                store_request(self.spool, req)
        self.spool.set_checkpoint(None)
        req = new_request(list(self.cfg.source.tables))
        store_request(self.spool, req)
        log.info("snapshot %s of %s requested", req["id"], ", ".join(req["tables"]))
        source.start(None)
        return None

    def _capture_once(self) -> None:
        self.snapshots.step()
        assert self.capture is not None     # _open_source ran (the capture loop opens the source first)
        entered = time.time() if timing.ENABLED else 0.0
        batch = self.capture.read(self.cfg.source.batch_size, READ_WAIT_SECONDS)
        progress = self.snapshots.progress_for(batch.changes, batch.checkpoint)
        if not batch.changes and batch.checkpoint is None:
            return
        closed = time.time() if timing.ENABLED else 0.0
        events, failures = self.mapper.map(batch.changes)
        if timing.ENABLED and batch.changes:
            self._stamps = {"n": len(batch.changes), "commit0": batch.changes[0].commit_ts,
                            "commit1": batch.changes[-1].commit_ts, "entered": entered, "closed": closed,
                            "mapped": time.time(),
                            "first": timing.wall(self.capture.first_at)}
        for f in failures:
            log.warning("change at %s cannot become %s (event %s): %s; it is in dead letters", f.position,
                        f.event_type, event_id(self.cfg.agent.name, f.position, f.event_type), f.reason)
        self.monitor.captured += len(batch.changes)
        self._unspooled = (events, failures, batch.checkpoint, progress)
        # the changes are done with (events and failures hold what the spool needs): their memory goes back
        # now, before the spool's append, not after it (~10 MB per 5000 changes)
        del batch
        self._spool_batch()

    def _spool_batch(self) -> None:
        """Append the batch in hand; on a SpoolError it stays in hand (the source is not read further and not
        confirmed) and the capture loop tries again after a pause."""
        assert self._unspooled is not None  # callers check there is a batch in hand
        events, failures, checkpoint, progress = self._unspooled
        added = self.spool.append(events, failures, checkpoint, snapshot_state=progress)
        self._unspooled = None
        if self.monitor.capture_error is not None:
            log.info("the spool accepts writes again: capture resumes")
            self.monitor.capture_error = None
        stamps, self._stamps = self._stamps, None
        if stamps is not None:
            stamps["spooled"] = time.time()
        if added:
            self._wake_targets()
        if checkpoint is not None and self.source is not None:
            # only now: the spool holds everything up to it. (No source: it failed while this batch waited for
            # the spool; the next one starts from the spool's checkpoint, which confirms the same.)
            self.source.confirm(checkpoint)
        if stamps is not None:
            timing.record("capture", seq=self.spool.last_seq(), confirmed=time.time(), **stamps)
        if self.outbox_cleaner:                  # after the spool commit, never before
            self.outbox_cleaner.consumed([e.outbox_row for e in events if e.outbox_row is not None])

    def _spool_failed(self, e: SpoolError, failures: int) -> None:
        msg = redact(str(e))
        if self.monitor.capture_error != msg:
            log.error("capture stopped: %s", msg)
        self.monitor.capture_error = msg
        delay = min(10.0, 0.5 * 2 ** min(failures - 1, 5))
        log.warning("spool write failed (attempt %d); trying again in %.1fs", failures, delay)
        self._keep_source_alive()             # the batch waits in memory: the connection must outlive it
        self.stop.wait(delay)

    def _capture_bug(self, e: Exception) -> None:
        """An unexpected exception in capture (reading, mapping) is a bug: retrying would hit it again, and
        treating the change as unmappable would dead-letter every change. Capture stops, the traceback goes
        to the log, health reports failing; the source is not confirmed past the batch, so a restart after
        the fix reads it again."""
        log.error("capture stopped by an unexpected error (a bug, please report it): %r", e, exc_info=e)
        self.monitor.capture_error = (f"capture stopped by an unexpected error (a bug; the traceback is in the "
                                      f"log; restart the agent once fixed): {type(e).__name__}: {redact(str(e))}")
        self.monitor.capture_stopped = True
        self._unspooled = None
        self._close_source()

    def _checkpoint_or_unknown(self) -> str | None:
        try:
            return self.spool.checkpoint()
        except SpoolError:
            return "(spool unreadable)"

    def _keep_source_alive(self) -> None:
        """Paused by backpressure: the source's connection must outlive the pause (wal_sender_timeout)."""
        if self.capture is None:
            return
        try:
            self.capture.keepalive()
        except SourceError as e:
            self._source_failed(e, 1)

    def _wake_targets(self) -> None:
        for w in self.workers:
            w.wake.set()
        if self.delivery:
            self.delivery.wake()

    def _source_failed(self, e: SourceError, failures: int) -> None:
        msg = redact(str(e))
        fatal = isinstance(e, SourceFatal)
        self.monitor.source_error, self.monitor.source_fatal = msg, fatal
        self._close_source()
        self._setup_done = self._setup_done and not fatal
        delay = 10.0 if fatal else min(30.0, 0.5 * 2 ** min(failures - 1, 6))
        log.error("source %s: %s; retrying in %.1fs from checkpoint %s", "failed" if fatal else "unavailable",
                  msg, delay, self.spool.checkpoint())
        self.stop.wait(delay)

    def _close_source(self) -> None:
        if self.source is not None:
            self.monitor.source_status_fn = None
            try:
                self.source.close()
            except Exception:
                pass
            self.source = self.capture = None
        self.snapshots.detach()


def _lock_state_dir(cfg: Config) -> int:
    """One running agent per state_dir: two would capture the same slot and deliver the same spool twice.
    The lock is released by the kernel when the process ends, however it ends."""
    path = cfg.agent.state_dir / "agent.lock"
    private_state_dir(cfg.agent.state_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise CdcError(f"another cdc-agent (pid {holder}) is running with state_dir {cfg.agent.state_dir}; "
                       "stop it first, or give this agent its own state_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def run_agent(cfg: Config, stop: threading.Event) -> int:
    """Run until `stop` is set; then drain in-flight deliveries, checkpoint and return 0."""
    return Agent(cfg, stop).run()
