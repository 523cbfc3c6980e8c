"""The capture core on scripted sources (no database): batching, carrying an open transaction over,
pieces of a huge transaction, checkpoint-only batches, keepalives, watermarks, the old read() path."""

from __future__ import annotations

import time

import pytest

from agent import capture
from agent.capture import BATCH_GAP_SECONDS, CaptureCore
from agent.changes import Begin, Commit, Keepalive, RowChange, SourceBatch, Watermark


def change(n: int, ts: float | None = None) -> RowChange:
    ts = time.time() if ts is None else ts
    return RowChange("public.t", "insert", None, {"id": n}, f"{n:08d}", "2026-01-01T00:00:00.000000Z", ts)


class Scripted:
    """poll() hands out the scripted items in order, at most `max_items` changes at a time; a None in the
    script is a pause in the stream (that poll returns nothing). Records every poll's arguments."""

    def __init__(self, *script):
        self.script = list(script)
        self.polls: list[tuple[int, float]] = []
        self.kept_alive = 0

    def poll(self, max_items: int, timeout: float):
        self.polls.append((max_items, timeout))
        out = []
        while self.script:
            if self.script[0] is None:
                if not out:
                    self.script.pop(0)
                break
            if isinstance(self.script[0], RowChange) and sum(isinstance(x, RowChange) for x in out) >= max_items:
                break
            out.append(self.script.pop(0))
        return out

    def keepalive(self):
        self.kept_alive += 1


def ids(batch: SourceBatch) -> list[int]:
    return [c.after["id"] for c in batch.changes]


def txn(name: str, *ns: int, ts: float | None = None) -> list:
    ts = time.time() if ts is None else ts
    return [Begin(name, ts), *(change(n, ts) for n in ns), Commit(name)]


def test_nothing_in_the_stream_gives_an_empty_batch_after_waiting_for_the_first_item():
    src = Scripted(None)
    b = CaptureCore(src).read(100, 0.2)
    assert b.changes == [] and b.checkpoint is None
    assert src.polls == [(100, pytest.approx(0.2, abs=0.05))]


def test_whole_transactions_end_with_their_checkpoint():
    src = Scripted(*txn("A", 1, 2), *txn("B", 3), None)
    b = CaptureCore(src).read(100, 0.2)
    assert ids(b) == [1, 2, 3] and b.checkpoint == "B"
    # once a batch holds something, the core only waits for a short gap, not the whole max_wait
    assert len(src.polls) == 2 and src.polls[1][1] <= BATCH_GAP_SECONDS


def test_a_batch_ends_at_the_last_commit_and_the_open_transaction_is_carried_over():
    src = Scripted(*txn("A", 1), Begin("B"), change(2), change(3), None, change(4), Commit("B"), None)
    core = CaptureCore(src)
    first = core.read(100, 0.2)
    assert ids(first) == [1] and first.checkpoint == "A"
    second = core.read(100, 0.2)
    assert ids(second) == [2, 3, 4] and second.checkpoint == "B"


def test_a_huge_transaction_comes_in_pieces_without_checkpoints():
    src = Scripted(*txn("X", *range(1, 8)), None)
    core = CaptureCore(src)
    batches = [core.read(3, 0.2) for _ in range(3)]
    assert [ids(b) for b in batches] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [b.checkpoint for b in batches] == [None, None, "X"]
    # memory stays bounded: the core never asks the source for more than the batch has room for
    assert all(n <= 3 for n, _ in src.polls)


def test_a_commit_right_behind_a_full_batch_is_taken_with_it():
    src = Scripted(*txn("A", 1, 2), *txn("B", 3), None)
    core = CaptureCore(src)
    b = core.read(2, 0.2)
    assert ids(b) == [1, 2] and b.checkpoint == "A"
    assert ids(core.read(2, 0.2)) == [3]


