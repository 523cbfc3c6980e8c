"""The compiled glue (agent/fastpg_glue.c): the PostgreSQL source's read loop for runs of row messages
(take_rows, inside PostgresSource.poll) and the mapper's loop over runs of rendered changes (render_events),
against the pure path. Generated replication streams (transactions of Insert / Update / Delete messages of a
captured and an uncaptured table, rows only the pure path renders, keepalives, pauses, a no-echo origin,
transactions before the checkpoint) read with generated max_items must give the same items in the same
polls, the same positions, row images and events, byte for byte; and the stream's end and a lost connection
are raised alike."""

from __future__ import annotations

import struct

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import config, fastpath, pgoutput as po
from agent.changes import RowChange
from agent.errors import SourceFatal, SourceUnavailable
from agent.fastrow import RenderedRowChange
from agent.mapping import EventMapper
from agent.sources.postgres.stream import PostgresSource
from tests.test_fastevents import RELID, rules, tuples
from tests.test_fastpath import OIDS, tuple_bytes
from tests.plugins import property_examples

needs_extension = pytest.mark.skipif(not fastpath.compiled(), reason="agent._fastpg is not built (no C compiler)")

OTHER = RELID + 1           # a published table the agent does not capture
PAUSE = b""                 # in a stream: get_copy_data finds nothing buffered once
END = None                  # the server ends the stream


class ReplayConn:
    """The part of psycopg's PGconn the source's poll uses, handing out the frames of a stream."""

    def __init__(self, frames: list, fail_at: int | None = None):
        self.frames, self.i, self.fail_at, self.sent = frames, 0, fail_at, 0

    def get_copy_data(self, async_: int):
        if self.i == self.fail_at:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if self.i >= len(self.frames):
            return 0, b""
        f = self.frames[self.i]
        self.i += 1
        if f is END:
            self.i -= 1
            return -1, b""
        if f == PAUSE:
            return 0, b""
        return len(f), memoryview(f)

    def consume_input(self) -> None:
        pass

    def put_copy_data(self, data: bytes) -> None:
        self.sent += 1

    def flush(self) -> None:
        pass

    def get_result(self):
        return None

    def get_error_message(self) -> str:
        return "the server ended the stream"


class NoPoll:
    def poll(self, ms: float) -> list:
        return []


def cfg(event_rules=()):
    return config.parse({
        "agent": {"name": "east-1"},
        "source": {"kind": "postgres", "dsn": "postgresql://cdc@127.0.0.1/erp", "tables": ["public.t"],
                   "heartbeat_seconds": 0},
        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}], "events": list(event_rules)})


def source(c, frames, pure: bool, checkpoint: int = 0, fail_at: int | None = None) -> PostgresSource:
    src = PostgresSource(c)
    src._decoder = po.Decoder(pure=pure)
    src._take = fastpath.row_taker(pure)
    assert (src._take is None) == pure
    src._reset_stream_state(checkpoint)
    src._pg = ReplayConn(frames, fail_at)            # type: ignore[assignment]
    src._poll = NoPoll()                             # type: ignore[assignment]
    src._meta_query = lambda sql, params=None: [("c0",)]     # type: ignore[method-assign]
    src._load_types = lambda oids: None              # type: ignore[method-assign]   (built-in types only)
    return src


def xlog(msg: bytes, lsn: int = 0x100) -> bytes:
    return b"w" + struct.pack(">QQq", lsn, lsn, 0) + msg


def relation_msg(relid: int, name: bytes, oids, keys) -> bytes:
    out = b"R" + struct.pack(">I", relid) + b"public\0" + name + b"\0d" + struct.pack(">H", len(oids))
    for i, typ in enumerate(oids):
        out += bytes([1 if i in keys else 0]) + f"c{i}".encode() + b"\0" + struct.pack(">Ii", typ, -1)
    return out


def begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, 848_000_000_123_456, xid)


def commit(lsn: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, lsn, lsn + 8, 848_000_000_123_456)


def keepalive(lsn: int, reply: bool) -> bytes:
    return b"k" + struct.pack(">QqB", lsn, 0, 1 if reply else 0)


