"""Differential check of the log sources' value model against each database's own rendering of the same rows.

Seeded random and edge values of every common type are written by writers with different session settings
(time zone, DateStyle, float digits); the change is read back from the log through the pure decoders
(PostgreSQL: pgoutput rows from pg_logical_slot_get_binary_changes, decoded by agent/pgoutput.py with
agent/pgvalues.py; MariaDB: the binlog file's bytes, decoded by agent/binlog.py with the catalog's type
hints) and compared with what the database itself prints for the same row (to_json / ::text in a UTC, ISO
session; MariaDB's SELECT in UTC), normalised to the contract form by the small reference functions here,
which share no code with the converters. The trigger sources join this check in the next phase.
"""

from __future__ import annotations

import base64
import glob
import ipaddress
import json
import math
import os
import random
import re
import struct
import uuid


from agent import binlog, myvalues, pgoutput, pgvalues
from agent.rawjson import RawJson
from tests.decoder_paths import decoder_path  # noqa: F401  (every test on both tuple decoders)

SEED = int(os.environ.get("CDC_VALUES_SEED", "20261201"))
ROWS = 120


# ---------------------------------------------------------------- shared random values

def rand_json(rng: random.Random, depth: int = 0):
    """A JSON text with the numbers that used to lose digits, duplicate keys and odd spacing."""
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rng.choice(["3.14159265358979323846264338327950288", "1e-400", "1e400", "-0", "0.1", "-1.5E+300",
                           str(rng.getrandbits(100)), str(-rng.getrandbits(70)), "12345678901234567890.5"])
    if pick == 1:
        return str(rng.randrange(-10**6, 10**6))
    if pick == 2:
        return json.dumps(rng.choice(["", "é", "a\"b", "tab\t", "\\u0000", "😀", "x" * 5]))
    if pick in (3, 4, 5):
        return rng.choice(["true", "false", "null"])
    if pick in (6, 7):
        n = rng.randrange(4)
        return "[" + ("," + " " * rng.randrange(2)).join(rand_json(rng, depth + 1) for _ in range(n)) + "]"
    keys = [rng.choice(["a", "b", "é", "k"]) for _ in range(rng.randrange(4))]
    return "{" + ", ".join(f'"{k}":{" " * rng.randrange(2)}{rand_json(rng, depth + 1)}' for k in keys) + "}"


