"""Live state shared by the pipeline's threads and read by the health endpoint and metrics.
Persistent counters (delivered, failed, dead-lettered, cursors) live in the spool; this holds what is only
true while the process runs (connected, retrying, last error, backpressure, changes captured, latency)."""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from .changes import SourceStatus
from .history import LatencyTracker

# commit-to-delivery latency buckets (seconds): sub-second when caught up, minutes to hours in an outage
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class LatencyHistogram:
    """Cumulative-bucket histogram kept without prometheus_client, so the hot path pays one bisect per
    event and /metrics renders it on request."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)     # last slot: above the largest bucket (+Inf)
        self.sum = 0.0
        self.count = 0
        self.lock = threading.Lock()

    def observe_many(self, values) -> None:
        with self.lock:
            for v in values:
                v = max(0.0, v)   # clocks of source and agent hosts may disagree a little
                self.counts[bisect.bisect_left(self.buckets, v)] += 1
                self.sum += v
                self.count += 1

    def snapshot(self) -> tuple[list[tuple[str, int]], float, int]:
        """([(le, cumulative count)...] ending with +Inf, sum, count)."""
        with self.lock:
            out, acc = [], 0
            for le, n in zip(self.buckets, self.counts):
                acc += n
                out.append((_le(le), acc))
            out.append(("+Inf", acc + self.counts[-1]))
            return out, self.sum, self.count


def _le(v: float) -> str:
    return repr(float(v))


@dataclass
class TargetLive:
    state: str = "ok"                 # ok | retrying | circuit_open | stopped
    last_error: str | None = None
    failed: int = 0                   # failed attempts since start


@dataclass
class Monitor:
    agent: str
    source_kind: str
    started_at: float = field(default_factory=time.time)
    source_error: str | None = None
    source_fatal: bool = False
    paused_since: float | None = None   # capture paused by backpressure since (epoch seconds)
    capture_error: str | None = None  # why capture is stopped: a spool write error (retried), or a bug
    capture_stopped: bool = False     # a bug stopped capture until a restart
    captured: int = 0                 # row changes read from the source since start
    source_status_fn: Callable[[], SourceStatus] | None = None   # set while a source is open
    snapshot_fn: Callable[[], dict[str, Any] | None] | None = None   # the running snapshot (agent/snapshot.py)
    snapshot_rows_fn: Callable[[], dict[str, int]] | None = None     # table -> read rows emitted (metrics)
    targets: dict[str, TargetLive] = field(default_factory=dict)
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    observers: list = field(default_factory=list)   # callables(target, latencies, types) after each delivery
    tracker: LatencyTracker = field(default_factory=LatencyTracker)   # dashboard charts and SLAs
    alerts: Any = None                # agent.alerts.AlertBook while alert rules are evaluated
    drift: dict = field(default_factory=dict)       # sql target -> last scheduled reconcile (agent/reconcile.py)

    @property
    def backpressure(self) -> bool:
        return self.paused_since is not None

    @backpressure.setter
    def backpressure(self, paused: bool) -> None:
        if paused != self.backpressure:
            self.paused_since = time.time() if paused else None

    def source_status(self) -> SourceStatus:
        fn = self.source_status_fn
        if fn is None:
            return SourceStatus(connected=False, error=self.source_error)
        try:
            st = fn()
        except Exception as e:  # health must answer even when the source is in trouble
            return SourceStatus(connected=False, error=f"status unavailable: {e}")
        if self.source_error and not st.connected:
            st.error = st.error or self.source_error
        paused = self.paused_since
        if paused is not None and st.connected:
            # while paused the source reads nothing, so it cannot see what waits; whatever was committed since
            # the pause waits at least that long: count lag from the pause (an upper bound, documented)
            st.lag_seconds = max(st.lag_seconds or 0.0, round(time.time() - paused, 3))
        return st

    def target(self, name: str) -> TargetLive:
        with self.lock:
            return self.targets.setdefault(name, TargetLive())

    def histogram(self, name: str) -> LatencyHistogram:
        with self.lock:
            h = self.latency.get(name)
            if h is None:
                h = self.latency[name] = LatencyHistogram()
            return h

    def delivered(self, name: str, events) -> None:
        now = time.time()
        self.delivered_latencies(name, [now - e.commit_ts for e in events], [e.type for e in events])

    def delivered_latencies(self, name: str, latencies: list[float], types: list[str] | None = None) -> None:
        """A batch was delivered; `latencies` are its events' commit-to-delivery times in seconds, `types`
        their event types (same order)."""
        t = self.target(name)
        t.state, t.last_error = "ok", None
        if latencies:
            self.histogram(name).observe_many(latencies)
            self.tracker.observe(name, latencies, types)
        for obs in self.observers:
            obs(name, latencies, types)
