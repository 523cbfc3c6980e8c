"""Values for the `sql` target: an event's contract form (CONTRACT §3) into the Python value the replica's
column takes, chosen by the column's reflected type; and any value read back from either database into one
comparable form, for `reconcile`.

Conversions are picked once per column (`writer_for`), so the hot path is one call per value. A value the
column cannot take in Python already (a non-number for DECIMAL, bad base64) raises ValueError: the sql
target dead-letters that event with the reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any
from collections.abc import Callable

import orjson
from sqlalchemy import types as sqltypes
from sqlalchemy.sql import cast
from sqlalchemy.types import TypeDecorator

from agent import rawjson

Writer = Callable[[Any], Any]

_UTC = dt.UTC


def _identity(v: Any) -> Any:
    return v


def _decimal(v: Any) -> Any:
    if v is None or type(v) is Decimal:
        return v
    if isinstance(v, float):
        return Decimal(repr(v))
    try:
        return Decimal(str(v))
    except InvalidOperation:
        raise ValueError(f"{v!r} is not a number") from None


def _integer(v: Any) -> Any:
    if v is None or type(v) is int:
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v.strip()):
        return int(v)
    if isinstance(v, (Decimal, float)) and v == int(v):
        return int(v)
    raise ValueError(f"{v!r} is not an integer")


def _float(v: Any) -> Any:
    if v is None or type(v) is float:
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{v!r} is not a number") from None


def _boolean(v: Any) -> Any:
    if v is None or type(v) is bool:
        return v
    if isinstance(v, int):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "t", "1", "false", "f", "0"):
        return v.lower() in ("true", "t", "1")
    raise ValueError(f"{v!r} is not a boolean")


def _parse_datetime(v: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(v)       # Python 3.11 reads RFC 3339's "Z"
    except ValueError:
        raise ValueError(f"{v!r} is not an ISO 8601 timestamp") from None


def _datetime_aware(v: Any) -> Any:
    """timestamptz-like columns: keep the instant (a naive value is taken as UTC)."""
    if v is None:
        return v
    d = v if isinstance(v, dt.datetime) else _parse_datetime(str(v))
    return d if d.tzinfo is not None else d.replace(tzinfo=_UTC)


def _datetime_naive(v: Any) -> Any:
    """DATETIME / timestamp without time zone: an instant (RFC 3339 with Z) is stored as its UTC wall time."""
    if v is None:
        return v
    d = v if isinstance(v, dt.datetime) else _parse_datetime(str(v))
    return d.astimezone(_UTC).replace(tzinfo=None) if d.tzinfo is not None else d


def _date(v: Any) -> Any:
    if v is None or type(v) is dt.date:
        return v
    if isinstance(v, dt.datetime):
        return v.date()
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError:
        raise ValueError(f"{v!r} is not a date (YYYY-MM-DD)") from None


def _time(v: Any) -> Any:
    if v is None or isinstance(v, dt.time):
        return v
    try:
        return dt.time.fromisoformat(str(v))
    except ValueError:
        raise ValueError(f"{v!r} is not a time of day this column can hold") from None


def _binary(v: Any) -> Any:
    if v is None or isinstance(v, (bytes, bytearray, memoryview)):
        return v
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"{str(v)[:40]!r} is not base64 (binary values travel as base64)") from None


def _json_text(v: Any) -> Any:
    """json columns get the JSON text (a string in a text column would be a JSON string, not the value)."""
    if v is None:
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode()
    return rawjson.dumps(v).decode()        # RawJson parts (numbers orjson cannot hold) as written


def _text(v: Any) -> Any:
    if v is None or type(v) is str:
        return v
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _pg_text_cast(v: Any) -> Any:
    """Types PostgreSQL parses from text better than Python can (interval from ISO 8601, uuid, inet, enums)."""
    if v is None or type(v) is str:
        return v
    if isinstance(v, dt.timedelta):
        return f"{v.total_seconds()} seconds"
    return str(v)


class CastText(TypeDecorator):
    """A parameter sent as text and cast by the server to the column's own type (PostgreSQL json/jsonb,
    interval, uuid...): `CAST(%(p)s AS JSONB)`."""

    impl = sqltypes.Text
    cache_ok = True

    def __init__(self, target: Any):
        super().__init__()
        self.target = target

    def bind_expression(self, bindvalue):
        return cast(bindvalue, self.target)


def writer_for(coltype: Any, dialect: str) -> tuple[Writer, Any]:
    """(conversion of an event value, the type to bind it with) for a reflected column type."""
    t = coltype
    name = type(t).__name__.upper()
    if dialect == "postgresql":
        if name in ("JSON", "JSONB"):
            return _json_text, CastText(t)
        if name in ("INTERVAL", "UUID", "INET", "CIDR", "MACADDR", "ENUM", "MONEY", "TSVECTOR", "BIT",
                    "HSTORE", "OID", "REGCLASS") or isinstance(t, sqltypes.NullType):
            return _pg_text_cast, CastText(t)
        if isinstance(t, sqltypes.ARRAY):
            return _identity, t
    if isinstance(t, sqltypes.JSON) or name == "JSON":
        return _json_text, sqltypes.Text()
    if isinstance(t, sqltypes.Boolean):
        return _boolean, t
    if isinstance(t, sqltypes.Integer):
        return _integer, t
    if isinstance(t, sqltypes.Float) or name in ("DOUBLE", "REAL", "DOUBLE_PRECISION"):
        return _float, t
    if isinstance(t, sqltypes.Numeric):
        return _decimal, sqltypes.Numeric(asdecimal=True)
    if isinstance(t, sqltypes.DateTime):
        aware = bool(getattr(t, "timezone", False)) and dialect in ("postgresql", "mssql")
        return (_datetime_aware if aware else _datetime_naive), t
    if isinstance(t, sqltypes.Date):
        return _date, t
    if isinstance(t, sqltypes.Time):
        return _time, t
    if isinstance(t, sqltypes._Binary) or name in ("BLOB", "LONGBLOB", "MEDIUMBLOB", "TINYBLOB", "BYTEA"):
        return _binary, sqltypes.LargeBinary()
    if isinstance(t, sqltypes.Interval):
        return _pg_text_cast, t
    if isinstance(t, (sqltypes.String, sqltypes.Enum)) or name in ("UUID",):
        return _text, sqltypes.String()
    return _identity, t


# ---------------------------------------------------------------- comparable form, for reconcile


def comparable(v: Any) -> Any:
    """One form for a value read from either database (or given in contract form), so that the source's
    numeric(12,2) "12.50" and the replica's DECIMAL 12.5, a timestamptz and its UTC DATETIME, jsonb and a
    JSON text compare equal. Used on both sides before hashing."""
    if v is None:
        return None
    t = type(v)
    if t is bool:
        return int(v)
    if t is str:
        return v
    if t is int:
        return v if -(1 << 63) <= v < (1 << 63) else str(v)     # (the chunk hash encodes 64-bit integers)
    if t is Decimal:
        if not v.is_finite():
            return str(v)
        n = v.normalize()
        return comparable(int(n)) if n == n.to_integral_value() else str(n)
    if t is float:
        return comparable(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_UTC).replace(tzinfo=None)
        return v.isoformat(timespec="microseconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return v.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(v, dt.timedelta):
        return f"td{v // dt.timedelta(microseconds=1)}"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "b" + bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (dict, list)):
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
    return str(v)


def comparable_json(v: Any) -> Any:
    """A json column's value: text as read from MySQL/SQLite, parsed as read from PostgreSQL."""
    if isinstance(v, (str, bytes)):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return None if v is None else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


