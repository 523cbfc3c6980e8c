"""The compiled mapper's bodies in one BodyStore per map call (agent/fastpg_store.c): its events read as the
pure path's, and the spool frames made of them (pack_events copying each body without its id search, or
compressing a run of them straight from the store) are byte for byte the pure path's frames of the pure
mapper's events, whole, cut into frames, out of order, mixed with events made in Python. Under
CDC_AGENT_PURE=1 the mapper makes no store and pack is the pure one: the same comparisons hold."""

from __future__ import annotations

import struct
from dataclasses import astuple

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import fastpath, mapping, spool_frames
from agent.changes import RowChange
from agent.mapping import BODY_SLOT, EventMapper, MappedEvent, StoredEvent
from agent.spool import FRAME_EVENTS, Spool
from agent.spool_frames import FrameHead, pack
from tests.plugins import property_examples
from tests.test_fastglue import RELID, begin, cfg, commit, read_all, relation_msg, streams, xlog
from tests.test_fastpath import tuple_bytes

needs_extension = pytest.mark.skipif(not fastpath.compiled(), reason="agent._fastpg is not built (no C compiler)")
needs_store = pytest.mark.skipif(fastpath.body_store is None, reason="no BodyStore (not built, or CDC_AGENT_PURE=1)")


def fields(events: list) -> tuple:
    """pack_events' lists and joined bodies (as bytes, from `into` or the store's view); the pure ones when
    the pack is not compiled."""
    if spool_frames._pack_events is None:
        return spool_frames._fields_pure(events)
    into = bytearray(b"?" * 7)
    *lists, joined = spool_frames._pack_events(events, into)
    return (*lists, bytes(into[:joined]) if type(joined) is int else bytes(joined))


def arrangements(events: list, other: list) -> list[list]:
    """The frames a batch can be packed as: whole, Spool.append's frames of FRAME_EVENTS (here 3), every
    other one (a replay's filter), reversed, interleaved with events made in Python."""
    mixed = [e for pair in zip(events, other) for e in pair]
    return [events, *[events[i:i + 3] for i in range(0, len(events), 3)], events[::2], events[::-1], mixed]


def usual_changes(n: int = 12):
    rid = struct.pack(">I", RELID)
    frames: list = [xlog(relation_msg(RELID, b"t", [20, 25], {0})), xlog(begin(0x5000, 9))]
    frames += [xlog(b"I" + rid + b"N" + tuple_bytes([("t", str(i).encode()), ("t", b"x" * i)])) for i in range(n)]
    frames.append(xlog(commit(0x5000)))
    polls, _, _ = read_all(cfg(), frames, False, 0, [100])
    return [i for items, *_ in polls for i in items if isinstance(i, RowChange)]


