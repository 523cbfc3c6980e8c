"""State migration 3's one-time step (agent/spool.py runs it inside that migration's transaction): the per-event
rows of the old `events` table become spool frames, each event keeping its seq, so every cursor stays valid."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .interfaces import SpooledEvent

InsertFrame = Callable[[int, list, float, "str | None"], None]


def pack_legacy_events(db: sqlite3.Connection, insert_frame: InsertFrame, frame_events: int) -> None:
    """Runs of consecutive seq with the same only_target, at most `frame_events` each, go in as frames through
    `insert_frame(seq, events, spooled_at, only_target)`; then the table goes. Nothing to do without it."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
        return
    # seq was AUTOINCREMENT: numbers used by ignored replays after the last row are never reused either
    used = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    if used and used[0]:
        db.execute("INSERT INTO meta (key, value) VALUES ('seq_floor', ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))", (str(used[0]),))
    run: list[tuple] = []
    rows = db.execute("SELECT seq, id, type, subject, position, commit_ts, spooled_at, body, only_target "
                      "FROM events ORDER BY seq")
    pending_frames = []
    for r in rows:
        if run and (r[0] != run[-1][0] + 1 or r[8] != run[-1][8] or len(run) >= frame_events):
            pending_frames.append(run)
            run = []
        run.append(r)
        if len(pending_frames) >= 16:
            _insert(pending_frames, insert_frame)
            pending_frames = []
    if run:
        pending_frames.append(run)
    _insert(pending_frames, insert_frame)
    db.execute("DROP TABLE events")


def _insert(runs: list[list[tuple]], insert_frame: InsertFrame) -> None:
    for run in runs:
        evs = [SpooledEvent(r[0], r[1], r[2], r[3], bytes(r[7]), r[5], r[4]) for r in run]
        # the latest spooled_at of the run: retention never prunes one of them early
        insert_frame(run[0][0], evs, max(r[6] for r in run), run[0][8])
