"""Hardening (issue 11), table-driven per class: events that third-party CloudEvents parsers accept whatever
the table and key look like; no secret of a configured URL in any message; redaction that hides every
registered secret; a health server that answers odd requests briefly and never hangs or prints a traceback;
files the agent creates are private."""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.http import from_json as v1_from_json
from rfc3986_validator import validate_rfc3986

from adapters.file import FileTarget
from adapters.http import HttpTarget
from agent import config, secrets
from agent.changes import RowChange
from agent.errors import SpoolError, TargetRejected
from agent.formats import to_debezium
from agent.health import HealthServer
from agent.interfaces import SpooledEvent
from agent import mapping
from agent.mapping import EventMapper
from agent.monitor import Monitor
from agent.statefiles import create_private_file, private_state_dir
from tests.agentproc import ROOT, AgentProcess, read_events, wait_for
from tests.plugins import free_port


def valid_cloudevent(body: bytes) -> dict:
    """What a consumer's SDK does with the event: the CloudEvents SDK's structured JSON reader (both of its
    APIs), plus the spec's rule the SDK does not check, that `source` is a URI-reference (RFC 3986)."""
    event = JSONFormat().read(None, body)
    v1_from_json(body)
    assert validate_rfc3986(event.get_source(), rule="URI_reference"), event.get_source()
    assert event.get_subject(), "an empty subject is refused by the SDK"
    return orjson.loads(body)


def test_the_sdk_really_refuses_what_the_agent_used_to_send():
    """The checker is not a rubber stamp: an empty subject and a source with a space are caught."""
    good = {"specversion": "1.0", "id": "1", "source": "cdc-agent://a/public.t", "type": "row.public.t",
            "subject": "1", "time": "2026-11-23T10:15:02.123456Z", "data": {}}
    valid_cloudevent(orjson.dumps(good))
    with pytest.raises(CloudEventValidationError):
        valid_cloudevent(orjson.dumps({**good, "subject": ""}))
    with pytest.raises(AssertionError):
        valid_cloudevent(orjson.dumps({**good, "source": "cdc-agent://a/public.Order Items"}))


# ---------------------------------------------------------------- CloudEvents: source and subject

SOURCES = [
    ("public.customers", "cdc-agent://erp-east/public.customers"),           # plain names stay as they are
    ("public.Customers", "cdc-agent://erp-east/public.Customers"),           # capitals are legal in a path
    ("public.Order Items", "cdc-agent://erp-east/public.Order%20Items"),
    ("main.Käse", "cdc-agent://erp-east/main.K%C3%A4se"),
    ("public.100%", "cdc-agent://erp-east/public.100%25"),                  # "%" itself, so decoding is exact
    ("public.a/b", "cdc-agent://erp-east/public.a%2Fb"),                    # one path segment
    ("public.x|y#z?", "cdc-agent://erp-east/public.x%7Cy%23z%3F"),
    ("dbo.t$1", "cdc-agent://erp-east/dbo.t$1"),
]


@pytest.mark.parametrize("table, source", SOURCES)
def test_source_is_a_uri_reference_for_every_table_name(table, source):
    assert mapping.event_source("erp-east", table) == source
    assert validate_rfc3986(source, rule="URI_reference")


def test_debezium_envelope_names_the_table_as_it_is_called():
    body = orjson.dumps({"specversion": "1.0", "id": "1", "source": mapping.event_source("erp", "main.Order Items"),
                         "type": "t", "subject": "1", "time": "2026-11-23T10:15:02.123456Z", "position": "1",
                         "data": {"op": "insert", "before": None, "after": {"id": 1}}})
    src = orjson.loads(to_debezium(body))["source"]
    assert (src["schema"], src["table"], src["name"]) == ("main", "Order Items", "erp")


# one table per key shape; the values are chosen so that a naive "|".join would collide or be empty (the
# values of one key column share one type, so 0 and "0" never meet in one table)
KEY_CASES = {
    "public.single": (("id",), [("",), (None,), ("|",), ("\\",), ("\\N",), ("\\E",), ("a|b",), ("a\\|b",),
                                ("Grüße 😀",), ("0",), ("x",)]),
    "public.Order Items": (("order_id", "line"), [(1, 1), (1, None), (None, 1), ("", ""), ("", None), (None, ""),
                                                  (None, None), ("a|", "b"), ("a", "|b"), ("a\\", "|b"),
                                                  ("a\\|", "b"), ("|", "|"), ("ü", "ß")]),
    "main.Käse": (("a", "b", "c"), [("", "", ""), ("|", "", ""), ("", "|", ""), ("", "", "|"), ("||", "", None),
                                    (None, None, None), ("\\N", None, "\\E")]),
}


