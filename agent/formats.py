"""Event envelopes other than CloudEvents, chosen per target with `format`."""

from __future__ import annotations

import orjson

_DEBEZIUM_OP = {"insert": "c", "update": "u", "delete": "d", "read": "r"}


def render(body: bytes, fmt: str) -> bytes:
    if fmt in ("cloudevents", "cloudevents-binary"):    # binary mode: the target splits the CloudEvent itself
        return body
    return to_debezium(body)


def to_debezium(body: bytes) -> bytes:
    """Debezium's change-event envelope (value part, without schema), for consumers written for it."""
    ev = orjson.loads(body)
    data = ev["data"]
    _, _, table = ev["source"].rpartition("/")
    schema, _, tbl = table.partition(".")
    ts_ms = _ts_ms(ev["time"])
    return orjson.dumps({
        "before": data["before"], "after": data["after"], "op": _DEBEZIUM_OP[data["op"]], "ts_ms": ts_ms,
        "source": {"connector": "cdc-agent", "name": ev["source"].split("/")[2], "ts_ms": ts_ms,
                   "schema": schema, "table": tbl, "txId": ev.get("txid"), "position": ev["position"],
                   "event_id": ev["id"], "event_type": ev["type"]},
    })


def _ts_ms(rfc3339: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)
