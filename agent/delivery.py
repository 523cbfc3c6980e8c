"""Delivery in a child process, so capture (decode, map, spool) and delivery (spool read, render, send) use
both cores instead of sharing one interpreter lock.

Nothing about the guarantees changes: the child runs the same `TargetWorker`s, each reading the spool
through its own SQLite connection and moving its cursor only after its target confirmed, exactly as the
threads would in-process. The parent only loses direct access to the workers' live state, so the child
relays it: target state changes, and what was delivered added up (`DeliveryDigest`: latency histogram bucket
counts, uniform latency samples per target and per event type), travel over a queue and are merged into
the parent's `Monitor`, which health and metrics read as before. Added up in the child, not sent per event:
the parent (also the capture process) spent 5% of its time taking in every event's latency.
If the child dies, the parent starts a new one; it resumes from the spool cursors. If the parent dies (even
by SIGKILL), the kernel kills the child (PR_SET_PDEATHSIG), and a child only delivers while it holds
`state_dir/delivery.lock`, so a restarted agent never has two delivery processes writing to one target.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from typing import TYPE_CHECKING

from . import logs, secrets
from .config import Config
from .monitor import Monitor
from .worker import DRAIN_SECONDS, TargetWorker, tune_gc

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

log = logging.getLogger(__name__)

RELAY_SECONDS = 0.1
RESPAWN_SECONDS = 2.0


class DeliveryProcess:
    """Parent side: starts the child, relays its reports into `monitor`, wakes it after each spool append."""

    def __init__(self, cfg: Config, monitor: Monitor, secret_values: list[str]):
        self.cfg, self.monitor, self.secrets = cfg, monitor, secret_values
        self.ctx = mp.get_context("spawn")      # no fork: the parent holds threads and database connections
        self.stop_event = self.ctx.Event()
        self.wake_event = self.ctx.Event()
        self.reports = self.ctx.Queue()
        self.proc: SpawnProcess | None = None
        self._spawned_at = 0.0
        self._relay = threading.Thread(target=self._relay_reports, name="delivery-relay", daemon=True)
        self._closing = False

    def start(self) -> None:
        self._spawn()
        self._relay.start()

    def _spawn(self) -> None:
        self.proc = self.ctx.Process(target=_child_main, name="cdc-agent-delivery",
                                     args=(self.cfg, self.secrets, self.stop_event, self.wake_event, self.reports,
                                           os.getpid()),
                                     daemon=False)
        self.proc.start()
        self._spawned_at = time.monotonic()

    def wake(self) -> None:
        self.wake_event.set()

    def ensure_alive(self) -> None:
        """Called from the capture loop: a delivery child that died is replaced (cursors are in the spool),
        at most every RESPAWN_SECONDS so that a child dying at start does not spin."""
        if self.proc is not None and not self._closing and not self.proc.is_alive():
            if time.monotonic() - self._spawned_at < RESPAWN_SECONDS:
                return
            log.error("delivery process exited with code %s; starting a new one", self.proc.exitcode)
            self._spawn()

    def stop(self, timeout: float) -> None:
        self._closing = True
        self.stop_event.set()
        self.wake_event.set()
        if self.proc is not None:
            self.proc.join(timeout)
            if self.proc.is_alive():
                log.warning("delivery process did not stop in %.0fs; terminating it", timeout)
                self.proc.terminate()
                self.proc.join(5)
        self._relay.join(2)

    def _relay_reports(self) -> None:
        while True:
            try:
                msg = self.reports.get(timeout=0.5)
            except queue.Empty:
                if self._closing and (self.proc is None or not self.proc.is_alive()):
                    return
                continue
            except (EOFError, OSError):
                return
            kind = msg[0]
            if kind == "live":
                _, name, fields = msg
                live = self.monitor.target(name)
                live.state, live.last_error, live.failed = fields
            elif kind == "digest":
                _, name, digest = msg
                self.monitor.merge_digest(name, digest)


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when the parent exits (Linux), and catch the race where the
    parent was already gone. Killing delivery mid-batch is safe: cursors move only after a confirmation."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass                # not Linux: the relay loop below still notices a parent that went away
    if os.getppid() != parent_pid:
        os._exit(0)


def _hold_delivery_lock(cfg: Config) -> int:
    """Block until no other delivery process of this state_dir runs; the lock dies with the process."""
    fd = os.open(cfg.agent.state_dir / "delivery.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _child_main(cfg: Config, secret_values: list[str], stop_event, wake_event, reports, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # the parent handles SIGINT/SIGTERM and tells us through stop_event; a Ctrl-C on the terminal
    # reaches the whole process group, and must not kill delivery mid-batch
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _hold_delivery_lock(cfg)
    for s in secret_values:
        secrets.register(s)
    logs.setup(cfg.agent.log_format, cfg.agent.log_level)
    tune_gc()
    monitor = Monitor(cfg.agent.name, cfg.source.kind)
    monitor.digests = {}            # deliveries add up there until relayed
    monitor.relay = lambda name, digest: reports.put(("digest", name, digest))
    stop = threading.Event()
    workers = [TargetWorker(cfg, t, monitor, stop) for t in cfg.targets]
    # one target: its worker waits on the parent's wake event itself (same wait/set/clear), one hop
    # instead of two: this loop waking, then the worker thread (measured 0.3 ms p50, the tail much longer
    # on a loaded machine); several targets: this loop fans the wake out
    direct = len(workers) == 1
    if direct:
        workers[0].wake = wake_event        # a multiprocessing Event: the same wait/set/clear
    for w in workers:
        w.start()
    sent: dict[str, tuple] = {}

    def relay_live() -> None:
        for name, live in list(monitor.targets.items()):
            fields = (live.state, live.last_error, live.failed)
            if sent.get(name) != fields:
                sent[name] = fields
                reports.put(("live", name, fields))

    while not stop_event.is_set():
        if os.getppid() != parent_pid:
            os._exit(0)                 # the parent is gone without telling us (no PDEATHSIG here)
        if direct:
            stop_event.wait(RELAY_SECONDS)
        elif wake_event.wait(RELAY_SECONDS):
            wake_event.clear()
            for w in workers:
                w.wake.set()
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
    reports.close()
    reports.join_thread()

