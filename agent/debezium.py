"""`format = "debezium"`: the spooled CloudEvent rendered as Debezium 3.6's change event, as its PostgreSQL
or MySQL connector emits it with the JSON converter (schemas off) and `decimal.handling.mode=string`, so a
consumer written for Debezium reads the agent's events unchanged (docs/debezium.md lists what differs).

Values arrive in their contract forms (CONTRACT §3) and leave in Debezium's per-type encodings (dates as
days since the epoch, timestamps as epoch millis or micros, timestamptz as an ISO string in UTC, intervals
as micros, json as its text...); which applies comes from the column types (agent/column_types.py).
"""

from __future__ import annotations

import base64
import re
import time
from datetime import date, datetime, timedelta, UTC
from typing import Any
from collections.abc import Callable
from urllib.parse import unquote

import orjson

from . import __version__, rawjson
from .rawjson import RawJson

VERSION = f"cdc-agent-{__version__}"        # where Debezium writes its own version ("3.6.3.Final")
CONNECTOR = {"postgres": "postgresql", "mysql": "mysql"}
_OP = {"insert": "c", "update": "u", "delete": "d", "read": "r"}
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
# Debezium's MicroDuration: a month is the average 365.25 / 12 days
_MONTH_US = int(365.25 / 12 * 86400 * 1_000_000)


# ---------------------------------------------------------------- value encodings (contract form -> Debezium)

def _days(v: str) -> Any:
    try:
        return date.fromisoformat(v).toordinal() - _EPOCH_DAY
    except ValueError:
        return v                                # infinity, expanded years: no Debezium form to match


_TIME = re.compile(r"^(-)?(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")


def _time_us(v: str) -> Any:
    m = _TIME.match(v)
    if not m:
        return v
    us = ((int(m[2]) * 60 + int(m[3])) * 60 + int(m[4])) * 1_000_000 + int((m[5] or "").ljust(6, "0"))
    return -us if m[1] else us


def _time_ms(v: str) -> Any:
    us = _time_us(v)
    return us // 1000 if isinstance(us, int) else us


def _ts_us(v: str) -> Any:
    try:
        return (datetime.fromisoformat(v) - _EPOCH) // _US
    except ValueError:
        return v


def _ts_ms(v: str) -> Any:
    us = _ts_us(v)
    return us // 1000 if isinstance(us, int) else us


def _zoned_ts(precision: int) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        # Debezium's ZonedTimestamp: ISO 8601 in UTC with "Z", the fraction as wide as the column's precision
        if not isinstance(v, str):
            return v
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return v
        out = d.strftime("%Y-%m-%dT%H:%M:%S")
        if precision:
            out += f".{d.microsecond:06d}"[:precision + 1]
        return out + "Z"
    return conv


_TIMETZ = re.compile(r"^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?$")


def _zoned_time(v: str) -> Any:
    m = _TIMETZ.match(v)
    if not m:
        return v
    off = (int(m[6]) * 3600 + int(m[7] or 0) * 60 + int(m[8] or 0)) * (1 if m[5] == "+" else -1)
    secs = (int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) - off) % 86400
    out = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    frac = (m[4] or "").rstrip("0")
    return out + (f".{frac}" if frac else "") + "Z"


_DURATION = re.compile(r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
                       r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+)(?:\.(\d+))?S)?)?$")


def _interval_us(v: str) -> Any:
    m = _DURATION.match(v)
    if not m:
        return v
    y, mo, d, h, mi, s = (int(x) if x else 0 for x in m.groups()[:6])
    frac = int((m[7] or "").ljust(6, "0")[:6]) if m[7] else 0
    sec_us = s * 1_000_000 + (-frac if (m[6] or "").startswith("-") else frac)
    return (y * 12 + mo) * _MONTH_US + ((d * 24 + h) * 60 + mi) * 60_000_000 + sec_us


def json_text(v: Any) -> Any:
    """A json value as the text Debezium sends: PostgreSQL's jsonb style (", " and ": " separators)."""
    if v is None:
        return None
    return _json_text(v)


