"""The compiled core of the PostgreSQL hot path (agent/_fastpg.c), and the choice between it and the pure
Python decoder (agent/pgoutput.py's decode_tuple with agent/pgvalues.py's converters), which stays the
fallback and the reference.

The extension is built by `pip install` when a C compiler and the Python headers are there (an optional
extension: a failed build does not fail the install). Without it, or with CDC_AGENT_PURE=1 in the
environment, the agent decodes in pure Python and says so once in its log.

Each column's kind byte tells the C code which converter the pure path chose for it; a column whose
converter has no C counterpart (arrays, interval, time, timetz, ...) gets KIND_CALL and goes through
that Python converter, and so does any value of a C-handled type that is not in the usual form.

Past the decoder the compiled core goes on to the event (docs/performance.md): `render_row` turns a row
message into its values' JSON text in one pass (no Python object per column), the source hands that on in a
RenderedRowChange (agent/fastrow.py), and the mapper renders each rule's CloudEvent body and id from it in C
(`render_event`, with a plan per rule and relation from `event_plan`). What the C path cannot reproduce
byte for byte (values maps, unchanged TOAST values, binary values, a float or Python-formatted key in the
subject...) goes through the pure path for that change, which the C code then leaves alone.

The glue between those parts is in C too (agent/fastpg_glue.c, docs/performance.md): the source's read
loop hands runs of row messages to `take_rows`, which makes their RenderedRowChanges, and the mapper hands
runs of RenderedRowChanges to `render_events`, which makes their MappedEvents; both fill the classes'
slots directly (`_glue` hands the slots over once) and stop at whatever needs Python.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import pgvalues, rawjson

log = logging.getLogger(__name__)

PURE_ENV = "CDC_AGENT_PURE"

KIND_CALL = 0
_KINDS: dict[Callable, int] = {
    bytes.decode: 1, int: 2, pgvalues._bool: 3, pgvalues._float: 4, pgvalues._timestamptz: 5,
    pgvalues._date: 6, pgvalues._timestamp: 7, pgvalues.bytea_to_base64: 8, pgvalues._json: 9,
}

_API = ("decode_tuple", "init", "render_row", "render_event", "render_dicts", "blake2b16", "take_rows", "render_events",
        "init_glue", "libpq_resolve", "libpq_facts", "run_end")

_fastpg: types.ModuleType | None
try:
    from . import _fastpg
except ImportError as e:        # not built (no compiler when it was installed)
    _fastpg = None
    _import_error = str(e)
else:
    _missing = [name for name in _API if not hasattr(_fastpg, name)]
    if _missing:                # a build from older sources (not rebuilt after an update): do not use it
        _where = getattr(_fastpg, "__file__", "agent._fastpg")
        _import_error = f"{_where} is an older build without {', '.join(_missing)}; rebuild it with pip install -e ."
        _fastpg = None
    else:
        _import_error = ""

_reported = False
_glued: bool | None = None      # init_glue: not tried yet / failed / done
_libpq: tuple[str | None, str] | None = None     # libpq_resolve's answer: (path, "") or (None, why not)


def kinds(converters: Sequence[Callable]) -> bytes:
    """One kind byte per column, from the converters the pure path uses."""
    return bytes(_KINDS.get(c, KIND_CALL) for c in converters)


def compiled() -> bool:
    """Whether the extension is importable (whatever the environment says)."""
    return _fastpg is not None


def _report(pure: bool, what: str) -> None:
    """The pure path's one log line per process (whichever part of the agent meets it first)."""
    global _reported
    if _reported:
        return
    _reported = True
    if _fastpg is None:
        log.warning("compiled decoder not available (%s): %s in pure Python, which costs more CPU per change",
                    _import_error, what)
    else:
        log.info("%s is set: %s in pure Python", PURE_ENV, what)


def tuple_decoder(decode_error: type, unchanged: object, force_pure: bool | None = None):
    """The compiled decode_tuple(buf, pos, converters, kinds), or None for the pure path: when the
    extension is missing or CDC_AGENT_PURE=1 (force_pure overrides the environment). Logs the choice once."""
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    if _fastpg is None or pure:
        _report(pure, "decoding PostgreSQL changes")
        return None
    _fastpg.init(decode_error, unchanged, orjson.loads, rawjson.RawJson, orjson.dumps)
    return _fastpg.decode_tuple


