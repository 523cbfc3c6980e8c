"""Delivery of the spool to one target: `TargetWorker`, one thread per target, in the agent process
(`agent.delivery = "thread"`) or in the delivery child (agent/delivery.py).

  spool.fetch → render (once per event) → target.send → target confirms → spool.advance(cursor)

A target with `send_lines` (the file target) that takes every event as spooled gets the same steps with the
events as JSON lines joined straight from the spool's frames, no object per event (`_send_lines`).

How failures are told apart:
- TargetUnavailable (and OSError): the target is down; retry the same batch with backoff and the circuit
  breaker (agent/retry.py, settings common to every target).
- TargetRejected: the batch is split until the refused event is alone; it goes to dead letters.
- anything else is a bug (in an adapter, or here): retrying it would only hide it as an endless outage. It
  is logged with its traceback and the worker stops, health showing the target "stopped" with the reason.
  So does a spool error. Nothing undelivered is skipped: the cursor has not moved past it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from adapters import build_target

from . import timing
from .config import Config, TargetSettings
from .dlq import resend_dead_letters
from .errors import CdcError, SpoolError, TargetError, TargetRejected, TargetUnavailable
from .formats import render
from .interfaces import SpooledEvent, Target
from .monitor import Monitor
from .retry import RetryPolicy
from .secrets import redact
from .spool import Spool
from .spool_frames import FrameHead, lines_of

log = logging.getLogger(__name__)

DRAIN_SECONDS = 10.0          # on shutdown, how long targets may keep delivering what is spooled
SCAN_LIMIT = 5000             # spool rows a target with event patterns looks at per batch


class TargetWorker(threading.Thread):
    """Delivers the spool to one target, in spool order, moving its cursor only after the target confirms."""

    def __init__(self, cfg: Config, settings: TargetSettings, monitor: Monitor, stop: threading.Event):
        super().__init__(name=f"target-{settings.name}", daemon=True)
        self.cfg, self.settings, self.monitor, self.stop = cfg, settings, monitor, stop
        self.wake = threading.Event()
        self.live = monitor.target(settings.name)
        self.policy = RetryPolicy(
            initial=settings.retry_initial_seconds,
            maximum=settings.retry_max_seconds,
            circuit_failures=settings.circuit_failures,
            circuit_open_seconds=settings.circuit_open_seconds,
        )
        self._wants: dict[str, bool] = {}
        self.takes_all = "*" in settings.events
        self.caught_up = threading.Event()
        # the position the target reported as durably applied when it opened: events at or before it are
        # passed without sending; None once delivery is past it (or the target keeps no position)
        self.applied: str | None = None

    def wants(self, event_type: str) -> bool:
        w = self._wants.get(event_type)
        if w is None:
            w = self._wants[event_type] = self.settings.wants(event_type)
        return w

    def run(self) -> None:
        name = self.settings.name
        spool: Spool | None = None
        target: Target | None = None
        try:
            target = build_target(self.settings)
            spool_failures = 0
            while True:
                try:
                    spool = spool or Spool(self.cfg.agent.state_dir, background_checkpoints=True)
                    self._deliver_all(spool, target)
                    break
                except SpoolError as e:
                    # the state_dir's disk is full (or briefly unreadable): nothing was confirmed past what the
                    # spool holds, so wait and go on by itself when it accepts writes again
                    spool_failures += 1
                    reason = redact(str(e))
                    log.error("target %s: %s; delivery resumes when the spool accepts writes again", name, reason)
                    self.live.state, self.live.last_error = "retrying", reason
                    if spool is not None:
                        spool.close()
                        spool = None
                    if self.stop.wait(min(10.0, 0.5 * 2 ** min(spool_failures - 1, 5))):
                        break
        except CdcError as e:
            # a spool error (disk full, a corrupt file) ends this worker visibly; its cursor has not moved
            # past anything undelivered
            log.error("target %s stopped: %s", name, redact(str(e)))
            self._stopped(redact(str(e)))
        except Exception as e:
            # a bug: say so with the traceback, and stop rather than retry it as if the target were down
            log.exception("target %s stopped by an unexpected error (a bug) in %s", name,
                          f"the {self.settings.kind} target" if target is not None else "building the target")
            self._stopped(f"unexpected error (a bug; see the log): {redact(repr(e))}")
        finally:
            try:
                if target is not None:
                    target.close()
            except Exception:
                log.exception("target %s: closing failed", name)
            finally:
                if spool is not None:
                    spool.close()

    def _stopped(self, reason: str) -> None:
        self.live.state, self.live.last_error = "stopped", reason

    def _deliver_all(self, spool: Spool, target: Target) -> None:
        drain_deadline: float | None = None
        opened = False
        while True:
            if self.stop.is_set():
                drain_deadline = drain_deadline or time.monotonic() + DRAIN_SECONDS
                if time.monotonic() > drain_deadline:
                    return
            if not opened:
                opened = self._open(spool, target, drain_deadline)
                if not opened:
                    if drain_deadline is not None or self.stop.is_set():
                        return
                    continue
            resend_dead_letters(spool, self.settings, target, self.cfg)   # what `dlq retry` handed over
            if timing.ENABLED:
                timing.note("fetch")
            cursor = spool.counters(self.settings.name).cursor
            send_lines = getattr(target, "send_lines", None) if self._as_spooled() else None
            if send_lines is not None:
                runs, upto = self._next_runs(spool, cursor)
                batch: list[SpooledEvent] = []
            else:
                batch, upto = self._next_batch(spool, cursor)
                if self.applied is not None:
                    batch = self._skip_applied(batch)
            if upto == cursor and not batch:
                self.caught_up.set()
                self.monitor.caught_up(self.settings.name)
                if self.stop.is_set():
                    return
                self.wake.wait(0.5)
                self.wake.clear()
                if timing.ENABLED:
                    timing.note("woke")
                continue
            self.caught_up.clear()
            if send_lines is not None:
                delivered = self._send_lines(spool, target, send_lines, runs, upto, drain_deadline)
            elif not batch:
                spool.advance(self.settings.name, upto, 0, [])
                continue
            else:
                delivered = self._deliver(spool, target, batch, upto, drain_deadline)
            if not delivered and drain_deadline is not None:
                return     # the target still fails while draining: the rest stays spooled for next time

    def _open(self, spool: Spool, target: Target, drain_deadline: float | None) -> bool:
        try:
            applied = target.open()
        except (TargetError, OSError) as e:
            self._wait_retry(spool, e, drain_deadline)
            return False
        if applied is not None:
            log.info("target %s has applied everything up to position %s itself; later events follow",
                     self.settings.name, applied)
        self.applied = applied
        self._recovered()
        return True

    def _skip_applied(self, batch: list[SpooledEvent]) -> list[SpooledEvent]:
        """Drop the events the target reported as applied (it keeps its own position, whatever the cursor
        says); their seq stays in `upto`, so the cursor moves past them with the rest."""
        applied = self.applied
        assert applied is not None
        rest = [e for e in batch if e.position > applied]
        if rest:
            self.applied = None    # spool order is source order: nothing after this was applied
        return rest

    def _next_batch(self, spool: Spool, cursor: int) -> tuple[list[SpooledEvent], int]:
        """Up to batch_size events this target wants after `cursor`, and the last seq looked at (skipped
        events count as passed). A target that takes every event type reads exactly one batch of rows; one
        with event patterns reads on in chunks until its batch is full, looking at most SCAN_LIMIT rows."""
        size = self.settings.batch_size
        takes_all = self.takes_all
        name = self.settings.name
        chunk = size if takes_all else max(size, 500)
        batch: list[SpooledEvent] = []
        upto = cursor
        while True:
            rows = spool.fetch(upto, chunk)
            if takes_all:
                mine = [e for e in rows if e.only_target is None or e.only_target == name]
                return mine, (rows[-1].seq if rows else cursor)
            for ev in rows:
                if self.wants(ev.type) and (ev.only_target is None or ev.only_target == name):
                    if len(batch) == size:
                        return batch, upto
                    batch.append(ev)
                upto = ev.seq
            if len(rows) < chunk or len(batch) == size or upto - cursor >= SCAN_LIMIT:
                return batch, upto

    def _as_spooled(self) -> bool:
        """Whether the next batch goes out exactly as spooled: CloudEvent bodies, every event type, no
        position of the target's own to skip to. Then a target that can take JSON lines (the file target's
        `send_lines`) gets them joined straight from the spool's frames, without an event object each."""
        return self.takes_all and self.applied is None and self.settings.format == "cloudevents"

    def _next_runs(self, spool: Spool, cursor: int) -> tuple[list[tuple[FrameHead, int, int]], int]:
        """`_next_batch` for a target that takes every event type, as runs of frames (Spool.fetch_runs):
        the runs meant for this target, and the last seq looked at."""
        runs = spool.fetch_runs(cursor, self.settings.batch_size, lines=True)
        if not runs:
            return [], cursor
        last, _, hi = runs[-1]
        name = self.settings.name
        return [r for r in runs if r[0].only_target is None or r[0].only_target == name], last.seq + hi - 1

    def _send_lines(self, spool: Spool, target: Target, send_lines, runs: list[tuple[FrameHead, int, int]],
                    upto: int, drain_deadline: float | None) -> bool:
        """Deliver runs of frames as JSON lines: the same steps as `_deliver` (the target confirms, then the
        cursor moves), for a target that never refuses single events. Should it refuse some all the same
        (TargetRejected), the batch goes the usual way, where refused events end in dead letters."""
        name = self.settings.name
        count = sum(hi - lo for _, lo, hi in runs)
        if count:
            data = lines_of(runs)
            while True:
                try:
                    send_lines(data)
                    break
                except TargetRejected:
                    batch = [e for frame, lo, hi in runs for e in frame.events(lo, hi)]
                    return self._deliver(spool, target, batch, upto, drain_deadline)
                except (TargetError, OSError) as e:
                    if not self._wait_retry(spool, e, drain_deadline):
                        return False
        sent = time.time() if timing.ENABLED else 0.0
        spool.advance(name, upto, count, [])
        if timing.ENABLED and count:
            frame, lo, hi = runs[-1]
            timing.record("deliver", seq=upto, n=count, commit1=frame.ts[hi - 1], sent=sent, advanced=time.time())
        self._recovered()
        if count:
            now = time.time()
            latencies: list[float] = []
            types: list[str] = []
            for frame, lo, hi in runs:
                latencies += frame.latencies(now, lo, hi)
                types += frame.types_of(lo, hi)
            self.monitor.delivered_latencies(name, latencies, types)
        return True

    def _deliver(self, spool: Spool, target: Target, batch: list[SpooledEvent], upto: int,
                 drain_deadline: float | None) -> bool:
        """Send one batch. A permanent rejection of a batch is narrowed down by splitting it, so only the
        rejected events go to dead letters. Returns False when interrupted by shutdown."""
        name = self.settings.name
        fmt = self.settings.format
        # rendered once per event, however often the batch is retried or split; dead letters keep the
        # CloudEvent (`dlq retry` renders it again)
        while True:
            try:
                rendered = batch if fmt == "cloudevents" else [
                    SpooledEvent(e.seq, e.id, e.type, e.subject, render(e.body, fmt, self.cfg), e.commit_ts,
                                 e.position) for e in batch]
                break
            except TargetUnavailable as e:  # "debezium" waits for the source's column types as for an outage
                if not self._wait_retry(spool, e, drain_deadline):
                    return False
        pending = [(0, len(batch))]          # index ranges of `batch` still to send, in order
        while pending:
            start, end = pending[0]
            part = batch[start:end]
            last_seq = upto if len(pending) == 1 else part[-1].seq
            try:
                result = target.send(rendered[start:end])
            except TargetRejected as e:
                if len(part) > 1:
                    mid = start + len(part) // 2
                    pending[0:1] = [(start, mid), (mid, end)]
                    continue
                reason = redact(str(e))
                log.warning("target %s rejected event %s (%s at %s) for good: %s; it is in dead letters",
                            name, part[0].id, part[0].type, part[0].position, reason)
                spool.advance(name, last_seq, 0, [(part[0], reason)])
                self._recovered()
                self.live.state = "ok"       # it answered: reachable, only this event is refused
                pending.pop(0)
                continue
            except (TargetError, OSError) as e:
                if not self._wait_retry(spool, e, drain_deadline):
                    return False
                continue
            rejected = {r.seq: r.reason for r in result.rejected}
            dead = [(e, redact(rejected[e.seq])) for e in part if e.seq in rejected]
            for ev, reason in dead:
                log.warning("target %s rejected event %s (%s at %s) for good: %s; it is in dead letters",
                            name, ev.id, ev.type, ev.position, reason)
            sent = time.time() if timing.ENABLED else 0.0
            spool.advance(name, last_seq, len(part) - len(dead), dead)
            if timing.ENABLED:
                timing.record("deliver", seq=last_seq, n=len(part), commit1=part[-1].commit_ts, sent=sent,
                              advanced=time.time())
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


def tune_gc() -> None:
    """The hot path allocates a few containers per change and frees them a batch later; with the default
    thresholds the cyclic collector runs every 700 allocations and re-scans what lives long (modules,
    config). Freezing what exists after start and collecting less often made the MySQL drain 15% faster."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
