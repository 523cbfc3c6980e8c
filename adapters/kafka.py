"""Kafka target (CONTRACT §7), on confluent-kafka (librdkafka).

Guarantees and how they are kept:
- Durable: the producer is idempotent with `acks=all`; a batch counts as delivered only when the delivery
  report of every message of it came back without error (`flush` waits for them, up to
  `delivery_timeout_seconds`; what is still outstanding then makes the batch TargetUnavailable).
- Order per subject: the message key is the event's subject (`partitionkey` in binary mode when present), so
  one subject always lands in one partition, and librdkafka's idempotent producer keeps per-partition order
  across its own retries (sequence numbers). `message.timeout.ms` is 0 (no limit): librdkafka never drops a
  queued message on its own, which would leave a gap the next batch could overtake. A batch that timed out
  stays queued in the producer; the worker's retry of the same batch waits for it instead of producing it
  a second time.
- The event id travels as the header `ce_id` in every format.
- A message the broker or client refuses for good (too large, an invalid topic name) is a per-event
  rejection (dead letter) and the rest of the batch counts as delivered. Tip: set the producer's
  `message.max.bytes` in `options` to the broker's limit, so an oversized event is refused by the client
  alone, before it is sent, instead of failing the broker request it travels in.
- Anything else (broker down, no leader, authorisation) is TargetUnavailable: retried with backoff, in health.

Formats: `cloudevents` (the structured event as the value, `content-type: application/cloudevents+json`),
`cloudevents-binary` (the CloudEvents Kafka protocol binding, binary mode: every attribute as a `ce_<name>`
header, `content-type` = datacontenttype, `data` as the value), `debezium` (the Debezium envelope as the value).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import TargetSettings
from agent.errors import TargetError, TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection, SpooledEvent
from agent.secrets import redact

from .envelope import STRUCTURED_CONTENT_TYPE, Destinations, Template, TemplateError, binary_parts

from agent.options import OptionError, option

if TYPE_CHECKING:
    from confluent_kafka import Producer

log = logging.getLogger(__name__)

HOST_PORT_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$")
PROPERTY_RE = re.compile(r"^[a-z][a-z0-9._]*$")
# librdkafka properties whose values are secrets: must be ${ENV} in the file, redacted everywhere
SECRET_PROPERTIES = r"password|secret|ssl\.key\.pem|sasl\.oauthbearer\.config|sasl\.jaas\.config"
# properties the target sets itself; a different value would break a guarantee
OWN_PROPERTIES = {
    "bootstrap.servers": "write it as bootstrap_servers",
    "metadata.broker.list": "write it as bootstrap_servers",
    "enable.idempotence": "the producer is always idempotent (per-partition order across retries)",
    "acks": "the producer always waits for all in-sync replicas (acks=all)",
    "request.required.acks": "the producer always waits for all in-sync replicas (acks=all)",
    "message.timeout.ms": "0 (no limit) so librdkafka never drops a message and leaves a gap; "
                          "delivery_timeout_seconds bounds how long a batch waits",
    "delivery.timeout.ms": "0 (no limit) so librdkafka never drops a message and leaves a gap; "
                           "delivery_timeout_seconds bounds how long a batch waits",
    "transactional.id": "the target does not use transactions",
    "retries": "librdkafka must retry (idempotence keeps the order)",
    "message.send.max.retries": "librdkafka must retry (idempotence keeps the order)",
}

STUCK_ATTEMPTS = 3      # a batch still unacknowledged after this many waits: start a fresh producer
CONTENT_TYPE_STRUCTURED = STRUCTURED_CONTENT_TYPE + "; charset=UTF-8"


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap_servers: str = option(help="host:port[,host:port...] of one or more brokers")
    topic: str = option(help="topic name, a template over {type}, {table}, {schema}, {agent}")
    options: dict[str, str] = option({}, secret_keys=SECRET_PROPERTIES,
                                     help="librdkafka producer properties (SASL, TLS, linger.ms, ...)")
    create_topics: bool = option(False, help="setup creates the topics the config can write to")
    partitions: int = option(1, above=0, help="partitions of a topic setup creates")
    replication_factor: int = option(-1, help="replicas of a topic setup creates (-1: the broker's default)")
    delivery_timeout_seconds: float = option(30.0, above=0,
                                             help="how long a batch waits for its delivery reports")

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap_servers.split(",")]
        for s in servers:
            m = HOST_PORT_RE.match(s)
            if not m or not 0 < int(m.group(1)) < 65536:
                raise OptionError("bootstrap_servers",
                                  f"must be host:port[,host:port...], got {redact(self.bootstrap_servers)!r}")
        try:
            Template.parse(self.topic)
        except TemplateError as e:
            raise OptionError("topic", str(e)) from None
        for k, v in self.options.items():
            if not PROPERTY_RE.match(k):
                raise OptionError(f"options.{k}", "is not a librdkafka property name (lower case, dotted)")
            if k in OWN_PROPERTIES:
                raise OptionError(f"options.{k}", f"is set by the target: {OWN_PROPERTIES[k]}")
            if k in ("max.in.flight.requests.per.connection", "max.in.flight"):
                if not v.isdigit() or not 1 <= int(v) <= 5:
                    raise OptionError(f"options.{k}", f"must be 1 to 5 for the idempotent producer, got {v!r}")
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise OptionError("replication_factor", "must be -1 (the broker's default) or 1 or more")


# ---------------------------------------------------------------- messages (pure)


@dataclass(slots=True)
class KafkaMessage:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]   # (the producer's parameter type; always bytes here)


def build_message(ev: SpooledEvent, fmt: str, topic: str) -> KafkaMessage:
    """The Kafka record for one event in `fmt` (the body as the worker passes it: structured CloudEvent for
    both cloudevents formats, the Debezium envelope for debezium)."""
    if fmt == "cloudevents-binary":
        parts = binary_parts(ev.body)
        headers: list[tuple[str, str | bytes | None]] = [
            ("ce_" + name, value.encode()) for name, value in parts.attributes.items()]
        headers.append(("content-type", parts.content_type.encode()))
        key = parts.attributes.get("partitionkey") or ev.subject
        return KafkaMessage(topic, key.encode(), parts.data, headers)
    content_type = "application/json" if fmt == "debezium" else CONTENT_TYPE_STRUCTURED
    return KafkaMessage(topic, ev.subject.encode(), ev.body,
                        [("ce_id", ev.id.encode()), ("content-type", content_type.encode())])


# ---------------------------------------------------------------- the target


def _error_codes():
    from confluent_kafka import KafkaError
    permanent = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE,
                 KafkaError.TOPIC_EXCEPTION, KafkaError.INVALID_MSG_SIZE, KafkaError._INVALID_ARG}
    return permanent


class _LibrdkafkaLog:
    """librdkafka's own log lines at debug level (with log_level = "debug" only: forwarding them costs)."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(redact(fmt % args if args else fmt))


