"""The compiled core of the PostgreSQL hot path (agent/_fastpg.c), and the choice between it and the pure
Python decoder (agent/pgoutput.py's decode_tuple with agent/pgvalues.py's converters), which stays the
fallback and the reference.

The extension is built by `pip install` when a C compiler and the Python headers are there (an optional
extension: a failed build does not fail the install). Without it, or with CDC_AGENT_PURE=1 in the
environment, the agent decodes in pure Python and says so once in its log.

Each column's kind byte tells the C code which converter the pure path chose for it; a column whose
converter has no C counterpart (arrays, interval, time, timetz, ...) gets KIND_CALL and goes through
that Python converter, and so does any value of a C-handled type that is not in the usual form.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable, Sequence

import orjson

from . import pgvalues, rawjson

log = logging.getLogger(__name__)

PURE_ENV = "CDC_AGENT_PURE"

KIND_CALL = 0
_KINDS: dict[Callable, int] = {
    bytes.decode: 1, int: 2, pgvalues._bool: 3, pgvalues._float: 4, pgvalues._timestamptz: 5,
    pgvalues._date: 6, pgvalues._timestamp: 7, pgvalues.bytea_to_base64: 8, pgvalues._json: 9,
}

_fastpg: types.ModuleType | None
try:
    from . import _fastpg
except ImportError as e:        # not built (no compiler when it was installed)
    _fastpg = None
    _import_error = str(e)
else:
    _import_error = ""

_reported = False


def kinds(converters: Sequence[Callable]) -> bytes:
    """One kind byte per column, from the converters the pure path uses."""
    return bytes(_KINDS.get(c, KIND_CALL) for c in converters)


def compiled() -> bool:
    """Whether the extension is importable (whatever the environment says)."""
    return _fastpg is not None


def tuple_decoder(decode_error: type, unchanged: object, force_pure: bool | None = None):
    """The compiled decode_tuple(buf, pos, converters, kinds), or None for the pure path: when the
    extension is missing or CDC_AGENT_PURE=1 (force_pure overrides the environment). Logs the choice once."""
    global _reported
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    if _fastpg is None or pure:
        if not _reported:
            _reported = True
            if _fastpg is None:
                log.warning("compiled decoder not available (%s): decoding PostgreSQL changes in pure Python, "
                            "which costs more CPU per change", _import_error)
            else:
                log.info("%s is set: decoding PostgreSQL changes in pure Python", PURE_ENV)
        return None
    _fastpg.init(decode_error, unchanged, orjson.loads, rawjson.RawJson)
    return _fastpg.decode_tuple
