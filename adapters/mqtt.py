"""MQTT target (CONTRACT §7), with paho-mqtt 2 speaking MQTT 5: each event one PUBLISH at QoS 1 to `topic`
(a template), the event id in the user property `ce_id`. A batch counts as delivered when every message of it
has its PUBACK with a success reason code.

How answers are classified:
- PUBACK reason >= 0x80 (0x80 unspecified, 0x83 implementation specific, 0x90 topic name invalid, 0x99 payload
  format invalid, 0x95 packet too large), a topic that renders empty or with a wildcard, a message larger than
  the broker's Maximum Packet Size (from its CONNACK: a broker disconnects a client that sends more, which
  looks like an outage, so it is checked before sending)                 → that event is rejected (dead letter)
- PUBACK 0x87 not authorized, 0x97 quota exceeded: about the client or a limit that passes, not the event:
  dead-lettering them would lose order                                                 → TargetUnavailable
- connection refused or lost, no PUBACK in `timeout_seconds`                           → TargetUnavailable
QoS 2 is not offered: paho 2 does not report the reason code of a PUBREC, so a refused QoS 2 message would look
delivered. QoS 1 with the id to deduplicate on gives the same outcome for a consumer.

The client id is `cdc-agent-<agent>-<target>` (two agents must not share one, a broker disconnects the older
session); the session is clean: the agent's spool, not the client, holds what is not yet acknowledged, and
paho's own reconnecting is off (the worker retries with backoff and reconnects). The agent's name is read from
the first event's source, so the connection is made by the first send.

`format = "cloudevents-binary"` follows the CloudEvents MQTT protocol binding (MQTT 5): `datacontenttype` as
the PUBLISH Content Type, every other attribute a user property under its own name, `data` as the payload.
Structured mode: Content Type `application/cloudevents+json`, the CloudEvent as the payload.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from adapters import TargetKind
from adapters._messages import destination, event_agent, message, parse_template, require_client
from agent.errors import TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection, SpooledEvent
from agent.options import OptionError, Url, option
from agent.secrets import redact

if TYPE_CHECKING:
    from agent.config import TargetSettings

RETRIABLE_REASONS = {0x87: "not authorized", 0x97: "quota exceeded"}
MAX_PACKET = 268_435_460          # MQTT's own limit when the broker announces none
MAX_INFLIGHT = 1000               # unacknowledged messages at most, whatever the broker allows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttOptions:
    url: Url = option(schemes=("mqtt", "mqtts"), help="mqtt://[user:${PASSWORD}@]host:1883 (mqtts: TLS, 8883)")
    topic: str = option(help="template over {type}, {table}, {schema}, {agent}; no + or # wildcards")
    qos: int = option(1, choices=(1,), help="1: every message acknowledged by a PUBACK")
    timeout_seconds: float = option(30.0, above=0, maximum=3600, help="connecting, and the PUBACKs of one batch")
    keepalive_seconds: int = option(60, minimum=5, maximum=65535)

    def __post_init__(self) -> None:
        template = parse_template("topic", self.topic)
        if "+" in self.topic or "#" in self.topic:
            raise OptionError("topic", f"{self.topic!r} has an MQTT wildcard (+ or #): a message is published "
                                       "to one topic, wildcards are for subscribing")
        del template


@dataclass(slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    content_type: str
    user_properties: list[tuple[str, str]]


def mqtt_message(event: SpooledEvent, fmt: str, topic) -> MqttMessage:
    """The PUBLISH of one event (pure; `topic` is the parsed Template)."""
    m = message(event, fmt)
    props = [("ce_id", event.id)] + list(m.attributes.items())
    return MqttMessage(destination(topic, event, m.source), m.body, m.content_type, props)


def topic_problem(topic: str) -> str | None:
    if not topic:
        return "the topic renders empty"
    if "+" in topic or "#" in topic or "\0" in topic:
        return f"the topic {topic!r} has a wildcard or NUL character"
    if len(topic.encode()) > 65535:
        return "the topic is longer than 65535 bytes"
    return None


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def packet_size_bound(m: MqttMessage) -> int:
    """At least the PUBLISH packet's size, cheaply (a UTF-8 character is at most 4 bytes): most messages are
    far below any Maximum Packet Size, and packing paho's properties twice costs a third of the send."""
    strings = len(m.topic) + len(m.content_type) + sum(len(k) + len(v) for k, v in m.user_properties)
    return 4 * strings + 5 * len(m.user_properties) + len(m.payload) + 32


def packet_size(topic: str, payload: bytes, properties: Any) -> int:
    """Bytes of the PUBLISH packet at QoS 1 (MQTT 5 §3.3): fixed header, topic, packet id, properties, payload."""
    remaining = 2 + len(topic.encode()) + 2 + len(properties.pack()) + len(payload)
    return 1 + _varint_len(remaining) + remaining


