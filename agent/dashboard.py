"""The sync-health dashboard (`GET /` on the health listener) and what feeds it.

`Observer` is one thread that every `TICK_SECONDS` builds the health report (with its own spool
connection), keeps it for the page and `/dashboard.json`, evaluates the `[[alerts]]` rules on it, and every
`History.step` seconds adds a point to each chart series. So the page, the alerts and `/health` all read the
same figures, and a wall screen polling every 2 s costs the agent one report per tick, not one per viewer.

The page (agent/dashboard.html) is one self-contained file: no CDN, no web font, no external script. It
shows only what `/health` shows (already redacted), so no secret reaches it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .alerts import AlertBook, AlertNotifier
from .history import History
from .monitor import Monitor
from .secrets import redact

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0


PAGE = Path(__file__).with_name("dashboard.html")


def page() -> bytes:
    return PAGE.read_bytes()


class Observer:
    def __init__(self, monitor: Monitor, report_fn: Callable[[], dict[str, Any]], book: AlertBook | None,
                 notifier: AlertNotifier | None, history: History | None = None, tick: float = TICK_SECONDS):
        self.monitor, self.report_fn, self.book, self.notifier = monitor, report_fn, book, notifier
        self.history = history or History()
        self.tick = tick
        self.latest: dict[str, Any] | None = None
        self._last_step = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="observer", daemon=True)

    def start(self) -> None:
        if self.notifier:
            self.notifier.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.notifier:
            self.notifier.stop()

    def observe_once(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        report = self.report_fn()
        if self.book is not None:
            due = self.book.evaluate(report, now)
            if due and self.notifier:
                self.notifier.submit(due)
            report["alerts"] = self.book.firing()
        if now - self._last_step >= self.history.step:
            self._last_step = now
            self.history.record(now, report, self.monitor.tracker.take_step())
        self.latest = report
        return report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.observe_once()
            except Exception:
                log.exception("health observer failed (a bug: please report it); retrying")
            self._stop.wait(self.tick)

    def dashboard_json(self) -> dict[str, Any]:
        report = self.latest if self.latest is not None else self.observe_once()
        return {"health": report, "history": self.history.snapshot()}


def event_trace(spool: Any, cfg: Any, event_id: str) -> dict[str, Any] | None:
    """What happened to one event at each target: delivered, pending, dead-lettered (why), or not sent
    (the target's `events` patterns skip its type). None when neither the spool nor dead letters know it."""
    row = spool.find_event(event_id)
    dead = {t: reason for t, reason in spool.db.execute(
        "SELECT target, reason FROM dead_letters WHERE event_id = ?", (event_id,))}
    if row is None and not dead:
        return None
    if row is None:
        typ, subject, position = spool.db.execute(
            "SELECT type, '', position FROM dead_letters WHERE event_id = ? LIMIT 1", (event_id,)).fetchone()
        seq = None
    else:
        seq, typ, subject, position = row
    targets: dict[str, dict[str, Any]] = {}
    for t in cfg.targets:
        if t.name in dead:
            targets[t.name] = {"state": "dead-lettered", "reason": redact(dead[t.name])}
        elif not t.wants(typ):
            targets[t.name] = {"state": "not sent (not in this target's events)"}
        elif seq is None:
            targets[t.name] = {"state": "delivered (pruned from the spool since)"}
        else:
            cursor = spool.counters(t.name).cursor
            targets[t.name] = {"state": "delivered" if cursor >= seq else "pending"}
    return {"id": event_id, "type": typ, "subject": subject, "position": position, "targets": targets}
