"""Running under systemd (`Type=notify`, packaging/cdc-agent.service): readiness and watchdog pings over
`$NOTIFY_SOCKET`, written by hand (a datagram, no dependency). Outside systemd every call is a no-op.

- READY=1 once the health endpoint listens and capture has started, so `systemctl start` returns when the
  agent really runs and a unit ordered after it can rely on that;
- WATCHDOG=1 from the capture loop at half of `$WATCHDOG_USEC`: a capture loop that hangs (not one that
  waits for a database: that loop still turns) is killed and restarted by systemd;
- STOPPING=1 when a shutdown starts, STATUS= lines that `systemctl status` shows.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]              # abstract socket namespace
        self.address = addr or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        on = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2e6 if on else None
        self._last_ping = 0.0

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall("\n".join(lines).encode())
            return True
        except OSError:
            return False              # systemd went away (or never was): nothing to tell

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining deliveries")

    def watchdog(self) -> None:
        """Call often (every loop turn); pings at most every half watchdog period."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
