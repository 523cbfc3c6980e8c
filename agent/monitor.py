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
from .history import LatencyTracker, ThinnedSample, by_type

# commit-to-delivery latency buckets (seconds): sub-second when caught up, minutes to hours in an outage
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# the delivery child relays what a busy target delivered at most this often (an idle one's at once)
DIGEST_SECONDS = 0.5


class LatencyHistogram:
    """Cumulative-bucket histogram kept without prometheus_client, so the hot path pays one bisect per
    event and /metrics renders it on request."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)     # last slot: above the largest bucket (+Inf)
        self.sum = 0.0
        self.count = 0
        self.lock = threading.Lock()

    def observe_many(self, values: list[float]) -> None:
        counts, total = bucket_counts(values, self.buckets)
        self.add(counts, total, len(values))

    def add(self, counts: list[int], total: float, n: int) -> None:
        """Add bucket counts (not cumulative, the last one above the largest bucket), their sum and count."""
        with self.lock:
            mine = self.counts
            for i, c in enumerate(counts):
                mine[i] += c
            self.sum += total
            self.count += n

    def snapshot(self) -> tuple[list[tuple[str, int]], float, int]:
        """([(le, cumulative count)...] ending with +Inf, sum, count)."""
        with self.lock:
            out, acc = [], 0
            for le, n in zip(self.buckets, self.counts):
                acc += n
                out.append((_le(le), acc))
            out.append(("+Inf", acc + self.counts[-1]))
            return out, self.sum, self.count


def bucket_counts(values: list[float], buckets: tuple[float, ...] = LATENCY_BUCKETS) -> tuple[list[int], float]:
    """(count per bucket, the last above the largest, and the sum) of `values`, a negative value counting
    as 0 (clocks of source and agent hosts may disagree a little). Sorted once, then one bisection per
    bucket: no Python loop over the values (a batch's latencies are nearly in order already)."""
    s = sorted(values)
    negative = bisect.bisect_left(s, 0.0)
    total = sum(s[negative:]) if negative else sum(s)
    counts, below = [], 0
    for le in buckets:
        upto = bisect.bisect_right(s, le, below)      # a value equal to a bound belongs to its bucket
        counts.append(upto - below)
        below = upto
    counts.append(len(s) - below)
    return counts, total


class DeliveryDigest:
    """What deliveries to one target added since it was last relayed, in a size that does not grow with
    the events: latency histogram bucket counts, sum and count, and the uniform latency samples the
    tracker keeps (for the target, and per event type). The delivery child relays these to the parent
    instead of every event's latency and type."""

    __slots__ = ("counts", "sum", "count", "sample", "types")

    def __init__(self, cap: int):
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self.sample = ThinnedSample(cap)
        self.types: dict[str, ThinnedSample] = {}

    def add(self, latencies: list[float], types: list[str] | None) -> None:
        counts, total = bucket_counts(latencies)
        mine = self.counts
        for i, c in enumerate(counts):
            mine[i] += c
        self.sum += total
        self.count += len(latencies)
        self.sample.add_many(latencies)
        for t, vs in (by_type(latencies, types) if types else {}).items():
            r = self.types.get(t)
            if r is None:
                r = self.types[t] = ThinnedSample(self.sample.cap)
            r.add_many(vs)

    def as_message(self) -> tuple:
        """Plain lists and numbers, for the queue to the parent (`Monitor.merge_digest` takes it)."""
        return (self.counts, self.sum, self.count, (self.sample.samples, self.sample.seen),
                {t: (r.samples, r.seen) for t, r in self.types.items()})


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
    # in the delivery child: deliveries add up in `digests` (not in latency/tracker) until `relay` sends
    # them to the parent
    digests: dict[str, DeliveryDigest] | None = None
    relay: Callable[[str, tuple], None] | None = None
    relayed_at: dict[str, float] = field(default_factory=dict)     # target -> last relay (monotonic)
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
            if self.digests is not None:
                with self.lock:
                    d = self.digests.get(name)
                    if d is None:
                        d = self.digests[name] = DeliveryDigest(self.tracker.cap)
                    d.add(latencies, types)
                if time.monotonic() - self.relayed_at.get(name, 0.0) >= DIGEST_SECONDS:
                    self.relay_digest(name)
            else:
                self.histogram(name).observe_many(latencies)
                self.tracker.observe(name, latencies, types)
        for obs in self.observers:
            obs(name, latencies, types)

    def caught_up(self, name: str) -> None:
        """The target's worker found nothing more to deliver: what it delivered goes to the parent now,
        not after DIGEST_SECONDS (health and metrics agree with the target as soon as it is idle)."""
        if self.digests and name in self.digests:
            self.relay_digest(name)

    def relay_digest(self, name: str) -> None:
        """Send what was delivered to `name` since its last relay (`DeliveryDigest.as_message`) through
        `relay`; the parent's Monitor adds it up with `merge_digest`."""
        with self.lock:
            d = self.digests.pop(name, None) if self.digests is not None else None
            self.relayed_at[name] = time.monotonic()
        if d is not None and self.relay is not None:
            self.relay(name, d.as_message())

    def merge_digest(self, name: str, message: tuple) -> None:
        """Add a digest the delivery child relayed to this target's histogram and tracker."""
        counts, total, n, sample, types = message
        if n:
            self.histogram(name).add(counts, total, n)
            self.tracker.merge(name, sample, types)
