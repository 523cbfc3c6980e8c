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
import gc
import logging
import os
import sqlite3
import threading
import time

from adapters import build_target

from .capture import CaptureCore
from .config import Config, TargetSettings
from .errors import CdcError, SourceError, SourceFatal, TargetError, TargetRejected
from .formats import render
from .interfaces import SpooledEvent
from .mapping import EventMapper
from .monitor import Monitor
from .retry import RetryPolicy
from .secrets import redact
from .sources import capture_admin, open_source
from .spool import Spool

log = logging.getLogger("cdc_agent")

DRAIN_SECONDS = 10.0          # on shutdown, how long targets may keep delivering what is spooled
READ_WAIT_SECONDS = 0.2       # how long one source read waits for a first change
PRUNE_EVERY_SECONDS = 30.0
PRUNE_STEP = 5000             # events deleted per spool transaction
SCAN_LIMIT = 5000             # spool rows a target with event patterns looks at per batch


class TargetWorker(threading.Thread):
    """Delivers the spool to one target, in spool order, moving its cursor only after the target confirms."""

    def __init__(self, cfg: Config, settings: TargetSettings, monitor: Monitor, stop: threading.Event):
        super().__init__(name=f"target-{settings.name}", daemon=True)
        self.cfg, self.settings, self.monitor, self.stop = cfg, settings, monitor, stop
        self.wake = threading.Event()
        self.live = monitor.target(settings.name)
        opts = settings.options
        self.policy = RetryPolicy(
            initial=getattr(opts, "retry_initial_seconds", 0.5),
            maximum=getattr(opts, "retry_max_seconds", 30.0),
            circuit_failures=getattr(opts, "circuit_failures", 5),
            circuit_open_seconds=getattr(opts, "circuit_open_seconds", 30.0),
        )
        self._wants: dict[str, bool] = {}
        self.takes_all = "*" in settings.events
        self.caught_up = threading.Event()

    def wants(self, event_type: str) -> bool:
        w = self._wants.get(event_type)
        if w is None:
            w = self._wants[event_type] = self.settings.wants(event_type)
        return w

    def run(self) -> None:
        spool = Spool(self.cfg.agent.state_dir)
        target = None
        drain_deadline: float | None = None
        try:
            target = build_target(self.settings)
            while True:
                if self.stop.is_set():
                    drain_deadline = drain_deadline or time.monotonic() + DRAIN_SECONDS
                    if time.monotonic() > drain_deadline:
                        break
                cursor = spool.counters(self.settings.name).cursor
                batch, upto = self._next_batch(spool, cursor)
                if not batch and upto == cursor:
                    self.caught_up.set()
                    if self.stop.is_set():
                        break
                    self.wake.wait(0.5)
                    self.wake.clear()
                    continue
                self.caught_up.clear()
                if not batch:
                    spool.advance(self.settings.name, upto, 0, [])
                    continue
                if not self._deliver(spool, target, batch, upto, drain_deadline) and drain_deadline is not None:
                    break     # the target still fails while draining: the rest stays spooled for next time
        except (CdcError, sqlite3.Error) as e:
            # a spool error (disk full, a corrupt file) ends this worker visibly: health reports the target
            # stopped with the reason; its cursor has not moved past anything undelivered
            log.error("target %s stopped: %s", self.settings.name, redact(str(e)))
            self.live.state, self.live.last_error = "stopped", redact(str(e))
        finally:
            try:
                if target is not None:
                    target.close()
            finally:
                spool.close()

    def _next_batch(self, spool: Spool, cursor: int) -> tuple[list[SpooledEvent], int]:
        """Up to batch_size events this target wants after `cursor`, and the last seq looked at (skipped
        events count as passed). A target that takes every event type reads exactly one batch of rows; one
        with event patterns reads on in chunks until its batch is full, looking at most SCAN_LIMIT rows."""
        size = self.settings.batch_size
        takes_all = self.takes_all
        chunk = size if takes_all else max(size, 500)
        batch: list[SpooledEvent] = []
        upto = cursor
        while True:
            rows = spool.fetch(upto, chunk)
            if takes_all:
                return rows, (rows[-1].seq if rows else cursor)
            for ev in rows:
                if self.wants(ev.type):
                    if len(batch) == size:
                        return batch, upto
                    batch.append(ev)
                upto = ev.seq
            if len(rows) < chunk or len(batch) == size or upto - cursor >= SCAN_LIMIT:
                return batch, upto

    def _deliver(self, spool: Spool, target, batch: list[SpooledEvent], upto: int,
                 drain_deadline: float | None) -> bool:
        """Send one batch. A permanent rejection of a batch is narrowed down by splitting it, so only the
        rejected events go to dead letters. Returns False when interrupted by shutdown."""
        name = self.settings.name
        fmt = self.settings.format
        pending = [batch]
        while pending:
            part = pending[0]
            last_seq = upto if len(pending) == 1 else part[-1].seq
            to_send = part if fmt == "cloudevents" else [
                SpooledEvent(e.seq, e.id, e.type, e.subject, render(e.body, fmt), e.commit_ts) for e in part]
            try:
                result = target.send(to_send)
            except TargetRejected as e:
                if len(part) > 1:
                    mid = len(part) // 2
                    pending[0:1] = [part[:mid], part[mid:]]
                    continue
                reason = redact(str(e))
                log.warning("target %s rejected event %s (%s) for good: %s; it is in dead letters",
                            name, part[0].id, part[0].type, reason)
                spool.advance(name, last_seq, 0, [(part[0], reason)])
                self._recovered()
                self.live.state = "ok"       # it answered: reachable, only this event is refused
                pending.pop(0)
                continue
            except (TargetError, OSError) as e:
                if not self._wait_retry(spool, e, drain_deadline):
                    return False
                continue
            except Exception as e:  # a bug in an adapter must not kill delivery: retry it like an outage
                log.error("target %s failed unexpectedly: %r", name, e)
                if not self._wait_retry(spool, e, drain_deadline):
                    return False
                continue
            rejected = {r.seq: r.reason for r in result.rejected}
            dead = [(e, redact(rejected[e.seq])) for e in part if e.seq in rejected]
            for ev, reason in dead:
                log.warning("target %s rejected event %s (%s) for good: %s; it is in dead letters",
                            name, ev.id, ev.type, reason)
            spool.advance(name, last_seq, len(part) - len(dead), dead)
            self._recovered()
            self.monitor.delivered(name, [e for e in part if e.seq not in rejected])
            pending.pop(0)
        return True

    def _recovered(self) -> None:
        if self.policy.attempt:
            log.info("target %s: delivering again after %d failed attempt(s)", self.settings.name,
                     self.policy.attempt)
        self.policy.success()

    def _wait_retry(self, spool: Spool, err: Exception, drain_deadline: float | None) -> bool:
        name = self.settings.name
        msg = redact(str(err)) or type(err).__name__
        was_open = self.policy.circuit_open
        delay = self.policy.next_delay(getattr(err, "retry_after", None))
        self.live.failed += 1
        self.live.last_error = msg
        self.live.state = "circuit_open" if self.policy.circuit_open else "retrying"
        spool.record_failure(name, msg)
        if self.policy.circuit_open and not was_open:
            log.warning("target %s: circuit open after %d consecutive failures; probing every %.0fs or more",
                        name, self.policy.attempt, self.policy.circuit_open_seconds)
        log.warning("target %s: %s; retry %d in %.1fs", name, msg, self.policy.attempt, delay)
        if drain_deadline is not None:
            return False          # shutting down: what is not delivered stays in the spool for next time
        return not self.stop.wait(delay)


