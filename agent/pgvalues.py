"""Pure conversion of PostgreSQL text-format values (as pgoutput sends them) to their JSON form (CONTRACT §3).

One converter per column is chosen once per relation (`converter(type_oid, types)`) and then called for
every value: it takes the value's text bytes and returns the JSON form. The source resolves what a type is
(domain -> base type, enum, array -> element type) from the catalog once and hands it in as `TypeInfo`s;
nothing here does I/O.

The source connection sets TimeZone=UTC, DateStyle=ISO, IntervalStyle=iso_8601, bytea_output=hex and
extra_float_digits=1 (the walsender formats values with its own session settings, and honours these given
as startup options), so the converters mostly reshape, not reinterpret. They still cope with other
settings where that is cheap (a non-UTC offset, 'postgres' interval style, escape-format bytea).

    type                      JSON form
    smallint/integer/bigint   number
    numeric                   string with the exact digits ("12.50", "NaN", "Infinity")
    real/double precision     number; "NaN", "Infinity", "-Infinity" as strings (JSON has no such numbers)
    boolean                   true/false
    text/varchar/char/name    string (char(n) keeps its blank padding, as PostgreSQL stores it)
    date                      "YYYY-MM-DD"; "infinity", "-infinity"; BC / above 9999: ISO 8601 expanded years
    time                      "HH:MM:SS[.ffffff]"
    timetz                    "HH:MM:SS[.ffffff]+HH:MM"
    timestamp                 "YYYY-MM-DDTHH:MM:SS[.ffffff]" (no offset; expanded years, infinities as date)
    timestamptz               "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC; expanded years, infinities as date)
    interval                  ISO 8601 duration as PostgreSQL's iso_8601 style writes it ("P1DT2H3M4.5S")
    bytea                     base64
    json/jsonb                RawJson: embedded as the database wrote it (agent/rawjson.py)
    uuid                      string
    enum                      its label
    domain                    as its base type
    array                     JSON array (nested for several dimensions), NULL elements as null
    anything else             PostgreSQL's text form, as a string
Fractions of a second have 6 digits when there is a fraction at all (the same as the trigger source).
docs/values.md has the whole table with the edge cases. The date/time formatting functions below are public
so that the trigger source produces the same forms from PostgreSQL's ISO text or from parsed parts.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

from .rawjson import RawJson, raw_json  # noqa: F401  (RawJson: the type json values have)

Converter = Callable[[bytes], Any]

# built-in type OIDs (pg_type.h; stable across versions)
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID, XID, CID = 16, 17, 18, 19, 20, 21, 23, 25, 26, 28, 29
JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME = 114, 700, 701, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ, NUMERIC, UUID, JSONB, XID8 = 1114, 1184, 1186, 1266, 1700, 2950, 3802, 5069


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What the catalog (pg_type) says about a type, as far as conversion cares."""

    oid: int
    name: str = ""
    typtype: str = "b"          # b base, c composite, d domain, e enum, m multirange, p pseudo, r range
    category: str = ""          # typcategory; 'A' for arrays
    elem: int = 0               # typelem: the element type of an array
    base: int = 0               # typbasetype: what a domain is over
    delim: str = ","            # typdelim of the element type (',' for all but box)


# ---------------------------------------------------------------- scalar converters (text bytes -> JSON form)

_decode = bytes.decode


def _bool(b: bytes) -> bool:
    return b == b"t"


def _float(b: bytes) -> Any:
    c = b[0]
    if c == 78 or c == 73 or (c == 45 and b[1:2] == b"I"):      # NaN, Infinity, -Infinity
        return b.decode()
    return float(b)


def frac6(s: str) -> str:
    """'HH:MM:SS.5' -> 'HH:MM:SS.500000'; no fraction stays without one."""
    i = s.find(".")
    if i < 0:
        return s
    j = i + 1
    n = len(s)
    while j < n and s[j].isdigit():
        j += 1
    if j - i - 1 == 6:
        return s
    return s[:i + 1] + (s[i + 1:j] + "000000")[:6] + s[j:]


def _time(b: bytes) -> str:
    s = b.decode()
    return s if len(s) == 8 or len(s) == 15 else frac6(s)


# ---------------------------------------------------------------- dates and times beyond RFC 3339
# RFC 3339 has years 0000-9999 only. Beyond that the contract form is ISO 8601's expanded years, in
# astronomical numbering (1 BC is year 0000, 44 BC is -0043): a sign and at least four digits, "+" only above
# 9999 ("+10000-01-01T00:00:00.000000Z", "-0043-03-15"). PostgreSQL's infinities are the strings "infinity"
# and "-infinity". These functions are the one place both PostgreSQL sources (log and trigger) format them.