def row_renderer(force_pure: bool | None = None) -> Callable[[bytes, int, tuple, bytes], bytes | None] | None:
    """The compiled render_row(buf, pos, converters, kinds), or None on the pure path. Call after
    tuple_decoder (which initialises the extension)."""
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    return None if _fastpg is None or pure else _fastpg.render_row


def dict_renderer(force_pure: bool | None = None) -> Callable[..., bytes | None] | None:
    """The compiled render_dicts(op, before, after, names) for RowChanges of other sources (their values
    already in JSON form), or None on the pure path (extension missing, CDC_AGENT_PURE=1)."""
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    if _fastpg is None or pure:
        _report(pure, "mapping changes")
        return None
    _fastpg.init(None, None, orjson.loads, rawjson.RawJson, orjson.dumps)    # (what render_dicts writes with)
    return _fastpg.render_dicts


def _u16s(idx: Sequence[int]) -> bytes:
    return b"".join(i.to_bytes(2, "big") for i in idx)


NOT_A_COLUMN = 0xFFFF


def event_plan(agent: str, event_type: str, source: str, names: Sequence[str], key_columns: Sequence[str],
               key_index: Sequence[int], fields: Sequence[tuple[str, str]] | None,
               changed: frozenset[str] | None) -> tuple | None:
    """What render_event needs of one rule on one relation (agent/fastpg_event.c lists the parts), or None
    when the rule is one the C path does not render: no key, a key column the table lacks (the pure path
    dead-letters those), a key column or field output named twice."""
    col = {n: i for i, n in enumerate(names)}
    if not key_columns or any(c not in col for c in key_columns) or len(set(key_columns)) != len(key_columns):
        return None
    if fields is not None and len({out for out, _ in fields}) != len(fields):
        return None
    if len(names) >= NOT_A_COLUMN:
        return None
    dumps = orjson.dumps
    mid = b'","source":' + dumps(source) + b',"type":' + dumps(event_type) + b',"subject":'
    return (agent.encode() + b"\0", b"\0" + event_type.encode(), mid,
            _u16s([col[c] for c in key_columns]), tuple(dumps(c) for c in key_columns),
            tuple(dumps(n) for n in names),
            None if fields is None else _u16s([col.get(c, NOT_A_COLUMN) for _, c in fields]),
            None if fields is None else tuple(dumps(out) for out, _ in fields),
            None if changed is None else bytes(1 if n in changed else 0 for n in names),
            _u16s(key_index),
            None if fields is None else dumps([out for out, _ in fields]))


def _not_built(rendered: bytes, plan: tuple, position: str, time: str, txid: str | None) -> bool:
    return False        # (never called: without the extension no row is rendered)


# render_event(rendered, plan, position, time, txid) -> (id, subject, body) of one rule's event of a row
# render_row made; None: the rule's `changed` skips it; False: this change needs the pure path
render_event: Callable[[bytes, tuple, str, str, str | None], tuple[str, str, bytes] | bool | None] = \
    _fastpg.render_event if _fastpg is not None else _not_built


# the slots take_rows fills in a RenderedRowChange and render_events in a MappedEvent (agent/fastpg_glue.c)
_CHANGE_SLOTS = ("table", "op", "position", "commit_time", "commit_ts", "txid", "key_columns", "unavailable", "id_key",
                 "target", "rendered", "layout", "_load", "_message", "_loaded", "_at")
_EVENT_SLOTS = ("id", "type", "subject", "position", "commit_ts", "body", "outbox_row", "only_target")

# BodyStore(): where render_events puts a map call's bodies (agent/fastpg_store.c); None on the pure path
body_store: Callable[[], Any] | None = None
if _fastpg is not None and os.environ.get(PURE_ENV, "") in ("", "0"):
    body_store = getattr(_fastpg, "BodyStore", None)


# RowArena(): where take_rows keeps its changes' rendered rows and frames (agent/fastpg_rows.c), or None
row_arena: Callable[[], Any] | None = None
if _fastpg is not None and os.environ.get(PURE_ENV, "") in ("", "0"):
    row_arena = getattr(_fastpg, "RowArena", None)


def _slot(cls: type, name: str) -> object:
    """The slot `name` of the class: its member descriptor, past a property that shadows it (as
    RenderedRowChange.rendered does; init_glue checks it is a plain slot), else what `cls.name` finds."""
    found = [k.__dict__[name] for k in cls.__mro__ if name in k.__dict__]
    if not found:
        raise AttributeError(f"{cls.__name__} has no {name}")
    return next((d for d in found if type(d) is types.MemberDescriptorType), found[0])