def test_a_commit_without_changes_is_a_checkpoint_batch():
    src = Scripted(Commit("start"), None)
    b = CaptureCore(src).read(100, 0.2)
    assert b.changes == [] and b.checkpoint == "start"


def test_a_checkpoint_before_an_open_transaction_is_not_lost_when_the_batch_fills():
    src = Scripted(Commit("ddl"), Begin("T"), change(1), change(2), change(3), Commit("T"), None)
    core = CaptureCore(src)
    b = core.read(2, 0.2)
    assert b.changes == [] and b.checkpoint == "ddl"     # the transaction's changes wait for the next batch
    rest = [core.read(2, 0.2) for _ in range(2)]
    assert [ids(x) for x in rest] == [[1, 2], [3]] and [x.checkpoint for x in rest] == [None, "T"]


def test_a_keepalive_ends_the_wait_when_a_batch_is_in_hand():
    src = Scripted(*txn("A", 1), Keepalive(), None, *txn("B", 2))
    b = CaptureCore(src).read(100, 0.2)
    assert ids(b) == [1] and b.checkpoint == "A" and len(src.polls) == 1   # no further poll for a gap
    # without a batch in hand (or inside a transaction) a keepalive ends nothing
    src = Scripted(Keepalive(), None, Begin("A"), change(1), Keepalive(), None, Commit("A"), None)
    core = CaptureCore(src)
    assert core.read(100, 0.05).changes == []
    b = core.read(100, 0.2)
    assert ids(b) == [1] and b.checkpoint is None
    assert core.read(100, 0.2).checkpoint == "A"


def test_a_quiet_stream_gives_short_batches_and_a_backlog_gives_full_ones(monkeypatch):
    class Endless:
        """A stream that never pauses: single-change transactions committed `age` seconds ago."""

        def __init__(self, age: float):
            self.age, self.n = age, 0

        def poll(self, max_items, timeout):
            out = []
            for _ in range(min(max_items, 20)):
                self.n += 1
                out += txn(str(self.n), self.n, ts=time.time() - self.age)
            return out

        def keepalive(self):
            pass

    fresh = CaptureCore(Endless(0.0))
    b = fresh.read(10 ** 9, 0.2)           # ends on its linger, although the stream never pauses
    assert 0 < len(b.changes) < 10 ** 9 and b.checkpoint == str(b.changes[-1].after["id"])
    # a backlog batch ends when full, or on its linger: a long one here, so that a loaded machine (100 polls
    # to fill 2000) does not end it first; a batch ending on the short linger still shows
    monkeypatch.setattr(capture, "BACKLOG_LINGER_SECONDS", 10.0)
    old = CaptureCore(Endless(60.0))
    old.read(2000, 0.2)                     # old changes: catching up, so the next batches are full
    assert [len(old.read(2000, 0.2).changes) for _ in range(3)] == [2000, 2000, 2000]


def test_watermarks_go_to_the_hook_in_stream_order():
    seen = []

    def hook(mark, so_far):
        seen.append((mark, ids(SourceBatch(list(so_far)))))
        return [change(100)] if mark.kind == "high" else None

    src = Scripted(Watermark("w1", "low"), *txn("A", 1), Watermark("w1", "high"), Commit("after"), None)
    b = CaptureCore(src, on_watermark=hook).read(100, 0.2)
    assert seen == [(Watermark("w1", "low"), []), (Watermark("w1", "high"), [1])]
    assert ids(b) == [1, 100] and b.checkpoint == "after"
    # without a hook they are dropped
    src = Scripted(Watermark("w1", "low"), *txn("A", 1), None)
    assert ids(CaptureCore(src).read(100, 0.2)) == [1]


def test_something_that_is_not_an_item_is_a_bug():
    with pytest.raises(TypeError, match="not a capture item"):
        CaptureCore(Scripted("oops")).read(10, 0.1)


def test_keepalive_reaches_the_source():
    src = Scripted()
    CaptureCore(src).keepalive()
    assert src.kept_alive == 1
