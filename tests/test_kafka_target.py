"""The kafka target: message building (pure), delivery to a real Kafka-protocol broker (Tansu), dead letters
for oversized messages, an unreachable broker, bad configs, and the end-to-end crash test."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from adapters.envelope import Destinations, Template, event_origin
from adapters.kafka import KafkaOptions, KafkaTarget, build_message
from agent import secrets
from agent.config import TargetSettings, parse
from agent.errors import ConfigError, TargetUnavailable
from agent.formats import to_debezium
from agent.interfaces import SpooledEvent
from tests.agentproc import ROOT, AgentProcess, check_random_transactions, pid_running, wait_for
from tests.plugins.brokers import delivery_running, unexpected_tracebacks
from tests.test_pg_pipeline import _writer, cli


def cloudevent(i: int, subject: str = "1", table: str = "public.items", pad: str = "") -> SpooledEvent:
    ev = {"specversion": "1.0", "id": f"id-{i:05d}", "source": f"cdc-agent://erp-test/{table}",
          "type": f"row.{table}", "subject": subject, "time": "2026-12-01T10:00:00.000000Z",
          "datacontenttype": "application/json", "position": f"{i:016X}:000001", "txid": "7",
          "data": {"op": "insert", "key": {"id": i}, "before": None, "after": {"id": i, "pad": pad}, "changed": None}}
    return SpooledEvent(i, ev["id"], ev["type"], subject, orjson.dumps(ev), 0.0, ev["position"])


def settings(bootstrap: str, fmt: str = "cloudevents", **opts) -> TargetSettings:
    opts.setdefault("topic", "erp.{table}")
    return TargetSettings(name="bus", kind="kafka", format=fmt,
                          options=KafkaOptions(bootstrap_servers=bootstrap, **opts))


# ---------------------------------------------------------------- messages (pure)


def test_structured_message_key_is_the_subject_and_ce_id_the_event_id():
    ev = cloudevent(3, subject="42|7")
    msg = build_message(ev, "cloudevents", "erp.items")
    assert msg.topic == "erp.items" and msg.key == b"42|7" and msg.value == ev.body
    assert dict(msg.headers) == {"ce_id": b"id-00003", "content-type": b"application/cloudevents+json; charset=UTF-8"}


def test_binary_message_follows_the_kafka_protocol_binding():
    ev = cloudevent(4, subject="9")
    msg = build_message(ev, "cloudevents-binary", "t")
    headers = dict(msg.headers)
    body = orjson.loads(ev.body)
    # every attribute but data and datacontenttype as ce_<name>; datacontenttype is content-type
    assert headers == {"ce_specversion": b"1.0", "ce_id": b"id-00004", "ce_source": body["source"].encode(),
                       "ce_type": body["type"].encode(), "ce_subject": b"9", "ce_time": body["time"].encode(),
                       "ce_position": body["position"].encode(), "ce_txid": b"7", "content-type": b"application/json"}
    assert orjson.loads(msg.value) == body["data"]
    assert msg.key == b"9"


def test_binary_message_key_is_partitionkey_when_the_event_has_one():
    ev = cloudevent(5, subject="9")
    body = orjson.loads(ev.body)
    body["partitionkey"] = "customer-9"
    ev.body = orjson.dumps(body)
    msg = build_message(ev, "cloudevents-binary", "t")
    assert msg.key == b"customer-9" and dict(msg.headers)["ce_partitionkey"] == b"customer-9"


def test_debezium_message_carries_ce_id_too():
    ev = cloudevent(6)
    dbz = SpooledEvent(ev.seq, ev.id, ev.type, ev.subject, to_debezium(ev.body), 0.0, ev.position)
    msg = build_message(dbz, "debezium", "t")
    assert dict(msg.headers)["ce_id"] == b"id-00006" and orjson.loads(msg.value)["op"] == "c"


@pytest.mark.parametrize("fmt", ["cloudevents", "debezium"])
def test_topic_template_from_the_event(fmt):
    ev = cloudevent(1, table="sales.order_lines")
    body = to_debezium(ev.body) if fmt == "debezium" else ev.body
    assert event_origin(body, fmt) == ("erp-test", "sales", "order_lines")
    d = Destinations(Template.parse("{agent}.{schema}.{table}.{type}"))
    assert d.render(ev.type, body, fmt) == "erp-test.sales.order_lines.row.sales.order_lines"


def _kafka_config(**target) -> dict:
    t = {"name": "bus", "kind": "kafka", "bootstrap_servers": "127.0.0.1:9092", "topic": "erp.{type}", **target}
    return {"agent": {"name": "a"}, "source": {"kind": "postgres", "dsn": "postgresql://u@h/d", "tables": ["public.t"]},
            "targets": [t]}


@pytest.mark.parametrize("target, key, problem", [
    ({"bootstrap_servers": "broker1"}, "bootstrap_servers", "host:port"),
    ({"bootstrap_servers": "b1:9092,b2"}, "bootstrap_servers", "host:port"),
    ({"bootstrap_servers": "b1:70000"}, "bootstrap_servers", "host:port"),
    ({"topic": "erp.{tabel}"}, "topic", "unknown placeholder {tabel}"),
    ({"options": {"enable.idempotence": "false"}}, "options.enable.idempotence", "always idempotent"),
    ({"options": {"acks": "1"}}, "options.acks", "acks=all"),
    ({"options": {"message.timeout.ms": "5000"}}, "options.message.timeout.ms", "never drops"),
    ({"options": {"max.in.flight.requests.per.connection": "10"}}, "options.max.in.flight", "1 to 5"),
    ({"options": {"sasl.password": "hunter2"}}, "options.sasl.password", "environment variable"),
    ({"format": "xml"}, "format", "cloudevents-binary"),
])
def test_bad_kafka_config_names_the_key(target, key, problem):
    with pytest.raises(ConfigError) as e:
        parse(_kafka_config(**target), file="agent.toml")
    assert e.value.key.startswith(f"targets[0].{key}") and problem in e.value.problem


def test_sasl_password_from_the_environment_is_redacted(monkeypatch):
    monkeypatch.setenv("KAFKA_PW_TEST", "s3cr3t-kafka-pw")
    cfg = parse(_kafka_config(options={"sasl.password": "${KAFKA_PW_TEST}", "sasl.username": "agent",
                                       "security.protocol": "sasl_ssl", "sasl.mechanism": "PLAIN"}))
    assert cfg.targets[0].options.options["sasl.password"] == "s3cr3t-kafka-pw"
    assert "s3cr3t-kafka-pw" not in secrets.redact("login failed for s3cr3t-kafka-pw")


# ---------------------------------------------------------------- against Tansu


def test_batch_delivered_one_partition_per_subject(tansu):
    target = KafkaTarget(settings(tansu.bootstrap, topic="erp.{table}", create_topics=True, partitions=3))
    lines = target.setup([("row.public.items", "erp-test", "public", "items")])
    assert lines == ["kafka bus: created topic erp.items (3 partition(s))"]
    assert target.setup([("row.public.items", "erp-test", "public", "items")]) == ["kafka bus: topic erp.items exists"]
    events = [cloudevent(i, subject=str(i % 7)) for i in range(1, 301)]
    try:
        target.open()
        for k in range(0, len(events), 100):
            assert target.send(events[k:k + 100]).rejected == []
    finally:
        target.close()
    msgs = tansu.consume(["erp.items"], len(events))
    assert len(msgs) == len(events)
    partitions = defaultdict(set)
    by_subject = defaultdict(list)
    for m in msgs:
        body = orjson.loads(m.value())
        assert m.key().decode() == body["subject"]
        assert dict(m.headers())["ce_id"].decode() == body["id"]
        partitions[body["subject"]].add(m.partition())
        by_subject[body["subject"]].append((m.partition(), m.offset(), body["position"]))
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1      # the subjects do spread
    for subject, seen in by_subject.items():
        assert [pos for _, _, pos in sorted(seen)] == sorted(pos for _, _, pos in seen), subject


def test_binary_mode_headers_on_the_broker(tansu):
    target = KafkaTarget(settings(tansu.bootstrap, fmt="cloudevents-binary", topic="bin"))
    ev = cloudevent(1, subject="5")
    try:
        assert target.send([ev]).rejected == []
    finally:
        target.close()
    (m,) = tansu.consume(["bin"], 1)
    h = {k: v.decode() for k, v in m.headers()}
    body = orjson.loads(ev.body)
    assert h["ce_id"] == body["id"] and h["ce_type"] == body["type"] and h["ce_specversion"] == "1.0"
    assert h["ce_source"] == body["source"] and h["ce_subject"] == "5" and h["content-type"] == "application/json"
    assert orjson.loads(m.value()) == body["data"] and m.key() == b"5"


def test_oversized_message_is_a_dead_letter_and_the_rest_is_delivered(tansu):
    target = KafkaTarget(settings(tansu.bootstrap, topic="big", options={"message.max.bytes": "4000"}))
    events = [cloudevent(i, subject=str(i)) for i in range(1, 6)]
    events[2] = cloudevent(3, subject="3", pad="x" * 10_000)
    try:
        result = target.send(events)
    finally:
        target.close()
    assert [r.seq for r in result.rejected] == [3] and "MSG_SIZE_TOO_LARGE" in result.rejected[0].reason
    got = tansu.consume(["big"], 4)
    assert sorted(orjson.loads(m.value())["id"] for m in got) == ["id-00001", "id-00002", "id-00004", "id-00005"]


def _send_until_delivered(target, batch, attempts: int = 30) -> None:
    for _ in range(attempts):      # what the worker does: the same batch again, with backoff
        try:
            assert target.send(batch).rejected == []
            return
        except TargetUnavailable:
            time.sleep(0.3)
    pytest.fail("the batch was never delivered after the broker came back")


def test_unresponsive_broker_is_retried_and_the_batch_is_not_produced_twice(tansu):
    target = KafkaTarget(settings(tansu.bootstrap, topic="down", delivery_timeout_seconds=1))
    try:
        # the first message also waits for the topic to be created: on a slow machine that can take longer
        # than the 1 s timeout, which is a retry (the same batch again), not a failure
        _send_until_delivered(target, [cloudevent(1)])
        tansu.hang()                                 # SIGSTOP: no delivery report comes back
        batch = [cloudevent(2), cloudevent(3)]
        try:
            with pytest.raises(TargetUnavailable, match="2 message\\(s\\) not acknowledged"):
                target.send(batch)
        finally:
            tansu.proc.send_signal(signal.SIGCONT)
        _send_until_delivered(target, batch)
    finally:
        target.close()
    got = tansu.consume(["down"], 3, timeout=30)
    # the retry waited for the batch still queued in the producer instead of producing it again
    assert [orjson.loads(m.value())["id"] for m in got] == ["id-00001", "id-00002", "id-00003"]


def test_broker_restarted_without_its_state_gets_the_batch_from_a_new_producer(tansu):
    target = KafkaTarget(settings(tansu.bootstrap, topic="lost", delivery_timeout_seconds=1))
    try:
        # the first message also waits for the topic to be created: on a slow machine that can take longer
        # than the 1 s timeout, which is a retry (the same batch again), not a failure
        _send_until_delivered(target, [cloudevent(1)])
        tansu.stop()
        batch = [cloudevent(2), cloudevent(3)]
        with pytest.raises(TargetUnavailable, match="not acknowledged"):
            target.send(batch)
        # memory storage: the new broker knows neither the topic nor the producer id (Unknown Producer Id
        # forever); the target starts a fresh producer after a few vain waits
        tansu.start()
        _send_until_delivered(target, batch)
    finally:
        target.close()
    got = tansu.consume(["lost"],
                        until=lambda got: {"id-00002", "id-00003"} <= {orjson.loads(m.value())["id"] for m in got},
                        timeout=30)
    assert {"id-00002", "id-00003"} <= {orjson.loads(m.value())["id"] for m in got}


# ---------------------------------------------------------------- end to end


def _e2e_config(tmp_path: Path, dsn: str, bootstrap: str, fmt: str) -> Path:
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
kind = "kafka"
bootstrap_servers = "{bootstrap}"
topic = "erp.{{table}}"
format = "{fmt}"
create_topics = true
partitions = 4
delivery_timeout_seconds = 5

[health]
listen = "off"
""")
    return cfg


