"""PostgreSQL values to their JSON form (CONTRACT §3): pure converter tests, and a table with every type that
arrives through the PostgresSource exactly as the database holds it, compared with JSON the database itself
builds from the same rows (to_json, numeric::text, encode(..., 'base64'), to_char ... AT TIME ZONE 'UTC')."""

from __future__ import annotations

import base64
import json

import pytest

from agent import config
from agent import pgvalues as v
from agent.pgvalues import TypeInfo
from agent.rawjson import RawJson, dumps as dumps_event_json
from tests.decoder_paths import decoder_path  # noqa: F401  (every test on both tuple decoders)


# ---------------------------------------------------------------- pure


@pytest.mark.parametrize("text, want", [
    (b"{}", []),
    (b"{1,2,3}", ["1", "2", "3"]),
    (b'{a,"b c",NULL,"NULL","q\\"x","back\\\\slash","{br,ace}","",x}',
     ["a", "b c", None, "NULL", 'q"x', "back\\slash", "{br,ace}", "", "x"]),
    (b"{{1,2},{3,NULL}}", [["1", "2"], ["3", None]]),
    (b"{{{1}},{{2}}}", [[["1"]], [["2"]]]),
    (b"[0:1]={7,8}", ["7", "8"]),
    (b'{"line\none"}', ["line\none"]),
])
def test_array_text(text, want):
    assert v.array_converter(bytes.decode)(text) == want


def test_array_elements_are_converted_and_other_delimiters():
    assert v.array_converter(int)(b"{{1,2},{3,NULL}}") == [[1, 2], [3, None]]
    assert v.array_converter(v.SCALARS[v.NUMERIC])(b"{1.50,NaN}") == ["1.50", "NaN"]
    assert v.array_converter(bytes.decode, ";")(b"{(1,1),(0,0);(2,2),(1,1)}") == ["(1,1),(0,0)", "(2,2),(1,1)"]
    with pytest.raises(ValueError):
        v.array_converter(bytes.decode)(b"{1,2")


def test_scalars():
    f = v.SCALARS
    assert f[v.INT8](b"-9223372036854775808") == -9223372036854775808
    assert (f[v.NUMERIC](b"1234567890123456789012345678901234567890.0001")
            == "1234567890123456789012345678901234567890.0001")
    assert [f[v.FLOAT8](x) for x in (b"NaN", b"Infinity", b"-Infinity", b"-1.5e+300", b"0.1")] == \
        ["NaN", "Infinity", "-Infinity", -1.5e300, 0.1]
    assert f[v.BOOL](b"t") is True and f[v.BOOL](b"f") is False
    assert f[v.BPCHAR](b"ab   ") == "ab   "
    assert f[v.TIME](b"10:11:12") == "10:11:12" and f[v.TIME](b"10:11:12.5") == "10:11:12.500000"
    assert f[v.TIMETZ](b"10:11:12.5+05:30") == "10:11:12.500000+05:30"
    assert f[v.TIMETZ](b"10:11:12-03") == "10:11:12-03:00"
    assert f[v.TIMESTAMP](b"2026-11-23 10:15:02") == "2026-11-23T10:15:02"
    assert f[v.TIMESTAMP](b"2026-11-23 10:15:02.12") == "2026-11-23T10:15:02.120000"
    assert f[v.TIMESTAMP](b"infinity") == "infinity"
    assert f[v.BYTEA](b"\\x00ff10") == "AP8Q"
    assert f[v.BYTEA](b"a\\000\\\\b") == base64.b64encode(b"a\x00\\b").decode()     # escape format
    assert f[v.JSONB](b'{"a": [1, "x", null, true]}') == RawJson('{"a": [1, "x", null, true]}')
    assert f[v.UUID](b"827ccb0e-ea8a-706c-4c34-a16891f84e7b") == "827ccb0e-ea8a-706c-4c34-a16891f84e7b"


@pytest.mark.parametrize("text, want", [
    (b"2026-11-23 10:15:02.123456+00", "2026-11-23T10:15:02.123456Z"),
    (b"2026-11-23 10:15:02+00", "2026-11-23T10:15:02.000000Z"),
    (b"2026-11-23 10:15:02.5+00", "2026-11-23T10:15:02.500000Z"),
    (b"2026-11-23 10:15:02.5+05:30", "2026-11-23T04:45:02.500000Z"),     # a session not in UTC
    (b"2026-01-01 00:15:02-03", "2026-01-01T03:15:02.000000Z"),
    (b"1900-01-01 00:00:00+00:19:32", "1899-12-31T23:40:28.000000Z"),   # historical offsets have seconds
    (b"infinity", "infinity"),
    (b"-infinity", "-infinity"),
])
def test_timestamptz(text, want):
    assert v.SCALARS[v.TIMESTAMPTZ](text) == want


