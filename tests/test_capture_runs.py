"""CaptureCore.read takes runs of changes in one extend (fastpath.run_ender): the same batches, checkpoints,
carried transactions and queued items as the per-item loop it replaced (kept here as the reference), with
the compiled run_end and its pure twin, on generated streams."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings, strategies as st

from agent import capture, fastpath
from agent.capture import CaptureCore
from agent.changes import Begin, Commit, Keepalive, RowChange, SourceBatch, Watermark
from tests.plugins import property_examples
from tests.test_capture import Scripted


class Rendered(RowChange):
    """A subclass, as RenderedRowChange is."""

    __slots__ = ()


class Claims:
    """Not a RowChange, but isinstance says it is one (by __class__): read's per-item test takes it."""

    __class__ = RowChange      # type: ignore[assignment]

    def __init__(self, n: int):
        self.after = {"id": n}


class PerItemCore(CaptureCore):
    """CaptureCore.read before runs: an isinstance and an append per change."""

    def read(self, max_changes: int, max_wait: float) -> SourceBatch:  # noqa: C901
        """Changes up to about `max_changes`, waiting at most `max_wait` for the first item."""
        out = self._carry
        self._carry = []
        boundary = 0                # out[:boundary] are whole transactions
        checkpoint: str | None = None
        now = time.monotonic()
        deadline = now + max_wait
        first = now if out else None
        linger = capture.BACKLOG_LINGER_SECONDS if self._backlog else capture.BATCH_LINGER_SECONDS
        full = len(out) >= max_changes         # a carried transaction may fill a batch by itself
        self.first_at = now
        while not full:
            if self._queue:
                items, self._queue = self._queue, []
            else:
                if first is not None:
                    left = first + linger - now
                    if left <= 0:
                        # a steady stream with no pause is not a backlog by itself: only old changes are
                        self._backlog = time.time() - self._txn_ts > capture.BACKLOG_AGE_SECONDS
                        break
                    wait = capture.BATCH_GAP_SECONDS if left > capture.BATCH_GAP_SECONDS else left
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
            caught_up = False
            for i, item in enumerate(items):
                if isinstance(item, RowChange):
                    if full:
                        self._queue = items[i:]     # the batch is full: the rest starts the next one
                        break
                    out.append(item)
                    caught_up = False
                    if first is None:
                        first = now
                    if len(out) >= max_changes:
                        full = True             # still take a Commit (or other markers) right behind it
                elif isinstance(item, Commit):
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


def change(n: int, cls: type = RowChange) -> RowChange:
    return cls("public.t", "insert", None, {"id": n}, f"{n:08d}", "2026-01-01T00:00:00.000000Z", 1.0)


@st.composite
def scripts(draw):
    out, n = [], 0
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["change", "change", "change", "run", "rendered", "claims", "begin", "commit",
                                     "keepalive", "watermark", "pause"]))
        if kind in ("change", "rendered", "claims", "run"):
            for _ in range(draw(st.integers(1, 30)) if kind == "run" else 1):
                n += 1
                out.append(Claims(n) if kind == "claims" else change(n, Rendered if kind == "rendered" else RowChange))
        elif kind == "begin":
            out.append(Begin(f"x{n}", draw(st.sampled_from([0.0, 1.0, time.time()]))))
        elif kind == "commit":
            out.append(Commit(f"c{n}"))
        elif kind == "keepalive":
            out.append(Keepalive())
        elif kind == "watermark":
            out.append(Watermark("w", draw(st.sampled_from(["low", "high"]))))
        else:
            out.append(None)
    return out


def batches(core_cls, script, sizes, run_end):
    src = Scripted(*script)
    extra = iter(range(10_000, 20_000))

    def hook(mark, so_far):
        return [change(next(extra))] if mark.kind == "high" else None

    core = core_cls(src, on_watermark=hook)
    core._run_end = run_end
    got = []
    for k in range(200):
        b = core.read(sizes[k % len(sizes)], 600)
        got.append(([c.after["id"] for c in b.changes], b.checkpoint, core._backlog, core._in_txn,
                    len(core._carry), len(core._queue)))
        if not src.script and not core._queue and not b.changes and b.checkpoint is None:
            break
    return got, [m for m, _ in src.polls]


@settings(max_examples=property_examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts(), st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_runs_of_changes_batch_as_the_per_item_loop_did(script, sizes):
    # no time-based end of a batch: only what the stream says decides (the lingers are minutes)
    with_lingers = (capture.BATCH_GAP_SECONDS, capture.BATCH_LINGER_SECONDS, capture.BACKLOG_LINGER_SECONDS)
    capture.BATCH_GAP_SECONDS = capture.BATCH_LINGER_SECONDS = capture.BACKLOG_LINGER_SECONDS = 600.0
    try:
        want = batches(PerItemCore, script, sizes, None)
        assert batches(CaptureCore, script, sizes, fastpath.run_ender(True)) == want
        assert batches(CaptureCore, script, sizes, fastpath.run_ender()) == want
    finally:
        capture.BATCH_GAP_SECONDS, capture.BATCH_LINGER_SECONDS, capture.BACKLOG_LINGER_SECONDS = with_lingers


def test_run_end_finds_the_first_item_of_another_class():
    items = [change(1), change(2, Rendered), Commit("c"), change(3), Claims(4), change(5)]
    for run_end in (fastpath.run_ender(True), fastpath.run_ender()):
        assert [run_end(items, i, len(items), RowChange) for i in range(len(items) + 1)] == [2, 2, 2, 4, 4, 6, 6]
        assert run_end(items, 0, 1, RowChange) == 1 and run_end(items, 3, 99, RowChange) == 4
        assert run_end(items, 0, len(items), Rendered) == 0 and run_end(items, 1, 6, Rendered) == 2