@pytest.mark.parametrize("fmt, writers, per_writer, kills", [
    ("cloudevents", 3, 2500, 3),
    ("cloudevents-binary", 3, 2500, 3),
    pytest.param("cloudevents", 4, 25_000, 8, marks=pytest.mark.slow, id="soak"),
])
def test_sigkills_lose_nothing_and_keep_each_subject_in_one_partition(pg_db, tansu, tmp_path, fmt, writers,
                                                                      per_writer, kills):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    cfg = _e2e_config(tmp_path, pg_db.dsn, tansu.bootstrap, fmt)
    r = cli("setup", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "created topic erp.items (4 partition(s))" in r.stdout
    expected = [defaultdict(list) for _ in range(writers)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(pg_db.dsn, w, per_writer, expected[w], errors, stop))
               for w in range(writers)]
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    rng = random.Random(3)
    try:
        for t in threads:
            t.start()
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
        total = writers * per_writer
        seen: set[str] = set()
        looked = [0]

        def all_there(got) -> bool:       # called after each message: look at the new ones only
            seen.update(_event_id(m) for m in got[looked[0]:])
            looked[0] = len(got)
            return len(seen) >= total
        msgs = tansu.consume(["erp.items"], until=all_there, timeout=max(120, total / 200))
        assert len(seen) >= total, f"the consumer got {len(seen)} of {total} events in time"
        wait_for(lambda: agent.children(), 15, what="the last agent to be up (it handles SIGTERM)")
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()
    events, partitions = [], defaultdict(set)
    for m in sorted(msgs, key=lambda m: (m.partition(), m.offset())):
        ev = _as_cloudevent(m, fmt)
        assert m.key().decode() == ev["subject"]
        assert dict(m.headers())["ce_id"].decode() == ev["id"]
        partitions[ev["subject"]].add(m.partition())
        events.append(ev)
    assert all(len(p) == 1 for p in partitions.values()), "a subject spread over partitions"
    # per partition in offset order, so each subject's messages are in the order the broker keeps them
    check_random_transactions(events, expected)
    assert not unexpected_tracebacks(agent.log()), agent.log()[-3000:]


