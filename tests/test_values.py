"""The value model on bytes: json/jsonb embedded as written (agent/rawjson.py) through the event encoder, the
Debezium envelope and dead letters; PostgreSQL's dates and timestamps beyond RFC 3339 (agent/pgvalues.py);
MariaDB's UUID / INET4 / INET6 text and FLOAT's shortest form (agent/myvalues.py). Pure and fast; the
comparison with the databases' own rendering is tests/test_values_differential.py."""

from __future__ import annotations

import ipaddress
import re
import random
import uuid

import orjson
import pytest

from agent import config, formats, myvalues, rawjson
from agent import pgvalues as pv
from agent.changes import RowChange
from agent.mapping import EventMapper, change_from_json, change_to_json
from agent.rawjson import RawJson, is_json, loads_exact, raw_json

EXACT_JSON = [
    '{"pi": 3.14159265358979323846264338327950288}',
    '{"tiny": 1e-400, "huge": 1e400, "big": 123456789012345678901234567890}',
    '{"e": 1e400}',
    '{"a": 1, "a": 2}',                       # PostgreSQL json keeps duplicate keys
    '  [1,   2 ]  ',
    '"\\ud800 lone surrogate escape"',
    '-0',
]


@pytest.mark.parametrize("text", EXACT_JSON)
def test_json_is_embedded_in_the_event_as_written(text):
    cfg = config.parse({"agent": {"name": "a"}, "source": {"kind": "postgres", "dsn": "postgresql://x@h/db",
                                                            "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}]})
    conv = pv.SCALARS[pv.JSONB]
    after = {"id": 1, "doc": conv(text.encode())}
    ch = RowChange("public.t", "insert", None, after, "0000000000000001:000001", "2026-11-23T10:15:02.000000Z",
                   1.0, "7", ("id",))
    events, failures = EventMapper(cfg).map([ch])
    assert not failures
    body = events[0].body
    assert b'"doc":' + text.encode() + b"}" in body                         # byte for byte
    # the Debezium envelope (re-rendered from the event) keeps every value and every number's digits
    dbz = formats.to_debezium(body)
    assert b'"doc":' + rawjson.dumps(loads_exact(text)) + b"}" in dbz
    for number in re.findall(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)):
        assert number.encode() in dbz
    # a dead letter's change maps again to the same event bytes
    again, _ = EventMapper(cfg).map([change_from_json(change_to_json(ch))])
    assert again[0].body == body


def test_json_with_line_breaks_stays_one_line():
    r = raw_json(b'{\n  "a": [1,\r\n 2]\n}')
    assert r == RawJson('{   "a": [1,  2] }') and b"\n" not in orjson.dumps({"x": r}, default=__import__(
        "agent.rawjson", fromlist=["default"]).default)


@pytest.mark.parametrize("text", ["not json", "{", "NaN", "Infinity", "[1,]", "{'a': 1}", '"\x01"', ""])
def test_text_that_is_not_json_is_refused(text):
    assert not is_json(text) and raw_json(text) is None
    assert myvalues.json_text(text) == text                                 # MariaDB: falls back to a string


def test_loads_exact_keeps_floats_floats_and_other_numbers_text():
    d = loads_exact(b'{"f": 0.1, "i": 7, "big": 123456789012345678901234567890, "x": 1e400, '
                    b'"p": 3.14159265358979323846}')
    assert d["f"] == 0.1 and type(d["f"]) is float and d["i"] == 7
    assert d["big"] == RawJson("123456789012345678901234567890") and d["x"] == RawJson("1e400")
    assert d["p"] == RawJson("3.14159265358979323846")


@pytest.mark.parametrize("year, want", [(2026, "2026"), (0, "0000"), (-43, "-0043"), (10000, "+10000"),
                                        (-4713, "-4713"), (294276, "+294276"), (9999, "9999")])
def test_iso_year(year, want):
    assert pv.iso_year(year) == want


@pytest.mark.parametrize("text, want", [
    (b"2026-11-23 10:15:02", "2026-11-23T10:15:02"),
    (b"10000-01-01 00:00:00", "+10000-01-01T00:00:00"),                # was "10000-01-01 00:00:00"
    (b"294276-12-31 23:59:59.999999", "+294276-12-31T23:59:59.999999"),
    (b"0044-03-15 10:00:00 BC", "-0043-03-15T10:00:00"),
    (b"0001-01-01 00:00:00.5 BC", "0000-01-01T00:00:00.500000"),
    (b"4714-11-24 00:00:00 BC", "-4713-11-24T00:00:00"),
    (b"infinity", "infinity"), (b"-infinity", "-infinity"),
])
def test_timestamp_beyond_rfc3339(text, want):
    assert pv.SCALARS[pv.TIMESTAMP](text) == want


@pytest.mark.parametrize("text, want", [
    (b"10000-01-01 00:00:00+00", "+10000-01-01T00:00:00.000000Z"),
    (b"0044-03-15 10:00:00.25+00 BC", "-0043-03-15T10:00:00.250000Z"),
    (b"0001-01-01 00:30:00+05:30", "0000-12-31T19:00:00.000000Z"),      # shifted to UTC across year 0
    (b"9999-12-31 23:00:00-03", "+10000-01-01T02:00:00.000000Z"),
    (b"0001-01-01 00:00:00+00:01:15 BC", "-0001-12-31T23:58:45.000000Z"),
])
def test_timestamptz_beyond_rfc3339(text, want):
    assert pv.SCALARS[pv.TIMESTAMPTZ](text) == want


@pytest.mark.parametrize("text, want", [(b"2026-11-23", "2026-11-23"), (b"0044-03-15 BC", "-0043-03-15"),
                                        (b"0001-12-31 BC", "0000-12-31"), (b"5874897-12-31", "+5874897-12-31"),
                                        (b"infinity", "infinity"), (b"-infinity", "-infinity")])
def test_date_beyond_rfc3339(text, want):
    assert pv.SCALARS[pv.DATE](text) == want


def test_civil_day_arithmetic_matches_python_dates():
    import datetime
    for d in range(-800000, 3000000, 997):
        y, m, dd = pv.civil_from_days(d)
        assert pv.days_from_civil(y, m, dd) == d
        if 1 <= y <= 9999:
            assert datetime.date(y, m, dd) == datetime.date(1970, 1, 1) + datetime.timedelta(days=d)


def test_mariadb_uuid_and_inet_text():
    rng = random.Random(5)
    for _ in range(500):
        raw = rng.randbytes(16)
        assert myvalues.uuid_text(raw) == str(uuid.UUID(bytes=raw))
        assert myvalues.inet4_text(raw[:4]) == str(ipaddress.IPv4Address(raw[:4]))
    cases = {"::": "::", "::1": "::1", "2001:db8::1": "2001:db8::1", "1:0:0:2:0:0:0:3": "1:0:0:2::3",
             "1:0:0:2:0:0:3:4": "1::2:0:0:3:4", "1:2:3:4:5:6:7:0": "1:2:3:4:5:6:7::",
             "1:0:2:3:4:5:6:7": "1::2:3:4:5:6:7", "1:2:3:4:5:6:7:8": "1:2:3:4:5:6:7:8",
             "::ffff:1.2.3.4": "::ffff:1.2.3.4", "::1.2.3.4": "::1.2.3.4",
             "fe80::abcd:0:0:1": "fe80::abcd:0:0:1", "0:0:1::": "0:0:1::"}
    for text, want in cases.items():
        assert myvalues.inet6_text(ipaddress.IPv6Address(text).packed) == want, text
    for _ in range(500):            # random words, many zeros: the compressed form reads back as the address
        words = [rng.choice([0, 0, 0, rng.randrange(65536)]) for _ in range(8)]
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        assert ipaddress.IPv6Address(myvalues.inet6_text(raw)).packed == raw


def test_logical_types_from_catalog_rows():
    got = myvalues.logical_types_from_rows(
        [("db", "t", "u", "uuid"), ("db", "t", "ip", "INET6"), ("db", "t", "x", "int")],
        [("db", "t", "json_valid(`doc`)"), ("db", "u", "json_valid(`a``b`) and json_valid(`c`)")])
    assert got == {("db", "t"): {"u": "uuid", "ip": "inet6", "doc": "json"}, ("db", "u"): {"a`b": "json", "c": "json"}}


def test_dead_letters_show_and_retry_keep_json_as_written(tmp_path, capsys):
    from agent import dlq
    from agent.mapping import MappingFailure
    from agent.spool import Spool
    cfg = config.parse({"agent": {"name": "a", "state_dir": str(tmp_path / "state")},
                        "source": {"kind": "postgres", "dsn": "postgresql://x@h/db", "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]})
    doc = '{"e": 1e400, "pi": 3.14159265358979323846, "a": 1, "a": 2}'
    ch = RowChange("public.t", "insert", None, {"id": 1, "doc": RawJson(doc)}, "0000000000000001:000001",
                   "2026-11-23T10:15:02.000000Z", 1.0, "7", ("id",))
    events, _ = EventMapper(cfg).map([ch])
    spool = Spool(tmp_path / "state")
    try:
        spool.ensure_targets(["f"])
        # a rejected event (a target said no) and an unmapped change (e.g. a missing status mapping)
        spool.append(events, [MappingFailure("row.public.t", ch.position, "no mapping", change_to_json(ch))], None)
        spooled = spool.fetch(0, 10)
        spool.advance("f", spooled[-1].seq, 0, [(spooled[0], "rejected")])
        letters = spool.dead_letters()
        assert len(letters) == 2
        for d in letters:
            dlq._show(cfg, spool, d.dl_id)
            assert "1e400" in capsys.readouterr().out
        assert dlq._retry(cfg, spool, None) == 0
        assert "mapped again into 1 event(s)" in capsys.readouterr().out and spool.dead_letters() == []
        delivered = (tmp_path / "out.jsonl").read_bytes()
        assert delivered.count(b'"doc":' + doc.encode()) == 1              # the rejected event, sent again as is
        # the change mapped again gives the same bytes (so the spool knows it by its identity)
        again = EventMapper(cfg).map([change_from_json(letters[0].change or letters[1].change)])
        assert again[0][0].body == events[0].body
    finally:
        spool.close()
