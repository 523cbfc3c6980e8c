"""Two-way sync end to end (CONTRACT §4 no echo, §5 conflicts, §7 `owns`; docs/two-way-sync.md): an ERP and a
CRM database, each with its own `cdc-agent run` process capturing it and writing into the other through a `sql`
target that owns that side's columns. Pairings: ERP PostgreSQL ↔ CRM PostgreSQL (two databases of one
throwaway server), and ERP MariaDB (binlog) ↔ CRM SQLite (trigger capture).

Shown: writers edit ERP-owned columns in the ERP and CRM-owned columns in the CRM at the same time, while each
agent is SIGKILLed once; afterwards every row agrees on every owned column, each agent captured exactly the
changes its own side's writers made (no echo: the other agent's writes are skipped, and counted), and nothing
more is delivered once the writers stop (no ping-pong). Then a CRM user overwrites an ERP-owned column and the
ERP changes it: the ERP's value wins and the conflict is listed with both values, and counted in health and
metrics."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.agentproc import AgentProcess, pid_running, read_events, wait_for
from tests.plugins import free_port
from tests.test_pg_pipeline import cli

ERP_COLS = ("price_tier", "credit_limit")      # the ERP is authoritative for pricing and financial data
CRM_COLS = ("email", "phone")                  # the CRM for contacts
ALL_COLS = ("id",) + ERP_COLS + CRM_COLS
SEED_ROWS = 40
_names = itertools.count()


# ---------------------------------------------------------------- the two kinds of side


class Side:
    """One database of the pair: how a plain user writes to it, what it holds, and its agent's config."""

    name: str                  # agent name
    table: str                 # the captured table's name as [source] tables writes it
    replica_table = "customers"   # the table's name for a sql target writing into this database
    ph = "%s"

    def execute(self, sql: str, params=()) -> int: ...
    def rows(self) -> dict[int, tuple]: ...
    def source_toml(self) -> str: ...
    def target_url(self) -> str: ...


class PgSide(Side):
    table = replica_table = "public.customers"

    def __init__(self, name: str, db):
        self.name, self.db = name, db

    def create(self, full: bool = True) -> None:
        self.db.execute("CREATE TABLE customers (id int PRIMARY KEY, price_tier text, credit_limit int, "
                        "email text, phone text)")
        if full:
            self.db.execute("ALTER TABLE customers REPLICA IDENTITY FULL")

    def execute(self, sql: str, params=()) -> int:
        with psycopg.connect(self.db.dsn, autocommit=True) as c:
            return c.execute(sql, params).rowcount

    def connect(self):
        return _PgWriter(self.db.dsn)

    def rows(self) -> dict[int, tuple]:
        return {r[0]: tuple(r) for r in self.db.execute(f"SELECT {', '.join(ALL_COLS)} FROM customers")}

    def source_toml(self) -> str:
        return f'kind = "postgres"\ndsn = "{self.db.dsn}"\ntables = ["{self.table}"]\nheartbeat_seconds = 1\n'

    def target_url(self) -> str:
        return self.db.dsn.replace("postgresql://", "postgresql+psycopg://")


class _PgWriter:
    def __init__(self, dsn: str):
        self.conn = psycopg.connect(dsn, autocommit=True)

    def execute(self, sql: str, params=()) -> int:
        return self.conn.execute(sql, params).rowcount

    def close(self) -> None:
        self.conn.close()


class MariaSide(Side):
    def __init__(self, name: str, db):
        self.name, self.db = name, db
        self.table = f"{db.name}.customers"

    def create(self) -> None:
        self.db.execute("CREATE TABLE customers (id int PRIMARY KEY, price_tier varchar(40), credit_limit int, "
                        "email varchar(80), phone varchar(40))")

    def execute(self, sql: str, params=()) -> int:
        w = self.connect()
        try:
            return w.execute(sql, params)
        finally:
            w.close()

    def connect(self):
        return _MariaWriter(self.db)

    def rows(self) -> dict[int, tuple]:
        return {r[0]: tuple(r) for r in self.db.execute(f"SELECT {', '.join(ALL_COLS)} FROM customers")}

    def source_toml(self) -> str:
        return (f'kind = "mysql"\ndsn = "{self.db.url}"\ntables = ["{self.table}"]\n'
                f'server_id = {5000 + next(_names)}\n')

    def target_url(self) -> str:
        return self.db.sqlalchemy_url


class _MariaWriter:
    def __init__(self, db):
        self.conn = db.connect()

    def execute(self, sql: str, params=()) -> int:
        with self.conn.cursor() as cur:
            n = cur.execute(sql, params)
        self.conn.commit()
        return n

    def close(self) -> None:
        self.conn.close()


