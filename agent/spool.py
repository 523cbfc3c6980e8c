"""The durable spool: SQLite in WAL mode in `state_dir/spool.db`.

- A batch of events and the source checkpoint it reaches commit in ONE transaction, so after a crash the
  checkpoint never runs ahead of the events (the source is confirmed only after that commit).
- Each target has its own cursor; it moves only after the target confirmed the batch.
- Delivered events are pruned once every target is past them and the retention has passed.
- synchronous=FULL: a commit survives power loss, which the source confirmation relies on.

One `Spool` object per thread (SQLite connections are not shared across threads).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import SpoolError
from .interfaces import SpooledEvent
from .mapping import MappedEvent, MappingFailure
from .shipped import shipped

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
        try:
            if readonly:
                if not self.path.exists():
                    raise SpoolError(f"no spool at {self.path}: the agent has not run with this state_dir yet")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                          check_same_thread=False, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
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
               resolves_dead_letter: int | None = None) -> int:
        """Spool events and mapping failures, and move the checkpoint, in one transaction (and, for
        `dlq retry` of a change mapped again, remove its dead letter in the same one).
        Returns how many events were new (a replayed change is ignored by its identity)."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            if events:
                db.executemany(
                    "INSERT OR IGNORE INTO events (id, type, subject, position, commit_ts, spooled_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(e.id, e.type, e.subject, e.position, e.commit_ts, now, e.body) for e in events])
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return added

    def set_checkpoint(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            self.db.execute("DELETE FROM meta WHERE key = 'source_checkpoint'")
        else:
            self.append([], [], checkpoint)

    def last_seq(self) -> int:
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    # ------------------------------------------------------------ delivery side

    def ensure_targets(self, names: list[str]) -> None:
        """New targets start at the current end of the spool... unless nothing was ever spooled.
        A target added to a running install gets events from now on (replay is explicit)."""
        for name in names:
            self.db.execute("INSERT OR IGNORE INTO targets (name, cursor) VALUES (?, ?)",
                            (name, self._oldest_cursor_or_start()))

    def _oldest_cursor_or_start(self) -> int:
        row = self.db.execute("SELECT min(cursor) FROM targets").fetchone()
        return row[0] if row and row[0] is not None else 0

    def counters(self, name: str) -> TargetCounters:
        row = self.db.execute("SELECT name, cursor, delivered, failed, dead_lettered, last_error FROM targets "
                              "WHERE name = ?", (name,)).fetchone()
        if row is None:
            return TargetCounters(name, 0, 0, 0, 0, None)
        return TargetCounters(*row)

    def all_counters(self) -> list[TargetCounters]:
        return [TargetCounters(*r) for r in self.db.execute(
            "SELECT name, cursor, delivered, failed, dead_lettered, last_error FROM targets ORDER BY name")]

    def fetch(self, after_seq: int, limit: int) -> list[SpooledEvent]:
        return [SpooledEvent(*r) for r in self.db.execute(
            "SELECT seq, id, type, subject, body, commit_ts, position FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
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
        """After the target confirmed: move the cursor, count, and dead-letter the rejected events."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for ev, reason in dead:
                db.execute("INSERT INTO dead_letters (target, event_id, type, position, reason, body, created_at) "
                           "SELECT ?, ?, ?, position, ?, ?, ? FROM events WHERE seq = ?",
                           (name, ev.id, ev.type, reason, ev.body, now, ev.seq))
            db.execute("UPDATE targets SET cursor = max(cursor, ?), delivered = delivered + ?, "
                       "dead_lettered = dead_lettered + ?, last_error = ? WHERE name = ?",
                       (cursor, delivered, len(dead), error, name))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
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
        return self.db.execute("DELETE FROM events WHERE seq BETWEEN ? AND ? AND spooled_at < ?",
                               (first, upto, time.time() - retention_seconds)).rowcount

    def rewind(self, name: str, to_seq: int) -> None:
        """Replay: the target receives again everything after `to_seq` that is still spooled."""
        self.db.execute("UPDATE targets SET cursor = ? WHERE name = ?", (to_seq, name))

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
            db.execute("ROLLBACK")
            raise

    def bump_retries(self, dl_id: int, reason: str) -> None:
        self.db.execute("UPDATE dead_letters SET retries = retries + 1, reason = ? WHERE dl_id = ?", (reason, dl_id))


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our own SQL's literals)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
