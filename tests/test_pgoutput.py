"""The pgoutput decoder on hand-built bytes (every message kind, the replication framing) and on bytes a real
slot produced (pg_logical_slot_peek_binary_changes)."""

from __future__ import annotations

import struct

import pytest

from agent import pgoutput as po
from agent import pgvalues
from tests.decoder_paths import decoder_path  # noqa: F401  (every test on both tuple decoders)


# ---------------------------------------------------------------- a tiny independent encoder for the tests


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def tuple_data(*cols) -> bytes:
    """cols: None -> 'n', po.UNCHANGED -> 'u', str -> 't', ('b', bytes) -> 'b'."""
    out = struct.pack(">H", len(cols))
    for c in cols:
        if c is None:
            out += b"n"
        elif c is po.UNCHANGED:
            out += b"u"
        elif isinstance(c, tuple):
            out += b"b" + struct.pack(">I", len(c[1])) + c[1]
        else:
            b = c.encode()
            out += b"t" + struct.pack(">I", len(b)) + b
    return out


def relation_msg(oid, ns, name, ident, cols) -> bytes:
    out = b"R" + struct.pack(">I", oid) + cstr(ns) + cstr(name) + ident.encode() + struct.pack(">H", len(cols))
    for flags, cname, typ, typmod in cols:
        out += bytes([flags]) + cstr(cname) + struct.pack(">Ii", typ, typmod)
    return out


COLS = [(1, "id", 23, -1), (0, "name", 25, -1), (0, "price", 1700, 786438), (0, "tags", 1009, -1)]


@pytest.fixture
def dec():
    d = po.Decoder()
    rel = d.decode(relation_msg(16385, "public", "customers", "d", COLS))
    assert isinstance(rel, po.Relation)
    return d


def test_begin_and_commit():
    d = po.Decoder()
    b = d.decode(b"B" + struct.pack(">QqI", 0x16B3748, 817_000_000_123_456, 7412))
    assert isinstance(b, po.Begin) and b.kind == "B"
    assert (b.final_lsn, b.commit_time, b.xid) == (0x16B3748, 817_000_000_123_456, 7412)
    c = d.decode(b"C" + struct.pack(">BQQq", 0, 0x16B3748, 0x16B3778, 817_000_000_123_456))
    assert isinstance(c, po.Commit)
    assert (c.flags, c.commit_lsn, c.end_lsn, c.commit_time) == (0, 0x16B3748, 0x16B3778, 817_000_000_123_456)
    assert po.pg_time_rfc3339(c.commit_time) == "2025-11-21T00:26:40.123456Z"   # date -u -d @$((946684800+817000000))
    assert po.pg_time_to_unix(0) == 946_684_800
    assert po.pg_time_from_unix(946_684_801.5) == 1_500_000


def test_relation_type_origin():
    d = po.Decoder()
    rel = d.decode(relation_msg(16385, "sales", "Order Lines", "f", COLS))
    assert (rel.oid, rel.namespace, rel.name, rel.qualified, rel.replica_identity) == \
        (16385, "sales", "Order Lines", "sales.Order Lines", "f")
    assert rel.names == ("id", "name", "price", "tags")
    assert [(c.type_oid, c.typmod, c.key) for c in rel.columns] == [(23, -1, True), (25, -1, False),
                                                                     (1700, 786438, False), (1009, -1, False)]
    assert rel.key_names == ("id",)
    assert d.relations[16385] is rel
    t = d.decode(b"Y" + struct.pack(">I", 90001) + cstr("public") + cstr("order_status"))
    assert isinstance(t, po.Type) and (t.oid, t.namespace, t.name) == (90001, "public", "order_status")
    o = d.decode(b"O" + struct.pack(">Q", 0xABCDEF) + cstr("node_a"))
    assert isinstance(o, po.Origin) and (o.lsn, o.name) == (0xABCDEF, "node_a")


def test_insert_values_nulls_unchanged_binary(dec):
    msg = b"I" + struct.pack(">I", 16385) + b"N" + tuple_data("42", "Ann 😀", None, ("b", b"\x00\x01"))
    ins = dec.decode(msg)
    assert isinstance(ins, po.Insert) and ins.relation.name == "customers"
    assert ins.new == ["42", "Ann 😀", None, b"\x00\x01"]       # no converters set: text as str
    ins = dec.decode(b"I" + struct.pack(">I", 16385) + b"N" + tuple_data("1", po.UNCHANGED, "", "{}"))
    assert ins.new[1] is po.UNCHANGED and ins.new[2] == ""


def test_converters_apply_while_decoding(dec):
    dec.set_converters(16385, pgvalues.converters([23, 25, 1700, 1009]))
    ins = dec.decode(b"I" + struct.pack(">I", 16385) + b"N" +
                     tuple_data("42", "x", "12.50", '{a,"b c",NULL,"NULL"}'))
    assert ins.new == [42, "x", "12.50", ["a", "b c", None, "NULL"]]
    with pytest.raises(ValueError):
        dec.set_converters(16385, [int])


