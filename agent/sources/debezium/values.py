"""Debezium's JSON values (converter schemas on, so each field's type is known) -> the contract's JSON values
(CONTRACT §3), in the same forms as the native sources. Pure, I/O-free.

The connector runs with decimal.handling.mode=string, interval.handling.mode=string,
binary.handling.mode=base64, time.precision.mode=adaptive_time_microseconds and
bigint.unsigned.handling.mode=precise (agent/sources/debezium/dsn.py); the field's schema `name` says
which logical type an integer or a string carries:

    io.debezium.time.Date            int32 days since 1970-01-01         -> "YYYY-MM-DD"
    io.debezium.time.MicroTime       int64 microseconds of the day       -> "HH:MM:SS[.ffffff]"
    io.debezium.time.Timestamp       int64 ms since the epoch, no zone   -> "YYYY-MM-DDTHH:MM:SS[.ffffff]"
    io.debezium.time.MicroTimestamp  int64 microseconds, no zone         -> the same
    io.debezium.time.ZonedTimestamp  "2026-11-23T09:15:02.123456Z"       -> the instant in UTC, 6 digits, Z
    io.debezium.time.Interval        "P0Y0M1DT2H3M4.5S"                  -> "P1DT2H3M4.5S" (PostgreSQL's style)
    io.debezium.data.Json            JSON text                           -> embedded JSON (RawJson, verbatim)
    io.debezium.data.Bits            base64 of the bits, little-endian   -> the bits as an integer (MySQL BIT)
    int / float / boolean / string / array                              -> as they are
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ...pgvalues import civil_from_days, format_date, format_timestamp, frac6
from ...rawjson import RawJson

Converter = Callable[[Any], Any]


def _date(days: int) -> str:
    return format_date(*civil_from_days(days))


def _time_us(us: int, always: bool = False) -> str:
    """Microseconds of the day (MySQL TIME: of a signed duration) -> [-]HH:MM:SS[.ffffff]; the fraction when
    there is one, or `always` (a MySQL column with fractional seconds, as the native source writes it)."""
    sign = "-" if us < 0 else ""
    s, f = divmod(abs(us), 1_000_000)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{sign}{h:02d}:{m:02d}:{sec:02d}" + (f".{f:06d}" if f or always else "")


def _timestamp_us(us: int, always: bool = False) -> str:
    sec, f = divmod(us, 1_000_000)
    days, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    out = format_timestamp(*civil_from_days(days), h, m, s, f)
    return out + ".000000" if always and not f else out


def _zoned(text: str) -> str:
    """Debezium writes the UTC instant with as many fraction digits as it has ("...:02.5Z", "...:00Z"); the
    contract form always has six."""
    if text.endswith("Z") and "T" in text:
        body = text[:-1]
        if "." not in body:
            body += ".000000"
        return frac6(body) + "Z"
    return text


_ISO_PART = re.compile(r"(-?\d+(?:\.\d+)?)([YMDHS])")


def interval(text: str) -> str:
    """Debezium's "P<y>Y<m>M<d>DT<h>H<m>M<s>S" (every part written, each with its own sign) -> the ISO 8601
    duration PostgreSQL's iso_8601 style writes (zero parts left out; "PT0S" for zero)."""
    if not text.startswith("P"):
        return text
    date, _, time = text[1:].partition("T")
    out = "P"
    for value, unit in _ISO_PART.findall(date):
        if float(value):
            out += f"{value}{unit}"
    t = ""
    for value, unit in _ISO_PART.findall(time):
        if float(value):
            if "." in value:
                value = value.rstrip("0").rstrip(".")
            t += f"{value}{unit}"
    if t:
        out += "T" + t
    return out if out != "P" else "PT0S"


def _bits(b64: str) -> int:
    import base64
    return int.from_bytes(base64.b64decode(b64), "little")


def _unscaled(b64: str, scale: int) -> Any:
    import base64
    n = int.from_bytes(base64.b64decode(b64), "big", signed=True)
    if not scale:
        return n
    sign, digits = ("-" if n < 0 else ""), str(abs(n)).rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def _json(text: str) -> Any:
    return RawJson(text) if isinstance(text, str) else text