def row_change(table, key_cols, key, op="insert", pos=1):
    row = dict(zip(key_cols, key), payload="p")
    return RowChange(table=table, op=op, before=row if op == "delete" else None, after=None if op == "delete" else row,
                     position=f"{pos:016X}:00000000", commit_time="2026-11-23T10:15:02.123456Z",
                     commit_ts=1795428902.123456, txid="7", key_columns=key_cols)


def test_every_mapped_event_of_awkward_tables_and_keys_is_a_valid_cloudevent():
    raw = {"agent": {"name": "erp-east"},
           "source": {"kind": "postgres", "dsn": "postgresql://cdc@127.0.0.1/erp", "tables": list(KEY_CASES)},
           # a rule with an explicit composite key, next to the default row events of the other tables
           "events": [{"type": "cheese.changed", "table": "main.Käse", "key": ["c", "a", "b"]}],
           "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}]}
    mapper = EventMapper(config.parse(raw))
    pos = 0
    for table, (key_cols, keys) in KEY_CASES.items():
        subjects = {}
        for key in keys:
            for op in ("insert", "delete"):
                pos += 1
                events, failures = mapper.map([row_change(table, key_cols, key, op, pos)])
                assert not failures and len(events) == 1, failures
                ev = valid_cloudevent(events[0].body)
                assert ev["subject"] == events[0].subject
                assert ev["source"] == mapping.event_source("erp-east", table)
                subjects.setdefault(ev["subject"], set()).add(key)
        collisions = {s: k for s, k in subjects.items() if len(k) > 1}
        assert not collisions, f"{table}: different keys, one subject: {collisions}"
        assert len(subjects) == len(set(keys))


@pytest.mark.parametrize("value, part", [
    ("42", "42"), (42, "42"), (None, "\\N"), ("", "\\E"), ("a|b", "a\\|b"), ("a\\b", "a\\\\b"), ("\\N", "\\\\N"),
    (True, "true"), ("Grüße", "Grüße"),
])
def test_subject_part_encoding_is_the_documented_one(value, part):
    assert mapping.subject_part(value) == part


def test_a_real_trigger_capture_run_over_awkward_names_gives_valid_cloudevents(tmp_path):
    """SQLite trigger capture, `cdc-agent run` as a process, into the file target: table names with a space,
    capitals and unicode; empty, NULL, `|` and backslash keys, single and composite."""
    db = sqlite3.connect(tmp_path / "erp.db")
    db.executescript("""
        CREATE TABLE "Order Items" (id INTEGER PRIMARY KEY, note TEXT);
        CREATE TABLE "Käse" (name TEXT PRIMARY KEY, v INT);
        CREATE TABLE pairs (a TEXT, b TEXT, v INT, PRIMARY KEY (a, b));""")
    db.close()
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nname = "erp-east"\nstate_dir = "state"\ndelivery = "thread"\n'
                   '[source]\nkind = "trigger"\ndsn = "sqlite:///erp.db"\n'
                   'tables = ["main.Order Items", "main.Käse", "main.pairs"]\npoll_interval_seconds = 0.05\n'
                   'snapshot = "never"\n'
                   '[[targets]]\nname = "f"\nkind = "file"\npath = "out/events.jsonl"\n[health]\nlisten = "off"\n',
                   encoding="utf-8")
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "agent.cli", "setup", "-c", str(cfg)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(tmp_path / "erp.db")
    db.executescript("""
        INSERT INTO "Order Items" VALUES (1, 'x'), (2, 'y');
        UPDATE "Order Items" SET note = 'z' WHERE id = 1;
        INSERT INTO "Käse" VALUES ('', 1), ('Gruyère|AOP', 2), ('back\\slash', 3), ('\\N', 4);
        INSERT INTO pairs VALUES ('', '', 1), (NULL, '', 2), ('', NULL, 3), (NULL, NULL, 4), ('a|', 'b', 5),
                                 ('a', '|b', 6), ('😀', 'ü', 7);
        DELETE FROM pairs WHERE v = 1;""")
    db.commit()
    db.close()
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: len(read_events(out)) >= 15, 60, what="15 events in the file target")
        assert agent.stop() == 0, agent.log()
    events = read_events(out, final=True)
    assert len(events) == 15
    for line in out.read_bytes().splitlines():
        valid_cloudevent(line)
    by_source: dict[str, dict[str, set]] = {}
    for ev in events:
        by_source.setdefault(ev["source"], {}).setdefault(ev["subject"], set()).add(orjson.dumps(ev["data"]["key"]))
    assert set(by_source) == {"cdc-agent://erp-east/main.Order%20Items", "cdc-agent://erp-east/main.K%C3%A4se",
                              "cdc-agent://erp-east/main.pairs"}
    for subjects in by_source.values():
        assert all(len(keys) == 1 for keys in subjects.values()), subjects     # one subject, one key
    assert set(by_source["cdc-agent://erp-east/main.pairs"]) == {
        "\\E|\\E", "\\N|\\E", "\\E|\\N", "\\N|\\N", "a\\||b", "a|\\|b", "😀|ü"}


