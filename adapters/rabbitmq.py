"""RabbitMQ target (CONTRACT §7), with pika: each event one persistent message (delivery_mode 2) published
`mandatory` to `exchange` with `routing_key` (a template), `message_id` = the event id, in publisher-confirm
mode. A batch counts as delivered when the broker has confirmed every message of it.

How answers are classified:
- Basic.Return (mandatory, no queue bound for the routing key) then Basic.Ack: that event is rejected
  (dead letter, the reply code and text as the reason); the rest of the batch is delivered
- Basic.Nack (the broker could not take it: an internal error, a full queue with x-overflow=reject-publish),
  a connection or channel closed (broker down, restarted, an exchange that does not exist: 404),
  no confirm in `timeout_seconds`                                                  → TargetUnavailable

Why pika's SelectConnection, driven from the worker's thread, and not BlockingConnection: BlockingChannel in
confirm mode waits for each message's confirm before publishing the next (pika 1.3 and 1.4), one round trip
and one broker fsync per event: about 370 events/s measured on this machine. Publishing the whole batch and
then waiting for every confirm needs the confirm callback, which only the asynchronous channel offers. The
worker calls open/send/close from one thread, so the I/O loop runs only inside those calls (no thread of our
own); heartbeats are therefore off by default (`?heartbeat=` in the url sets them), and a dead connection is
found by the socket error, or by the confirm timeout, and then reopened.

`format = "cloudevents-binary"` follows the CloudEvents AMQP protocol binding, carried in AMQP 0-9-1 terms:
the binding's application-properties become the message `headers`, each attribute as `cloudEvents_<name>`
(the current binding's preferred prefix; it also allows `cloudEvents:`, which older SDKs emit, and asks
receivers to read both), `datacontenttype` as `content_type`, `data` as the body.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from adapters import TargetKind
from adapters._messages import destination, message, parse_template, require_client
from agent.errors import TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection, SpooledEvent
from agent.options import Url, option
from agent.secrets import redact

if TYPE_CHECKING:
    from agent.config import TargetSettings

HEADER_PREFIX = "cloudEvents_"


@dataclass(frozen=True)
class RabbitmqOptions:
    url: Url = option(schemes=("amqp", "amqps"), help="amqp://user:${PASSWORD}@host:5672/vhost")
    exchange: str = option("", help='the exchange published to; "" is the default exchange (routing key = queue)')
    routing_key: str = option("{type}", help="template over {type}, {table}, {schema}, {agent}")
    timeout_seconds: float = option(30.0, above=0, maximum=3600,
                                    help="connecting, and waiting for the confirms of one batch")

    def __post_init__(self) -> None:
        parse_template("routing_key", self.routing_key)


@dataclass(slots=True)
class AmqpMessage:
    routing_key: str
    body: bytes
    content_type: str
    headers: dict[str, str]


def amqp_message(event: SpooledEvent, fmt: str, routing_key) -> AmqpMessage:
    """The message for one event (pure; `routing_key` is the parsed Template)."""
    m = message(event, fmt)
    headers = {HEADER_PREFIX + k: v for k, v in m.attributes.items()}
    return AmqpMessage(destination(routing_key, event, m.source), m.body, m.content_type, headers)


def _cause(err: Any) -> str:
    """The innermost readable reason of a pika error (they nest: connection error, workflow, socket error)."""
    while True:
        if getattr(err, "exceptions", None):            # a connection workflow: its last attempt
            inner = err.exceptions[-1]
        elif getattr(err, "exception", None) is not None:  # a failed phase: what failed in it
            inner = err.exception
        else:
            inner = err.args[0] if getattr(err, "args", None) else None
        if not isinstance(inner, BaseException):
            return redact(str(err)) or type(err).__name__
        err = inner


def safe_url(url: str) -> str:
    """The URL for messages: scheme, host, port and vhost; never the user's password or query."""
    p = urlsplit(url)
    host = f"{p.hostname}:{p.port}" if p.port else (p.hostname or "")
    return f"{p.scheme}://{host}{p.path or '/'}"


