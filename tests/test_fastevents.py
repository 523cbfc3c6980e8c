"""The compiled event path (agent/_fastpg.c's render_row + render_event, agent/fastrow.py) against the pure
reference (pgoutput decode_tuple + pgvalues converters + the stream's row images + EventMapper._event):
generated pgoutput Insert / Update / Delete messages over every type, with old images of every kind, NULLs,
unchanged TOAST values, binary values and junk text, mapped by generated rules (fields, renames, changed,
key, on) must give byte-identical event bodies, ids and subjects, the same dead letters, or fail alike."""

from __future__ import annotations

import hashlib
import json
import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import config, fastpath, pgoutput as po, pgvalues as v
from agent.fastrow import RenderedRowChange, RowLayout
from agent.mapping import EventMapper, event_id
from agent.sources.postgres.stream import RelMeta, row_change
from tests.test_fastpath import OIDS, TYPES, junk, tuple_bytes
from tests.plugins import property_examples

needs_extension = pytest.mark.skipif(not fastpath.compiled(), reason="agent._fastpg is not built (no C compiler)")

RELID = 16500
POS = "000000000A1B2C3D:00000007"
TIME = "2026-11-23T10:00:00.123456Z"


def json_docs():
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
    spaced = st.builds(lambda d, sep: json.dumps(d, ensure_ascii=False).replace(",", sep), docs,
                       st.sampled_from([",", ", ", " ,\t"]))
    odd = st.sampled_from(['{"a":1,}', "[1 2]", "01", "1.", "-", "-0", "1e400", "-1E-400", '"\\x"', '"\\u12"',
                           '"\\ud800"', '"a\x01"', "nan", "NaN", " true ", "\ufefftrue", "tru", "[" * 300 + "]" * 300,
                           "[" * 150 + "]" * 150, '{"a" 1}', '{1: 2}', "[,]", "", " ", '"\\/"', "1 2", "{}", "[]",
                           '{"a": {"b": [1, 2.50, {"c": null}]}}', "123456789012345678901234567890"])
    return docs.map(json.dumps) | spaced | odd


TYPES = {**TYPES, v.JSON: json_docs(), v.JSONB: json_docs()}


def relation_msg(oids, keys) -> bytes:
    out = b"R" + struct.pack(">I", RELID) + b"public\0t\0" + b"d" + struct.pack(">H", len(oids))
    for i, typ in enumerate(oids):
        out += bytes([1 if i in keys else 0]) + f"c{i}".encode() + b"\0" + struct.pack(">Ii", typ, -1)
    return out


def decoder(pure: bool, oids, keys):
    d = po.Decoder(pure=pure)
    rel = d.decode(relation_msg(oids, keys))
    d.set_converters(RELID, v.converters(oids))
    key_index = tuple(sorted(keys))
    rel.info = RelMeta("public.t", True, tuple(f"c{i}" for i in key_index), key_index,
                       RowLayout(rel.names, key_index))
    return d


@st.composite
def value(draw, oid, usual_only=False):
    kind = "t" if usual_only else draw(st.sampled_from("ttttttttttttnnub"))
    if kind == "t":
        if not usual_only and draw(st.integers(0, 14)) == 0:
            return ("t", draw(junk))
        return ("t", draw(TYPES[oid]).encode())
    if kind == "b":
        return ("b", draw(st.binary(max_size=6)))
    return (kind, None)


@st.composite
def tuples(draw, oids, usual_only=False):
    return [draw(value(oid, usual_only)) for oid in oids]


