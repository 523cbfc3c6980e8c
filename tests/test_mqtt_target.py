"""The mqtt target: PUBLISH building (pure), delivery against the machine's Mosquitto (QoS 1, PUBACK awaited,
user property ce_id, the binary binding), an oversized message against a private Mosquitto with a small
max_packet_size, bad configs, and the end-to-end crash test against a private Mosquitto with persistence
restarted mid-stream, consumed by a paho subscriber with a persistent session."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest

from adapters.envelope import Template
from adapters.mqtt import MqttTarget, mqtt_message, packet_size, packet_size_bound
from agent.errors import TargetUnavailable
from tests.agentproc import wait_for
from tests.brokers_b_support import check_bad_config, crash_workload, event, settings


def test_structured_publish_carries_ce_id():
    ev = event(1)
    m = mqtt_message(ev, "cloudevents", Template.parse("erp/{schema}/{table}"))
    assert m.topic == "erp/public/customers" and m.payload == ev.body
    assert m.content_type == "application/cloudevents+json" and m.user_properties == [("ce_id", ev.id)]


def test_binary_publish_follows_the_mqtt_binding():
    ev = event(2)
    m = mqtt_message(ev, "cloudevents-binary", Template.parse("{type}"))
    props = dict(m.user_properties)
    assert m.topic == "customer.updated" and m.content_type == "application/json"
    assert props["ce_id"] == ev.id and props["id"] == ev.id and props["specversion"] == "1.0"
    assert props["source"] == "cdc-agent://erp/public.customers" and "datacontenttype" not in props
    assert orjson.loads(m.payload) == orjson.loads(ev.body)["data"]


def test_packet_size_is_what_goes_on_the_wire():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("ce_id", "abc")]
    # fixed header 2, topic 2+3, packet id 2, properties (1 length + 1 id + 2+5 + 2+3), payload 100
    assert packet_size("a/b", b"x" * 100, props) == 2 + 5 + 2 + 14 + 100
    m = mqtt_message(event(1), "cloudevents-binary", Template.parse("ä/{table}"))
    full = Properties(PacketTypes.PUBLISH)
    full.ContentType, full.UserProperty = m.content_type, m.user_properties
    assert packet_size_bound(m) >= packet_size(m.topic, m.payload, full)


class Subscriber:
    """A paho subscriber: QoS 1, MQTT 5, reconnecting by itself; `persistent`: its session (clean_start False,
    one hour expiry) outlives a connection, so a broker with persistence keeps what arrives while it is away."""

    def __init__(self, url: str, topic: str, client_id: str | None = None, persistent: bool = False):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.messages: list = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        host, port = url.split("://", 1)[1].split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "sub-" + uuid.uuid4().hex[:8],
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_message = self._on_message
        # subscribed once: after a broker restart the persisted session must still hold the subscription
        self.client.on_connect = lambda c, u, flags, rc, p: None if flags.session_present else c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect(host, int(port), clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "not subscribed"

    def _on_message(self, _c, _u, msg):
        with self.lock:
            self.messages.append(msg)

    def got(self) -> list:
        with self.lock:
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_a_batch_is_acknowledged_in_order_with_ce_id(machine_mosquitto):
    topic = "cdc-test/" + uuid.uuid4().hex[:8]
    sub = Subscriber(machine_mosquitto, topic + "/#")
    target = MqttTarget(settings("mqtt", url=machine_mosquitto, topic=topic + "/{table}"))
    batch = [event(i, subject=str(i % 4)) for i in range(1, 301)]
    try:
        target.open()
        assert target.send(batch).rejected == []
        assert target.client_id == "cdc-agent-erp-bus"
        wait_for(lambda: len(sub.got()) >= 300, 20, what="300 messages")
    finally:
        target.close()
        sub.close()
    got = sub.got()
    assert [m.payload for m in got] == [e.body for e in batch]
    assert all(m.topic == topic + "/customers" and m.qos == 1 for m in got)
    assert [dict(m.properties.UserProperty)["ce_id"] for m in got] == [e.id for e in batch]
    assert got[0].properties.ContentType == "application/cloudevents+json"


def test_binary_mode_puts_attributes_in_user_properties(machine_mosquitto):
    topic = "cdc-test/" + uuid.uuid4().hex[:8]
    sub = Subscriber(machine_mosquitto, topic)
    target = MqttTarget(settings("mqtt", "cloudevents-binary", url=machine_mosquitto, topic=topic))
    ev = event(5)
    try:
        assert target.send([ev]).rejected == []
        [msg] = wait_for(lambda: sub.got(), 10, what="the message")
    finally:
        target.close()
        sub.close()
    props = dict(msg.properties.UserProperty)
    assert props["id"] == props["ce_id"] == ev.id and props["type"] == "customer.updated"
    assert msg.properties.ContentType == "application/json"
    assert orjson.loads(msg.payload) == orjson.loads(ev.body)["data"]


def test_an_oversized_message_is_rejected_and_the_rest_delivered(make_mosquitto_server):
    """The broker's Maximum Packet Size (CONNACK): a larger PUBLISH would get the client disconnected, so the
    target refuses that one event (dead letter) and sends the others."""
    server = make_mosquitto_server(max_packet_size="4000")
    sub = Subscriber(server.url, "big/#")
    target = MqttTarget(settings("mqtt", url=server.url, topic="big/{table}"))
    batch = [event(1), event(2, pad=5000), event(3)]
    try:
        result = target.send(batch)
        assert [r.seq for r in result.rejected] == [2]
        assert "maximum packet size (4000)" in result.rejected[0].reason
        wait_for(lambda: len(sub.got()) >= 2, 10, what="the two other messages")
        time.sleep(0.3)
    finally:
        target.close()
        sub.close()
    assert [m.payload for m in sub.got()] == [batch[0].body, batch[2].body]


def test_a_broker_that_is_down_is_unavailable(make_mosquitto_server):
    server = make_mosquitto_server()
    target = MqttTarget(settings("mqtt", url=server.url, topic="t", timeout_seconds=3))
    try:
        assert target.send([event(1)]).rejected == []
        server.stop()
        with pytest.raises(TargetUnavailable):
            target.send([event(2)])
        with pytest.raises(TargetUnavailable, match="cannot connect"):
            target.send([event(3)])
        server.start()
        assert target.send([event(4)]).rejected == []
    finally:
        target.close()


def test_a_connection_lost_between_batches_is_made_again_and_said(make_mosquitto_server, caplog):
    """The broker restarts while no batch is in flight: no send fails, so the worker logs nothing; the target
    says it connects again, and the next batch is delivered through the new connection."""
    server = make_mosquitto_server()
    target = MqttTarget(settings("mqtt", url=server.url, topic="again/{table}", timeout_seconds=5))
    try:
        assert target.send([event(1)]).rejected == []
        server.restart()
        wait_for(lambda: not target._connected, 10, what="the target to see the connection end")
        sub = Subscriber(server.url, "again/#")
        try:
            with caplog.at_level("WARNING", logger="adapters.mqtt"):
                assert target.send([event(2)]).rejected == []
            wait_for(lambda: sub.got(), 10, what="the batch after the restart")
        finally:
            sub.close()
    finally:
        target.close()
    said = [r.getMessage() for r in caplog.records if "connecting again" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"target {target.name}: connection lost"), said


@pytest.mark.parametrize("toml,key,words", [
    ('name = "bus"\nkind = "mqtt"\nurl = "tcp://h:1883"\ntopic = "x"', "targets[0].url", "mqtt:// or mqtts://"),
    ('name = "bus"\nkind = "mqtt"\nurl = "mqtt://h:1883"\ntopic = "erp/+/{table}"', "targets[0].topic", "wildcard"),
    ('name = "bus"\nkind = "mqtt"\nurl = "mqtt://h:1883"\ntopic = "erp/#"', "targets[0].topic", "wildcard"),
    ('name = "bus"\nkind = "mqtt"\nurl = "mqtt://h:1883"\ntopic = "erp/{kind}"', "targets[0].topic",
     "unknown placeholder {kind}"),
    ('name = "bus"\nkind = "mqtt"\nurl = "mqtt://h:1883"\ntopic = "x"\nqos = 2', "targets[0].qos", "must be one of 1"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, toml, key, words):
    check_bad_config(tmp_path, toml, key, words)


def test_crash_safe_delivery_through_a_broker_restart(pg_db, tmp_path, make_mosquitto_server):
    """Concurrent PostgreSQL writers; the agent SIGKILLed 3 times; the private Mosquitto (persistence on)
    stopped and started again mid-stream. A subscriber with a persistent QoS 1 session, there before the
    workload, receives every change, each subject in order, repeats only with the same id and content."""
    server = make_mosquitto_server()
    sub = Subscriber(server.url, "erp-test/#", client_id="e2e-consumer", persistent=True)

    def received() -> list[dict]:
        out = []
        for m in sub.got():
            ev = orjson.loads(m.payload)
            assert dict(m.properties.UserProperty)["ce_id"] == ev["id"] and m.topic == "erp-test/public/items"
            out.append(ev)
        return out

    def restart() -> None:
        wait_for(lambda: sub.got(), 30, what="the agent's first deliveries")      # mid-stream
        server.restart()
        # before the next kill: the agent must have felt the restart (a publish that failed and was retried, or
        # a connection lost between batches and made again); a kill right after the restart could otherwise come
        # before its next publish, or take the line with it (seen once under pytest-xdist's load)
        agent_log = tmp_path / "agent.log"
        wait_for(lambda: "target bus: " in agent_log.read_text(errors="replace"), 30,
                 what="the agent to log the broken connection to the restarted broker")

    try:
        log = crash_workload(pg_db, tmp_path, f"""name = "bus"
kind = "mqtt"
url = "{server.url}"
topic = "{{agent}}/{{schema}}/{{table}}"
timeout_seconds = 10""", received, restart)
    finally:
        sub.close()
    assert "target bus: " in log      # the restart broke the agent's connection, and it delivered again


def test_a_refused_login_is_unavailable_without_the_password(make_mosquitto_server, monkeypatch, tmp_path):
    from tests.plugins.leaks import secret
    server = make_mosquitto_server(allow_anonymous="false")
    monkeypatch.setenv("BB_MQTT_PW", secret("not-the-pw-9876"))
    target = MqttTarget(settings("mqtt", url=f"mqtt://cdc:${{BB_MQTT_PW}}@127.0.0.1:{server.port}", topic="t",
                                 timeout_seconds=5))
    try:
        with pytest.raises(TargetUnavailable, match="refused") as ei:
            target.send([event(1)])
    finally:
        target.close()
    assert "not-the-pw-9876" not in str(ei.value)