_BY_NAME: dict[str, Converter] = {
    "io.debezium.time.Date": _date,
    "io.debezium.time.MicroTime": _time_us,
    "io.debezium.time.Time": lambda ms: _time_us(ms * 1000),
    "io.debezium.time.NanoTime": lambda ns: _time_us(ns // 1000),
    "io.debezium.time.Timestamp": lambda ms: _timestamp_us(ms * 1000),
    "io.debezium.time.MicroTimestamp": _timestamp_us,
    "io.debezium.time.NanoTimestamp": lambda ns: _timestamp_us(ns // 1000),
    "io.debezium.time.ZonedTimestamp": _zoned,
    "io.debezium.time.Interval": interval,
    "io.debezium.data.Json": _json,
    "io.debezium.data.Bits": _bits,
}


def _same(v: Any) -> Any:
    return v


# MySQL TIME(n) / DATETIME(n), n > 0: the native source always writes six fraction digits. Debezium says n
# with column.propagate.source.type (the connector's properties for mysql, dsn.py).
_FIXED_FRACTION: dict[str, Converter] = {
    "io.debezium.time.MicroTime": lambda us: _time_us(us, True),
    "io.debezium.time.Timestamp": lambda ms: _timestamp_us(ms * 1000, True),
    "io.debezium.time.MicroTimestamp": lambda us: _timestamp_us(us, True),
}


def _fsp(schema: dict[str, Any]) -> int:
    p = schema.get("parameters") or {}
    if p.get("__debezium.source.column.type", "").upper() not in ("TIME", "DATETIME"):
        return 0
    return int(p.get("__debezium.source.column.scale") or p.get("__debezium.source.column.length") or 0)


def converter(schema: dict[str, Any], logical: str | None = None) -> Converter:
    """The converter for one field's (or array item's) schema. Null stays null. `logical`: what the catalog
    says a MariaDB column holds that its type does not (json, uuid, inet4, inet6: agent/myvalues.py)."""
    if logical is not None:
        return _logical(logical)
    name = schema.get("name") or ""
    conv = _FIXED_FRACTION.get(name) if _fsp(schema) else None
    conv = conv or _BY_NAME.get(name)
    if schema.get("type") == "array":
        item = converter(schema.get("items") or {})
        if item is _same:
            return _same
        return lambda v: None if v is None else [None if x is None else item(x) for x in v]
    if schema.get("name") == "org.apache.kafka.connect.data.Decimal":
        # decimal.handling.mode=string makes every decimal a string; what still comes as bytes is MySQL's
        # BIGINT UNSIGNED (bigint.unsigned.handling.mode=precise), an integer as the native source gives it
        scale = int((schema.get("parameters") or {}).get("scale") or 0)
        conv = None if schema.get("type") == "string" else lambda v: _unscaled(v, scale)
    if conv is None:
        return _same
    return lambda v: None if v is None else conv(v)


def _logical(logical: str) -> Converter:
    from ...myvalues import binary_converter, json_text
    if logical == "json":
        return lambda v: None if v is None else json_text(v)
    binary = binary_converter(logical)
    if binary is None:
        return _same

    def conv(v: Any) -> Any:
        import base64
        return None if v is None else binary(base64.b64decode(v))
    return conv


def row_converters(struct_schema: dict[str, Any], logical: dict[str, str] | None = None
                   ) -> list[tuple[str, Converter]]:
    """For the `before`/`after` struct's schema: (column, converter) in the table's column order."""
    logical = logical or {}
    return [(f["field"], converter(f, logical.get(f["field"]))) for f in struct_schema.get("fields") or ()]


def convert_row(row: dict[str, Any] | None, convs: list[tuple[str, Converter]]) -> dict[str, Any] | None:
    if row is None:
        return None
    out: dict[str, Any] = {}
    for name, conv in convs:
        v = row.get(name)
        out[name] = v if conv is _same or v is None else conv(v)
    return out
