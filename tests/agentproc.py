"""Running `cdc-agent` as a real process in tests, and checking what a file target received."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


class AgentProcess:
    """`cdc-agent run -c CONFIG` in a subprocess; its log goes to `log_path` (appended across restarts)."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None):
        self.config, self.log_path = Path(config), Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        log.close()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the agent drains, checkpoints and exits. A process started a moment ago may still
        be inside the interpreter's start-up, before any of its code runs (SIGTERM then kills it: -15), so
        wait until it has said it started; from then on its handler turns SIGTERM into a clean stop."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline and not self._has_started():
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def _has_started(self) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_offset", 0))
                return b" started: source " in f.read()
        except OSError:
            return False

    def children(self) -> list[int]:
        """Pids of the agent's child processes (the delivery process)."""
        if not self.alive():
            return []
        try:
            return [int(c) for c in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.alive():
            self.kill()


def random_transactions(w: int, n_changes: int, expected: dict):
    """Writer `w`'s workload for the crash tests: transactions of 1-40 inserts, updates and deletes on rows of
    its own key range of `items (id, writer, version, pad)`, as lists of (sql, params) with %s placeholders.
    Records in `expected[subject]` what each subject must receive, in order."""
    import random
    rng = random.Random(w)
    done, live, next_id = 0, [], w * 10_000_000
    while done < n_changes:
        txn = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.5 or not live:
                next_id += 1
                txn.append(("INSERT INTO items VALUES (%s, %s, 0, %s)", (next_id, w, "x" * rng.randint(0, 50))))
                live.append(next_id)
                expected[str(next_id)].append(("insert", 0))
            elif r < 0.9:
                k = rng.choice(live)
                v = len(expected[str(k)])
                txn.append(("UPDATE items SET version = %s WHERE id = %s", (v, k)))
                expected[str(k)].append(("update", v))
            else:
                k = live.pop(rng.randrange(len(live)))
                txn.append(("DELETE FROM items WHERE id = %s", (k,)))
                expected[str(k)].append(("delete", None))
            done += 1
            if done >= n_changes:
                break
        yield txn


def pid_running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_events(path: Path, final: bool = False) -> list[dict]:
    """The events in a file target's output. While the agent runs, the last line may be unterminated (a
    write in progress, or a kill mid-write that the file target cuts on its next open): it is left out.
    `final=True`, for reads after the agent stopped: every line must be whole."""
    if not Path(path).exists():
        return []
    data = Path(path).read_bytes()
    if not final:
        data = data[:data.rfind(b"\n") + 1]
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def check_delivery(events: list[dict]) -> dict[str, list[dict]]:
    """At-least-once checks on what a target received:
    - a redelivered event is byte-for-byte the same event (same id, same content);
    - per subject (and source table), first deliveries arrive in source position order.
    Returns the first deliveries grouped by (source, subject)."""
    by_id: dict[str, dict] = {}
    firsts: dict[str, list[dict]] = defaultdict(list)
    for ev in events:
        seen = by_id.get(ev["id"])
        if seen is not None:
            assert seen == ev, f"event {ev['id']} was redelivered with different content"
            continue
        by_id[ev["id"]] = ev
        firsts[ev["source"] + "#" + ev["subject"]].append(ev)
    for subject, evs in firsts.items():
        positions = [e["position"] for e in evs]
        assert positions == sorted(positions), f"events of subject {subject} out of order"
    return firsts


def check_random_transactions(events: list[dict], expected: list[dict]) -> None:
    """What `random_transactions` writers did (one `expected` dict per writer) is exactly what arrived: per
    subject, the first deliveries are the writer's (op, version) history, in order; nothing missing, nothing
    extra."""
    firsts = check_delivery(events)
    got = {key.split("#", 1)[1]: [(e["data"]["op"], (e["data"]["after"] or {}).get("version")) for e in evs]
           for key, evs in firsts.items()}
    want = {k: v for exp in expected for k, v in exp.items()}
    missing = [k for k in want if got.get(k) != want[k]]
    assert not missing, (f"{len(missing)} subjects differ, e.g. {missing[0]}: got {got.get(missing[0])}, "
                         f"want {want[missing[0]]}")
    assert set(got) == set(want)