def _glue() -> bool:
    """Hands the classes to the C glue once; False (and a log line) if they are not what it can fill in."""
    global _glued
    if _glued is None:
        from .fastrow import RenderedRowChange      # (here: both import this module)
        from .mapping import MappedEvent, StoredEvent
        try:
            assert _fastpg is not None
            _fastpg.init_glue(RenderedRowChange, tuple(_slot(RenderedRowChange, n) for n in _CHANGE_SLOTS),
                              MappedEvent, tuple(_slot(MappedEvent, n) for n in _EVENT_SLOTS),
                              StoredEvent, (_slot(StoredEvent, "_at"),))
            _glued = True
        except (TypeError, AttributeError) as e:
            log.warning("the compiled core's glue is not used (%s): row changes take the per-change path", e)
            _glued = False
    return _glued


def row_taker(force_pure: bool | None = None) -> Callable[..., tuple[int, int, bytes | None]] | None:
    """The compiled take_rows (the PostgreSQL read loop for runs of row messages, agent/fastpg_glue.c), or
    None on the pure path. Call after tuple_decoder (which initialises the extension)."""
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    return None if _fastpg is None or pure or not _glue() else _fastpg.take_rows


def events_renderer() -> Callable[[list, int, tuple, list, Any], int] | None:
    """The compiled render_events (the mapper's loop over a run of RenderedRowChanges), or None without the
    extension. Like render_event it is used whenever a change was rendered (only the compiled core makes
    RenderedRowChanges)."""
    return None if _fastpg is None or not _glue() else _fastpg.render_events


def libpq_found() -> tuple[str | None, str]:
    """(path, "") of the one libpq loaded in this process, or (None, why not), resolved once per process (an
    ODBC driver that brings its own libpq next to psycopg's makes two: then psycopg's get_copy_data is kept)."""
    global _libpq
    if _fastpg is None:
        return None, "the extension is not built"
    if _libpq is None:
        found = _fastpg.libpq_resolve()
        _libpq = found if found is not None else ("(resolved before)", "")
        if _libpq[0] is None:
            log.info("row messages are read through psycopg's get_copy_data: %s", _libpq[1])
    return _libpq


def direct_copy(pgconn) -> bool:
    """Whether take_rows may read this psycopg connection's messages with libpq's PQgetCopyData itself,
    given `pgconn.pgconn_ptr` (agent/fastpg_libpq.c): the one libpq loaded in the process, found at run time,
    must agree with psycopg on this connection (library version, backend pid, socket, server version).
    False keeps psycopg's get_copy_data, which take_rows calls otherwise (the same frames either way)."""
    global _libpq
    if _fastpg is None or os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False
    path = libpq_found()[0]
    if path is None:
        return False
    ptr = getattr(pgconn, "pgconn_ptr", None)
    if not ptr:
        return False
    from psycopg import pq
    try:
        want = (pq.version(), pgconn.backend_pid, pgconn.socket, pgconn.server_version)
        facts = _fastpg.libpq_facts(ptr)
    except Exception as e:      # (psycopg's closed-connection error, or an older psycopg without one of them)
        log.info("row messages are read through psycopg's get_copy_data: %s", e)
        return False
    if facts != want:
        log.warning("the libpq found at run time (%s) does not agree with psycopg's on the replication connection "
                    "(%s, psycopg says %s): row messages are read through psycopg's get_copy_data", path,
                    facts, want)
        _libpq = (None, "it did not agree with psycopg")
        return False
    return True


def _run_end_pure(items: list, start: int, stop: int, cls: type) -> int:
    """run_end's reference: the index of the first of items[start:stop] whose type is not cls or a subclass."""
    stop = min(stop, len(items))
    for k in range(max(start, 0), stop):
        if not issubclass(type(items[k]), cls):
            return k
    return max(stop, 0)


def run_ender(force_pure: bool | None = None) -> Callable[[list, int, int, type], int]:
    """run_end(items, start, stop, cls) for CaptureCore.read's runs of changes: compiled, or its pure twin."""
    pure = force_pure if force_pure is not None else os.environ.get(PURE_ENV, "") not in ("", "0")
    return _run_end_pure if _fastpg is None or pure else _fastpg.run_end
