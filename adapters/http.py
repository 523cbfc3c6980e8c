"""HTTP webhook target (CONTRACT §7): one POST per batch, the body a JSON array of the events,
`Content-Type: application/cloudevents-batch+json` (`application/json` with `format = "debezium"`); any 2xx
accepts the whole batch.

How answers are classified (the worker retries `TargetUnavailable` with backoff, and splits a batch on
`TargetRejected` until the rejected event is alone, which then goes to dead letters):
- connection refused/reset, timeouts, 408, 429, 5xx             → TargetUnavailable (Retry-After honoured)
- 401, 403, 404, 405, 407, and 3xx (we do not follow redirects) → TargetUnavailable: these say the *endpoint*
  is wrong or refuses us (bad token, wrong URL), not that an event is bad; dead-lettering every event for
  them would scramble per-subject order, so the spool holds the backlog until the receiver is fixed
- any other 4xx (400, 409, 413, 422, ...)                       → TargetRejected with the status and the
  start of the response body (secrets removed)

Standard Webhooks signing (https://www.standardwebhooks.com) when `signing_secret` is set:
  webhook-id        the event id for a batch of one, else "batch_" + a digest of the batch's event ids, so a
                    retried request carries the same id and a receiver can deduplicate on it
  webhook-timestamp unix seconds at sending (each retry is signed afresh)
  webhook-signature "v1," + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))
The key: a secret written as "whsec_<base64>" (what Standard Webhooks libraries generate) is the base64-decoded
bytes after the prefix; any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from adapters import TargetKind, preflight
from agent.changes import CheckItem
from agent.errors import TargetError, TargetRejected, TargetUnavailable
from agent.interfaces import DeliveryResult, SpooledEvent
from agent.options import OptionError, Secret, Url, option
from agent.secrets import redact, signing_key

if TYPE_CHECKING:
    from agent.config import TargetSettings

CONTENT_TYPE = "application/cloudevents-batch+json"
PLAIN_JSON = "application/json"           # format = "debezium": a JSON array of Debezium envelopes, not CloudEvents
BODY_EXCERPT = 300                        # characters of a rejecting response kept in the dead letter
RETRIABLE_STATUS = {408, 425, 429}        # plus every 5xx
ENDPOINT_STATUS = {401, 403, 404, 405, 407}   # the endpoint refuses us: retry, never dead-letter events
SECRET_HEADERS = r"(?i)authorization|token|secret|key|password|cookie"   # such header values are secrets
CHECK_CONNECT_SECONDS = 5.0               # `cdc-agent check`: how long a connection to the receiver may take


@dataclass(frozen=True)
class HttpOptions:
    # no user:password@: it would travel as Basic auth and show up in proxies' logs; a header is the place
    url: Url = option(schemes=("http", "https"), userinfo=False, help="where each batch is POSTed")
    headers: dict[str, str] = option({}, secret_keys=SECRET_HEADERS, http_headers=True,
                                     help="added to every request; secret-looking ones must be ${ENV}")
    signing_secret: Secret | None = option(None, help="Standard Webhooks signing key (whsec_<base64> or text)")
    timeout_seconds: float = option(10.0, above=0, maximum=3600, help="per request; connect at most 10")

    def __post_init__(self) -> None:
        if self.signing_secret is not None:
            try:
                signing_key(self.signing_secret)
            except ValueError as e:
                raise OptionError("signing_secret", f"{e} (write whsec_<base64 key>, or a secret without the "
                                                    "prefix)") from None


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def batch_id(events: list[SpooledEvent]) -> str:
    """Stable for the same batch: a retry of it carries the same webhook-id."""
    if len(events) == 1:
        return events[0].id
    h = hashlib.blake2b(digest_size=16)
    for e in events:
        h.update(e.id.encode())
        h.update(b",")
    return "batch_" + h.hexdigest()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
        return secs if secs >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:     # HTTP dates are GMT
        import datetime as _dt
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def safe_url(url: str) -> str:
    """The URL for messages: no user:password, no query string (tokens like to live there)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