def f32_from_bits(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def f64_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def finite_f64(rng: random.Random) -> float:
    while True:
        v = f64_from_bits(rng.getrandbits(64))
        if math.isfinite(v):
            return v


def same_float(a, b) -> bool:
    return type(a) is float and type(b) is float and (a == b and math.copysign(1, a) == math.copysign(1, b))


# ---------------------------------------------------------------- PostgreSQL

PG_COLUMNS = [
    ("i2", "int2"), ("i4", "int4"), ("i8", "int8"), ("num", "numeric"), ("f4", "float4"), ("f8", "float8"),
    ("b", "bool"), ("t", "text"), ("d", "date"), ("tm", "time"), ("ttz", "timetz"), ("ts", "timestamp"),
    ("tstz", "timestamptz"), ("iv", "interval"), ("by", "bytea"), ("js", "json"), ("jb", "jsonb"), ("u", "uuid"),
    ("a_i4", "int4[]"), ("a_num", "numeric[]"), ("a_t", "text[]"), ("a_d", "date[]"),
]


def pg_year_text(y: int) -> str:
    """A PostgreSQL literal year: 'YYYY' or 'YYYY BC' (PostgreSQL counts 1 BC, 2 BC, ...)."""
    return (f"{y:04d}", "") if y > 0 else (f"{1 - y:04d}", " BC")


def pg_values(rng: random.Random, edge: int | None) -> dict[str, str | None]:
    """One row as PostgreSQL literals (None: NULL). `edge` walks the edge cases, then it is random."""
    def date_parts():
        y = rng.choice([rng.randrange(1, 10000), rng.randrange(-4712, 1), rng.randrange(10000, 294276)])
        return y, rng.randrange(1, 13), rng.randrange(1, 29)

    def dlit(y, m, d, rest=""):
        yt, bc = pg_year_text(y)
        return f"{yt}-{m:02d}-{d:02d}{rest}{bc}"

    y, m, d = date_parts()
    frac = rng.choice(["", f".{rng.randrange(10**6):06d}", f".{rng.randrange(10)}"])
    clock = f" {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}{frac}"
    off = rng.choice(["+00", "-03", "+05:30", "+14", "-12:45", "+00:19:32"])
    row = {
        "i2": str(rng.randrange(-32768, 32768)), "i4": str(rng.randrange(-2**31, 2**31)),
        "i8": str(rng.randrange(-2**63, 2**63)),
        "num": rng.choice([f"{rng.randrange(-10**30, 10**30)}.{rng.randrange(10**12):012d}", str(rng.getrandbits(200)),
                           "NaN", "Infinity", "-Infinity", "0.000", f"-{rng.randrange(100)}.5"]),
        "f4": repr(f32_from_bits(rng.getrandbits(32))), "f8": repr(finite_f64(rng)),
        "b": rng.choice(["true", "false"]), "t": rng.choice(["plain", "é😀", "line\nbreak", "", " pad ", "a\"b\\c"]),
        "d": dlit(y, m, d),
        "tm": f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}{frac}",
        "ttz": f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}{frac}{off[:6]}",
        "ts": dlit(y, m, d, clock), "tstz": dlit(y, m, d, clock + off),
        "iv": rng.choice([f"{rng.randrange(-100, 100)} years {rng.randrange(-11, 12)} mons "
                          f"{rng.randrange(-40, 40)} days "
                          f"{rng.randrange(-99, 99)}:{rng.randrange(60):02d}:{rng.randrange(60):02d}{frac}",
                          "0", "-1.5 seconds", "100 hours"]),
        "by": "\\x" + rng.randbytes(rng.randrange(20)).hex(),
        "js": rand_json(rng), "jb": rand_json(rng), "u": str(uuid.UUID(bytes=rng.randbytes(16))),
        "a_i4": "{" + ",".join(rng.choice([str(rng.randrange(-99, 99)), "NULL"])
                               for _ in range(rng.randrange(4))) + "}",
        "a_num": "{" + ",".join(rng.choice(["1.50", "NaN", "-0.001", "NULL", str(rng.getrandbits(80))])
                                for _ in range(rng.randrange(4))) + "}",
        "a_t": "{" + ",".join(rng.choice(['"a,b"', '"q\\"x"', "NULL", '"NULL"', "plain", '""'])
                              for _ in range(rng.randrange(4))) + "}",
        "a_d": "{" + ",".join(rng.choice(["2026-01-02", "infinity", '"0044-03-15 BC"', "NULL"])
                              for _ in range(rng.randrange(3))) + "}",
    }
    edges = [
        {"f4": "NaN", "f8": "-0", "d": "infinity", "ts": "infinity", "tstz": "-infinity"},
        {"f4": "-Infinity", "f8": "Infinity", "d": "-infinity", "ts": "-infinity", "tstz": "infinity"},
        {"f4": "-0", "f8": "NaN", "d": "0001-01-01 BC", "ts": "0001-12-31 23:59:59.999999 BC",
         "tstz": "0001-01-01 00:00:00+05:30"},
        {"f4": "1e-45", "f8": "5e-324", "d": "4714-11-24 BC", "ts": "4714-11-24 00:00:00 BC",
         "tstz": "4713-11-24 01:00:00+02 BC"},
        {"f4": "3.4028235e38", "f8": "1.7976931348623157e308", "d": "5874897-12-31",
         "ts": "294276-12-31 23:59:59.999999",
         "tstz": "294276-12-31 23:59:59.999999+00"},
        {"f4": "0.1", "f8": "0.1", "d": "10000-01-01", "ts": "10000-01-01 00:00:00", "tstz": "9999-12-31 23:00:00-03",
         "js": '{"e": 1e400}',
         "jb": '{"pi": 3.14159265358979323846, "tiny": 1e-400, "big": 123456789012345678901234567890}'},
        {"js": '{"a": 1, "a": 2}', "jb": "[]", "num": "0", "t": "\\", "tm": "24:00:00", "ttz": "24:00:00-15:59",
         "iv": "-178000000 years", "i8": "-9223372036854775808", "f8": "-1e-320"},
        {"js": '{\n  "multi": [1,\n 2]\n}', "jb": "1e400"},
        {k: None for k, _ in PG_COLUMNS},
    ]
    if edge is not None and edge < len(edges):
        row.update(edges[edge])
    elif rng.random() < 0.1:
        row[rng.choice(list(row))] = None
    return row


