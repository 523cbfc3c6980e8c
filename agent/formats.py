"""Event envelopes other than CloudEvents, chosen per target with `format`."""

from __future__ import annotations

import threading

from . import debezium

_columns: dict[str, object] = {}            # state_dir -> ColumnTypes, shared by the targets' workers
_lock = threading.Lock()


def render(body: bytes, fmt: str, cfg=None) -> bytes:
    """`cfg` (the agent's Config) says the source kind and where the column types are kept
    (agent/column_types.py): Debezium's value encodings need them. Without it values keep their
    contract forms (the PostgreSQL source shape)."""
    if fmt in ("cloudevents", "cloudevents-binary"):    # binary mode: the target splits the CloudEvent itself
        return body
    if cfg is None:
        return debezium.render(body, "postgres", None)
    return debezium.render(body, cfg.source.database_kind, column_types(cfg))


def column_types(cfg):
    from .column_types import ColumnTypes
    key = str(cfg.agent.state_dir)
    with _lock:
        ct = _columns.get(key)
        if ct is None or ct.cfg.source != cfg.source:
            ct = _columns[key] = ColumnTypes(cfg)
        return ct


def to_debezium(body: bytes, cfg=None) -> bytes:
    return render(body, "debezium", cfg)