def iso_year(year: int) -> str:
    """Astronomical year -> ISO 8601 year: '2026', '0000' (1 BC), '-0043' (44 BC), '+10000'."""
    if 0 <= year <= 9999:
        return f"{year:04d}"
    return f"+{year}" if year > 0 else f"-{-year:04d}"


def format_date(year: int, month: int, day: int) -> str:
    """A date from its parts (astronomical year) -> the contract form."""
    return f"{iso_year(year)}-{month:02d}-{day:02d}"


def format_timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int,
                     usec: int | None = None) -> str:
    """timestamp without time zone: 'YYYY-MM-DDTHH:MM:SS', '.ffffff' when there is a fraction (usec not None/0)."""
    s = f"{iso_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return f"{s}.{usec:06d}" if usec else s


def format_timestamptz(year: int, month: int, day: int, hour: int, minute: int, second: int,
                       usec: int = 0, offset_seconds: int = 0) -> str:
    """timestamp with time zone: the instant in UTC, 'YYYY-MM-DDTHH:MM:SS.ffffffZ'. The parts are local
    time at `offset_seconds` east of UTC (0 when they are UTC already)."""
    if offset_seconds:
        days = days_from_civil(year, month, day)
        secs = hour * 3600 + minute * 60 + second - offset_seconds
        d, secs = divmod(secs, 86400)
        year, month, day = civil_from_days(days + d)
        hour, rem = divmod(secs, 3600)
        minute, second = divmod(rem, 60)
    return (f"{iso_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{usec:06d}Z")


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year, any sign)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int) -> tuple[int, int, int]:
    """The inverse of days_from_civil."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


_PG_DATE_RE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)( BC)?$")
_PG_TS_RE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                       r"(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$")


def _pg_year(digits: str, bc: str | None) -> int:
    y = int(digits)
    return 1 - y if bc else y                       # PostgreSQL counts 1 BC, 2 BC, ...; ISO 8601 0, -1, ...


def date_text(s: str) -> str:
    """PostgreSQL's date text (DateStyle ISO) -> the contract form ('2026-11-23', '-0043-03-15',
    '+10000-01-01', 'infinity'). Text in another form is returned unchanged."""
    if len(s) == 10 and s[4] == "-":
        return s
    m = _PG_DATE_RE.match(s)
    if not m:
        return s                                    # infinity, -infinity, or a non-ISO DateStyle
    return format_date(_pg_year(m.group(1), m.group(4)), int(m.group(2)), int(m.group(3)))


def timestamp_text(s: str) -> str:
    """PostgreSQL's timestamp text (DateStyle ISO) -> 'YYYY-MM-DDTHH:MM:SS[.ffffff]' (extended years as
    in date_text); infinities and other forms unchanged."""
    n = len(s)
    if s[10:11] == " " and s[4:5] == "-" and (n == 19 or (20 < n < 27 and s[19] == "." and s[n - 1] != "C")):   # usual
        s = s[:10] + "T" + s[11:]
        return s if n in (19, 26) else frac6(s)
    m = _PG_TS_RE.match(s)
    if not m or m.group(8):
        return s
    y, mo, d, h, mi, sec, frac = m.groups()[:7]
    usec = int(frac.ljust(6, "0")) if frac else None
    return format_timestamp(_pg_year(y, m.group(12)), int(mo), int(d), int(h), int(mi), int(sec), usec)


def timestamptz_text(s: str) -> str:
    """PostgreSQL's timestamptz text (DateStyle ISO, any TimeZone) -> the instant in UTC,
    'YYYY-MM-DDTHH:MM:SS.ffffffZ' (extended years as in date_text); infinities unchanged."""
    n = len(s)
    if s[n - 3:] == "+00" and s[10:11] == " " and s[4:5] == "-":   # TimeZone=UTC, 4-digit year: no regex
        if n == 29:
            return f"{s[:10]}T{s[11:26]}Z"
        if n == 22:
            return f"{s[:10]}T{s[11:19]}.000000Z"
        if 23 < n < 29 and s[19] == ".":
            return f"{s[:10]}T{s[11:n - 3]}{'000000'[:29 - n]}Z"
    m = _PG_TS_RE.match(s)
    if not m or not m.group(8):
        return s                                    # infinity, -infinity, or not PostgreSQL's ISO text
    y, mo, d, h, mi, sec, frac, sign, oh, om, osec, bc = m.groups()
    off = int(oh) * 3600 + int(om or 0) * 60 + int(osec or 0)
    return format_timestamptz(_pg_year(y, bc), int(mo), int(d), int(h), int(mi), int(sec),
                              int(frac.ljust(6, "0")) if frac else 0, -off if sign == "-" else off)


def _date(b: bytes) -> str:
    return date_text(b.decode())


def _timestamp(b: bytes) -> str:
    return timestamp_text(b.decode())


def _timestamptz(b: bytes) -> str:
    return timestamptz_text(b.decode())


_TIMETZ_RE = re.compile(r"^(\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(?::?(\d\d))?(?::?(\d\d))?$")


def _timetz(b: bytes) -> str:
    return timetz_text(b.decode())


def timetz_text(s: str) -> str:
    """timetz text -> 'HH:MM:SS[.ffffff]+HH:MM[:SS]' (its own offset)."""
    m = _TIMETZ_RE.match(s)
    if not m:
        return s
    clock, oh, om, osec = m.groups()
    return f"{frac6(clock)}{oh}:{om or '00'}" + (f":{osec}" if osec else "")


def bytea_to_base64(b: bytes) -> str:
    if b[:2] == b"\\x":
        raw = binascii.a2b_hex(b[2:])
    else:                                           # bytea_output = escape: \\ and \ooo octal escapes
        raw = _unescape_bytea(b)
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _unescape_bytea(b: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 92:
            if b[i + 1:i + 2] == b"\\":
                out.append(92)
                i += 2
            else:
                out.append(int(b[i + 1:i + 4], 8))
                i += 4
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _json(b: bytes) -> Any:
    # embedded as the database wrote it, never through a float (agent/rawjson.py)
    r = raw_json(b)
    return r if r is not None else b.decode("utf-8", "replace")   # not JSON: cannot happen for json/jsonb


_IV_RE = re.compile(r"([+-]?\d+) (year|mon|day)s?|([+-])?(\d+):(\d\d):(\d\d)(?:\.(\d+))?")


def _interval(b: bytes) -> str:
    return interval_text_to_iso(b.decode())


def interval_text_to_iso(s: str) -> str:
    """Interval text as the server wrote it -> the contract's ISO 8601 duration (also used by the trigger
    source, whose row images carry the session's IntervalStyle)."""
    if s[:1] == "P" or s[:2] == "-P":
        return s                                    # IntervalStyle iso_8601: already the contract's form
    return interval_to_iso(s)


