"""The nats target: message building (pure), JetStream delivery to a private nats-server (PubAck, the
duplicate window, no stream yet, max_payload), bad configs, and the end-to-end crash test with a server
restart."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote

import orjson
import pytest

from adapters.nats import NatsOptions, NatsTarget, build_message, percent_encode, waves
from agent import secrets
from agent.config import TargetSettings, parse
from agent.errors import ConfigError, TargetUnavailable
from tests.agentproc import AgentProcess, check_random_transactions, pid_running, wait_for
from tests.test_kafka_target import cloudevent
from tests.plugins.brokers import delivery_running, unexpected_tracebacks
from tests.test_pg_pipeline import _writer, cli


def settings(url: str, fmt: str = "cloudevents", **opts) -> TargetSettings:
    opts.setdefault("subject", "erp.{table}")
    return TargetSettings(name="bus", kind="nats", format=fmt, options=NatsOptions(url=url, **opts))


def js_call(url: str, fn):
    """Run `await fn(js)` on a fresh connection (the official client, as a consumer would)."""
    import nats

    async def go():
        nc = await nats.connect(url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()
    return asyncio.run(go())


def add_stream(url: str, name: str, subjects: list[str], **kw):
    from nats.js.api import StorageType
    return js_call(url, lambda js: js.add_stream(name=name, subjects=subjects, storage=StorageType.FILE,
                                                 duplicate_window=kw.pop("duplicate_window", 120), **kw))


def read_stream(url: str, subject: str, until, timeout: float = 30) -> list:
    """Every message of the stream for `subject`, from the start, with an ephemeral ordered consumer."""
    async def go(js):
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy="all")
        out = []
        deadline = time.monotonic() + timeout
        while not until(out) and time.monotonic() < deadline:
            try:
                out.append(await sub.next_msg(timeout=1))
            except Exception:       # nats.errors.TimeoutError: nothing new yet
                continue
        await sub.unsubscribe()
        return out
    return js_call(url, go)


# ---------------------------------------------------------------- messages (pure)


def test_structured_message_has_the_id_as_nats_msg_id():
    ev = cloudevent(1)
    msg = build_message(ev, "cloudevents", "erp.items")
    assert msg.subject == "erp.items" and msg.payload == ev.body
    assert msg.headers == {"Nats-Msg-Id": "id-00001", "Content-Type": "application/cloudevents+json"}


def test_binary_message_follows_the_nats_protocol_binding():
    ev = cloudevent(2, subject="a b")
    body = orjson.loads(ev.body)
    msg = build_message(ev, "cloudevents-binary", "s")
    assert msg.headers == {"ce-specversion": "1.0", "ce-id": "id-00002", "ce-source": body["source"],
                           "ce-type": body["type"], "ce-subject": "a%20b", "ce-time": body["time"],
                           "ce-position": body["position"], "ce-txid": "7", "ce-datacontenttype": "application/json",
                           "Nats-Msg-Id": "id-00002"}
    assert orjson.loads(msg.payload) == body["data"]


def test_percent_encoding_of_header_values():
    # the binding's own example, and the characters it names
    assert percent_encode("Euro \u20ac \U0001F600") == "Euro%20%E2%82%AC%20%F0%9F%98%80"
    assert percent_encode('a"b%c') == "a%22b%25c"
    assert percent_encode("cdc-agent://erp/public.t") == "cdc-agent://erp/public.t"
    assert unquote(percent_encode("Grüße 1|2")) == "Grüße 1|2"


def test_waves_never_hold_two_events_of_one_subject_and_keep_the_order():
    subjects = ["a", "b", "a", "c", "c", "d", "b", "e"]
    got = waves(subjects)
    assert got == [[0, 1], [2, 3], [4, 5, 6, 7]]
    assert [i for w in got for i in w] == list(range(len(subjects)))
    assert all(len({subjects[i] for i in w}) == len(w) for w in got)
    assert waves(["x"] * 3) == [[0], [1], [2]]
    assert waves([str(i) for i in range(5)], limit=2) == [[0, 1], [2, 3], [4]]


def _nats_config(**target) -> dict:
    t = {"name": "bus", "kind": "nats", "url": "nats://127.0.0.1:4222", "subject": "erp.{type}", **target}
    return {"agent": {"name": "a"}, "source": {"kind": "postgres", "dsn": "postgresql://u@h/d", "tables": ["public.t"]},
            "targets": [t]}


@pytest.mark.parametrize("target, key, problem", [
    ({"url": "amqp://127.0.0.1:5672"}, "url", "nats:// or tls://"),
    ({"url": "nats://user:hunter2@127.0.0.1:4222"}, "url", "environment variable"),
    ({"subject": "erp.{tabel}"}, "subject", "unknown placeholder {tabel}"),
    ({"subject": "erp.*"}, "subject", "not a NATS subject"),
    ({"subject": "erp events"}, "subject", "not a NATS subject"),
    ({"create_stream": True}, "create_stream", "needs `stream`"),
    ({"stream": "a.b"}, "stream", "stream name"),
    ({"token": "plain"}, "token", "environment variable"),
])
def test_bad_nats_config_names_the_key(target, key, problem):
    with pytest.raises(ConfigError) as e:
        parse(_nats_config(**target), file="agent.toml")
    assert e.value.key == f"targets[0].{key}" and problem in e.value.problem, e.value


def test_password_in_the_url_comes_from_the_environment_and_is_redacted(monkeypatch):
    monkeypatch.setenv("NATS_PW_TEST", "s3cr3t-nats-pw")
    cfg = parse(_nats_config(url="nats://agent:${NATS_PW_TEST}@127.0.0.1:4222"))
    assert "s3cr3t-nats-pw" in cfg.targets[0].options.url
    assert "s3cr3t-nats-pw" not in secrets.redact(f"cannot connect to {cfg.targets[0].options.url}")


# ---------------------------------------------------------------- against nats-server


def test_setup_creates_the_stream_and_each_publish_is_acknowledged(make_nats_server):
    server = make_nats_server()
    target = NatsTarget(settings(server.url, subject="erp.{table}", stream="ERP", create_stream=True,
                                 duplicate_window_seconds=300))
    assert target.setup([("row.public.items", "erp-test", "public", "items")]) == [
        "nats bus: created stream ERP (file storage, duplicate window 300s, subjects erp.items)"]
    info = js_call(server.url, lambda js: js.stream_info("ERP"))
    assert str(getattr(info.config.storage, "value", info.config.storage)) == "file"
    assert info.config.duplicate_window == 300
    assert target.setup([("row.public.items", "erp-test", "public", "items")]) == ["nats bus: stream ERP exists"]
    events = [cloudevent(i, subject=str(i % 5)) for i in range(1, 51)]
    try:
        assert target.send(events[:30]).rejected == []
        assert target.send(events[20:]).rejected == []       # 20..29 again: duplicate PubAcks count as delivered
    finally:
        target.close()
    msgs = read_stream(server.url, "erp.items", lambda got: len(got) >= 50, timeout=10)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [e.id for e in events]     # none twice, in order
    assert all(orjson.loads(m.data)["id"] == m.headers["Nats-Msg-Id"] for m in msgs)


def test_binary_mode_headers_on_the_server(make_nats_server):
    server = make_nats_server()
    add_stream(server.url, "BIN", ["bin.>"])
    target = NatsTarget(settings(server.url, fmt="cloudevents-binary", subject="bin.{type}"))
    ev = cloudevent(1)
    try:
        assert target.send([ev]).rejected == []
    finally:
        target.close()
    (m,) = read_stream(server.url, "bin.>", lambda got: len(got) >= 1)
    body = orjson.loads(ev.body)
    assert m.subject == "bin.row.public.items"
    assert m.headers["ce-id"] == body["id"] == m.headers["Nats-Msg-Id"]
    assert m.headers["ce-type"] == body["type"] and m.headers["ce-specversion"] == "1.0"
    assert m.headers["ce-datacontenttype"] == "application/json"
    assert orjson.loads(m.data) == body["data"]


def test_no_stream_for_the_subject_is_retried_until_one_exists(make_nats_server):
    server = make_nats_server()
    target = NatsTarget(settings(server.url, subject="later.{table}", ack_timeout_seconds=2))
    try:
        with pytest.raises(TargetUnavailable, match="no stream captures subject later.items"):
            target.send([cloudevent(1)])
        add_stream(server.url, "LATER", ["later.>"])
        assert target.send([cloudevent(1)]).rejected == []
    finally:
        target.close()
    assert len(read_stream(server.url, "later.>", lambda got: len(got) >= 1)) == 1


def test_server_down_is_target_unavailable(make_nats_server):
    server = make_nats_server()
    add_stream(server.url, "DOWN", ["down.>"])
    target = NatsTarget(settings(server.url, subject="down.x", ack_timeout_seconds=1))
    try:
        assert target.send([cloudevent(1)]).rejected == []
        server.kill()
        with pytest.raises(TargetUnavailable):
            target.send([cloudevent(2)])
        server.start()         # same store dir: the stream is back with its messages
        wait_for(lambda: _sends(target, [cloudevent(2)]), 30, interval=0.3, what="delivery after the restart")
    finally:
        target.close()
    msgs = read_stream(server.url, "down.>", lambda got: len(got) >= 2)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == ["id-00001", "id-00002"]


def _sends(target, batch) -> bool:
    try:
        return target.send(batch).rejected == []
    except TargetUnavailable:
        return False


def test_message_over_max_payload_is_a_dead_letter_and_the_rest_is_delivered(make_nats_server):
    server = make_nats_server(max_payload=4096)
    add_stream(server.url, "BIG", ["big.>"])
    target = NatsTarget(settings(server.url, subject="big.x"))
    events = [cloudevent(i, subject=str(i)) for i in range(1, 6)]
    events[2] = cloudevent(3, subject="3", pad="x" * 10_000)
    try:
        result = target.send(events)
    finally:
        target.close()
    assert [r.seq for r in result.rejected] == [3] and "max_payload" in result.rejected[0].reason
    msgs = read_stream(server.url, "big.>", lambda got: len(got) >= 4)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == ["id-00001", "id-00002", "id-00004", "id-00005"]


# ---------------------------------------------------------------- end to end


def _e2e_config(tmp_path: Path, dsn: str, url: str, fmt: str = "cloudevents") -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "erp-test"
state_dir = "state"

[source]
kind = "postgres"
dsn = "{dsn}"
tables = ["public.items"]
snapshot = "never"          # these tests count the events of their own writes
heartbeat_seconds = 1

[[targets]]
name = "bus"
kind = "nats"
url = "{url}"
subject = "erp.{{table}}"
format = "{fmt}"
stream = "ERP"
create_stream = true
ack_timeout_seconds = 2
retry_max_seconds = 2

[health]
listen = "off"
""")
    return cfg


