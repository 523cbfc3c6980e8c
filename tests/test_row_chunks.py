"""take_rows keeping its changes' rendered rows and frames in a RowArena's chunks (agent/fastpg_rows.c)
instead of two bytes objects per change: the changes read back the same rendered rows, row images and
events as the ones take_rows makes without an arena, across many chunks (full by rows and by bytes), and a
change kept alive keeps its chunk while the chunks around it are freed and their buffers reused."""

from __future__ import annotations

import gc
import struct

import pytest

from agent import fastpath
from agent.changes import RowChange
from agent.fastrow import _RENDERED, RenderedRowChange
from agent.mapping import EventMapper
from tests.test_fastglue import begin, cfg, commit, item_key, relation_msg, source, xlog
from tests.test_fastevents import RELID
from tests.test_fastpath import tuple_bytes

needs_arena = pytest.mark.skipif(not fastpath.compiled() or fastpath.row_arena is None,
                                 reason="the compiled core is not built, or not used")

OIDS = [20, 25, 1700, 16, 1184]


def stream(n: int, big_every: int = 0, lsn: int = 0x5000) -> list:
    """One transaction of n rows (inserts, updates with their old row, deletes); every big_every-th one has
    a 200 kB text, so that chunks fill by bytes too."""
    rid = struct.pack(">I", RELID)
    frames: list = [xlog(relation_msg(RELID, b"t", OIDS, {0})), xlog(begin(lsn, 9))]
    for i in range(n):
        text = b"x" * 200_000 if big_every and i % big_every == 0 else f"row {i}".encode()
        new = tuple_bytes([("t", str(i).encode()), ("t", text), ("t", b"1.50"), ("t", b"t"),
                           ("t", b"2026-11-23 10:00:00+00")])
        old = tuple_bytes([("t", str(i).encode()), ("t", b"old"), ("n", None), ("t", b"f"), ("n", None)])
        kind = i % 3
        frames.append(xlog(b"I" + rid + b"N" + new if kind == 0 else
                           b"U" + rid + b"O" + old + b"N" + new if kind == 1 else b"D" + rid + b"O" + old))
    frames.append(xlog(commit(lsn)))
    return frames


def read(frames: list, arena: bool) -> list[RowChange]:
    src = source(cfg(), frames, False)
    if not arena:
        src._arena = None
    items: list = []
    for _ in range(len(frames) + 5):
        items += src.poll(5000, 0)
    return [i for i in items if isinstance(i, RowChange)]


def fields(changes: list[RowChange]) -> list:
    return [(item_key(ch), ch.rendered) for ch in changes]


@needs_arena
def test_changes_in_chunks_read_as_changes_with_their_own_bytes():
    frames = stream(9000, big_every=997)
    fresh = read(frames, True)
    assert len(fresh) == 9000 and all(type(ch) is RenderedRowChange for ch in fresh)
    chunks = {id(_RENDERED.__get__(ch)) for ch in fresh}
    assert len(chunks) >= 9 and all(ch._message is _RENDERED.__get__(ch) for ch in fresh)    # full by rows and by bytes
    plain = read(frames, False)
    assert all(type(_RENDERED.__get__(ch)) is bytes and ch._at is None for ch in plain)
    # the events first (mapped before anything loads the row images), byte for byte
    got, want = EventMapper(cfg()).map(fresh), EventMapper(cfg()).map(plain)
    assert not got[1] and not want[1] and len(got[0]) == 9000          # (past the kept index ints too)
    assert [(e.id, e.subject, e.position, e.body) for e in got[0]] == \
        [(e.id, e.subject, e.position, e.body) for e in want[0]]
    assert [ch._message.frame(ch._at) for ch in fresh] == [f for f in frames[2:-1]]
    assert fields(fresh) == fields(plain)


@needs_arena
def test_a_change_kept_alive_keeps_its_chunk_while_the_others_are_reused():
    changes = read(stream(3000), True)
    kept = changes[1500]
    want = (item_key(read(stream(3000), False)[1500]), kept.rendered, kept._message.frame(kept._at))
    del changes
    gc.collect()
    for lsn in (0x6000, 0x7000, 0x8000):        # more chunks, from the buffers the freed ones left
        again = read(stream(3000, lsn=lsn), True)
        assert len(again) == 3000
        del again
    assert (item_key(kept), kept.rendered, kept._message.frame(kept._at)) == want
    events = EventMapper(cfg()).map([kept])[0]
    assert len(events) == 1 and events[0].position == "0000000000005000:00001501"


@needs_arena
def test_a_chunk_refuses_an_index_it_does_not_hold():
    ch = read(stream(3), True)[0]
    chunk = _RENDERED.__get__(ch)
    assert len(chunk) >= 3
    for bad in (len(chunk), -1, "0", 2 ** 70):
        with pytest.raises((IndexError, TypeError, OverflowError)):
            chunk.rendered(bad)
        with pytest.raises((IndexError, TypeError, OverflowError)):
            chunk.frame(bad)