def test_update_with_key_old_and_no_old_image(dec):
    rel = struct.pack(">I", 16385)
    u = dec.decode(b"U" + rel + b"N" + tuple_data("1", "new", None, None))
    # (on the compiled path a RenderedRow, which reads like the Update it decodes to)
    assert u.kind == "U" and isinstance(u, po.Update | po.RenderedRow)
    assert u.old_kind is None and u.old is None and u.new[1] == "new"
    u = dec.decode(b"U" + rel + b"K" + tuple_data("1", None, None, None) + b"N" + tuple_data("2", "n", None, None))
    assert u.old_kind == "K" and u.old[0] == "1" and u.new[0] == "2"
    u = dec.decode(b"U" + rel + b"O" + tuple_data("1", "old", "1.00", "{}") + b"N" +
                   tuple_data("1", "new", "2.00", po.UNCHANGED))
    assert u.old_kind == "O" and u.old == ["1", "old", "1.00", "{}"]
    assert u.new[:3] == ["1", "new", "2.00"] and u.new[3] is po.UNCHANGED


def test_delete_key_and_full(dec):
    rel = struct.pack(">I", 16385)
    d = dec.decode(b"D" + rel + b"K" + tuple_data("7", None, None, None))
    assert d.kind == "D" and isinstance(d, po.Delete | po.RenderedRow)
    assert d.old_kind == "K" and d.old == ["7", None, None, None]
    d = dec.decode(b"D" + rel + b"O" + tuple_data("7", "x", "1", "{}"))
    assert d.old_kind == "O" and d.old == ["7", "x", "1", "{}"]


def test_truncate(dec):
    dec.decode(relation_msg(16390, "public", "orders", "d", [(1, "id", 20, -1)]))
    t = dec.decode(b"T" + struct.pack(">IB", 2, 3) + struct.pack(">II", 16385, 16390))
    assert isinstance(t, po.Truncate)
    assert [r.name for r in t.relations] == ["customers", "orders"] and t.cascade and t.restart_identity
    t = dec.decode(b"T" + struct.pack(">IB", 1, 0) + struct.pack(">I", 16390))
    assert not t.cascade and not t.restart_identity


def test_logical_message():
    d = po.Decoder()
    m = d.decode(b"M" + struct.pack(">BQ", 1, 0x1234) + cstr("app") + struct.pack(">I", 3) + b"a\0b")
    assert isinstance(m, po.Message) and m.transactional and m.lsn == 0x1234
    assert (m.prefix, m.content) == ("app", b"a\0b")
    m = d.decode(b"M" + struct.pack(">BQ", 0, 5) + cstr("cdc-agent-heartbeat") + struct.pack(">I", 0))
    assert not m.transactional and m.content == b""


def test_offset_into_xlogdata_frame(dec):
    frame = b"w" + struct.pack(">QQq", 100, 200, 300) + b"I" + struct.pack(">I", 16385) + b"N" + \
        tuple_data("1", "a", None, None)
    x = po.parse_xlogdata(frame)
    assert (x.start_lsn, x.wal_end, x.send_time) == (100, 200, 300)
    assert dec.decode(frame, po.XLogData.DATA_OFFSET).new[:2] == ["1", "a"]


@pytest.mark.parametrize("bad, why", [
    (b"", "empty"),
    (b"Z\0\0", "unknown pgoutput message kind"),
    (b"I" + struct.pack(">I", 999) + b"N" + tuple_data("1"), "not described"),
    (b"I" + struct.pack(">I", 16385) + b"X" + tuple_data("1"), "expected 'N'"),
    (b"I" + struct.pack(">I", 16385) + b"N" + tuple_data("1", "a", None, None)[:-3], "truncated|malformed"),
    (b"I" + struct.pack(">I", 16385) + b"N" + tuple_data("1", "abc")[:-1], "truncated"),
    (b"I" + struct.pack(">I", 16385) + b"N" + struct.pack(">H", 1) + b"q", "unknown tuple column kind"),
    (b"D" + struct.pack(">I", 16385) + b"N" + tuple_data("1"), "expected 'K' or 'O'"),
    (b"B" + b"\0" * 5, "malformed"),
    (b"R" + struct.pack(">I", 1) + b"public", "malformed"),
    (b"M" + struct.pack(">BQ", 0, 5) + cstr("p") + struct.pack(">I", 10) + b"abc", "truncated"),
])
def test_malformed_input_raises_decode_error(dec, bad, why):
    with pytest.raises(po.DecodeError, match=why):
        dec.decode(bad)


def test_reset_forgets_relations(dec):
    dec.reset()
    with pytest.raises(po.DecodeError):
        dec.decode(b"I" + struct.pack(">I", 16385) + b"N" + tuple_data("1", None, None, None))