@pytest.mark.parametrize("writers, per_writer, kills", [
    (3, 4000, 3),
    pytest.param(4, 25_000, 8, marks=pytest.mark.slow, id="soak"),
])
def test_sigkills_and_a_server_restart_deliver_every_event_once(pg_db, make_nats_server, tmp_path, writers,
                                                                 per_writer, kills):
    server = make_nats_server()
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    cfg = _e2e_config(tmp_path, pg_db.dsn, server.url)
    r = cli("setup", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "created stream ERP (file storage, duplicate window 600s, subjects erp.items)" in r.stdout
    expected = [defaultdict(list) for _ in range(writers)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(pg_db.dsn, w, per_writer, expected[w], errors, stop))
               for w in range(writers)]
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    rng = random.Random(5)
    total = writers * per_writer
    try:
        for t in threads:
            t.start()
        # SIGKILL of the server while the writers write, as soon as the stream holds something; it stays down
        # until the agent has seen it fail; JetStream file storage keeps the stream across the restart
        wait_for(lambda: _stream_messages(server.url) > 0, 30, interval=0.05, what="the first messages")
        server.kill()
        wait_for(lambda: "target bus: nats bus:" in agent.log(), 30, what="the agent to see the server down")
        server.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.8, 2.0))
            wait_for(lambda: delivery_running(agent), 20, what="the delivery process to be up")
            kids = agent.children()
            agent.kill()
            wait_for(lambda kids=kids: not any(pid_running(k) for k in kids), 10, what="the delivery process to exit")
            agent.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        wait_for(lambda: js_call(server.url, lambda js: js.stream_info("ERP")).state.messages >= total, 120,
                 interval=0.5, what=f"{total} messages in the stream")
        wait_for(lambda: agent.children(), 15, what="the last agent to be up (it handles SIGTERM)")
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()
    msgs = read_stream(server.url, "erp.items", lambda got: len(got) >= total, timeout=60)
    ids = [m.headers["Nats-Msg-Id"] for m in msgs]
    assert len(ids) == len(set(ids)) == total, "an event is missing or stored twice (duplicate window)"
    events = [orjson.loads(m.data) for m in msgs]
    assert [e["id"] for e in events] == ids
    check_random_transactions(events, expected)
    assert not unexpected_tracebacks(agent.log()), agent.log()[-3000:]


def _stream_messages(url: str) -> int:
    try:
        return js_call(url, lambda js: js.stream_info("ERP")).state.messages
    except Exception:       # the server is starting
        return 0


def test_bad_nats_config_file_is_exit_2(tmp_path):
    cfg = _e2e_config(tmp_path, "postgresql://u@127.0.0.1/d", "amqp://127.0.0.1:5672")
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"{cfg}: targets[0].url: must be a nats:// or tls:// URL" in r.stderr
    cfg.write_text(cfg.read_text().replace("amqp://", "nats://").replace("{table}", "{schema}.{tabel}"))
    r = cli("run", "-c", str(cfg))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"{cfg}: targets[0].subject: unknown placeholder {{tabel}}" in r.stderr