@needs_extension
@settings(max_examples=property_examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_frames_of_the_compiled_mappers_events_are_the_pure_frames(case, data):
    frames, checkpoint, sizes, event_rules = case
    c = cfg(event_rules)
    polls, _, _ = read_all(c, frames, False, checkpoint, sizes)
    changes = [i for items, *_ in polls for i in items if isinstance(i, RowChange)]
    want_polls, _, _ = read_all(c, frames, True, checkpoint, sizes)
    want_changes = [i for items, *_ in want_polls for i in items if isinstance(i, RowChange)]
    try:
        got, _ = EventMapper(c, pure=False).map(changes)
    except Exception as e:          # a binary value orjson cannot write: raised alike on both paths
        with pytest.raises(type(e)):
            EventMapper(c, pure=True).map(want_changes)
        return
    want, _ = EventMapper(c, pure=True).map(want_changes)
    assert [astuple(e)[:8] for e in got] == [astuple(e)[:8] for e in want]
    other = [MappedEvent(*astuple(e)[:8]) for e in want]          # bodies as bytes, as Python makes them
    for got_frame, want_frame in zip(arrangements(got, other), arrangements(want, other), strict=True):
        assert fields(got_frame) == spool_frames._fields_pure(want_frame)
        if got_frame:
            assert pack(got_frame) == pack(want_frame)           # compressed alike: the same bytes in
    if got and data.draw(st.booleans()):
        # an event whose id was changed after mapping: its body is read as bytes, its id looked for again
        k = data.draw(st.integers(0, len(got) - 1))
        got[k].id = want[k].id = data.draw(st.sampled_from(["", "x", "0" * 32, got[k].id.upper()]))
        assert fields(got) == spool_frames._fields_pure(want)


@needs_store
def test_usual_rows_keep_their_bodies_in_one_store_and_a_frame_of_them_is_not_copied():
    changes = usual_changes()
    events, _ = EventMapper(cfg()).map(changes)
    want, _ = EventMapper(cfg(), pure=True).map([RowChange(**{k: getattr(ch, k) for k in (
        "table", "op", "before", "after", "position", "commit_time", "commit_ts", "txid", "key_columns",
        "unavailable", "id_key", "target")}) for ch in changes])
    stores = {id(BODY_SLOT.__get__(e)) for e in events}
    assert len(stores) == 1 and type(BODY_SLOT.__get__(events[0])) is fastpath.body_store
    assert all(type(e) is StoredEvent for e in events) and all(type(e) is MappedEvent for e in want)
    assert events == want and want == events and events[0] != want[1]      # equal as MappedEvents are
    assert fastpath._fastpg.event_bounds(events) == spool_frames.bounds(want)   # read at their slots too
    assert [e._at for e in events] == list(range(len(events)))
    assert [e.body for e in events] == [e.body for e in want]
    assert [orjson.loads(e.body)["id"] for e in events] == [e.id for e in events]
    into = bytearray()
    *lists, joined = spool_frames._pack_events(events, into)
    assert type(joined) is memoryview and joined.readonly and not into      # straight from the store
    assert (*lists, bytes(joined)) == spool_frames._fields_pure(want)
    *_, size = spool_frames._pack_events(events[1:][::-1], into)
    assert type(size) is int and bytes(into[:size]) == spool_frames._fields_pure(want[1:][::-1])[-1]
    # a view open: the store does not grow under it
    store = BODY_SLOT.__get__(events[0])
    run = mapping.EventMapper(cfg())
    view = memoryview(store)
    with pytest.raises(BufferError):
        fastpath._fastpg.render_events(changes, 0, run._run_rules(changes[0]), [], store)
    view.release()
    assert [e.body for e in events] == [e.body for e in want]


@needs_store
def test_a_body_set_again_is_that_body_and_a_freed_stores_buffers_serve_the_next():
    changes = usual_changes(40)
    first, _ = EventMapper(cfg()).map(changes)
    bodies = [e.body for e in first]
    first[0].body = b'{"id":"new"}'
    assert first[0].body == b'{"id":"new"}' and first[0]._at is None and first[1].body == bodies[1]
    del first                       # the store's buffers are kept for the next one
    again, _ = EventMapper(cfg()).map(changes)
    assert [e.body for e in again] == bodies
    assert len(BODY_SLOT.__get__(again[0])) == len(again)
    with pytest.raises(IndexError):
        BODY_SLOT.__get__(again[0]).body(len(again))
    with pytest.raises(TypeError):
        fastpath.body_store(1)


@needs_extension
def test_a_batch_of_them_is_spooled_and_read_back_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr("agent.spool.FRAME_EVENTS", 7)       # several frames, one cut inside the batch
    assert FRAME_EVENTS == 1000
    changes = usual_changes(30)
    events, _ = EventMapper(cfg()).map(changes)
    sp = Spool(tmp_path)
    sp.ensure_targets(["t"])
    assert sp.append(events, [], "cp") == len(events)
    assert sp.append(events[5:12], [], "cp") == 0              # a replay: recognised, nothing spooled twice
    got = []
    for seq, n, head in sp.db.execute("SELECT seq, n, head FROM frames ORDER BY seq"):
        f = FrameHead(seq, n, None, head)
        f.load_body(sp._blob("body", seq))
        got += f.events(0, n)
    assert [(g.id, g.type, g.subject, g.position, g.body) for g in got] == \
           [(e.id, e.type, e.subject, e.position, e.body) for e in events]
    sp.close()
