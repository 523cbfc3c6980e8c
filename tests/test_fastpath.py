"""The compiled tuple decoder (agent/_fastpg.c) against the pure-Python reference (agent/pgoutput.py with
agent/pgvalues.py's converters): generated pgoutput messages over every supported type, usual and edge
values, must decode to identical values (type and value) and identical change JSON, or fail alike."""

from __future__ import annotations

import logging
import shutil
import struct
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import fastpath, pgoutput as po, pgvalues as v
from agent.changes import RowChange
from agent.mapping import change_to_json
from agent.rawjson import RawJson
from tests.plugins import property_examples

needs_extension = pytest.mark.skipif(not fastpath.compiled(), reason="agent._fastpg is not built (no C compiler)")


def test_extension_is_built_where_a_compiler_is():
    """A broken build must not hide behind the skips below: with gcc and Python.h here, pip built it."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("gcc") and headers.exists()):
        pytest.skip("no C compiler or Python headers: the pure path is all there is")
    assert fastpath.compiled(), f"agent._fastpg failed to build or import: {fastpath._import_error}"

# ---------------------------------------------------------------- PostgreSQL text forms, usual and odd

digits = st.text("0123456789", min_size=1, max_size=6)
junk = st.binary(max_size=12) | st.text(max_size=12).map(str.encode)


def years():
    return st.one_of(st.integers(1, 9999).map(lambda y: f"{y:04d}"), st.integers(10000, 294276).map(str))


def date_text():
    usual = st.builds(lambda y, m, d, bc: f"{y}-{m:02d}-{d:02d}" + (" BC" if bc else ""),
                      years(), st.integers(1, 12), st.integers(1, 28), st.booleans())
    return usual | st.sampled_from(["infinity", "-infinity", "2026-1-01", "20-06-2026"])


def clock():
    return st.builds(lambda h, m, s, f: f"{h:02d}:{m:02d}:{s:02d}" + (f".{f}" if f else ""),
                     st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
                     st.none() | st.text("0123456789", min_size=1, max_size=6))


def ts_text(zone: bool):
    offsets = st.sampled_from(["+00", "+00", "+05:30", "-08", "+01:02:03", "-00"]) if zone else st.just("")
    usual = st.builds(lambda d, c, o, bc: f"{d} {c}{o}" + (" BC" if bc else ""),
                      st.builds(lambda y, m, d: f"{y}-{m:02d}-{d:02d}", years(), st.integers(1, 12),
                                st.integers(1, 28)), clock(), offsets, st.booleans())
    return usual | st.sampled_from(["infinity", "-infinity", "2026-11-23T10:00:00+00", "2026-11-23 10:00:00.+00"])


def float_text():
    return (st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
            | st.floats(allow_nan=False, allow_infinity=False).map(repr)
            # PostgreSQL's forms (an integral value without ".0"), and decimals about the limits of the forms
            # render_row writes as they are (repr_as_is: 15 significant digits, 3 zeros after "0.")
            | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).removesuffix(".0"))
            | st.from_regex(r"-?(0|[1-9][0-9]{0,16})(\.0{0,5}[0-9]{0,16})?", fullmatch=True)
            | st.sampled_from(["0", "-0", "0.0001", "0.00001", "-0.0001234", "123456789012345", "1234567890123456",
                               "0.10", "00.5", "1.50", "0.000", "9007199254740993", "0.1000000000000001"])
            | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309", "-1e-400", "1.", ".5", "-", "", "1e",
                               "0x10", " 1.5", "1_0.5", "1.5e+07", "12345678901234567890123456789012345678901234567890"
                               "1234567890.5"]))


def int_text():
    return (st.integers(-(2 ** 63), 2 ** 63 - 1).map(str) | st.integers(-(10 ** 30), 10 ** 30).map(str)
            | st.sampled_from(["-0", "007", "+5", " 7", "1_000", "-", "", "9" * 19, "-" + "9" * 18, "1.5"]))


def bytea_text():
    hexed = st.binary(max_size=40).map(lambda b: "\\x" + b.hex())
    return (hexed | hexed.map(str.upper).map(lambda s: "\\x" + s[2:])
            | st.sampled_from(["\\x", "\\x0", "\\xzz", "abc\\\\def\\001", "\\", "plain"]))


def array_text():
    elem = st.one_of(st.just("NULL"), st.just('"NULL"'), st.integers(-99, 99).map(str),
                     st.text(min_size=1, max_size=5).map(
                         lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'))
    return st.lists(elem, max_size=5).map(lambda xs: "{" + ",".join(xs) + "}")


def json_text():
    return st.sampled_from(['{"a": 1}', '{"big": 123456789012345678901234567890, "f": 1e400}', "[1, 2.50, null]",
                            '"x"', "3.141592653589793238", '{"a":\n1}', "not json"])


# type oid -> text strategy; every type the converters know, plus text forms they pass through
TYPES = {
    v.INT2: int_text(), v.INT4: int_text(), v.INT8: int_text(), v.OID: int_text(),
    v.NUMERIC: st.sampled_from(["12.50", "NaN", "Infinity", "-Infinity", "0.000001", "-99999999999999999999.5"])
    | digits,
    v.FLOAT4: float_text(), v.FLOAT8: float_text(),
    v.BOOL: st.sampled_from(["t", "f", "true", ""]),
    v.TEXT: st.text(max_size=20), v.VARCHAR: st.text(max_size=20),
    v.BPCHAR: st.text(max_size=5).map(lambda s: s + "  "),
    v.NAME: st.text(max_size=10), v.UUID: st.uuids().map(str),
    v.DATE: date_text(), v.TIME: clock(),
    v.TIMETZ: st.builds(lambda c, o: c + o, clock(), st.sampled_from(["+00", "-05:30"])),
    v.TIMESTAMP: ts_text(False), v.TIMESTAMPTZ: ts_text(True),
    v.INTERVAL: st.sampled_from(["P1Y2M3DT4H5M6.5S", "1 year 2 mons -3 days +04:05:06.5", "00:00:00"]),
    v.BYTEA: bytea_text(), v.JSON: json_text(), v.JSONB: json_text(),
    1007: array_text(), 1009: array_text(), 1231: st.just("{1.50,NaN,NULL}"),
    1185: st.just('{"2026-11-23 10:00:00+00",NULL}'),
}
OIDS = sorted(TYPES)


@st.composite
def column_values(draw):
    """(type oids, tuple columns): each column NULL, unchanged TOAST, binary, text of its type, or junk bytes."""
    oids = draw(st.lists(st.sampled_from(OIDS), min_size=1, max_size=12))
    cols = []
    for oid in oids:
        kind = draw(st.sampled_from("tttttttnub"))
        if kind == "t":
            raw = draw(TYPES[oid].map(str.encode) | junk) if draw(st.integers(0, 9)) == 0 else draw(TYPES[oid]).encode()
            cols.append(("t", raw))
        elif kind == "b":
            cols.append(("b", draw(st.binary(max_size=8))))
        else:
            cols.append((kind, None))
    return oids, cols


def tuple_bytes(cols) -> bytes:
    out = struct.pack(">H", len(cols))
    for kind, raw in cols:
        out += kind.encode() + (struct.pack(">I", len(raw)) + raw if raw is not None else b"")
    return out


def relation(oid: int, oids) -> bytes:
    out = b"R" + struct.pack(">I", oid) + b"public\0t\0" + b"f" + struct.pack(">H", len(oids))
    for i, typ in enumerate(oids):
        out += bytes([1 if i == 0 else 0]) + f"c{i}".encode() + b"\0" + struct.pack(">Ii", typ, -1)
    return out


def typed(x):
    """A value with its type at every level: 1 == True == 1.0 must not hide a difference."""
    if isinstance(x, list):
        return ("list", [typed(e) for e in x])
    return (type(x).__name__, x if x == x else "nan")


def outcome(decoder: po.Decoder, msg: bytes):
    try:
        m = decoder.decode(msg)
    except po.DecodeError:
        return "DecodeError", None
    return typed(m.new), m


def change_json(ch: RowChange):
    try:
        return change_to_json(ch)
    except TypeError as e:          # e.g. an integer beyond 64 bits, which no integer column holds
        return f"TypeError: {e}"


def decoders(oids):
    pure, fast = po.Decoder(pure=True), po.Decoder(pure=False)
    assert fast._decode_tuple is not po.decode_tuple and pure._decode_tuple is po.decode_tuple
    for d in (pure, fast):
        d.decode(relation(16400, oids))
        d.set_converters(16400, v.converters(oids))
    return pure, fast


@needs_extension
@settings(max_examples=property_examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(column_values())
def test_compiled_and_pure_decode_alike(case):
    oids, cols = case
    pure, fast = decoders(oids)
    msg = b"I" + struct.pack(">I", 16400) + b"N" + tuple_bytes(cols)
    (want, pm), (got, fm) = outcome(pure, msg), outcome(fast, msg)
    assert got == want
    if pm is not None:
        names = pure.relations[16400].names
        # what a source puts in a row image: no marker, no 'b' columns (the agent asks for text format)
        row = {n: x for n, x in zip(names, pm.new) if x is not po.UNCHANGED and type(x) is not bytes}
        frow = {n: x for n, x in zip(names, fm.new) if x is not po.UNCHANGED and type(x) is not bytes}
        ch = RowChange("public.t", "insert", None, row, "0" * 16, "2026-11-23T10:00:00.000000Z", 0.0)
        fch = RowChange("public.t", "insert", None, frow, "0" * 16, "2026-11-23T10:00:00.000000Z", 0.0)
        assert change_json(fch) == change_json(ch)


@needs_extension
@settings(max_examples=property_examples(300), deadline=None)
@given(column_values(), st.integers(0, 40))
def test_truncated_and_corrupt_tuples_fail_alike(case, cut):
    oids, cols = case
    pure, fast = decoders(oids)
    old = tuple_bytes(cols)
    for msg in (b"U" + struct.pack(">I", 16400) + b"O" + old + b"N" + old[:max(0, len(old) - cut)],
                b"D" + struct.pack(">I", 16400) + b"K" + old[:2] + b"x" + old[3:],
                b"I" + struct.pack(">I", 16400) + b"N" + struct.pack(">H", len(cols) + 1) + old[2:]):
        assert outcome(fast, msg)[0] == outcome(pure, msg)[0]


@needs_extension
def test_usual_forms_take_the_compiled_conversion():
    """The C conversions themselves (not a detour through the Python converter) give the reference forms."""
    oids = [v.INT8, v.NUMERIC, v.FLOAT8, v.BOOL, v.TIMESTAMPTZ, v.DATE, v.TIMESTAMP, v.BYTEA, v.TEXT, v.JSONB]
    texts = [b"-9223372036854775", b"12.50", b"0.1", b"t", b"2026-11-23 10:00:00.5+00", b"2026-11-23",
             b"2026-11-23 10:00:00.25", b"\\x00ff10", "naïve".encode(), b'{"g": 1, "t": ["a"]}']
    calls = []
    convs = [lambda b, c=c: calls.append(b) or c(b) for c in v.converters(oids)]
    got, _ = fastpath._fastpg.decode_tuple(tuple_bytes([("t", t) for t in texts]), 0, convs,
                                           fastpath.kinds(v.converters(oids)))
    assert calls == []
    assert got == [-9223372036854775, "12.50", 0.1, True, "2026-11-23T10:00:00.500000Z", "2026-11-23",
                   "2026-11-23T10:00:00.250000", "AP8Q", "naïve", RawJson('{"g": 1, "t": ["a"]}')]
    assert got == [c(t) for c, t in zip(v.converters(oids), texts)]


@needs_extension
def test_pure_env_forces_the_fallback_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setenv(fastpath.PURE_ENV, "1")
    monkeypatch.setattr(fastpath, "_reported", False)
    with caplog.at_level(logging.INFO, logger="agent.fastpath"):
        assert po.Decoder()._decode_tuple is po.decode_tuple
        assert po.Decoder()._decode_tuple is po.decode_tuple
    assert [r.getMessage() for r in caplog.records] == [
        "CDC_AGENT_PURE is set: decoding PostgreSQL changes in pure Python"]
    monkeypatch.delenv(fastpath.PURE_ENV)
    assert po.Decoder()._decode_tuple is fastpath._fastpg.decode_tuple


def test_missing_extension_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv(fastpath.PURE_ENV, raising=False)
    monkeypatch.setattr(fastpath, "_fastpg", None)
    monkeypatch.setattr(fastpath, "_import_error", "No module named 'agent._fastpg'")
    monkeypatch.setattr(fastpath, "_reported", False)
    with caplog.at_level(logging.INFO, logger="agent.fastpath"):
        for _ in range(3):
            assert po.Decoder()._decode_tuple is po.decode_tuple
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    assert "compiled decoder not available" in caplog.records[0].getMessage()


def test_an_older_build_of_the_extension_is_not_used(monkeypatch, caplog):
    """An agent/_fastpg built from older sources (an update without a rebuild) lacks the newer functions:
    the agent runs on the pure path and says why, instead of failing on the first change."""
    import importlib
    import sys
    import types

    old = types.ModuleType("agent._fastpg")
    old.decode_tuple = old.init = lambda *a: None          # what the first version of the extension had
    old.__file__ = "/somewhere/agent/_fastpg.so"
    import agent
    real = sys.modules.get("agent._fastpg")
    monkeypatch.setitem(sys.modules, "agent._fastpg", old)
    monkeypatch.setattr(agent, "_fastpg", old, raising=False)    # (`from . import _fastpg` looks here first)
    monkeypatch.delenv(fastpath.PURE_ENV, raising=False)
    try:
        importlib.reload(fastpath)
        assert fastpath._fastpg is None and "older build without render_row" in fastpath._import_error
        with caplog.at_level(logging.INFO, logger="agent.fastpath"):
            assert po.Decoder()._decode_tuple is po.decode_tuple and po.Decoder()._render is None
            assert fastpath.dict_renderer() is None
        assert len(caplog.records) == 1 and "older build" in caplog.records[0].getMessage()
    finally:
        monkeypatch.undo()
        if real is not None:
            sys.modules["agent._fastpg"] = real
        importlib.reload(fastpath)
