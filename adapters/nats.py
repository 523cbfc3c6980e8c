"""NATS JetStream target (CONTRACT §7), on nats-py.

Guarantees and how they are kept:
- Durable: every message is a JetStream publish, and counts only when the stream acknowledged it (PubAck:
  stored, with the stream's own replication and storage). A `duplicate` PubAck counts as delivered: the stream
  has the message already.
- The event id is the `Nats-Msg-Id` header: within the stream's duplicate window the server drops a
  redelivered event (after an agent crash, a retried batch), so consumers see each event once. Past the
  window a redelivery is stored again, with the same id (consumers deduplicate on it).
- Order per subject: a batch is published in waves. A wave holds at most one event per (event) subject, and
  its publishes are in flight together; the next wave starts only when every PubAck of this one is in. So
  no event is sent before the previous event of its subject was acknowledged: a message lost in a reconnect
  can never be overtaken by a later event of the same subject (which no retry could undo), while a batch of
  distinct subjects still travels pipelined. A failure ends the batch; the retry sends it again and the
  duplicate window drops what was stored.
- No stream captures the subject: the publish gets "no responders". That is TargetUnavailable, not a dead
  letter: the stream may be created later (by `setup` with `create_stream = true`, or by its owner), and
  then everything goes on in order; health says which subject has no stream.
- A message the server refuses for good (larger than the server's `max_payload` or the stream's
  `max_msg_size`, a subject that is not a valid NATS subject) is a per-event rejection (dead letter).
- Server down or unreachable, an ack that does not come in `ack_timeout_seconds`: TargetUnavailable.

nats-py is asyncio: the target runs one event loop in a thread of its own, started in open() and stopped in
close(); send() hands it a coroutine and waits for the result.

Formats: `cloudevents` (the structured event, header `Content-Type: application/cloudevents+json`),
`cloudevents-binary` (the CloudEvents NATS protocol binding, binary mode: every attribute as a `ce-<name>`
header, percent-encoded as the binding says, `data` as the payload), `debezium` (the Debezium envelope).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import TargetSettings
from agent.errors import TargetError, TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection, SpooledEvent
from agent.options import ConfigPath, OptionError, Secret, Url, option
from agent.secrets import redact

from .envelope import STRUCTURED_CONTENT_TYPE, Destinations, Template, TemplateError, binary_parts

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)

# a NATS subject: dot-separated tokens of printable characters, no whitespace, no wildcards when publishing
SUBJECT_RE = re.compile(r"^[^\s.*>]+(\.[^\s.*>]+)*$")
STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_WAVE = 256          # publishes in flight together at most


@dataclass(frozen=True)
class NatsOptions:
    url: Url = option(schemes=("nats", "tls"), help="nats://[user:${PASSWORD}@]host:port of the server")
    subject: str = option(help="subject to publish to, a template over {type}, {table}, {schema}, {agent}")
    token: Secret | None = option(None, help="an auth token, written ${ENV}")
    creds_file: ConfigPath | None = option(None, help="a NATS credentials file (JWT and NKey seed)")
    stream: str | None = option(None, help="the JetStream stream that must capture the subjects")
    create_stream: bool = option(False, help="setup creates `stream` (file storage) for the subjects")
    stream_subjects: tuple[str, ...] = option((), help="subjects of the stream setup creates (default: "
                                                       "every subject the config can publish to)")
    duplicate_window_seconds: float = option(600.0, above=0, help="the created stream's duplicate window")
    ack_timeout_seconds: float = option(10.0, above=0, help="how long one publish waits for its PubAck")

    def __post_init__(self) -> None:
        try:
            template = Template.parse(self.subject)
        except TemplateError as e:
            raise OptionError("subject", str(e)) from None
        sample = template.text.format(type="t", table="t", schema="t", agent="t")
        if not SUBJECT_RE.match(sample):
            raise OptionError("subject", f"is not a NATS subject to publish to (no spaces, no * or >, no empty "
                                         f"tokens), got {self.subject!r}")
        if self.stream is not None and not STREAM_NAME_RE.match(self.stream):
            raise OptionError("stream", f"must be a stream name ([A-Za-z0-9_-]+), got {self.stream!r}")
        if self.create_stream and self.stream is None:
            raise OptionError("create_stream", "needs `stream`, the name of the stream to create")
        for s in self.stream_subjects:
            if not re.fullmatch(r"[^\s.]+(\.[^\s.]+)*", s):
                raise OptionError("stream_subjects", f"{s!r} is not a NATS subject")


# ---------------------------------------------------------------- messages (pure)


@dataclass(slots=True)
class NatsMessage:
    subject: str
    payload: bytes
    headers: dict[str, str]


def percent_encode(value: str) -> str:
    """A header value as the CloudEvents NATS binding wants it: space, double quote, percent and anything
    outside printable ASCII as %XX of its UTF-8 bytes (upper-case hex)."""
    out = []
    for ch in value:
        if "!" <= ch <= "~" and ch not in '"%':
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def build_message(ev: SpooledEvent, fmt: str, subject: str) -> NatsMessage:
    """The NATS message for one event in `fmt` (the body as the worker passes it)."""
    if fmt == "cloudevents-binary":
        parts = binary_parts(ev.body)
        headers = {"ce-" + name: percent_encode(value) for name, value in parts.attributes.items()}
        headers["ce-datacontenttype"] = percent_encode(parts.content_type)
        headers["Nats-Msg-Id"] = ev.id
        return NatsMessage(subject, parts.data, headers)
    content_type = "application/json" if fmt == "debezium" else STRUCTURED_CONTENT_TYPE
    return NatsMessage(subject, ev.body, {"Nats-Msg-Id": ev.id, "Content-Type": content_type})


# ---------------------------------------------------------------- the target


class NatsTarget:
    def __init__(self, settings: TargetSettings):
        self.name = settings.name
        self.format = settings.format
        self.opts: NatsOptions = settings.options
        self.subjects = Destinations(Template.parse(self.opts.subject))
        self.where = _safe_url(self.opts.url)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None

    # the event loop thread: everything nats-py does runs there

    def _run(self, coro, timeout: float) -> Any:
        assert self.loop is not None            # open() started it
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise TargetUnavailable(f"nats {self.name}: {self.where} did not answer within {timeout:g}s") from None

    def open(self) -> None:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name=f"nats-{self.name}", daemon=True)
            self.thread.start()
        if self.nc is None or self.nc.is_closed:
            self._run(self._connect(), self.opts.ack_timeout_seconds + 5)

    async def _connect(self) -> None:
        import nats
        from nats.errors import Error as NatsError

        async def on_error(e: Exception) -> None:
            log.debug("nats %s: %s", self.name, redact(str(e)))

        kw: dict[str, Any] = {}
        if self.opts.token:
            kw["token"] = self.opts.token
        if self.opts.creds_file:
            kw["user_credentials"] = str(self.opts.creds_file)
        try:
            self.nc = await nats.connect(servers=[self.opts.url], name=f"cdc-agent-{self.name}",
                                         connect_timeout=min(self.opts.ack_timeout_seconds, 5.0),
                                         allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                         error_cb=on_error, **kw)
        except (TimeoutError, NatsError, OSError) as e:
            self.nc = None
            raise TargetUnavailable(f"nats {self.name}: cannot connect to {self.where}: "
                                    f"{redact(str(e)) or type(e).__name__}") from None
        self.js = self.nc.jetstream(timeout=self.opts.ack_timeout_seconds)

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        self.open()
        msgs = [build_message(e, self.format, self.subjects.render(e.type, e.body, self.format)) for e in events]
        # one wait for the whole batch: each publish has its own ack timeout inside
        return self._run(self._publish(events, msgs), self.opts.ack_timeout_seconds * (len(events) + 1) + 5)

    async def _publish(self, events: list[SpooledEvent], msgs: list[NatsMessage]) -> DeliveryResult:
        """Publish in waves: a wave holds at most one event per subject, its publishes in flight together;
        the next wave starts when every PubAck of this one is in. Within a wave the order does not matter
        (no two events of one subject), and a failure stops the batch before any later event of a subject
        that has one in the failed wave was sent."""
        rejected: list[Rejection] = []
        sendable: list[tuple[SpooledEvent, NatsMessage]] = []
        assert self.nc is not None              # open() connected
        max_payload = self.nc.max_payload
        for ev, msg in zip(events, msgs):
            reason = _refusal(msg, max_payload)
            if reason is None:
                sendable.append((ev, msg))
            else:
                rejected.append(Rejection(ev.seq, reason))
        for wave in waves([ev.subject for ev, _ in sendable]):
            await self._wave([sendable[i] for i in wave], rejected)
        return DeliveryResult(rejected=rejected)

    async def _wave(self, wave: list[tuple[SpooledEvent, NatsMessage]], rejected: list[Rejection]) -> None:
        timeout = self.opts.ack_timeout_seconds
        js = self.js
        assert js is not None                   # open() connected
        results = await asyncio.gather(
            *(js.publish(m.subject, m.payload, timeout=timeout, stream=self.opts.stream, headers=m.headers)
              for _, m in wave), return_exceptions=True)
        failure: TargetUnavailable | None = None
        for (ev, msg), r in zip(wave, results):
            if not isinstance(r, BaseException):
                continue                  # a PubAck; `duplicate` ones too: the stream has the message
            outcome = self._classify(r, msg)
            if isinstance(outcome, str):
                rejected.append(Rejection(ev.seq, outcome))
            elif failure is None:
                failure = outcome
        if failure is not None:
            raise failure

    def _classify(self, e: BaseException, msg: NatsMessage) -> str | TargetUnavailable:
        """A publish error as a rejection reason (this message, for good) or TargetUnavailable."""
        from nats.errors import Error as NatsError
        from nats.errors import MaxPayloadError, NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import APIError, NoStreamResponseError
        if isinstance(e, MaxPayloadError):
            return f"nats: {redact(str(e)) or 'message over max_payload'}"
        if isinstance(e, (NoRespondersError, NoStreamResponseError)):
            return TargetUnavailable(
                f"nats {self.name}: no stream captures subject {msg.subject} on {self.where} (no responders); "
                f"create the stream, or set create_stream = true and run setup")
        if isinstance(e, (NatsTimeout, asyncio.TimeoutError)):
            return TargetUnavailable(f"nats {self.name}: no PubAck from {self.where} within "
                                     f"{self.opts.ack_timeout_seconds:g}s for subject {msg.subject}")
        if isinstance(e, APIError):
            if e.code in (400, 413) and e.err_code != 10060:      # 10060: the subject is in another stream
                return f"nats refused the message: {e.description} (code {e.code}, err_code {e.err_code})"
            return TargetUnavailable(f"nats {self.name}: {e.description} (code {e.code}, err_code {e.err_code}) "
                                     f"for subject {msg.subject}")
        if isinstance(e, (NatsError, OSError)):       # connection closed, draining, reconnecting, ...
            return TargetUnavailable(f"nats {self.name}: {redact(str(e)) or type(e).__name__}")
        raise e       # anything else is a bug: the worker logs it with its traceback

    def close(self) -> None:
        if self.loop is None:
            return
        try:
            if self.nc is not None and not self.nc.is_closed:
                asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(5)
        except Exception:    # closing a connection that is already broken: nothing in it counts anyway
            log.debug("nats %s: close failed", self.name, exc_info=True)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self.thread is not None:
                self.thread.join(5)
            self.loop.close()
            self.loop = self.thread = self.nc = self.js = None

    # ------------------------------------------------------------ setup

    def setup(self, origins: list[tuple[str, str, str, str]], dry_run: bool = False) -> list[str]:
        """Create `stream` with file storage and the duplicate window (when `create_stream`): its subjects are
        `stream_subjects`, or every subject the config can publish to (`origins`: (type, agent, schema, table))."""
        if not self.opts.create_stream:
            return []
        template = self.subjects.template
        subjects = list(self.opts.stream_subjects) or sorted(
            {template.text.format(type=t, agent=a, schema=s, table=tb) for t, a, s, tb in origins})
        what = (f"stream {self.opts.stream} (file storage, duplicate window {self.opts.duplicate_window_seconds:g}s, "
                f"subjects {', '.join(subjects)})")
        if dry_run:
            return [f"nats {self.name}: would create {what}"]
        self.open()
        try:
            return [self._run(self._create_stream(subjects, what), self.opts.ack_timeout_seconds * 3)]
        finally:
            self.close()

    async def _create_stream(self, subjects: list[str], what: str) -> str:
        from nats.js.api import StorageType
        from nats.js.errors import APIError, NotFoundError
        js, stream = self.js, self.opts.stream
        assert js is not None                   # open() connected
        assert stream is not None               # create_stream needs `stream` (checked with the options)
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            info = None
        if info is not None:
            missing = [s for s in subjects if s not in (info.config.subjects or [])]
            note = f"; it does not list {', '.join(missing)}: check that its wildcards capture them" if missing else ""
            return f"nats {self.name}: stream {self.opts.stream} exists{note}"
        try:
            await js.add_stream(name=self.opts.stream, subjects=subjects, storage=StorageType.FILE,
                                     duplicate_window=self.opts.duplicate_window_seconds)
        except APIError as e:
            raise TargetError(f"nats {self.name}: cannot create stream {self.opts.stream}: {e.description}") from None
        return f"nats {self.name}: created {what}"


def waves(subjects: list[str], limit: int = MAX_WAVE) -> list[list[int]]:
    """Indexes of a batch cut, in order, into runs that hold no subject twice (and at most `limit`)."""
    out: list[list[int]] = []
    current: list[int] = []
    seen: set[str] = set()
    for i, subject in enumerate(subjects):
        if subject in seen or len(current) >= limit:
            out.append(current)
            current, seen = [], set()
        current.append(i)
        seen.add(subject)
    if current:
        out.append(current)
    return out


def _refusal(msg: NatsMessage, max_payload: int) -> str | None:
    """Why the server would refuse this message for good, checked before sending."""
    if not SUBJECT_RE.match(msg.subject):
        return f"nats: {msg.subject!r} is not a valid NATS subject"
    size = len(msg.payload) + sum(len(k) + len(v) + 4 for k, v in msg.headers.items()) + 12
    if size > max_payload:
        return f"nats: message of about {size} bytes is over the server's max_payload of {max_payload} bytes"
    return None


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}:{p.port or 4222}"


from . import TargetKind  # noqa: E402  (the package imports this module only after it is complete)

KIND = TargetKind(options=NatsOptions, target=NatsTarget, batch_size=100, binary_mode=True)
