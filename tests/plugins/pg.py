"""Throwaway PostgreSQL 15 clusters for tests and benchmarks: own temp dir, free port, started from the
installed binaries (postgres refuses to run as root, so as root they run as the `postgres` OS user)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from . import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
_counter = itertools.count()


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PgCluster:
    """One private cluster. `settings` go to postgresql.conf (e.g. wal_level="replica", fsync="on")."""

    def __init__(self, base: Path | None = None, **settings):
        self.dir = Path(tempfile.mkdtemp(prefix="cdc-pg-", dir=base))
        self.data = self.dir / "data"
        self.port = free_port()
        self.settings = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20",
                         "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.dir}'",
                         "fsync": "off", "synchronous_commit": "on", "full_page_writes": "off",
                         "shared_buffers": "128MB", "wal_sender_timeout": "60s", "log_min_messages": "warning",
                         "max_connections": "60"}
        self.settings.update({k: (f"'{v}'" if isinstance(v, str) and not v.replace(".", "").isalnum() else str(v))
                              for k, v in settings.items()})
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_pg_user([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                    "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, capture_output=True)
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in self.settings.items():
                f.write(f"{k} = {v}\n")
        self.running = False

    def start(self) -> PgCluster:
        subprocess.run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", f"-p {self.port}",
                                    "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            subprocess.run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                           capture_output=True)
            self.running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kw):
        import psycopg
        return psycopg.connect(self.dsn(dbname), autocommit=True, **kw)

    def execute(self, sql: str, params=None, dbname: str = "postgres") -> list[tuple]:
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> PgDatabase:
        name = name or f"db{os.getpid()}_{next(_counter)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return PgDatabase(name, self)

    def drop_database(self, name: str) -> None:
        # slots pin a database: drop them first, then the database itself
        for (slot,) in self.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)):
            self.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
            for _ in range(50):
                try:
                    self.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                except Exception:
                    time.sleep(0.1)
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PgDatabase:
    def __init__(self, name: str, cluster: PgCluster):
        self.name, self.cluster = name, cluster

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    def connect(self, **kw):
        return self.cluster.connect(self.name, **kw)

    def execute(self, sql: str, params=None) -> list[tuple]:
        return self.cluster.execute(sql, params, dbname=self.name)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PgCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_db(pg_cluster):
    if not pg_cluster.running:       # a test that stopped the cluster and failed before restarting it
        pg_cluster.start()
    db = pg_cluster.create_database()
    yield db
    if not pg_cluster.running:
        pg_cluster.start()
    pg_cluster.drop_database(db.name)


@pytest.fixture
def make_pg_cluster():
    made: list[PgCluster] = []

    def make(**settings) -> PgCluster:
        c = PgCluster(**settings).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.destroy()
