"""Stage timestamps for latency work, off unless CDC_AGENT_TIMING names a file (bench/latency.py sets it).

Each capture batch and each delivered batch appends one JSON line with wall-clock stamps of its stages
(capture: first item read, batch closed, mapped, spool committed, delivery woken; delivery: woke, fetched,
written, fsynced, cursor committed), tagged with the last spool seq so the two sides can be joined. Nothing
about the order of commits changes: the stamps are taken around the existing steps. Both processes append
to the same file with O_APPEND, one write per line, so lines do not interleave.
"""

from __future__ import annotations

import json
import os
import threading
import time

PATH = os.environ.get("CDC_AGENT_TIMING") or None
ENABLED = PATH is not None

# CaptureCore keeps time.monotonic(); stamps are wall time so they compare with the source commit times
_MONO_TO_WALL = time.time() - time.monotonic()
_fd: int | None = None
_notes = threading.local()


def wall(mono: float) -> float:
    return mono + _MONO_TO_WALL


def note(key: str) -> None:
    """Stamp a step inside a batch (e.g. the file target between write and fsync); `record` takes the
    stamps noted on this thread since its last call."""
    d = getattr(_notes, "d", None)
    if d is None:
        d = _notes.d = {}
    d[key] = time.time()


def record(kind: str, **fields) -> None:
    global _fd
    d = getattr(_notes, "d", None)
    if d:
        fields.update(d)
        d.clear()
    fields["k"] = kind
    try:
        if _fd is None:
            assert PATH is not None            # callers check ENABLED
            _fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(_fd, json.dumps(fields).encode() + b"\n")
    except OSError:
        pass                                    # a debugging aid: never a reason to fail a batch
