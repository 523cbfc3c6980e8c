"""`[[alerts]]` rules (CONTRACT §6): a condition on a figure of `/health`, held for `for_seconds`, notifies a
webhook in Alertmanager's webhook format (version "4") when it starts firing and again when it resolves.

- `when` is `<path> <op> <number>`: the path walks the health report by dotted keys; a key with dots in it
  (an event type) is written in double quotes: `event_types."order.status.changed".p95_ms > 2000`. A path
  that leads nowhere (a target not delivering yet) is "no value": the condition does not hold.
- State per rule: inactive → pending (condition holds, since t) → firing (held `for_seconds`) → resolved
  (condition no longer holds; back to inactive). Firing and resolved each POST once, retried with backoff
  until the receiver answers 2xx; a resolved notification waits behind its firing one.
- A rule on dead letters (`dead_letters...`) skips its `for_seconds` when a dead letter of a
  `priority = "high"` event type arrived since the last evaluation: a lost high-priority order cannot wait.

Evaluation is pure (`AlertBook.evaluate(report, now)` returns the notifications due; agent/dashboard.py's
observer calls it with each fresh report); `AlertNotifier` does the HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import math
import operator
import queue
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from collections.abc import Callable

import orjson

from .retry import RetryPolicy
from .secrets import redact

log = logging.getLogger(__name__)

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
_WHEN_RE = re.compile(r"^\s*(?P<path>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
                      r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_SEGMENT_RE = re.compile(r'"(?P<q>[^"]+)"|(?P<p>[A-Za-z0-9_\-*]+)')
ZERO_TIME = "0001-01-01T00:00:00Z"          # Alertmanager's "no end" for a firing alert
WEBHOOK_SCHEMES = ("http", "https")        # [[alerts]] webhook URLs (user:password@ allowed: no headers here)


class AlertSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class AlertRule:
    name: str
    when: str
    path: tuple[str, ...]
    op: str
    threshold: float
    webhook: str
    for_seconds: float = 0.0
    severity: str = "warning"
    summary: str = ""                # optional annotation; default: the condition

    @property
    def on_dead_letters(self) -> bool:
        return self.path[0] in ("dead_letters", "dead_letters_by_priority") or "dead_lettered" in self.path


def parse_when(when: str) -> tuple[tuple[str, ...], str, float]:
    """`targets.crm.pending > 1000` → (("targets", "crm", "pending"), ">", 1000.0)."""
    m = _WHEN_RE.match(when)
    if not m:
        raise AlertSyntaxError('must be "<figure> <op> <number>", e.g. "targets.crm.pending > 1000" '
                               "(op one of > >= < <= == !=)")
    raw_path, num = m["path"], float(m["num"])
    if not math.isfinite(num):
        raise AlertSyntaxError("the number must be finite")
    segments: list[str] = []
    pos = 0
    while pos < len(raw_path):
        s = _SEGMENT_RE.match(raw_path, pos)
        if not s:
            raise AlertSyntaxError(f"cannot read the figure {raw_path!r} at {raw_path[pos:]!r}: write keys separated "
                                   'by dots, and a key with dots in it in double quotes')
        segments.append(s["q"] if s["q"] is not None else s["p"])
        pos = s.end()
        if pos < len(raw_path):
            if raw_path[pos] != ".":
                raise AlertSyntaxError(f"expected a dot after {segments[-1]!r} in {raw_path!r}")
            pos += 1
            if pos == len(raw_path):
                raise AlertSyntaxError(f"the figure {raw_path!r} ends with a dot")
    return tuple(segments), m["op"], num


def lookup(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at `path` in the report; booleans count as 0/1; anything else (missing, text) is None."""
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool):
        return float(node)
    if isinstance(node, (int, float)) and math.isfinite(node):
        return float(node)
    return None


@dataclass
class _State:
    pending_since: float | None = None
    firing_since: float | None = None
    value: float | None = None


@dataclass(frozen=True)
class Notification:
    rule: AlertRule
    status: str                      # "firing" | "resolved"
    starts_at: float
    ends_at: float | None
    value: float | None


