"""The delivery child's side of agent/delivery.py: what runs in the process `DeliveryProcess` starts.

It is its own interpreter (exec'd, not forked, not multiprocessing), started as
`python -c BOOT <control fd> <wake fd> <reports fd> <parent pid>`, and it imports only this module and what
delivery needs (worker, spool, adapters, monitor, logs), never agent.cli. Its inputs and its links to the
parent are pipes inherited through `pass_fds`; nothing secret is on its command line:

- control (parent → child): two pickles, the parent's `sys.path` (read by BOOT, before any import of ours)
  and `(Config, secret values)`; then nothing more. The parent closing its end (stop(), or its death) is
  the child's signal to stop.
- wake (parent → child, non-blocking on the parent's side): one byte per spool append. A full pipe means
  the child has wakes enough pending, so the parent drops the byte.
- reports (child → parent): length-prefixed pickles, ("live", target, fields) and ("digest", target,
  message), written under a lock by the workers and the main loop; the parent's relay thread reads them.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import os
import pickle
import select
import signal
import threading
import time
from typing import BinaryIO

from . import logs, secrets
from .config import Config
from .monitor import Monitor
from .worker import DRAIN_SECONDS, TargetWorker, tune_gc

RELAY_SECONDS = 0.1

# Run by the child's interpreter through `-c`. The collector stays off through the imports (tune_gc collects
# once and freezes what they made); SIGINT/SIGTERM are ignored from the first line: the parent handles them
# and tells the child through the control pipe, and a Ctrl-C reaches the whole process group. A parent that
# died before it sent the start data leaves the pipe empty: the child just exits.
BOOT = """\
import gc, signal
gc.disable()
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
import os, pickle, sys
control = os.fdopen(int(sys.argv[1]), "rb")
try:
    sys.path[:] = pickle.load(control)
except (EOFError, pickle.UnpicklingError):
    sys.exit(0)
from agent.delivery_child import main
main(control, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
"""

_HEAD = 4           # a report frame: its length, 4 bytes little-endian, then the pickle


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next report frame's pickle, or None at the end (a frame cut short by the child's death is one)."""
    head = stream.read(_HEAD)
    if len(head) < _HEAD:
        return None
    n = int.from_bytes(head, "little")
    body = stream.read(n)
    return body if len(body) == n else None


class Reports:
    """The child's end of the reports pipe; `put` is called from the worker threads and the main loop."""

    def __init__(self, fd: int):
        self.fd, self.lock = fd, threading.Lock()

    def put(self, msg: tuple) -> None:
        data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
        with self.lock:
            try:
                write_all(self.fd, len(data).to_bytes(_HEAD, "little") + data)
            except OSError:
                pass            # the parent is gone: the main loop sees it and exits


class PipeWake:
    """What a worker waits on in place of its threading.Event when it is the only one: the parent's wake
    pipe itself, so a wake is one hop (parent → worker), not two (parent → main loop → worker: measured
    0.3 ms p50, the tail much longer on a loaded machine). `set` (the stop path here) writes a pipe of its
    own. The Event's meaning is kept: a byte left unread is a wake pending; `clear` reads them all."""

    def __init__(self, fd: int):
        self.fd = fd
        self._own_r, self._own_w = os.pipe()
        for f in (fd, self._own_r, self._own_w):
            os.set_blocking(f, False)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._own_r, select.POLLIN)

    def set(self) -> None:
        try:
            os.write(self._own_w, b"s")
        except BlockingIOError:
            pass                # full: set already

    def is_set(self) -> bool:
        return bool(self._poll.poll(0))

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._poll.poll(None if timeout is None else int(timeout * 1000)))

    def clear(self) -> None:
        for fd, _ in self._poll.poll(0):
            _drain(fd)


def _drain(fd: int) -> bool:
    """Read a non-blocking pipe empty; False once its writer is gone (a parent that died)."""
    while True:
        try:
            if not os.read(fd, 4096):
                return False
        except BlockingIOError:
            return True