# reference: PostgreSQL's own rendering -> the contract form, written from the contract (docs/values.md)

def ref_year(pg: str, bc: bool) -> str:
    y = 1 - int(pg) if bc else int(pg)
    if 0 <= y <= 9999:
        return f"{y:04d}"
    return f"+{y}" if y > 0 else "-" + f"{-y}".rjust(4, "0")


def ref_frac(frac: str | None) -> str:
    return "." + frac.ljust(6, "0") if frac else ""


def ref_date(s: str) -> str:
    if s in ("infinity", "-infinity"):
        return s
    m = re.fullmatch(r"(\d+)-(\d\d)-(\d\d)( BC)?", s)
    return f"{ref_year(m[1], bool(m[4]))}-{m[2]}-{m[3]}"


def ref_timestamp(s: str, tz: bool) -> str:
    """to_json(timestamp[tz]) in a UTC session: '2026-11-23T10:15:02.5', '0044-03-15T10:00:00+00:00 BC'."""
    if s in ("infinity", "-infinity"):
        return s
    m = re.fullmatch(r"(\d+)-(\d\d)-(\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d+))?(\+00:00)?( BC)?", s)
    assert m and bool(m[6]) == tz, s
    head = f"{ref_year(m[1], bool(m[7]))}-{m[2]}-{m[3]}T{m[4]}"
    return f"{head}{ref_frac(m[5]) or '.000000'}Z" if tz else head + ref_frac(m[5])


def ref_time(s: str) -> str:
    m = re.fullmatch(r"(\d\d:\d\d:\d\d)(?:\.(\d+))?([+-]\d\d(?::\d\d){0,2})?", s)
    zone = m[3] or ""
    if zone and len(zone) == 3:
        zone += ":00"
    return m[1] + ref_frac(m[2]) + zone


def pg_reference(col: str, typ: str, to_json_text: str | None, text: str | None):
    if text is None:
        return None
    j = json.loads(to_json_text)
    if typ in ("int2", "int4", "int8", "bool", "text", "uuid"):
        return j
    if typ in ("float4", "float8"):
        return j if isinstance(j, str) else float(to_json_text)       # "-0" is a float here
    if typ in ("numeric", "interval", "json", "jsonb"):
        return text
    if typ == "date":
        return ref_date(text)
    if typ in ("time", "timetz"):
        return ref_time(text)
    if typ in ("timestamp", "timestamptz"):
        return ref_timestamp(j, typ == "timestamptz")
    if typ == "bytea":
        return base64.b64encode(bytes.fromhex(text[2:])).decode()
    if typ == "int4[]":
        return j
    if typ == "numeric[]":          # to_json writes the exact digits as numbers: take them as text
        return json.loads(to_json_text, parse_float=str, parse_int=str)
    if typ in ("text[]", "date[]"):
        return None if j is None else [None if x is None else (ref_date(x) if typ == "date[]" else x) for x in j]
    raise AssertionError(typ)