class _Batch:
    """The delivery reports of one batch, filled in by librdkafka's callbacks during poll/flush."""

    def __init__(self, events: list[SpooledEvent]):
        self.ids = [e.id for e in events]
        self.errors: list[Any] = [None] * len(events)
        self.outstanding = 0
        self.waits = 0                        # how many send() calls waited for these reports in vain
        self.refused: dict[int, str] = {}     # index -> reason, refused by produce() itself

    def callback(self, i: int):
        self.outstanding += 1

        def on_delivery(err, _msg) -> None:
            self.errors[i] = err
            self.outstanding -= 1
        return on_delivery


class KafkaTarget:
    def __init__(self, settings: TargetSettings):
        self.name = settings.name
        self.format = settings.format
        self.opts: KafkaOptions = settings.options
        self.topics = Destinations(Template.parse(self.opts.topic))
        self.producer: Producer | None = None
        self._pending: _Batch | None = None    # a batch whose delivery reports did not all come back in time
        self._permanent: set = set()

    def config(self) -> dict[str, Any]:
        conf: dict[str, Any] = dict(self.opts.options)
        conf.update({
            "bootstrap.servers": self.opts.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 0,
            "client.id": f"cdc-agent-{self.name}",
            "logger": log
        })
        return conf

    def open(self) -> None:
        if self.producer is not None:
            return
        from confluent_kafka import KafkaException, Producer
        self._permanent = _error_codes()
        try:
            self.producer = Producer(self.config())
        except (KafkaException, ValueError, TypeError) as e:
            # an unknown or invalid librdkafka property: a person must fix the config; retried meanwhile
            raise TargetUnavailable(f"kafka {self.name}: cannot create the producer: {redact(str(e))}") from None

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        from confluent_kafka import KafkaException
        self.open()
        producer = self.producer
        assert producer is not None             # open() made it
        timeout = self.opts.delivery_timeout_seconds
        batch = self._pending
        if batch is not None and batch.ids != [e.id for e in events]:
            # another batch than the one still in flight: let that one finish first (its messages come
            # before these in every partition anyway)
            if producer.flush(timeout) > 0:
                raise TargetUnavailable(self._outstanding_message(len(producer), timeout))
            batch = None
        if batch is None:
            batch = _Batch(events)
            deadline = time.monotonic() + timeout
            for i, ev in enumerate(events):
                msg = build_message(ev, self.format, self.topics.render(ev.type, ev.body, self.format))
                while True:
                    try:
                        producer.produce(msg.topic, value=msg.value, key=msg.key, headers=msg.headers,
                                         on_delivery=batch.callback(i))
                        break
                    except BufferError:     # the local queue is full: serve delivery reports, then again
                        batch.outstanding -= 1
                        if time.monotonic() > deadline:
                            # only part of the batch is queued: the retry produces all of it again (the
                            # queued part goes first, so a subject's first copies stay in order)
                            self._pending = None
                            raise TargetUnavailable(f"kafka {self.name}: the producer queue stays full") from None
                        producer.poll(0.05)
                    except KafkaException as e:
                        batch.outstanding -= 1
                        err = e.args[0]
                        if err.code() in self._permanent:
                            batch.refused[i] = f"kafka refused the message: {err.name()}: {err.str()}"
                            break
                        raise TargetUnavailable(f"kafka {self.name}: {redact(err.str())}") from None
        self._pending = batch
        producer.flush(timeout)
        if batch.outstanding > 0:
            batch.waits += 1
            message = self._outstanding_message(batch.outstanding, timeout)
            if batch.waits >= STUCK_ATTEMPTS:
                # a producer whose messages stay unacknowledged while the broker answers (e.g. a broker that
                # lost its producer state) never recovers by itself; a new one sends the batch again, after
                # every message of the old one (the same ids: duplicates at worst, never a reordering)
                self._drop_producer()
                message += "; producer restarted"
            raise TargetUnavailable(message)
        self._pending = None
        return self._result(events, batch)

    def _outstanding_message(self, n: int, timeout: float) -> str:
        return (f"kafka {self.name}: {n} message(s) not acknowledged by {self.opts.bootstrap_servers} "
                f"within {timeout:g}s (broker down or unreachable?)")

    def _result(self, events: list[SpooledEvent], batch: _Batch) -> DeliveryResult:
        rejected = [Rejection(events[i].seq, reason) for i, reason in batch.refused.items()]
        for i, err in enumerate(batch.errors):
            if err is None or i in batch.refused:
                continue
            if err.fatal():
                # the idempotent producer cannot go on (e.g. a sequence it cannot repair): start a new one;
                # the whole batch is sent again (same ids)
                self._drop_producer()
                raise TargetUnavailable(f"kafka {self.name}: fatal producer error, producer restarted: "
                                        f"{redact(err.str())}")
            if err.code() in self._permanent:
                rejected.append(Rejection(events[i].seq, f"kafka refused the message: {err.name()}: {err.str()}"))
                continue
            raise TargetUnavailable(f"kafka {self.name}: {err.name()}: {redact(err.str())}")
        return DeliveryResult(rejected=rejected)

    def _drop_producer(self) -> None:
        producer, self.producer, self._pending = self.producer, None, None
        if producer is not None:
            try:
                producer.purge()
                producer.flush(0)
            except Exception:   # closing a broken producer: nothing in it counts as delivered anyway
                log.debug("kafka %s: purge failed", self.name, exc_info=True)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(min(5.0, self.opts.delivery_timeout_seconds))   # what is spooled stays spooled
            self._drop_producer()

    # ------------------------------------------------------------ setup

    def setup(self, origins: list[tuple[str, str, str, str]], dry_run: bool = False) -> list[str]:
        """Create the topics this target writes to (when `create_topics`): `origins` are the (type, agent,
        schema, table) the config can emit to it. Returns what was done, one line each."""
        if not self.opts.create_topics:
            return []
        template = self.topics.template
        topics = sorted({template.text.format(type=t, agent=a, schema=s, table=tb) for t, a, s, tb in origins})
        if dry_run:
            return [f"kafka {self.name}: would create topic {t} ({self.opts.partitions} partition(s))"
                    for t in topics]
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic
        conf = {k: v for k, v in self.config().items() if k not in ("enable.idempotence", "acks", "message.timeout.ms")}
        admin = AdminClient(conf)
        futures = admin.create_topics([NewTopic(t, num_partitions=self.opts.partitions,
                                                replication_factor=self.opts.replication_factor) for t in topics],
                                      request_timeout=self.opts.delivery_timeout_seconds)
        lines = []
        for topic, fut in futures.items():
            try:
                fut.result(timeout=self.opts.delivery_timeout_seconds)
                lines.append(f"kafka {self.name}: created topic {topic} ({self.opts.partitions} partition(s))")
            except KafkaException as e:
                err = e.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    lines.append(f"kafka {self.name}: topic {topic} exists")
                else:
                    raise TargetError(f"kafka {self.name}: cannot create topic {topic}: {redact(err.str())}") from None
        return lines


from . import TargetKind  # noqa: E402  (the package imports this module only after it is complete)

KIND = TargetKind(options=KafkaOptions, target=KafkaTarget, batch_size=500, binary_mode=True)