class RabbitmqTarget:
    def __init__(self, settings: TargetSettings):
        opts: RabbitmqOptions = settings.options
        self.name = settings.name
        self.format = settings.format
        self.url, self.exchange, self.timeout = opts.url, opts.exchange, opts.timeout_seconds
        self.where = safe_url(opts.url)
        self.routing_key = parse_template("routing_key", opts.routing_key)
        self.conn: Any = None           # pika.SelectConnection
        self.channel: Any = None
        self.closed_reason: str | None = None  # set when the connection or channel closes under us
        self._tag = 0                   # delivery tag of the last message published on this channel
        self._confirmed: dict[int, bool] = {}   # delivery tag -> acked (False: nacked), for the batch in flight
        self._returned: dict[str, str] = {}     # message_id -> why the broker returned it
        self._open_error: str | None = None
        self._batch_first = 1

    # ------------------------------------------------------------------ the I/O loop, run from our thread

    def _run_until(self, done: Callable[[], bool], timeout: float, conn: Any = None) -> bool:
        """Run pika's I/O loop until `done()` or the connection closes or `timeout` passes. True when done."""
        deadline = time.monotonic() + timeout
        loop = (conn or self.conn).ioloop
        while not done() and (self.closed_reason is None or conn is not None):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timer = loop.call_later(min(left, 0.05), loop.stop)
            try:
                loop.start()
            finally:
                loop.remove_timeout(timer)
        return done()

    def _closed(self, what: str, reason: Any) -> None:
        self.closed_reason = f"{what} closed: {_cause(reason)}"

    # ------------------------------------------------------------------ Target

    def open(self) -> None:
        require_client("pika", "rabbitmq", "pika")
        import pika

        # pika logs every failed connection attempt as an ERROR with its stack of causes; the worker logs the
        # outage once per retry already, in one line
        logging.getLogger("pika").setLevel(logging.CRITICAL)

        self.close()
        params = pika.URLParameters(self.url)
        if "heartbeat" not in parse_qs(urlsplit(self.url).query):
            params.heartbeat = 0            # the loop only runs inside send(): see the module docstring
        params.socket_timeout = params.stack_timeout = self.timeout
        params.blocked_connection_timeout = self.timeout   # a broker alarm blocking us too long: reconnect
        self.closed_reason = self._open_error = None
        ready: list[bool] = []

        def on_channel(channel: Any) -> None:
            self.channel = channel
            channel.add_on_close_callback(lambda _ch, reason: self._closed("channel", reason))
            channel.add_on_return_callback(self._on_return)
            channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: ready.append(True))

        def on_open_error(_conn: Any, err: Any) -> None:
            self._open_error = _cause(err)

        try:
            self.conn = pika.SelectConnection(
                params, on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
                on_open_error_callback=on_open_error,
                on_close_callback=lambda _conn, reason: self._closed("connection", reason))
            self._run_until(lambda: bool(ready) or self._open_error is not None, self.timeout)
            ok = bool(ready) and self._open_error is None and self.closed_reason is None
        except Exception as e:   # pika raises a zoo of exceptions while connecting; each means "not reachable"
            self.close()
            raise TargetUnavailable(f"cannot connect to {self.where}: {redact(str(e)) or type(e).__name__}") from None
        if not ok:
            why = self._open_error or self.closed_reason or f"no answer in {self.timeout:g}s"
            self.close()
            raise TargetUnavailable(f"cannot connect to {self.where}: {why}")
        self._tag = 0
        return None

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        import pika

        if self.conn is None or self.closed_reason is not None:
            self.open()
        self._confirmed.clear()
        self._returned.clear()
        first = self._batch_first = self._tag + 1
        ids: dict[str, int] = {}
        try:
            for ev in events:
                m = amqp_message(ev, self.format, self.routing_key)
                props = pika.BasicProperties(
                    delivery_mode=2, message_id=ev.id, content_type=m.content_type, type=ev.type,
                    timestamp=int(ev.commit_ts), app_id="cdc-agent", headers=m.headers or None)
                self.channel.basic_publish(self.exchange, m.routing_key, m.body, props, mandatory=True)
                self._tag += 1
                ids[ev.id] = ev.seq
            last = self._tag
            done = self._run_until(lambda: len(self._confirmed) >= last - first + 1, self.timeout)
        except Exception as e:       # a closed connection or channel raises from basic_publish
            why = self.closed_reason or redact(str(e)) or type(e).__name__
            self.close()
            raise TargetUnavailable(f"publish to {self.where}: {why}") from None
        if not done:
            why = self.closed_reason or f"the broker did not confirm {last - first + 1 - len(self._confirmed)} " \
                                        f"message(s) in {self.timeout:g}s"
            self.close()            # the channel's state is unknown: start afresh
            raise TargetUnavailable(f"publish to {self.where}: {why}")
        nacked = [t for t, ok in self._confirmed.items() if not ok]
        if nacked:
            raise TargetUnavailable(f"publish to {self.where}: the broker refused {len(nacked)} message(s) "
                                    "(basic.nack: an internal error or a full queue with reject-publish)")
        return DeliveryResult([Rejection(ids[mid], why) for mid, why in self._returned.items() if mid in ids])

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = type(method).__name__ == "Ack"
        # `multiple`: every message up to this tag; only the batch in flight can be unconfirmed
        start = self._batch_first if method.multiple else method.delivery_tag
        for t in range(start, method.delivery_tag + 1):
            self._confirmed.setdefault(t, ok)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self._returned[properties.message_id] = (
            f"returned by {self.where}: {method.reply_code} {method.reply_text} "
            f"(exchange {method.exchange!r}, routing key {method.routing_key!r}: no queue is bound for it)")

    def close(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        if conn is None:
            return
        try:
            if not (conn.is_closed or conn.is_closing):
                conn.close()
            self._run_until(lambda: conn.is_closed, 2.0, conn)
        except Exception:   # closing a broken connection: nothing left to save
            pass
        finally:
            conn.ioloop.close()      # each connection has its own poller (an epoll fd and a socket pair)

# a batch costs one confirm round trip, which waits for the broker's fsync: 2000 per batch delivered 1.6x
# the events/s of 500 on this machine; fewer are spooled at low rates anyway
KIND = TargetKind(options=RabbitmqOptions, target=RabbitmqTarget, batch_size=2000, binary_mode=True)