PG_WRITERS = [  # session settings of the writing connections: none of them may show in the events
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'",
    "SET TimeZone = 'America/Lima'; SET DateStyle = 'SQL, DMY'; SET extra_float_digits = 0",
    "SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'German'; SET extra_float_digits = -15",
    "SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'Postgres, MDY'; SET IntervalStyle = 'sql_standard'",
]


def test_postgres_log_values_match_the_database(pg_db):
    rng = random.Random(SEED)
    cols = ", ".join(f"{c} {t}" for c, t in PG_COLUMNS)
    pg_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {cols}); CREATE PUBLICATION p FOR TABLE vals")
    pg_db.execute("SELECT pg_create_logical_replication_slot('vals_slot', 'pgoutput')")
    placeholders = ", ".join(f"%s::{t}" for _, t in PG_COLUMNS)
    conns = [pg_db.connect() for _ in PG_WRITERS]
    try:
        for conn, setting in zip(conns, PG_WRITERS):
            conn.execute(setting)
        for i in range(ROWS):
            row = pg_values(rng, i)
            conns[i % len(conns)].execute(f"INSERT INTO vals VALUES (%s, {placeholders})",
                                          [i] + [row[c] for c, _ in PG_COLUMNS])
    finally:
        for conn in conns:
            conn.close()
    with pg_db.connect() as conn:
        # the reading session formats the values (the walsender would with the source's settings)
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'iso_8601'; "
                     "SET extra_float_digits = 1; SET bytea_output = 'hex'")
        changes = conn.execute("SELECT data FROM pg_logical_slot_get_binary_changes('vals_slot', NULL, NULL, "
                               "'proto_version', '1', 'publication_names', 'p')").fetchall()
        exprs = ", ".join(f"to_json({c})::text, {c}::text" for c, _ in PG_COLUMNS)
        expected = {r[0]: r[1:] for r in conn.execute(f"SELECT id, {exprs} FROM vals").fetchall()}
        conn.execute("SELECT pg_drop_replication_slot('vals_slot')")
    dec = pgoutput.Decoder()
    got = {}
    for (data,) in changes:
        msg = dec.decode(bytes(data))
        if isinstance(msg, pgoutput.Relation):
            dec.set_converters(msg.oid, pgvalues.converters([c.type_oid for c in msg.columns]))
        elif msg.kind == "I":           # an Insert, or a RenderedRow of one on the compiled path
            values = dict(zip(msg.relation.names, msg.new))
            got[values["id"]] = values
    assert sorted(got) == list(range(ROWS))
    problems = []
    for i, values in got.items():
        for k, (col, typ) in enumerate(PG_COLUMNS):
            want = pg_reference(col, typ, expected[i][2 * k], expected[i][2 * k + 1])
            have = values[col]
            if typ in ("json", "jsonb") and have is not None:
                assert type(have) is RawJson, (i, col, have)
                have = have.text
                want = want.replace("\n", " ")            # line breaks are whitespace: an event is one line
            ok = same_float(have, want) if typ in ("float4", "float8") and type(want) is float else \
                (have == want and type(have) is type(want))
            if not ok:
                problems.append(f"row {i} {col} ({typ}): log {have!r}, database {want!r} "
                                f"(to_json {expected[i][2 * k]!r})")
    assert not problems, f"{len(problems)} values differ (seed {SEED}):\n" + "\n".join(problems[:30])


# ---------------------------------------------------------------- MariaDB