class MqttTarget:
    def __init__(self, settings: TargetSettings):
        opts: MqttOptions = settings.options
        self.name, self.format, self.opts = settings.name, settings.format, opts
        p = urlsplit(opts.url)
        self.host, self.tls = p.hostname or "", p.scheme == "mqtts"
        self.port = p.port or (8883 if self.tls else 1883)
        self.username = unquote(p.username) if p.username else None
        self.password = unquote(p.password) if p.password else None
        self.where = f"{p.scheme}://{self.host}:{self.port}"
        self.topic = parse_template("topic", opts.topic)
        self.client: Any = None
        self.client_id: str | None = None
        self.max_packet = MAX_PACKET
        self.inflight = 20                        # paho's default, and Mosquitto's Receive Maximum
        self._cond = threading.Condition()
        self._acks: dict[int, Any] = {}           # mid -> PUBACK reason code, for the batch in flight
        self._expected = 1 << 30                  # PUBACKs the sender waits for (set once the batch is out)
        self._connected = False
        self._lost: str | None = None             # why the connection ended, while a batch waits
        self._connack: Any = None

    # ------------------------------------------------------------------ paho callbacks (its network thread)

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            self._connack = (reason, properties)
            self._connected = not reason.is_failure
            self._cond.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        with self._cond:
            self._connected = False
            self._lost = f"connection lost: {reason}"
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _properties: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            if len(self._acks) >= self._expected:      # wake the sender once, when the batch may be complete
                self._cond.notify_all()

    # ------------------------------------------------------------------ Target

    def open(self) -> None:
        require_client("paho.mqtt.client", "mqtt", "paho-mqtt")
        return None        # connected by the first send: the client id needs the agent's name (see above)

    def _connect(self, agent: str, retried: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.close()
        self.client_id = f"cdc-agent-{agent}-{self.name}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             reconnect_on_failure=False)
        client.on_connect, client.on_disconnect, client.on_publish = \
            self._on_connect, self._on_disconnect, self._on_publish
        client.max_inflight_messages_set(self.inflight)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()
        self._connack, self._connected, self._lost = None, False, None
        try:
            client.connect(self.host, self.port, keepalive=self.opts.keepalive_seconds, clean_start=True)
        except (OSError, ValueError) as e:
            raise TargetUnavailable(f"cannot connect to {self.where}: {redact(str(e)) or type(e).__name__}") from None
        client.loop_start()
        self.client = client
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None or self._lost is not None, self.opts.timeout_seconds)
            connack, lost = self._connack, self._lost
        if connack is None or not self._connected:
            why = f"refused: {connack[0]}" if connack else (lost or f"no CONNACK in {self.opts.timeout_seconds:g}s")
            self.close()
            raise TargetUnavailable(f"cannot connect to {self.where}: {why}")
        props = connack[1]
        self.max_packet = getattr(props, "MaximumPacketSize", MAX_PACKET)
        # as many messages in flight as the broker's Receive Maximum allows (more is a protocol error); paho
        # takes the number only before connecting, so a broker announcing another one is connected to again
        receive_max = min(getattr(props, "ReceiveMaximum", 65535), MAX_INFLIGHT)
        if receive_max != self.inflight and not retried:
            self.inflight = receive_max
            self._connect(agent, retried=True)

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self.client is None or not self._connected:
            if self.client is not None:
                # lost between batches (no batch failed, so the worker logged nothing): say so once here
                log.warning("target %s: %s to %s; connecting again", self.name, self._lost or "connection lost",
                            self.where)
            self._connect(event_agent(events[0], self.format) or "agent")
        rejected: list[Rejection] = []
        mids: dict[int, int] = {}                   # mid -> seq
        with self._cond:
            self._acks.clear()
            self._expected = 1 << 30
        for ev in events:
            m = mqtt_message(ev, self.format, self.topic)
            problem = topic_problem(m.topic)
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = m.content_type
            props.UserProperty = m.user_properties
            if problem is None and packet_size_bound(m) > self.max_packet:
                size = packet_size(m.topic, m.payload, props)
                if size > self.max_packet:
                    problem = (f"the message is {size} bytes, more than the broker's maximum packet size "
                               f"({self.max_packet})")
            if problem is not None:
                rejected.append(Rejection(ev.seq, f"{problem} ({self.where})"))
                continue
            info = self.client.publish(m.topic, m.payload, qos=self.opts.qos, properties=props)
            if info.rc != 0:
                self.close()
                raise TargetUnavailable(f"publish to {self.where}: {self._lost or 'not connected'} (rc {info.rc})")
            mids[info.mid] = ev.seq
        deadline = time.monotonic() + self.opts.timeout_seconds
        with self._cond:
            self._expected = len(mids)
            done = self._cond.wait_for(
                lambda: self._lost is not None or all(mid in self._acks for mid in mids),
                max(0.0, deadline - time.monotonic()))
            acks, lost = dict(self._acks), self._lost
        if lost is not None or not done:
            missing = sum(1 for mid in mids if mid not in acks)
            self.close()
            raise TargetUnavailable(f"publish to {self.where}: {lost or 'timed out'}; "
                                    f"{missing} message(s) without PUBACK")
        for mid, seq in mids.items():
            reason = acks[mid]
            if reason.value >= 0x80:
                if reason.value in RETRIABLE_REASONS:
                    raise TargetUnavailable(f"publish to {self.where}: PUBACK {reason.value:#04x} {reason}")
                rejected.append(Rejection(seq, f"PUBACK {reason.value:#04x} {reason} from {self.where}"))
        return DeliveryResult(rejected)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.disconnect()
            client.loop_stop()
        except Exception:   # closing a broken connection: nothing left to save
            pass
        self._connected = False


KIND = TargetKind(options=MqttOptions, target=MqttTarget, batch_size=500, binary_mode=True)
