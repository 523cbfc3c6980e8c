"""The MySQL / MariaDB rows renderer (agent/fastmy_render.c: binlog row images straight to their values' JSON
text) against the reference: the pure-Python rows decoder's dicts, rendered by render_dicts and mapped by
the pure EventMapper. Generated TABLE_MAPs over the binlog column types and generated FULL row images (the
strategies of tests/test_fastmy.py) must give: the same rows refused or accepted, each rendered row the
same cells and text render_dicts makes of the dicts, and byte-identical events (ids, subjects, bodies)
from the RenderedRowChanges the source makes as from the dict RowChanges of the pure path."""

from __future__ import annotations

import struct
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config, fastmy, fastpath, myvalues as mv
from agent.binlog import Rows
from agent.binlog_rows import Column, TableMap, compile_rows_decoder, compile_rows_renderer
from agent.changes import RowChange
from agent.fastrow import RenderedRowChange, RowLayout
from agent.mapping import EventMapper
from tests.test_fastevents import rules
from tests.test_fastmy import _run, _same, columns, image
from tests.plugins import property_examples

pytestmark = pytest.mark.skipif(not (fastmy.compiled() and fastpath.compiled()),
                                reason="agent._fastmy or agent._fastpg is not built (no C compiler)")


@pytest.fixture(autouse=True)
def _compiled_side(monkeypatch):
    """These tests hold the compiled renderer to the pure rows, so their compiled side is built with the
    extension even when the suite runs on the pure path (CDC_AGENT_PURE=1); the pure side asks for itself."""
    monkeypatch.delenv(fastmy.PURE_ENV, raising=False)

HEAD, CELL = struct.Struct("=ccHHH"), struct.Struct("=IIB3x")


def cells(rendered: bytes) -> tuple:
    """A rendered row as (head, [(text, tag)...]): what render_event reads of it (the bytes between a
    cell's fields are not part of it)."""
    op, old, ncols, ntuples, _ = HEAD.unpack_from(rendered, 0)
    n = ncols * ntuples
    text = rendered[HEAD.size + CELL.size * n:]
    out = []
    for i in range(n):
        off, ln, tag = CELL.unpack_from(rendered, HEAD.size + CELL.size * i)
        out.append((text[off:off + ln], tag))
    return (op, old, ncols, ntuples), out


@st.composite
def full_rows_events(draw):
    cols = [draw(columns(i)) for i in range(draw(st.integers(1, 10)))]    # (rules() renames up to 11)
    tm = TableMap(7, "s", "t", cols, [0], True, b"")
    op = draw(st.sampled_from(["insert", "update", "delete"]))
    imgs = []
    for _ in range(draw(st.integers(1, 4))):
        imgs.append(draw(image(cols)))
        if op == "update":
            imgs.append(draw(image(cols)))
    prefix = draw(st.binary(max_size=3))
    return tm, op, prefix + b"".join(imgs), len(prefix)


def _rendered(tm: TableMap, op: str, buf: bytes, p: int):
    render = compile_rows_renderer(tm, op)
    assert render is not None
    try:
        out = render(buf, p, len(buf))
    except (IndexError, struct.error, KeyError, ValueError):
        return "refused"
    return "refused" if out is None or out[2] != len(buf) else out


def _mapper(pure: bool, event_rules) -> EventMapper:
    return EventMapper(config.parse({
        "agent": {"name": "m1"},
        "source": {"kind": "mysql", "dsn": "mysql://cdc@127.0.0.1:3306/s", "tables": ["s.t"]},
        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}],
        "events": [dict(r, table="s.t") for r in event_rules]}), pure=pure)


def _events(mapper: EventMapper, changes: list):
    try:
        events, failures = mapper.map(changes)
    except Exception as e:      # (a value orjson refuses: raised alike on both paths)
        return type(e).__name__, str(e)
    return ([(e.id, e.type, e.subject, e.body) for e in events], [(f.event_type, f.reason, f.change) for f in failures])