MY_COLUMNS = [
    ("ti", "tinyint"), ("tiu", "tinyint unsigned"), ("si", "smallint"), ("mi", "mediumint unsigned"),
    ("i", "int"), ("iu", "int unsigned"), ("bi", "bigint"), ("biu", "bigint unsigned"),
    ("d", "decimal(40,12)"), ("d0", "decimal(5,0) unsigned"), ("f", "float"), ("db", "double"),
    ("b5", "bit(5)"), ("b64", "bit(64)"), ("y", "year"), ("dt", "date"), ("dtm", "datetime"), ("dtm6", "datetime(6)"),
    ("ts3", "timestamp(3) null"), ("tm", "time"), ("tm4", "time(4)"), ("c", "char(5)"), ("vc", "varchar(20)"),
    ("l1", "varchar(10) character set latin1"), ("bn", "binary(6)"), ("vb", "varbinary(10)"), ("bl", "blob"),
    ("e", "enum('a','bé','')"), ("s", "set('x','y','z')"), ("j", "json"), ("u", "uuid"), ("i4", "inet4"),
    ("i6", "inet6"),
]


def my_values(rng: random.Random, edge: int | None) -> dict[str, object]:
    def when(lo=1000, hi=9999):
        return f"{rng.randrange(lo, hi + 1):04d}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"

    def clock():
        return f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"

    words = [rng.choice([0, 0, rng.randrange(65536)]) for _ in range(8)]
    row = {
        "ti": rng.randrange(-128, 128), "tiu": rng.randrange(256), "si": rng.randrange(-32768, 32768),
        "mi": rng.randrange(2**24), "i": rng.randrange(-2**31, 2**31), "iu": rng.randrange(2**32),
        "bi": rng.randrange(-2**63, 2**63), "biu": rng.randrange(2**64),
        "d": f"{rng.choice(['', '-'])}{rng.randrange(10**28)}.{rng.randrange(10**12):012d}",
        "d0": str(rng.randrange(10**5)),
        "f": repr(f32_from_bits(rng.getrandbits(31) % 0x7F800000 | rng.getrandbits(1) << 31)),
        "db": repr(finite_f64(rng)), "b5": rng.randrange(32), "b64": rng.getrandbits(64),
        "y": rng.randrange(1901, 2156), "dt": when(), "dtm": f"{when()} {clock()}",
        "dtm6": f"{when()} {clock()}.{rng.randrange(10**6):06d}",
        "ts3": f"{when(1971, 2037)} {clock()}.{rng.randrange(1000):03d}",
        "tm": f"{rng.choice(['', '-'])}{rng.randrange(839)}:{rng.randrange(60):02d}:{rng.randrange(60):02d}",
        "tm4": f"{rng.choice(['', '-'])}{rng.randrange(839)}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
               f".{rng.randrange(10**4):04d}",
        "c": rng.choice(["ab", "", "é😀", "12345"]), "vc": rng.choice(["plain", "tab\there", "", "€"]),
        "l1": rng.choice(["äöü", "abc", "€"]), "bn": rng.randbytes(rng.randrange(7)),
        "vb": rng.randbytes(rng.randrange(11)),
        "bl": rng.randbytes(rng.randrange(40)), "e": rng.choice(["a", "bé", ""]),
        "s": ",".join(x for x in "xyz" if rng.random() < 0.5), "j": rand_json(rng),
        "u": str(uuid.UUID(bytes=rng.randbytes(16))), "i4": str(ipaddress.IPv4Address(rng.randbytes(4))),
        "i6": str(ipaddress.IPv6Address(b"".join(w.to_bytes(2, "big") for w in words))),
    }
    edges = [
        {"y": 0, "dt": "0000-00-00", "dtm": "0000-00-00 00:00:00", "dtm6": "0000-00-00 00:00:00",
         "ts3": "0000-00-00 00:00:00",
         "f": "1e-45", "tm": "-838:59:59", "tm4": "838:59:59.0000", "i6": "1:2:3:4:5:6:7:0"},
        {"f": "16777217", "db": "-0", "d": "-0.000000000001", "tm": "00:00:00", "tm4": "-00:00:00.0001",
         "i6": "::ffff:1.2.3.4", "i4": "0.0.0.0", "u": "00000000-0000-0000-0000-000000000000"},
        {"f": "0.1", "db": "0.1", "i6": "::1.2.3.4", "j": '{"e": 1e400}', "biu": 2**64 - 1, "bi": -2**63},
        {"f": "3.4028235e38", "db": "5e-324", "i6": "::",
         "j": '[3.14159265358979323846, 1e-400, 123456789012345678901234567890]',
         "dtm6": "9999-12-31 23:59:59.999999", "ts3": "2038-01-19 03:14:07.999", "dt": "1000-01-01",
         "i4": "255.255.255.255"},
        {"i6": "1:0:2:3:4:5:6:7", "j": "  [1 ,2]  "}, {"i6": "1:0:0:2:0:0:3:4"}, {"i6": "1:2:3:4:5:6:7:8"},
        {"f": "-0", "i6": "1:0:0:2:0:0:0:3", "d0": "0", "bn": b"\x00" * 6, "vb": b"", "j": '{"a": 1, "a": 2}'},
        {k: None for k, _ in MY_COLUMNS},
    ]
    if edge is not None and edge < len(edges):
        row.update(edges[edge])
    elif rng.random() < 0.1:
        row[rng.choice(list(row))] = None
    return row


