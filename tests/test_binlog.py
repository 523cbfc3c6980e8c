"""The binlog decoder (agent/binlog.py) on bytes: events captured from a real MariaDB 10.11, and hand-built
events (MySQL 8 layouts, every temporal precision, decimals, binary JSON, partial images), each test on both
rows decoders (the compiled one, agent/_fastmy.c, and the pure one). The encoders here are written from the
format descriptions, independently of the decoder."""

from __future__ import annotations

import math
import random
import struct
import zlib
from pathlib import Path

import pytest

from agent import binlog
from agent.binlog import BinlogError, BinlogParser
from agent.rawjson import RawJson
from tests.mysql_decoder_paths import mysql_decoder_path  # noqa: F401  (every test on both rows decoders)

DATA = Path(__file__).parent / "data" / "mariadb-10.11-types.events"

# What wrote the captured events (MariaDB 10.11.19, utf8mb4 client, time_zone UTC):
CAPTURE_SQL = """
create database x; use x;
create table t (
 id int primary key, ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned, mi mediumint,
 miu mediumint unsigned, i int, iu int unsigned, bi bigint, biu bigint unsigned, y year, d decimal(12,2),
 d2 decimal(30,10) unsigned, f float, db double, b1 bit(1), b10 bit(10), c char(10), cb binary(4),
 vc varchar(300), vb varbinary(20), tx text, bl blob, lt longtext, dt date, dtm datetime(6), dtm0 datetime,
 ts timestamp(6) null, tm time, tm6 time(6), j json, e enum('a','b','c'), s set('x','y','z'),
 l1 varchar(10) character set latin1, g point);
begin;
insert into t (id, ti, tiu, c, vc, tx, j, e, s, dtm, ts, tm6) values (1, -5, 250, 'ab', 'h€llo 😀', 'text',
  '{"a": [1, 2.5, "x"]}', 'b', 'x,z', '2026-11-23 10:15:02.123456', '2026-11-23 10:15:02.5', '-838:59:59.000001');
select sleep(2);
insert into t (id) values (2);
commit;
update t set ti = 7 where id = 1;
delete from t where id = 2;
create table g2 (id int primary key, g geometry, v varchar(5) character set latin1, c char(3) character set binary,
                 e enum('x','y') character set latin1);
insert into g2 values (1, ST_GeomFromText('POINT(1 2)'), 'äb', 'a', 'y');
insert into t values (3, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615, 2155, -1234567890.12, 12345678901234567890.0123456789, 0.1,
  2.718281828459045, b'1', b'1010101010', 'abc  ', x'6100', 'varchar ✓', x'00ff', 'a text', x'deadbeef',
  'long text', '2026-02-28', '9999-12-31 23:59:59.999999', '1000-01-01 00:00:00', '2038-01-19 03:14:07.999999',
  '-12:34:56', '838:59:59.5', '[1, {"b": null}, true, 1.5e300]', 'c', 'x,y,z', 'ÿé', ST_GeomFromText('POINT(3 4)'));
insert into t (id, d, d2, tm6, f, y, dt) values (4, -0.05, 0.0000000001, '-00:00:00.5', -3.4e38, 1901, '0000-00-00');
insert into t (id, d, tm6, tm, ts, dtm0) values (5, 0, '-00:00:01.000001', '00:00:00', '1970-01-01 00:00:01',
  '2000-01-01 00:00:01');
create table tt (id int primary key, a time(1), b time(2), c time(3), d time(4), e time(5));
insert into tt values (1, '-00:00:00.1', '-00:00:01.01', '-12:00:00.001', '-00:00:00.0001', '-838:59:58.99999'),
  (2, '00:00:00.1', '10:00:01.99', '-00:00:01.999', '00:00:00.9999', '-00:00:00.00001');
"""

T_COLS = ["id", "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "y", "d", "d2", "f", "db", "b1", "b10",
          "c", "cb", "vc", "vb", "tx", "bl", "lt", "dt", "dtm", "dtm0", "ts", "tm", "tm6", "j", "e", "s", "l1", "g"]


def t_row(**values):
    row = dict.fromkeys(T_COLS)
    row.update(values)
    return row


ROW1 = t_row(id=1, ti=-5, tiu=250, c="ab", vc="h€llo 😀", tx="text", j='{"a": [1, 2.5, "x"]}', e="b", s="x,z",
             dtm="2026-11-23T10:15:02.123456", ts="2026-11-23T10:15:02.500000Z", tm6="-838:59:59.000001")
