"""Statement-form changelog rows (PostgreSQL version 004): one changelog row holds up to `CHUNK_ROWS` rows
changed by one statement, as JSON arrays of row images (`before`: the OLD TABLE's rows, `after`: the NEW
TABLE's). Here they become one (before, after) pair per changed row. Pure: texts in, row images out.

Pairing an UPDATE's old and new rows: PostgreSQL fills the two transition tables one updated row at a time,
so the k-th old row is the k-th new row's previous version; but it does not document that order. So rows are
paired by primary key: the old row and the new row with the same key are one update. That is exact for
every row whose key did not change. Rows whose key changed are left over on both sides; they are paired in
the order the transition tables give (with one leftover on each side, the only pairing there is). For a
multi-row UPDATE that renumbers keys (`SET id = id + 1`) the result is key-centric: each key's before and
after are that key's row before and after the statement (a consumer keyed by the primary key ends with the
same rows as the table). A table without a primary key is paired in order.
"""

from __future__ import annotations

import json
from typing import Any

from .values import _DECODER, RowImage, loads

CHUNK_ROWS = 1000           # rows per changelog row, as the trigger function groups them (bounds one json value)

_WS = " \t\n\r"


def split_array(text: str | None) -> list[Any]:
    """A JSON array of row images -> its elements as `loads` gives them (RowImage with its exact text)."""
    if text is None:
        return []
    n = len(text)
    i = 0
    while i < n and text[i] in _WS:
        i += 1
    if i >= n or text[i] != "[":
        v = loads(text)                 # not an array: one row image (should not happen; never lose it)
        return [] if v is None else [v]
    i += 1
    out: list[Any] = []
    try:
        while True:
            while i < n and text[i] in _WS:
                i += 1
            if i < n and text[i] == "]":
                return out
            v, end = _DECODER.raw_decode(text, i)
            out.append(RowImage(v, text[i:end]) if type(v) is dict else v)
            i = end
            while i < n and text[i] in _WS:
                i += 1
            if i < n and text[i] == ",":
                i += 1
            elif i < n and text[i] == "]":
                return out
            else:
                raise ValueError("no , or ] after an element")
    except (ValueError, RecursionError):
        return [loads(s) for s in _element_spans(text)]


def _element_spans(text: str) -> list[str]:
    """The top-level elements of an array text, split at the commas outside strings and brackets (for a
    text that does not parse as a whole: each element is then parsed, or kept, on its own)."""
    out: list[str] = []
    depth = 0
    start = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "[{":
            depth += 1
            if depth == 1:
                start = i + 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                out.append(text[start:i])
                break
        elif c == "," and depth == 1:
            out.append(text[start:i])
            start = i + 1
        i += 1
    return [s.strip() for s in out if s.strip()]


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def key_of(img: Any, key: tuple[str, ...]) -> tuple:
    if not isinstance(img, dict):
        return (_hashable(img),)
    return tuple(_hashable(img.get(c)) for c in key)


def pair_update(olds: list[Any], news: list[Any], key: tuple[str, ...]) -> list[tuple[int | None, int | None]]:
    """Index pairs (old, new) of one UPDATE chunk, by primary key (module docstring), in the old rows' order.
    A side without a counterpart (the transition tables differ in length: never seen) comes as (i, None) or
    (None, j): the caller sends it as a delete or an insert, so nothing is lost."""
    if len(olds) == 1 and len(news) == 1:
        return [(0, 0)]         # one row on each side (a one-row UPDATE, the common statement): the only pairing
    if not key:
        return _in_order(range(len(olds)), range(len(news)))
    if len(olds) == len(news) and all(key_of(o, key) == key_of(n, key) for o, n in zip(olds, news)):
        return [(i, i) for i in range(len(olds))]          # no key changed: by key is by position
    by_key: dict[tuple, int] = {}
    for j, n in enumerate(news):
        by_key.setdefault(key_of(n, key), j)
    used: set[int] = set()
    pairs: list[tuple[int | None, int | None]] = []
    left: list[int] = []                 # positions in `pairs` of old rows without a new row of their key
    for i, o in enumerate(olds):
        same = by_key.get(key_of(o, key))
        if same is not None and same not in used:
            used.add(same)
            pairs.append((i, same))
        else:
            left.append(len(pairs))
            pairs.append((i, None))
    rest = [j for j in range(len(news)) if j not in used]
    for p, j in zip(left, rest):
        pairs[p] = (pairs[p][0], j)
    pairs.extend((None, j) for j in rest[len(left):])
    return pairs


def _in_order(olds: range, news: range) -> list[tuple[int | None, int | None]]:
    m = min(len(olds), len(news))
    pairs: list[tuple[int | None, int | None]] = [(i, i) for i in range(m)]
    pairs.extend((i, None) for i in olds[m:])
    pairs.extend((None, j) for j in news[m:])
    return pairs


Change = tuple[str, Any, Any, "tuple[str | None, str | None] | None"]


def _texts(items: list[Any], i: int | None) -> str | None:
    if i is None or i >= len(items):
        return None
    v = items[i]
    return v.text if isinstance(v, RowImage) else (None if v is None else json.dumps(v))


def unpack(op: str, before: str | None, after: str | None, before_texts: str | None, after_texts: str | None,
           key: tuple[str, ...]) -> list[Change]:
    """One statement row -> (op, before image, after image, (before text forms, after text forms)) per
    changed row, in a fixed order (the same on every read: positions follow it)."""
    op = op.strip()
    olds, news = split_array(before), split_array(after)
    bts, ats = split_array(before_texts), split_array(after_texts)
    has_texts = bool(bts or ats)
    out: list[Change] = []
    if op == "U":
        pairs = pair_update(olds, news, key)
    elif op == "D":
        pairs = [(i, None) for i in range(len(olds))]
    else:
        pairs = [(None, j) for j in range(len(news))]
    for i, j in pairs:
        o = None if i is None else olds[i]
        n = None if j is None else news[j]
        kind = op if op != "U" or (i is not None and j is not None) else ("D" if j is None else "I")
        t = (_texts(bts, i), _texts(ats, j)) if has_texts else None
        out.append((kind, o, n, t))
    return out
