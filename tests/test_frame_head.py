"""A frame's head read for the file target's lines (agent/fastpg_head.c `head_index`, agent/spool_frames.py
`FrameHead(lines=True)`): the same lines, latencies, types and per-event lists as the head decoded by orjson,
on any head; anything the compiled reader does not take goes to orjson, never read another way."""

from __future__ import annotations

import struct
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import spool_frames
from agent.mapping import MappedEvent
from agent.spool import Spool
from agent.spool_frames import FrameHead, lines_of, pack
from tests.plugins import property_examples

compiled = pytest.mark.skipif(spool_frames._head_index is None,
                              reason="agent._fastpg is not built, or CDC_AGENT_PURE=1")
PLAIN = "".join(map(chr, range(0x20, 0x7f)))
# texts mostly of printable ASCII (what the compiled reader takes), some with what it leaves to orjson
texts = st.one_of(st.text(PLAIN, max_size=12), st.text(PLAIN + '"\\\n\x7f\x01é€\U0001f600', max_size=12))
times = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(1_500_000_000_000_000, 2_500_000_000_000_000).map(lambda us: us / 1e6),   # commit times
    st.integers(-10**6, 10**6).map(lambda k: k / 1000),
    st.integers(-2**60, 2**60).map(float))


@st.composite
def frame_events(draw) -> list[MappedEvent]:
    types = draw(st.lists(st.sampled_from(["row.public.t", "a.x", "b\\y", "ü.t"]), min_size=1, max_size=3))
    out = []
    for i in range(draw(st.integers(1, 30))):
        eid = draw(st.one_of(st.just(f"{i:032x}"), texts))
        body = draw(st.binary(max_size=20)) + (eid.encode() if draw(st.booleans()) else b"") + \
            draw(st.binary(max_size=20))
        out.append(MappedEvent(eid, draw(st.sampled_from(types)), draw(texts), draw(texts), draw(times), body))
    return out


def both(evs: list[MappedEvent]) -> tuple[FrameHead, FrameHead]:
    head, body = pack(evs)
    full, lean = FrameHead(1, len(evs), None, head), FrameHead(1, len(evs), None, head, lines=True)
    full.load_body(body)
    lean.load_body(body)
    return full, lean


def plain(e: MappedEvent) -> bool:
    """What the compiled reader takes: texts of printable ASCII (ids without an escape), a float time."""
    return all(set(s) <= set(PLAIN) for s in (e.type, e.subject, e.position, e.id)) and '"' not in e.id and \
        "\\" not in e.id and type(e.commit_ts) is float


@settings(max_examples=property_examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_events(), st.data())
def test_a_head_read_for_lines_gives_what_the_decoded_head_gives(evs, data):
    """Lines, latencies and types of any run; then (decoded on demand) every per-event list and event."""
    full, lean = both(evs)
    if spool_frames._head_index is not None and all(map(plain, evs)):
        assert lean.index is not None, "the compiled reader left a usual head to orjson"
    lo = data.draw(st.integers(0, len(evs)))
    hi = data.draw(st.integers(lo, len(evs)))
    assert lines_of([(lean, lo, hi)]) == lines_of([(full, lo, hi)]) == b"".join(e.body + b"\n" for e in evs[lo:hi])
    now = time.time()
    got = lean.latencies(now, lo, hi)
    assert [struct.pack("d", x) for x in got] == [struct.pack("d", now - e.commit_ts) for e in evs[lo:hi]]
    assert got == full.latencies(now, lo, hi)
    assert lean.types_of(lo, hi) == full.types_of(lo, hi) == [e.type for e in evs[lo:hi]]
    for name in ("ids", "offs", "subjects", "positions", "ts", "lens", "starts", "tix", "types", "format"):
        assert getattr(lean, name) == getattr(full, name), name
    assert lean.index is None and lean.raw == b""     # decoded now: the usual lists from here on, the JSON gone
    assert lean.events(lo, hi) == full.events(lo, hi)


