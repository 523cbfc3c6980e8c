"""The compiled rows decoder (agent/_fastmy.c) against the generated pure-Python one (agent/binlog_rows.py),
the reference: generated TABLE_MAPs over the binlog column types (with their metadata, signedness,
charsets, JSON marks), generated row images (NULL bitmaps, partial images, values a server writes and
arbitrary bytes), the same bytes fed to both, the same values (types included) or both refusing."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import fastmy, myvalues as mv
from agent.binlog_rows import Column, TableMap, compile_rows_decoder
from agent.myvalues import _decimal_layout
from agent.rawjson import RawJson
from tests.plugins import property_examples

pytestmark = pytest.mark.skipif(not fastmy.compiled(), reason="agent._fastmy is not built (no C compiler)")

CHARSETS = [None, "utf8mb4", "binary", "latin1", "ascii"]


@st.composite
def columns(draw, index: int) -> Column:
    t = draw(st.sampled_from([
        mv.T_TINY, mv.T_SHORT, mv.T_INT24, mv.T_LONG, mv.T_LONGLONG, mv.T_FLOAT, mv.T_DOUBLE, mv.T_DATE,
        mv.T_NEWDECIMAL, mv.T_TIMESTAMP2, mv.T_DATETIME2, mv.T_TIME2, mv.T_YEAR, mv.T_VARCHAR, mv.T_STRING,
        mv.T_BLOB, mv.T_GEOMETRY, mv.T_BIT, mv.T_ENUM, mv.T_SET, mv.T_NULL, mv.T_TIMESTAMP, mv.T_DATETIME]))
    meta = None
    if t == mv.T_NEWDECIMAL:
        precision = draw(st.integers(1, 65))
        meta = (precision, draw(st.integers(0, min(precision, 30))))
    elif t in (mv.T_TIMESTAMP2, mv.T_DATETIME2, mv.T_TIME2):
        meta = draw(st.integers(0, 6))
    elif t == mv.T_VARCHAR:
        meta = draw(st.sampled_from([10, 255, 256, 1000]))
    elif t == mv.T_STRING:
        meta = draw(st.sampled_from([4, 16, 36, 255, 300]))
    elif t in (mv.T_BLOB, mv.T_GEOMETRY):
        meta = draw(st.integers(1, 4))
    elif t == mv.T_BIT:
        meta = (draw(st.integers(0, 7)), draw(st.integers(0, 3)))
    elif t in (mv.T_ENUM, mv.T_SET):
        meta = 1
    c = Column(index, t, meta, draw(st.booleans()))
    c.unsigned = draw(st.booleans())
    if t in (mv.T_VARCHAR, mv.T_STRING, mv.T_BLOB):
        c.charset = draw(st.sampled_from(CHARSETS))
        c.json = t == mv.T_BLOB and draw(st.booleans())
    if t in (mv.T_ENUM, mv.T_SET):
        c.values = ["a", "b", "c"]
    c.name = f"c{index}"
    return c


def _decimal_bytes(draw, precision: int, scale: int) -> bytes:
    """A DECIMAL value in MySQL's binary format (digit groups big-endian, sign bit flipped, inverted if < 0)."""
    ints, fracs, size = _decimal_layout(precision, scale)
    x = 0
    for n, d in ints + fracs:
        x = x << (8 * n) | draw(st.integers(0, 10 ** d - 1))
    x |= 1 << (size * 8 - 1)
    if draw(st.booleans()):
        x ^= (1 << size * 8) - 1
    return x.to_bytes(size, "big")


