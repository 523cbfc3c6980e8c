"""Live state shared by the pipeline's threads and read by the health endpoint and metrics.
Persistent counters (delivered, dead-lettered, cursors) live in the spool; this holds what is only
true while the process runs (connected, retrying, last error, backpressure)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .changes import SourceStatus


@dataclass
class TargetLive:
    state: str = "ok"                 # ok | retrying | circuit_open | stopped
    last_error: str | None = None
    failed: int = 0                   # failed attempts since start
    last_delivery: float | None = None


@dataclass
class Monitor:
    agent: str
    source_kind: str
    started_at: float = field(default_factory=time.time)
    source_error: str | None = None
    source_fatal: bool = False
    backpressure: bool = False
    source_status_fn: object = None   # callable returning SourceStatus, set while a source is open
    targets: dict[str, TargetLive] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    observers: list = field(default_factory=list)   # callables(target, events) after each delivery

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
        return st

    def target(self, name: str) -> TargetLive:
        with self.lock:
            return self.targets.setdefault(name, TargetLive())

    def delivered(self, name: str, events) -> None:
        t = self.target(name)
        t.state, t.last_error, t.last_delivery = "ok", None, time.time()
        for obs in self.observers:
            obs(name, events)