def my_reference(col: str, typ: str, text: str | None, dbl: str | None):
    """MariaDB's SELECT text (time_zone '+00:00') -> the contract form, from docs/values.md."""
    if text is None:
        return None
    base = typ.split("(")[0].split(" ")[0]
    fsp = int(typ.split("(")[1].split(")")[0]) if "(" in typ and base in ("datetime", "timestamp", "time") else 0
    if base in ("tinyint", "smallint", "mediumint", "int", "bigint", "bit", "year"):
        return int(text)
    if base in ("decimal", "char", "varchar", "enum", "set", "uuid", "inet4", "inet6", "json"):
        return text
    if base == "double":
        return float(text)
    if base == "float":
        return float(dbl)                                  # compared as float32, below
    if base in ("binary", "varbinary", "blob"):
        return text.replace("\n", "")                      # TO_BASE64 wraps lines
    if base == "date":
        return text
    if base in ("datetime", "timestamp"):
        s = text.replace(" ", "T")
        if fsp:
            head, _, frac = s.partition(".")
            s = f"{head}.{frac.ljust(6, '0')}"
        return s + (".000000Z" if base == "timestamp" and not fsp else "Z" if base == "timestamp" else "")
    if base == "time":
        head, _, frac = text.partition(".")
        return f"{head}.{frac.ljust(6, '0')}" if fsp else head
    raise AssertionError(typ)


def my_select_expr(col: str, typ: str) -> str:
    base = typ.split("(")[0].split(" ")[0]
    if base == "bit":
        return f"CAST({col} + 0 AS CHAR)"
    if base in ("binary", "varbinary", "blob"):
        return f"TO_BASE64({col})"
    if base == "float":
        return f"CAST({col} AS CHAR)"
    return f"CAST({col} AS CHAR)"


