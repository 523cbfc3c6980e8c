"""The capture core: one transaction assembler for every source kind.

A source yields typed items in stream order (`Source.poll`: Begin, RowChange, Commit, Keepalive, Watermark;
agent/changes.py). `CaptureCore.read` turns them into the SourceBatches the pipeline spools:

- batching: once a batch holds something it stops at the first gap in the stream (BATCH_GAP_SECONDS) or
  BATCH_LINGER_SECONDS after its first item, so commit-to-spool latency stays low when the stream is quiet;
  while catching up (the last batch was full, or its changes were older than BACKLOG_AGE_SECONDS) it lingers
  BACKLOG_LINGER_SECONDS and fills whole batches;
- checkpoints: a batch ends on the last Commit it holds; the changes of a transaction still open then are
  carried to the next batch. A transaction bigger than a batch goes out in pieces with checkpoint None
  (memory stays bounded; a restart replays the transaction and the spool deduplicates by event id). A Commit
  with no changes before it (DDL, a skipped transaction, the start position) is still a checkpoint batch;
- a Keepalive (the source is caught up, nothing in flight) ends the wait early when a batch is in hand;
- a Watermark goes to the `on_watermark` hook in stream order, together with the changes the batch holds so
  far; whatever the hook returns is appended to the batch at that point (a snapshot's chunk rows between a
  low and a high watermark, DBLog style: a later issue). Without a hook watermarks are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import fastpath
from .changes import Begin, Commit, Item, Keepalive, RowChange, SourceBatch, Watermark
from .interfaces import Source

log = logging.getLogger(__name__)

BATCH_GAP_SECONDS = 0.002        # once a batch has something, stop at the first gap this long in the stream
BATCH_LINGER_SECONDS = 0.01      # ... or this long after its first item (keeps commit-to-spool latency low)
BACKLOG_LINGER_SECONDS = 0.25    # ... unless catching up (a full batch, or changes this old): fill the batch
BACKLOG_AGE_SECONDS = 0.5

WatermarkHook = Callable[[Watermark, list[RowChange]], "list[RowChange] | None"]


class CaptureCore:
    """Reads one started Source and assembles its items into SourceBatches. One per source connection:
    after a reconnect the source resumes from the spool's checkpoint, so what this core carried is dropped
    with it."""

    def __init__(self, source: Source, on_watermark: WatermarkHook | None = None):
        self.source = source
        self.on_watermark = on_watermark
        self._carry: list[RowChange] = []      # changes of the transaction open at the end of the last batch
        self._queue: list[Item] = []           # items polled but not taken (the last batch filled up)
        self._in_txn = False
        self._txn_ts = 0.0                     # commit time of the open (or last) transaction, for the backlog test
        self._backlog = False                  # the last batch was catching up: linger longer, fill batches
        self.first_at = 0.0                    # when the last batch's first item arrived (monotonic; agent/timing.py)
        self._run_end = fastpath.run_ender()   # where a run of changes in a poll's items ends (compiled or pure)

    def read(self, max_changes: int, max_wait: float) -> SourceBatch:
        """Changes up to about `max_changes`, waiting at most `max_wait` for the first item."""
        out = self._carry
        self._carry = []
        boundary = 0                # out[:boundary] are whole transactions
        checkpoint: str | None = None
        now = time.monotonic()
        deadline = now + max_wait
        first = now if out else None
        linger = BACKLOG_LINGER_SECONDS if self._backlog else BATCH_LINGER_SECONDS
        full = len(out) >= max_changes         # a carried transaction may fill a batch by itself
        run_end = self._run_end
        self.first_at = now
        while not full:
            if self._queue:
                items, self._queue = self._queue, []
            else:
                if first is not None:
                    left = first + linger - now
                    if left <= 0:
                        # a steady stream with no pause is not a backlog by itself: only old changes are
                        self._backlog = time.time() - self._txn_ts > BACKLOG_AGE_SECONDS
                        break
                    wait = BATCH_GAP_SECONDS if left > BATCH_GAP_SECONDS else left
                else:
                    wait = deadline - now
                    if wait <= 0:
                        self._backlog = False
                        break
                items = self.source.poll(max(1, max_changes - len(out)), wait)
                if first is None:
                    self.first_at = time.monotonic()
                if not items:
                    self._backlog = False       # the stream paused: caught up, keep batches short again
                    break
                if type(items) is not list:
                    items = list(items)         # (run_end reads a list)
            caught_up = False
            i, n_items = 0, len(items)
            while i < n_items:
                item = items[i]
                if isinstance(item, RowChange):
                    if full:
                        self._queue = items[i:]     # the batch is full: the rest starts the next one
                        break
                    # the run of changes from here, at most up to a full batch, in one extend
                    j = run_end(items, i, min(n_items, i + max_changes - len(out)), RowChange)
                    if j <= i:
                        j = i + 1               # (an object isinstance accepts by its __class__ only)
                    out += items[i:j]           # type: ignore[arg-type]  # (run_end: all RowChanges)
                    i = j
                    caught_up = False
                    if first is None:
                        first = now
                    if len(out) >= max_changes:
                        full = True             # still take a Commit (or other markers) right behind it
                    continue
                i += 1
                if isinstance(item, Commit):
                    self._in_txn = caught_up = False
                    boundary = len(out)
                    checkpoint = item.checkpoint
                    if first is None:
                        first = now
                elif isinstance(item, Begin):
                    self._in_txn = True
                    caught_up = False
                    if item.commit_ts:
                        self._txn_ts = item.commit_ts
                elif isinstance(item, Keepalive):
                    caught_up = not self._in_txn
                elif isinstance(item, Watermark):
                    self._watermark(item, out)
                else:
                    raise TypeError(f"a source yielded {item!r}, which is not a capture item")
            if full:
                self._backlog = True
            elif caught_up and first is not None and not self._queue:
                self._backlog = False           # the source says nothing more is in flight: do not linger
                break
            now = time.monotonic()
        if self._in_txn and boundary < len(out) and checkpoint is not None:
            self._carry = out[boundary:]        # end the batch at the last commit; the open transaction waits
            del out[boundary:]
        # (no commit in it while a transaction is open: one piece of a large transaction, checkpoint None)
        return SourceBatch(out, checkpoint)

    def _watermark(self, mark: Watermark, out: list[RowChange]) -> None:
        if self.on_watermark is None:
            log.debug("watermark %s/%s ignored: no snapshot is listening", mark.name, mark.kind)
            return
        extra = self.on_watermark(mark, out)
        if extra:
            out.extend(extra)

    def keepalive(self) -> None:
        """Capture is paused (backpressure): let the source keep its connection without reading changes."""
        self.source.keepalive()
