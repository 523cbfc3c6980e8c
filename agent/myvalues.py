"""MySQL / MariaDB values to their JSON form (CONTRACT §3), for the types whose binlog bytes do not say
what they are. Pure; the binlog decoder (agent/binlog.py) and the trigger source use the same functions,
so one MariaDB value has one form whatever captured it (docs/values.md has the whole table).

MariaDB's UUID, INET4 and INET6 (10.7 / 10.10+) reach the binlog as BINARY(16) / BINARY(4) / BINARY(16),
and its JSON as LONGTEXT: the TABLE_MAP's metadata (binlog_row_metadata=FULL) carries no data-type name,
so the source reads the catalog once per table shape (`LOGICAL_TYPES_SQL`, `logical_types_from_rows`) and
hands the decoder a column -> logical type map.
"""

from __future__ import annotations

import struct
import re
from typing import Any, Callable, Iterable

from .rawjson import RawJson, raw_json

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


def logical_types_from_rows(type_rows: Iterable[tuple], check_rows: Iterable[tuple] = ()
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


def load_logical_types(query: Callable[[str], list[tuple]]) -> dict[tuple[str, str], dict[str, str]]:
    """Runs both catalog queries through `query(sql) -> rows` and returns logical_types_from_rows."""
    return logical_types_from_rows(query(LOGICAL_TYPES_SQL), query(JSON_CHECKS_SQL))