def test_mariadb_binlog_values_match_the_database(mariadb_db):
    rng = random.Random(SEED)
    server = mariadb_db.server
    cols = ", ".join(f"{c} {t}" for c, t in MY_COLUMNS)
    mariadb_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {cols})")
    start_file = server.execute("SHOW MASTER STATUS")[0][0]
    placeholders = ", ".join(["%s"] * (len(MY_COLUMNS) + 1))
    writers = ["+00:00", "+05:30", "-08:00", "SYSTEM"]
    conns = [mariadb_db.connect() for _ in writers]
    try:
        for conn, tz in zip(conns, writers):
            with conn.cursor() as cur:
                cur.execute("SET time_zone = %s, sql_mode = ''", (tz,))
        for i in range(ROWS):
            row = my_values(rng, i)
            with conns[i % len(conns)].cursor() as cur:
                cur.execute(f"INSERT INTO vals VALUES ({placeholders})", [i] + [row[c] for c, _ in MY_COLUMNS])
    finally:
        for conn in conns:
            conn.close()
    server.execute("FLUSH BINARY LOGS")
    conn = mariadb_db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            exprs = ", ".join(my_select_expr(c, t) for c, t in MY_COLUMNS)
            cur.execute(f"SELECT id, {exprs}, CAST(f AS DOUBLE) FROM vals")
            expected = {r[0]: r[1:] for r in cur.fetchall()}

            def query(sql):
                cur.execute(sql)
                return list(cur.fetchall())
            hints = myvalues.load_logical_types(query)
    finally:
        conn.close()
    names = sorted(glob.glob(str(server.data / "mysql-bin.[0-9]*")))
    names = [n for n in names if os.path.basename(n) >= start_file]
    parser = binlog.BinlogParser(want=lambda s, t: (s, t) == (mariadb_db.name, "vals"),
                                 json_columns=lambda s, t: hints.get((s, t), {}))
    got = {}
    for name in names:
        with open(name, "rb") as fh:
            for raw in binlog.split_binlog_file(fh.read()):
                ev = parser.parse(raw)
                if isinstance(ev, binlog.Rows) and ev.rows and ev.op == "insert":
                    for r in ev.rows:
                        got[r["id"]] = r
    assert sorted(got) == list(range(ROWS))
    problems = []
    for i, values in got.items():
        for k, (col, typ) in enumerate(MY_COLUMNS):
            want = my_reference(col, typ, expected[i][k], expected[i][-1])
            have = values[col]
            if isinstance(have, RawJson):
                have = have.text
            if typ == "float" and want is not None:
                pack = struct.Struct("<f").pack
                short = float(expected[i][k])            # SELECT's 6 digits: when they read back, no longer
                ok = type(have) is float and pack(have) == pack(want) \
                    and math.copysign(1, have) == math.copysign(1, want) \
                    and (pack(short) != pack(want) or len(repr(have)) <= len(repr(short)))
            elif typ == "double" and want is not None:
                ok = same_float(have, want)
            else:
                ok = have == want and type(have) is type(want)
            if not ok:
                problems.append(f"row {i} {col} ({typ}): binlog {have!r}, database {expected[i][k]!r} -> {want!r}")
    assert not problems, f"{len(problems)} values differ (seed {SEED}):\n" + "\n".join(problems[:30])


def test_postgres_stored_generated_columns_are_not_in_the_log_and_are_named(pg_db):
    pg_db.execute("CREATE TABLE g (id int PRIMARY KEY, price numeric, qty int, "
                  "total numeric GENERATED ALWAYS AS (price * qty) STORED, note text); "
                  "CREATE TABLE plain (id int PRIMARY KEY); CREATE PUBLICATION pg FOR TABLE g, plain")
    pg_db.execute("SELECT pg_create_logical_replication_slot('gen_slot', 'pgoutput')")
    pg_db.execute("INSERT INTO g (id, price, qty, note) VALUES (1, 2.50, 4, 'x')")
    rows = pg_db.execute("SELECT data FROM pg_logical_slot_get_binary_changes('gen_slot', NULL, NULL, "
                         "'proto_version', '1', 'publication_names', 'pg')")
    pg_db.execute("SELECT pg_drop_replication_slot('gen_slot')")
    dec = pgoutput.Decoder()
    rel = next(m for m in (dec.decode(bytes(r[0])) for r in rows) if isinstance(m, pgoutput.Relation))
    assert rel.names == ("id", "price", "qty", "note")                  # no "total": what the docs say
    found = pgvalues.stored_generated_columns(pg_db.execute(pgvalues.STORED_GENERATED_SQL),
                                              ["public.g", "public.plain"])
    assert found == {"public.g": ["total"]}
    assert "public.g: total" in pgvalues.stored_generated_detail(found)
