"""Incremental snapshots (DBLog / Debezium watermark method), once for every source kind.

A snapshot request (the initial snapshot, or `cdc-agent snapshot`) lives in the spool's meta table as
'snapshot:<id>' = JSON. The capture loop runs it one chunk at a time:

  1. write a LOW watermark through the log (`SnapshotReader.watermark`, committed on its own);
  2. read the next chunk: `WHERE (pk) > (last key) ORDER BY pk LIMIT snapshot_chunk_rows`, one short
     statement on a normal connection (no lock beyond it, no long transaction);
  3. write a HIGH watermark.

The log is streamed as usual. Between LOW and HIGH every change to a key of the chunk removes that key from
the chunk (the log event is as new or newer than the row read). At HIGH the rows left become `op = "read"`
RowChanges at that point of the stream. So a read event never comes after an event of a later change to
its row, and applying each subject's events in order rebuilds the table.

Positions and ids: a read row's position is the HIGH watermark's position + ':' + its 8-digit ordinal in
the chunk (sorts right after the watermark, before the next change). Its event id comes from
(request id, table, row key) (`RowChange.id_key`), so the same row read again by the same request (a chunk
read again after a crash) gets the same id.

Resuming: the request's progress (table, last key of the last chunk emitted, rows done) is stored in the
same spool transaction as the first checkpoint that covers the chunk's rows; after a SIGKILL the request
goes on at the next chunk. Watermarks of a window that died with the process are seen again in the replayed
stream and ignored (each window's name carries a random nonce).

A source whose log order is not commit order everywhere (trigger capture: changelog ids, PostgreSQL's
snapshot windows) sets `read_after_low` on its reader: step 2 then waits until the stream has passed LOW,
so that every change committed after the read comes after LOW in the stream (agent/sources/trigger/snapshot.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .changes import RowChange, Watermark

log = logging.getLogger(__name__)

META_PREFIX = "snapshot:"
CANCEL_PREFIX = "snapshot_cancel:"
WATERMARK_PREFIX = "cdc-agent-watermark"
RESCAN_SECONDS = 1.0          # how often the capture loop looks for new requests in the spool
# tests widen the window between the chunk read and the HIGH watermark, so that writers hit it for sure
WINDOW_PAUSE_SECONDS = float(os.environ.get("CDC_AGENT_SNAPSHOT_WINDOW_PAUSE", "0") or 0)


class SnapshotError(Exception):
    """A request cannot run (unknown table, no primary key, a failing --where): one clear line."""


class SnapshotReader(Protocol):
    """What a source kind gives the snapshot (agent/sources/*/snapshot.py). An optional class attribute
    `read_after_low = True` defers each chunk's read until the stream has passed its LOW watermark."""

    def watermark(self, name: str, kind: str) -> None:
        """Write a watermark through the log and commit it; the source yields it as a Watermark."""

    def key_columns(self, table: str) -> tuple[str, ...]: ...

    def read_chunk(self, table: str, keys: tuple[str, ...], after: list[str] | None, limit: int,
                   where: str | None) -> tuple[list[dict[str, Any]], list[str] | None]:
        """Rows in their JSON form (as the stream gives them), and the last row's key as the database's text
        (what `after` takes next time), None when there is no row."""

    def estimate(self, table: str) -> int | None: ...

    def validate(self, table: str, where: str | None) -> None:
        """Raise SnapshotError when the table is unknown, has no primary key, or `where` fails."""

    def close(self) -> None: ...


def new_request(tables: list[str], where: str | None = None, target: str | None = None,
                initial: bool = False) -> dict:
    rid = ("initial-" if initial else "") + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()
    return {"id": rid, "tables": list(tables), "where": where, "target": target, "state": "pending",
            "table": 0, "last_key": None, "rows": {t: 0 for t in tables}, "estimates": {},
            "created": time.time(), "started": None, "finished": None, "error": None}


def requests(spool) -> list[dict]:
    """Every request in the spool, oldest first, with `cancel_requested` from the CLI."""
    cancels = spool.meta_range(CANCEL_PREFIX)
    out = []
    for _key, value in spool.meta_range(META_PREFIX).items():
        req = json.loads(value)
        req["cancel_requested"] = CANCEL_PREFIX + req["id"] in cancels
        out.append(req)
    return sorted(out, key=lambda r: (r["created"], r["id"]))


def store_request(spool, req: dict) -> None:
    spool.set_meta(META_PREFIX + req["id"], _dump(req))


def _dump(req: dict) -> str:
    return json.dumps({k: v for k, v in req.items() if k != "cancel_requested"}, sort_keys=True)


@dataclass
class _Window:
    name: str
    table: str
    keys: tuple[str, ...]
    rows: dict[tuple, dict[str, Any]] | None  # key -> row, in key order; None: not read yet (read_after_low)
    last_key: list[str] | None
    low_list: list | None = None             # the batch list the LOW watermark was seen in, and where
    low_index: int = 0
    low_seen: bool = False
    removed: int = 0


@dataclass
class _Pending:
    """A chunk emitted at its HIGH watermark whose progress waits for the checkpoint that covers it."""

    state: dict
    last_row: RowChange | None
    spooled: bool = False


@dataclass
class SnapshotRunner:
    spool: Any
    chunk_rows: int
    agent: str
    reader: SnapshotReader | None = None
    window: _Window | None = None
    pending: _Pending | None = None
    active: dict | None = None
    _next_scan: float = 0.0
    _rates: dict = field(default_factory=dict)     # table -> (time, rows) when this process started it
    rows_total: dict = field(default_factory=dict)  # table -> read rows emitted by this process (metrics)

    # -- the source connection comes and goes

    def attach(self, reader: SnapshotReader | None) -> None:
        """A (re)connected source: a window open on the old connection is gone with it (its rows were not
        emitted; the chunk is read again), and progress not yet spooled is forgotten."""
        self.detach()
        self.reader = reader
        self.active = None
        self._next_scan = 0.0

    def detach(self) -> None:
        self.window = self.pending = None
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception:
                pass
            self.reader = None

    # -- called by the capture loop between two reads

    def step(self) -> None:
        """Open the next window when none is open and the last chunk's progress is spooled."""
        if self.reader is None or self.pending is not None:
            return
        if self.window is not None:
            if self.window.rows is None and self.window.low_seen and self.active is not None:
                self._read_chunk(self.active, self.window)      # read_after_low: the stream passed LOW
            return
        req = self._active_request()
        if req is None:
            return
        while True:
            if req["table"] >= len(req["tables"]):
                req["state"], req["finished"] = "done", time.time()
                store_request(self.spool, req)
                log.info("snapshot %s done: %s", req["id"], ", ".join(f"{t} {n} rows" for t, n in req["rows"].items()))
                self.active = None
                return
            table = req["tables"][req["table"]]
            try:
                keys = self.reader.key_columns(table)
                if not keys:
                    raise SnapshotError(f"table {table} has no primary key: a snapshot reads in key order; add a "
                                        f"primary key (or leave the table out of the request)")
            except SnapshotError as e:
                req["state"], req["error"], req["finished"] = "failed", str(e), time.time()
                store_request(self.spool, req)
                log.error("snapshot %s failed: %s", req["id"], e)
                self.active = None
                return
            if table not in req["estimates"]:
                req["estimates"][table] = self.reader.estimate(table)
            self._rates.setdefault(table, (time.monotonic(), req["rows"].get(table, 0)))
            name = f"{req['id']}/{os.urandom(4).hex()}"
            window = _Window(name, table, keys, None, None)
            try:
                self.reader.watermark(name, "low")
            except SnapshotError as e:
                self._fail(req, e)
                return
            if getattr(self.reader, "read_after_low", False):
                self.window = window           # read when the stream brings LOW (on_watermark, then step)
                return
            if self._read_chunk(req, window):
                return

    def _read_chunk(self, req: dict, w: _Window) -> bool:
        """Read the window's chunk and write HIGH; False when the table had no rows left (it is done, the
        window is closed and the progress stored)."""
        assert self.reader is not None      # only called while a reader is attached
        try:
            rows, last = self.reader.read_chunk(w.table, w.keys, req["last_key"], self.chunk_rows, req["where"])
        except SnapshotError as e:
            self._fail(req, e)
            return True
        if not rows:
            # the table is done: nothing to emit, so the progress can be stored right away
            req["table"] += 1
            req["last_key"] = None
            store_request(self.spool, req)
            self.window = None
            return False
        if WINDOW_PAUSE_SECONDS:
            time.sleep(WINDOW_PAUSE_SECONDS)
        try:
            self.reader.watermark(w.name, "high")
        except SnapshotError as e:
            self._fail(req, e)
            return True
        if len(w.keys) == 1:
            k0 = w.keys[0]
            w.rows = {(r[k0],): r for r in rows}
        else:
            w.rows = {tuple([r[k] for k in w.keys]): r for r in rows}
        w.last_key = last
        self.window = w
        return True

    def _fail(self, req: dict, e: SnapshotError) -> None:
        req["state"], req["error"], req["finished"] = "failed", str(e), time.time()
        store_request(self.spool, req)
        log.error("snapshot %s failed: %s", req["id"], e)
        self.active = self.window = None

    def _active_request(self) -> dict | None:
        now = time.monotonic()
        if self.active is not None:
            if now >= self._next_scan:
                self._next_scan = now + RESCAN_SECONDS
                if self.spool.meta_range(CANCEL_PREFIX + self.active["id"]):
                    self._cancel(self.active)
                    return None
            return self.active
        if now < self._next_scan:
            return None
        self._next_scan = now + RESCAN_SECONDS
        for req in requests(self.spool):
            if req["state"] not in ("pending", "running"):
                continue
            if req["cancel_requested"]:
                self._cancel(req)
                continue
            if req["state"] == "pending":
                req["state"], req["started"] = "running", time.time()
                store_request(self.spool, req)
                log.info("snapshot %s started: %s", req["id"], ", ".join(req["tables"]))
            else:
                log.info("snapshot %s resumes at table %s after key %s", req["id"],
                         req["tables"][min(req["table"], len(req["tables"]) - 1)], req["last_key"])
            req.pop("cancel_requested", None)
            self.active = req
            return req
        return None

    def _cancel(self, req: dict) -> None:
        req.pop("cancel_requested", None)
        req["state"], req["finished"] = "cancelled", time.time()
        store_request(self.spool, req)
        log.info("snapshot %s cancelled", req["id"])
        self.active = self.window = self.pending = None     # nothing of it is stored over "cancelled" later

    # -- the capture core's watermark hook

    def on_watermark(self, mark: Watermark, out: list[RowChange]) -> list[RowChange] | None:
        w = self.window
        if w is None or mark.name != w.name:
            return None            # an old window's mark replayed after a restart, or another agent's
        if mark.kind == "low":
            w.low_list, w.low_index, w.low_seen = out, len(out), True
            return None
        if mark.kind != "high" or not w.low_seen or w.rows is None:
            return None
        self._drop_changed(out[w.low_index:] if out is w.low_list else out)
        self.window = None
        req = self.active
        assert req is not None      # a window is only opened for the active request
        emitted = []
        ts = time.time()
        commit_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
        prefix = f"{req['id']}\x00{w.table}\x00"
        for i, (key, row) in enumerate(w.rows.items(), 1):
            emitted.append(RowChange(w.table, "read", None, row, f"{mark.position}:{i:08d}", commit_time, ts, None,
                                     w.keys, id_key="snapshot\x00" + prefix + orjson.dumps(key).decode(),
                                     target=req["target"]))
        state = dict(req)
        state["rows"] = dict(req["rows"])
        state["rows"][w.table] = state["rows"].get(w.table, 0) + len(emitted)
        state["last_key"] = w.last_key
        self.active = state
        self.rows_total[w.table] = self.rows_total.get(w.table, 0) + len(emitted)
        self.pending = _Pending(state, emitted[-1] if emitted else None, spooled=not emitted)
        return emitted

    def _drop_changed(self, changes: list[RowChange]) -> None:
        w = self.window
        assert w is not None        # called only while a window is open
        rows, keys, table = w.rows, w.keys, w.table
        if rows is None:
            return          # not read yet: what the stream brings before the read is in it anyway
        for c in changes:
            if c.table != table:
                continue
            for img in (c.before, c.after):
                if img is not None:
                    try:
                        k = tuple(img[n] for n in keys)
                    except KeyError:
                        continue
                    if rows.pop(k, None) is not None:
                        w.removed += 1

    # -- called with every batch before it is spooled

    def progress_for(self, changes: list[RowChange], checkpoint: str | None) -> dict[str, str] | None:
        """The meta entries to store with this batch: the progress of an emitted chunk once the batch's
        checkpoint covers its rows."""
        w = self.window
        if w is not None and w.low_seen:
            # changes between LOW and a HIGH not seen yet: drop their keys from the chunk now
            self._drop_changed(changes[w.low_index:] if changes is w.low_list else changes)
            w.low_list = None
        p = self.pending
        if p is None:
            return None
        if not p.spooled and changes and any(c is p.last_row for c in reversed(changes)):
            p.spooled = True
        if p.spooled and checkpoint is not None:
            self.pending = None
            return {META_PREFIX + p.state["id"]: _dump(p.state)}
        return None

    # -- health

    def health(self) -> dict | None:
        req = self.active
        if req is None:
            return None
        tables = {}
        now = time.monotonic()
        for t in req["tables"]:
            started = self._rates.get(t)
            done = req["rows"].get(t, 0)
            rate = None
            if started and now > started[0]:
                rate = round((done - started[1]) / (now - started[0]), 1)
            tables[t] = {"rows_done": done, "rows_estimate": req["estimates"].get(t), "rows_per_second": rate}
        return {"state": "running", "id": req["id"], "tables": tables}