@pytest.mark.parametrize("text, want", [
    ("1 year 2 mons -3 days +04:05:06.5", "P1Y2M-3DT4H5M6.5S"),
    ("00:00:00", "PT0S"),
    ("-00:00:01.5", "PT-1.5S"),
    ("3 days", "P3D"),
    ("-1 years -2 mons", "P-1Y-2M"),
    ("1-2 -3 +4:05:06.5", "1-2 -3 +4:05:06.5"),        # sql_standard: not this function's business
])
def test_interval_postgres_style_to_iso(text, want):
    assert v.interval_to_iso(text) == want
    assert v.SCALARS[v.INTERVAL](text.encode()) == want


def test_converter_resolution_with_catalog_info():
    types = {
        90001: TypeInfo(90001, "mood", "e"),
        90002: TypeInfo(90002, "_mood", "b", "A", elem=90001),
        90003: TypeInfo(90003, "price", "d", "N", base=v.NUMERIC),
        90004: TypeInfo(90004, "_price", "b", "A", elem=90003),
        90005: TypeInfo(90005, "prices", "d", "A", base=90004),        # a domain over an array of a domain
        90006: TypeInfo(90006, "_box", "b", "A", elem=603),
        603: TypeInfo(603, "box", "b", "G", delim=";"),
        90007: TypeInfo(90007, "loop", "d", "", base=90007),
    }
    assert v.converter(90001, types)(b"happy") == "happy"
    assert v.converter(90002, types)(b"{sad,NULL}") == ["sad", None]
    assert v.converter(90003, types)(b"12.50") == "12.50"
    assert v.converter(90005, types)(b"{1.00,NULL}") == ["1.00", None]
    assert v.converter(90006, types)(b"{(1,1),(0,0);(2,2),(1,1)}") == ["(1,1),(0,0)", "(2,2),(1,1)"]
    assert v.converter(90007, types)(b"x") == "x"                       # no endless recursion
    assert v.converter(1007)(b"{1,NULL}") == [1, None]                  # built-in arrays without a catalog
    assert v.converter(12345)(b"(1,2)") == "(1,2)"                      # unknown: the text
    convs = v.converters([23, 23, 90001], types)
    assert convs[0] is convs[1] is int


