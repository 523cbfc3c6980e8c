"""The state_dir's locks, for commands that act on the spool next to a running agent (`dlq retry`, `replay`).

A running agent holds `agent.lock` for its whole life (and its delivery process `delivery.lock`). A command
that must not deliver behind its back takes both without waiting: it gets them (no agent runs, and none can
start until the command is done), or learns the pid of the agent that runs.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .statefiles import private_state_dir


@contextmanager
def unless_agent_runs(state_dir: Path) -> Iterator[str | None]:
    """Yields None while holding the agent's locks, or the pid (as text) of the agent that holds them."""
    state_dir = Path(state_dir)
    private_state_dir(state_dir)
    fds: list[int] = []
    try:
        for name in ("agent.lock", "delivery.lock"):
            fd = os.open(state_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fds[0], 32, 0).decode(errors="replace").strip()
                yield pid or "unknown"
                return
        os.ftruncate(fds[0], 0)     # an agent that tries to start meanwhile names this process
        os.pwrite(fds[0], str(os.getpid()).encode(), 0)
        yield None
    finally:
        for fd in fds:
            os.close(fd)


def open_writer_lock(state_dir: Path) -> int:
    """`state_dir/spool.lock`: taken around the spool's hot write transactions (see `exclusive`)."""
    return os.open(Path(state_dir) / "spool.lock", os.O_RDWR | os.O_CREAT, 0o600)


def exclusive(method):
    """Run a Spool write transaction under an flock on `spool.lock` (the Spool's `_writer_lock` fd).

    Capture (spool.append) and delivery (spool.advance) commit to one SQLite file, each commit an fsync. When
    one finds the other mid-commit, SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20 ms... before it looks
    again, so a 2 ms commit could cost the other side 8 ms and more (measured under load: waiting for the lock
    p99 35-89 ms this way, 11-16 ms blocked on an flock, which the kernel ends the moment the holder lets go).
    Writers that do not take it (commands, rare writes) still meet SQLite's own lock and busy timeout, as
    before; the flock is only ever taken before the SQLite lock, so the two cannot deadlock."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        fd = self._writer_lock
        if fd is None:
            return method(self, *args, **kwargs)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return method(self, *args, **kwargs)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    return locked
