"""What the dashboard's charts and the per-event-type SLAs need, in memory of a fixed size.

- `Reservoir`: a uniform sample (at most `cap` values) of the commit-to-delivery latencies seen in one
  interval, from which p50/p95/p99 are read; memory does not grow with the event rate.
- `LatencyTracker`: one reservoir per target for the current chart step, and per event type a ring of
  reservoirs covering the SLA window (the last `SLA_WINDOW_SECONDS`).
- `History`: one point per `step` seconds per series over the last `span` seconds (a ring: 360 points for
  an hour at 5 s: 720 points), so the page shows an hour whatever the uptime.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

SLA_WINDOW_SECONDS = 300.0
SLA_BUCKET_SECONDS = 30.0
PERCENTILES = (50, 95, 99)


class Reservoir:
    """A uniform sample of at most `cap` of the values added. Once full it skips ahead to the next value to
    keep (Li's Algorithm L) rather than drawing a random number per value, so a full reservoir costs a few
    random draws per batch, not one per event."""

    __slots__ = ("cap", "samples", "seen", "_rng", "_w", "_next")

    def __init__(self, cap: int = 1024):
        self.cap = cap
        self.samples: list[float] = []
        self.seen = 0
        self._rng = random.Random()
        self._w = 0.0          # Algorithm L's state: the largest random key among the kept values
        self._next = 0         # the number (1-based, counted in `seen`) of the next value to keep; 0: draw it

    def add_many(self, values: list[float]) -> None:
        room = self.cap - len(self.samples)
        if room > 0:
            self.samples.extend(values[:room])
            self.seen += min(room, len(values))
            values = values[room:]
            if not values:
                return
        start = self.seen
        end = start + len(values)
        if not self._next:
            # the largest key of the `cap` smallest among `seen` uniform keys is Beta(cap, seen - cap + 1)
            self._w = self._rng.betavariate(self.cap, start - self.cap + 1)
            self._next = start + self._skip()
        rnd, cap, samples = self._rng.random, self.cap, self.samples
        while self._next <= end:
            samples[int(rnd() * cap)] = values[self._next - start - 1]
            self._w *= math.exp(math.log(_unit(rnd)) / cap)
            self._next += self._skip()
        self.seen = end

    def _skip(self) -> int:
        """How far the next value to keep is from the last one (1 = the very next value)."""
        w = min(max(self._w, 1e-12), 1.0 - 2 ** -53)
        return math.floor(math.log(_unit(self._rng.random)) / math.log1p(-w)) + 1

    def merge(self, samples: list[float], seen: int) -> None:
        """Add another sample (`samples`: a uniform sample of the `seen` values it stands for, at least
        min(cap, seen) of them, like a `Reservoir`'s or a `ThinnedSample`'s): afterwards this holds a uniform
        sample of at most `cap` of the values of both, each side drawn in proportion to what it saw."""
        if seen <= 0:
            return
        total = self.seen + seen
        if total <= self.cap and len(samples) == seen:
            self.samples.extend(samples)
        else:
            rng = self._rng
            theirs = min(len(samples), int(self.cap * seen / total + rng.random()))   # rounded at random
            mine = min(len(self.samples), self.cap - theirs)
            self.samples = _subset(rng, self.samples, mine) + _subset(rng, samples, theirs)
        self.seen = total
        self._next = 0

    def percentiles(self, qs: tuple[int, ...] = PERCENTILES) -> list[float | None]:
        return percentiles(self.samples, qs)


class ThinnedSample:
    """A uniform sample of a stream at no Python cost per value: every `step`-th value of each batch from a
    random start (each value kept with probability 1/step); when it grows past twice `cap`, every other
    value is dropped and `step` doubles. Between `cap` and 2 × `cap` values once `seen` passes `cap`, all of
    them while below. What the delivery child keeps between two relays; `Reservoir.merge` takes it."""

    __slots__ = ("cap", "samples", "seen", "step", "_rng")

    def __init__(self, cap: int = 1024):
        self.cap = cap
        self.samples: list[float] = []
        self.seen = 0
        self.step = 1
        self._rng = random.Random()

    def add_many(self, values: list[float]) -> None:
        self.seen += len(values)
        step = self.step
        self.samples += values if step == 1 else values[self._rng.randrange(step)::step]
        while len(self.samples) > 2 * self.cap:
            self.samples = self.samples[self._rng.randrange(2)::2]
            self.step *= 2


def _subset(rng: random.Random, values: list[float], k: int) -> list[float]:
    """A uniform sample of k of `values` (k <= len), in no particular order (a sample's order carries
    nothing: percentiles sort it, and a full reservoir replaces a uniformly drawn slot). Keeping most of a
    list, as merging the delivery child's digests into a full reservoir does, draws the few to drop instead
    of the many to keep: random.sample's draw per kept value was most of the capture process's relay thread."""
    drop = len(values) - k
    if drop <= 0:
        return list(values)
    if drop < k:
        gone = set(rng.sample(range(len(values)), drop))
        return [v for i, v in enumerate(values) if i not in gone]
    return rng.sample(values, k)


def _unit(rnd: Callable[[], float]) -> float:
    """A uniform random number in (0, 1): random() may return 0.0, whose log is undefined."""
    return rnd() or 5e-324


def by_type(latencies: list[float], types: list[str]) -> dict[str, list[float]]:
    """The latencies grouped by event type (same order); a batch of one type, the usual case, is
    recognised without a loop over its events."""
    if not types:
        return {}
    first = types[0]
    if types.count(first) == len(types):
        return {first: latencies}
    out: dict[str, list[float]] = {}
    for t, v in zip(types, latencies):
        out.setdefault(t, []).append(v)
    return out


def percentiles(samples: list[float], qs: tuple[int, ...] = PERCENTILES) -> list[float | None]:
    if not samples:
        return [None] * len(qs)
    s = sorted(samples)
    n = len(s)
    return [s[min(n - 1, max(0, int(q / 100 * n + 0.5) - 1))] for q in qs]   # nearest rank


class LatencyTracker:
    """Fed by every delivered batch (`observe`); read by the history sampler and the SLA check."""

    def __init__(self, cap: int = 1024):
        self.cap = cap
        self.lock = threading.Lock()
        self.step: dict[str, Reservoir] = {}                    # target -> this chart step's sample
        self.types: dict[str, deque[tuple[float, Reservoir]]] = {}   # event type -> (bucket start, sample)

    def observe(self, target: str, latencies: list[float], types: list[str] | None = None) -> None:
        if not latencies:
            return
        groups = by_type(latencies, types) if types else {}
        with self.lock:
            self._step(target).add_many(latencies)
            for t, vs in groups.items():
                self._type_bucket(t).add_many(vs)

    def merge(self, target: str, sample: tuple[list[float], int], types: dict[str, tuple[list[float], int]]) -> None:
        """Add what another process's tracker sampled (`Reservoir.merge`): the delivery child's, relayed."""
        with self.lock:
            if sample[1]:
                self._step(target).merge(*sample)
            for t, (values, seen) in types.items():
                self._type_bucket(t).merge(values, seen)

    def _step(self, target: str) -> Reservoir:
        r = self.step.get(target)
        if r is None:
            r = self.step[target] = Reservoir(self.cap)
        return r

    def _type_bucket(self, event_type: str) -> Reservoir:
        now = time.time()
        bucket = now - now % SLA_BUCKET_SECONDS
        ring = self.types.get(event_type)
        if ring is None:
            ring = self.types[event_type] = deque(maxlen=int(SLA_WINDOW_SECONDS / SLA_BUCKET_SECONDS) + 1)
        if not ring or ring[-1][0] != bucket:
            ring.append((bucket, Reservoir(self.cap)))
        return ring[-1][1]

    def take_step(self) -> dict[str, list[float | None]]:
        """Percentiles per target since the last call, and start a new step."""
        with self.lock:
            step, self.step = self.step, {}
        return {name: r.percentiles() for name, r in step.items()}

    def type_p95(self, now: float | None = None) -> dict[str, tuple[float | None, int]]:
        """Per event type: (p95 latency in seconds over the SLA window, events in the window)."""
        now = time.time() if now is None else now
        out: dict[str, tuple[float | None, int]] = {}
        with self.lock:
            for t, ring in self.types.items():
                live = [r for start, r in ring if start > now - SLA_WINDOW_SECONDS - SLA_BUCKET_SECONDS]
                samples = [v for r in live for v in r.samples]
                out[t] = (percentiles(samples, (95,))[0], sum(r.seen for r in live))
        return out


class History:
    """Ring buffers of chart points. `record(now, report, step_latency)` adds one point per series."""

    def __init__(self, step: float = 5.0, span: float = 3600.0):
        self.step, self.span = step, span
        self.points = int(span / step)
        self.lock = threading.Lock()
        self.times: deque[float] = deque(maxlen=self.points)
        self.series: dict[str, deque[float | None]] = {}
        self._last_counts: dict[str, tuple[float, int, int]] = {}
        self._seen: set[str] = set()

    def _put(self, key: str, value: float | None) -> None:
        self._seen.add(key)
        ring = self.series.get(key)
        if ring is None:
            # a series that appears later is padded so that every ring lines up with `times`
            ring = self.series[key] = deque([None] * (len(self.times) - 1), maxlen=self.points)
        ring.append(value)

    def record(self, now: float, report: dict[str, Any], step_latency: dict[str, list[float | None]]) -> None:
        with self.lock:
            self.times.append(now)
            self._seen = set()
            src = report.get("source", {})
            self._put("source.lag_seconds", src.get("lag_seconds"))
            self._put("source.retained_wal_bytes", src.get("retained_wal_bytes"))
            for name, t in report.get("targets", {}).items():
                delivered, failed = int(t.get("delivered") or 0), int(t.get("failed") or 0)
                prev = self._last_counts.get(name)
                self._last_counts[name] = (now, delivered, failed)
                rate = err = None
                if prev is not None and now > prev[0]:
                    dt = now - prev[0]
                    rate = max(0, delivered - prev[1]) / dt
                    err = max(0, failed - prev[2]) / dt
                self._put(f"targets.{name}.events_per_second", rate)
                self._put(f"targets.{name}.errors_per_second", err)
                self._put(f"targets.{name}.pending", t.get("pending"))
                p50, p95, p99 = step_latency.get(name, [None, None, None])
                self._put(f"targets.{name}.p50_ms", None if p50 is None else p50 * 1000)
                self._put(f"targets.{name}.p95_ms", None if p95 is None else p95 * 1000)
                self._put(f"targets.{name}.p99_ms", None if p99 is None else p99 * 1000)
            for key, ring in self.series.items():      # series nobody reported this time: a gap, not a shift
                if key not in self._seen:
                    ring.append(None)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"step_seconds": self.step, "times": list(self.times),
                    "series": {k: list(v) for k, v in self.series.items()}}