@settings(max_examples=property_examples(500), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(full_rows_events(), st.data())
def test_rendered_rows_equal_the_pure_rows_rendered(event, data):
    tm, op, buf, p = event
    pure = compile_rows_decoder(tm, "update" if op == "update" else "row", force_pure=True)
    # the event cut short: what the renderer accepts, the decoder accepts too
    cut = data.draw(st.integers(p, len(buf)))
    assert _rendered(tm, op, buf[:cut], p) == "refused" or _run(pure, buf[:cut], p) != "refused"
    expected = _run(pure, buf, p)
    got = _rendered(tm, op, buf, p)
    if got == "refused" or expected == "refused":
        # the renderer may refuse what the decoder accepts (the parser then decodes the dicts), never the reverse
        assert got == "refused" or expected != "refused"
        return
    rows, _ = pure(buf, p, len(buf))
    rendered, starts, _ = got
    assert len(rendered) == len(rows) and len(starts) == 4 * len(rows)
    names = tuple(c.name for c in tm.columns)
    ev = Rows()
    ev.op, ev.rows, ev.rendered, ev.starts, ev.buf, ev.end = op, None, rendered, starts, buf, len(buf)
    ev.decode = compile_rows_decoder(tm, "update" if op == "update" else "row", force_pure=False)
    layout = RowLayout(names, ())
    made, missing = fastmy.changes_maker()(rendered, "s.t", op, "2026-11-23T10:00:00.000000Z", 1.5, "0-1-9",
                                           ("c0",), layout, ev.images, "00000001:000000000004:", 0)
    assert missing == rendered.count(None) and len(made) == len(rendered)
    dict_changes, rendered_changes = [], []
    for i, (row, text) in enumerate(zip(rows, rendered)):
        before, after = row if op == "update" else ((None, row) if op == "insert" else (row, None))
        assert _same(ev.images(i)) == _same((before, after))     # the dicts decoded on demand: the pure path's
        pos = f"00000001:000000000004:{i + 1:08d}"
        ch = RowChange("s.t", op, before, after, pos, "2026-11-23T10:00:00.000000Z", 1.5, "0-1-9", ("c0",))
        dict_changes.append(ch)
        if text is None:
            rendered_changes.append(ch)
            continue
        reference = fastpath.dict_renderer(False)(op, before, after, names)
        if reference is not None:
            assert cells(text) == cells(reference)
        # the change the C core made is the one RenderedRowChange.__init__ makes, field for field
        by_init = RenderedRowChange("s.t", op, pos, ch.commit_time, 1.5, "0-1-9", ("c0",), text, layout, ev.images, i)
        assert type(made[i]) is RenderedRowChange
        fields_of = [getattr(by_init, f) for f in fastmy.CHANGE_FIELDS]
        assert [getattr(made[i], f) for f in fastmy.CHANGE_FIELDS] == fields_of
        assert [_same(getattr(made[i], f.name)) for f in fields(RowChange)] == [_same(getattr(ch, f.name))
                                                                               for f in fields(RowChange)]
        rendered_changes.append(made[i])
    event_rules = data.draw(rules(len(names)))
    assert _events(_mapper(False, event_rules), rendered_changes) == _events(_mapper(True, event_rules), dict_changes)


def test_rendered_row_of_the_usual_values():
    """A fixed row through the C kinds: the JSON text itself, not only agreement."""
    cols = [Column(0, mv.T_LONG, None, False), Column(1, mv.T_NEWDECIMAL, (12, 2), True),
            Column(2, mv.T_VARCHAR, 40, True), Column(3, mv.T_TIMESTAMP2, 6, True),
            Column(4, mv.T_DATE, None, True), Column(5, mv.T_BLOB, 2, True), Column(6, mv.T_DOUBLE, None, True),
            Column(7, mv.T_LONGLONG, None, True)]
    cols[2].charset = "utf8mb4"
    for i, c in enumerate(cols):
        c.name = f"c{i}"
    tm = TableMap(1, "s", "t", cols, [0], True, b"")
    sec = 1795428902                                  # 2026-11-23T10:15:02Z
    row = (b"\x80" + struct.pack("<i", -7) + b"\x80\x00\x00\x04\xd2\x2e" + b'\x05h"\xe2\x82\xac'
           + sec.to_bytes(4, "big") + (123456).to_bytes(3, "big") + (2026 << 9 | 11 << 5 | 23).to_bytes(3, "little")
           + b"\x03\x00\x00\x01\xff" + struct.pack("<d", 0.5))
    rendered, starts, end = compile_rows_renderer(tm, "insert")(row, 0, len(row))
    assert end == len(row) and starts == b"\x00\x00\x00\x00"
    head, got = cells(rendered[0])
    assert head == (b"I", b"\x00", 8, 1)
    assert got == [(b"-7", 1), (b'"1234.46"', 2), (b'"h\\"\xe2\x82\xac"', 3), (b'"2026-11-23T10:15:02.123456Z"', 2),
                   (b'"2026-11-23"', 2), (b'"AAH/"', 2), (b"0.5", 5), (b"null", 0)]
    # a double orjson writes with a negative exponent: this row is left to the dict path
    small = row[:-8] + struct.pack("<d", 1e-7)
    assert compile_rows_renderer(tm, "insert")(small, 0, len(small))[0] == [None]


def test_the_pure_path_renders_nothing(monkeypatch):
    """CDC_AGENT_PURE=1: no renderer, the parser decodes dicts (the reference path)."""
    monkeypatch.setenv(fastmy.PURE_ENV, "1")
    tm = TableMap(1, "s", "t", [Column(0, mv.T_LONG, None, False)], [0], True, b"")
    assert compile_rows_renderer(tm, "insert") is None


def test_float_texts_seen_before_are_the_same_text():
    """FLOAT values: the renderer keeps the text of the values it has seen by their bytes; a value met again
    (in this event or a later one) renders as the pure path's float does, 0.1 and not 0.10000000149011612."""
    c = Column(0, mv.T_FLOAT, None, True)
    c.name = "f"
    tm = TableMap(1, "s", "t", [c], [0], True, b"")
    values = [0.1, 0.1, -0.0, 3.4e38, 0.1, 1e-7, 16777217.0, -0.0, 0.1]
    buf = b"".join(b"\x00" + struct.pack("<f", v) for v in values)
    pure = compile_rows_decoder(tm, "row", force_pure=True)
    rows, _ = pure(buf, 0, len(buf))
    render = compile_rows_renderer(tm, "insert")
    for _ in range(2):
        rendered, _, end = render(buf, 0, len(buf))
        assert end == len(buf)
        for row, text in zip(rows, rendered):
            reference = fastpath.dict_renderer(False)("insert", None, row, ("f",))
            assert (text is None) == (reference is None or "e-" in repr(row["f"]))
            if text is not None:
                assert cells(text) == cells(reference)
    assert cells(rendered[0])[1] == [(b"0.1", 5)] and cells(rendered[2])[1] == [(b"-0.0", 6)]


def test_a_real_binlog_maps_to_the_same_events_on_both_paths(mariadb_db, tmp_path, monkeypatch):
    """A MariaDB binlog over every column type (inserts, updates, deletes), read by MysqlSource on the
    rendered path and again with CDC_AGENT_PURE=1: the same events byte for byte, and the rendered changes'
    dicts are the pure ones."""
    from tests.test_mysql_source import COLS, TYPE_ROWS, TYPES_DDL, drain, make_config, started
    mariadb_db.execute(TYPES_DDL)
    cfg = make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.alltypes"])
    src, checkpoint = started(cfg)
    src.close()
    for row in TYPE_ROWS:
        mariadb_db.execute(f"INSERT INTO alltypes VALUES {row}")
    # row 1 again without the values only the dict path writes (2**64-1, a double in exponent form)
    copy = {"id": "4", "biu": "5", "db": "2.5"}
    columns = ", ".join(copy.get(c, c) for c in COLS)
    mariadb_db.execute(f"INSERT INTO alltypes SELECT {columns} FROM alltypes WHERE id = 1")
    mariadb_db.execute("UPDATE alltypes SET vc = CONCAT(vc, '|\\\\\"'), f = f + 1, d = d - 1 WHERE id IN (1, 2, 4)")
    mariadb_db.execute("DELETE FROM alltypes WHERE id = 3")

    def read_and_map(pure: bool):
        if pure:
            monkeypatch.setenv(fastmy.PURE_ENV, "1")
        else:
            monkeypatch.delenv(fastmy.PURE_ENV, raising=False)
        src, _ = started(cfg, checkpoint)
        try:
            changes = [c for b, _ in drain(src) for c in b]
        finally:
            src.close()
        events, failures = EventMapper(cfg, pure=pure).map(changes)
        return changes, [(e.id, e.subject, e.body) for e in events], failures

    rendered, events, failures = read_and_map(False)
    plain, pure_events, pure_failures = read_and_map(True)
    # rows 1 and 2 hold values left to the dict path; rows 3 and 4 are rendered (insert, update, delete)
    assert [c.position[-2:] for c in rendered if type(c) is RenderedRowChange] == ["01", "01", "03", "01"]
    assert not any(type(c) is RenderedRowChange for c in plain)
    assert events == pure_events and len(events) == 8 and failures == pure_failures == []
    assert [_same((c.before, c.after)) for c in rendered] == [_same((c.before, c.after)) for c in plain]


# printable ASCII with at most two of the bytes the word-at-a-time test must catch, at any place in 0-40 bytes
# (inside a word, at its edges, in the tail): a quote, a backslash, controls (tab, line breaks), DEL (no
# escape), and bytes >= 0x80 (UTF-8 and not)
_SPECIAL = [0x22, 0x5C, 0x1F, 0x00, 0x09, 0x0A, 0x0D, 0x7F, 0x20, 0x7E, 0x80, 0xC3, 0xA9, 0xFF]


@st.composite
def _near_ascii(draw) -> bytes:
    text = bytearray(draw(st.binary(max_size=40).map(lambda b: bytes(0x21 + x % 94 for x in b if x % 94 != 1))))
    for _ in range(draw(st.integers(0, 2))):
        text.insert(draw(st.integers(0, len(text))), draw(st.sampled_from(_SPECIAL)))
    return bytes(text[:40])


_NEAR_ASCII = _near_ascii()
_JSONISH = st.sampled_from([b'{"g": 1, "tags": ["a", "b"]}', b'{"a":"\\u00e9"}', b'[1,\t2]', b'[1,\n2]', b'"x"',
                            b'{"k": "v"} ', b'{"a": "\x7f"}', b'{"a": 1', b'{"\xc3\xa9": 2}', b"12345678", b"{}"])


@settings(max_examples=property_examples(400), deadline=None)
@given(st.lists(st.tuples(_NEAR_ASCII, _NEAR_ASCII | _JSONISH), min_size=1, max_size=3))
def test_ascii_text_takes_the_word_path_to_the_same_cells(values):
    """VARCHAR and MariaDB JSON text mostly in printable ASCII (the renderer's eight-bytes-at-a-time path,
    agent/fastmy_render.c ascii_plain): each rendered cell is render_dicts' of the pure dicts."""
    vc = Column(0, mv.T_VARCHAR, 255, True)
    vc.charset = "utf8mb4"
    js = Column(1, mv.T_BLOB, 4, True)
    js.charset, js.json = "utf8mb4", True
    vc.name, js.name = "v", "j"
    tm = TableMap(1, "s", "t", [vc, js], [0], True, b"")
    buf = b"".join(b"\x00" + bytes([len(a)]) + a + len(b).to_bytes(4, "little") + b for a, b in values)
    rows, _ = compile_rows_decoder(tm, "row", force_pure=True)(buf, 0, len(buf))
    rendered, _, end = compile_rows_renderer(tm, "insert")(buf, 0, len(buf))
    assert end == len(buf) and len(rendered) == len(rows)
    for row, text in zip(rows, rendered):
        reference = fastpath.dict_renderer(False)("insert", None, row, ("v", "j"))
        assert (text is None) == (reference is None)
        if text is not None:
            assert cells(text) == cells(reference)