def _json_text(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{orjson.dumps(k).decode()}: {_json_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_json_text(x) for x in v) + "]"
    if type(v) is RawJson:
        return str(v)
    return orjson.dumps(v).decode()


def _bool_int(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v


def _ulong_wrap(v: Any) -> Any:
    # bigint.unsigned.handling.mode=long (Debezium's default) sends a Java long: above 2^63-1 it wraps
    return v - (1 << 64) if isinstance(v, int) and v >= 1 << 63 else v


def _bits(n: int) -> Callable[[Any], Any]:
    size = (n + 7) // 8

    def conv(v: Any) -> Any:
        # Debezium sends BIT(n>1) as bytes, least significant byte first
        return base64.b64encode(v.to_bytes(size, "little")).decode() if isinstance(v, int) else v
    return conv


def _bool(v: Any) -> Any:
    return bool(v) if isinstance(v, int) else v


_SIMPLE: dict[str, Callable[[Any], Any]] = {
    "date": _days, "time_us": _time_us, "time_ms": _time_ms, "ts_us": _ts_us, "ts_ms": _ts_ms,
    "zoned_time": _zoned_time, "interval_us": _interval_us, "json_text": json_text,
    "bool_int": _bool_int, "ulong_wrap": _ulong_wrap, "bool": _bool,
}
_STRING_ONLY = {"date", "time_us", "time_ms", "ts_us", "ts_ms", "zoned_time", "interval_us"}


def encoder(encoding: str) -> Callable[[Any], Any] | None:
    if not encoding:
        return None
    if encoding.startswith("array:"):
        inner = encoder(encoding[6:])
        if inner is None:
            return None

        def arr(v: Any) -> Any:
            return [arr(x) if isinstance(x, list) else (None if x is None else inner(x)) for x in v] \
                if isinstance(v, list) else v
        return arr
    if encoding.startswith("zoned_ts:"):
        return _zoned_ts(int(encoding[9:]))
    if encoding.startswith("bits:"):
        return _bits(int(encoding[5:]))
    conv = _SIMPLE.get(encoding)
    if conv is None:
        return None
    if encoding in _STRING_ONLY:
        def string_only(v: Any, c: Callable[[Any], Any] = conv) -> Any:
            return c(v) if isinstance(v, str) else v
        return string_only
    return conv


# ---------------------------------------------------------------- the envelope

def _row(row: dict[str, Any] | None, encodings: dict[str, str]) -> dict[str, Any] | None:
    if row is None:
        return None
    out = {}
    for col, v in row.items():
        conv = encoder(encodings.get(col, "")) if v is not None else None
        out[col] = conv(v) if conv else v
    return out


def _commit_us(rfc3339: str) -> int:
    return (datetime.fromisoformat(rfc3339.replace("Z", "+00:00")) - datetime(1970, 1, 1, tzinfo=UTC)) // _US


def _micros(base: dict) -> dict:
    us = base["ts_ms"] * 1000 + base.pop("_us")
    return {"ts_us": us, "ts_ns": us * 1000}


def _pg_source(ev: dict, base: dict, schema: str, table: str, server: dict) -> dict:
    us = _micros(base)
    lsn_hex, _, _ordinal = ev["position"].partition(":")
    try:
        lsn: int | None = int(lsn_hex, 16)
    except ValueError:                          # a trigger source's position is no LSN
        lsn = None
    txid = ev.get("txid")
    return {**base, "db": server.get("db"),
            "sequence": orjson.dumps([None, str(lsn)]).decode() if lsn is not None else None,
            **us, "schema": schema, "table": table,
            "txId": int(txid) if txid and txid.isdigit() else None, "lsn": lsn, "xmin": None, "origin": None,
            "origin_lsn": None}


def _mysql_source(ev: dict, base: dict, schema: str, table: str, server: dict, read: bool) -> dict:
    us = _micros(base)
    parts = ev["position"].split(":")[:3]        # a snapshot row's position adds its ordinal in the chunk
    file_no, pos, ordinal = (int(p) for p in parts) if len(parts) == 3 and all(p.isdigit() for p in parts) \
        else (0, 0, 1)
    name = server.get("binlog_basename", "mysql-bin")
    return {**base, "db": schema, "sequence": None, **us, "table": table,
            "server_id": 0 if read else server.get("server_id", 0), "gtid": None,
            "file": f"{name}.{file_no:06d}", "pos": pos, "row": max(ordinal - 1, 0), "thread": None,
            "query": None}


def render(body: bytes, source_kind: str, columns=None, now_us: int | None = None) -> bytes:
    """One spooled CloudEvent -> Debezium's change event (value, schemas off). `columns` is a
    ColumnTypes (or None: values keep their contract forms)."""
    ev = rawjson.loads_exact(body)              # numbers keep their digits (json values)
    data = ev["data"]
    _, _, qualified = ev["source"].rpartition("/")
    qualified = unquote(qualified)              # the source percent-encodes awkward table names
    schema, _, table = qualified.partition(".")
    before, after = data.get("before"), data.get("after")
    encodings: dict[str, str] = {}
    server: dict = {}
    if columns is not None:
        cols = set(before or ()) | set(after or ())
        encodings = columns.table(qualified, cols)
        server = columns.server
    commit_us = _commit_us(ev["time"])
    read = data["op"] == "read"
    base = {"version": VERSION, "connector": CONNECTOR.get(source_kind, source_kind),
            "name": ev["source"].split("/")[2], "ts_ms": commit_us // 1000,
            "snapshot": "true" if read else "false", "_us": commit_us % 1000}
    if source_kind == "mysql":
        src = _mysql_source(ev, base, schema, table, server, read)
    else:
        src = _pg_source(ev, base, schema, table, server)
    now = now_us if now_us is not None else time.time_ns() // 1000
    return orjson.dumps({
        "before": _row(before, encodings), "after": _row(after, encodings), "source": src,
        "transaction": None, "op": _OP[data["op"]], "ts_ms": now // 1000, "ts_us": now, "ts_ns": now * 1000,
    }, default=rawjson.default)
