"""Private RabbitMQ, Redis and Mosquitto servers for the rabbitmq, redis and mqtt target tests: each on free
ports in its own temp dir, started from the Debian binaries, keeping its data on disk so that a test can stop
and start it again (`restart()`). The machine's own servers (5672, 6379, 1883) serve the plain delivery tests."""

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

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"   # the Debian wrapper would su to the rabbitmq user


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} after {timeout}s: {log.read_text(errors='replace')[-2000:]}")


class _Server:
    """A server process with its data in `self.dir`; start/stop/restart keep the data."""

    name = "server"
    start_timeout = 20.0

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"cdc-{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "server.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self):
        cmd, env = self.command()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                         env={**os.environ, **env}, start_new_session=True)
        _wait_port(self.port, self.start_timeout, self.proc, self.log)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM: a clean stop (the server saves what it keeps on disk); SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def destroy(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitServer(_Server):
    """rabbitmq-server as a node of its own (name, AMQP and distribution ports, mnesia, logs, no plugins);
    takes 5-10 s to start."""

    name = "rabbitmq"
    start_timeout = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.dist_port = free_port()
        (self.dir / "home").mkdir()
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.dir / "enabled_plugins").write_text("[].\n")

    def command(self):
        d = self.dir
        return [RABBITMQ_SERVER], {
            "HOME": str(d / "home"), "RABBITMQ_NODENAME": f"cdctest{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"), "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"), "RABBITMQ_CONF_ENV_FILE": "/dev/null"}

    def start(self):
        super().start()
        # the port opens while the node still boots (it resets connections then): ready when AMQP answers
        import pika
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return self
            except pika.exceptions.AMQPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"


class RedisServer(_Server):
    """redis-server with an append-only file fsynced on every write (`appendfsync always`), no RDB snapshots;
    `settings` add or override redis.conf lines (e.g. proto-max-bulk-len)."""

    name = "redis"

    def __init__(self, **settings: str) -> None:
        super().__init__()
        self.settings = {"bind": "127.0.0.1", "port": str(self.port), "dir": str(self.dir), "save": '""',
                         "appendonly": "yes", "appendfsync": "always", "protected-mode": "no", **settings}
        (self.dir / "redis.conf").write_text("".join(f"{k} {v}\n" for k, v in self.settings.items()))

    def command(self):
        return ["redis-server", str(self.dir / "redis.conf")], {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class MosquittoServer(_Server):
    """mosquitto with persistence in its temp dir (saved on a clean stop, and every `autosave_interval`),
    no limit on messages queued for offline persistent sessions; `settings` add mosquitto.conf lines."""

    name = "mosquitto"

    def __init__(self, **settings: str) -> None:
        super().__init__()
        lines = {"listener": f"{self.port} 127.0.0.1", "allow_anonymous": "true", "persistence": "true",
                 "persistence_location": f"{self.dir}/", "autosave_interval": "1", "max_queued_messages": "0",
                 "max_inflight_messages": "100", **settings}
        (self.dir / "mosquitto.conf").write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
        if os.geteuid() == 0:           # as root, mosquitto drops to its own user, which must write the dir
            shutil.chown(self.dir, "mosquitto")

    def command(self):
        return ["mosquitto", "-c", str(self.dir / "mosquitto.conf")], {}

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def _factory(cls):
    made: list[_Server] = []

    def make(**settings):
        server = cls(**settings).start()
        made.append(server)
        return server

    return made, make


@pytest.fixture
def make_rabbit_server():
    made, make = _factory(RabbitServer)
    yield make
    for s in made:
        s.destroy()


@pytest.fixture
def make_redis_server():
    made, make = _factory(RedisServer)
    yield make
    for s in made:
        s.destroy()


@pytest.fixture
def make_mosquitto_server():
    made, make = _factory(MosquittoServer)
    yield make
    for s in made:
        s.destroy()


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def machine_rabbitmq() -> str:
    """The machine's RabbitMQ (5672, guest/guest); tests use their own queue names."""
    if not _reachable(5672):
        pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (the Debian package's service)")
    return "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(scope="session")
def machine_redis() -> str:
    if not _reachable(6379):
        pytest.fail("Redis is not running on 127.0.0.1:6379 (the Debian package's service)")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def machine_mosquitto() -> str:
    if not _reachable(1883):
        pytest.fail("Mosquitto is not running on 127.0.0.1:1883 (the Debian package's service)")
    return "mqtt://127.0.0.1:1883"