def index_values(raw: bytes, n: int):
    got = spool_frames._head_index(raw, n)
    if got is None:
        return None
    end, index, ts, size = got
    recs = list(struct.iter_unpack("5q", index))
    return (orjson.loads(raw[:end] + b"]"), [r[2] for r in recs], [raw[r[3]:r[3] + r[4]].decode() for r in recs],
            [r[1] - r[0] for r in recs], [r[0] for r in recs], list(struct.unpack(f"{n}d", ts)), size)


def decoded_values(raw: bytes, n: int):
    d = orjson.loads(raw)
    starts = [0]
    for x in d[8]:
        starts.append(starts[-1] + x)
    return d[:3], d[4], d[3], d[8], starts[:-1], [float(t) for t in d[7]], starts[-1]


heads = st.tuples(st.just(2), st.lists(texts, min_size=1, max_size=2),
                  st.one_of(st.just(0), st.lists(st.integers(0, 3), min_size=1, max_size=4)),
                  st.lists(texts, max_size=4), st.lists(st.integers(-2, 10), max_size=4), st.lists(texts, max_size=4),
                  st.lists(texts, max_size=4), st.lists(times, max_size=4), st.lists(st.integers(0, 50), max_size=4))


@compiled
@settings(max_examples=property_examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads, st.data())
def test_the_compiled_reader_takes_no_head_orjson_would_read_otherwise(fields, data):
    """Heads as pack writes them and heads damaged byte by byte: what head_index takes, orjson reads to the
    same values (times to the same doubles, bit for bit); what it refuses it leaves (None), never raises."""
    raw = orjson.dumps(list(fields))
    if data.draw(st.booleans()):
        cut = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(cut) - 1))
            op = data.draw(st.sampled_from(["set", "drop", "dup"]))
            if op == "set":
                cut[at] = data.draw(st.sampled_from(b'0123456789-+.eE,[]" \\x'))
            elif op == "drop":
                del cut[at]
            else:
                cut.insert(at, cut[at])
        raw = bytes(cut)
    n = len(fields[3])
    for rows in (n, n + 1):
        got = index_values(raw, rows)
        if got is None:
            continue
        d = orjson.loads(raw)                     # taken: so orjson must read it, the same way
        assert isinstance(d, list) and len(d) == 9 and all(len(d[k]) == rows for k in (3, 4, 5, 6, 7, 8))
        expected = decoded_values(raw, rows)
        assert got[:5] == expected[:5] and got[6] == expected[6]
        assert [struct.pack("d", x) for x in got[5]] == [struct.pack("d", x) for x in expected[5]]


@compiled
@pytest.mark.parametrize("number", ["0", "-0", "0.0", "-0.0", "1796181580.372952", "1e22", "1e23", "9007199254740993",
                                    "123456789012345678901234567890", "0.1", "2.2250738585072014e-308", "5e-324",
                                    "1.7976931348623157e308", "4.35679e-10", "123.456e5", "1E+2", "1e-22",
                                    "9007199254740992.0", "9007199254740993.0", "0.30000000000000004"])
def test_commit_times_are_the_doubles_orjson_reads(number):
    raw = b'[2,["t"],0,["a","a"],[-1,-1],["s","s"],["p","p"],[%s,%s],[0,0]]' % (number.encode(), number.encode())
    got = index_values(raw, 2)
    if got is None:
        assert number.lstrip("-").isdigit() and len(number.lstrip("-")) > 15    # only long integers go to orjson
        return
    want = float(orjson.loads(number))
    assert [struct.pack("d", x) for x in got[5]] == [struct.pack("d", want)] * 2


@compiled
@pytest.mark.parametrize("raw", [
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0],[0]] ',      # whitespace: orjson writes none
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0],[01]]',      # a leading zero
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0],[1.0]]',     # a length that is not an integer
    b'[2,["t"],0,["a"],[-1],["s\\u0001"],["p"],[1.0],[0]]',   # a \\u escape
    b'[2,["t"],0,["\\"a"],[0],["s"],["p"],[1.0],[2]]',     # an id with an escape
    b'[2,["t"],0,["a"],[2],["s"],["p"],[1.0],[1]]',        # the id's offset past its body
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1e999],[0]]',     # not a finite time
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0],[0],9]',     # a tenth item
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0]]',           # eight
    b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0],[0]',        # cut short
    b'[2,["t"],0,["a"],[-1],["s\xc3\xa9"],["p"],[1.0],[0]]',   # not ASCII
    b'[2,["t"],0,["a"],[-1],["s\x01ssssssssss"],["p"],[1.0],[0]]',   # a control character as it stands
])
def test_unusual_heads_are_left_to_orjson(raw):
    assert spool_frames._head_index(raw, 1) is None
    assert spool_frames._head_index(b'[2,["t"],0,["a"],[-1],["s"],["p"],[1.0],[0]]', 1) is not None