_EPOCH_AWARE = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


def _comparable_int(v: Any) -> Any:
    return v if type(v) is int and -(1 << 63) <= v < (1 << 63) else comparable(v)


def _comparable_str(v: Any) -> Any:
    return v if type(v) is str else comparable(v)


def _comparable_datetime(v: Any) -> Any:
    """Microseconds since the epoch: an aware value by its instant, a naive one read as UTC wall time (how the
    sql target writes an instant into DATETIME)."""
    if type(v) is dt.datetime:
        return (v - (_EPOCH_AWARE if v.tzinfo is not None else _EPOCH_NAIVE)) // _MICROSECOND
    if isinstance(v, str):
        try:
            return _comparable_datetime(dt.datetime.fromisoformat(v))
        except ValueError:
            return v
    return comparable(v)


def comparer_for(coltype: Any) -> Callable[[Any], Any]:
    """The comparable form for values of a column of this (source) type, applied to both sides' values."""
    name = type(coltype).__name__.upper()
    if isinstance(coltype, sqltypes.JSON) or name in ("JSON", "JSONB"):
        return comparable_json
    if isinstance(coltype, sqltypes.Boolean):
        return lambda v: None if v is None else int(bool(v))
    if isinstance(coltype, sqltypes.Integer):
        return _comparable_int
    if isinstance(coltype, sqltypes.DateTime):
        return _comparable_datetime
    if isinstance(coltype, (sqltypes.String, sqltypes.Enum)) and not isinstance(coltype, sqltypes.JSON):
        return _comparable_str
    return comparable