def _value(draw, c: Column) -> bytes:
    """The bytes of one non-NULL value: mostly what a server writes, sometimes arbitrary bytes."""
    t, m = c.type, c.meta
    fixed = {mv.T_TINY: 1, mv.T_SHORT: 2, mv.T_INT24: 3, mv.T_LONG: 4, mv.T_LONGLONG: 8, mv.T_FLOAT: 4,
             mv.T_DOUBLE: 8, mv.T_DATE: 3, mv.T_YEAR: 1, mv.T_TIMESTAMP: 4, mv.T_DATETIME: 8, mv.T_ENUM: 1,
             mv.T_SET: 1}
    if t in (mv.T_TINY, mv.T_SHORT, mv.T_INT24, mv.T_LONG, mv.T_LONGLONG):
        bits = 8 * fixed[t]          # the edges of the signed and unsigned ranges, and anything between
        edges = [0, 1, (1 << bits - 1) - 1, 1 << bits - 1, (1 << bits - 1) + 1, (1 << bits) - 1]
        v = draw(st.sampled_from(edges) | st.integers(0, (1 << bits) - 1))
        return v.to_bytes(fixed[t], "little")
    if t in fixed:
        return draw(st.binary(min_size=fixed[t], max_size=fixed[t]))
    if t == mv.T_NULL:
        return b""
    if t == mv.T_NEWDECIMAL:
        size = _decimal_layout(*m)[2]
        return draw(st.one_of(st.builds(lambda: _decimal_bytes(draw, *m)),
                              st.binary(min_size=size, max_size=size)))
    if t in (mv.T_TIMESTAMP2, mv.T_DATETIME2, mv.T_TIME2):
        n = {mv.T_TIMESTAMP2: 4, mv.T_DATETIME2: 5, mv.T_TIME2: 3}[t] + (m + 1) // 2
        return draw(st.binary(min_size=n, max_size=n))
    if t == mv.T_BIT:
        n = m[1] + (1 if m[0] else 0)
        return draw(st.binary(min_size=n, max_size=n))
    lenbytes = m if t in (mv.T_BLOB, mv.T_GEOMETRY) else (1 if m < 256 else 2)
    if c.json:
        raw = draw(st.sampled_from(['{"a": [1, 2.5, "x"]}', "[1,\n2]", "not json", '"\u20ac"', "1e400"])).encode()
    else:
        raw = draw(st.one_of(st.text(max_size=40).map(lambda s: s.encode()), st.binary(max_size=40)))
    if lenbytes == 1:
        raw = raw[:255]
    return len(raw).to_bytes(lenbytes, "little") + raw


@st.composite
def image(draw, cols: list[Column]) -> bytes:
    n = len(cols)
    nulls = draw(st.integers(0, (1 << n) - 1)) if draw(st.booleans()) else 0
    out = bytearray(nulls.to_bytes((n + 7) // 8 or 1, "little"))
    for i, c in enumerate(cols):
        if not nulls >> i & 1:
            out += _value(draw, c)
    return bytes(out)


@st.composite
def rows_events(draw):
    cols = [draw(columns(i)) for i in range(draw(st.integers(1, 14)))]
    tm = TableMap(7, "s", "t", cols, [0], True, b"")
    full = (1 << len(cols)) - 1
    kind = draw(st.sampled_from(["row", "update"]))
    present = full if draw(st.booleans()) else draw(st.integers(1, full))       # partial images (MINIMAL)
    present2 = full if draw(st.booleans()) else draw(st.integers(1, full))
    imgs = []
    for _ in range(draw(st.integers(1, 4))):
        imgs.append(draw(image([c for c in cols if present >> c.index & 1])))
        if kind == "update":
            imgs.append(draw(image([c for c in cols if present2 >> c.index & 1])))
    body = b"".join(imgs)
    prefix = draw(st.binary(max_size=3))
    return tm, kind, present, present2, prefix + body, len(prefix)


def _same(v):
    """A value with its type, floats by their bits (NaN == NaN here)."""
    if isinstance(v, dict):
        return {k: _same(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, [_same(x) for x in v])
    if isinstance(v, float):
        return ("float", struct.pack("<d", v))
    if isinstance(v, RawJson):
        return ("raw", v.text)
    return (type(v).__name__, v)


def _run(dec, buf: bytes, p: int):
    try:
        rows, q = dec(buf, p, len(buf))
    except (IndexError, struct.error, KeyError, ValueError):
        return "refused"
    # a decoder that read past the end is refused by the parser (agent/binlog.py) either way
    return _same(rows) if q == len(buf) else "refused"


@settings(max_examples=property_examples(600), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows_events(), st.data())
def test_compiled_rows_decoder_equals_the_pure_one(event, data):
    tm, kind, present, present2, buf, p = event
    pure = compile_rows_decoder(tm, kind, present, present2, force_pure=True)
    fast = compile_rows_decoder(tm, kind, present, present2, force_pure=False)
    assert not isinstance(fast, type(pure))            # really the C core (a partial of _fastmy.decode_rows)
    expected = _run(pure, buf, p)
    assert _run(fast, buf, p) == expected
    # the same event cut short: both refuse it (or, cut at a row boundary, agree on the rows before)
    cut = data.draw(st.integers(p, len(buf)))
    assert _run(fast, buf[:cut], p) == _run(pure, buf[:cut], p)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from([10 ** 30, "\ud800", "a\u0000b"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12)


@st.composite
def json_texts(draw) -> bytes:
    """JSON as MariaDB stores it (any spacing, escapes, big numbers, deep nesting) and texts that are not
    JSON (cut short, a byte changed, arbitrary bytes)."""
    v = draw(_json_values)
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 300))):
            v = [v]
    text = json.dumps(v, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2])),
                      separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])))
    raw = (draw(st.sampled_from(["", " ", "\t", "\r\n"])) + text
           + draw(st.sampled_from(["", " ", "\n"]))).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is", "as is", "cut", "byte", "random"]))
    if how == "cut":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif how == "byte" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif how == "random":
        raw = draw(st.binary(max_size=30) | st.sampled_from([b"1e400", b"-0", b"01", b"1.", b"[1,]", b"NaN",
                                                             b'"\\x"', b"tru", b'{"a" 1}', b"\xff"]))
    return raw


