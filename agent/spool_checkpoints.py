"""WAL checkpoints of the spool on a thread of their own, off the commits of capture and delivery.

SQLite checkpoints a WAL database from inside the COMMIT that takes the WAL past `wal_autocheckpoint`
pages (1000, 4 MB, by default: every 1-2 s at 50,000 changes/s): that commit then copies the WAL's pages into
spool.db and fsyncs it, milliseconds on top of its own fsync, and since capture's append and delivery's
cursor commit hold the spool's write lock (agent/statelock.py `exclusive`) around their commit, the other
side waits for the checkpoint too. The agent's own spool connections raise that threshold to a backstop
(`Spool(background_checkpoints=True)`) and this thread checkpoints instead, PASSIVE: it copies the frames
no reader still needs, never waits for a writer and blocks none. What is durable when does not change: a
commit is durable once its WAL frames are synced (synchronous=FULL), checkpointed or not; a checkpoint
syncs the WAL before it copies and spool.db before the WAL is reused (this connection's synchronous=FULL).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_SECONDS = 0.25     # ~200 WAL pages at 50,000 changes/s: small steps, none on a commit


class SpoolCheckpointer(threading.Thread):
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on the spool every CHECKPOINT_EVERY_SECONDS until `stop()`.
    A failure (the file briefly unreadable, a full disk) is logged once and tried again on the next turn;
    the commits' backstop threshold bounds the WAL meanwhile."""

    def __init__(self, state_dir: Path, every: float = CHECKPOINT_EVERY_SECONDS):
        super().__init__(name="spool-checkpoints", daemon=True)
        self.path = Path(state_dir) / "spool.db"
        self.every = every
        self.checkpoints = 0                # how many ran (tests)
        self._stopping = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        db: sqlite3.Connection | None = None
        failing = False
        try:
            while not self._stopping.wait(self.every):
                try:
                    if db is None:
                        # mode=rw: never create a spool of its own (the agent's Spool made the file)
                        db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=0, isolation_level=None,
                                             check_same_thread=False)
                        db.execute("PRAGMA synchronous=FULL")
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                    if failing:
                        log.info("spool checkpoints run again")
                        failing = False
                except sqlite3.Error as e:
                    if "locked" in str(e) or "busy" in str(e):
                        continue            # another connection's checkpoint or recovery: the next turn
                    if not failing:
                        log.warning("spool checkpoint of %s failed (%s); trying again, the spool's commits "
                                    "checkpoint by themselves meanwhile", self.path, e)
                        failing = True
                    if db is not None:
                        db.close()
                        db = None
        finally:
            if db is not None:
                db.close()
