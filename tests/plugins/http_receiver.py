"""A real HTTP webhook receiver on loopback, in a thread, for target tests.

It records every request (time, headers, body, how it was answered) and answers as scripted:
    r = HttpReceiver().start()
    r.behave("ok")                               # default: 200 for every request
    r.behave("status", 503)                      # every request gets 503
    r.behave("status", 429, retry_after="1")     # 429 with a Retry-After header
    r.behave("reject", ids={"abc"}, status=400)  # 400 when the batch holds one of these event ids, else 200
    r.behave("reject", subjects={"13"})          # ... or an event of one of these subjects
    r.behave("reject", when=lambda ev: ...)      # ... or an event (parsed JSON) the predicate picks
    r.behave("hang", seconds=3)                  # answer nothing for 3 s (past the client's timeout)
    r.script("status", 503, times=3)             # the next 3 requests get 503, then the default again
    r.refuse()                                   # close the listening socket: connections are refused
    r.accept()                                   # listen again, on the same port
`r.events()` are the events of the requests answered 2xx, in arrival order (what the receiver "holds").
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from . import free_port


@dataclass
class Recorded:
    time: float                  # monotonic, when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None    # None: hung (no answer)
    answered: float | None = None
    events: list = field(default_factory=list)


@dataclass
class Behaviour:
    kind: str = "ok"             # ok | status | reject | hang
    status: int = 200
    retry_after: str | None = None
    ids: frozenset = frozenset()
    subjects: frozenset = frozenset()
    when: object = None
    seconds: float = 0.0
    body: bytes = b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HttpReceiver:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.default = Behaviour()
        self.queue: list[Behaviour] = []
        self.closing = threading.Event()
        self.httpd: _Server | None = None
        self.thread: threading.Thread | None = None
        # the port, bound (not listening) for the receiver's whole life: while it is bound, free_port() (a bind
        # to port 0) never hands it to another server of the suite under xdist. A hold bound only after the
        # server's socket closed (refuse()) left a gap in which another worker took the port and answered the
        # agent in the receiver's place (seen: a target "ok" while its receiver was down). Both sockets set
        # SO_REUSEADDR, which lets the server bind and listen beside a bound socket that does not listen.
        self._hold: socket.socket | None = self._bind_hold()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/erp"

    # ------------------------------------------------------------ scripting

    @staticmethod
    def _make(kind: str, status: int | None = None, *, retry_after: str | None = None, ids=(), subjects=(),
              when=None, seconds: float = 0.0, body: bytes | str = b"") -> Behaviour:
        if status is None:
            status = 400 if kind == "reject" else 200
        return Behaviour(kind, status, retry_after, frozenset(ids), frozenset(subjects), when, seconds,
                         body.encode() if isinstance(body, str) else body)

    def behave(self, kind: str, status: int | None = None, **kw) -> None:
        with self.lock:
            self.default = self._make(kind, status, **kw)
            self.queue.clear()

    def script(self, kind: str, status: int | None = None, *, times: int = 1, **kw) -> None:
        with self.lock:
            self.queue.extend([self._make(kind, status, **kw)] * times)

    def _next(self) -> Behaviour:
        with self.lock:
            return self.queue.pop(0) if self.queue else self.default

    # ------------------------------------------------------------ what arrived

    def events(self) -> list[dict]:
        with self.lock:
            return [e for r in self.requests if r.status is not None and 200 <= r.status < 300 for e in r.events]

    def all_requests(self) -> list[Recorded]:
        with self.lock:
            return list(self.requests)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"    # one request per connection: refuse() really refuses

            def do_POST(self):  # noqa: N802
                arrived = time.monotonic()
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    events = orjson.loads(body)
                    if not isinstance(events, list):
                        events = []
                except orjson.JSONDecodeError:
                    events = []
                rec = Recorded(arrived, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                               events=events)
                with receiver.lock:
                    receiver.requests.append(rec)
                b = receiver._next()
                if b.kind == "hang":
                    receiver.closing.wait(b.seconds)
                    self.close_connection = True
                    return       # no answer at all: the connection just closes after the client gave up
                status, headers, out = b.status, {}, b.body
                if b.kind == "reject":
                    bad = [e.get("id") for e in events if isinstance(e, dict)
                           and (e.get("id") in b.ids or e.get("subject") in b.subjects or (b.when and b.when(e)))]
                    if bad:
                        out = out or orjson.dumps({"error": f"event {bad[0]} refused: unknown customer"})
                    else:
                        status, out = 200, b""
                if b.retry_after is not None:
                    headers["Retry-After"] = b.retry_after
                rec.status, rec.answered = status, time.monotonic()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self._handler = Handler
        self.accept()
        return self

    def accept(self) -> None:
        """(Re)open the listening socket on the same port."""
        if self.httpd is not None:
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                self.httpd = _Server(("127.0.0.1", self.port), self._handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=f"receiver-{self.port}", daemon=True)
        self.thread.start()

    def refuse(self) -> None:
        """Close the listening socket: new connections get ECONNREFUSED until accept(). The port stays bound
        meanwhile (the hold, __init__), so that no other server of the suite gets it."""
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None
        self.thread = None

    def _bind_hold(self) -> socket.socket | None:
        hold = socket.socket()
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # past the closed connections' TIME_WAIT
        try:
            hold.bind(("127.0.0.1", self.port))
        except OSError:
            hold.close()        # taken in the meantime (a port given to __init__): refused all the same
            return None
        return hold

    def listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def close(self) -> None:
        self.closing.set()
        self.refuse()
        if self._hold is not None:
            self._hold.close()
            self._hold = None


@pytest.fixture
def http_receiver():
    r = HttpReceiver().start()
    yield r
    r.close()


@pytest.fixture
def make_http_receiver():
    made: list[HttpReceiver] = []

    def make() -> HttpReceiver:
        r = HttpReceiver().start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