EXPECTED = [
    ("x.t", "insert", ROW1),
    ("x.t", "insert", t_row(id=2)),
    ("x.t", "update", (ROW1, {**ROW1, "ti": 7})),
    ("x.t", "delete", t_row(id=2)),
    ("x.g2", "insert", {"id": 1, "g": "AAAAAAEBAAAAAAAAAAAA8D8AAAAAAAAAQA==", "v": "äb", "c": "YQAA", "e": "y"}),
    ("x.t", "insert", t_row(
        id=3, ti=-128, tiu=255, si=-32768, siu=65535, mi=-8388608, miu=16777215, i=-2147483648, iu=4294967295,
        bi=-9223372036854775808, biu=18446744073709551615, y=2155, d="-1234567890.12",
        d2="12345678901234567890.0123456789", f=0.1, db=2.718281828459045, b1=1, b10=682, c="abc", cb="YQAAAA==",
        vc="varchar ✓", vb="AP8=", tx="a text", bl="3q2+7w==", lt="long text", dt="2026-02-28",
        dtm="9999-12-31T23:59:59.999999", dtm0="1000-01-01T00:00:00", ts="2038-01-19T03:14:07.999999Z",
        tm="-12:34:56", tm6="838:59:59.500000", j='[1, {"b": null}, true, 1.5e300]', e="c", s="x,y,z", l1="ÿé",
        g="AAAAAAEBAAAAAAAAAAAACEAAAAAAAAAQQA==")),
    ("x.t", "insert", t_row(id=4, y=1901, d="-0.05", d2="0.0000000001", f=-3.4e38, dt="0000-00-00",
                            tm6="-00:00:00.500000")),
    ("x.t", "insert", t_row(id=5, d="0.00", dtm0="2000-01-01T00:00:01", ts="1970-01-01T00:00:01.000000Z",
                            tm="00:00:00", tm6="-00:00:01.000001")),
    ("x.tt", "insert", {"id": 1, "a": "-00:00:00.100000", "b": "-00:00:01.010000", "c": "-12:00:00.001000",
                        "d": "-00:00:00.000100", "e": "-838:59:58.999990"}),
    ("x.tt", "insert", {"id": 2, "a": "00:00:00.100000", "b": "10:00:01.990000", "c": "-00:00:01.999000",
                        "d": "00:00:00.999900", "e": "-00:00:00.000010"}),
]


def captured() -> list[bytes]:
    return [bytes.fromhex(line) for line in DATA.read_text().splitlines() if line and not line.startswith("#")]


def rows_of(events, parser=None):
    p = parser or BinlogParser()
    out = []
    for raw in events:
        ev = p.parse(raw)
        if isinstance(ev, binlog.Rows) and ev.rows is not None:
            for r in ev.rows:
                out.append((ev.table_map.name, ev.op, r))
    return out


# ---------------------------------------------------------------- captured from MariaDB


def test_captured_mariadb_rows_decode_to_contract_forms():
    assert rows_of(captured()) == EXPECTED


def test_captured_mariadb_table_map_metadata():
    p = BinlogParser()
    maps = {}
    for raw in captured():
        ev = p.parse(raw)
        if isinstance(ev, binlog.TableMapEvent):
            maps[ev.table_map.name] = ev.table_map
    t = maps["x.t"]
    assert t.has_names and t.column_names == T_COLS and t.key_columns == ("id",)
    by = {c.name: c for c in t.columns}
    # YEAR counts in the signedness bitmap: the unsigned flags after it must land on the right columns
    assert [c.name for c in t.columns if c.unsigned] == ["tiu", "siu", "miu", "iu", "biu", "y", "d2"]
    assert by["e"].values == ["a", "b", "c"] and by["s"].values == ["x", "y", "z"]
    assert by["l1"].charset == "latin1" and by["vb"].charset == "binary" and by["vc"].charset == "utf8mb4"
    g2 = {c.name: c for c in maps["x.g2"].columns}
    # MariaDB counts GEOMETRY among the character columns of the charset list
    assert (g2["v"].charset, g2["c"].charset, g2["e"].charset) == ("latin1", "binary", "latin1")


def test_captured_mariadb_control_events():
    p = BinlogParser()
    evs = [p.parse(raw) for raw in captured()]
    fde = evs[0]
    assert isinstance(fde, binlog.FormatDescription) and fde.checksum and "MariaDB" in fde.server_version
    gtids = [(e.gtid, e.standalone) for e in evs if isinstance(e, binlog.MariaGtid)]
    assert gtids[:5] == [("0-1-1", True), ("0-1-2", True), ("0-1-3", False), ("0-1-4", False), ("0-1-5", False)]
    queries = [e.query for e in evs if isinstance(e, binlog.Query)]
    assert queries[0] == "create database x" and queries[1].startswith("create table t (")
    assert sum(isinstance(e, binlog.Xid) for e in evs) == 8
    # every event's header position is its end in the file: start + size
    first_rows = next(e for e in evs if isinstance(e, binlog.Rows))
    assert first_rows.log_pos - first_rows.size > 0


def test_mariadb_json_hint_parses_longtext_json():
    p = BinlogParser(json_columns=lambda schema, table: {"j"} if table == "t" else set())
    rows = rows_of(captured(), p)
    assert rows[0][2]["j"] == RawJson('{"a": [1, 2.5, "x"]}')              # embedded as written
    assert rows[5][2]["j"] == RawJson('[1, {"b": null}, true, 1.5e300]')
    assert rows[0][2]["tx"] == "text"                      # other text columns stay text


def test_table_filter_skips_rows_without_decoding():
    p = BinlogParser(want=lambda schema, table: table == "g2")
    rows = rows_of(captured(), p)
    assert [r[0] for r in rows] == ["x.g2"]


def test_checksum_mismatch_is_an_error():
    evs = captured()
    p = BinlogParser()
    p.parse(evs[0])
    bad = bytearray(evs[3])
    bad[25] ^= 0xFF
    with pytest.raises(BinlogError, match="checksum"):
        p.parse(bytes(bad))


def test_split_binlog_file_roundtrip():
    evs = captured()[:3]
    assert binlog.split_binlog_file(b"\xfebin" + b"".join(evs)) == evs
    with pytest.raises(BinlogError):
        binlog.split_binlog_file(b"nope")


# ---------------------------------------------------------------- hand-built events (MySQL 8 layouts)