@settings(max_examples=property_examples(600), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(json_texts())
def test_compiled_json_text_equals_the_pure_one(raw):
    """MariaDB JSON columns (LONGTEXT marked JSON by the catalog): the C syntax check decides RawJson or
    string exactly as myvalues.json_text does."""
    c = Column(0, mv.T_BLOB, 4, True)
    c.charset, c.json, c.name = "utf8mb4", True, "j"
    tm = TableMap(1, "s", "t", [c], [0], True, b"")
    buf = b"\x00" + len(raw).to_bytes(4, "little") + raw
    pure = compile_rows_decoder(tm, "row", force_pure=True)
    fast = compile_rows_decoder(tm, "row", force_pure=False)
    assert _run(fast, buf, 0) == _run(pure, buf, 0)


def test_compiled_decoder_decodes_the_usual_values():
    """A fixed row through the C kinds (not only agreement: the values themselves)."""
    cols = [Column(0, mv.T_LONG, None, False), Column(1, mv.T_NEWDECIMAL, (12, 2), True),
            Column(2, mv.T_VARCHAR, 40, True), Column(3, mv.T_TIMESTAMP2, 6, True),
            Column(4, mv.T_DATE, None, True), Column(5, mv.T_BLOB, 2, True)]
    cols[2].charset = "utf8mb4"
    for i, c in enumerate(cols):
        c.name = f"c{i}"
    tm = TableMap(1, "s", "t", cols, [0], True, b"")
    dec = (b"\x80\x00\x00\x04\xd2\x2e"[::1])          # 1234.46
    sec = 1795428902                                  # 2026-11-23T10:15:02Z
    row = (b"\x00" + struct.pack("<i", -7) + dec + b"\x05h\xe2\x82\xacy" + sec.to_bytes(4, "big")
           + (123456).to_bytes(3, "big") + (2026 << 9 | 11 << 5 | 23).to_bytes(3, "little") + b"\x03\x00\x00\x01\xff")
    fast = compile_rows_decoder(tm, "row", force_pure=False)
    rows, p = fast(row, 0, len(row))
    assert p == len(row)
    assert rows == [{"c0": -7, "c1": "1234.46", "c2": "h€y", "c3": "2026-11-23T10:15:02.123456Z",
                     "c4": "2026-11-23", "c5": "AAH/"}]
    assert fast(bytearray(row), 0, len(row)) == (rows, p) == fast(memoryview(row), 0, len(row))


def test_without_the_extension_the_agent_says_so_once():
    """An interpreter where agent._fastmy cannot be imported: the pure decoders, and one warning."""
    code = """
import logging, sys
sys.modules['agent._fastmy'] = None          # an import that fails, as without a compiler at install
logging.basicConfig(level=logging.INFO, format='%(message)s')
from agent import fastmy
from agent.binlog_rows import Column, TableMap, compile_rows_decoder
tm = TableMap(1, 's', 't', [Column(0, 3, None, False)], [0], True, b'')
for _ in range(3):
    dec = compile_rows_decoder(tm, 'row')
    print(dec(b'\\x00\\x05\\x00\\x00\\x00', 0, 5))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("([{'@1': 5}], 5)") == 3
    assert r.stderr.count("compiled binlog decoder not available") == 1