class SqliteSide(Side):
    table = "main.customers"
    ph = "?"

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path

    def create(self) -> None:
        with sqlite3.connect(self.path) as c:
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("CREATE TABLE customers (id integer PRIMARY KEY, price_tier text, credit_limit integer, "
                      "email text, phone text)")

    def execute(self, sql: str, params=()) -> int:
        w = self.connect()
        try:
            return w.execute(sql, params)
        finally:
            w.close()

    def connect(self):
        return _SqliteWriter(self.path)

    def rows(self) -> dict[int, tuple]:
        with sqlite3.connect(self.path, timeout=30) as c:
            return {r[0]: tuple(r) for r in c.execute(f"SELECT {', '.join(ALL_COLS)} FROM customers")}

    def source_toml(self) -> str:
        return f'kind = "trigger"\ndsn = "sqlite:///{self.path.name}"\ntables = ["{self.table}"]\n'

    def target_url(self) -> str:
        return f"sqlite:///{self.path.name}"


class _SqliteWriter:
    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)

    def execute(self, sql: str, params=()) -> int:
        return self.conn.execute(sql.replace("%s", "?"), params).rowcount

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- the pair


def agent_config(folder: Path, me: Side, other: Side, owns: tuple[str, ...], port: int) -> Path:
    cfg = folder / f"{me.name}.toml"
    cfg.write_text(f"""
[agent]
name = "{me.name}"
state_dir = "state-{me.name}"

[source]
{me.source_toml()}
# both sides start equal (seeded before capture was set up): only the changes after it are synced
snapshot = "never"

[[targets]]
name = "other"
kind = "sql"
url = "{other.target_url()}"
tables = {{ "{me.table}" = "{other.replica_table}" }}
owns = {{ "{me.table}" = {json.dumps(list(owns))} }}
batch_size = 200

[[targets]]
name = "log"
kind = "file"
path = "events-{me.name}.jsonl"

[health]
listen = "127.0.0.1:{port}"
""")
    return cfg


class Pair:
    def __init__(self, folder: Path, erp: Side, crm: Side):
        self.folder, self.erp, self.crm = folder, erp, crm
        self.ports = {erp.name: free_port(), crm.name: free_port()}
        self.cfg = {erp.name: agent_config(folder, erp, crm, ERP_COLS, self.ports[erp.name]),
                    crm.name: agent_config(folder, crm, erp, CRM_COLS, self.ports[crm.name])}
        self.agents = {n: AgentProcess(c, folder / f"{n}.log") for n, c in self.cfg.items()}

    def seed(self) -> None:
        for side in (self.erp, self.crm):
            w = side.connect()
            try:
                for i in range(1, SEED_ROWS + 1):
                    w.execute("INSERT INTO customers VALUES (%s, %s, %s, %s, %s)",
                              (i, "std", 1000, f"c{i}@crm.example", f"+1-{i}"))
            finally:
                w.close()

    def setup(self) -> None:
        for name in (self.crm.name, self.erp.name):      # the CRM's triggers first: the ERP agent writes into it
            r = cli("setup", "-c", str(self.cfg[name]))
            assert r.returncode == 0, r.stdout + r.stderr
            r = cli("check", "-c", str(self.cfg[name]))
            assert r.returncode == 0, r.stdout + r.stderr

    def start(self) -> None:
        for a in self.agents.values():
            a.start()
        for n, a in self.agents.items():
            wait_for(lambda a=a: a._has_started() or not a.alive(), 30, what=f"agent {n} to start")
            assert a.alive(), a.log()[-3000:]
            # capture must have fixed where it starts before the writers begin: a binlog source without a
            # checkpoint starts at the server's current position (snapshot = "never"), so a change written
            # before that would never be captured
            wait_for(lambda n=n: self._capturing(n), 30, what=f"agent {n}'s source to be connected")

    def _capturing(self, name: str) -> bool:
        h = self.health(name)
        return bool(h and h["source"]["connected"] and (h["source"]["kind"] != "mysql" or h["source"]["checkpoint"]))

    def health(self, name: str) -> dict | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports[name]}/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None

    def metrics(self, name: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5).text

    def sigkill(self, name: str) -> None:
        a = self.agents[name]
        wait_for(lambda: a.children(), 15, what=f"agent {name}'s delivery process")
        kids = a.children()
        a.kill()
        wait_for(lambda: not any(pid_running(k) for k in kids), 10, what=f"agent {name}'s delivery process to exit")
        a.start()

    def event_ids(self, name: str) -> set[str]:
        return {e["id"] for e in read_events(self.folder / f"events-{name}.jsonl")}

    def agree(self) -> tuple[bool, str]:
        """Every row on both sides, ERP-owned columns as in the ERP, CRM-owned columns as in the CRM."""
        e, c = self.erp.rows(), self.crm.rows()
        if e.keys() != c.keys():
            return False, (f"keys differ: only ERP {sorted(e.keys() - c.keys())[:5]}, "
                           f"only CRM {sorted(c.keys() - e.keys())[:5]}")
        for k in e:
            if e[k][1:3] != c[k][1:3] or e[k][3:5] != c[k][3:5]:
                return False, f"row {k}: ERP {e[k]} CRM {c[k]}"
        return True, ""

    def stop(self) -> None:
        for a in self.agents.values():
            if a.alive():
                assert a.stop() == 0, a.log()[-3000:]

    def kill_all(self) -> None:
        for a in self.agents.values():
            a.kill()