# ---------------------------------------------------------------- through the source, against the database

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(12,2) CHECK (VALUE >= 0);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE every_type (
  id int PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint, num numeric, num_s numeric(12,2), f4 real, f8 double precision,
  b boolean, t text, vc varchar(20), ch char(5), d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
  iv interval, by bytea, js json, jb jsonb, u uuid, e mood, dp price, di posint,
  a_int int[], a_text text[], a_num numeric[], a_f8 float8[], a_tstz timestamptz[], a_bytea bytea[],
  a_jsonb jsonb[], a_mood mood[], a_multi int[][], a_date date[], a_uuid uuid[], a_bool bool[], a_dp price[],
  a_iv interval[]
);
"""

ROWS = [
    """(1, 1, 2, 3, 12.50, 12.50, 0.1, 0.1, true, 'plain', 'var', 'ab', '2026-11-23', '10:15:02',
        '10:15:02+02', '2026-11-23 10:15:02', '2026-11-23 10:15:02.123456+00', '1 day 2 hours 3 minutes 4.5 seconds',
        '\\x00ff10', '{"b": 1, "a": [1, 2.5, "x"]}', '{"b": 1, "a": [1, 2.5, "x"]}',
        '827ccb0e-ea8a-706c-4c34-a16891f84e7b', 'happy', 19.99, 7,
        '{1,2,3}', '{a,b}', '{1.10,2}', '{1.5,2}', '{"2026-01-01 00:00:00+00"}', '{"\\\\x01"}',
        '{"{\\"k\\": 1}"}', '{sad,ok}', '{{1,2},{3,4}}', '{2026-01-01}', '{827ccb0e-ea8a-706c-4c34-a16891f84e7b}',
        '{t,f}', '{1.00}', '{"1 day"}')""",
    """(2, -32768, -2147483648, -9223372036854775808, 'NaN',
        -0.01, 'NaN', 'Infinity', false, E'tab\\there "quoted" \\\\ back\\nline 😀', '', 'a',
        '0044-03-15 BC', '23:59:59.999999', '00:00:00.5-03:30', '1999-12-31 23:59:59.5', '1970-01-01 05:00:00.5+05',
        '-1 year -2 months +3 days -04:05:06.789', '\\x', '[]', 'null', '00000000-0000-0000-0000-000000000000', 'sad',
        0, 1,
        '{NULL,1,NULL}', '{"a,b","c\\"d","e\\\\f","{g}",NULL,"NULL"," h ",""}', '{NaN,NULL,-0.5}',
        '{NaN,Infinity,-Infinity,NULL}', '{NULL,"1999-12-31 23:59:59.5+05"}', '{NULL,"\\\\x00ff"}',
        '{"[1, null]",NULL,"\\"s\\""}', '{NULL,happy}', '{{1,NULL},{NULL,4}}', '{infinity,NULL}', '{NULL}',
        '{NULL,t}', '{NULL,0.50}', '{"-00:00:01.5",NULL}')""",
    """(3, 32767, 2147483647, 9223372036854775807, 1234567890123456789012345678901234567890.0123456789,
        9999999999.99, '-Infinity', '-1.5e+300', NULL, NULL, NULL, NULL,
        'infinity', '00:00:00', '12:00:00+00', 'infinity', '-infinity', '0 seconds',
        '\\x000102030405060708090a0b0c0d0e0f10', '{"n": 12345678901234567, "u": "\\u00e9"}',
        '{"deep": {"x": [[], {}]}}', NULL, NULL, NULL, NULL,
        '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')""",
    "(4" + ", NULL" * 38 + ")",
]

# JSON forms built by the database itself (a session with the expected-form settings)
EXPECTED_SQL = """
SELECT id, json_build_object(
  'id', id, 'i2', i2, 'i4', i4, 'i8', i8, 'num', num::text, 'num_s', num_s::text, 'f4', f4, 'f8', f8,
  'b', b, 't', t, 'vc', vc, 'ch', ch,
  'd', CASE WHEN NOT isfinite(d) OR d >= '0001-01-01' THEN d::text                  -- BC: astronomical years
       ELSE '-' || lpad((-extract(year FROM d)::int - 1)::text, 4, '0') || to_char(d, '-MM-DD') END,
  'tm', to_char(tm::interval, 'HH24:MI:SS') || CASE WHEN date_part('microseconds', tm)::int % 1000000 = 0 THEN ''
        ELSE to_char(tm::interval, '.US') END,
  'ttz', to_char(ttz::time::interval, 'HH24:MI:SS')
        || CASE WHEN date_part('microseconds', ttz)::int % 1000000 = 0 THEN ''
                ELSE to_char(ttz::time::interval, '.US') END
        || CASE WHEN date_part('timezone', ttz) < 0 THEN '-' ELSE '+' END
        || to_char(make_interval(secs => abs(date_part('timezone', ttz))), 'HH24:MI'),
  'ts', CASE WHEN isfinite(ts) THEN to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', ts)::int % 1000000 = 0 THEN '' ELSE to_char(ts, '.US') END
        ELSE ts::text END,
  'tstz', CASE WHEN isfinite(tstz) THEN to_char(tstz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
          ELSE tstz::text END,
  'iv', iv::text, 'by', replace(encode(by, 'base64'), E'\\n', ''), 'js', js, 'jb', jb, 'u', u, 'e', e,
  'dp', dp::text, 'di', di,
  'a_int', a_int, 'a_text', a_text,
  'a_num', CASE WHEN a_num IS NOT NULL THEN coalesce((SELECT json_agg(x::text ORDER BY o) FROM unnest(a_num)
           WITH ORDINALITY q(x, o)), '[]') END,
  'a_f8', a_f8,
  'a_tstz', CASE WHEN a_tstz IS NOT NULL THEN coalesce((SELECT json_agg(to_char(x AT TIME ZONE 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') ORDER BY o) FROM unnest(a_tstz) WITH ORDINALITY q(x, o)), '[]') END,
  'a_bytea', CASE WHEN a_bytea IS NOT NULL THEN coalesce((SELECT json_agg(encode(x, 'base64') ORDER BY o)
             FROM unnest(a_bytea) WITH ORDINALITY q(x, o)), '[]') END,
  'a_jsonb', a_jsonb, 'a_mood', a_mood, 'a_multi', a_multi, 'a_date', a_date, 'a_uuid', a_uuid, 'a_bool', a_bool,
  'a_dp', CASE WHEN a_dp IS NOT NULL THEN coalesce((SELECT json_agg(x::text ORDER BY o) FROM unnest(a_dp)
          WITH ORDINALITY q(x, o)), '[]') END,
  'a_iv', CASE WHEN a_iv IS NOT NULL THEN coalesce((SELECT json_agg(x::text ORDER BY o) FROM unnest(a_iv)
          WITH ORDINALITY q(x, o)), '[]') END
)::text FROM every_type ORDER BY id
"""


def make_config(dsn: str, tmp_path, tables, **source):
    return config.parse({"agent": {"name": "vals", "state_dir": str(tmp_path / "state")},
                         "source": {"kind": "postgres", "dsn": dsn, "tables": list(tables), **source},
                         "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]})


def read_all(src, n: int, timeout_rounds: int = 50) -> list:
    from tests.capturing import read
    got = []
    for _ in range(timeout_rounds):
        b = read(src, 1000, 0.2)
        got.extend(b.changes)
        if b.checkpoint:
            src.confirm(b.checkpoint)
        if len(got) >= n:
            break
    return got


def test_every_type_arrives_as_the_database_holds_it(pg_db, tmp_path):
    from agent.sources.postgres import PostgresAdmin, PostgresSource
    pg_db.execute(DDL)
    # hostile session defaults: the source must not depend on the server's or database's settings
    pg_db.execute(f"""ALTER DATABASE "{pg_db.name}" SET TimeZone = 'America/Lima';
                      ALTER DATABASE "{pg_db.name}" SET DateStyle = 'SQL, DMY';
                      ALTER DATABASE "{pg_db.name}" SET IntervalStyle = 'postgres_verbose';
                      ALTER DATABASE "{pg_db.name}" SET bytea_output = 'escape';
                      ALTER DATABASE "{pg_db.name}" SET extra_float_digits = 0""")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.every_type"], heartbeat_seconds=0)
    PostgresAdmin(cfg).setup()
    src = PostgresSource(cfg)
    src.start(None)
    try:
        with pg_db.connect() as conn:
            for r in ROWS:
                conn.execute(f"INSERT INTO every_type VALUES {r}")
        got = read_all(src, len(ROWS))
    finally:
        src.close()
    assert [c.op for c in got] == ["insert"] * len(ROWS)
    with pg_db.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'iso_8601'; "
                     "SET extra_float_digits = 1")
        expected = {i: json.loads(j) for i, j in conn.execute(EXPECTED_SQL).fetchall()}
    for c in got:        # json/jsonb arrive as RawJson: compare what the event will hold
        c.after = json.loads(dumps_event_json(c.after))
        want = expected[c.after["id"]]
        assert set(c.after) == set(want)
        diff = {k: (c.after[k], want[k]) for k in want
                if c.after[k] != want[k] or type(c.after[k]) is not type(want[k])}
        assert not diff, f"row {c.after['id']}: (source, database) differ: {diff}"
        assert c.before is None and c.key_columns == ("id",) and c.unavailable == ()
    # a few forms spelled out, so the expectation above cannot drift along with the converters
    row1, row2, row3, row4 = (next(c.after for c in got if c.after["id"] == i) for i in (1, 2, 3, 4))
    assert row1["tstz"] == "2026-11-23T10:15:02.123456Z" and row1["ts"] == "2026-11-23T10:15:02"
    assert row1["iv"] == "P1DT2H3M4.5S" and row1["by"] == "AP8Q" and row1["ch"] == "ab   "
    assert row1["jb"] == {"a": [1, 2.5, "x"], "b": 1} and row1["num"] == "12.50" and row1["dp"] == "19.99"
    assert row1["ttz"] == "10:15:02+02:00" and row1["a_num"] == ["1.10", "2"] and row1["e"] == "happy"
    assert row2["num"] == "NaN" and row2["f4"] == "NaN" and row2["f8"] == "Infinity"
    assert row2["a_int"] == [None, 1, None] and row2["a_text"][-3:] == ["NULL", " h ", ""]
    assert row2["tstz"] == "1970-01-01T00:00:00.500000Z" and row2["d"] == "-0043-03-15"
    assert row2["a_f8"] == ["NaN", "Infinity", "-Infinity", None]
    assert row3["num"] == "1234567890123456789012345678901234567890.0123456789" and row3["f8"] == -1.5e300
    assert row3["a_int"] == [] and row3["tstz"] == "-infinity" and row3["iv"] == "PT0S"
    assert all(val is None for k, val in row4.items() if k != "id")


def test_interval_and_bytea_fallbacks_match_the_server(pg_db):
    """The fallbacks for sessions that ignore our settings agree with what the server itself writes."""
    ivs = ["1 year 2 mons -3 days +04:05:06.5", "-00:00:01.5", "3 days", "-1 years -2 mons", "00:00:00",
           "1 day -00:00:00.000001", "100 hours", "-2 days -03:00:00"]
    with pg_db.connect() as conn:
        for iv in ivs:
            conn.execute("SET IntervalStyle = 'postgres'")
            pg_text = conn.execute("SELECT %s::interval::text", (iv,)).fetchone()[0]
            conn.execute("SET IntervalStyle = 'iso_8601'")
            iso = conn.execute("SELECT %s::interval::text", (iv,)).fetchone()[0]
            assert v.interval_to_iso(pg_text) == iso, (iv, pg_text)
        conn.execute("SET bytea_output = 'escape'")
        esc, b64 = conn.execute(r"SELECT '\x00015c41ff0a'::bytea::text, encode('\x00015c41ff0a'::bytea, 'base64')"
                                ).fetchone()
        assert v.SCALARS[v.BYTEA](esc.encode()) == b64