def _event_id(m) -> str:
    return dict(m.headers())["ce_id"].decode()


def _as_cloudevent(m, fmt: str) -> dict:
    if fmt == "cloudevents":
        return orjson.loads(m.value())
    h = {k: v.decode() for k, v in m.headers()}
    ev = {k[3:]: v for k, v in h.items() if k.startswith("ce_")}
    ev["datacontenttype"] = h["content-type"]
    ev["data"] = orjson.loads(m.value())
    return ev


def test_bad_bootstrap_in_a_config_file_is_exit_2(tmp_path):
    cfg = _e2e_config(tmp_path, "postgresql://u@127.0.0.1/d", "broker-without-port", "cloudevents")
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"cdc-agent: config error: {cfg}: targets[0].bootstrap_servers: must be host:port[,host:port...], "
        "got 'broker-without-port'"]
    cfg.write_text(cfg.read_text().replace("broker-without-port", "127.0.0.1:9092").replace("{table}", "{tabel}"))
    r = cli("run", "-c", str(cfg))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "targets[0].topic: unknown placeholder {tabel}" in r.stderr


def test_parsing_a_broker_config_imports_no_broker_client(tmp_path):
    cfg = _e2e_config(tmp_path, "postgresql://u@127.0.0.1/d", "127.0.0.1:9092", "cloudevents-binary")
    cfg.write_text(cfg.read_text().replace("[health]", '''[[targets]]
name = "js"
kind = "nats"
url = "nats://127.0.0.1:4222"
subject = "erp.{type}"

[health]'''))
    code = (f"import sys; from agent import config; c = config.load({str(cfg)!r}); "
            "assert [t.kind for t in c.targets] == ['kafka', 'nats']; "
            "assert not {'confluent_kafka', 'nats'} & set(sys.modules), 'a broker client was imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
