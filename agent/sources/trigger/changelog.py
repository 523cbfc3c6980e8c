"""Reading and confirming the changelog so that no committed change is missed: the strategy interface, and
gap tracking (MySQL / MariaDB, SQLite, SQL Server; PostgreSQL's snapshot windows are in postgresql.py).

Gap tracking: the changelog itself is the queue of what is not yet spooled (rows are deleted only after the
spool holds them). Rows are emitted in id order; a missing id (taken by a transaction not yet committed, or
rolled back) holds back the rows after it for at most `max_wait_seconds` after they were first seen. A row
that commits later than that is still read (it is still in the table) and emitted, late: its position is
lower than ones already emitted. The timeout trades global position order for latency; it never loses a
change. See docs/trigger-capture.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...errors import SourceFatal, SourceUnavailable
from .db import Db, text_of, text_or_none

if TYPE_CHECKING:
    from .catalog import Names
    from .dialect import Dialect

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ChangelogRow:
    """One changelog row to emit (markers and rows held back are not), in the reader's terms."""

    position: str
    table: str
    op: str                  # "I" | "U" | "D"
    before: Any              # JSON text (a statement row's rows: already parsed, RowImage)
    after: Any
    origin: str | None       # the writing session's origin marker (the agent's own writes carry its own)
    created: Any             # commit (or change) time: epoch seconds, or `created` as the driver gives it
    txid: str | None
    texts: tuple[str | None, str | None] | None = None   # PostgreSQL: text forms of some columns (JSON objects)


@dataclass(slots=True)
class ChangelogRead:
    rows: list[ChangelogRow] = field(default_factory=list)
    checkpoint: str | None = None   # None: nothing was read, there is no new checkpoint
    more: bool = False              # read again at once, without waiting for the poll interval
    behind: bool = False            # rows remain (or are held back): the source is not caught up


class ChangelogReader:
    """One strategy for reading the changelog in an order that misses nothing, and for deleting what the
    spool holds. The checkpoint is the strategy's: it alone writes and parses it."""

    late = 0           # rows that committed after their gap had timed out (gap tracking)
    # a table's primary key, for pairing an UPDATE's old and new rows in a statement row (set by the source)
    keys: Callable[[str], tuple[str, ...]] | None = None
    gap_waits = 0      # reads that held rows back behind a missing id (gap tracking)
    _db: Db | None = None

    @property
    def db(self) -> Db:
        if self._db is None:
            raise SourceUnavailable("the changelog reader is not started")
        return self._db

    def start(self, db: Db, version: int, checkpoint: str | None) -> None:
        """Resume strictly after `checkpoint` (None: from the start of the changelog)."""
        raise NotImplementedError

    def read(self, n: int) -> ChangelogRead:
        raise NotImplementedError

    def confirm(self, checkpoint: str) -> None:
        """Everything up to `checkpoint` is durable in the spool: delete it from the changelog."""
        raise NotImplementedError


class GapReader(ChangelogReader):
    """Gap tracking over the changelog's ids (see the module docstring). Checkpoint: "g/<high-water id>"."""

    def __init__(self, dialect: Dialect, names: Names, max_wait: float):
        self.sql, self.names, self.max_wait = dialect, names, max_wait
        self.version = 0
        self._hw: int | None = None            # highest id emitted (everything up to it is passed)
        self._replay_upto = 0                  # ids up to here were spooled before the restart: a replay
        self._first_seen: dict[int, float] = {}
        self._pending: list[tuple[str, list[int]]] = []     # (checkpoint, changelog ids to delete at confirm)
        self._markers: set[int] = set()
        self.late = 0
        self.gap_waits = 0

    def start(self, db: Db, version: int, checkpoint: str | None) -> None:
        self._db, self.version = db, version
        self._hw = None
        if checkpoint:
            p = checkpoint.split("/")
            if p[0] != "g" or len(p) != 2 or not p[1].isdigit():
                raise SourceFatal(f"checkpoint {checkpoint!r} is not a trigger-capture checkpoint for "
                                  f"{self.sql.name} (was the source kind changed? reset the agent's state_dir)")
            self._hw = int(p[1])
        self._replay_upto = self._hw or 0
        self._first_seen.clear()
        self._pending.clear()

    def read(self, n: int) -> ChangelogRead:
        rows = self.db.query(self.sql.gap_select(self.names, self.version, n))
        now = time.monotonic()
        hw = self._hw
        out: list[ChangelogRow] = []
        ids: list[int] = []
        held = False
        for rid, txid, tbl, op, before, after, origin, created in rows:
            rid = int(rid)
            op = text_of(op)
            if op == "S" and hw is not None and rid <= hw:
                self._markers.add(rid)      # a marker already passed: deleted with the next confirm
                continue
            if hw is not None and rid <= hw:
                # below the high-water mark: spooled before a restart and not yet deleted (a replay, same
                # position, the spool drops it), or a transaction that committed after its gap timed out
                if rid > self._replay_upto:
                    self.late += 1
                    log.warning("changelog id %d committed more than %.0fs after later changes: delivered "
                                "now, after them (its position is lower)", rid, self.max_wait)
            elif hw is not None and rid != hw + 1:
                since = self._first_seen.setdefault(rid, now)
                if now - since < self.max_wait:
                    held = True
                    self.gap_waits += 1
                    break              # hold the rows after the gap: it may still be filled
                log.info("changelog ids %d..%d never appeared within %.0fs (rolled back, or a transaction "
                         "still open); going on", hw + 1, rid - 1, self.max_wait)
                hw = rid
            else:
                hw = rid
            ids.append(rid)
            if op == "S":          # a marker (the start, or SQLite's kept highest id): anchors the ids only
                continue
            out.append(ChangelogRow(f"{rid:020d}", text_of(tbl), op, text_or_none(before), text_or_none(after),
                                    None if origin is None else text_of(origin), created,
                                    None if txid is None else str(txid)))
        if hw is not None:
            for k in [k for k in self._first_seen if k <= hw]:
                del self._first_seen[k]
        more = len(rows) == n and not held
        if not ids:
            return ChangelogRead(more=more, behind=held)
        self._hw = hw
        checkpoint = f"g/{hw}"
        self._pending.append((checkpoint, ids))
        return ChangelogRead(out, checkpoint, more=more, behind=more or held)

    def confirm(self, checkpoint: str) -> None:
        ids: list[int] = []
        while self._pending:
            cp, batch_ids = self._pending.pop(0)
            ids.extend(batch_ids)
            if cp == checkpoint and not any(c == checkpoint for c, _ in self._pending):
                break
        if self._markers:
            ids.extend(self._markers)
            self._markers.clear()
        if not ids:
            return
        ids = self.sql.keep_ids(self.db, self.names, ids)
        if not ids:
            return
        ids.sort()
        # contiguous runs as ranges: one short statement per run, not one bind per row
        runs: list[tuple[int, int]] = []
        for i in ids:
            if runs and i == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
        for k in range(0, len(runs), 200):
            cond = " OR ".join(f"id = {a}" if a == b else f"id BETWEEN {a} AND {b}" for a, b in runs[k:k + 200])
            self.db.execute(f"DELETE FROM {self.names.qcl} WHERE {cond}")