class AlertBook:
    """The rules and their states. `evaluate` is called with each fresh health report."""

    def __init__(self, rules: tuple[AlertRule, ...], agent: str):
        self.rules, self.agent = rules, agent
        self.states = {r.name: _State() for r in rules}
        self._high_dead = 0
        self._lock = threading.Lock()

    def evaluate(self, report: dict[str, Any], now: float | None = None) -> list[Notification]:
        now = time.time() if now is None else now
        out: list[Notification] = []
        high = int(lookup(report, ("dead_letters_by_priority", "high")) or 0)
        high_arrived = high > self._high_dead
        self._high_dead = high
        with self._lock:
            for rule in self.rules:
                st = self.states[rule.name]
                value = lookup(report, rule.path)
                holds = value is not None and OPERATORS[rule.op](value, rule.threshold)
                st.value = value
                if holds:
                    if st.pending_since is None:
                        st.pending_since = now
                    urgent = rule.on_dead_letters and high_arrived
                    if st.firing_since is None and (urgent or now - st.pending_since >= rule.for_seconds):
                        st.firing_since = now
                        out.append(Notification(rule, "firing", now, None, value))
                else:
                    if st.firing_since is not None:
                        out.append(Notification(rule, "resolved", st.firing_since, now, value))
                    st.pending_since = st.firing_since = None
        return out

    def firing(self) -> list[dict[str, Any]]:
        """For `/health` `alerts`: the rules firing now."""
        with self._lock:
            return [{"name": r.name, "severity": r.severity, "when": r.when, "value": self.states[r.name].value,
                     "since": _rfc3339(self.states[r.name].firing_since or 0.0)}
                    for r in self.rules if self.states[r.name].firing_since is not None]


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alertmanager_payload(n: Notification, agent: str, external_url: str = "") -> dict[str, Any]:
    """One notification in Alertmanager's webhook format (version 4), one alert per message."""
    r = n.rule
    labels = {"alertname": r.name, "agent": agent, "severity": r.severity, "service": "cdc-agent"}
    annotations = {"summary": r.summary or f"{r.when} (value {_num(n.value)})",
                   "description": f"cdc-agent {agent}: {r.when} held for {r.for_seconds:g}s; value now {_num(n.value)}",
                   "value": _num(n.value)}
    fingerprint = hashlib.blake2b(f"{agent}\0{r.name}".encode(), digest_size=8).hexdigest()
    alert = {"status": n.status, "labels": labels, "annotations": annotations, "startsAt": _rfc3339(n.starts_at),
             "endsAt": _rfc3339(n.ends_at) if n.ends_at is not None else ZERO_TIME,
             "generatorURL": external_url, "fingerprint": fingerprint}
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{r.name}", agent="{agent}"}}', "truncatedAlerts": 0,
            "status": n.status, "receiver": "cdc-agent", "groupLabels": {"alertname": r.name},
            "commonLabels": labels, "commonAnnotations": annotations, "externalURL": external_url,
            "alerts": [alert]}


def _num(v: float | None) -> str:
    if v is None:
        return "none"
    return str(int(v)) if v == int(v) else f"{v:g}"


class AlertNotifier:
    """POSTs notifications on its own thread, in order, each retried with backoff until the receiver answers
    2xx (Alertmanager's own receivers do the same), so a slow receiver never holds up health or capture."""

    def __init__(self, agent: str, external_url: str = "", timeout: float = 5.0):
        self.agent, self.external_url, self.timeout = agent, external_url, timeout
        self._stop = threading.Event()
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._thread = threading.Thread(target=self._send_loop, name="alerts", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def submit(self, notifications: list[Notification]) -> None:
        for n in notifications:
            log.warning("alert %s %s: %s (value %s)", n.rule.name, n.status, n.rule.when, _num(n.value))
            self._queue.put(n)

    def _send_loop(self) -> None:
        import httpx          # here, not at the top: parsing a config (which reads [[alerts]]) needs no client
        backlog: list[Notification] = []
        policy = RetryPolicy(initial=1.0, maximum=60.0, circuit_failures=10**9)
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            while not self._stop.is_set():
                if not backlog:
                    try:
                        backlog.append(self._queue.get(timeout=0.5))
                    except queue.Empty:
                        continue
                n = backlog[0]
                if self._post(client, n):
                    backlog.pop(0)
                    self.sent += 1
                    policy.success()
                else:
                    self._stop.wait(policy.next_delay())

    def _post(self, client: Any, n: Notification) -> bool:
        import httpx
        body = orjson.dumps(alertmanager_payload(n, self.agent, self.external_url))
        try:
            r = client.post(n.rule.webhook, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as e:
            log.warning("alert %s: webhook unreachable (%s); retrying", n.rule.name, redact(str(e)) or type(e).__name__)
            return False
        if 200 <= r.status_code < 300:
            return True
        log.warning("alert %s: webhook answered %d; retrying", n.rule.name, r.status_code)
        return False