def interval_to_iso(s: str) -> str:
    """'postgres' IntervalStyle text ('1 year 2 mons -3 days +04:05:06.5') -> the ISO 8601 duration
    PostgreSQL's iso_8601 style would write ('P1Y2M-3DT4H5M6.5S'). Other styles are returned unchanged."""
    years = mons = days = 0
    hms = None
    matched = 0
    for m in _IV_RE.finditer(s):
        matched += len(m.group(0))
        if m.group(1) is not None:
            n = int(m.group(1))
            if m.group(2) == "year":
                years += n
            elif m.group(2) == "mon":
                mons += n
            else:
                days += n
        else:
            hms = (m.group(3) == "-", int(m.group(4)), int(m.group(5)), int(m.group(6)), m.group(7) or "")
    if not matched or matched + s.count(" ") < len(s):
        return s
    out = "P"
    if years:
        out += f"{years}Y"
    if mons:
        out += f"{mons}M"
    if days:
        out += f"{days}D"
    if hms and any(hms[1:4]) or hms and hms[4].strip("0"):
        neg, h, mi, sec, frac = hms
        sg = "-" if neg else ""
        out += "T"
        if h:
            out += f"{sg}{h}H"
        if mi:
            out += f"{sg}{mi}M"
        frac = frac.rstrip("0")
        if sec or frac:
            out += f"{sg}{sec}" + (f".{frac}" if frac else "") + "S"
    return out if out != "P" else "PT0S"


# ---------------------------------------------------------------- arrays

_ARRAY_TOKEN: dict[str, re.Pattern[bytes]] = {}
_BACKSLASH = re.compile(rb"\\(.)", re.S)


def _array_token(delim: str) -> re.Pattern[bytes]:
    p = _ARRAY_TOKEN.get(delim)
    if p is None:
        d = re.escape(delim.encode())
        p = _ARRAY_TOKEN[delim] = re.compile(
            rb'\{|\}|' + d + rb'|"((?:[^"\\]|\\.)*)"|([^{}"' + d + rb'\s]+)|\s+', re.S)
    return p


