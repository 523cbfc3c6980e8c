"""The compiled core of the MySQL / MariaDB source (agent/_fastmy.c), and the choice between it and the
generated pure-Python rows decoders (agent/binlog_rows.py), which stay the fallback and the reference.

The extension is built by `pip install` when a C compiler and the Python headers are there (an optional
extension: a failed build does not fail the install). Without it, or with CDC_AGENT_PURE=1 in the
environment, the agent decodes row images in pure Python and says so once in its log.

With agent._fastpg built as well, render_rows goes on to the values' JSON text: the source hands each row
on as a RenderedRowChange, and the mapper renders its events in C from that text (render_event) without a
Python object per column; the row's dicts are decoded only if something reads them.

Each present column gets a kind (which C routine decodes it) and that kind's parameter, from the same
binlog type and metadata the pure path looks at; a column type without C code gets KIND_CALL and goes
through its pure Python decoder, and so does any value of a C-handled type that is not in the usual form.
"""

from __future__ import annotations

import functools
import logging
import os
import types
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import myvalues, rawjson
from .binlog_format import CHARSET_CODECS, _BLOBS, codec_for
from .myvalues import (
    T_DATE, T_DATETIME2, T_DOUBLE, T_FLOAT, T_GEOMETRY, T_INT24, T_LONG, T_LONGLONG, T_NEWDATE, T_NEWDECIMAL,
    T_NULL, T_SHORT, T_STRING, T_TIMESTAMP2, T_TINY, T_VARCHAR, T_VAR_STRING,
)

log = logging.getLogger(__name__)

PURE_ENV = "CDC_AGENT_PURE"

KIND_CALL = 0
K_UTF8, K_BASE64, K_JSONTEXT, K_NULLTYPE = 17, 18, 19, 20
_INTS = {T_TINY: 1, T_SHORT: 3, T_INT24: 5, T_LONG: 7, T_LONGLONG: 9}   # +1: unsigned
_SIMPLE = {T_DOUBLE: 11, T_FLOAT: 12, T_DATE: 13, T_NEWDATE: 13}

_fastmy: types.ModuleType | None
try:
    from . import _fastmy
except ImportError as e:        # not built (no compiler when it was installed)
    _fastmy = None
    _import_error = str(e)
else:
    _import_error = ""

_reported = False


class ColumnInfo(Protocol):
    type: int
    meta: Any
    unsigned: bool
    charset: str | None
    json: bool


def compiled() -> bool:
    """Whether the extension is importable (whatever the environment says)."""
    return _fastmy is not None


def enabled(force_pure: bool | None = None) -> bool:
    """Whether rows decoders built now use the extension: it is there and CDC_AGENT_PURE is not set
    (force_pure overrides the environment). Logs the choice once."""
    global _reported
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    if _fastmy is None or pure:
        if not _reported:
            _reported = True
            if _fastmy is None:
                log.warning("compiled binlog decoder not available (%s): decoding MySQL / MariaDB row images "
                            "in pure Python, which costs more CPU per row", _import_error)
            else:
                log.info("%s is set: decoding MySQL / MariaDB row images in pure Python", PURE_ENV)
        return False
    return True


def column_kind(c: ColumnInfo) -> tuple[int, int]:
    """(kind, parameter) for one column: the C routine that decodes it the way binlog_rows._column_decoder
    does, or KIND_CALL."""
    t, m = c.type, c.meta
    if t in _INTS:
        return _INTS[t] + (1 if c.unsigned else 0), 0
    if t in _SIMPLE:
        return _SIMPLE[t], 0
    if t == T_NEWDECIMAL:
        precision, scale = m
        return (14, precision << 8 | scale) if 0 <= scale <= precision <= 81 and precision else (KIND_CALL, 0)
    if t == T_TIMESTAMP2:
        return 15, m
    if t == T_DATETIME2:
        return 16, m
    if t == T_NULL:
        return K_NULLTYPE, 0
    if t == T_GEOMETRY:
        return K_BASE64, m
    if t in (T_VARCHAR, T_VAR_STRING, T_STRING) or t in _BLOBS:
        lenbytes = m if t in _BLOBS else (1 if m < 256 else 2)
        codec = CHARSET_CODECS.get(c.charset or "utf8mb4", "utf-8") if c.charset != "binary" else None
        if c.charset is None and t in _BLOBS and not c.json:
            codec = None
        if c.json and codec is not None:
            jcodec, jerrors = codec_for(c.charset)
            return (K_JSONTEXT, lenbytes) if (jcodec or "utf-8", jerrors) == ("utf-8", "replace") else (KIND_CALL, 0)
        if codec is None:
            return (KIND_CALL, 0) if t == T_STRING else (K_BASE64, lenbytes)   # BINARY(n) pads: Python
        return (K_UTF8, lenbytes) if codec == "utf-8" else (KIND_CALL, 0)
    return KIND_CALL, 0


