"""From the changelog's JSON to contract values (CONTRACT §3): the helpers every dialect's converters use.

The triggers write row images as JSON text; json.loads would turn a decimal into a float and round it, so
numbers with a fraction stay their exact text (`RawNum`) until the column type says what they are.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from decimal import Decimal
from typing import Any, Callable

from ...binlog import format_timestamp
from .db import text_of

UTC = _dt.timezone.utc


class RawNum(str):
    """A JSON number with a fraction or exponent, kept as its exact text until the column type says
    whether it is an exact numeric (stays text) or a float."""


def loads(text: str | bytes | None) -> Any:
    if text is None:
        return None
    return json.loads(text, parse_float=RawNum)


def unraw(v: Any) -> Any:
    """A JSON value with its RawNums as floats (json / jsonb columns: numbers as JSON has them)."""
    t = type(v)
    if t is RawNum:
        return float(v)
    if t is dict:
        return {k: unraw(x) for k, x in v.items()}
    if t is list:
        return [unraw(x) for x in v]
    return v


def json_text(v: Any) -> Any:
    """A JSON column the trigger wrote as text (MySQL, SQLite): the embedded value; text that is not JSON
    stays text."""
    if type(v) is str:
        try:
            return unraw(loads(v))
        except ValueError:
            return v
    return unraw(v)


_TS_UTC_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:\+00(?::?00)?|Z)$")
_FRACTION_7_RE = re.compile(r"(\.\d{6})\d+")


def cut_fraction(s: str) -> str:
    """Fractions beyond microseconds (SQL Server has 7 digits) cut to 6: more than Python parses."""
    return _FRACTION_7_RE.sub(r"\1", s)


def utc_z(s: str) -> str:
    """An ISO timestamp with an offset -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ'; unparseable (infinity, BC) as is."""
    m = _TS_UTC_RE.match(s)
    if m:                      # already UTC (the usual server setting): no date arithmetic
        return f"{m.group(1)}.{(m.group(2) or '').ljust(6, '0')}Z"
    try:
        dt = _dt.datetime.fromisoformat(cut_fraction(s))
    except ValueError:
        return s
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def float_value(v: Any) -> Any:
    return v if type(v) is str else float(v)         # "NaN" / "Infinity" / "-Infinity" stay strings


def numeric(v: Any) -> Any:
    return str(v)


def array_of(fn: Callable) -> Callable:
    """A converter of one element applied through nested JSON arrays (NULL elements stay None)."""
    def conv(v: Any) -> Any:
        if type(v) is list:
            return [None if x is None else conv(x) for x in v]
        return fn(v)
    return conv


def created_epoch(v: Any) -> float:
    """The changelog's `created` as the driver gives it (number, datetime or text) -> epoch seconds."""
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, _dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    dt = _dt.datetime.fromisoformat(cut_fraction(text_of(v).replace(" ", "T")))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def ts_text(epoch: float) -> str:
    sec = int(epoch // 1)
    us = int(round((epoch - sec) * 1_000_000))
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return format_timestamp(sec, us)
