"""The durable spool: SQLite in WAL mode in `state_dir/spool.db`.

- A batch of events and the source checkpoint it reaches commit in ONE transaction, so after a crash the
  checkpoint never runs ahead of the events (the source is confirmed only after that commit).
- Each target has its own cursor; it moves only after the target confirmed the batch.
- Delivered events are pruned once every target is past them and the retention has passed.
- synchronous=FULL: a commit survives power loss, which the source confirmation relies on.

One `Spool` object per thread (SQLite connections are not shared across threads).

Every public method raises `SpoolError` (never `sqlite3.Error`): callers decide on one exception, and its
message names the file and what to do (a full disk: free space, capture resumes by itself).
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import SpoolError
from .interfaces import SpooledEvent
from .mapping import MappedEvent, MappingFailure
from .shipped import shipped
from .statefiles import create_private_file, private_state_dir

MIGRATIONS = shipped("migrations/state")


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
    def __init__(self, state_dir: Path, *, readonly: bool = False):
        self.path = Path(state_dir) / "spool.db"
        self._seen_rewinds: dict[str, str | None] = {}
        # the config's targets, once ensure_targets told them; until then every cursor counts (the safe
        # side for pruning)
        self.configured: tuple[str, ...] | None = None
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
                self._migrate()
        except sqlite3.Error as e:
            raise SpoolError(f"cannot open the spool {self.path}: {e}") from None

    def _migrate(self) -> None:
        current = self.db.execute("PRAGMA user_version").fetchone()[0]
        for version, sql in _migrations():
            if version > current:
                self.db.execute("BEGIN IMMEDIATE")   # statements one by one: executescript would commit early
                for stmt in _statements(sql):
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {version}")
                self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ capture side

    def checkpoint(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'source_checkpoint'").fetchone()
        return row[0] if row else None

    def append(self, events: list[MappedEvent], failures: list[MappingFailure], checkpoint: str | None,
               resolves_dead_letter: int | None = None, snapshot_state: dict[str, str] | None = None) -> int:
        """Spool events and mapping failures, and move the checkpoint, in one transaction (and, for
        `dlq retry` of a change mapped again, remove its dead letter in the same one; for a snapshot, store
        its progress, meta key -> value, with the checkpoint that covers the rows it emitted).
        Returns how many events were new (a replayed change is ignored by its identity)."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            if events:
                db.executemany(
                    "INSERT OR IGNORE INTO events (id, type, subject, position, commit_ts, spooled_at, body, "
                    "only_target) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(e.id, e.type, e.subject, e.position, e.commit_ts, now, e.body, e.only_target) for e in events])
            added = db.total_changes - before
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

    def last_seq(self) -> int:
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

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
        return [SpooledEvent(*r) for r in self.db.execute(
            "SELECT seq, id, type, subject, body, commit_ts, position, only_target FROM events WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after_seq, limit))]

    def pending(self, name: str) -> int:
        """Events after the target's cursor (including those its event patterns will skip). An upper bound:
        seq has gaps where a replayed change was ignored (INSERT OR IGNORE still takes a number), but never
        after the newest event, so a target that caught up has 0 pending."""
        return max(0, self.last_seq() - self.counters(name).cursor)

    def max_pending(self) -> int:
        """Undelivered events of the target furthest behind (an upper bound, see `pending`): a subtraction,
        not a count over a large backlog."""
        return max(0, self.last_seq() - self._oldest_cursor_or_start())

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
                           "SELECT ?, ?, ?, position, ?, ?, ? FROM events WHERE seq = ?",
                           (name, ev.id, ev.type, reason, ev.body, now, ev.seq))
            db.execute("UPDATE targets SET cursor = max(cursor, ?), delivered = delivered + ?, "
                       "dead_lettered = dead_lettered + ?, last_error = ? WHERE name = ?",
                       (cursor, delivered, len(dead), error, name))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def record_failure(self, name: str, error: str) -> None:
        self.db.execute("UPDATE targets SET failed = failed + 1, last_error = ? WHERE name = ?", (error, name))

    def prune(self, retention_seconds: float, limit: int = 5000) -> int:
        """Drop up to `limit` of the oldest events that every target has passed and that are older than the
        retention; returns how many. Call again while it returns `limit`: small steps keep each write
        transaction short, so capture never stalls behind a large delete. The range is bounded by seq (the
        key), so no step scans the spool."""
        first = self.db.execute("SELECT min(seq) FROM events").fetchone()[0]
        if first is None:
            return 0
        upto = min(self._oldest_cursor_or_start(), first + limit - 1)
        args = (first, upto, time.time() - retention_seconds)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            # what was pruned, so that a replay from before it is refused rather than silently shorter
            seq, ts = db.execute("SELECT max(seq), max(commit_ts) FROM events WHERE seq BETWEEN ? AND ? "
                                 "AND spooled_at < ?", args).fetchone()
            deleted = db.execute("DELETE FROM events WHERE seq BETWEEN ? AND ? AND spooled_at < ?", args).rowcount
            if deleted:
                for key, value in (("pruned_through_seq", seq), ("pruned_through_ts", ts)):
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
        if position is not None:
            return self.db.execute("SELECT min(seq) FROM events WHERE position = ?", (position,)).fetchone()[0]
        return self.db.execute("SELECT min(seq) FROM events WHERE commit_ts >= ?", (since_ts,)).fetchone()[0]

    def event_at(self, seq: int) -> tuple[str, float] | None:
        """(position, commit_ts) of the event `seq`."""
        row = self.db.execute("SELECT position, commit_ts FROM events WHERE seq = ?", (seq,)).fetchone()
        return (row[0], row[1]) if row else None

    def types_after(self, after_seq: int, upto_seq: int | None = None) -> dict[str, int]:
        """How many events of each type are spooled after `after_seq` (up to `upto_seq`)."""
        q, args = "SELECT type, count(*) FROM events WHERE seq > ?", [after_seq]
        if upto_seq is not None:
            q += " AND seq <= ?"
            args.append(upto_seq)
        return dict(self.db.execute(q + " GROUP BY type", args).fetchall())

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