def array_converter(elem: Converter, delim: str = ",") -> Converter:
    """PostgreSQL array text ('{1,NULL,3}', '{{"a b","c\\"d"},{x,NULL}}', '[0:1]={1,2}') -> nested lists,
    each element through `elem`; an unquoted NULL is null, a quoted "NULL" the string."""
    token = _array_token(delim)
    d = delim.encode()

    def conv(b: bytes) -> list[Any]:
        pos = 0
        if b[:1] == b"[":                   # explicit bounds when the lower bound is not 1: dropped
            pos = b.index(b"=") + 1
        root: list[Any] | None = None
        stack: list[list[Any]] = []
        for m in token.finditer(b, pos):
            t = m.group(0)
            if t == b"{":
                new: list[Any] = []
                if stack:
                    stack[-1].append(new)
                else:
                    root = new
                stack.append(new)
            elif t == b"}":
                stack.pop()
                if not stack:
                    break
            elif t == d or t[:1].isspace():
                continue
            elif m.group(1) is not None:
                q = m.group(1)
                stack[-1].append(elem(_BACKSLASH.sub(rb"\1", q) if b"\\" in q else q))
            else:
                stack[-1].append(None if t == b"NULL" else elem(t))
        if root is None or stack:
            raise ValueError(f"not a PostgreSQL array: {b[:80]!r}")
        return root

    return conv


# ---------------------------------------------------------------- choosing a converter

SCALARS: dict[int, Converter] = {
    INT2: int, INT4: int, INT8: int, OID: int, XID: int, CID: int, XID8: int,
    NUMERIC: _decode, FLOAT4: _float, FLOAT8: _float, BOOL: _bool,
    TEXT: _decode, VARCHAR: _decode, BPCHAR: _decode, CHAR: _decode, NAME: _decode,
    DATE: _date, TIME: _time, TIMETZ: _timetz, TIMESTAMP: _timestamp, TIMESTAMPTZ: _timestamptz,
    INTERVAL: _interval, BYTEA: bytea_to_base64, JSON: _json, JSONB: _json, UUID: _decode,
}

# built-in array types -> element type, for when no catalog information is at hand
BUILTIN_ARRAYS: dict[int, int] = {
    1000: BOOL, 1001: BYTEA, 1002: CHAR, 1003: NAME, 1005: INT2, 1007: INT4, 1009: TEXT, 1014: BPCHAR,
    1015: VARCHAR, 1016: INT8, 1021: FLOAT4, 1022: FLOAT8, 1028: OID, 1115: TIMESTAMP, 1182: DATE, 1183: TIME,
    1185: TIMESTAMPTZ, 1187: INTERVAL, 1231: NUMERIC, 1270: TIMETZ, 2951: UUID, 199: JSON, 3807: JSONB,
}


def converter(type_oid: int, types: Mapping[int, TypeInfo] | None = None, _depth: int = 0) -> Converter:
    """The converter for a column of type `type_oid`. `types` (from pg_type) resolves domains, enums and
    arrays of any type; without it only built-in types are known and the rest passes through as text."""
    fn = SCALARS.get(type_oid)
    if fn is not None:
        return fn
    if _depth > 10:                         # a domain chain this deep is not real; do not loop
        return _decode
    info = types.get(type_oid) if types else None
    if info is not None:
        if info.typtype == "d" and info.base:
            return converter(info.base, types, _depth + 1)
        if info.category == "A" and info.elem:
            elem_info = types.get(info.elem) if types else None
            delim = elem_info.delim if elem_info is not None else info.delim
            return array_converter(converter(info.elem, types, _depth + 1), delim)
        return _decode                      # enum labels, ranges, composites, extension types: their text
    elem = BUILTIN_ARRAYS.get(type_oid)
    if elem is not None:
        return array_converter(SCALARS[elem])
    return _decode


def converters(type_oids: Iterable[int], types: Mapping[int, TypeInfo] | None = None) -> list[Converter]:
    """One converter per column, computed once per relation."""
    cache: dict[int, Converter] = {}
    out: list[Converter] = []
    for oid in type_oids:
        c = cache.get(oid)
        if c is None:
            c = cache[oid] = converter(oid, types)
        out.append(c)
    return out


# ---------------------------------------------------------------- what pgoutput leaves out (for `check`)

# PostgreSQL 15's pgoutput does not send STORED generated columns (neither in Relation nor in row messages;
# publishing them came with PostgreSQL 18), so events of such tables lack them. `check` names them.
STORED_GENERATED_SQL = (
    "SELECT n.nspname::text, c.relname::text, a.attname::text FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE a.attgenerated = 's' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2, a.attnum")


def stored_generated_columns(rows: Iterable[Sequence[Any]], tables: Iterable[str]) -> dict[str, list[str]]:
    """'schema.table' -> its STORED generated columns, for the captured `tables`, from STORED_GENERATED_SQL rows."""
    wanted = set(tables)
    out: dict[str, list[str]] = {}
    for schema, table, column in rows:
        name = f"{schema}.{table}"
        if name in wanted:
            out.setdefault(name, []).append(column)
    return out


def stored_generated_detail(found: dict[str, list[str]]) -> str:
    """One line for a `check` warning: which tables' events lack which columns."""
    return "pgoutput (PostgreSQL 15) does not send STORED generated columns; events lack " + "; ".join(
        f"{t}: {', '.join(cols)}" for t, cols in sorted(found.items()))