def test_http_target_labels_each_format_as_what_it_is(tmp_path, http_receiver):
    def target(fmt):
        cfg = config.parse({"agent": {"name": "t", "state_dir": "st"},
                            "source": {"kind": "postgres", "dsn": "postgresql://u@h/db", "tables": ["public.t"]},
                            "targets": [{"name": "h", "kind": "http", "url": http_receiver.url, "format": fmt}]},
                           base=tmp_path)
        return HttpTarget(cfg.targets[0])

    ev = SpooledEvent(1, "e1", "row.public.t", "1", b'{"id":"e1"}', time.time())
    for fmt in ("cloudevents", "debezium"):
        t = target(fmt)
        t.send([ev])
        t.close()
    got = [r.headers["content-type"] for r in http_receiver.all_requests()]
    assert got == ["application/cloudevents-batch+json", "application/json"]


# ---------------------------------------------------------------- secrets

def fresh(*values, urls=()) -> secrets.Redactor:
    r = secrets.Redactor()
    for v in values:
        r.register(v)
    for u in urls:
        r.register_url(u)
    return r


REDACTION = [
    # (registered, urls, text, must be gone, must stay)
    (["s3cr3t-token"], [], "error: s3cr3t-token refused; again s3cr3t-token.", ["s3cr3t-token"], ["error:", "again"]),
    (["abcdef", "defghi"], [], "x abcdefghi y", ["abc", "def", "ghi"], ["x ", " y"]),        # overlapping
    (["abcde", "bcd"], [], "1 abcde 2 bcd 3 abcd", ["abcde", "bcd"], ["1 ", " 2 ", " 3 a"]),     # one inside another
    (["aaa"], [], "xaaaaaaay", ["aa"], ["x", "y"]),                                            # overlapping itself
    (["a.b*c(d)"], [], "re: a.b*c(d) aXbbc", ["a.b*c(d)"], ["aXbbc"]),                          # regex characters
    (["pw1", "pw12345"], [], "pw12345 then pw1", ["pw1"], ["then"]),                            # prefix of another
    (["ab"], [], "ab stays: too short to be a secret", [], ["ab stays"]),
    ([], ["https://hooks.example/in?token=tk9f00&sig=a%2Bb%3D&flag=1"],
     "GET /in?token=tk9f00&sig=a%2Bb%3D HTTP/1.1 decoded sig a+b=", ["tk9f00", "a%2Bb%3D", "a+b="], ["GET /in?token="]),
    ([], ["https://svc:pa55word@hooks.example/in"], "auth pa55word failed for svc", ["pa55word"], ["failed for svc"]),
    ([], ["https://ghp_tokenAsUser@git.example/x"], "denied for ghp_tokenAsUser", ["ghp_tokenAsUser"], ["denied"]),
    ([], [], "connect postgresql://cdc:unregistered@db/erp failed", ["unregistered"], ["postgresql://cdc:", "@db"]),
    ([], [], "mysql+pymysql://u:p@ss:w@h/db", ["p@ss"], ["mysql+pymysql://u:"]),
    ([], [], "host=db password='a b;c' user=x PWD={x;y}; Password = plain next",
     ["a b", "x;y", "plain"], ["host=db", "user=x", "next"]),
]


@pytest.mark.parametrize("registered, urls, text, gone, stay", REDACTION)
def test_redaction_hides_every_registered_secret(registered, urls, text, gone, stay):
    out = fresh(*registered, urls=urls).redact(text)
    for g in gone:
        assert g not in out, out
    for s in stay:
        assert s in out, out
    assert ("***" in out) == bool(gone)


