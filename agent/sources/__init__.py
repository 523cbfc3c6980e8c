"""Source kinds. Each module offers a `Source` (streaming role) and a `CaptureAdmin`
(check / setup / teardown), both built from the whole validated Config."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..interfaces import CaptureAdmin, Source

if TYPE_CHECKING:       # only a type here: agent.config imports agent.sources.trigger.dsn
    from ..config import Config

_MODULES = {"postgres": "postgres", "mysql": "mysql", "trigger": "trigger", "debezium": "debezium"}
_CLASSES = {"postgres": ("PostgresSource", "PostgresAdmin"),
            "mysql": ("MysqlSource", "MysqlAdmin"),
            "trigger": ("TriggerSource", "TriggerAdmin"),
            "debezium": ("DebeziumSource", "DebeziumAdmin")}


def _module(kind: str):
    return importlib.import_module(f"{__name__}.{_MODULES[kind]}")


def open_source(cfg: Config) -> Source:
    return getattr(_module(cfg.source.kind), _CLASSES[cfg.source.kind][0])(cfg)


def capture_admin(cfg: Config) -> CaptureAdmin:
    return getattr(_module(cfg.source.kind), _CLASSES[cfg.source.kind][1])(cfg)