@st.composite
def row_msg(draw, oids, keys, relid):
    usual = draw(st.integers(0, 3)) > 0        # most rows in the forms the source's settings produce
    new = draw(tuples(oids, usual))
    old = draw(tuples(oids, usual))
    key_old = [c if i in keys else ("n", None) for i, c in enumerate(old)]
    rid = struct.pack(">I", relid)
    return draw(st.sampled_from([
        b"I" + rid + b"N" + tuple_bytes(new),
        b"U" + rid + b"N" + tuple_bytes(new),
        b"U" + rid + b"O" + tuple_bytes(old) + b"N" + tuple_bytes(new),
        b"U" + rid + b"K" + tuple_bytes(key_old) + b"N" + tuple_bytes(new),
        b"D" + rid + b"O" + tuple_bytes(old),
        b"D" + rid + b"K" + tuple_bytes(key_old),
    ]))


@st.composite
def streams(draw):
    oids = draw(st.lists(st.sampled_from(OIDS), min_size=1, max_size=8))
    keys = {0} | draw(st.sets(st.integers(0, len(oids) - 1), max_size=2))
    frames: list = [xlog(relation_msg(RELID, b"t", oids, keys)), xlog(relation_msg(OTHER, b"u", [23], {0}))]
    lsn = 0x1000
    for t in range(draw(st.integers(1, 4))):
        lsn += 0x100
        frames.append(xlog(begin(lsn, 700 + t)))
        if draw(st.integers(0, 5)) == 0:
            name = draw(st.sampled_from([b"cdc-agent/replica", b"someone-else"]))
            frames.append(xlog(b"O" + struct.pack(">Q", lsn) + name + b"\0"))
        for _ in range(draw(st.integers(0, 12))):
            pick = draw(st.integers(0, 9))
            if pick == 0:
                frames.append(xlog(b"I" + struct.pack(">I", OTHER) + b"N" + tuple_bytes([("t", b"5")])))
            elif pick == 1:
                frames.append(keepalive(lsn, draw(st.booleans())))
            elif pick == 2:
                frames.append(PAUSE)
            else:
                frames.append(xlog(draw(row_msg(oids, keys, RELID))))
        frames.append(xlog(commit(lsn)))
        if draw(st.booleans()):
            frames.append(keepalive(lsn + 16, False))
    if draw(st.integers(0, 9)) == 0:            # a relation never described: both paths stop alike
        frames.insert(-1, xlog(b"I" + struct.pack(">I", RELID + 9) + b"N" + tuple_bytes([("t", b"1")])))
    frames.append(END)
    checkpoint = draw(st.sampled_from([0, 0, 0x1100 + 8, 0x1200 + 8]))    # transactions before it are skipped
    return frames, checkpoint, draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)), draw(rules(len(oids)))


def item_key(item):
    if isinstance(item, RowChange):
        return ("change", item.table, item.op, item.before, item.after, item.position, item.commit_time,
                item.commit_ts, item.txid, item.key_columns, item.unavailable, item.id_key, item.target)
    return item


def read_all(c, frames, pure: bool, checkpoint: int, sizes: list[int], fail_at: int | None = None):
    """Every poll's items until the stream ends, and how it ended; the source's position after each poll."""
    src = source(c, frames, pure, checkpoint, fail_at)
    polls, ended = [], None
    for i in range(len(frames) + 5):
        try:
            items = src.poll(sizes[i % len(sizes)], 0)
        except (SourceUnavailable, SourceFatal) as e:
            ended = (type(e).__name__, str(e))
            break
        polls.append((items, src._position, src._ordinal, src._skipped_echo))
    return polls, ended, src


def events_of(c, changes, pure: bool):
    try:
        events, failures = EventMapper(c, pure=pure).map(changes)
    except Exception as e:          # a binary value orjson cannot write: raised alike on both paths
        return type(e).__name__, str(e)
    return ([(e.id, e.type, e.subject, e.position, e.commit_ts, e.body, e.outbox_row, e.only_target) for e in events],
            [(f.event_type, f.position, f.reason, f.change) for f in failures])


