"""Debezium change records (the JSON converter's text; values with their schema) -> capture items. Pure.

Transaction boundaries come from Debezium's transaction metadata (provide.transaction.metadata=true): a
BEGIN record on `<prefix>.transaction` is a Begin, its END a Commit. A record that can end a transaction in
the agent's sense ("closes"): END, a heartbeat outside a transaction, the last record of a snapshot, and a
change that arrived outside any BEGIN (a connector without metadata for it). The caller turns those into a
Commit whose checkpoint is the record's Debezium offsets (engine.py): only there can a restart resume.

Snapshot: Debezium's `r` records are `op = "read"` changes, all of one agent transaction that ends at the
snapshot's last record (source.snapshot = "last"). An interrupted snapshot is redone by Debezium from its
start (the agent's checkpoint did not move); the read events keep their ids (id_key: the snapshot's start
checkpoint, the table and the row's key), so consumers drop the copies.

Position (fixed width, sorts in stream order, the same on every replay; the event id derives from it):
    postgres  "<last commit LSN before the transaction, 16 hex>:<ordinal 8>"   (source.sequence[0]; the
              first transaction after a start without one: its first change's LSN)
    mysql     "<binlog file number 8>:<offset of the change's row event 12>:<row in the event 8>"
    sqlserver "<commit_lsn>:<change_lsn>:<event_serial_no 8>"
    others    "<commit SCN / LSN of the transaction>:<ordinal 8>" (oracle commit_scn zero-padded to 20, db2
              commit_lsn)
    snapshot reads: "<the snapshot's position>:-<row number 10>" ("-" sorts before the digits of the
              changes streamed from that same position on)
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ...changes import Begin, Item, RowChange
from ...myvalues import format_timestamp
from .values import Converter, convert_row, row_converters

log = logging.getLogger(__name__)

OPS = {"c": "insert", "u": "update", "d": "delete", "r": "read"}
# Debezium's stand-in for a value PostgreSQL did not send (unchanged TOAST; unavailable.value.placeholder's
# default), as text, as bytes (base64) and in an array: never let it out as a value (CONTRACT §3)
PLACEHOLDER = "__debezium_unavailable_value"
UNAVAILABLE = (PLACEHOLDER, base64.b64encode(PLACEHOLDER.encode()).decode(), [PLACEHOLDER])


def _fill_unavailable(after: dict[str, Any], before: dict[str, Any] | None, cols: tuple[str, ...]
                      ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """As the native source does: the old image's value where there is one (REPLICA IDENTITY FULL), else the
    column is left out of `after` and named in `unavailable`."""
    missing = []
    for c in cols:
        if before is not None and c in before and before[c] not in UNAVAILABLE:
            after[c] = before[c]
        else:
            del after[c]
            missing.append(c)
    return after, tuple(missing)


@dataclass
class Decoded:
    items: list[Item] = field(default_factory=list)
    closes: bool = False          # append a Commit with this record's offsets after the items
    keepalive: bool = False       # and a Keepalive (a heartbeat: caught up)


class RecordDecoder:
    def __init__(self, connector: str, prefix: str, tables: tuple[str, ...], start_marker: str,
                 logical: dict[tuple[str, str], dict[str, str]] | None = None,
                 partial_old: set[str] | None = None):
        self.connector = connector
        self.prefix = prefix
        self.transaction_topic = f"{prefix}.transaction"
        self.tables = {t.lower(): t for t in tables}
        self.start_marker = start_marker          # the checkpoint capture started from: snapshot read ids
        self.logical = {f"{k[0]}.{k[1]}".lower(): v for k, v in (logical or {}).items()}
        # PostgreSQL tables without REPLICA IDENTITY FULL: the log has no old row (an update) or only its key
        # (a delete); Debezium fills the rest with nulls, which would read as values
        self.partial_old = partial_old or set()
        self.in_txn = False
        self.in_snapshot = False
        self.txid: str | None = None
        self.txn_prefix: str | None = None
        self.ordinal = 0
        self.last_position: str | None = None
        self.last_commit_ts: float | None = None
        self._warned: set[str] = set()
        self._convs: dict[tuple[str, str], tuple[int, list[tuple[str, Converter]]]] = {}

    def decode(self, topic: str, key: str | None, value: str | None) -> Decoded:
        out = Decoded()
        if value is None:
            return out                               # a tombstone (turned off; harmless)
        if topic.startswith("__debezium-heartbeat"):
            if not self.in_txn:
                out.closes = out.keepalive = True
            return out
        doc = json.loads(value)
        payload = doc.get("payload", doc) if "schema" in doc else doc
        if topic == self.transaction_topic:
            return self._transaction(payload)
        if not isinstance(payload, dict) or "op" not in payload:
            return out                               # a schema change or a message we do not capture
        op = OPS.get(payload["op"])
        if op is None:
            if payload["op"] == "m":                  # a WAL message (the heartbeat's, or an application's)
                if not self.in_txn:
                    out.closes = out.keepalive = True
                return out
            if payload["op"] not in self._warned:
                self._warned.add(payload["op"])
                log.warning("Debezium %r records (on %s) are not captured: the agent emits row changes only "
                            "(a truncate is not one)", payload["op"], topic)
            return out
        src = payload.get("source") or {}
        table = self._table(src)
        if table is None:
            return out
        convs = self._converters(table, doc.get("schema"))
        keys = tuple(json.loads(key)) if key else ()
        raw_after = payload.get("after")
        unavailable: tuple[str, ...] = ()
        if raw_after is not None and self.connector == "postgres":
            unavailable = tuple(c for c, v in raw_after.items() if v in UNAVAILABLE)
        before = convert_row(payload.get("before"), convs)
        after = convert_row(raw_after, convs)
        if table in self.partial_old and before is not None:
            before = {k: before.get(k) for k in keys} if op == "delete" else None
        if unavailable and after is not None:
            after, unavailable = _fill_unavailable(after, before, unavailable)
        us = src.get("ts_us") or (src.get("ts_ms") or 0) * 1000
        commit_time = format_timestamp(*divmod(int(us), 1_000_000))
        commit_ts = us / 1e6
        self.last_commit_ts = commit_ts
        if op == "read":
            return self._read(out, table, src, before, after, keys, commit_time, commit_ts, key)
        if self.in_snapshot:                         # streaming began without a "last" marker: close it
            self.in_snapshot = self.in_txn = False
        alone = not self.in_txn
        if alone:
            self.txid = self._txid(src, payload)
            out.items.append(Begin(self.txid, commit_ts))
            self.in_txn = True
            self.txn_prefix, self.ordinal = None, 0
        if self.txn_prefix is None:
            self.txn_prefix = self._prefix(src)
        self.ordinal += 1
        pos = self._position(src)
        self.last_position = pos
        txid = self._txid(src, payload) if self.connector == "postgres" else self.txid
        out.items.append(RowChange(table, op, before, after, pos, commit_time, commit_ts, txid, keys, unavailable))
        if alone:
            self.in_txn = False
            out.closes = True
        return out

    # -- pieces

    def _transaction(self, p: dict[str, Any]) -> Decoded:
        out = Decoded()
        status = p.get("status")
        if status == "BEGIN":
            self.in_snapshot = False
            self.in_txn = True
            self.txid = str(p.get("id"))
            self.txn_prefix, self.ordinal = None, 0
            out.items.append(Begin(self.txid, (p.get("ts_ms") or 0) / 1e3))
        elif status == "END" and self.in_txn:
            self.in_txn = False
            out.closes = True
        return out

    def _read(self, out: Decoded, table: str, src: dict, before, after, keys, commit_time, commit_ts,
              key: str | None) -> Decoded:
        if not self.in_snapshot:
            self.in_snapshot = self.in_txn = True
            self.txid = f"snapshot:{self.start_marker}"
            self.txn_prefix, self.ordinal = self._prefix(src, snapshot=True), 0
            out.items.append(Begin(self.txid, commit_ts))
        self.ordinal += 1
        pos = f"{self.txn_prefix}:-{self.ordinal:010d}"
        self.last_position = pos
        out.items.append(RowChange(table, "read", None, after or before, pos, commit_time, commit_ts, None, keys,
                                   id_key=f"dbz-read:{self.start_marker}:{table}:{key}"))
        if src.get("snapshot") == "last":
            self.in_snapshot = self.in_txn = False
            out.closes = True
        return out

    def _table(self, src: dict) -> str | None:
        schema = src.get("db") if self.connector == "mysql" else src.get("schema")
        name = f"{schema}.{src.get('table')}"
        return self.tables.get(name.lower())

    def _converters(self, table: str, schema: dict | None) -> list[tuple[str, Converter]]:
        """The before/after struct's converters, rebuilt when the table's shape changes (ALTER TABLE)."""
        fields = (schema or {}).get("fields") or ()
        struct = next((f for f in fields if f.get("field") in ("after", "before")), None)
        if struct is None:
            return []
        shape = hash(json.dumps(struct, sort_keys=True))
        cached = self._convs.get((table, struct.get("name") or ""))
        if cached is not None and cached[0] == shape:
            return cached[1]
        convs = row_converters(struct, self.logical.get(table.lower()))
        self._convs[(table, struct.get("name") or "")] = (shape, convs)
        return convs

    def _txid(self, src: dict, payload: dict) -> str | None:
        if self.connector == "postgres" and src.get("txId") is not None:
            return str(src["txId"])
        if self.connector == "mysql" and not payload.get("transaction"):
            return str(src["gtid"]) if src.get("gtid") else None
        txn = payload.get("transaction") or {}
        return str(txn["id"]) if txn.get("id") is not None else self.txid

    def _position(self, src: dict) -> str:
        c = self.connector
        if c == "mysql":
            # the row event's own place and the row in it: unique without transaction metadata, which the
            # MySQL connector gives only with MySQL GTIDs (not on MariaDB)
            return f"{self._prefix(src)}:{int(src.get('row') or 0):08d}"
        if c == "sqlserver":
            return f"{self.txn_prefix}:{src.get('change_lsn') or ''}:{int(src.get('event_serial_no') or 0):08d}"
        return f"{self.txn_prefix}:{self.ordinal:08d}"

    def _prefix(self, src: dict, snapshot: bool = False) -> str:
        c = self.connector
        if c == "postgres":
            seq = json.loads(src.get("sequence") or "[null, null]")
            lsn = seq[0] if seq[0] is not None and not snapshot else (seq[1] or src.get("lsn") or 0)
            return f"{int(lsn):016X}"
        if c == "mysql":
            f = str(src.get("file") or "")
            num = int(f.rsplit(".", 1)[-1]) if f.rsplit(".", 1)[-1].isdigit() else 0
            return f"{num:08d}:{int(src.get('pos') or 0):012d}"
        if c == "oracle":
            return f"{int(src.get('commit_scn') or src.get('scn') or 0):020d}"
        return str(src.get("commit_lsn") or src.get("change_lsn") or "")