# glibc malloc's thresholds for the child (mallopt parameters M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1).
# A file batch's buffers are large: each frame's bodies (~700 kB decompressed), the batch's lines (~3.4 MB for
# 5000 of the drain's events). Left to its dynamic thresholds, malloc gives them back to the kernel when a
# batch frees them (munmap, or a trim of the thread's heap) and the next batch faults in fresh zeroed pages:
# 15-90k page faults per 1M changes in the drain, each ~2.8 µs on this VM (a fault, a page zeroed, the
# host's share), and pages the kernel could have given the file's page cache instead. Fixed: chunks up to
# 32 MB (glibc's largest mmap threshold) come from the heap, and up to 64 MB of free heap is kept, so the
# child reuses the same pages batch after batch; it holds at most its own batches' high-water mark.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 64 << 20


def keep_malloc_pages() -> bool:
    """Set the child's malloc thresholds (above); False where the C library has no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(-3, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(-1, MALLOC_TRIM_THRESHOLD))


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when the parent exits (Linux), and catch the race where the
    parent was already gone. Killing delivery mid-batch is safe: cursors move only after a confirmation."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass                # not Linux: the main loop below still notices a parent that went away
    if os.getppid() != parent_pid:
        os._exit(0)


def _hold_delivery_lock(cfg: Config) -> int:
    """Block until no other delivery process of this state_dir runs; the lock dies with the process."""
    fd = os.open(cfg.agent.state_dir / "delivery.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def main(control: BinaryIO, wake_fd: int, reports_fd: int, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    keep_malloc_pages()
    for fd in (control.fileno(), wake_fd, reports_fd):
        os.set_inheritable(fd, False)      # pass_fds made them inheritable: no process of a target's gets them
    try:
        cfg, secret_values = pickle.load(control)
    except (EOFError, pickle.UnpicklingError):
        os._exit(0)                         # the parent died while it sent them
    _hold_delivery_lock(cfg)
    for s in secret_values:
        secrets.register(s)
    logs.setup(cfg.agent.log_format, cfg.agent.log_level)
    tune_gc()
    gc.enable()                             # BOOT turned it off for the imports
    reports = Reports(reports_fd)
    monitor = Monitor(cfg.agent.name, cfg.source.kind)
    monitor.digests = {}            # deliveries add up there until relayed
    monitor.relay = lambda name, digest: reports.put(("digest", name, digest))
    stop = threading.Event()
    workers = [TargetWorker(cfg, t, monitor, stop) for t in cfg.targets]
    os.set_blocking(wake_fd, False)
    watch = select.poll()
    watch.register(control.fileno(), select.POLLIN)     # EOF (POLLHUP) there: stop
    direct = len(workers) == 1
    if direct:
        workers[0].wake = PipeWake(wake_fd)     # type: ignore[assignment]  # the same wait/set/clear
    else:
        watch.register(wake_fd, select.POLLIN)      # several targets: this loop fans the wake out
    for w in workers:
        w.start()
    sent: dict[str, tuple] = {}

    def relay_live() -> None:
        for name, live in list(monitor.targets.items()):
            fields = (live.state, live.last_error, live.failed)
            if sent.get(name) != fields:
                sent[name] = fields
                reports.put(("live", name, fields))

    stopping = False
    while not stopping:
        for fd, _ in watch.poll(int(RELAY_SECONDS * 1000)):
            if fd == wake_fd:
                _drain(wake_fd)
                for w in workers:
                    w.wake.set()
            else:
                stopping = True         # the parent closed the control pipe: stop() or its death
        if os.getppid() != parent_pid:
            os._exit(0)                 # the parent is gone without telling us (no PDEATHSIG here)
        relay_live()
    stop.set()
    for w in workers:
        w.wake.set()
    deadline = time.monotonic() + DRAIN_SECONDS + 5
    for w in workers:
        w.join(max(0.1, deadline - time.monotonic()))
    for name in list(monitor.digests):
        monitor.relay_digest(name)
    relay_live()