@needs_extension
@settings(max_examples=property_examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_compiled_read_loop_and_mapping_match_the_pure_path(case):
    frames, checkpoint, sizes, event_rules = case
    c = cfg(event_rules)
    want_polls, want_end, _ = read_all(c, frames, True, checkpoint, sizes)
    got_polls, got_end, _ = read_all(c, frames, False, checkpoint, sizes)
    assert got_end == want_end and got_end is not None
    assert [([item_key(i) for i in items], *rest) for items, *rest in got_polls] == \
        [([item_key(i) for i in items], *rest) for items, *rest in want_polls]
    want_changes = [i for items, *_ in want_polls for i in items if isinstance(i, RowChange)]
    assert all(type(ch) is RowChange for ch in want_changes)
    # fresh changes (their images not read yet): the mapper's C run and its fallbacks, byte for byte
    fresh_polls, _, _ = read_all(c, frames, False, checkpoint, sizes)
    fresh_changes = [i for items, *_ in fresh_polls for i in items if isinstance(i, RowChange)]
    assert events_of(c, fresh_changes, False) == events_of(c, want_changes, True)


@needs_extension
def test_runs_of_usual_rows_take_no_python_per_change(monkeypatch):
    """A transaction of ordinary rows: after its Begin every row is made by take_rows (the source's Python
    row path never runs), across polls cut by max_items and a pause, with the pure path's positions."""
    oids = [20, 25, 1700, 16, 1184]
    row = [("t", b"7"), ("t", b"x"), ("t", b"1.50"), ("t", b"t"), ("t", b"2026-11-23 10:00:00+00")]
    frames: list = [xlog(relation_msg(RELID, b"t", oids, {0})), xlog(begin(0x5000, 9))]
    rid = struct.pack(">I", RELID)
    for i in range(30):
        frames.append(xlog(b"I" + rid + b"N" + tuple_bytes([("t", str(i).encode())] + row[1:])))
        if i == 17:
            frames.append(PAUSE)
    frames += [xlog(commit(0x5000))]
    got = {}
    for pure in (False, True):
        src = source(cfg(), frames, pure)
        calls: list = []
        real_row = src._row
        monkeypatch.setattr(src, "_row", lambda m, real_row=real_row, calls=calls: calls.append(m) or real_row(m))
        items: list = []
        for _ in range(50):
            items += src.poll(7, 0)
        changes = [i for i in items if isinstance(i, RowChange)]
        assert len(changes) == 30
        got[pure] = [item_key(i) for i in items]
        if not pure:
            assert calls == [] and all(type(ch) is RenderedRowChange for ch in changes)
            assert changes[0].position == "0000000000005000:00000001" and src._position == changes[-1].position
            events = EventMapper(cfg()).map(changes)[0]
            assert [e.position for e in events] == [ch.position for ch in changes]
        else:
            assert len(calls) == 30
    assert got[False] == got[True]


@needs_extension
@pytest.mark.parametrize("at", [3, 5])
def test_a_lost_connection_inside_a_run_is_retriable(at):
    """psycopg raising inside take_rows' get_copy_data reads as on the Python path: SourceUnavailable."""
    rid = struct.pack(">I", RELID)
    frames = [xlog(relation_msg(RELID, b"t", [20], {0})), xlog(begin(0x5000, 9))]
    frames += [xlog(b"I" + rid + b"N" + tuple_bytes([("t", str(i).encode())])) for i in range(5)]
    for pure in (False, True):
        src = source(cfg(), frames, pure, fail_at=at)
        with pytest.raises(SourceUnavailable, match="replication connection lost"):
            src.poll(100, 0)
        assert src._error and "closed the connection" in src._error


@needs_extension
def test_glue_fills_only_plain_slots():
    """init_glue refuses anything but the member descriptors of object slots (a property, a number), and a
    refused call leaves the glue working."""
    with pytest.raises(TypeError):
        fastpath._fastpg.init_glue(RenderedRowChange, (RenderedRowChange.before,) * len(fastpath._CHANGE_SLOTS),
                                   object, ())
    with pytest.raises(TypeError):
        fastpath._fastpg.init_glue(RenderedRowChange, (1,) * len(fastpath._CHANGE_SLOTS), object, ())
    assert fastpath._glue()         # (a refused call leaves the classes it had)
    EventMapper(cfg()).map([])


@needs_extension
def test_more_rules_than_one_c_call_takes_map_alike():
    """A table with more rules than render_events takes (64) is mapped per change, with the same events."""
    from tests.test_fastevents import outcome
    rid = struct.pack(">I", RELID)
    msg = b"I" + rid + b"N" + tuple_bytes([("t", b"7"), ("t", b"x")])
    event_rules = [{"type": f"t.r{i}", "table": "public.t"} for i in range(65)]
    (got, got_failures), ch = outcome(False, [20, 25], {0}, msg, event_rules)
    assert type(ch) is RenderedRowChange and len(got) == 65 and not got_failures
    assert (got, got_failures) == outcome(True, [20, 25], {0}, msg, event_rules)[0]