@st.composite
def cases(draw):
    oids = draw(st.lists(st.sampled_from(OIDS), min_size=1, max_size=10))
    n = len(oids)
    keys = draw(st.sets(st.integers(0, n - 1), max_size=min(n, 3)))
    usual = draw(st.booleans())             # half the rows in the forms the source's settings produce
    new = draw(tuples(oids, usual))
    old = draw(tuples(oids, usual))
    if draw(st.booleans()):                 # updates where some columns keep their value
        old = [o if draw(st.booleans()) else nw for o, nw in zip(old, new)]
    key_old = [c if i in keys else ("n", None) for i, c in enumerate(old)]
    rid = struct.pack(">I", RELID)
    msg = draw(st.sampled_from([
        b"I" + rid + b"N" + tuple_bytes(new),
        b"U" + rid + b"N" + tuple_bytes(new),
        b"U" + rid + b"O" + tuple_bytes(old) + b"N" + tuple_bytes(new),
        b"U" + rid + b"K" + tuple_bytes(key_old) + b"N" + tuple_bytes(new),
        b"D" + rid + b"O" + tuple_bytes(old),
        b"D" + rid + b"K" + tuple_bytes(key_old),
    ]))
    return oids, keys, msg, draw(rules(n))


@st.composite
def rules(draw, n):
    cols = [f"c{i}" for i in range(n)]
    out = []
    for i in range(draw(st.integers(0, 3))):
        r: dict = {"type": f"t.r{i}", "table": "public.t"}
        if draw(st.booleans()):
            r["on"] = draw(st.lists(st.sampled_from(["insert", "update", "delete"]), min_size=1, unique=True))
        field_cols = cols
        if draw(st.booleans()):
            field_cols = draw(st.lists(st.sampled_from(cols), min_size=1, max_size=n, unique=True))
            if draw(st.booleans()):
                r["fields"] = field_cols
            else:                               # renames, in an order of their own
                outs = draw(st.lists(st.sampled_from(["a", "b", "é x", "q\"", "c0", "c1", "zz", "k", "m", "n", "p\\"]),
                                     min_size=len(field_cols), max_size=len(field_cols), unique=True))
                r["fields"] = dict(zip(outs, field_cols))
        if draw(st.booleans()):
            r["changed"] = draw(st.lists(st.sampled_from(field_cols), min_size=1, unique=True))
        if draw(st.booleans()):
            r["key"] = draw(st.lists(st.sampled_from(cols), min_size=1, max_size=2, unique=True))
        out.append(r)
    return out


def mapper(event_rules, table: str = "public.t", pure: bool = False) -> EventMapper:
    return EventMapper(config.parse({
        "agent": {"name": "east-1"},
        "source": {"kind": "postgres", "dsn": "postgresql://cdc@127.0.0.1/erp", "tables": [table]},
        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}], "events": event_rules}), pure=pure)


def outcome(pure: bool, oids, keys, msg, event_rules):
    d = decoder(pure, oids, keys)
    try:
        m = d.decode(msg)
    except po.DecodeError as e:
        return ("DecodeError", str(e)), None
    ch = row_change(m, m.relation.info, POS, TIME, 1795428000.123456, "7412")
    try:
        events, failures = mapper(event_rules, pure=pure).map([ch])
    except Exception as e:      # a binary ('b') value orjson cannot write: raised alike on both paths
        return (type(e).__name__, str(e)), ch
    return ([(e.id, e.type, e.subject, e.position, e.commit_ts, e.body, e.outbox_row, e.only_target)
             for e in events], [(f.event_type, f.position, f.reason, f.change) for f in failures]), ch


