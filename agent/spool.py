"""The durable spool: SQLite in WAL mode in `state_dir/spool.db`.

- A batch of events and the source checkpoint it reaches commit in ONE transaction, so after a crash the
  checkpoint never runs ahead of the events (the source is confirmed only after that commit).
- The events of a batch are one row, a frame (agent/spool_frames.py): every event still has its own spool
  number (seq), frames hold consecutive ones, and cursors are event numbers, so a target stopped in the
  middle of a frame resumes at the next event of it.
- Each target has its own cursor; it moves only after the target confirmed the batch.
- Delivered events are pruned once every target is past them and the retention has passed: exactly (the
  mark `pruned_through_seq` moves by event), and a frame's row goes once the mark passed all its events.
- synchronous=FULL: a commit survives power loss, which the source confirmation relies on.

One `Spool` object per thread (SQLite connections are not shared across threads).

Every public method raises `SpoolError` (never `sqlite3.Error`): callers decide on one exception, and its
message names the file and what to do (a full disk: free space, capture resumes by itself).
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import SpoolError
from .interfaces import SpooledEvent
from .mapping import MappedEvent, MappingFailure
from .shipped import shipped
from .spool_frames import FrameCodec, FrameHead, bounds, pack
from .spool_legacy import pack_legacy_events
from .statefiles import create_private_file, private_state_dir
from .statelock import exclusive, open_writer_lock

MIGRATIONS = shipped("migrations/state")
FRAME_CACHE = 1              # decoded frames a reader keeps: a target reads a frame in several batches, in order
# events per frame at most: a batch of 5000 changes is 5 frames. Compression gains nothing beyond ~1000
# similar events, and smaller frames keep the transient buffers (joined bodies, a decompressed frame) small:
# frames of 5000 cost the delivery process 24 MB more peak RSS in bench.memory.
FRAME_EVENTS = 1000
PackedFrame = tuple[bytes, bytes]      # a frame's head and body blobs
# WAL pages past which the agent's connections checkpoint in a commit all the same (agent/spool_checkpoints.py)
BACKSTOP_CHECKPOINT_PAGES = 10_000


@dataclass(slots=True)
class TargetCounters:
    name: str
    cursor: int
    delivered: int
    failed: int
    dead_lettered: int
    last_error: str | None


@dataclass(slots=True)
class DeadLetter:
    dl_id: int
    target: str | None
    event_id: str | None
    type: str
    position: str
    reason: str
    body: bytes | None
    change: bytes | None
    created_at: float
    retries: int


def _migrations() -> list[tuple[int, str]]:
    out = []
    for f in sorted(MIGRATIONS.glob("*.sql")):
        m = re.match(r"(\d+)_", f.name)
        if m:
            out.append((int(m.group(1)), f.read_text()))
    if not out:
        raise SpoolError(f"no state migrations found in {MIGRATIONS}")
    return out


class Spool:
    def __init__(self, state_dir: Path, *, readonly: bool = False, background_checkpoints: bool = False):
        # background_checkpoints: the agent's capture and delivery spools, whose commits leave checkpoints to
        # its thread (agent/spool_checkpoints.py) up to BACKSTOP_CHECKPOINT_PAGES
        self.path = Path(state_dir) / "spool.db"
        self._seen_rewinds: dict[str, str | None] = {}
        self._cache: dict[int, FrameHead] = {}        # decoded frames by seq, least recently used first
        self._codec = FrameCodec()                     # this Spool's (its thread's) zstd contexts
        # the config's targets, once ensure_targets told them; until then every cursor counts (the safe
        # side for pruning)
        self.configured: tuple[str, ...] | None = None
        self._writer_lock: int | None = None           # spool.lock's fd (statelock.exclusive); not when readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise SpoolError(f"no spool at {self.path}: the agent has not run with this state_dir yet")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                          check_same_thread=False, isolation_level=None)
            else:
                private_state_dir(self.path.parent)
                create_private_file(self.path)
                self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                if background_checkpoints:
                    self.db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
                self._migrate()
        except sqlite3.Error as e:
            raise SpoolError(f"cannot open the spool {self.path}: {e}") from None
        if not readonly:
            try:
                self._writer_lock = open_writer_lock(self.path.parent)
            except OSError as e:       # e.g. left by an agent that ran as another user
                self.db.close()
                raise SpoolError(f"cannot open {e.filename}: {e.strerror}; the state_dir's files must belong to "
                                 "the agent's user") from None

    def _migrate(self) -> None:
        current = self.db.execute("PRAGMA user_version").fetchone()[0]
        for version, sql in _migrations():
            if version > current:
                self.db.execute("BEGIN IMMEDIATE")   # statements one by one: executescript would commit early
                for stmt in _statements(sql):
                    self.db.execute(stmt)
                if version == 3:
                    pack_legacy_events(self.db, self._insert_frame, FRAME_EVENTS)
                self.db.execute(f"PRAGMA user_version = {version}")
                self.db.execute("COMMIT")

    def _insert_frame(self, seq: int, events: list[MappedEvent], spooled_at: float, only_target: str | None,
                      packed: tuple[bytes, bytes] | None = None) -> None:
        head, body = packed or pack(events, self._codec)
        # min and max: a batch is in position order, except retried dead letters
        lo, hi, ts_lo, ts_hi, _ = bounds(events)
        self.db.execute("INSERT INTO frames (seq, n, min_position, max_position, min_ts, max_ts, spooled_at, "
                        "only_target, head, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, len(events), lo, hi, ts_lo, ts_hi, spooled_at, only_target, head, body))

    def close(self) -> None:
        self.db.close()
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    # ------------------------------------------------------------ capture side

    def checkpoint(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'source_checkpoint'").fetchone()
        return row[0] if row else None

    def append(self, events: list[MappedEvent], failures: list[MappingFailure], checkpoint: str | None,
               resolves_dead_letter: int | None = None, snapshot_state: dict[str, str] | None = None) -> int:
        """Spool events and mapping failures, and move the checkpoint, in one transaction (and, for
        `dlq retry` of a change mapped again, remove its dead letter in the same one; for a snapshot, store
        its progress, meta key -> value, with the checkpoint that covers the rows it emitted).
        Returns how many events were new (a replayed change is ignored by its identity, (position, type)).
        The events become frames: one per run of events with the same only_target, of at most FRAME_EVENTS."""
        now = time.time()
        # packed before the write lock (statelock.exclusive holds it around this method's commit, and the
        # delivery's cursor commits wait for it): compressing is the longest step after the fsync. A batch
        # part of which is spooled already (a replay) is packed again inside, from what is new.
        lo, _, _, _, one_target = bounds(events) if events else ("", "", 0.0, 0.0, True)
        return self._append_packed(events, lo, self._pack_frames(events, one_target), now, failures, checkpoint,
                                   resolves_dead_letter, snapshot_state)

    def _pack_frames(self, events: list[MappedEvent], one_target: bool) -> list[tuple[list[MappedEvent], PackedFrame]]:
        # the frames of `events` (runs of one only_target, at most FRAME_EVENTS each) with their packed blobs
        return [(part, pack(part, self._codec)) for part in _frames_of(events, one_target)] if events else []

    @exclusive
    def _append_packed(self, events: list[MappedEvent], lo: str,
                       frames: list[tuple[list[MappedEvent], tuple[bytes, bytes]]], now: float,
                       failures: list[MappingFailure], checkpoint: str | None, resolves_dead_letter: int | None,
                       snapshot_state: dict[str, str] | None) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            added = 0
            if events:
                fresh = self._new_events(events, lo)
                if fresh is not events:
                    frames = self._pack_frames(fresh, bool(fresh) and bounds(fresh)[4])
                added = len(fresh)
            if added:
                seq = self._last_seq() + 1
                for part, packed in frames:
                    self._insert_frame(seq, part, now, part[0].only_target, packed)
                    seq += len(part)
            for f in failures:
                exists = db.execute("SELECT 1 FROM dead_letters WHERE target IS NULL AND position = ? AND type = ?",
                                    (f.position, f.event_type)).fetchone()
                if not exists:
                    db.execute("INSERT INTO dead_letters (target, type, position, reason, change, created_at) "
                               "VALUES (NULL, ?, ?, ?, ?, ?)", (f.event_type, f.position, f.reason, f.change, now))
            if resolves_dead_letter is not None:
                db.execute("DELETE FROM dead_letters WHERE dl_id = ?", (resolves_dead_letter,))
            if checkpoint is not None:
                db.execute("INSERT INTO meta (key, value) VALUES ('source_checkpoint', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (checkpoint,))
            if snapshot_state:
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", snapshot_state.items())
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return added

    # snapshot requests and their progress: meta 'snapshot:<request id>' = JSON (agent/snapshot.py)
    def meta_range(self, prefix: str) -> dict[str, str]:
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return dict(self.db.execute("SELECT key, value FROM meta WHERE key >= ? AND key < ?", (prefix, hi)))

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "value = excluded.value", (key, value))

    def set_checkpoint(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            self.db.execute("DELETE FROM meta WHERE key = 'source_checkpoint'")
        else:
            self.append([], [], checkpoint)

    def _new_events(self, events: list[MappedEvent], lowest: str) -> list[MappedEvent]:
        """The events not spooled yet (`lowest`: the least of their positions). Positions grow with the
        source, so when every event is after the last spooled position they are all new without looking
        further (the normal case: one index lookup per batch); one at or before it (a change replayed after a
        crash, a retried dead letter, a source whose positions started again lower) is looked up by
        (position, type) in the frames around its position."""
        row = self.db.execute("SELECT max(max_position) FROM frames").fetchone()
        newest = row[0] if row else None
        if newest is None or lowest > newest:
            return events
        old = [e for e in events if e.position <= newest]
        if not old:
            return events
        lo, hi = min(e.position for e in old), max(e.position for e in old)
        have: set[tuple[str, str]] = set()
        for seq, n, only, head in self.db.execute(
                "SELECT seq, n, only_target, head FROM frames WHERE max_position >= ? AND min_position <= ?",
                (lo, hi)):
            f = FrameHead(seq, n, only, head, self._codec)
            have.update((f.positions[i], f.type_of(i)) for i in range(n) if lo <= f.positions[i] <= hi)
        out = []
        for e in events:
            key = (e.position, e.type)
            if key not in have:
                have.add(key)          # twice in one batch: spooled once
                out.append(e)
        return out

    def _meta_int(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(float(row[0])) if row else 0

    def _last_seq(self) -> int:
        """The highest spool number ever given out: seq is never reused, even once pruning emptied the
        spool (pruned_through_seq) or after a migration from per-event rows (seq_floor)."""
        row = self.db.execute("SELECT seq + n - 1 FROM frames ORDER BY seq DESC LIMIT 1").fetchone()
        return max(row[0] if row else 0, self._meta_int("pruned_through_seq"), self._meta_int("seq_floor"))

    def last_seq(self) -> int:
        return self._last_seq()

    # ------------------------------------------------------------ reading frames

    def _frame_start(self, seq: int) -> int:
        """The seq of the frame holding event `seq` (or of the last frame before it); 0 when none."""
        row = self.db.execute("SELECT max(seq) FROM frames WHERE seq <= ?", (seq,)).fetchone()
        return row[0] if row and row[0] is not None else 0

    def _frame(self, seq: int, n: int, only: str | None, with_body: bool, lines: bool = False) -> FrameHead:
        """A frame decoded, from the reader's cache when it was read before (frames never change); `lines`:
        read for the file target's lines (FrameHead)."""
        cache = self._cache
        f = cache.get(seq)
        try:
            if f is None or f.n != n:
                f = FrameHead(seq, n, only, self._blob("head", seq), self._codec, lines)
            else:
                del cache[seq]
            if with_body and f.payload is None:
                f.load_body(self._blob("body", seq), self._codec)
        except ValueError as e:
            raise SpoolError(f"spool {self.path}: frame {seq} is damaged ({e}); its events cannot be read") from None
        cache[seq] = f                       # most recent last
        while len(cache) > FRAME_CACHE:
            del cache[next(iter(cache))]
        return f

    def _blob(self, column: str, seq: int) -> bytes:
        row = self.db.execute(f"SELECT {column} FROM frames WHERE seq = ?", (seq,)).fetchone()
        if row is None:        # pruned between two statements: only a reader behind every cursor sees this
            raise SpoolError(f"spool {self.path}: frame {seq} was pruned while being read; try again")
        return row[0]

    def _heads(self, where: str, args: tuple, order: str = "seq"):
        """Decoded heads of the frames matching `where`, in `order`, read one by one (not cached)."""
        for seq, n, only, head in self.db.execute(
                f"SELECT seq, n, only_target, head FROM frames WHERE {where} ORDER BY {order}", args):
            try:
                yield FrameHead(seq, n, only, head, self._codec)
            except ValueError as e:
                raise SpoolError(f"spool {self.path}: frame {seq} is damaged ({e}); its events cannot be "
                                 "read") from None

    def _pruned_seq(self) -> int:
        return self._meta_int("pruned_through_seq")

    # ------------------------------------------------------------ delivery side

    def ensure_targets(self, names: list[str]) -> None:
        """Tell the spool which targets the config has: only their cursors count for pruning, pending and
        backpressure (the cursor of a target removed from the config would otherwise hold back pruning and
        pause capture for good; `stale_targets` names it, `forget_target` drops it).
        A new target starts at the oldest cursor of the configured targets already there (0 when none):
        it gets what is still spooled and undelivered, not a replay of what was pruned."""
        start = self._oldest_cursor_or_start(names)
        self.configured = tuple(names)
        for name in names:
            self.db.execute("INSERT OR IGNORE INTO targets (name, cursor) VALUES (?, ?)", (name, start))

    def _oldest_cursor_or_start(self, names: list[str] | tuple[str, ...] | None = None) -> int:
        names = self.configured if names is None else names
        if names is None:
            row = self.db.execute("SELECT min(cursor) FROM targets").fetchone()
        else:
            row = self.db.execute(f"SELECT min(cursor) FROM targets WHERE name IN ({','.join('?' * len(names))})",
                                  tuple(names)).fetchone()
        return row[0] if row and row[0] is not None else 0

    def stale_targets(self, configured: list[str]) -> list[str]:
        """Targets with a cursor in the spool that are not in the config (removed or renamed)."""
        return [r[0] for r in self.db.execute("SELECT name FROM targets ORDER BY name") if r[0] not in configured]

    def forget_target(self, name: str) -> bool:
        """Drop a target's cursor and counters (its dead letters stay until dropped)."""
        return self.db.execute("DELETE FROM targets WHERE name = ?", (name,)).rowcount > 0

    def counters(self, name: str) -> TargetCounters:
        """The target's cursor and counters. Also remembers which rewind of the target this reader has seen,
        so that `advance` after it cannot undo a rewind that happened in between (see `rewind`)."""
        row = self.db.execute("SELECT name, cursor, delivered, failed, dead_lettered, last_error, "
                              "(SELECT value FROM meta WHERE key = 'rewinds:' || name) FROM targets "
                              "WHERE name = ?", (name,)).fetchone()
        if row is None:
            return TargetCounters(name, 0, 0, 0, 0, None)
        self._seen_rewinds[name] = row[6]
        return TargetCounters(*row[:6])

    def all_counters(self) -> list[TargetCounters]:
        return [TargetCounters(*r) for r in self.db.execute(
            "SELECT name, cursor, delivered, failed, dead_lettered, last_error FROM targets ORDER BY name")]

    def fetch(self, after_seq: int, limit: int) -> list[SpooledEvent]:
        """Up to `limit` events after `after_seq`, in spool order (from the middle of a frame too)."""
        out: list[SpooledEvent] = []
        for frame, lo, hi in self.fetch_runs(after_seq, limit):
            out.extend(frame.events(lo, hi))
        return out

    def fetch_runs(self, after_seq: int, limit: int, lines: bool = False) -> list[tuple[FrameHead, int, int]]:
        """The same events as `fetch`, as (frame, lo, hi): the frame's events lo .. hi - 1, bodies loaded;
        `lines`: the frames' heads read for their JSON lines first (FrameHead)."""
        first = max(after_seq, self._pruned_seq()) + 1
        out: list[tuple[FrameHead, int, int]] = []
        taken = 0
        if limit <= 0:
            return out
        # every frame holds one event or more: limit + 1 frames (the first may end before `first`) suffice.
        # Read as needed, not fetched all: each frame row fills a page of its own, and a batch needs only
        # a frame or two of the 1000 the limit allows (fetching them all was 14% of delivery's time).
        rows = self.db.execute("SELECT seq, n, only_target FROM frames WHERE seq >= ? ORDER BY seq LIMIT ?",
                               (self._frame_start(first), limit + 1))
        try:
            for seq, n, only in rows:
                if seq + n <= first:
                    continue
                lo = max(first, seq) - seq
                hi = min(n, lo + limit - taken)
                out.append((self._frame(seq, n, only, True, lines), lo, hi))
                taken += hi - lo
                if taken >= limit:
                    break
        finally:
            rows.close()          # ends the statement (and its read snapshot) at once
        return out

    def _foreign(self, name: str, cursor: int) -> int:
        """Events after `cursor` that are meant only for another target (snapshot --target)."""
        return self.db.execute(
            "SELECT coalesce(sum(min(n, seq + n - 1 - ?)), 0) FROM frames WHERE only_target IS NOT NULL "
            "AND seq >= ? AND seq + n - 1 > ? AND only_target != ?",
            (cursor, self._frame_start(cursor + 1), cursor, name)).fetchone()[0]

    def pending(self, name: str) -> int:
        """Events after the target's cursor that are for it (including those its event patterns will skip);
        events of a `snapshot --target` for another target do not count. Exact, except after a migration
        from per-event rows, whose seq had gaps (an upper bound there). A subtraction and a look at the
        frames meant for one target only, not a count over a large backlog."""
        cursor = self.counters(name).cursor
        return max(0, self._last_seq() - cursor - self._foreign(name, cursor))

    def max_pending(self) -> int:
        """Undelivered events of the target furthest behind (see `pending`): what backpressure compares
        with spool_max_events."""
        names = self.configured
        if names is None:
            names = tuple(r[0] for r in self.db.execute("SELECT name FROM targets"))
        last = self._last_seq()
        worst = 0 if names else last
        for name in names:
            row = self.db.execute("SELECT cursor FROM targets WHERE name = ?", (name,)).fetchone()
            cursor = row[0] if row else 0
            worst = max(worst, last - cursor - self._foreign(name, cursor))
        return max(0, worst)

    @exclusive
    def advance(self, name: str, cursor: int, delivered: int, dead: list[tuple[SpooledEvent, str]],
                error: str | None = None) -> None:
        """After the target confirmed: move the cursor, count, and dead-letter the rejected events.
        The cursor only moves forward, except that a rewind wins: if the target was rewound since this reader
        last read its counters (the batch now confirmed was fetched before the rewind), the cursor stays
        where the rewind put it."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if name in self._seen_rewinds:
                now_rewinds = db.execute("SELECT value FROM meta WHERE key = ?", (f"rewinds:{name}",)).fetchone()
                if (now_rewinds[0] if now_rewinds else None) != self._seen_rewinds[name]:
                    cursor = 0       # max(cursor, 0): the rewound cursor stays
            for ev, reason in dead:
                db.execute("INSERT INTO dead_letters (target, event_id, type, position, reason, body, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", (name, ev.id, ev.type, ev.position, reason, ev.body, now))
            db.execute("UPDATE targets SET cursor = max(cursor, ?), delivered = delivered + ?, "
                       "dead_lettered = dead_lettered + ?, last_error = ? WHERE name = ?",
                       (cursor, delivered, len(dead), error, name))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def record_failure(self, name: str, error: str) -> None:
        self.db.execute("UPDATE targets SET failed = failed + 1, last_error = ? WHERE name = ?", (error, name))

    @exclusive
    def prune(self, retention_seconds: float, limit: int = 5000) -> int:
        """Drop up to `limit` of the oldest events that every target has passed and that are older than the
        retention; returns how many. Call again while it returns `limit`: small steps keep each write
        transaction short, so capture never stalls behind a large delete. Exact by event: the mark
        `pruned_through_seq` moves to the last event dropped (readers never see events at or before it), and
        a frame's row is deleted once the mark has passed all its events. Bounded by seq (the key)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            first = db.execute("SELECT seq FROM frames ORDER BY seq LIMIT 1").fetchone()
            pruned = self._pruned_seq()
            start = max(pruned, first[0] - 1) if first else pruned      # every event <= start is gone
            upto = min(self._oldest_cursor_or_start(), start + limit)
            from_frame = self._frame_start(start + 1)
            # retention: stop before the first frame spooled too recently
            young = db.execute("SELECT min(seq) FROM frames WHERE seq >= ? AND seq <= ? AND spooled_at >= ?",
                               (from_frame, upto, time.time() - retention_seconds)).fetchone()[0]
            if young is not None:
                upto = min(upto, young - 1)
            deleted, newest_ts = 0, None
            if first is not None and upto > start:
                for seq, n, only, max_ts in db.execute(
                        "SELECT seq, n, only_target, max_ts FROM frames WHERE seq >= ? AND seq <= ? ORDER BY seq",
                        (from_frame, upto)).fetchall():
                    lo, hi = max(seq, start + 1), min(seq + n - 1, upto)
                    if hi < lo:
                        continue
                    deleted += hi - lo + 1
                    if hi < seq + n - 1:      # the mark stops inside this frame: the commit time of its event
                        ts = max(self._frame(seq, n, only, False).ts[lo - seq:hi - seq + 1])
                    else:
                        ts = max_ts
                    newest_ts = ts if newest_ts is None else max(newest_ts, ts)
                db.execute("DELETE FROM frames WHERE seq >= ? AND seq <= ? AND seq + n - 1 <= ?",
                           (from_frame, upto, upto))
            if deleted:
                for key, value in (("pruned_through_seq", upto), ("pruned_through_ts", newest_ts)):
                    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                               "value = max(CAST(value AS REAL), CAST(excluded.value AS REAL))", (key, str(value)))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return deleted

    def pruned_through(self) -> tuple[int, float] | None:
        """(seq, commit time) of the newest event pruned so far; None when nothing was ever pruned."""
        rows = dict(self.db.execute("SELECT key, value FROM meta WHERE key IN "
                                    "('pruned_through_seq', 'pruned_through_ts')").fetchall())
        if "pruned_through_seq" not in rows:
            return None
        return int(float(rows["pruned_through_seq"])), float(rows.get("pruned_through_ts") or 0)

    def first_seq_at(self, *, position: str | None = None, since_ts: float | None = None) -> int | None:
        """The first spooled event at `position`, or the first committed at or after `since_ts`."""
        floor = self._pruned_seq()
        if position is not None:
            heads = self._heads("max_position >= ? AND min_position <= ? AND seq + n - 1 > ?",
                                (position, position, floor))
            for f in heads:
                for i, p in enumerate(f.positions):
                    if p == position and f.seq + i > floor:
                        return f.seq + i
            return None
        assert since_ts is not None
        for f in self._heads("max_ts >= ? AND seq + n - 1 > ?", (since_ts, floor)):
            for i, ts in enumerate(f.ts):
                if ts >= since_ts and f.seq + i > floor:
                    return f.seq + i
        return None

    def event_at(self, seq: int) -> tuple[str, float] | None:
        """(position, commit_ts) of the event `seq`."""
        row = self.db.execute("SELECT seq, n, only_target FROM frames WHERE seq = ?",
                              (self._frame_start(seq),)).fetchone()
        if row is None or seq >= row[0] + row[1] or seq <= self._pruned_seq():
            return None
        f = self._frame(row[0], row[1], row[2], False)
        return f.positions[seq - f.seq], f.ts[seq - f.seq]

    def types_after(self, after_seq: int, upto_seq: int | None = None) -> dict[str, int]:
        """How many events of each type are spooled after `after_seq` (up to `upto_seq`)."""
        after = max(after_seq, self._pruned_seq())
        upto = self._last_seq() if upto_seq is None else upto_seq
        out: dict[str, int] = {}
        for f in self._heads("seq >= ? AND seq <= ?", (self._frame_start(after + 1), upto)):
            for i in range(max(after + 1, f.seq) - f.seq, min(f.n, upto - f.seq + 1)):
                t = f.type_of(i)
                out[t] = out.get(t, 0) + 1
        return out

    def find_event(self, event_id: str) -> tuple[int, str, str, str] | None:
        """(seq, type, subject, position) of the spooled event with this id, newest first; None when the
        spool does not hold it. Reads every frame's head (the dashboard's event page, `dlq show`)."""
        floor = self._pruned_seq()
        for f in self._heads("seq + n - 1 > ?", (floor,), order="seq DESC"):
            if event_id in f.ids:
                i = f.ids.index(event_id)
                if f.seq + i > floor:
                    return f.seq + i, f.type_of(i), f.subjects[i], f.positions[i]
        return None

    def rewind(self, name: str, to_seq: int) -> int:
        """Replay: the target receives again everything after `to_seq` that is still spooled. Never moves the
        cursor forward (that would skip undelivered events). A worker delivering a batch fetched before the
        rewind does not move the cursor past it afterwards (see `advance`). Returns the new cursor."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE targets SET cursor = min(cursor, ?) WHERE name = ?", (to_seq, name))
            db.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE SET "
                       "value = CAST(value AS INTEGER) + 1", (f"rewinds:{name}",))
            cursor = db.execute("SELECT cursor FROM targets WHERE name = ?", (name,)).fetchone()
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return cursor[0] if cursor else to_seq

    # ------------------------------------------------------------ dead letters

    def dead_letters(self, target: str | None = None) -> list[DeadLetter]:
        q = "SELECT * FROM dead_letters"
        args: tuple = ()
        if target is not None:
            q += " WHERE target = ?"
            args = (target,)
        return [DeadLetter(*r) for r in self.db.execute(q + " ORDER BY dl_id", args)]

    def dead_letter(self, dl_id: int) -> DeadLetter | None:
        r = self.db.execute("SELECT * FROM dead_letters WHERE dl_id = ?", (dl_id,)).fetchone()
        return DeadLetter(*r) if r else None

    def drop_dead_letter(self, dl_id: int) -> bool:
        return self.db.execute("DELETE FROM dead_letters WHERE dl_id = ?", (dl_id,)).rowcount > 0

    def count_dead_letters(self, target: str | None = None) -> int:
        if target is None:
            return self.db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM dead_letters WHERE target = ?", (target,)).fetchone()[0]

    def count_unmapped(self) -> int:
        """Dead letters no rule could map (stored without a target)."""
        return self.db.execute("SELECT count(*) FROM dead_letters WHERE target IS NULL").fetchone()[0]

    def resolve_dead_letter(self, dl_id: int, delivered_to: str) -> None:
        """A retried dead letter went through: remove it, and count the delivery for its target."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM dead_letters WHERE dl_id = ?", (dl_id,))
            db.execute("UPDATE targets SET delivered = delivered + 1 WHERE name = ?", (delivered_to,))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def bump_retries(self, dl_id: int, reason: str) -> None:
        self.db.execute("UPDATE dead_letters SET retries = retries + 1, reason = ? WHERE dl_id = ?", (reason, dl_id))

    # `dlq retry` while the agent runs hands target rejections to the target's worker: a request per dead
    # letter in meta ('dlq_retry:ID' = 'requested'), which the worker replaces by the outcome

    def request_retries(self, dl_ids: list[int]) -> None:
        self.db.executemany("INSERT INTO meta (key, value) VALUES (?, 'requested') ON CONFLICT (key) DO UPDATE "
                            "SET value = 'requested'", [(f"dlq_retry:{i}",) for i in dl_ids])

    def requested_retries(self, target: str) -> list[DeadLetter]:
        # asked by every worker between two batches: a range of meta's key, nearly always empty
        ids = [int(r[0][len("dlq_retry:"):]) for r in self.db.execute(
            "SELECT key FROM meta WHERE key >= 'dlq_retry:' AND key < 'dlq_retry;' AND value = 'requested'")]
        if not ids:
            return []
        return [DeadLetter(*r) for r in self.db.execute(
            f"SELECT * FROM dead_letters WHERE dl_id IN ({','.join('?' * len(ids))}) AND target = ? ORDER BY dl_id",
            (*ids, target))]

    def retry_outcome(self, dl_id: int) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (f"dlq_retry:{dl_id}",)).fetchone()
        return row[0] if row else None

    def set_retry_outcome(self, dl_id: int, outcome: str) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = ?", (outcome, f"dlq_retry:{dl_id}"))

    def clear_retry(self, dl_id: int) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (f"dlq_retry:{dl_id}",))


