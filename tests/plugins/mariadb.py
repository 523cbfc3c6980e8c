"""Throwaway MariaDB 10.11 servers for tests and benchmarks: own temp dir, free port, row binlog with full
images and full metadata, GTID, started from the installed binaries (as the `mysql` OS user when root)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from . import free_port

_counter = itertools.count()


class MariaDbServer:
    def __init__(self, base: Path | None = None, server_id: int = 1, **options):
        self.dir = Path(tempfile.mkdtemp(prefix="cdc-maria-", dir=base))
        self.data = self.dir / "data"
        self.socket = str(self.dir / "mysqld.sock")
        self.port = free_port()
        self.options = {"log-bin": "mysql-bin", "binlog-format": "ROW", "binlog-row-image": "FULL",
                        "binlog-row-metadata": "FULL", "server-id": str(server_id),
                        "innodb-flush-log-at-trx-commit": "2", "sync-binlog": "0",
                        "innodb-buffer-pool-size": "128M", "skip-name-resolve": None,
                        "character-set-server": "utf8mb4", "collation-server": "utf8mb4_general_ci",
                        "log-error": str(self.dir / "error.log"), "max-connections": "200"}
        self.options.update({k.replace("_", "-"): v for k, v in options.items()})
        self.proc: subprocess.Popen | None = None
        self.user = ["--user=mysql"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
                        "--auth-root-authentication-method=normal", "--skip-test-db", *self.user],
                       check=True, capture_output=True)

    def _args(self) -> list[str]:
        # its own tmpdir: temp tables in the shared /tmp can be swept away by whatever cleans /tmp meanwhile
        tmp = self.dir / "tmp"
        tmp.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(tmp, "mysql", "mysql")
        args = ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}", f"--tmpdir={tmp}",
                "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.dir}/mysqld.pid", *self.user]
        for k, v in self.options.items():
            args.append(f"--{k}" if v is None else f"--{k}={v}")
        return args

    def start(self, timeout: float = 60) -> MariaDbServer:
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return self
            except Exception as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "error.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"mariadbd did not start:\n{log}") from e
                time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait(30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, db: str | None = None, **kw):
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", database=db,
                               autocommit=True, charset="utf8mb4", **kw)

    def execute(self, sql: str, params=None, db: str | None = None) -> list[tuple]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def url(self, db: str = "", user: str = "root", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"mysql://{auth}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str | None = None) -> MariaDatabase:
        name = name or f"db{os.getpid()}_{next(_counter)}"
        self.execute(f"CREATE DATABASE `{name}`")
        return MariaDatabase(name, self)


class MariaDatabase:
    def __init__(self, name: str, server: MariaDbServer):
        self.name, self.server = name, server

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def sqlalchemy_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.server.port}/{self.name}"

    def connect(self, **kw):
        return self.server.connect(self.name, **kw)

    def execute(self, sql: str, params=None) -> list[tuple]:
        return self.server.execute(sql, params, db=self.name)


@pytest.fixture(scope="session")
def mariadb_server():
    server = MariaDbServer().start()
    yield server
    server.destroy()


@pytest.fixture
def mariadb_db(mariadb_server):
    if not mariadb_server.running:
        mariadb_server.start()
    db = mariadb_server.create_database()
    yield db
    if not mariadb_server.running:
        mariadb_server.start()
    mariadb_server.execute(f"DROP DATABASE IF EXISTS `{db.name}`")


@pytest.fixture
def make_mariadb_server():
    made: list[MariaDbServer] = []

    def make(**options) -> MariaDbServer:
        s = MariaDbServer(**options).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.destroy()
