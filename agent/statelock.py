"""The state_dir's locks, for commands that act on the spool next to a running agent (`dlq retry`, `replay`).

A running agent holds `agent.lock` for its whole life (and its delivery process `delivery.lock`). A command
that must not deliver behind its back takes both without waiting: it gets them (no agent runs, and none can
start until the command is done), or learns the pid of the agent that runs.
"""

from __future__ import annotations

import fcntl
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