def _frames_of(events: list[MappedEvent], one_target: bool) -> list[list[MappedEvent]]:
    """The frames of a batch: runs of events with the same only_target, of at most FRAME_EVENTS each
    (`one_target`: all of them have the first one's, as spool_frames.bounds says)."""
    if one_target:                                        # the usual batch: one run
        return [events[i:i + FRAME_EVENTS] for i in range(0, len(events), FRAME_EVENTS)]
    targets = [e.only_target for e in events]
    out, start = [], 0
    for i in range(1, len(events) + 1):
        if i == len(events) or targets[i] != targets[start] or i - start == FRAME_EVENTS:
            out.append(events[start:i])
            start = i
    return out


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is left of a failed transaction. SQLite may already have rolled it back itself (a
    full disk does that), and then ROLLBACK would fail and hide the error that matters."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _spool_error(spool: Spool, e: sqlite3.Error) -> SpoolError:
    text = str(e)
    where = spool.path.parent
    if "full" in text or "No space" in text:
        advice = (f"no space left for the spool: free space on the filesystem of state_dir {where}; capture "
                  "stops until the spool accepts writes again, then resumes by itself")
    elif "locked" in text or "busy" in text:
        advice = "another process holds the spool's write lock too long; try again"
    elif "no such table" in text or "no such column" in text:
        advice = ("the spool was written by an older cdc-agent and not upgraded yet: `cdc-agent run` upgrades it "
                  "when it starts (so do `dlq retry`, `replay` and `targets forget`)")
    elif "readonly" in text:
        advice = f"the agent cannot write to state_dir {where}: check its owner and permissions"
    else:
        advice = f"check the file and the filesystem of state_dir {where}"
    return SpoolError(f"spool {spool.path}: {text}; {advice}")


def _guard(method):
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise _spool_error(self, e) from e
    return guarded


# the spool's boundary: no sqlite3.Error gets past a public method
for _name, _fn in list(vars(Spool).items()):
    if callable(_fn) and not _name.startswith("_"):
        setattr(Spool, _name, _guard(_fn))


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our own SQL's literals)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
