"""Target adapters, one module per target system. Each exposes a class built from its TargetSettings
that implements `agent.interfaces.Target`."""

from __future__ import annotations

import importlib

from agent.config import TargetSettings
from agent.interfaces import Target

_CLASSES = {"file": ("file", "FileTarget"), "http": ("http", "HttpTarget")}


def build_target(settings: TargetSettings) -> Target:
    module, cls = _CLASSES[settings.kind]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(settings)
