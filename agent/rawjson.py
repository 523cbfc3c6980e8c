"""JSON text embedded in events exactly as the database wrote it (CONTRACT §3: json/jsonb "as embedded JSON").

A json/jsonb value is never parsed into Python numbers: a float would lose digits (pi to 17 digits,
`1e-400` -> 0.0, big integers -> floats) and `1e400` cannot be held at all. Sources hand the mapper a
`RawJson` holding the text; the event encoder splices it in verbatim through `orjson.Fragment`
(`orjson.dumps(..., default=default)`).

Line breaks in the text are written as spaces: in valid JSON they can only be insignificant whitespace
(a string cannot hold a raw control character), and an event must stay one line (the file target writes
JSON lines). Nothing else in the text changes: key order, duplicate keys and spacing stay as written.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_Fragment = orjson.Fragment


class RawJson:
    """A JSON value as text. Compares by its text (the mapper compares old and new images)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other: object) -> bool:
        return type(other) is RawJson and other.text == self.text

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"RawJson({self.text!r})"


def default(obj: Any) -> Any:
    """orjson's `default=` hook: RawJson goes out as its text, unchanged."""
    if type(obj) is RawJson:
        return _Fragment(obj.text)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any, option: int | None = None) -> bytes:
    return orjson.dumps(obj, default=default, option=option)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_json(text: str | bytes) -> bool:
    """Whether `text` is one JSON value (RFC 8259). Numbers of any size and precision count."""
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        pass
    # orjson refuses numbers out of double range (1e400) and lone surrogate escapes, both valid JSON text
    try:
        json.loads(text, parse_float=str, parse_int=str, parse_constant=_reject_constant)
        return True
    except (ValueError, RecursionError):
        return False


def raw_json(text: str | bytes) -> RawJson | None:
    """`text` as a RawJson, or None when it is not JSON (the caller then sends it as a string)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not is_json(text):
        return None
    if "\n" in text or "\r" in text:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return RawJson(text)


def _exact_float(s: str) -> Any:
    f = float(s)
    # a float the encoder wrote keeps being a float; anything else keeps its text
    return f if orjson.dumps(f).decode() == s else RawJson(s)


def _exact_int(s: str) -> Any:
    if s == "-0":
        return RawJson(s)
    if len(s) < 19:
        return int(s)
    n = int(s) if len(s) < 4000 else None
    return n if n is not None and -(1 << 63) <= n < (1 << 64) else RawJson(s)     # what orjson can write


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads_exact(raw: bytes | str) -> Any:
    """Parse JSON that an encoder wrote with RawJson values in it (an event body, a stored change) so that
    encoding the result again keeps every value: numbers orjson would not write back identically stay
    their text (RawJson), and so do strings holding a lone surrogate (orjson cannot encode those). Key
    order is kept; spacing and duplicate keys inside json values are not. (Python's parser: orjson's
    cannot hand numbers over as text.)"""
    d = json.loads(raw, parse_float=_exact_float, parse_int=_exact_int, parse_constant=_reject_constant)
    b = raw.encode() if isinstance(raw, str) else raw
    return _keep_surrogates(d) if _SURROGATE_ESCAPE.search(b) else d


def _keep_surrogates(v: Any) -> Any:
    if type(v) is str:
        try:
            v.encode("utf-8")
            return v
        except UnicodeEncodeError:
            return RawJson(json.dumps(v))          # ensure_ascii: the surrogate stays an escape
    if type(v) is dict:
        return {k: _keep_surrogates(x) for k, x in v.items()}   # (a key with one: orjson refuses it)
    if type(v) is list:
        return [_keep_surrogates(x) for x in v]
    return v