def render_enabled(force_pure: bool | None = None) -> bool:
    """Whether the source hands rows on as their values' JSON text (render_rows, agent/fastmy_render.c), for
    the mapper to render events from in C: both extensions are built (render_event is agent._fastpg's)
    and neither path is switched off."""
    from . import fastpath
    return enabled(force_pure) and hasattr(_fastmy, "rendered_changes") and fastpath.compiled()


def checksum_checker(force_pure: bool | None = None) -> Callable[[bytes], bool]:
    """checksum_ok(event): whether a binlog event's last four bytes are the CRC-32 of the rest. The
    extension's CRC (agent/fastmy_crc.c: PCLMULQDQ folding, ~4x zlib's here) where rows decode in C, else
    zlib's, the reference (tests/test_fastmy_crc.py holds them to the same answers)."""
    if enabled(force_pure) and _fastmy is not None and hasattr(_fastmy, "checksum_ok"):
        return _fastmy.checksum_ok
    return _checksum_ok_pure


def _checksum_ok_pure(ev: bytes) -> bool:
    end = len(ev) - 4
    return end >= 0 and zlib.crc32(memoryview(ev)[:end]) == int.from_bytes(ev[end:], "little")


def image_plan(columns: Sequence[ColumnInfo], names: Sequence[str], fns: Sequence[Callable]) -> object:
    """The C plan for one row image of these present columns; fns: each column's pure decoder
    fn(buf, pos) -> (value, pos)."""
    assert _fastmy is not None
    kinds = [column_kind(c) for c in columns]
    return _fastmy.plan(tuple(names), bytes(k for k, _ in kinds), tuple(a for _, a in kinds), tuple(fns))


def rows_decoder(plan: object, plan2: object | None) -> Callable[[bytes, int, int], tuple[list[Any], int]]:
    """decode(buf, pos, end) -> (rows, position reached), like binlog_rows.compile_rows_decoder's."""
    assert _fastmy is not None
    from .binlog_rows import _f32_cache, _float32_cached
    _fastmy.init(_f32_cache, _float32_cached, myvalues.json_text, rawjson.RawJson)
    return functools.partial(_fastmy.decode_rows, plan, plan2)


def rows_renderer(op: str, plan: object, plan2: object | None) -> Callable[[bytes, int, int], Any]:
    """render(buf, pos, end) -> (rendered rows, row starts, position reached) or None, render_rows'
    (agent/fastmy_render.c) for one table shape and operation."""
    assert _fastmy is not None
    from .binlog_rows import _f32_cache, _float32_cached
    _fastmy.init(_f32_cache, _float32_cached, myvalues.json_text, rawjson.RawJson)
    return functools.partial(_fastmy.render_rows, op, plan, plan2)


# RenderedRowChange's fields in the order agent/fastmy_render.c's rendered_changes sets them
CHANGE_FIELDS = ("table", "op", "position", "commit_time", "commit_ts", "txid", "key_columns", "unavailable", "id_key",
                 "target", "rendered", "layout", "_load", "_message", "_loaded")


def changes_maker() -> Callable[..., tuple[list[Any], int]]:
    """rendered_changes(rendered, table, op, commit_time, commit_ts, txid, keys, layout, load, prefix,
    ordinal) -> (changes, missing): the RenderedRowChanges of one rows event's rendered rows, made in C with
    the fields RenderedRowChange.__init__ would set (None where a row was not rendered); each one's message
    is its row's index, for load(i) -> (before, after)."""
    assert _fastmy is not None
    from .fastrow import RenderedRowChange
    slots = []
    for name in CHANGE_FIELDS:
        slots.append(next(k.__dict__[name] for k in RenderedRowChange.__mro__
                          if type(k.__dict__.get(name)) is types.MemberDescriptorType))
    _fastmy.changes_init(RenderedRowChange, tuple(slots))
    made: Callable[..., tuple[list[Any], int]] = _fastmy.rendered_changes
    return made
