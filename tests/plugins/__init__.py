"""Pytest plugins, one per real service the suite starts; loaded by tests/conftest.py."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """Another process listens on the port free_port() gave: with the tests in two processes, a server of the
    other one may bind it before the server started for it does. Start again on another port."""


def listener_pids(port: int) -> set[int] | None:
    """The processes holding the socket that listens on 127.0.0.1:port (or 0.0.0.0:port); None when nothing
    listens there. A connection alone would also succeed on another process's listener, and the test would
    then talk to that server."""
    import os
    inode = None
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            addr, hexport = cols[1].split(":")
            if cols[3] == "0A" and int(hexport, 16) == port and addr in ("0100007F", "00000000"):
                inode = f"socket:[{cols[9]}]"
                break
    if inode is None:
        return None
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == inode:
                    pids.add(int(pid))
                    break
            except OSError:
                continue
    return pids


def own_listener(port: int, pid: int, session: bool = False) -> bool | None:
    """Whether process `pid` (session: or a process of the session it leads) listens on the port; None when
    nothing listens there yet. Raises nothing: a listener of another process is False."""
    import os
    pids = listener_pids(port)
    if pids is None:
        return None
    if pid in pids:
        return True
    if session:
        for p in pids:
            try:
                if os.getsid(p) == pid:
                    return True
            except OSError:
                continue
    return False


def crash_workload(n: int) -> int:
    """Changes a crash test's writers make: `n` locally, two fifths in CI (CI=true), where the suite must stay
    well under 15 minutes. The kills, which are what such a test proves, are not scaled."""
    import os
    return n if not os.environ.get("CI") else max(1000, n * 2 // 5)


def property_examples(n: int) -> int:
    """Hypothesis examples for a compiled-vs-pure property test: `n` locally, a quarter in CI (CI=true), where
    the suite must stay well under 15 minutes; CDC_PROPERTY_SCALE overrides the factor (e.g. 4 for a soak)."""
    import os
    scale = float(os.environ.get("CDC_PROPERTY_SCALE") or ("0.25" if os.environ.get("CI") else "1"))
    return max(50, int(n * scale))