def lenenc(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenstr(s: bytes) -> bytes:
    return lenenc(len(s)) + s


def event(etype: int, body: bytes, log_pos: int = 0, ts: int = 1_700_000_000, flags: int = 0,
          checksum: bool = True) -> bytes:
    size = 19 + len(body) + (4 if checksum else 0)
    raw = struct.pack("<IBIIIH", ts, etype, 1, size, log_pos, flags) + body
    return raw + struct.pack("<I", zlib.crc32(raw)) if checksum else raw


def fde(version: str = "8.0.36", checksum: bool = True) -> bytes:
    post = bytearray(41)
    post[binlog.QUERY - 1] = 13
    post[binlog.TABLE_MAP - 1] = 8
    post[binlog.GTID - 1] = 42
    post[binlog.ANONYMOUS_GTID - 1] = 42
    for t in (binlog.WRITE_ROWS_V2, binlog.UPDATE_ROWS_V2, binlog.DELETE_ROWS_V2):
        post[t - 1] = 10
    body = struct.pack("<H", 4) + version.encode().ljust(50, b"\x00") + struct.pack("<I", 0) + bytes([19]) + bytes(post)
    body += bytes([1 if checksum else 0])
    raw = struct.pack("<IBIIIH", 0, binlog.FORMAT_DESCRIPTION, 1, 19 + len(body) + 4, 0, 0) + body
    return raw + struct.pack("<I", zlib.crc32(raw))


def bitmap(bits: list[bool]) -> bytes:
    return sum(1 << i for i, b in enumerate(bits) if b).to_bytes((len(bits) + 7) // 8, "little")


def table_map(table_id: int, schema: str, table: str, cols: list[tuple], *, names: bool = True,
              pk: list[int] = (0,), charsets: dict[int, int] | None = None, mariadb: bool = False,
              enum_values: dict[int, list[bytes]] | None = None, enum_charset: int | None = None) -> bytes:
    """cols: (name, type, metadata bytes, unsigned). charsets: column index -> collation (character columns)."""
    body = table_id.to_bytes(6, "little") + b"\x01\x00"
    body += bytes([len(schema)]) + schema.encode() + b"\x00" + bytes([len(table)]) + table.encode() + b"\x00"
    body += lenenc(len(cols)) + bytes(c[1] for c in cols)
    meta = b"".join(c[2] for c in cols)
    body += lenstr(meta) + bitmap([True] * len(cols))
    numeric = [c for c in cols if c[1] in binlog._NUMERIC]
    if numeric:
        sign = bytearray((len(numeric) + 7) // 8)
        for i, c in enumerate(numeric):
            if c[3]:
                sign[i // 8] |= 0x80 >> (i % 8)
        body += bytes([binlog.OM_SIGNEDNESS]) + lenstr(bytes(sign))
    if charsets is not None:
        char_cols = [i for i, c in enumerate(cols)
                     if (c[1] in binlog._CHARACTER and not (c[1] == binlog.T_STRING and c[2][:1] in (b"\xf7", b"\xf8")))
                     or (mariadb and c[1] == binlog.T_GEOMETRY)]
        field = b"".join(lenenc(charsets.get(i, 45)) for i in char_cols)
        body += bytes([binlog.OM_COLUMN_CHARSET]) + lenstr(field)
    if enum_charset is not None:
        body += bytes([binlog.OM_ENUM_AND_SET_DEFAULT_CHARSET]) + lenstr(lenenc(enum_charset))
    if names:
        body += bytes([binlog.OM_COLUMN_NAME]) + lenstr(b"".join(lenstr(c[0].encode()) for c in cols))
    for ft, want in ((binlog.OM_ENUM_STR_VALUE, b"\xf7"), (binlog.OM_SET_STR_VALUE, b"\xf8")):
        vals = [(i, enum_values[i]) for i, c in enumerate(cols)
                if c[2][:1] == want and enum_values and i in enum_values]
        if vals:
            body += bytes([ft]) + lenstr(b"".join(lenenc(len(v)) + b"".join(lenstr(x) for x in v) for _, v in vals))
    if pk:
        body += bytes([binlog.OM_SIMPLE_PRIMARY_KEY]) + lenstr(b"".join(lenenc(i) for i in pk))
    return event(binlog.TABLE_MAP, body)


def rows_event(etype: int, table_id: int, ncols: int, images: list[bytes], present: list[bool] | None = None,
               present2: list[bool] | None = None, extra: bytes = b"", stmt_end: bool = True) -> bytes:
    body = table_id.to_bytes(6, "little") + struct.pack("<H", binlog.STMT_END_F if stmt_end else 0)
    if etype in (binlog.WRITE_ROWS_V2, binlog.UPDATE_ROWS_V2, binlog.DELETE_ROWS_V2):
        body += struct.pack("<H", 2 + len(extra)) + extra
    present = present or [True] * ncols
    body += lenenc(ncols) + bitmap(present)
    if binlog.ROWS_OP[etype] == "update":
        body += bitmap(present2 or [True] * ncols)
    return event(etype, body + b"".join(images))


def image(values: list[bytes | None]) -> bytes:
    """Null bitmap over the given (present) columns, then the non-null values."""
    return bitmap([v is None for v in values]) + b"".join(v for v in values if v is not None)


# independent encoders, from the storage format descriptions

def enc_decimal(s: str, precision: int, scale: int) -> bytes:
    neg = s.startswith("-")
    ip, _, fp = s.lstrip("-").partition(".")
    fp = fp.ljust(scale, "0")
    ip = ip.lstrip("0").rjust(precision - scale, "0")
    dig2bytes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    out = b""
    lead = len(ip) % 9
    if lead:
        out += int(ip[:lead]).to_bytes(dig2bytes[lead], "big")
    for k in range(lead, len(ip), 9):
        out += int(ip[k:k + 9]).to_bytes(4, "big")
    for k in range(0, scale - scale % 9, 9):
        out += int(fp[k:k + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(fp[scale - scale % 9:]).to_bytes(dig2bytes[scale % 9], "big")
    raw = bytearray(out)
    if neg:
        raw = bytearray(x ^ 0xFF for x in raw)
    raw[0] ^= 0x80
    return bytes(raw)


def enc_time2(text: str, fsp: int) -> bytes:
    neg = text.startswith("-")
    hms, _, frac = text.lstrip("-").partition(".")
    h, m, s = (int(x) for x in hms.split(":"))
    usec = int(frac.ljust(6, "0")) if frac else 0
    packed = ((h << 12 | m << 6 | s) << 24) + usec
    if neg:
        packed = -packed
    intpart = packed >> 24
    cfrac = int(math.fmod(packed, 1 << 24))              # C's % keeps the dividend's sign
    if fsp == 0:
        return (intpart + 0x800000).to_bytes(3, "big")
    if fsp <= 2:
        return (intpart + 0x800000).to_bytes(3, "big") + bytes(
            [(cfrac // 10000 if cfrac >= 0 else -(-cfrac // 10000)) & 0xFF])
    if fsp <= 4:
        f = cfrac // 100 if cfrac >= 0 else -(-cfrac // 100)
        return (intpart + 0x800000).to_bytes(3, "big") + (f & 0xFFFF).to_bytes(2, "big")
    return (packed + 0x800000000000).to_bytes(6, "big")


def enc_frac(usec: int, fsp: int) -> bytes:
    if fsp == 0:
        return b""
    if fsp <= 2:
        return bytes([usec // 10000])
    if fsp <= 4:
        return (usec // 100).to_bytes(2, "big")
    return usec.to_bytes(3, "big")


def enc_datetime2(y, mo, d, h, mi, s, usec, fsp) -> bytes:
    ymd = (y * 13 + mo) << 5 | d
    hms = h << 12 | mi << 6 | s
    return ((ymd << 17 | hms) + 0x8000000000).to_bytes(5, "big") + enc_frac(usec, fsp)


def test_decimal_matches_an_independent_encoder():
    rnd = random.Random(7)
    shapes = [(12, 2), (5, 5), (10, 0), (30, 10), (65, 30), (9, 9), (18, 9), (1, 0), (19, 4)]
    for precision, scale in shapes:
        intg = precision - scale
        cols = [("v", binlog.T_NEWDECIMAL, bytes([precision, scale]), False)]
        values = []
        for _ in range(40):
            ip = rnd.randrange(10 ** intg) if intg else 0
            fp = rnd.randrange(10 ** scale) if scale else 0
            sign = rnd.choice(["", "-"])
            s = f"{sign}{ip}" + (f".{fp:0{scale}d}" if scale else "")
            if not (ip or fp):
                s = s.lstrip("-")
            values.append(s)
        values += ["0" if not scale else "0." + "0" * scale]
        evs = [fde(), table_map(5, "db", "d", cols, pk=[]),
               rows_event(binlog.WRITE_ROWS_V2, 5, 1, [image([enc_decimal(v, precision, scale)]) for v in values])]
        got = [r[2]["v"] for r in rows_of(evs)]
        assert got == values, (precision, scale)
        # the generic (non-compiled) decoder agrees
        assert [binlog.decode_decimal(enc_decimal(v, precision, scale), precision, scale) for v in values] == values


@pytest.mark.parametrize("fsp", [0, 1, 2, 3, 4, 5, 6])
def test_time2_every_precision(fsp):
    texts = ["00:00:00", "12:34:56", "-12:34:56", "838:59:59", "-838:59:59", "-00:00:01"]
    if fsp:
        texts += [f"-00:00:00.{'9' * fsp}", f"00:00:00.{'0' * (fsp - 1)}1", f"-00:00:00.{'0' * (fsp - 1)}1",
                  f"-01:00:00.{'5'.ljust(fsp, '0')}", f"-838:59:58.{'9' * fsp}"]
    cols = [("t", binlog.T_TIME2, bytes([fsp]), False)]
    evs = [fde(), table_map(6, "db", "t", cols, pk=[]),
           rows_event(binlog.WRITE_ROWS_V2, 6, 1, [image([enc_time2(t, fsp)]) for t in texts])]
    got = [r[2]["t"] for r in rows_of(evs)]

    def expect(t):
        hms, _, frac = t.partition(".")
        return f"{hms}.{frac.ljust(6, '0')}" if fsp else hms
    assert got == [expect(t) for t in texts]


@pytest.mark.parametrize("fsp", [0, 1, 2, 3, 4, 5, 6])
def test_datetime2_and_timestamp2_every_precision(fsp):
    usec = {0: 0, 1: 100000, 2: 120000, 3: 123000, 4: 123400, 5: 123450, 6: 123456}[fsp]
    cols = [("dt", binlog.T_DATETIME2, bytes([fsp]), False), ("ts", binlog.T_TIMESTAMP2, bytes([fsp]), False),
            ("d", binlog.T_DATE, b"", False), ("y", binlog.T_YEAR, b"", False)]
    epoch = 1795428902                                   # 2026-11-23T10:15:02Z
    date = (2026 << 9 | 11 << 5 | 23).to_bytes(3, "little")
    img = image([enc_datetime2(2026, 11, 23, 10, 15, 2, usec, fsp), epoch.to_bytes(4, "big") + enc_frac(usec, fsp),
                 date, bytes([126])])
    zero = image([enc_datetime2(0, 0, 0, 0, 0, 0, 0, fsp), bytes(4) + enc_frac(0, fsp), bytes(3), bytes([0])])
    evs = [fde(), table_map(7, "db", "t", cols, pk=[]), rows_event(binlog.WRITE_ROWS_V2, 7, 4, [img, zero])]
    got = [r[2] for r in rows_of(evs)]
    frac = f".{usec:06d}" if fsp else ""
    assert got[0] == {"dt": f"2026-11-23T10:15:02{frac}", "ts": f"2026-11-23T10:15:02.{usec:06d}Z",
                      "d": "2026-11-23", "y": 2026}
    assert got[1] == {"dt": "0000-00-00T00:00:00" + (".000000" if fsp else ""), "ts": "0000-00-00T00:00:00.000000Z",
                      "d": "0000-00-00", "y": 0}


def enc_jsonb(v) -> bytes:
    """MySQL binary JSON, small containers only: type byte + value."""
    t, data = _jsonb(v)
    return bytes([t]) + data


def _jsonb(v) -> tuple[int, bytes]:
    if v is None or v is True or v is False:
        return 4, bytes([{None: 0, True: 1, False: 2}[v]])
    if isinstance(v, int):
        if -32768 <= v < 32768:
            return 5, v.to_bytes(2, "little", signed=True)
        return 9, v.to_bytes(8, "little", signed=True)
    if isinstance(v, float):
        return 11, struct.pack("<d", v)
    if isinstance(v, str):
        b = v.encode()
        n, var = len(b), b""
        while True:
            var += bytes([(n & 0x7F) | (0x80 if n >> 7 else 0)])
            n >>= 7
            if not n:
                break
        return 12, var + b
    is_obj = isinstance(v, dict)
    items = list(v.items()) if is_obj else [(None, x) for x in v]
    header = 4 + (4 * len(items) if is_obj else 0) + 3 * len(items)
    keys = b""
    key_entries = b""
    if is_obj:
        off = header
        for k, _ in items:
            kb = k.encode()
            key_entries += struct.pack("<HH", off + len(keys), len(kb))
            keys += kb
    value_entries, values = b"", b""
    base = header + len(keys)
    for _, x in items:
        t, data = _jsonb(x)
        if t in (4, 5):                                   # inlined in the entry
            value_entries += bytes([t]) + data.ljust(2, b"\x00")
        else:
            value_entries += bytes([t]) + struct.pack("<H", base + len(values))
            values += data
    body = key_entries + value_entries + keys + values
    size = 4 + len(body)
    return (0 if is_obj else 2), struct.pack("<HH", len(items), size) + body


def test_mysql_binary_json_and_gtid_event():
    doc = {"a": [1, "x", True, None, 2.5], "b": {"n": -7, "big": 2 ** 40}, "s": "h€llo " * 30}
    raw = enc_jsonb(doc)
    cols = [("id", binlog.T_LONG, b"", False), ("j", binlog.T_JSON, b"\x04", False)]
    sid = bytes(range(16))
    imm, orig = 1_795_428_902_123_456, 1_795_428_901_000_001
    gtid = (bytes([1]) + sid + struct.pack("<q", 42) + bytes([2]) + struct.pack("<qq", 7, 8)
            + (imm | 1 << 55).to_bytes(7, "little") + orig.to_bytes(7, "little"))
    evs = [fde(), event(binlog.GTID, gtid), table_map(8, "db", "t", cols),
           rows_event(binlog.WRITE_ROWS_V2, 8, 2,
                      [image([(5).to_bytes(4, "little"), len(raw).to_bytes(4, "little") + raw]),
                       image([(6).to_bytes(4, "little"), bytes(4)])], extra=b"\x00\x01\x02")]
    p = BinlogParser()
    g = p.parse(evs[0]) and p.parse(evs[1])
    assert isinstance(g, binlog.MysqlGtid)
    assert g.gtid == "00010203-0405-0607-0809-0a0b0c0d0e0f:42" and g.commit_us == orig
    rows = rows_of(evs[2:], p)
    assert rows[0][2] == {"id": 5, "j": doc}
    assert rows[1][2] == {"id": 6, "j": None}


def test_mysql_charset_lists_do_not_count_geometry_and_enum_values_use_their_charset():
    cols = [("id", binlog.T_LONG, b"", True), ("g", binlog.T_GEOMETRY, b"\x04", False),
            ("v", binlog.T_VARCHAR, (20).to_bytes(2, "little"), False),
            ("e", binlog.T_STRING, b"\xf7\x01", False), ("c", binlog.T_STRING, b"\xfe\x0c", False),
            ("b", binlog.T_BLOB, b"\x02", False), ("f", binlog.T_FLOAT, b"\x04", False),
            ("bits", binlog.T_BIT, b"\x03\x01", False), ("big", binlog.T_LONGLONG, b"", True)]
    tm = table_map(9, "db", "t", cols, charsets={2: 8, 4: 45, 5: 63}, enum_values={3: [b"caf\xe9", b"tea"]},
                   enum_charset=8)
    geo = b"\x00\x00\x00\x00\x01\x01\x00\x00\x00" + struct.pack("<dd", 1, 2)
    img = image([(7).to_bytes(4, "little"), len(geo).to_bytes(4, "little") + geo, b"\x03d\xe9j", b"\x01",
                 b"\x04\xf0\x9f\x98\x80", b"\x02\x00\xde\xad", struct.pack("<f", 0.3), b"\x05\xff",
                 (2 ** 64 - 1).to_bytes(8, "little")])
    rows = rows_of([fde(), tm, rows_event(binlog.WRITE_ROWS_V2, 9, 9, [img])])
    r = rows[0][2]
    assert r["id"] == 7 and r["v"] == "déj" and r["e"] == "café" and r["c"] == "😀" and r["b"] == "3q0="
    assert r["f"] == 0.3 and r["bits"] == 0x5FF and r["big"] == 2 ** 64 - 1
    assert r["g"].startswith("AAAAAAEB")


def test_update_delete_and_partial_images():
    cols = [("id", binlog.T_LONG, b"", False), ("name", binlog.T_VARCHAR, (40).to_bytes(2, "little"), False),
            ("qty", binlog.T_SHORT, b"", False)]
    tm = table_map(10, "db", "t", cols, charsets={})
    full_before = image([(1).to_bytes(4, "little"), b"\x01a", (5).to_bytes(2, "little")])
    full_after = image([(1).to_bytes(4, "little"), b"\x01b", (65535).to_bytes(2, "little")])
    # three rows events of one statement (one TABLE_MAP serves them; the last ends the statement)
    upd = rows_event(binlog.UPDATE_ROWS_V2, 10, 3, [full_before + full_after], stmt_end=False)
    # binlog_row_image=MINIMAL: before = key only, after = changed columns only
    minimal = rows_event(binlog.UPDATE_ROWS_V2, 10, 3, [image([(1).to_bytes(4, "little")]) + image([None])],
                         present=[True, False, False], present2=[False, True, False], stmt_end=False)
    dele = rows_event(binlog.DELETE_ROWS_V2, 10, 3, [full_before, full_after])
    p = BinlogParser()
    for raw in (fde(), tm):
        p.parse(raw)
    u = p.parse(upd)
    assert u.op == "update" and u.present is None
    assert u.rows == [({"id": 1, "name": "a", "qty": 5}, {"id": 1, "name": "b", "qty": -1})]
    m = p.parse(minimal)
    assert m.rows == [({"id": 1}, {"name": None})] and m.present == (0b001, 0b010)
    d = p.parse(dele)
    assert d.op == "delete" and [r["qty"] for r in d.rows] == [5, -1]


def test_a_new_table_map_relabels_rows_after_alter_table():
    v1 = [("id", binlog.T_LONG, b"", False), ("a", binlog.T_LONG, b"", False)]
    v2 = [("id", binlog.T_LONG, b"", False), ("b", binlog.T_VARCHAR, (10).to_bytes(2, "little"), False),
          ("a", binlog.T_LONG, b"", False)]
    evs = [fde(), table_map(11, "db", "t", v1),
           rows_event(binlog.WRITE_ROWS_V2, 11, 2, [image([(1).to_bytes(4, "little"), (10).to_bytes(4, "little")])]),
           table_map(12, "db", "t", v2, charsets={}),
           rows_event(binlog.WRITE_ROWS_V2, 12, 3,
                      [image([(2).to_bytes(4, "little"), b"\x02hi", (20).to_bytes(4, "little")])]),
           table_map(11, "db", "t", v1),                       # an older map again (replay): its own labels
           rows_event(binlog.WRITE_ROWS_V2, 11, 2, [image([(3).to_bytes(4, "little"), (30).to_bytes(4, "little")])])]
    assert [r[2] for r in rows_of(evs)] == [{"id": 1, "a": 10}, {"id": 2, "b": "hi", "a": 20}, {"id": 3, "a": 30}]


def test_table_map_without_names_is_flagged_and_rows_without_map_fail():
    cols = [("id", binlog.T_LONG, b"", False)]
    p = BinlogParser()
    p.parse(fde())
    tm = p.parse(table_map(13, "db", "t", cols, names=False)).table_map
    assert not tm.has_names and tm.column_names == ["@1"]
    with pytest.raises(BinlogError, match="without a preceding TABLE_MAP"):
        p.parse(rows_event(binlog.WRITE_ROWS_V2, 99, 1, [image([b"\x00" * 4])]))
    with pytest.raises(BinlogError, match="does not match its TABLE_MAP"):
        p.parse(rows_event(binlog.WRITE_ROWS_V2, 13, 1, [image([b"\x00\x00"])]))


def test_a_row_image_without_columns_is_a_binlog_error():
    """A column bitmap with no bit set: no server writes one, and such rows (no null bitmap, no values, no
    bytes) cannot be delimited. A clear BinlogError, never a SyntaxError from the generated pure decoder."""
    cols = [("id", binlog.T_LONG, b"", False), ("a", binlog.T_SHORT, b"", False)]
    one = image([(1).to_bytes(4, "little")])
    bad = {"insert": rows_event(binlog.WRITE_ROWS_V2, 14, 2, [b"\x00\x00"], present=[False, False]),
           "empty after": rows_event(binlog.UPDATE_ROWS_V2, 14, 2, [one + b"\x00"], present=[True, False],
                                     present2=[False, False]),
           "empty before": rows_event(binlog.UPDATE_ROWS_V2, 14, 2, [b"\x00" + one], present=[False, False],
                                      present2=[True, False])}
    for name, raw in bad.items():
        p = BinlogParser()
        p.parse(fde())
        p.parse(table_map(14, "db", "t", cols))
        with pytest.raises(BinlogError, match="row image with no columns"):
            p.parse(raw)
        # the same parser still decodes a good event of that table
        ok = p.parse(rows_event(binlog.WRITE_ROWS_V2, 14, 2, [image([(2).to_bytes(4, "little"), b"\x03\x00"])]))
        assert ok.rows == [{"id": 2, "a": 3}], name


def test_rotate_before_format_description_and_events_without_checksums():
    p = BinlogParser()
    rot = event(binlog.ROTATE, struct.pack("<Q", 4) + b"binlog.000007", flags=binlog.LOG_EVENT_ARTIFICIAL_F)
    r = p.parse(rot)
    assert r.filename == "binlog.000007" and r.position == 4
    p.parse(fde(checksum=False))
    assert p.checksum is False
    x = p.parse(event(binlog.XID, struct.pack("<Q", 77), log_pos=500, checksum=False))
    assert x.xid == 77 and x.log_pos == 500
    q = p.parse(event(binlog.QUERY, struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\x00BEGIN", checksum=False))
    assert (q.schema, q.query) == ("db", "BEGIN")


def test_table_ids_live_for_one_statement():
    """A statement maps all its tables first, then sends their rows; only the statement's last rows event
    ends the mapping (MySQL reuses table ids freely across statements)."""
    cols = [("id", binlog.T_LONG, b"", False)]
    p = BinlogParser()
    p.parse(fde())
    p.parse(table_map(21, "db", "a", cols))
    p.parse(table_map(22, "db", "b", cols))
    one = p.parse(rows_event(binlog.WRITE_ROWS_V2, 21, 1, [image([(1).to_bytes(4, "little")])], stmt_end=False))
    two = p.parse(rows_event(binlog.WRITE_ROWS_V2, 22, 1, [image([(2).to_bytes(4, "little")])]))
    assert (one.table_map.name, one.rows, two.table_map.name, two.rows) == ("db.a", [{"id": 1}], "db.b", [{"id": 2}])
    with pytest.raises(BinlogError, match="without a preceding TABLE_MAP"):
        p.parse(rows_event(binlog.WRITE_ROWS_V2, 21, 1, [image([(3).to_bytes(4, "little")])]))


def test_incidents_and_malformed_events_are_binlog_errors():
    p = BinlogParser()
    p.parse(fde())
    with pytest.raises(BinlogError, match="INCIDENT"):
        p.parse(event(binlog.INCIDENT, b"\x01\x00\x00"))
    with pytest.raises(BinlogError, match="malformed"):
        p.parse(event(binlog.TABLE_MAP, b"\x15\x00\x00\x00\x00\x00\x01\x00\x09db"))     # cut short


def test_unsupported_mysql_features_are_named():
    p = BinlogParser()
    p.parse(fde())
    with pytest.raises(BinlogError, match="binlog_transaction_compression"):
        p.parse(event(binlog.TRANSACTION_PAYLOAD, b"\x00" * 8))
    with pytest.raises(BinlogError, match="PARTIAL_JSON"):
        p.parse(event(binlog.PARTIAL_UPDATE_ROWS, b"\x00" * 8))


def test_packed_int_and_float32_shortest_form():
    for n in (0, 250, 251, 65535, 65536, 2 ** 24 - 1, 2 ** 24, 2 ** 63):
        assert binlog.packed_int(lenenc(n) + b"x", 0) == (n, len(lenenc(n)))
    for f in (0.1, 0.3, 1.5, 123.456, -3.4e38, 1e-7, 16777217.0):
        v = struct.unpack("<f", struct.pack("<f", f))[0]
        got = binlog._float32(v)
        assert struct.pack("<f", got) == struct.pack("<f", v) and len(repr(got)) <= len(repr(v))
    assert binlog._float32(struct.unpack("<f", struct.pack("<f", 0.1))[0]) == 0.1


def test_captured_mariadb_compressed_events():
    raw = [bytes.fromhex(line) for line in (DATA.parent / "mariadb-10.11-compressed.events").read_text().splitlines()
           if line and not line.startswith("#")]
    p = BinlogParser()
    evs = [p.parse(r) for r in raw]
    assert [e.type for e in evs if isinstance(e, (binlog.Query, binlog.Rows))] == [
        binlog.QUERY_COMPRESSED, binlog.WRITE_ROWS_COMPRESSED_V1, binlog.UPDATE_ROWS_COMPRESSED_V1,
        binlog.DELETE_ROWS_COMPRESSED_V1]
    assert evs[1].query == "create table cz (id int primary key, t text)"
    assert rows_of(raw) == [("x.cz", "insert", {"id": 1, "t": "abc" * 300}), ("x.cz", "insert", {"id": 2, "t": "x"}),
                            ("x.cz", "update", ({"id": 2, "t": "x"}, {"id": 2, "t": "y"})),
                            ("x.cz", "delete", {"id": 1, "t": "abc" * 300})]


# ---------------------------------------------------------------- MariaDB types the binlog cannot tell apart


def test_mariadb_uuid_inet4_inet6_by_the_catalog_hint():
    # MariaDB 10.11 writes UUID / INET6 as BINARY(16) and INET4 as BINARY(4) (binary collation 63); the
    # binlog drops trailing zero bytes of BINARY values
    cols = [("id", binlog.T_LONG, b"", False), ("u", binlog.T_STRING, b"\xfe\x10", False),
            ("i4", binlog.T_STRING, b"\xfe\x04", False), ("i6", binlog.T_STRING, b"\xfe\x10", False),
            ("j", binlog.T_BLOB, b"\x04", False), ("raw", binlog.T_STRING, b"\xfe\x04", False)]
    tm = table_map(20, "db", "t", cols, charsets={1: 63, 2: 63, 3: 63, 4: 45, 5: 63}, mariadb=True)

    def row(i, u, i4, i6, j):
        jb = j.encode()
        return image([i.to_bytes(4, "little"), bytes([len(u.rstrip(b"\0"))]) + u.rstrip(b"\0"),
                      bytes([len(i4.rstrip(b"\0"))]) + i4.rstrip(b"\0"),
                      bytes([len(i6.rstrip(b"\0"))]) + i6.rstrip(b"\0"),
                      len(jb).to_bytes(4, "little") + jb, b"\x02\x01\x02"])
    u1 = bytes.fromhex("6ccd780cbaba102695645b8c656024db")
    rows_ev = rows_event(binlog.WRITE_ROWS_V2, 20, 6, [
        row(1, u1, bytes([1, 2, 3, 4]), bytes.fromhex("00000000000000000000ffff01020304"), '{"a":1e400}'),
        row(2, bytes(15) + b"\x01", bytes([255, 0, 0, 0]), bytes.fromhex("20010db8000000000000000000000001"),
            "[3.14159265358979323846]"),
        row(3, bytes(16), bytes(4), bytes(16), "not json {"),
    ])
    hints = {"u": "uuid", "i4": "inet4", "i6": "inet6", "j": "json"}
    p = BinlogParser(json_columns=lambda schema, table: hints)
    got = [r[2] for r in rows_of([fde("10.11.6-MariaDB-log"), tm, rows_ev], p)]
    assert got[0]["u"] == "6ccd780c-baba-1026-9564-5b8c656024db" and got[0]["i4"] == "1.2.3.4"
    assert got[0]["i6"] == "::ffff:1.2.3.4" and got[0]["j"] == RawJson('{"a":1e400}')
    assert got[1]["u"] == "00000000-0000-0000-0000-000000000001" and got[1]["i4"] == "255.0.0.0"
    assert got[1]["i6"] == "2001:db8::1" and got[1]["j"] == RawJson("[3.14159265358979323846]")
    assert got[2]["u"] == "00000000-0000-0000-0000-000000000000" and got[2]["i4"] == "0.0.0.0"
    assert got[2]["i6"] == "::" and got[2]["j"] == "not json {"        # not JSON: a string, never broken bytes
    assert got[0]["raw"] == "AQIAAA=="                                  # plain BINARY(4) stays base64
    # without the hint (or a hint that does not fit the column) the bytes decide: base64
    plain = [r[2] for r in rows_of([fde("10.11.6-MariaDB-log"), tm, rows_ev],
                                   BinlogParser(json_columns=lambda s, t: {"i4": "uuid", "raw": "inet6"}))]
    assert plain[0]["u"] == "bM14DLq6ECaVZFuMZWAk2w=="
    assert plain[0]["i4"] == "AQIDBA==" and plain[0]["raw"] == "AQIAAA=="


def test_mysql_binary_json_decimal_keeps_its_digits():
    # an opaque DECIMAL(20,18) 3.141592653589793238 inside a JSON array
    dec = bytes([20, 18]) + bytes.fromhex(encode_decimal_hex("3.141592653589793238", 20, 18))
    opaque = bytes([binlog.T_NEWDECIMAL]) + bytes([len(dec)]) + dec
    arr = struct.pack("<HH", 1, 4 + 3 + len(opaque)) + bytes([15]) + struct.pack("<H", 7) + opaque
    assert binlog.decode_json_binary(bytes([2]) + arr) == [RawJson("3.141592653589793238")]


def encode_decimal_hex(text: str, precision: int, scale: int) -> str:
    """MySQL's binary DECIMAL, positive values: 9-digit groups in 4 bytes, a partial group in fewer bytes,
    the top bit set."""
    ip, fp = text.split(".")
    ip = ip.rjust(precision - scale, "0")
    fp = fp.ljust(scale, "0")
    size_of = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 4, 8: 4, 9: 4}
    out = b""
    lead = len(ip) % 9
    if lead:
        out += int(ip[:lead]).to_bytes(size_of[lead], "big")
    for i in range(lead, len(ip), 9):
        out += int(ip[i:i + 9]).to_bytes(4, "big")
    for i in range(0, len(fp) - len(fp) % 9, 9):
        out += int(fp[i:i + 9]).to_bytes(4, "big")
    if len(fp) % 9:
        out += int(fp[len(fp) - len(fp) % 9:]).to_bytes(size_of[len(fp) % 9], "big")
    out = bytes([out[0] | 0x80]) + out[1:]
    return out.hex()


def test_float32_shortest_form_also_for_subnormals():
    smallest = struct.unpack("<f", struct.pack("<I", 1))[0]                 # 1.401298464324817e-45
    assert binlog._float32(smallest) == 1e-45                               # not 1.4013e-45
    assert binlog._float32(struct.unpack("<f", struct.pack("<I", 3))[0]) == 4e-45
    rng = random.Random(12)
    for _ in range(3000):
        bits = rng.getrandbits(32)
        v = struct.unpack("<f", struct.pack("<I", bits))[0]
        if v != v or math.isinf(v):
            continue
        got = binlog._float32(v)
        assert struct.pack("<f", got) == struct.pack("<f", v)
        digits = len(f"{got:e}".split("e")[0].replace("-", "").replace(".", "").rstrip("0"))
        # no decimal with fewer significant digits reads back as the same float32
        if digits > 1:
            shorter = float(f"{v:.{digits - 2}e}")
            assert struct.pack("<f", shorter) != struct.pack("<f", v), (v, got)
