"""From the changelog's JSON to contract values (CONTRACT §3): the helpers every dialect's converters use.

The triggers write row images as JSON text; json.loads would turn a decimal into a float and round it, so
numbers with a fraction, and integers beyond 64 bits, stay their exact text (`RawNum`) until the column type
says what they are. A value the row image embeds as JSON (PostgreSQL json/jsonb) is also available as its
exact text (`RowImage.spans`), for the RawJson the log source gives. A row image that is not valid JSON as a
whole (an old trigger wrote MariaDB's YEAR 0000 as `0000`) is split into its values one by one, and a value
that does not parse is kept as its text: one value never stops capture.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from collections.abc import Callable

from ...myvalues import format_timestamp
from ...rawjson import raw_json
from .db import text_of

UTC = _dt.UTC


class RawNum(str):
    """A JSON number with a fraction or exponent, kept as its exact text until the column type says
    whether it is an exact numeric (stays text) or a float."""


def _lossless_int(s: str) -> Any:
    # int() refuses more than 4,300 digits, and orjson anything beyond 64 bits: keep those as text
    if len(s) < 19:
        return int(s) if s != "-0" else RawNum(s)       # -0: a float column's negative zero
    if len(s) <= 20:
        n = int(s)
        if -(1 << 63) <= n < (1 << 64):
            return n
    return RawNum(s)


def _keep_constant(name: str) -> Any:
    return RawNum(name)            # NaN / Infinity: not JSON, but a JSON number's place; kept as text


_DECODER = json.JSONDecoder(parse_float=RawNum, parse_int=_lossless_int, parse_constant=_keep_constant)


class RowImage(dict):
    """A parsed row image; `spans` gives each top-level value's exact JSON text (computed when asked)."""

    __slots__ = ("text", "_spans")

    def __init__(self, values: dict, text: str, spans: dict[str, str] | None = None):
        super().__init__(values)
        self.text = text
        self._spans = spans

    @property
    def spans(self) -> dict[str, str]:
        if self._spans is None:
            self._spans = split_object(self.text)
        return self._spans


def loads(text: str | bytes | RowImage | None) -> Any:
    """A changelog row image -> RowImage (numbers lossless, see the module docstring)."""
    if text is None or isinstance(text, RowImage):
        return text                 # None, or a statement row's row image, parsed when it was unpacked
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "replace")
    try:
        v = _DECODER.decode(text)
    except (ValueError, RecursionError):
        spans = split_object(text)
        return RowImage({k: value_of(s) for k, s in spans.items()}, text, spans)
    return RowImage(v, text) if type(v) is dict else v


def value_of(span: str) -> Any:
    """One JSON value's text -> its value as `loads` gives it; text that is not JSON stays that text."""
    try:
        return _DECODER.decode(span)
    except (ValueError, RecursionError):
        return span


_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^"{}\[\],:\s]+|\s+', re.S)


def split_object(text: str) -> dict[str, str]:
    """The top-level members of a JSON object text -> {key: the value's exact text}, without parsing the
    values (iterative: any nesting depth; tolerant of values that are not JSON, such as `0000`)."""
    out: dict[str, str] = {}
    depth = 0
    key: str | None = None
    start = -1
    expect_key = False
    for m in _TOKEN_RE.finditer(text):
        t = m.group(0)
        c = t[0]
        if c.isspace():
            continue
        if depth == 0:
            if c == "{":
                depth, expect_key = 1, True
            continue
        if depth == 1:
            if expect_key:
                if c == '"':
                    key = json.loads(t)
                elif c == ":":
                    expect_key, start = False, -1
                continue
            if c in ",}":
                if key is not None and start >= 0:
                    out[key] = text[start:m.start()].rstrip()
                key, expect_key = None, True
                if c == "}":
                    break
                continue
            if start < 0:
                start = m.start()
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
    return out


def finish(v: Any) -> Any:
    """A value no converter claimed: lossless numbers as JSON numbers (RawJson keeps their digits)."""
    t = type(v)
    if t is RawNum:
        r = raw_json(v)
        return r if r is not None else str(v)
    if t is dict:
        return {k: finish(x) for k, x in v.items()}
    if t is list:
        return [finish(x) for x in v]
    return v


def unraw(v: Any) -> Any:
    """A JSON value with its RawNums as floats where a float holds them exactly, else as RawJson (json
    columns of engines whose trigger embeds the value parsed)."""
    t = type(v)
    if t is RawNum:
        try:
            f = float(v)
        except ValueError:
            return str(v)
        return f if f == f and abs(f) != float("inf") and _same_number(v, f) else finish(v)
    if t is dict or t is RowImage:
        return {k: unraw(x) for k, x in v.items()}
    if t is list:
        return [unraw(x) for x in v]
    return v


def _same_number(text: str, f: float) -> bool:
    try:
        return Decimal(text) == Decimal(f)
    except InvalidOperation:
        return False


def json_text(v: Any) -> Any:
    """A JSON column the trigger wrote as text (MySQL, SQLite): the embedded value exactly as written
    (RawJson); text that is not JSON stays text."""
    if type(v) is str:
        r = raw_json(v)
        return r if r is not None else v
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


# the last second ts_text formatted and its text up to the fraction: one tuple, replaced whole, so a thread
# never sees one second's number with another's text
_ts_second: tuple[int, str] = (-1 << 62, "")


def ts_text(epoch: float) -> str:
    sec = int(epoch // 1)
    us = int(round((epoch - sec) * 1_000_000))
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    # a changelog's rows come in time order, many per second: format each second once
    global _ts_second
    last, text = _ts_second
    if sec != last:
        text = format_timestamp(sec, 0)[:-7]
        _ts_second = (sec, text)
    return f"{text}{us:06d}Z"
