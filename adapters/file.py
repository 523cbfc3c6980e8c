"""File target: JSON lines, one event per line, appended; a batch counts as delivered only after
flush and fsync (CONTRACT §7).

Once a batch is fsynced, its bytes are dropped from the OS page cache (posix_fadvise DONTNEED; option
`keep_in_page_cache` keeps them): the agent never reads them back, and filling the cache with them cost the
kernel more than the write itself (a fresh page per 4 kB, on a VM one the host must fault in as well; the
drained pages are clean, so the next batch's write reuses them: docs/performance.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters import TargetKind, preflight
from agent import timing
from agent.changes import CheckItem
from agent.errors import TargetUnavailable
from agent.interfaces import DeliveryResult, SpooledEvent
from agent.options import ConfigPath, option

if TYPE_CHECKING:
    from agent.config import TargetSettings


@dataclass(frozen=True)
class FileOptions:
    path: ConfigPath = option(writes=True,
                              help="the JSON-lines file events are appended to (relative to agent.toml's folder)")
    keep_in_page_cache: bool = option(False, help="keep what was written in the OS page cache; by default each "
                                                  "batch is dropped from it once fsynced (a reader tailing the "
                                                  "file then reads it from disk)")


class FileTarget:
    def __init__(self, settings: TargetSettings):
        self.name = settings.name
        self.path = settings.options.path
        self.fd: int | None = None
        self.drop_cache = not settings.options.keep_in_page_cache and hasattr(os, "posix_fadvise")
        self.end = 0                # where the next batch starts (the file's size: it is only appended to)

    def open(self) -> None:
        """The file holds no position of its own: the spool cursor decides what comes next."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)   # events are row data: private
            self._drop_torn_tail()
            self.end = os.fstat(self.fd).st_size
        except OSError as e:
            raise TargetUnavailable(f"cannot open {self.path}: {e.strerror}") from None

    def _drop_torn_tail(self) -> None:
        """A crash mid-write (disk full, power loss) can leave a partial last line. It was never
        acknowledged, so it will be sent again: cut it off rather than leave a broken JSON line."""
        assert self.fd is not None                # open() sets it first
        size = os.fstat(self.fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            pos = size
            while pos > 0:
                step = min(65536, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    end = pos - step + nl + 1
                    break
                pos -= step
            else:
                end = 0
        if end != size:
            os.truncate(self.path, end)

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        self.send_lines(b"\n".join(e.body for e in events) + b"\n")
        return DeliveryResult()

    def send_lines(self, data: bytes) -> None:
        """Append `data`, whole JSON lines, and fsync. The worker calls this directly with lines joined from
        the spool's frames when the bodies go out as spooled (agent/worker.py, `TargetWorker._send_lines`)."""
        if self.fd is None:
            self.open()
        fd = self.fd
        assert fd is not None                     # open() sets it or raises
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if timing.ENABLED:
                timing.note("written")
            os.fsync(fd)
        except OSError as e:
            self.close()
            raise TargetUnavailable(f"cannot write {self.path}: {e.strerror}") from None
        start, self.end = self.end, self.end + len(data)
        if self.drop_cache:
            try:        # advice only: clean (fsynced) pages go, a failure changes nothing delivered
                os.posix_fadvise(fd, start, len(data), os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_file_target(settings: TargetSettings) -> list[CheckItem]:
    """Whether the file can be opened for appending, or created: its folder (or the nearest one that exists)
    must be a directory this user can write. Checked, not tried: check creates nothing."""
    path, name = settings.options.path, f"target {settings.name}"
    if path.exists() or path.is_symlink():
        if path.is_dir():
            return [CheckItem(name, False, f"{path} is a directory", "set path to a file in it")]
        if not path.is_file():
            return [CheckItem(name, False, f"{path} is not a regular file (a FIFO or device would block or "
                                           "lose events)", "set path to a regular file")]
        if not os.access(path, os.W_OK):
            return [CheckItem(name, False, f"{path} is not writable by this user", f"chmod u+w {path}, or run "
                                                                                    "the agent as its owner")]
        return [CheckItem(name, True, f"appends to {path}")]
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return [CheckItem(name, False, f"cannot create {path.parent}: {folder} is not a directory",
                          "set path to a file in a directory")]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [CheckItem(name, False, f"cannot create {path}: {folder} is not writable by this user",
                          f"create {path.parent} writable for the agent's user, or choose another path")]
    return [CheckItem(name, True, f"will create {path}")]


# a file batch costs one fsync (and its cursor one SQLite commit), so files take larger batches than network
# targets: as many as one capture batch (source.batch_size), so a backlog costs one fsync per 5000 events,
# not per 1000 (only a backlog fills a batch: at a steady rate each batch is what was spooled since the last)
KIND = TargetKind(options=FileOptions, target=FileTarget, batch_size=5000,
                  admin=preflight(check_file_target))     # check: the file can be written