@needs_extension
@settings(max_examples=property_examples(2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_and_pure_events_are_byte_identical(case):
    oids, keys, msg, event_rules = case
    want, pch = outcome(True, oids, keys, msg, event_rules)
    got, fch = outcome(False, oids, keys, msg, event_rules)
    assert got == want
    if fch is not None and pch is not None:
        assert (fch.before, fch.after, fch.unavailable) == (pch.before, pch.after, pch.unavailable)


MIXED = [v.INT8, v.INT4, v.TEXT, v.NUMERIC, v.FLOAT4, v.BOOL, v.TIMESTAMPTZ, v.DATE, v.VARCHAR, v.JSONB, v.UUID,
         v.BYTEA, v.TIMESTAMP]
ROW = [b"42", b"7", "Åsa | \"q\"".encode(), b"12.50", b"0.25", b"t", b"2026-11-23 10:00:00.5+00", b"2026-11-23",
       b"note", b'{"a": [1, 2]}', b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", b"\\x00ff", b"2026-11-23 10:00:00"]


@needs_extension
@pytest.mark.parametrize("msg_kind", ["I", "U-O", "U", "D-K", "D-O"])
def test_usual_rows_are_rendered_in_c(msg_kind, monkeypatch):
    """The common case really takes the compiled path: the row is rendered, no Python converter runs, and
    render_event makes the event (it does not hand it back to the pure path)."""
    rid = struct.pack(">I", RELID)
    new = [("t", t) for t in ROW]
    old = [("t", b"41" if i == 0 else t) for i, t in enumerate(ROW)]
    old[4] = ("t", b"-0")
    msg = {"I": b"I" + rid + b"N" + tuple_bytes(new), "U": b"U" + rid + b"N" + tuple_bytes(new),
           "U-O": b"U" + rid + b"O" + tuple_bytes(old) + b"N" + tuple_bytes(new),
           "D-K": b"D" + rid + b"K" + tuple_bytes([c if i == 0 else ("n", None) for i, c in enumerate(old)]),
           "D-O": b"D" + rid + b"O" + tuple_bytes(old)}[msg_kind]
    d = decoder(False, MIXED, {0})
    rel = d.relations[RELID]
    calls: list[bytes] = []
    rel.converters = [lambda b, c=c: calls.append(b) or c(b) for c in v.converters(MIXED)]
    rel._kinds = fastpath.kinds(v.converters(MIXED))
    m = d.decode(msg)
    assert isinstance(m, po.RenderedRow) and calls == []
    ch = row_change(m, rel.info, POS, TIME, 1.0, "7412")
    assert type(ch) is RenderedRowChange
    made = []
    real = fastpath.render_event
    monkeypatch.setattr(fastpath, "render_event", lambda *a: made.append(real(*a)) or made[-1])
    rules = [{"type": "t.all", "table": "public.t"},
             {"type": "t.some", "table": "public.t", "fields": {"id": "c0", "name": "c2", "f": "c4"}, "key": ["c0"]}]
    m = mapper(rules)
    runs = []
    real_run = m._render_events
    assert real_run is not None
    m._render_events = lambda changes, start, run, out, store=None: \
        runs.append(real_run(changes, start, run, out, store)) or runs[-1]
    events, failures = m.map([ch])
    # the whole change in one render_events call (both rules), none through the per-change render_event
    assert calls == [] and not failures and runs == [1] and made == [] and len(events) == 2
    assert [e.id for e in events] == [event_id("east-1", POS, "t.all"), event_id("east-1", POS, "t.some")]
    ev = orjson.loads(events[1].body)
    image = {"id": 41 if msg_kind.startswith("D") else 42, "name": ROW[2].decode(), "f": 0.25}
    if msg_kind.startswith("D"):
        image = {"id": 41} if msg_kind == "D-K" else dict(image, f=-0.0)
    assert ev["data"]["after" if msg_kind[0] in "IU" else "before"] == image
    assert ev["subject"] == ("41" if msg_kind.startswith("D") else "42")


FLOAT_TEXTS = ["0", "-0", "42", "-42", "0.5", "-0.25", "0.0001", "0.00012345678901234", "0.00001", "-0.00001",
               "123456789012345", "1234567890123456", "12345678.9012345", "12345678.90123456", "0.1", "0.10",
               "1.50", "00.5", "0.000", "1e+16", "1e-05", "9007199254740993", "0.30000000000000004", "100",
               "3.4028235e+38", "1.1754944e-38", "0.333333333333333"]


@needs_extension
@pytest.mark.parametrize("oid", [v.FLOAT8, v.FLOAT4])
def test_float_texts_render_alike(oid):
    """The float texts render_row writes as they are (repr_as_is) and those about its limits: the same events
    as the pure path, which makes them with float() and orjson."""
    rid = struct.pack(">I", RELID)
    rules = [{"type": "t.all", "table": "public.t"}]
    for text in FLOAT_TEXTS:
        msg = b"I" + rid + b"N" + tuple_bytes([("t", b"1"), ("t", text.encode())])
        got = outcome(False, [v.INT4, oid], {0}, msg, rules)[0]
        assert got == outcome(True, [v.INT4, oid], {0}, msg, rules)[0], text


@needs_extension
@pytest.mark.parametrize("n", [0, 1, 55, 111, 127, 128, 129, 255, 256, 257, 1000])
def test_blake2b_matches_hashlib(n):
    data = bytes(range(256)) * 4
    assert fastpath._fastpg.blake2b16(data[:n]) == hashlib.blake2b(data[:n], digest_size=16).hexdigest()


@needs_extension
@settings(max_examples=property_examples(400), deadline=None)
@given(st.lists(st.binary(max_size=160), max_size=11))
def test_blake2b_four_at_a_time_matches_hashlib(messages):
    """render_events hashes the ids of up to four changes at once (agent/fastpg_blake4.c, one message per
    AVX2 lane; a message over one block, and a CPU without AVX2, take the one-at-a-time code): each id is
    hashlib's, whatever the lengths and however many share a call (lists of 0-11: partial groups of four)."""
    got = fastpath._fastpg.blake2b16_many(messages)
    assert got == [hashlib.blake2b(m, digest_size=16).hexdigest() for m in messages]


@needs_extension
@settings(max_examples=property_examples(1500), deadline=None)
@given(json_docs() | st.text(max_size=12))
def test_json_values_alike(text):
    """json/jsonb text: verbatim where the C validator says JSON, else the converter's form, as on the pure path."""
    rid = struct.pack(">I", RELID)
    msg = b"I" + rid + b"N" + tuple_bytes([("t", b"1"), ("t", text.encode())])
    want, _ = outcome(True, [v.INT8, v.JSONB], {0}, msg, [])
    got, ch = outcome(False, [v.INT8, v.JSONB], {0}, msg, [])
    assert type(ch) is RenderedRowChange and got == want


# UTF-8 sequences, valid and not, that utf8_valid must judge as Python's strict decoder does
UTF8_PIECES = ["é".encode(), "€".encode(), "𝄞".encode(), b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
               b"\xe2\x82", b"\xff", b"\x80", b"\xf0\x9d\x84"]


@needs_extension
@settings(max_examples=property_examples(1500), deadline=None)
@given(st.integers(0, 20), st.lists(st.sampled_from(UTF8_PIECES), max_size=3), st.integers(0, 20),
       st.sampled_from([v.TEXT, v.JSONB]))
def test_utf8_about_the_8_byte_steps_alike(lead, pieces, tail, oid):
    """Text and json values with (in)valid UTF-8 at every offset from the 8-byte ASCII steps of utf8_valid."""
    rid = struct.pack(">I", RELID)
    text = b"a" * lead + b"b".join(pieces) + b"c" * tail
    if oid == v.JSONB:
        text = b'"' + text + b'"'
    msg = b"I" + rid + b"N" + tuple_bytes([("t", b"1"), ("t", text)])
    assert outcome(False, [v.INT8, oid], {0}, msg, [])[0] == outcome(True, [v.INT8, oid], {0}, msg, [])[0]


@needs_extension
def test_database_messages_render_alike(pg_db):
    """The messages a real server sends for every type (tests/test_values_differential.py's table and value
    generator, written under several session settings), as inserts, updates with a full old image and
    deletes: the compiled path renders them and its events are the pure path's, byte for byte."""
    import random

    from tests.test_values_differential import PG_COLUMNS, PG_WRITERS, ROWS, SEED, pg_values

    rng = random.Random(SEED)
    cols = ", ".join(f"{c} {t}" for c, t in PG_COLUMNS)
    pg_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {cols}); ALTER TABLE vals REPLICA IDENTITY FULL; "
                  "CREATE PUBLICATION p FOR TABLE vals")
    pg_db.execute("SELECT pg_create_logical_replication_slot('render_slot', 'pgoutput')")
    placeholders = ", ".join(f"%s::{t}" for _, t in PG_COLUMNS)
    sets = ", ".join(f"{c} = %s::{t}" for c, t in PG_COLUMNS)
    conns = [pg_db.connect() for _ in PG_WRITERS]
    try:
        for conn, setting in zip(conns, PG_WRITERS):
            conn.execute(setting)
        for i in range(ROWS):
            row = pg_values(rng, i)
            conns[i % len(conns)].execute(f"INSERT INTO vals VALUES (%s, {placeholders})",
                                          [i] + [row[c] for c, _ in PG_COLUMNS])
        for i in range(0, ROWS, 2):
            row = pg_values(rng, None)
            conns[i % len(conns)].execute(f"UPDATE vals SET {sets} WHERE id = %s",
                                          [row[c] for c, _ in PG_COLUMNS] + [i])
        conns[0].execute("DELETE FROM vals WHERE id % 3 = 0")
    finally:
        for conn in conns:
            conn.close()
    with pg_db.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'iso_8601'; "
                     "SET extra_float_digits = 1; SET bytea_output = 'hex'")
        data = [bytes(r[0]) for r in conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes('render_slot', NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'p')").fetchall()]
        types = {}
        for oid, name, typtype, cat, elem, base, delim in conn.execute(
                "SELECT oid::int8, typname::text, typtype::text, typcategory::text, typelem::int8, "
                "typbasetype::int8, typdelim::text FROM pg_type"):
            types[oid] = v.TypeInfo(oid, name, typtype, cat, elem, base, delim)
    rules = [{"type": "vals.row", "table": "public.vals"},
             {"type": "vals.some", "table": "public.vals", "fields": {"k": "id", "x": PG_COLUMNS[0][0],
                                                                      "y": PG_COLUMNS[-1][0]}}]
    bodies: dict[bool, list] = {}
    kinds: dict[bool, list] = {}
    for pure in (True, False):
        m = mapper(rules, "public.vals", pure=pure)
        d = po.Decoder(pure=pure)
        changes = []
        for i, raw in enumerate(data):
            msg = d.decode(raw)
            if isinstance(msg, po.Relation):
                d.set_converters(msg.oid, v.converters([c.type_oid for c in msg.columns], types))
                key_index = tuple(j for j, c in enumerate(msg.columns) if c.key)
                msg.info = RelMeta("public.vals", True, ("id",), key_index, RowLayout(msg.names, key_index))
            elif msg.kind in "IUD":
                changes.append(row_change(msg, msg.relation.info, f"{i:016X}:00000001", TIME, 1.0, "7"))
        events, failures = m.map(changes)
        assert not failures
        bodies[pure] = [(e.id, e.subject, e.body) for e in events]
        kinds[pure] = [type(c).__name__ for c in changes]
    assert bodies[False] == bodies[True]
    assert len(bodies[True]) == 2 * (ROWS + ROWS // 2 + len(range(0, ROWS, 3)))
    # most rows take the compiled path (the rest: values in forms only the pure path reproduces)
    assert kinds[False].count("RenderedRowChange") > 0.5 * len(kinds[False])


@needs_extension
@settings(max_examples=property_examples(300), deadline=None)
@given(st.binary(max_size=200))
def test_render_event_refuses_what_render_row_did_not_make(junk_row):
    """render_event trusts only its own layout: any other bytes are a ValueError, never a crash."""
    plan = fastpath.event_plan("a", "t", "s", ["c0", "c1"], ["c0"], (0,), None, None)
    try:
        fastpath.render_event(junk_row, plan, POS, TIME, "1")
    except ValueError:
        pass