def test_redaction_of_the_shapes_that_used_to_be_quadratic_is_still_correct():
    r = fresh("needle-secret")
    for text in ("a" * 50_000 + "needle-secret", "x://" + "a" * 50_000 + " needle-secret",
                 "pwd={" * 10_000 + "}", "://a:" * 10_000 + "needle-secret@h"):
        assert "needle-secret" not in r.redact(text)


class _EchoHandler(BaseHTTPRequestHandler):
    """A receiver that quotes the request back in a 400, as some frameworks' error pages do."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = f"bad request: {self.requestline}\n{self.headers}".encode()
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def rejection(url: str, tmp_path) -> str:
    cfg = config.parse({"agent": {"name": "t", "state_dir": "st"},
                        "source": {"kind": "postgres", "dsn": "postgresql://u@h/db", "tables": ["public.t"]},
                        "targets": [{"name": "h", "kind": "http", "url": url}]}, base=tmp_path)
    t = HttpTarget(cfg.targets[0])
    try:
        with pytest.raises(TargetRejected) as e:
            t.send([SpooledEvent(1, "e1", "row.public.t", "1", b'{"id":"e1"}', time.time())])
    finally:
        t.close()
    return secrets.redact(str(e.value))      # what pipeline, health, status and the log all do


@pytest.mark.parametrize("url, secret", [
    ("http://{hp}/hook?token={s}", "qtok-{n}"),
    ("http://{hp}/hook?a=1&sig={s}&b=2", "qsig+{n}"),
    ("http://{hp}/hook?token={s}", "q%2Ftok%3D{n}"),
])
def test_a_token_in_a_target_url_never_reaches_a_message(url, secret, echo_server, tmp_path, monkeypatch):
    s = secret.format(n=os.urandom(6).hex())
    url = url.format(hp=echo_server, s=s)
    with monkeypatch.context() as m:       # control: with nothing registered, the receiver's echo carries it
        m.setattr(secrets, "_default", secrets.Redactor())
        m.setattr(secrets.Redactor, "register_url", lambda self, *a, **k: None)
        leaked_before = s in rejection(url, tmp_path)
    msg = rejection(url, tmp_path)                           # config registered the URL's secrets
    assert "HTTP 400" in msg and "bad request: POST /hook?" in msg
    assert s not in msg and "***" in msg, msg
    assert leaked_before, "the echo did not carry the token: the test would prove nothing"


def test_config_load_registers_the_secrets_of_target_urls(tmp_path, monkeypatch):
    token = "cfgtok-" + os.urandom(6).hex()
    monkeypatch.setenv("HOOK_TOKEN", token)
    (tmp_path / "agent.toml").write_text(
        '[agent]\nname = "t"\n[source]\nkind = "postgres"\ndsn = "postgresql://u@h/db"\ntables = ["public.t"]\n'
        '[[targets]]\nname = "h"\nkind = "http"\nurl = "http://127.0.0.1:9/hook?token=${HOOK_TOKEN}"\n')
    config.load(tmp_path / "agent.toml")
    assert token not in secrets.redact(f"echo: /hook?token={token}")


@pytest.mark.parametrize("key_bytes", [b"0" * 32, b"\x01" * 31, b"\xfe" * 16, b"k" * 24])
def test_unpadded_whsec_secrets_work_like_the_standard_webhooks_library(key_bytes):
    from standardwebhooks.webhooks import Webhook

    from adapters.http import sign
    unpadded = "whsec_" + base64.b64encode(key_bytes).decode().rstrip("=")
    assert secrets.signing_key(unpadded) == key_bytes
    body, ts = b'[{"id":"1"}]', int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": sign(secrets.signing_key(unpadded), "msg_1", ts, body)}
    Webhook(unpadded).verify(body, headers)               # the library, given the same unpadded secret, agrees


@pytest.mark.parametrize("bad", ["whsec_", "whsec_!!!!", "whsec_a", "whsec_abcde"])
def test_whsec_secrets_that_are_not_base64_are_refused(bad):
    with pytest.raises(ValueError):
        secrets.signing_key(bad)


# ---------------------------------------------------------------- health server

@pytest.fixture
def health(tmp_path):
    port = free_port()
    cfg = config.parse({"agent": {"name": "erp", "state_dir": "state"},
                        "source": {"kind": "postgres", "dsn": "postgresql://u@h/db", "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": "out.jsonl"}],
                        "health": {"listen": f"127.0.0.1:{port}"}}, base=tmp_path)
    server = HealthServer(cfg, Monitor(cfg.agent.name, cfg.source.kind), idle_seconds=0.5)
    server.start()
    yield port
    server.stop()


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


ODD_REQUESTS = [
    # (request bytes, status, body wanted)
    (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 503, True),          # no source in this test: failing
    (b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", 503, False),
    (b"GET /metrics HTTP/1.0\r\n\r\n", 200, True),
    (b"POST /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405, True),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405, True),
    (b"BREW /pot HTTP/1.1\r\n\r\n", 501, True),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404, True),
    (b"GET /health/../../etc/passwd HTTP/1.1\r\n\r\n", 404, True),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, True),
    (b"GET / HTTP/1.1\r\nX-Long: " + b"b" * 70_000 + b"\r\n\r\n", 431, True),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431, True),
    (b"GARBAGE\r\n\r\n", 400, True),
    (b"GET / HTTP/9.9\r\n\r\n", 505, True),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(100, 164)) + b"\r\n\r\n", 400, True),   # a TLS hello
    # (fixed bytes where a client's random would be: every test process must collect the same parameters)
]


@pytest.mark.parametrize("request_bytes, status, has_body", ODD_REQUESTS, ids=lambda v: repr(v)[:40])
def test_health_server_answers_odd_requests_briefly_and_anonymously(health, request_bytes, status, has_body, capfd):
    answer = raw_request(health, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split(" ")[1] == str(status), lines[0]
    headers = dict(ln.split(": ", 1) for ln in lines[1:])
    assert headers["Server"] == "cdc-agent"
    assert b"Python" not in answer and b"BaseHTTP" not in answer
    assert bool(body) == has_body
    # the server is still there, and said nothing on stderr
    assert raw_request(health, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 503")
    err = capfd.readouterr().err
    assert "Traceback" not in err and err == "", err


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "one byte at a time"])
def test_health_server_closes_idle_and_trickling_connections(health, trickle):
    """idle_seconds = 0.5: a silent connection is closed after it, a trickling one after 3x it at the latest;
    the margins here are wide because the machine is shared (this is about never, not about fast)."""
    with socket.create_connection(("127.0.0.1", health), timeout=30) as s:
        t0 = time.monotonic()
        closed = False
        sent = b"GET /health HTTP/1.1\r\nX-Slow: "
        i = 0
        while time.monotonic() - t0 < 25:
            if trickle:
                try:
                    s.sendall(sent[i:i + 1] or b"x")
                except OSError:
                    closed = True
                    break
                i += 1
            s.settimeout(0.2)
            try:
                data = s.recv(65536)
                if data == b"" or data.startswith(b"HTTP/"):
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
        assert closed, "the server kept a connection open for 25 s"
        assert time.monotonic() - t0 < 20
    assert raw_request(health, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 503")


def test_health_server_survives_a_client_that_hangs_up_mid_request(health, capfd):
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", health)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")   # RST on close
    assert raw_request(health, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 503")
    time.sleep(0.5)
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------- private files

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_file_target_output_is_created_private(tmp_path, umask_022):
    cfg = config.parse({"agent": {"name": "t", "state_dir": "st"},
                        "source": {"kind": "postgres", "dsn": "postgresql://u@h/db", "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": "out/events.jsonl"}]}, base=tmp_path)
    t = FileTarget(cfg.targets[0])
    t.send([SpooledEvent(1, "e1", "row.public.t", "1", b'{"id":"e1"}', time.time())])
    t.close()
    assert stat.S_IMODE((tmp_path / "out" / "events.jsonl").stat().st_mode) == 0o600


def test_state_dir_and_state_files_are_created_private(tmp_path, umask_022):
    state = private_state_dir(tmp_path / "a" / "state")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    create_private_file(state / "spool.db")
    db = sqlite3.connect(state / "spool.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    db.close()
    create_private_file(state / "spool.db")                  # an existing file is left alone
    assert sqlite3.connect(state / "spool.db").execute("SELECT x FROM t").fetchone() == (1,)
    (tmp_path / "shared").mkdir(mode=0o750)
    os.chmod(tmp_path / "shared", 0o750)
    assert stat.S_IMODE(private_state_dir(tmp_path / "shared").stat().st_mode) == 0o750   # operator's choice kept


def test_a_state_dir_that_is_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(SpoolError) as e:
        private_state_dir(tmp_path / "state")
    assert str(tmp_path / "state") in str(e.value) and "not a directory" in str(e.value)
    assert "\n" not in str(e.value)
