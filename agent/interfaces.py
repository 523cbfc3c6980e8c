"""The two roles the pipeline wires together. A new source or target is one module implementing one.

Safety order, owned by the pipeline: the target confirms, then the spool commits its cursor; the
source's changes are committed to the spool, then the source is told (`confirm`) it may release them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .changes import CheckItem, Item, SourceStatus


class Source(Protocol):
    """Yields typed items (Begin, RowChange, Commit, Keepalive, Watermark; agent/changes.py) in stream
    order to the shared capture core (agent/capture.py), which batches them and owns checkpoints.
    Implementations translate driver errors into SourceUnavailable (retriable: the pipeline reconnects and
    resumes from *its* checkpoint, never the driver's) or SourceFatal (not retriable: needs a person)."""

    def start(self, checkpoint: str | None) -> None:
        """Connect and resume strictly after `checkpoint` (None: from the capture's own start)."""

    def poll(self, max_items: int, timeout: float) -> list[Item]:
        """What the stream has, up to about `max_items` items, waiting at most `timeout` seconds for the first
        one; an empty list when nothing arrived. Never blocks longer than `timeout`."""

    def keepalive(self) -> None:
        """Capture is paused (backpressure): service the connection so the server does not drop it
        (PostgreSQL's wal_sender_timeout), without reading changes."""

    def confirm(self, checkpoint: str) -> None:
        """Everything up to `checkpoint` is durable in the spool; the database may release it."""

    def status(self) -> SourceStatus: ...

    def close(self) -> None: ...


class CaptureAdmin(Protocol):
    """What `check`, `setup` and `teardown` do for one source kind."""

    def check(self) -> list[CheckItem]: ...

    def setup_sql(self) -> list[str]:
        """The statements `setup` would run (printed by `setup --dry-run`)."""

    def setup(self) -> list[str]:
        """Create what capture needs, idempotently; returns what was done, one line each."""

    def teardown_sql(self) -> list[str]: ...

    def teardown(self) -> list[str]: ...


@dataclass(slots=True)
class SpooledEvent:
    seq: int            # spool order (source commit order)
    id: str
    type: str
    subject: str
    body: bytes         # the CloudEvent, JSON
    commit_ts: float
    position: str = ""  # the source position of its change (fixed width, sorts in commit order)
    only_target: str | None = None   # snapshot --target: every other target passes over it


@dataclass(slots=True)
class Rejection:
    seq: int
    reason: str         # why the target refused it for good (status, response body), secrets removed


@dataclass(slots=True)
class DeliveryResult:
    """Everything in the batch not listed in `rejected` was durably accepted by the target."""

    rejected: list[Rejection] = field(default_factory=list)


class Target(Protocol):
    """Accepts a batch and acknowledges it. Raises TargetUnavailable (retriable, with an optional
    retry_after) when nothing of the batch can be known to have been accepted. Any other exception is a
    bug: the worker stops with it (adapters/__init__.py says how to write one)."""

    name: str

    def open(self) -> str | None:
        """Connect. Returns the source position the target has already durably applied, when it keeps its own
        (events at or before it are not sent again), else None."""

    def send(self, events: list[SpooledEvent]) -> DeliveryResult: ...

    # Optional: `send_lines(data: bytes) -> None`, the batch's CloudEvents as JSON lines (each ending in a
    # newline), all accepted or TargetUnavailable raised. The worker uses it instead of `send` when the
    # events go out as spooled (agent/worker.py, `TargetWorker._send_lines`); the file target has it.

    def close(self) -> None: ...
