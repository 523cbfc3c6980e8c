"""`GET /health` (CONTRACT §6): the agent's state as JSON, 200 for ok/degraded, 503 for failing.

The report is built by `health_report`, which `cdc-agent status` also prints for a person, so both
always say the same thing.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from . import dashboard
from .alerts import AlertBook, AlertNotifier
from .config import Config
from .errors import CdcError
from .monitor import Monitor
from .secrets import redact
from .spool import Spool

log = logging.getLogger(__name__)


def health_report(cfg: Config, monitor: Monitor | None, spool: Spool) -> dict:
    """The health body. Without a monitor (`status` from another process) only what the spool knows."""
    reasons: list[str] = []
    src = monitor.source_status() if monitor else None
    source = {"kind": cfg.source.kind, "connected": bool(src and src.connected),
              "position": src.position if src else None,
              "lag_seconds": round(src.lag_seconds, 3) if src and src.lag_seconds is not None else None,
              "retained_wal_bytes": src.retained_wal_bytes if src else None,
              "checkpoint": spool.checkpoint(),
              "changes_captured": monitor.captured if monitor else None,
              "skipped_echo": src.skipped_echo if src else None,   # a cdc-agent wrote them: not captured
              "capture_paused": bool(monitor and monitor.backpressure),
              "capture_stopped": bool(monitor and monitor.capture_error)}
    if src and src.error:
        source["error"] = redact(src.error)
    snap_fn = getattr(monitor, "snapshot_fn", None)
    source["snapshot"] = snap_fn() if snap_fn else _spooled_snapshot(spool)
    status = "ok"
    if monitor is not None and not (src and src.connected):
        status = "failing"
        reasons.append("source " + ("needs attention: " if monitor.source_fatal else "unreachable: ")
                       + redact(src.error if src and src.error else "not connected"))
    h = cfg.health
    if src and src.lag_seconds is not None and h.max_lag_seconds is not None and src.lag_seconds > h.max_lag_seconds:
        reasons.append(f"lag {src.lag_seconds:.1f}s is over max_lag_seconds {h.max_lag_seconds:g}")
    if src and src.retained_wal_bytes is not None and h.max_retained_wal_bytes is not None \
            and src.retained_wal_bytes > h.max_retained_wal_bytes:
        reasons.append(f"slot retains {src.retained_wal_bytes} bytes of WAL, over max_retained_wal_bytes "
                       f"{h.max_retained_wal_bytes}")
    if monitor and monitor.capture_error:
        status = "failing"
        reasons.append("capture stopped: " + redact(monitor.capture_error))
    if monitor and monitor.backpressure:
        reasons.append(f"spool is full ({cfg.agent.spool_max_events} undelivered events): capture paused")
    targets = {}
    found, unowned = _conflict_counts(cfg, spool)
    for t in cfg.targets:
        c = spool.counters(t.name)
        live = monitor.target(t.name) if monitor else None
        pending = spool.pending(t.name)
        state = live.state if live else "unknown"
        last_error = live.last_error if live else c.last_error
        # failed: attempts that failed (persistent, like delivered); dead_lettered: what waits in the
        # dead-letter store now (a retried or dropped one no longer counts; metrics keep the running total)
        targets[t.name] = {"state": state, "pending": pending, "delivered": c.delivered, "failed": c.failed,
                           "dead_lettered": spool.count_dead_letters(t.name),
                           "last_error": redact(last_error) if last_error else None}
        if monitor and t.name in monitor.drift:
            targets[t.name]["drift"] = monitor.drift[t.name]
        if getattr(t.options, "owns", None):        # a sql target in two-way sync (agent/conflicts.py)
            targets[t.name]["conflicts"] = sum(found.get(t.name, {}).values())
            targets[t.name]["unowned_changes"] = sum(unowned.get(t.name, {}).values())
        if state == "stopped":
            assert live is not None  # "stopped" comes from the live state ("unknown" without one)
            status = "failing"      # its worker gave up: nothing reaches this target until a restart
            reasons.append(f"target {t.name} stopped: {redact(live.last_error or '')}")
        elif live and state != "ok":
            reasons.append(f"target {t.name} is {state}: {redact(live.last_error or '')}")
        if h.max_pending_events is not None and pending > h.max_pending_events:
            reasons.append(f"target {t.name} has {pending} pending events, over max_pending_events "
                           f"{h.max_pending_events}")
    stale = spool.stale_targets([t.name for t in cfg.targets])
    for name in stale:
        reasons.append(f"the spool keeps a cursor for target {name}, which is not in the config (it no longer "
                       f"holds back pruning); if it is gone for good: cdc-agent targets forget {name} -c {cfg.path}")
    event_types = _event_types(cfg, monitor, reasons)
    by_priority = _dead_letters_by_priority(cfg, spool)
    if status == "ok" and reasons:
        status = "degraded"
    report = {"status": status, "agent": cfg.agent.name, "source": source, "targets": targets,
              "stale_targets": stale, "dead_letters": spool.count_dead_letters(),
              "unmapped_dead_letters": spool.count_unmapped(),
              "dead_letters_by_priority": by_priority, "event_types": event_types, "reasons": reasons}
    if monitor is not None and monitor.alerts is not None:
        report["alerts"] = monitor.alerts.firing()
    return report


def _conflict_counts(cfg: Config, spool: Spool) -> tuple[dict, dict]:
    if not any(getattr(t.options, "owns", None) for t in cfg.targets):
        return {}, {}
    from .conflicts import counts, unowned_counts
    return counts(spool), unowned_counts(spool)


def _spooled_snapshot(spool: Spool) -> dict | None:
    """Without the running agent: the progress the spool holds for a running request."""
    from .snapshot import requests
    for req in requests(spool):
        if req["state"] in ("pending", "running"):
            return {"state": req["state"], "id": req["id"], "tables": {
                t: {"rows_done": req["rows"].get(t, 0), "rows_estimate": req["estimates"].get(t),
                    "rows_per_second": None} for t in req["tables"]}}
    return None


def _event_types(cfg: Config, monitor: Monitor | None, reasons: list[str]) -> dict:
    """Per event type: p95 commit-to-delivery latency over the last 5 minutes (any target), its `sla_ms` and
    priority. A type over its SLA degrades health with the reason."""
    sla: dict[str, int] = {}
    for r in cfg.events:
        if r.sla_ms is not None:
            sla[r.type] = min(r.sla_ms, sla.get(r.type, r.sla_ms))
    seen = monitor.tracker.type_p95() if monitor else {}
    out = {}
    for t in sorted(set(sla) | set(seen)):
        p95, n = seen.get(t, (None, 0))
        p95_ms = None if p95 is None else round(p95 * 1000, 1)
        out[t] = {"p95_ms": p95_ms, "sla_ms": sla.get(t), "events": n, "priority": cfg.priority_of(t)}
        if t in sla and p95_ms is not None and p95_ms > sla[t]:
            reasons.append(f"event type {t}: p95 commit-to-delivery latency {p95_ms:g} ms is over its "
                           f"sla_ms {sla[t]}")
    return out


def _dead_letters_by_priority(cfg: Config, spool: Spool) -> dict[str, int]:
    out = {"high": 0, "normal": 0, "low": 0}
    for typ, n in spool.db.execute("SELECT type, count(*) FROM dead_letters GROUP BY type"):
        out[cfg.priority_of(typ)] += n
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that goes away mid-answer is normal; anything else is a bug, logged (one line, with
        the exception) instead of socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log.error("health endpoint: unexpected error answering %s: %r", client_address[0], exc, exc_info=exc)


class HealthServer:
    IDLE_SECONDS = 10.0       # a connection that sends nothing for this long is closed

    def __init__(self, cfg: Config, monitor: Monitor, idle_seconds: float | None = None):
        self.cfg, self.monitor = cfg, monitor
        self.lock = threading.Lock()
        self.spool: Spool | None = None
        server = self
        idle = idle_seconds or self.IDLE_SECONDS

        class Handler(BaseHTTPRequestHandler):
            timeout = idle                      # socket timeout: a silent client cannot hold a thread
            server_version = "cdc-agent"        # never BaseHTTP/0.6 Python/3.x
            sys_version = ""
            default_request_version = "HTTP/1.0"    # a garbled request line still gets a status line
            error_message_format = "%(code)d %(message)s\n"
            error_content_type = "text/plain; charset=utf-8"

            def version_string(self):
                return self.server_version

            def handle(self):
                # a client trickling one byte now and then defeats the socket timeout: every connection
                # also has a deadline, after which its socket is shut down (the read returns, the thread ends)
                deadline = threading.Timer(3 * idle, self._expire)
                deadline.daemon = True
                deadline.start()
                try:
                    super().handle()
                finally:
                    deadline.cancel()

            def _expire(self):
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def do_GET(self, head: bool = False):  # noqa: N802 (http.server naming)
                try:
                    code, ctype, body = server.respond(self.path)
                except Exception as e:  # the endpoint must answer, whatever broke
                    code, ctype = 503, "application/json"
                    body = orjson.dumps({"status": "failing", "agent": cfg.agent.name, "error": redact(str(e))})
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802
                self.do_GET(head=True)

            def _not_allowed(self):
                body = b'{"error": "method not allowed: use GET"}'
                self.send_response(405)
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

            def log_message(self, *args):  # request lines are noise in the agent's log
                pass

        host, port = cfg.health.host_port
        try:
            self.httpd = _Server((host, port), Handler)
        except OSError as e:
            raise CdcError(f"health endpoint cannot listen on {cfg.health.listen}: {e.strerror or e} "
                           f"(set [health] listen to a free host:port, or \"off\")") from None
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)
        # the dashboard's history and the alert rules run beside the endpoint, reading the same report
        book = AlertBook(cfg.alerts.rules, cfg.agent.name) if cfg.alerts.rules else None
        monitor.alerts = book
        notifier = AlertNotifier(cfg.agent.name, cfg.alerts.external_url) if book else None
        self.observer: dashboard.Observer | None = dashboard.Observer(monitor, self._observed_report, book, notifier)

    def respond(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path == "/":
            return 200, "text/html; charset=utf-8", dashboard.page()
        if path == "/dashboard.json" and self.observer is not None:
            return 200, "application/json", orjson.dumps(self.observer.dashboard_json())
        if path.startswith("/events/"):
            return self._event(path[len("/events/"):])
        if path not in ("/health", "/metrics"):
            return 404, "application/json", b'{"error": "not found: try /, /health or /metrics"}'
        # one spool connection for all requests (each request has its own thread), used one at a time
        with self.lock:
            if self.spool is None:
                self.spool = Spool(self.cfg.agent.state_dir)
            if path == "/metrics":
                from .metrics import render_metrics
                return 200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(self.cfg, self.monitor,
                                                                                       self.spool)
            report = health_report(self.cfg, self.monitor, self.spool)
        return (503 if report["status"] == "failing" else 200), "application/json", orjson.dumps(report)

    def _event(self, event_id: str) -> tuple[int, str, bytes]:
        if not re.fullmatch(r"[0-9a-fA-F]{8,64}", event_id):
            return 400, "application/json", b'{"error": "an event id is 8 to 64 hex digits"}'
        with self.lock:
            if self.spool is None:
                self.spool = Spool(self.cfg.agent.state_dir)
            trace = dashboard.event_trace(self.spool, self.cfg, event_id.lower())
        if trace is None:
            return 404, "application/json", orjson.dumps(
                {"error": f"no event {event_id} in the spool or the dead letters (pruned after "
                          f"{self.cfg.agent.spool_retention_seconds:g}s, or never captured)"})
        return 200, "application/json", orjson.dumps(trace)

    def _observed_report(self) -> dict:
        with self.lock:
            if self.spool is None:
                self.spool = Spool(self.cfg.agent.state_dir)
            return health_report(self.cfg, self.monitor, self.spool)

    def start(self) -> None:
        if self.observer is not None:
            self.observer.start()
        self.thread.start()
        log.info("health endpoint on http://%s/health", self.cfg.health.listen)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            if self.spool is not None:
                self.spool.close()
                self.spool = None
