"""Redis Streams target (CONTRACT §7), with redis-py: each event one `XADD <stream> [MAXLEN ~ n] * id <event id>
event <CloudEvent>` (binary mode: one field per CloudEvents attribute, `datacontenttype`, and `data`), a batch
in one MULTI/EXEC pipeline. A batch counts as delivered when EXEC answered and every XADD in it succeeded.

Why MULTI/EXEC and not a plain pipeline: the server runs the batch all or nothing, so a connection lost before
EXEC leaves nothing behind and the retry adds no partial copies (a lost EXEC *reply* can still cause one
duplicate batch: same `id` fields, for consumers to skip). The cost is one round trip more, hidden in the
pipeline. It needs every stream of a batch on one server: plain Redis, not Redis Cluster.

Too large: Redis refuses an argument longer than its `proto-max-bulk-len` (512 MB by default) by closing the
connection, which a client cannot tell from an outage. The target reads the limit when it connects (CONFIG GET;
512 MB when CONFIG is not allowed) and rejects an event over it before sending (dead letter); the rest of the
batch goes on. Every other error (connection, timeout, OOM, READONLY, WRONGTYPE for a key that is not a stream)
is TargetUnavailable: it concerns the server or the stream, not one event.

Durability is the server's: see docs/brokers-b.md (appendonly, appendfsync; `wait_replicas`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from adapters import TargetKind
from adapters._messages import destination, message, parse_template, require_client
from agent.errors import TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection, SpooledEvent
from agent.options import Url, option
from agent.secrets import redact

if TYPE_CHECKING:
    from agent.config import TargetSettings

DEFAULT_MAX_BULK = 512 * 1024 * 1024       # Redis's default proto-max-bulk-len


@dataclass(frozen=True)
class RedisOptions:
    url: Url = option(schemes=("redis", "rediss"), help="redis://[:${PASSWORD}@]host:6379/0")
    stream: str = option("{type}", help="stream key, a template over {type}, {table}, {schema}, {agent}")
    maxlen: int | None = option(None, above=0, help="trim each stream to about this many entries (MAXLEN ~)")
    wait_replicas: int = option(0, minimum=0, maximum=100,
                                help="after each batch, WAIT until this many replicas have it (0: do not wait)")
    timeout_seconds: float = option(10.0, above=0, maximum=3600, help="connect, each batch, and WAIT")

    def __post_init__(self) -> None:
        parse_template("stream", self.stream)


def stream_fields(event: SpooledEvent, fmt: str) -> tuple[dict[str, bytes | str], str | None]:
    """The XADD fields of one event (pure), and the CloudEvent source when the body was read."""
    m = message(event, fmt)
    if fmt == "cloudevents-binary":
        fields: dict[str, bytes | str] = dict(m.attributes)
        fields["datacontenttype"] = m.content_type
        fields["data"] = m.body
        return fields, m.source
    return {"id": event.id, "event": m.body}, m.source


def safe_url(url: str) -> str:
    p = urlsplit(url)
    host = f"{p.hostname}:{p.port}" if p.port else (p.hostname or "")
    return f"{p.scheme}://{host}{p.path}"


class RedisTarget:
    def __init__(self, settings: TargetSettings):
        opts: RedisOptions = settings.options
        self.name, self.format, self.opts = settings.name, settings.format, opts
        self.where = safe_url(opts.url)
        self.stream = parse_template("stream", opts.stream)
        self.client: Any = None
        self.max_bulk = DEFAULT_MAX_BULK

    def open(self) -> None:
        require_client("redis", "redis", "redis")
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.close()
        t = self.opts.timeout_seconds
        # no retries inside the client: the worker retries with backoff, and a retried pipeline would duplicate
        # WAIT blocks up to `t` on the server: the socket waits that long and a little more for its answer
        read_timeout = 2 * t + 1 if self.opts.wait_replicas else t
        client = redis.Redis.from_url(self.opts.url, socket_timeout=read_timeout, socket_connect_timeout=t,
                                      retry=Retry(NoBackoff(), 0), retry_on_error=[])
        try:
            client.ping()
            try:
                limit = client.config_get("proto-max-bulk-len").get("proto-max-bulk-len", DEFAULT_MAX_BULK)
                self.max_bulk = int(limit) if limit is not None else DEFAULT_MAX_BULK
            except redis.ResponseError:          # CONFIG renamed or forbidden (managed Redis): the default
                self.max_bulk = DEFAULT_MAX_BULK
        except redis.RedisError as e:
            client.close()
            raise TargetUnavailable(f"cannot connect to {self.where}: {redact(str(e)) or type(e).__name__}") from None
        self.client = client
        return None

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        import redis

        if self.client is None:
            self.open()
        rejected: list[Rejection] = []
        pipe = self.client.pipeline(transaction=True)
        maxlen = self.opts.maxlen
        for ev in events:
            fields, source = stream_fields(ev, self.format)
            size = max(len(v) if isinstance(v, bytes) else len(v.encode()) for v in fields.values())
            if size > self.max_bulk:
                rejected.append(Rejection(ev.seq, f"{size} bytes, more than the server's proto-max-bulk-len "
                                                  f"({self.max_bulk} bytes) at {self.where}"))
                continue
            pipe.xadd(destination(self.stream, ev, source), fields, maxlen=maxlen, approximate=True)
        if len(rejected) == len(events):
            return DeliveryResult(rejected)
        try:
            results = pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise TargetUnavailable(f"XADD to {self.where}: {redact(str(errors[0]))}"
                                        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
            if self.opts.wait_replicas:
                got = self.client.wait(self.opts.wait_replicas, int(self.opts.timeout_seconds * 1000))
                if got < self.opts.wait_replicas:
                    raise TargetUnavailable(f"WAIT at {self.where}: {got} of {self.opts.wait_replicas} replica(s) "
                                            f"acknowledged in {self.opts.timeout_seconds:g}s (the batch is resent)")
        except redis.RedisError as e:
            self.close()
            raise TargetUnavailable(f"XADD to {self.where}: {redact(str(e)) or type(e).__name__}") from None
        return DeliveryResult(rejected)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:   # closing a broken connection: nothing left to save
                pass


KIND = TargetKind(options=RedisOptions, target=RedisTarget, batch_size=500, binary_mode=True)
