"""Tests read a started source the way the pipeline does: through one CaptureCore per source object."""

from __future__ import annotations

import weakref

from agent.capture import CaptureCore
from agent.changes import SourceBatch

_cores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read(source, max_changes: int, max_wait: float) -> SourceBatch:
    core = _cores.get(source)
    if core is None:
        core = _cores[source] = CaptureCore(source)
    return core.read(max_changes, max_wait)
