"""`GET /health` (CONTRACT §6): the agent's state as JSON, 200 for ok/degraded, 503 for failing.

The report is built by `health_report`, which `cdc-agent status` also prints for a person, so both
always say the same thing.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from .config import Config
from .errors import CdcError
from .monitor import Monitor
from .secrets import redact
from .spool import Spool

log = logging.getLogger("cdc_agent.health")


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
              "capture_paused": bool(monitor and monitor.backpressure),
              "capture_stopped": bool(monitor and monitor.capture_error)}
    if src and src.error:
        source["error"] = redact(src.error)
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
        if state == "stopped":
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
    if status == "ok" and reasons:
        status = "degraded"
    return {"status": status, "agent": cfg.agent.name, "source": source, "targets": targets,
            "stale_targets": stale,
            "dead_letters": spool.count_dead_letters(), "unmapped_dead_letters": spool.count_unmapped(),
            "reasons": reasons}


class HealthServer:
    def __init__(self, cfg: Config, monitor: Monitor):
        self.cfg, self.monitor = cfg, monitor
        self.lock = threading.Lock()
        self.spool: Spool | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                try:
                    code, ctype, body = server.respond(self.path)
                except Exception as e:  # the endpoint must answer, whatever broke
                    code, ctype = 503, "application/json"
                    body = orjson.dumps({"status": "failing", "agent": cfg.agent.name, "error": redact(str(e))})
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # request lines are noise in the agent's log
                pass

        host, port = cfg.health.host_port
        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise CdcError(f"health endpoint cannot listen on {cfg.health.listen}: {e.strerror or e} "
                           f"(set [health] listen to a free host:port, or \"off\")") from None
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def respond(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path not in ("/health", "/", "/metrics"):
            return 404, "application/json", b'{"error": "not found: try /health or /metrics"}'
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

    def start(self) -> None:
        self.thread.start()
        log.info("health endpoint on http://%s/health", self.cfg.health.listen)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            if self.spool is not None:
                self.spool.close()
                self.spool = None