class HttpTarget:
    def __init__(self, settings: TargetSettings):
        opts = settings.options
        self.name = settings.name
        self.url = opts.url
        self.where = safe_url(opts.url)
        self.headers = {**opts.headers,
                        "Content-Type": CONTENT_TYPE if settings.format == "cloudevents" else PLAIN_JSON}
        self.timeout_seconds = opts.timeout_seconds
        self.key: bytes | None = None
        if opts.signing_secret is not None:
            try:
                self.key = signing_key(opts.signing_secret)
            except ValueError as e:
                # config.load checks this already; a Config built another way still gets a clear message
                raise TargetError(f"target {settings.name}: signing_secret {e}") from None
        self.client: Any = None                 # an httpx.Client while open

    def open(self) -> None:
        """A webhook holds no position of its own: the spool cursor decides what comes next."""
        import httpx    # imported here, as every target's client library: parsing a config never needs it

        if self.client is None:
            # no redirects: a 3xx means a wrong URL, and following it could resend data elsewhere
            timeout = httpx.Timeout(self.timeout_seconds, connect=min(self.timeout_seconds, 10.0))
            self.client = httpx.Client(timeout=timeout, follow_redirects=False,
                                       headers={"User-Agent": "cdc-agent"})

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        import httpx

        if self.client is None:
            self.open()
        body = b"[" + b",".join(e.body for e in events) + b"]"
        headers = dict(self.headers)
        if self.key is not None:
            msg_id = batch_id(events)
            ts = int(time.time())
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = sign(self.key, msg_id, ts, body)
        try:
            resp = self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as e:
            raise TargetUnavailable(f"POST {self.where}: no answer in time ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            # connection refused/reset, protocol errors: the text is the OS or parser message
            raise TargetUnavailable(f"POST {self.where}: {redact(str(e)) or type(e).__name__}") from None
        status = resp.status_code
        if 200 <= status < 300:
            return DeliveryResult()
        what = f"POST {self.where}: HTTP {status} {resp.reason_phrase}".rstrip()
        excerpt = _excerpt(resp)
        if excerpt:
            what += f": {excerpt}"
        if status in RETRIABLE_STATUS or status >= 500:
            raise TargetUnavailable(what, retry_after_seconds(resp.headers.get("retry-after")))
        if status in ENDPOINT_STATUS or 300 <= status < 400 or status < 200:
            raise TargetUnavailable(what + " (the endpoint refuses every request: check url and headers)",
                                    retry_after_seconds(resp.headers.get("retry-after")))
        raise TargetRejected(what)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _excerpt(resp: Any) -> str:
    """The start of a response body for a message: only a window of it is decoded and redacted (a body
    can be megabytes), and the cut comes after redaction, so it cannot leave half of a secret behind."""
    try:
        raw = resp.content[:BODY_EXCERPT * 4 + 1024]
        text = raw.decode(resp.encoding or "utf-8", errors="replace")
    except Exception:   # unreadable body or unknown charset: the status says enough
        return ""
    text = redact(" ".join(text.split()))
    if len(text) > BODY_EXCERPT or len(raw) < len(resp.content):
        text = text[:BODY_EXCERPT] + "…"
    return text


def check_http_target(settings: TargetSettings) -> list[CheckItem]:
    """Whether the receiver's host resolves and its port accepts a connection (nothing is sent). Warnings
    only: a receiver that is down now is retried, and its backlog waits in the spool."""
    p = urlsplit(settings.options.url)
    port = p.port or (443 if p.scheme == "https" else 80)
    name, where = f"target {settings.name}", safe_url(settings.options.url)
    try:
        addrs = socket.getaddrinfo(p.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        return [CheckItem(name, False, f"{where}: host {p.hostname!r} does not resolve ({e})",
                          "check the url's host name and this machine's DNS", warning=True)]
    family, kind, proto, _, addr = addrs[0]
    try:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(CHECK_CONNECT_SECONDS)
            s.connect(addr)
    except OSError as e:
        return [CheckItem(name, False, f"{where}: cannot connect ({e.strerror or type(e).__name__}); events wait "
                                       "in the spool until it answers", "start the receiver, or fix the url",
                          warning=True)]
    return [CheckItem(name, True, f"{where} accepts connections")]


KIND = TargetKind(options=HttpOptions, target=HttpTarget, batch_size=100,   # request bodies stay modest
                  admin=preflight(check_http_target))
