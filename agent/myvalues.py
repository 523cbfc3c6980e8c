"""MySQL / MariaDB values to their JSON form (CONTRACT §3): the value model of the binlog decoder
(agent/binlog.py, which inlines the common types in its generated row decoders and calls these for the
rest), for the trigger source to share, so one value has one form whatever captured it (docs/values.md has
the whole table). Pure: bytes in, JSON-ready values out.

MariaDB's UUID, INET4 and INET6 (10.7 / 10.10+) reach the binlog as BINARY(16) / BINARY(4) / BINARY(16),
and its JSON as LONGTEXT: the TABLE_MAP's metadata (binlog_row_metadata=FULL) carries no data-type name,
so the source reads the catalog once per table shape (`LOGICAL_TYPES_SQL`, `logical_types_from_rows`) and
hands the decoder a column -> logical type map.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import re
import struct
from typing import Any
from collections.abc import Callable, Iterable

from .rawjson import RawJson, raw_json

# a column value decoder: (bytes, offset) -> (value, new offset)
ColumnDecoder = Callable[[bytes, int], tuple[Any, int]]

# ------------------------------------------------------------------ column types

T_DECIMAL = 0
T_TINY = 1
T_SHORT = 2
T_LONG = 3
T_FLOAT = 4
T_DOUBLE = 5
T_NULL = 6
T_TIMESTAMP = 7
T_LONGLONG = 8
T_INT24 = 9
T_DATE = 10
T_TIME = 11
T_DATETIME = 12
T_YEAR = 13
T_NEWDATE = 14
T_VARCHAR = 15
T_BIT = 16
T_TIMESTAMP2 = 17
T_DATETIME2 = 18
T_TIME2 = 19
T_JSON = 245
T_NEWDECIMAL = 246
T_ENUM = 247
T_SET = 248
T_TINY_BLOB = 249
T_MEDIUM_BLOB = 250
T_LONG_BLOB = 251
T_BLOB = 252
T_VAR_STRING = 253
T_STRING = 254
T_GEOMETRY = 255

TYPE_NAMES = {
    T_DECIMAL: "decimal(old)", T_TINY: "tinyint", T_SHORT: "smallint", T_LONG: "int", T_FLOAT: "float",
    T_DOUBLE: "double", T_NULL: "null", T_TIMESTAMP: "timestamp(old)", T_LONGLONG: "bigint",
    T_INT24: "mediumint", T_DATE: "date", T_TIME: "time(old)", T_DATETIME: "datetime(old)",
    T_YEAR: "year", T_NEWDATE: "date", T_VARCHAR: "varchar", T_BIT: "bit", T_TIMESTAMP2: "timestamp",
    T_DATETIME2: "datetime", T_TIME2: "time", T_JSON: "json", T_NEWDECIMAL: "decimal", T_ENUM: "enum",
    T_SET: "set", T_TINY_BLOB: "blob", T_MEDIUM_BLOB: "blob", T_LONG_BLOB: "blob", T_BLOB: "blob",
    T_VAR_STRING: "varchar", T_STRING: "char", T_GEOMETRY: "geometry",
}


# ------------------------------------------------------------------ value decoders (the non-inlined ones)
# The rows decoder (agent/binlog.py) inlines the common types; these take (bytes, offset) and return
# (value, new offset), or convert one value's bytes.


def _b64(x: bytes) -> str:
    return binascii.b2a_base64(x, newline=False).decode("ascii")


_FRAC_BYTES = (0, 1, 1, 2, 2, 3, 3)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_day_cache: dict[int, str] = {}


def _day(days: int) -> str:
    s = _day_cache.get(days)
    if s is None:
        if len(_day_cache) > 20000:
            _day_cache.clear()
        s = _day_cache[days] = _dt.date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
    return s


def format_timestamp(sec: int, usec: int = 0) -> str:
    """Epoch seconds (UTC) -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (the CONTRACT's timestamp-with-time-zone form)."""
    days, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{_day(days)}T{h:02d}:{m:02d}:{s:02d}.{usec:06d}Z"


# ------------------------------------------------------------------ value decoders (the non-inlined ones)
# Each takes (bytes, offset) and returns (value, new offset).


def _decimal_layout(precision: int, scale: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """DECIMAL's binary layout: the integer and fraction pieces as (bytes, digits), most significant first
    (full groups of 9 digits take 4 bytes, a partial group fewer), and the total size in bytes."""
    dig2bytes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    int_pieces = ([(dig2bytes[intg0x], intg0x)] if intg0x else []) + [(4, 9)] * intg0
    frac_pieces = [(4, 9)] * frac0 + ([(dig2bytes[frac0x], frac0x)] if frac0x else [])
    return int_pieces, frac_pieces, sum(n for n, _ in int_pieces) + sum(n for n, _ in frac_pieces)


def _decimal_decoder(precision: int, scale: int) -> tuple[Callable[[bytes, int], tuple[str, int]], int]:
    """DECIMAL(precision, scale) in MySQL's binary format: groups of 9 digits in 4 bytes, big-endian,
    sign bit flipped, every byte inverted for negative numbers. Returns the exact digits as a string."""
    int_pieces, frac_pieces, size = _decimal_layout(precision, scale)
    bits = size * 8
    sign_bit = 1 << (bits - 1)
    all_ones = (1 << bits) - 1
    # shifts from the right end
    layout_int, layout_frac = [], []
    shift = bits
    for n, d in int_pieces:
        shift -= n * 8
        layout_int.append((shift, (1 << n * 8) - 1, d))
    for n, d in frac_pieces:
        shift -= n * 8
        layout_frac.append((shift, (1 << n * 8) - 1, d))
    frac_fmt = [f"0{d}d" for _, _, d in layout_frac]

    def dec(b: bytes, p: int) -> tuple[str, int]:
        x = int.from_bytes(b[p:p + size], "big")
        neg = not x & sign_bit
        x ^= sign_bit
        if neg:
            x ^= all_ones
        ip = 0
        for sh, mask, d in layout_int:
            ip = ip * 10 ** d + (x >> sh & mask)
        if layout_frac:
            fs = "".join(format(x >> sh & mask, f) for (sh, mask, _), f in zip(layout_frac, frac_fmt))
            s = f"{ip}.{fs}"
            if neg and (ip or fs.strip("0")):
                s = "-" + s
        else:
            s = f"-{ip}" if neg and ip else str(ip)
        return s, p + size

    return dec, size


def decode_decimal(raw: bytes, precision: int, scale: int) -> str:
    return _decimal_decoder(precision, scale)[0](raw, 0)[0]




def _datetime_str(ymdhms: int, usec: int, fsp: int) -> str:
    ymd = ymdhms >> 17
    ym = ymd >> 5
    hms = ymdhms & 0x1FFFF
    s = (f"{ym // 13:04d}-{ym % 13:02d}-{ymd & 31:02d}T"
         f"{hms >> 12:02d}:{hms >> 6 & 63:02d}:{hms & 63:02d}")
    return f"{s}.{usec:06d}" if fsp else s


def _time_str(packed: int, fsp: int) -> str:
    """MySQL's packed time (int part << 24 | microseconds, negative for negative times) -> [-]HH:MM:SS[.ffffff]."""
    sign = ""
    if packed < 0:
        sign, packed = "-", -packed
    hms, usec = packed >> 24, packed & 0xFFFFFF
    s = f"{sign}{hms >> 12 & 0x3FF:02d}:{hms >> 6 & 63:02d}:{hms & 63:02d}"
    return f"{s}.{usec:06d}" if fsp else s


def _time2(fsp: int) -> Callable[[bytes, int], tuple[str, int]]:
    def dec(b: bytes, p: int) -> tuple[str, int]:
        if fsp >= 5:
            packed = int.from_bytes(b[p:p + 6], "big") - 0x800000000000
            return _time_str(packed, fsp), p + 6
        intpart = (b[p] << 16 | b[p + 1] << 8 | b[p + 2]) - 0x800000
        p += 3
        frac = 0
        # negative times store the fraction in reverse order (unsigned), for binary sort order
        if fsp >= 3:
            frac = b[p] << 8 | b[p + 1]
            p += 2
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x10000
            frac *= 100
        elif fsp >= 1:
            frac = b[p]
            p += 1
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100
            frac *= 10000
        return _time_str((intpart << 24) + frac, fsp), p
    return dec


def _date(b: bytes, p: int) -> tuple[str, int]:
    x = b[p] | b[p + 1] << 8 | b[p + 2] << 16
    return f"{x >> 9:04d}-{x >> 5 & 15:02d}-{x & 31:02d}", p + 3


def _year(b: bytes, p: int) -> tuple[int, int]:
    y = b[p]
    return (1900 + y if y else 0), p + 1


def _old_datetime(b: bytes, p: int) -> tuple[str, int]:
    v = int.from_bytes(b[p:p + 8], "little")          # YYYYMMDDhhmmss as a decimal number
    d, t = divmod(v, 1000000)
    return (f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}T"
            f"{t // 10000:02d}:{t // 100 % 100:02d}:{t % 100:02d}"), p + 8


def _old_timestamp(b: bytes, p: int) -> tuple[str, int]:
    sec = int.from_bytes(b[p:p + 4], "little")
    return ("0000-00-00T00:00:00.000000Z" if sec == 0 else format_timestamp(sec)), p + 4


def _old_time(b: bytes, p: int) -> tuple[str, int]:
    v = int.from_bytes(b[p:p + 3], "little", signed=True)   # [-]HHMMSS as a decimal number
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 10000:02d}:{v // 100 % 100:02d}:{v % 100:02d}", p + 3


def _bit(nbytes: int) -> Callable[[bytes, int], tuple[int, int]]:
    def dec(b: bytes, p: int) -> tuple[int, int]:
        return int.from_bytes(b[p:p + nbytes], "big"), p + nbytes
    return dec


def _enum(values: list[str], nbytes: int) -> Callable[[bytes, int], tuple[str, int]]:
    vals = [""] + list(values)                        # index 0: the empty "error" value

    def dec(b: bytes, p: int) -> tuple[str, int]:
        i = b[p] if nbytes == 1 else b[p] | b[p + 1] << 8
        return (vals[i] if i < len(vals) else str(i)), p + nbytes
    return dec


def _set(values: list[str], nbytes: int) -> Callable[[bytes, int], tuple[str, int]]:
    members = list(values)

    def dec(b: bytes, p: int) -> tuple[str, int]:
        mask = int.from_bytes(b[p:p + nbytes], "little")
        return ",".join(m for i, m in enumerate(members) if mask >> i & 1), p + nbytes
    return dec


def _lenprefixed(lenbytes: int, conv: Callable[[bytes], Any]) -> ColumnDecoder:
    def dec(b: bytes, p: int) -> tuple[Any, int]:
        n = int.from_bytes(b[p:p + lenbytes], "little")
        p += lenbytes
        return conv(b[p:p + n]), p + n
    return dec


def _fixed_binary(field_len: int) -> Callable[[bytes], str]:
    """BINARY(n): the binlog drops trailing zero bytes; the column holds them (SELECT shows them)."""
    def conv(raw: bytes) -> str:
        if len(raw) < field_len:
            raw = raw + b"\x00" * (field_len - len(raw))
        return _b64(raw)
    return conv


def _padded(field_len: int, conv: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def pad(raw: bytes) -> Any:
        if len(raw) < field_len:
            raw = raw + b"\x00" * (field_len - len(raw))
        return conv(raw)
    return pad


# ------------------------------------------------------------------ MySQL binary JSON

_JSONB_SMALL_OBJ, _JSONB_LARGE_OBJ, _JSONB_SMALL_ARR, _JSONB_LARGE_ARR = 0, 1, 2, 3
_JSONB_LITERAL, _JSONB_INT16, _JSONB_UINT16, _JSONB_INT32, _JSONB_UINT32 = 4, 5, 6, 7, 8
_JSONB_INT64, _JSONB_UINT64, _JSONB_DOUBLE, _JSONB_STRING, _JSONB_OPAQUE = 9, 10, 11, 12, 15


def decode_json_binary(b: bytes) -> Any:
    """MySQL 5.7+/8 binary JSON (the JSON column's storage format) -> Python value."""
    if not b:
        return None
    return _jsonb_value(b[0], b, 1)


def _jsonb_varlen(b: bytes, p: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[p]
        p += 1
        n |= (c & 0x7F) << shift
        if not c & 0x80:
            return n, p
        shift += 7


def _jsonb_value(t: int, b: bytes, p: int) -> Any:
    """The value of type t whose data starts at b[p]."""
    if t in (_JSONB_SMALL_OBJ, _JSONB_LARGE_OBJ, _JSONB_SMALL_ARR, _JSONB_LARGE_ARR):
        return _jsonb_container(t, b, p)
    if t == _JSONB_LITERAL:
        return {0: None, 1: True, 2: False}[b[p]]
    if t == _JSONB_INT16:
        return int.from_bytes(b[p:p + 2], "little", signed=True)
    if t == _JSONB_UINT16:
        return int.from_bytes(b[p:p + 2], "little")
    if t == _JSONB_INT32:
        return int.from_bytes(b[p:p + 4], "little", signed=True)
    if t == _JSONB_UINT32:
        return int.from_bytes(b[p:p + 4], "little")
    if t == _JSONB_INT64:
        return int.from_bytes(b[p:p + 8], "little", signed=True)
    if t == _JSONB_UINT64:
        return int.from_bytes(b[p:p + 8], "little")
    if t == _JSONB_DOUBLE:
        return struct.unpack_from("<d", b, p)[0]
    if t == _JSONB_STRING:
        n, p = _jsonb_varlen(b, p)
        return b[p:p + n].decode("utf-8", "replace")
    if t == _JSONB_OPAQUE:
        ftype = b[p]
        n, p = _jsonb_varlen(b, p + 1)
        return _jsonb_opaque(ftype, b[p:p + n])
    raise ValueError(f"unknown binary JSON value type {t}")   # the parser reports it as a BinlogError


def _jsonb_container(t: int, b: bytes, start: int) -> Any:
    large = t in (_JSONB_LARGE_OBJ, _JSONB_LARGE_ARR)
    w = 4 if large else 2
    count = int.from_bytes(b[start:start + w], "little")
    p = start + 2 * w                                  # skip count and byte size
    is_obj = t in (_JSONB_SMALL_OBJ, _JSONB_LARGE_OBJ)
    keys = []
    if is_obj:
        for _ in range(count):
            ko = int.from_bytes(b[p:p + w], "little")
            kl = b[p + w] | b[p + w + 1] << 8
            keys.append(b[start + ko:start + ko + kl].decode("utf-8", "replace"))
            p += w + 2
    values = []
    for _ in range(count):
        vt = b[p]
        if vt in (_JSONB_LITERAL, _JSONB_INT16, _JSONB_UINT16) or (large and vt in (_JSONB_INT32, _JSONB_UINT32)):
            values.append(_jsonb_value(vt, b, p + 1))   # inlined in the value entry
        else:
            off = int.from_bytes(b[p + 1:p + 1 + w], "little")
            values.append(_jsonb_value(vt, b, start + off))
        p += 1 + w
    return dict(zip(keys, values)) if is_obj else values


def _jsonb_opaque(ftype: int, data: bytes) -> Any:
    if ftype == T_NEWDECIMAL and len(data) >= 2:
        # a JSON number with the decimal's exact digits, never through a float
        return RawJson(decode_decimal(data[2:], data[0], data[1]))
    if ftype in (T_DATE, T_DATETIME, T_TIMESTAMP, T_DATETIME2, T_TIMESTAMP2) and len(data) >= 8:
        packed = int.from_bytes(data[:8], "little", signed=True)
        s = _datetime_str(packed >> 24, packed & 0xFFFFFF, 6)
        if ftype == T_DATE:
            return s[:10]
        return s if packed & 0xFFFFFF else s[:19]
    if ftype in (T_TIME, T_TIME2) and len(data) >= 8:
        packed = int.from_bytes(data[:8], "little", signed=True)
        s = _time_str(packed, 6)
        return s if packed & 0xFFFFFF else s[:-7]
    return _b64(data)


# logical types the binlog cannot tell (values of the hint map)
JSON = "json"
UUID = "uuid"
INET4 = "inet4"
INET6 = "inet6"
LOGICAL_TYPES = frozenset({JSON, UUID, INET4, INET6})


def uuid_text(raw: bytes) -> str:
    """16 bytes -> 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx' (MariaDB's UUID text; the binlog carries the value
    in text order)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def inet4_text(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def inet6_text(raw: bytes) -> str:
    """16 bytes -> IPv6 text as MariaDB's INET6 prints it: lowercase hex words without leading zeros, the
    longest run of zero words (the first of equal runs; a single zero word too) as '::', and IPv4-compatible
    (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) addresses with a dotted quad."""
    words = struct.unpack(">8H", raw)
    best_pos, best_len = -1, 0
    i = 0
    while i < 8:
        if words[i] == 0:
            j = i
            while j < 8 and words[j] == 0:
                j += 1
            if j - i > best_len:
                best_pos, best_len = i, j - i
            i = j
        else:
            i += 1
    if best_pos == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
        return ("::" if best_len == 6 else "::ffff:") + inet4_text(raw[12:])
    if best_len == 0:
        return ":".join(f"{w:x}" for w in words)
    head = ":".join(f"{w:x}" for w in words[:best_pos])
    tail = ":".join(f"{w:x}" for w in words[best_pos + best_len:])
    return f"{head}::{tail}"


_F32_MIN_NORMAL = 1.1754943508222875e-38
_pack_f32 = struct.Struct("<f").pack


def float32_shortest(v: float) -> float:
    """A FLOAT column's value (read as a double) -> the double whose shortest repr is the shortest decimal
    that reads back as the same 32-bit float: 0.1 and not 0.10000000149011612, 1e-45 and not 1.4013e-45.
    (MariaDB's SELECT prints 6 significant digits, which does not always read back: 16777217 is stored
    as 16777216, which SELECT shows as 16777200; the event keeps 16777216.)"""
    if v != v or v in (float("inf"), float("-inf")) or v == 0:
        return v
    want = _pack_f32(v)
    # for normal floats no decimal shorter than the 6-digit rounding reads back the same (6 digits are
    # coarser than a float32's spacing); subnormals have fewer significant bits, so start lower
    first = 6 if abs(v) >= _F32_MIN_NORMAL else 1
    for digits in range(first, 10):
        r = float(f"{v:.{digits}g}")
        if _pack_f32(r) == want:
            return r
    return v


def json_text(text: str) -> RawJson | str:
    """MariaDB JSON (LONGTEXT checked by JSON_VALID) -> RawJson, embedded as written. A text that is not
    JSON (the CHECK was added later, or dropped) goes out as a string, never as broken event bytes."""
    r = raw_json(text)
    return r if r is not None else text


def binary_converter(logical: str | None) -> Callable[[bytes], Any] | None:
    """The converter of a BINARY column's (zero-padded) bytes for a logical type, or None."""
    return {UUID: uuid_text, INET4: inet4_text, INET6: inet6_text}.get(logical or "")


# ---------------------------------------------------------------- the catalog side (the source runs the SQL)

LOGICAL_TYPES_SQL = (
    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
    "WHERE DATA_TYPE IN ('uuid', 'inet4', 'inet6')")
JSON_CHECKS_SQL = (
    "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CHECK_CLAUSE LIKE '%json_valid(%'")


def logical_types_from_rows(type_rows: Iterable[tuple[Any, ...]], check_rows: Iterable[tuple[Any, ...]] = ()
                            ) -> dict[tuple[str, str], dict[str, str]]:
    """(schema, table) -> {column: logical type}, from the rows of LOGICAL_TYPES_SQL (schema, table, column,
    data type) and of JSON_CHECKS_SQL (schema, table, check clause)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for schema, table, column, data_type in type_rows:
        dt = str(data_type).lower()
        if dt in LOGICAL_TYPES:
            out.setdefault((schema, table), {})[column] = dt
    for schema, table, clause in check_rows:
        for col in re.findall(r"json_valid\(`((?:[^`]|``)+)`\)", clause):
            out.setdefault((schema, table), {})[col.replace("``", "`")] = JSON
    return out


def load_logical_types(query: Callable[[str], list[tuple[Any, ...]]]) -> dict[tuple[str, str], dict[str, str]]:
    """Runs both catalog queries through `query(sql) -> rows` and returns logical_types_from_rows."""
    return logical_types_from_rows(query(LOGICAL_TYPES_SQL), query(JSON_CHECKS_SQL))


# ---------------------------------------------------------------- the same values read by SELECT (snapshots)
# A snapshot (agent/sources/mysql/snapshot.py) reads rows with an ordinary SELECT over the text protocol
# (agent/sources/mysqlwire.py: every value as the server's text bytes, utf8mb4, session time_zone '+00:00').
# `select_column` gives each column's SELECT expression and the converter of its bytes to the form the binlog
# decoder gives the same value, and `text_rows` applies them: a row read equals the row streamed.

INT_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"})
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point",
                          "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                          "geometrycollection"})
TextConverter = Callable[[bytes], Any]


def _utf8(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _ascii(b: bytes) -> str:
    return b.decode("ascii", "replace")


def _fraction(fsp: int, suffix: str = "") -> TextConverter:
    """b'YYYY-MM-DD HH:MM:SS[.fff]' -> 'YYYY-MM-DDTHH:MM:SS[.ffffff]' + suffix: 6 digits when fsp > 0, and
    always for TIMESTAMP (suffix 'Z')."""
    def conv(b: bytes) -> str:
        s = b.decode("ascii", "replace").replace(" ", "T", 1)
        if fsp and fsp < 6:
            head, _, frac = s.partition(".")
            s = f"{head}.{frac.ljust(6, '0')}"
        elif not fsp and suffix:
            s += ".000000"
        return s + suffix
    return conv


def _time_text(fsp: int) -> TextConverter:
    if not fsp or fsp == 6:
        return _ascii
    def conv(b: bytes) -> str:
        head, _, frac = b.decode("ascii", "replace").partition(".")
        return f"{head}.{frac.ljust(6, '0')}"
    return conv


def _float_text(b: bytes) -> float:
    return float32_shortest(float(b))


def _bit_value(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _json_value(b: bytes) -> RawJson | str:
    return json_text(b.decode("utf-8", "replace"))


def _mysql_json(b: bytes) -> Any:
    """MySQL's JSON type as SELECT prints it. (A DECIMAL inside the document is indistinguishable from a
    double in the text: it arrives as a float, where the binlog keeps its digits.)"""
    import json
    return json.loads(b)


def select_column(expr: str, data_type: str, fsp: int | None, logical: str | None) -> tuple[str, TextConverter]:
    """(SELECT expression, converter of its non-NULL text bytes) for a column whose quoted name is `expr`, with
    information_schema.COLUMNS' DATA_TYPE and DATETIME_PRECISION, and the catalog's logical type
    (LOGICAL_TYPES: MariaDB's JSON, UUID, INET4, INET6)."""
    dt = data_type.lower()
    fsp = fsp or 0
    if logical == JSON:
        return expr, _json_value
    if logical in (UUID, INET4, INET6) or dt in LOGICAL_TYPES - {JSON}:
        return expr, _ascii
    if dt in INT_TYPES:
        return expr, int
    if dt == "float":
        # SELECT prints 6 significant digits, which do not always read back: the double is exact
        return f"CAST({expr} AS DOUBLE)", _float_text
    if dt in ("double", "real", "double precision"):
        return expr, float
    if dt == "bit":
        return expr, _bit_value
    if dt in ("decimal", "date"):
        return expr, _ascii
    if dt == "datetime":
        return expr, _fraction(fsp)
    if dt == "timestamp":
        return expr, _fraction(fsp, "Z")
    if dt == "time":
        return expr, _time_text(fsp)
    if dt == "json":
        return expr, _mysql_json
    if dt in BINARY_TYPES:
        return expr, _b64
    return expr, _utf8            # char, varchar, the texts, enum, set: the server sends utf8mb4


def text_values(pkt: bytes) -> list[bytes | None]:
    """One text-protocol row: its length-encoded values (0xFB: NULL)."""
    out: list[bytes | None] = []
    p, end = 0, len(pkt)
    while p < end:
        n = pkt[p]
        if n < 251:
            p += 1
        elif n == 251:
            out.append(None)
            p += 1
            continue
        elif n == 252:
            n = pkt[p + 1] | pkt[p + 2] << 8
            p += 3
        elif n == 253:
            n = pkt[p + 1] | pkt[p + 2] << 8 | pkt[p + 3] << 16
            p += 4
        else:
            n = int.from_bytes(pkt[p + 1:p + 9], "little")
            p += 9
        out.append(pkt[p:p + n])
        p += n
    return out


def text_rows(packets: list[bytes], plan: list[tuple[str, TextConverter]]) -> list[dict[str, Any]]:
    """Rows of the text protocol -> {column: value}, with the converters of `select_column` (in order; the
    packets may carry more values after them: they are left out)."""
    rows = []
    for pkt in packets:
        row: dict[str, Any] = {}
        p = 0
        for name, conv in plan:
            n = pkt[p]
            if n < 251:
                p += 1
            elif n == 251:
                row[name] = None
                p += 1
                continue
            elif n == 252:
                n = pkt[p + 1] | pkt[p + 2] << 8
                p += 3
            elif n == 253:
                n = pkt[p + 1] | pkt[p + 2] << 8 | pkt[p + 3] << 16
                p += 4
            else:
                n = int.from_bytes(pkt[p + 1:p + 9], "little")
                p += 9
            row[name] = conv(pkt[p:p + n])
            p += n
        rows.append(row)
    return rows
