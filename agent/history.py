"""What the dashboard's charts and the per-event-type SLAs need, in memory of a fixed size.

- `Reservoir`: a uniform sample (at most `cap` values) of the commit-to-delivery latencies seen in one
  interval, from which p50/p95/p99 are read; memory does not grow with the event rate.
- `LatencyTracker`: one reservoir per target for the current chart step, and per event type a ring of
  reservoirs covering the SLA window (the last `SLA_WINDOW_SECONDS`).
- `History`: one point per `step` seconds per series over the last `span` seconds (a ring: 360 points for
  an hour at 5 s: 720 points), so the page shows an hour whatever the uptime.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Any

SLA_WINDOW_SECONDS = 300.0
SLA_BUCKET_SECONDS = 30.0
PERCENTILES = (50, 95, 99)


class Reservoir:
    __slots__ = ("cap", "samples", "seen", "_rng")

    def __init__(self, cap: int = 1024):
        self.cap = cap
        self.samples: list[float] = []
        self.seen = 0
        self._rng = random.Random()

    def add_many(self, values: list[float]) -> None:
        room = self.cap - len(self.samples)
        if room > 0:
            self.samples.extend(values[:room])
            self.seen += min(room, len(values))
            values = values[room:]
        rnd = self._rng.random
        for v in values:                     # Algorithm R: each value kept with probability cap/seen
            self.seen += 1
            j = int(rnd() * self.seen)
            if j < self.cap:
                self.samples[j] = v

    def percentiles(self, qs: tuple[int, ...] = PERCENTILES) -> list[float | None]:
        return percentiles(self.samples, qs)


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
        with self.lock:
            r = self.step.get(target)
            if r is None:
                r = self.step[target] = Reservoir(self.cap)
            r.add_many(latencies)
            if types:
                now = time.time()
                bucket = now - now % SLA_BUCKET_SECONDS
                by_type: dict[str, list[float]] = {}
                for t, v in zip(types, latencies):
                    by_type.setdefault(t, []).append(v)
                for t, vs in by_type.items():
                    ring = self.types.get(t)
                    if ring is None:
                        ring = self.types[t] = deque(maxlen=int(SLA_WINDOW_SECONDS / SLA_BUCKET_SECONDS) + 1)
                    if not ring or ring[-1][0] != bucket:
                        ring.append((bucket, Reservoir(self.cap)))
                    ring[-1][1].add_many(vs)

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
