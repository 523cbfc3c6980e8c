"""Delivery in a child process, so capture (decode, map, spool) and delivery (spool read, render, send) use
both cores instead of sharing one interpreter lock.

Nothing about the guarantees changes: the child runs the same `TargetWorker`s, each reading the spool
through its own SQLite connection and moving its cursor only after its target confirmed, exactly as the
threads would in-process. The parent only loses direct access to the workers' live state, so the child
relays it: target state changes, and what was delivered added up (`DeliveryDigest`: latency histogram bucket
counts, uniform latency samples per target and per event type), travel over a pipe and are merged into
the parent's `Monitor`, which health and metrics read as before. Added up in the child, not sent per event:
the parent (also the capture process) spent 5% of its time taking in every event's latency.
If the child dies, the parent starts a new one; it resumes from the spool cursors. If the parent dies (even
by SIGKILL), the kernel kills the child (PR_SET_PDEATHSIG), and a child only delivers while it holds
`state_dir/delivery.lock`, so a restarted agent never has two delivery processes writing to one target.

How the child is started: `subprocess.Popen` of a fresh interpreter running agent/delivery_child.py's BOOT,
with three pipes passed as fds (that module's docstring has what goes over them). Not multiprocessing's
spawn: its Events and Queue are named semaphores, which start multiprocessing's resource tracker, a third
interpreter (~20-30 ms of CPU per agent start), and its child imports the parent's main module (agent.cli,
~40 ms) before anything of delivery's. Not a fork: the parent holds threads (the health server, the relay,
after a respawn the source's heartbeat) and SQLite and libpq connections when the child starts, and a
forked child would inherit their held locks and, for SQLite, a lock state the kernel does not share.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import time

from .config import Config
from .delivery_child import BOOT, read_frame, write_all
from .monitor import Monitor

log = logging.getLogger(__name__)

RESPAWN_SECONDS = 2.0
RELAY_JOIN_SECONDS = 2.0


class DeliveryProcess:
    """Parent side: starts the child, relays its reports into `monitor`, wakes it after each spool append."""

    def __init__(self, cfg: Config, monitor: Monitor, secret_values: list[str]):
        self.cfg, self.monitor, self.secrets = cfg, monitor, secret_values
        self.proc: subprocess.Popen | None = None
        self._control = self._wake = -1           # the parent's ends of the current child's pipes
        self._spawned_at = 0.0
        self._relay: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        self._close_pipes()
        if self._relay is not None:     # the last child's reports, read to their end before a new one's
            self._relay.join(RELAY_JOIN_SECONDS)
        control_r, control_w = os.pipe()
        wake_r, wake_w = os.pipe()
        reports_r, reports_w = os.pipe()
        os.set_blocking(wake_w, False)
        fds = (control_r, wake_r, reports_w)
        try:
            # the environment is the parent's, as multiprocessing's child had it: a secret given through a
            # ${NAME} is in the parent's environment already; the config, with its secrets, goes over the pipe
            args = [sys.executable, "-c", BOOT, *map(str, fds), str(os.getpid())]
            self.proc = subprocess.Popen(args, pass_fds=fds, stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (control_w, wake_w, reports_r):
                os.close(fd)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self._spawned_at = time.monotonic()
        self._control, self._wake = control_w, wake_w
        self._relay = threading.Thread(target=self._relay_reports, args=(os.fdopen(reports_r, "rb"),),
                                       name="delivery-relay", daemon=True)
        self._relay.start()
        start = pickle.dumps(sys.path) + pickle.dumps((self.cfg, self.secrets), pickle.HIGHEST_PROTOCOL)
        try:
            write_all(control_w, start)     # blocks only while the child has not read: as spawn's did
        except OSError as e:                # the child died at once: ensure_alive starts another
            log.error("delivery process did not take its start data: %s", e)

    def _close_pipes(self) -> None:
        for fd in (self._control, self._wake):
            if fd >= 0:
                os.close(fd)
        self._control = self._wake = -1

    def wake(self) -> None:
        try:
            os.write(self._wake, b"w")
        except OSError:
            pass        # full: the child has wakes pending; gone: ensure_alive replaces it

    def ensure_alive(self) -> None:
        """Called from the capture loop: a delivery child that died is replaced (cursors are in the spool),
        at most every RESPAWN_SECONDS so that a child dying at start does not spin."""
        if self.proc is not None and not self._closing and self.proc.poll() is not None:
            if time.monotonic() - self._spawned_at < RESPAWN_SECONDS:
                return
            log.error("delivery process exited with code %s; starting a new one", self.proc.returncode)
            self._spawn()

    def stop(self, timeout: float) -> None:
        self._closing = True
        if self._control >= 0:
            os.close(self._control)           # the child's signal to stop
            self._control = -1
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # SIGKILL: the child ignores SIGTERM (a Ctrl-C or kill of the process group is the parent's)
                log.warning("delivery process did not stop in %.0fs; terminating it", timeout)
                self.proc.kill()
                self.proc.wait(5)
        self._close_pipes()
        if self._relay is not None:
            self._relay.join(RELAY_JOIN_SECONDS)

    def _relay_reports(self, stream) -> None:
        """One child's reports, until its end of the pipe closes (it exited)."""
        with stream:
            while (frame := read_frame(stream)) is not None:
                try:
                    self._take(pickle.loads(frame))
                except Exception:
                    # a bug, reported; the reading goes on: a reader that stopped would leave the child
                    # blocked on a full pipe, its deliveries with it
                    log.exception("a report of the delivery process could not be taken in")

    def _take(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "live":
            _, name, fields = msg
            live = self.monitor.target(name)
            live.state, live.last_error, live.failed = fields
        elif kind == "digest":
            _, name, digest = msg
            self.monitor.merge_digest(name, digest)