class Agent:
    """One capture loop (this thread), and the targets' delivery (a child process, or one thread per target).

    Spool writes stay on the capture thread on purpose: on a second thread, every row sqlite3 binds needs
    the interpreter lock back from the decoding thread, and the drain measured 20% slower."""

    def __init__(self, cfg: Config, stop: threading.Event):
        self.cfg, self.stop = cfg, stop
        self.monitor = Monitor(cfg.agent.name, cfg.source.kind)
        self._lock_fd = _lock_state_dir(cfg)
        self.spool = Spool(cfg.agent.state_dir)
        self.spool.ensure_targets([t.name for t in cfg.targets])
        self.mapper = EventMapper(cfg)
        self.delivery = None
        if cfg.agent.delivery == "process":
            from .delivery import DeliveryProcess
            from .secrets import registered
            self.delivery = DeliveryProcess(cfg, self.monitor, registered())
            self.workers = []
        else:
            self.workers = [TargetWorker(cfg, t, self.monitor, stop) for t in cfg.targets]
        self.source = None
        self.capture: CaptureCore | None = None
        self._setup_done = False

    def run(self) -> int:
        from .health import HealthServer    # local import: the health module pulls in prometheus_client

        health = HealthServer(self.cfg, self.monitor) if self.cfg.health.listen else None
        if health:
            health.start()
        for w in self.workers:
            w.start()
        if self.delivery:
            self.delivery.start()
        log.info("agent %s started: source %s, targets %s", self.cfg.agent.name, self.cfg.source.kind,
                 ", ".join(t.name for t in self.cfg.targets))
        last_prune = last_ckpt_log = time.monotonic()
        failures = 0
        try:
            while not self.stop.is_set():
                if self.delivery:
                    self.delivery.ensure_alive()      # also while paused: only delivery can end a pause
                if self._backpressure():
                    self._keep_source_alive()
                    self.stop.wait(0.5)
                    continue
                try:
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
                if now - last_ckpt_log > self.cfg.agent.checkpoint_log_seconds:
                    log.info("checkpoint %s, %d changes captured since start", self.spool.checkpoint(),
                             self.monitor.captured)
                    last_ckpt_log = now
        finally:
            self._close_source()
            for w in self.workers:
                w.wake.set()
            for w in self.workers:
                w.join(DRAIN_SECONDS + 5)
            if self.delivery:
                self.delivery.stop(DRAIN_SECONDS + 5)
            if health:
                health.stop()
            log.info("agent %s stopped at checkpoint %s", self.cfg.agent.name, self.spool.checkpoint())
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
        if not self._setup_done:
            # `run` creates missing capture objects like `setup` when it has the privileges
            try:
                for line in capture_admin(self.cfg).setup():
                    log.info("setup: %s", line)
                self._setup_done = True
            except CdcError as e:
                log.warning("could not create capture objects (%s); using what exists", redact(str(e)))
        source = open_source(self.cfg)
        checkpoint = self.spool.checkpoint()
        try:
            source.start(checkpoint)
        except BaseException:
            try:
                source.close()
            except Exception:
                pass
            raise
        self.source = source
        self.capture = CaptureCore(source)
        self.monitor.source_status_fn = source.status
        self.monitor.source_error, self.monitor.source_fatal = None, False
        log.info("source %s connected, resuming after %s", self.cfg.source.kind, checkpoint or "the start of capture")

    def _capture_once(self) -> None:
        batch = self.capture.read(self.cfg.source.batch_size, READ_WAIT_SECONDS)
        if not batch.changes and batch.checkpoint is None:
            return
        events, failures = self.mapper.map(batch.changes)
        for f in failures:
            log.warning("change at %s cannot become %s: %s; it is in dead letters", f.position, f.event_type, f.reason)
        added = self.spool.append(events, failures, batch.checkpoint)
        self.monitor.captured += len(batch.changes)
        if added:
            self._wake_targets()
        if batch.checkpoint is not None:
            self.source.confirm(batch.checkpoint)      # only now: the spool holds everything up to it

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


def tune_gc() -> None:
    """The hot path allocates a few containers per change and frees them a batch later; with the default
    thresholds the cyclic collector runs every 700 allocations and re-scans what lives long (modules,
    config). Freezing what exists after start and collecting less often made the MySQL drain 15% faster."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _lock_state_dir(cfg: Config) -> int:
    """One running agent per state_dir: two would capture the same slot and deliver the same spool twice.
    The lock is released by the kernel when the process ends, however it ends."""
    path = cfg.agent.state_dir / "agent.lock"
    cfg.agent.state_dir.mkdir(parents=True, exist_ok=True)
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