def test_keepalive_and_standby_status():
    ka = po.parse_keepalive(b"k" + struct.pack(">QqB", 0x5000, 123, 1))
    assert (ka.wal_end, ka.send_time, ka.reply_requested) == (0x5000, 123, True)
    assert not po.parse_keepalive(b"k" + struct.pack(">QqB", 1, 2, 0)).reply_requested
    with pytest.raises(po.DecodeError):
        po.parse_keepalive(b"w" + b"\0" * 17)
    with pytest.raises(po.DecodeError):
        po.parse_xlogdata(b"w\0")
    msg = po.standby_status(0x30, 0x20, 0x10, 999, reply=True)
    assert len(msg) == 34
    assert msg[0:1] == b"r" and struct.unpack(">QQQqB", msg[1:]) == (0x30, 0x20, 0x10, 999, 1)


def test_lsn_helpers():
    assert po.lsn_text(0x16B3748) == "0/16B3748"
    assert po.lsn_text(0x1_0000_00FF) == "1/FF"
    assert po.parse_lsn("16/B374D848") == 0x16B374D848
    assert po.parse_lsn(po.lsn_text(0xFFFF_FFFF_FFFF)) == 0xFFFF_FFFF_FFFF
    assert po.lsn_hex16(0x16B3748) == "00000000016B3748"
    # fixed width: string order is LSN order
    lsns = [5, 0x10, 0xFFFFFFFF, 0x1_0000_0000, 0x16B3748]
    assert sorted(po.lsn_hex16(x) for x in lsns) == [po.lsn_hex16(x) for x in sorted(lsns)]
    with pytest.raises(ValueError):
        po.parse_lsn("16B3748")


# ---------------------------------------------------------------- bytes from a real slot


def test_decodes_what_a_real_slot_produces(pg_db):
    pg_db.execute("""
        CREATE TABLE items (id int PRIMARY KEY, name text, qty numeric(10,2), tags text[], big text);
        CREATE TABLE other (k bigint PRIMARY KEY, v jsonb);
        ALTER TABLE other REPLICA IDENTITY FULL;
        ALTER TABLE items ALTER big SET STORAGE EXTERNAL;
        CREATE PUBLICATION p FOR TABLE items, other;
    """)
    pg_db.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
    big = "x" * 5000
    with pg_db.connect() as conn:
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (1, 'a', 1.50, '{x,NULL}', %s), (2, NULL, NULL, NULL, NULL)", (big,))
            conn.execute("INSERT INTO other VALUES (10, '{\"a\": [1, 2]}')")
            conn.execute("SELECT pg_logical_emit_message(true, 'app', 'in-txn')")
        conn.execute("UPDATE items SET name = 'b' WHERE id = 1")           # big unchanged: 'u'
        conn.execute("UPDATE items SET id = 3 WHERE id = 2")               # key changed: 'K'
        conn.execute("UPDATE other SET v = '[]' WHERE k = 10")             # FULL: 'O'
        conn.execute("DELETE FROM items WHERE id = 3")
        conn.execute("DELETE FROM other WHERE k = 10")
        conn.execute("SELECT pg_logical_emit_message(false, 'cdc-agent-heartbeat', 'hb')")
        conn.execute("TRUNCATE items")
    rows = pg_db.execute("SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL, "
                         "'proto_version', '1', 'publication_names', 'p', 'messages', 'true')")
    d = po.Decoder()
    msgs = [d.decode(bytes(data)) for _, data in rows]
    kinds = "".join(m.kind for m in msgs)
    assert kinds == "BRIIRIMC" "BUC" "BUC" "BUC" "BDC" "BDC" "M" "BRTC", kinds
    items = d.relations[msgs[1].oid]
    assert items.qualified == "public.items" and items.names == ("id", "name", "qty", "tags", "big")
    assert [c.type_oid for c in items.columns] == [23, 25, 1700, 1009, 25]
    assert [c.key for c in items.columns] == [True, False, False, False, False]
    assert items.replica_identity == "d"
    begin, commit = msgs[0], msgs[7]
    assert begin.final_lsn == commit.commit_lsn and commit.end_lsn > commit.commit_lsn
    assert msgs[2].new == ["1", "a", "1.50", "{x,NULL}", big]
    assert msgs[3].new == ["2", None, None, None, None]
    assert msgs[5].new == ["10", '{"a": [1, 2]}'] and d.relations[msgs[4].oid].replica_identity == "f"
    assert msgs[6].transactional and msgs[6].prefix == "app" and msgs[6].content == b"in-txn"
    upd = msgs[9]
    assert upd.old_kind is None and upd.new[:4] == ["1", "b", "1.50", "{x,NULL}"] and upd.new[4] is po.UNCHANGED
    key_upd = msgs[12]
    assert key_upd.old_kind == "K" and key_upd.old[0] == "2" and key_upd.new[0] == "3"
    full_upd = msgs[15]
    assert full_upd.old_kind == "O" and full_upd.old == ["10", '{"a": [1, 2]}'] and full_upd.new == ["10", "[]"]
    assert msgs[18].old_kind == "K" and msgs[18].old[0] == "3" and msgs[18].old[1:] == [None] * 4
    assert msgs[21].old_kind == "O" and msgs[21].old == ["10", "[]"]
    hb = msgs[23]
    assert not hb.transactional and hb.prefix == "cdc-agent-heartbeat" and hb.content == b"hb"
    assert [r.name for r in msgs[26].relations] == ["items"]   # after the Relation sent again (relcache reset)