def writer(side: Side, owned: tuple[str, ...], ids: range, seed: int, seconds: float, counts: dict,
           errors: list, key: str) -> None:
    """A plain user of `side` for `seconds`: updates the owned columns of existing rows (each to a value never
    written before), and now and then inserts a new row in its own id range. Counts the row changes made."""
    rng = random.Random(seed)
    w = side.connect()
    n, fresh = 0, iter(ids)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if rng.random() < 0.1:
                i = next(fresh)
                vals = {c: f"{key}{n}" if c != "credit_limit" else n for c in owned}
                cols = ", ".join(("id",) + owned)
                n += w.execute(f"INSERT INTO customers ({cols}) VALUES ({', '.join(['%s'] * (len(owned) + 1))})",
                               (i, *vals.values()))
            else:
                i = rng.randint(1, SEED_ROWS)
                col = rng.choice(owned)
                val = n + 1_000_000 if col == "credit_limit" else f"{key}{n}"
                n += w.execute(f"UPDATE customers SET {col} = %s WHERE id = %s", (val, i))
            time.sleep(rng.uniform(0, 0.004))
    except Exception as e:          # surfaced by the test
        errors.append(repr(e))
    finally:
        w.close()
        counts[key] = n


def run_two_way(pair: Pair, seconds: float, kills: int) -> None:
    erp, crm = pair.erp, pair.crm
    pair.seed()
    pair.setup()
    pair.start()
    counts: dict[str, int] = {}
    errors: list[str] = []
    threads = [threading.Thread(target=writer, args=(erp, ERP_COLS, range(10_000, 20_000), 1, seconds, counts,
                                                     errors, "erp")),
               threading.Thread(target=writer, args=(crm, CRM_COLS, range(20_000, 30_000), 2, seconds, counts,
                                                     errors, "crm"))]
    for t in threads:
        t.start()
    # SIGKILL each agent during the writes, in turn
    order = [erp.name, crm.name] * kills
    for name in order:
        time.sleep(seconds / (len(order) + 1))
        pair.sigkill(name)
    for t in threads:
        t.join(seconds + 60)
    assert not errors, errors
    assert counts["erp"] > 50 and counts["crm"] > 50, counts

    wait_for(lambda: pair.agree()[0], 90, interval=0.5, what="both databases to agree on every owned column")
    # no echo: each agent captured exactly what its own side's writer did, not what the other agent wrote
    wait_for(lambda: len(pair.event_ids(erp.name)) >= counts["erp"] and len(pair.event_ids(crm.name)) >= counts["crm"],
             60, interval=0.5, what="every change in the file targets")
    settled = {n: len(pair.event_ids(n)) for n in (erp.name, crm.name)}
    assert settled == {erp.name: counts["erp"], crm.name: counts["crm"]}, (settled, counts)
    # and nothing more comes once the writers stopped (no ping-pong): the counts stay where they are
    delivered = {n: pair.health(n)["targets"]["other"]["delivered"] for n in (erp.name, crm.name)}
    time.sleep(3)
    assert {n: len(pair.event_ids(n)) for n in (erp.name, crm.name)} == settled
    assert {n: pair.health(n)["targets"]["other"]["delivered"] for n in (erp.name, crm.name)} == delivered
    assert pair.agree() == (True, "")
    for n in (erp.name, crm.name):
        h = pair.health(n)
        assert h["targets"]["other"]["pending"] == 0 and h["targets"]["other"]["dead_lettered"] == 0, h