@compiled
def test_a_drain_like_frame_is_read_for_lines_and_joined_from_the_index(tmp_path):
    """The spool's file-target path (fetch_runs(lines=True)) reads heads with the index, and the lines of
    frames read either way join in one call."""
    sp = Spool(tmp_path)
    evs = [MappedEvent(f"{i:032x}", "row.public.t", str(i), f"{i:016X}:000001", 1796181580.372952 + i // 7,
                       b'{"specversion":"1.0","id":"%032x","n":%d}' % (i, i)) for i in range(1, 2501)]
    sp.append(evs[:1000], [], "c1")
    sp.append(evs[1000:], [], "c2")
    runs = sp.fetch_runs(500, 1800, lines=True)
    assert [f.index is not None for f, _, _ in runs] == [True, True, True]       # frames of 1000, 1000, 500
    assert lines_of(runs) == b"".join(e.body + b"\n" for e in evs[500:2300])
    plain_runs = Spool(tmp_path).fetch_runs(500, 1800)
    assert [f.index is None for f, _, _ in plain_runs] == [True, True, True]
    assert lines_of([runs[0], plain_runs[1], runs[2]]) == lines_of(runs)     # indexed and decoded runs mixed
    now = time.time()
    assert [x for f, lo, hi in runs for x in f.latencies(now, lo, hi)] == [now - e.commit_ts for e in evs[500:2300]]
    sp.close()


def test_a_head_with_a_damaged_layout_is_still_refused(tmp_path):
    """A head whose lists do not hold the row's events: refused on both paths, as before."""
    head, _ = pack([MappedEvent("a", "t", "s", "p", 1.0, b"{}")])
    for lines in (False, True):
        with pytest.raises(ValueError, match="head has 1 events, the row says 2"):
            FrameHead(1, 2, None, head, lines=lines)


@compiled
def test_a_commit_time_is_reused_only_when_spelled_alike():
    """Times of one transaction are read once; one that only starts like the one before is read itself."""
    ts = [1.5, 1.55, 1.5, 15.0, 1.0, 10.0, 10.0, -1.0, -10.0, 1796181580.372952, 1796181580.3729525]
    raw = orjson.dumps([2, ["t"], 0, ["a"] * len(ts), [-1] * len(ts), ["s"] * len(ts), ["p"] * len(ts), ts,
                        [0] * len(ts)])
    got = index_values(raw, len(ts))
    assert got is not None and got[5] == ts


@compiled
@pytest.mark.parametrize("odd", ['"', "\\", "\n", "\x01", "\x7f", "é", "/"])
def test_texts_with_escapes_or_beyond_ascii_are_read_right_or_left_to_orjson(odd):
    """At every place in an 8-byte word and in the bytes after the last whole word: an id with an escape
    or a byte that is not printable ASCII is never cut from the head's JSON as it stands there."""
    for at in range(0, 20):
        for field in (3, 5, 6, 1):          # ids (taken as they stand), subjects, positions, types
            text = "x" * at + odd + "y" * (at % 5)
            fields: list = [2, ["t"], 0, ["a"], [0], ["s"], ["p"], [1.0], [1]]
            fields[field] = [text]
            raw = orjson.dumps(fields)
            got = index_values(raw, 1)
            if field == 3 or odd not in '"\\\n/':
                # ids must be plain; other texts with a \\u escape or beyond ASCII go to orjson
                assert got is None or (odd == "/" and got[2] == [text]), (field, at)
            else:
                assert got is not None and got == decoded_values(raw, 1), (field, at)