def conflict_erp_wins(pair: Pair) -> None:
    """A CRM user overwrites an ERP-owned column; then the ERP changes it: the ERP's value is applied, and the
    conflict (both values) is listed and counted."""
    erp, crm = pair.erp, pair.crm
    before = erp.rows()[7][1]
    unowned = pair.health(crm.name)["targets"]["other"]["unowned_changes"]
    assert pair.health(erp.name)["targets"]["other"]["conflicts"] == 0
    crm_ids = len(pair.event_ids(crm.name))
    assert crm.execute("UPDATE customers SET price_tier = %s WHERE id = 7", ("crm-edit",)) == 1
    # the CRM agent captures it (its own user's change) but does not write a column it does not own
    wait_for(lambda: len(pair.event_ids(crm.name)) == crm_ids + 1, 30, what="the CRM agent to capture the edit")
    time.sleep(1)
    assert erp.rows()[7][1] == before
    assert erp.execute("UPDATE customers SET price_tier = %s WHERE id = 7", ("erp-final",)) == 1
    wait_for(lambda: crm.rows()[7][1] == "erp-final", 30, what="the ERP's value in the CRM")
    listed = cli("conflicts", "-c", str(pair.cfg[erp.name]))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    line = [ln for ln in listed.stdout.splitlines() if "crm-edit" in ln]
    assert len(line) == 1 and "erp-final" in line[0] and "price_tier" in line[0], listed.stdout
    h = pair.health(erp.name)
    assert h["targets"]["other"]["conflicts"] == 1, h
    counted = [ln for ln in pair.metrics(erp.name).splitlines() if ln.startswith("cdc_agent_conflicts_total{")]
    assert len(counted) == 1 and 'target="other"' in counted[0] and 'column="price_tier"' in counted[0] \
        and counted[0].endswith(" 1.0"), counted
    # the CRM agent passed over its user's change of a column the CRM does not own, and counted it
    assert pair.health(crm.name)["targets"]["other"]["unowned_changes"] == unowned + 1
    assert pair.agree() == (True, "")


# ---------------------------------------------------------------- the pairings


def pg_pair(pg_cluster, tmp_path: Path) -> Pair:
    n = next(_names)
    erp = PgSide(f"erp{n}", pg_cluster.create_database())
    crm = PgSide(f"crm{n}", pg_cluster.create_database())
    erp.create()
    crm.create()
    return Pair(tmp_path, erp, crm)


def maria_sqlite_pair(mariadb_db, tmp_path: Path) -> Pair:
    n = next(_names)
    erp = MariaSide(f"erp{n}", mariadb_db)
    crm = SqliteSide(f"crm{n}", tmp_path / "crm.db")
    erp.create()
    crm.create()
    return Pair(tmp_path, erp, crm)


def _teardown(pair: Pair) -> None:
    pair.kill_all()
    for cfg in pair.cfg.values():
        cli("teardown", "-c", str(cfg))


def _run(pair: Pair, seconds: float, kills: int) -> None:
    try:
        run_two_way(pair, seconds, kills)
        conflict_erp_wins(pair)
        pair.stop()
        for a in pair.agents.values():
            assert "Traceback" not in a.log(), a.log()[-3000:]
    finally:
        _teardown(pair)


def test_pg_to_pg_converges_without_echo_through_sigkills(pg_cluster, tmp_path):
    _run(pg_pair(pg_cluster, tmp_path), seconds=6, kills=1)


def test_mariadb_to_sqlite_converges_without_echo_through_sigkills(mariadb_db, tmp_path):
    _run(maria_sqlite_pair(mariadb_db, tmp_path), seconds=6, kills=1)


@pytest.mark.slow
@pytest.mark.parametrize("pairing", ["pg", "maria-sqlite"])
def test_two_way_soak(pairing, pg_cluster, mariadb_db, tmp_path):
    pair = pg_pair(pg_cluster, tmp_path) if pairing == "pg" else maria_sqlite_pair(mariadb_db, tmp_path)
    _run(pair, seconds=90, kills=4)


def test_owns_fed_by_a_table_without_full_replica_identity_fails_check_with_the_fix(pg_cluster, tmp_path):
    n = next(_names)
    erp = PgSide(f"erp{n}", pg_cluster.create_database())
    crm = PgSide(f"crm{n}", pg_cluster.create_database())
    erp.create(full=False)
    crm.create()
    pair = Pair(tmp_path, erp, crm)
    r = cli("check", "-c", str(pair.cfg[erp.name]))
    assert r.returncode == 1, r.stdout + r.stderr
    line = [ln for ln in r.stdout.splitlines() if "replica identity public.customers" in ln]
    assert len(line) == 1 and "owns" in line[0] and "other" in line[0], r.stdout
    assert 'fix: ALTER TABLE "public"."customers" REPLICA IDENTITY FULL;' in r.stdout, r.stdout
    # the other side, FULL already, passes that line
    r = cli("check", "-c", str(pair.cfg[crm.name]))
    assert "[ok  ] replica identity public.customers" in r.stdout, r.stdout
    # and once fixed, the first side too
    erp.execute("ALTER TABLE customers REPLICA IDENTITY FULL")
    r = cli("check", "-c", str(pair.cfg[erp.name]))
    assert "[ok  ] replica identity public.customers" in r.stdout, r.stdout
