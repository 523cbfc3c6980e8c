"""Two-way sync on the `sql` target (issue 16): `owns` writes only the owned columns and the key, `deletes`,
conflicts detected against `before` and recorded exactly once, and the writes marked so that capture on the
target database skips them (PostgreSQL replication origin seen by pgoutput, MariaDB binlog skip flag, SQLite
trigger changelog origin). Real PostgreSQL, MariaDB and SQLite targets; the target is driven directly with
CloudEvents in the contract's form (the end-to-end runs through `cdc-agent run` are below)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from adapters._sqlmark import PREFIX
from adapters.sql import SqlTarget
from agent import conflicts as conflict_store
from agent import config as config_mod
from agent.errors import TargetUnavailable
from agent.interfaces import SpooledEvent
from agent.spool import Spool
from tests.test_pg_pipeline import cli

AGENT = "erp-two"
MARK = f"cdc-agent/{AGENT}"

CONTACTS = {
    "pg": """CREATE TABLE contacts (customer_id int PRIMARY KEY, name text, price_tier varchar(20),
             discount numeric(5,2), changed_at timestamptz, limits jsonb, email text DEFAULT 'crm@example.org')""",
    "maria": """CREATE TABLE contacts (customer_id int PRIMARY KEY, name text, price_tier varchar(20),
                discount decimal(5,2), changed_at datetime(6), limits json, email varchar(100) DEFAULT
                'crm@example.org')""",
    "lite": """CREATE TABLE contacts (customer_id integer PRIMARY KEY, name text, price_tier varchar(20),
               discount numeric(5,2), changed_at datetime, limits json, email text DEFAULT 'crm@example.org')""",
}


def config(tmp_path: Path, url: str, extra: str = "", source_tables=("public.customers",)) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "{AGENT}"
state_dir = "state"

[source]
kind = "postgres"
dsn = "postgresql://cdc@127.0.0.1:1/erp"
tables = {json.dumps(list(source_tables))}

[[targets]]
name = "crm"
kind = "sql"
url = "{url}"
tables = {{ "public.customers" = "contacts" }}
columns = {{ "public.customers.discount_pct" = "discount" }}
owns = {{ "public.customers" = ["price_tier", "discount_pct", "changed_at", "limits"] }}
{extra}

[health]
listen = "off"
""")
    return cfg


class Events:
    """CloudEvents of public.customers in the contract's form, with increasing positions."""

    def __init__(self):
        self.seq = 0

    def make(self, op: str, after: dict | None, before: dict | None = None, changed=None) -> SpooledEvent:
        self.seq += 1
        row = after or before
        assert row is not None
        key = {"customer_id": row["customer_id"]}
        body = {"specversion": "1.0", "id": f"ev{self.seq:06d}", "source": "cdc-agent://erp/public.customers",
                "type": "row.public.customers", "subject": str(key["customer_id"]),
                "data": {"op": op, "key": key, "before": before, "after": after, "changed": changed}}
        return SpooledEvent(self.seq, body["id"], body["type"], body["subject"], orjson.dumps(body), time.time(),
                            f"{self.seq:016X}")


FULL = {"customer_id": 1, "name": "Acme", "price_tier": "silver", "discount_pct": "5.00",
        "changed_at": "2026-11-23T10:15:02.123456Z", "limits": {"b": [1, 2.5], "a": "x"}, "street": "Main St 1"}


class Db:
    """The target database, the same few statements for the three kinds."""

    def __init__(self, kind: str, handle):
        self.kind, self.h = kind, handle

    def run(self, sql: str) -> list[tuple]:
        if self.kind == "lite":
            with sqlite3.connect(self.h) as c:
                return [tuple(r) for r in c.execute(sql)]
        return [tuple(r) for r in self.h.execute(sql)]


@pytest.fixture(params=["pg", "maria", "lite"])
def target_db(request, tmp_path):
    kind = request.param
    if kind == "pg":
        pg = request.getfixturevalue("pg_cluster").create_database()
        db = Db(kind, pg)
        url = pg.dsn.replace("postgresql://", "postgresql+psycopg://")
    elif kind == "maria":
        maria = request.getfixturevalue("mariadb_db")
        db, url = Db(kind, maria), maria.sqlalchemy_url
    else:
        path = tmp_path / "crm.db"
        db, url = Db(kind, str(path)), f"sqlite:///{path}"
    db.run(CONTACTS[kind])
    return db, url


def open_target(cfg: Path) -> SqlTarget:
    conf = config_mod.load(str(cfg))
    Spool(conf.agent.state_dir).close()            # the agent's state exists (the pipeline creates it)
    t = SqlTarget(conf.targets[0])
    t.open()
    return t


def target_settings(target: SqlTarget):
    conf = config_mod.load(str(Path(target.options.state_dir).parent / "agent.toml"))
    return conf.targets[0]


def stored_conflicts(tmp_path: Path) -> list[dict]:
    s = Spool(tmp_path / "state", readonly=True)
    try:
        return conflict_store.listing(s)
    finally:
        s.close()


def test_owned_columns_only_conflicts_recorded_once(target_db, tmp_path):
    db, url = target_db
    cfg = config(tmp_path, url)
    target = open_target(cfg)
    ev = Events()
    try:
        # an insert creates the row with the key and the owned columns; the others get their defaults
        target.send([ev.make("insert", FULL)])
        name, tier, discount, email = db.run("SELECT name, price_tier, discount, email FROM contacts")[0]
        assert (name, tier, Decimal(str(discount)), email) == (None, "silver", Decimal("5.00"), "crm@example.org")

        # the CRM edits its own column (name) and, wrongly, one the ERP owns (price_tier)
        db.run("UPDATE contacts SET name = 'Acme CRM', price_tier = 'platinum' WHERE customer_id = 1")
        # the ERP changes price_tier and discount, and also name and street, which it does not own
        after = {**FULL, "name": "ACME Ltd", "street": "Side St 2", "price_tier": "gold", "discount_pct": "12.50"}
        result = target.send([ev.make("update", after, FULL, ["name", "price_tier", "discount_pct", "street"])])
        assert not result.rejected
        name, tier, discount = db.run("SELECT name, price_tier, discount FROM contacts")[0]
        assert (name, tier, Decimal(str(discount))) == ("Acme CRM", "gold", Decimal("12.50"))   # ERP wins its own
        found = stored_conflicts(tmp_path)
        assert [(c["table"], c["key"], c["column"], c["overwritten"], c["applied"], c["event_id"]) for c in found] \
            == [("public.customers", "1", "price_tier", "platinum", "gold", "ev000002")]
        # nothing is left in the target database's journal once copied
        assert db.run("SELECT count(*) FROM cdc_agent_conflicts") == [(0,)]

        # values equal in the target's value space are no conflict: 12.50 vs DECIMAL 12.5, a timestamp and
        # its UTC DATETIME, JSON with its keys in another order
        same = {**after, "limits": {"a": "x", "b": [1, 2.5]}}
        later = {**same, "price_tier": "bronze", "changed_at": "2026-11-24T08:00:00Z"}
        target.send([ev.make("update", later, same, ["price_tier", "changed_at"])])
        assert db.run("SELECT price_tier FROM contacts") == [("bronze",)]
        assert len(stored_conflicts(tmp_path)) == 1

        # a change of unowned columns only writes nothing (and so gives capture there nothing to skip)
        target.send([ev.make("update", {**later, "street": "Third St"}, later, ["street"])])
        s = Spool(tmp_path / "state", readonly=True)
        assert conflict_store.unowned_counts(s) == {"crm": {("public.customers", "name"): 1,
                                                            ("public.customers", "street"): 2}}
        s.close()

        # an insert of a row that exists at the target (no before): owned columns upserted, no conflict
        db.run("UPDATE contacts SET discount = 99 WHERE customer_id = 1")
        target.send([ev.make("read", later)])
        assert Decimal(str(db.run("SELECT discount FROM contacts")[0][0])) == Decimal("12.50")
        assert len(stored_conflicts(tmp_path)) == 1

        # a delete at the source does not delete the CRM's contact (default with owns)
        target.send([ev.make("delete", None, later)])
        assert db.run("SELECT count(*) FROM contacts") == [(1,)]
    finally:
        target.close()

    out = cli("conflicts", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "public.customers key 1  price_tier: \"platinum\" (set at the target) overwritten by \"gold\"" in out.stdout
    out = cli("conflicts", "-c", str(cfg), "--json", "--target", "crm")
    assert [json.loads(x)["applied"] for x in out.stdout.splitlines()] == ["gold"]
    assert cli("conflicts", "-c", str(cfg), "--target", "nope").returncode == 2


def test_deletes_apply_and_several_changes_in_one_batch(target_db, tmp_path):
    db, url = target_db
    target = open_target(config(tmp_path, url, 'deletes = "apply"'))
    ev = Events()
    try:
        rows = [{**FULL, "customer_id": i} for i in (1, 2, 3)]
        target.send([ev.make("insert", r) for r in rows])
        db.run("UPDATE contacts SET discount = 1.5 WHERE customer_id = 2")
        # one batch: row 2 changed twice at the source (the target's edit is compared with the first before),
        # row 3 deleted
        r2a = {**rows[1], "discount_pct": "6.00"}
        r2b = {**r2a, "discount_pct": "7.00"}
        target.send([ev.make("update", r2a, rows[1], ["discount_pct"]), ev.make("update", r2b, r2a, ["discount_pct"]),
                     ev.make("delete", None, rows[2])])
        assert [(i, Decimal(str(d))) for i, d in db.run("SELECT customer_id, discount FROM contacts ORDER BY 1")] \
            == [(1, Decimal("5.00")), (2, Decimal("7.00"))]
        assert [(c["key"], c["column"], Decimal(c["overwritten"]), c["applied"], c["event_id"])
                for c in stored_conflicts(tmp_path)] == [("2", "discount", Decimal("1.5"), "7.00", "ev000004")]
    finally:
        target.close()


def test_bad_owns_configs(tmp_path, pg_cluster):
    pg = pg_cluster.create_database()
    pg.execute(CONTACTS["pg"])
    url = pg.dsn.replace("postgresql://", "postgresql+psycopg://")
    cfg = config(tmp_path, url, 'deletes = "sometimes"')
    out = cli("check", "-c", str(cfg))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "targets[0].deletes: must be one of apply, ignore" in out.stderr
    cfg.write_text(cfg.read_text().replace('deletes = "sometimes"', 'owns = { "public.orders" = ["status"] }')
                   .replace('owns = { "public.customers"', 'xowns = { "public.customers"').replace("xowns", "#"))
    out = cli("check", "-c", str(cfg))
    assert out.returncode == 2 and "targets[0].owns.public.orders: is not one of this target's tables" in out.stderr
    cfg.write_text(config(tmp_path, url).read_text().replace('"limits"]', '"limitz"]'))
    out = cli("check", "-c", str(cfg))
    assert out.returncode == 1
    assert re.search(r"\[FAIL\] target crm: owns public.customers +replica table contacts has no column limitz\n"
                     r" +fix: fix owns, or add the column", out.stdout), out.stdout
    # the running target says the same (retried, the reason in health), instead of writing other columns
    conf = config_mod.load(str(cfg))
    with pytest.raises(TargetUnavailable, match="owns.public.customers: replica table contacts has no column limitz"):
        SqlTarget(conf.targets[0]).open()


def test_owns_naming_a_column_the_source_lacks(pg_db, pg_cluster, tmp_path):
    pg_db.execute(ERP)
    crm = pg_cluster.create_database()
    crm.execute(CONTACTS["pg"])
    crm.execute("ALTER TABLE contacts ADD COLUMN nickname text")
    cfg = config(tmp_path, crm.dsn.replace("postgresql://", "postgresql+psycopg://"))
    cfg.write_text(cfg.read_text().replace("postgresql://cdc@127.0.0.1:1/erp", pg_db.dsn)
                   .replace('"changed_at", "limits"]', '"nickname"]'))
    out = cli("check", "-c", str(cfg))
    assert out.returncode == 1
    assert re.search(r"\[FAIL\] target crm: owns public.customers +names column\(s\) nickname, which the source table "
                     r"does not have\n +fix: fix owns", out.stdout), out.stdout
    # a malformed owns is a config error: one line, exit 2
    cfg.write_text(cfg.read_text().replace('["price_tier", "discount_pct", "nickname"]', '"price_tier"'))
    out = cli("check", "-c", str(cfg))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "targets[0].owns.public.customers: must be a non-empty array of names, got 'price_tier'" in out.stderr


def test_postgres_marking_needs_the_origin_privilege(pg_cluster, tmp_path):
    pg = pg_cluster.create_database()
    pg.execute(CONTACTS["pg"])
    user = f"crm_{pg.name}"[:60]
    pg.execute(f"CREATE ROLE {user} LOGIN")
    pg.execute(f"GRANT ALL ON SCHEMA public TO {user}; GRANT ALL ON contacts TO {user}")
    url = pg_cluster.dsn(pg.name, user=user).replace("postgresql://", "postgresql+psycopg://")
    cfg = config(tmp_path, url)
    out = cli("check", "-c", str(cfg))
    assert re.search(rf"\[FAIL\] target crm: no-echo mark +{user} may not use replication origins .*\n +fix: GRANT "
                     rf"EXECUTE ON FUNCTION pg_replication_origin_oid\(text\), pg_replication_origin_create\(text\), "
                     rf"pg_replication_origin_session_setup\(text\) TO {user}", out.stdout), out.stdout
    conf = config_mod.load(str(cfg))
    with pytest.raises(TargetUnavailable, match="cannot mark this target's writes with a replication origin"):
        SqlTarget(conf.targets[0]).open()
    pg.execute(f"GRANT EXECUTE ON FUNCTION pg_replication_origin_oid(text), pg_replication_origin_create(text), "
               f"pg_replication_origin_session_setup(text) TO {user}")
    out = cli("check", "-c", str(cfg))
    assert re.search(r"\[ok  \] target crm: no-echo mark +replication origin cdc-agent/erp-two", out.stdout), out.stdout
    target = open_target(cfg)
    try:
        target.send([Events().make("insert", FULL)])
    finally:
        target.close()
    assert pg.execute("SELECT price_tier FROM contacts") == [("silver",)]


def test_postgres_interval_compares_in_the_events_form(pg_cluster, tmp_path):
    pg = pg_cluster.create_database()
    pg.execute(CONTACTS["pg"] + "; ALTER TABLE contacts ADD COLUMN span interval")
    cfg = config(tmp_path, pg.dsn.replace("postgresql://", "postgresql+psycopg://"))
    cfg.write_text(cfg.read_text().replace('"limits"]', '"limits", "span"]'))
    target = open_target(cfg)
    ev = Events()
    try:
        row = {**FULL, "span": "P1DT2H3M4.5S"}
        target.send([ev.make("insert", row)])
        later = {**row, "price_tier": "gold"}
        target.send([ev.make("update", later, row, ["price_tier"])])
        assert stored_conflicts(tmp_path) == []              # 1 day 02:03:04.5 is P1DT2H3M4.5S
        pg.execute("UPDATE contacts SET span = '3 hours'")
        target.send([ev.make("update", {**later, "span": "PT5H"}, later, ["span"])])
        assert [(c["column"], c["overwritten"], c["applied"]) for c in stored_conflicts(tmp_path)] == [
            ("span", "PT3H", "PT5H")]
        assert pg.execute("SELECT span::text FROM contacts") == [("05:00:00",)]
    finally:
        target.close()


# ---------------------------------------------------------------- the marks


def test_postgres_writes_carry_a_replication_origin(pg_cluster, tmp_path):
    pg = pg_cluster.create_database()
    pg.execute(CONTACTS["pg"])
    pg.execute("CREATE PUBLICATION everything FOR TABLE contacts")
    slot = f"peek_{pg.name}"[:60]
    pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    target = open_target(config(tmp_path, pg.dsn.replace("postgresql://", "postgresql+psycopg://")))
    ev = Events()
    try:
        target.send([ev.make("insert", FULL)])
        pg.execute("INSERT INTO contacts (customer_id, name) VALUES (2, 'typed in the CRM')")
        target.send([ev.make("update", {**FULL, "price_tier": "gold"}, FULL, ["price_tier"])])
        # pgoutput: 'B'egin, 'O'rigin (Int64 lsn, name), 'R'elation, 'I'nsert/'U'pdate, 'C'ommit per transaction
        msgs = pg.execute("SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, 'proto_version', "
                          "'1', 'publication_names', 'everything')", (slot,))
        txns: list[list[bytes]] = []
        for (data,) in msgs:
            data = bytes(data)
            if data[:1] == b"B":
                txns.append([])
            txns[-1].append(data)
        marks = []
        for t in txns:
            kinds = [m[:1] for m in t]
            origin = [m[9:-1].decode() for m in t if m[:1] == b"O"]
            writes = [k for k in kinds if k in (b"I", b"U", b"D")]
            if writes:
                marks.append((origin[0] if origin else None, writes))
        # our two batches are marked (the insert, and the update), the CRM's own insert is not
        # (the session may hold <marker>/<target> when a closed session of an earlier test still held the
        # marker's origin on this shared cluster: the backend's exit lags the client's close)
        taken = target.marking.pg_origin if target.marking is not None else None
        assert taken in (MARK, f"{MARK}/crm"), taken
        assert marks == [(taken, [b"I"]), (None, [b"I"]), (taken, [b"U"])], marks
        # trigger capture on this database reads cdc.origin: the target's session carries it
        with target.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_setting('cdc.origin', true)").scalar() == MARK
        # an origin serves one session: a second target of the agent into this database takes <marker>/<target>
        other = SqlTarget(dataclasses.replace(target_settings(target), name="crm2"))
        try:
            other.open()
            assert other.marking is not None and other.marking.pg_origin in (MARK, f"{MARK}/crm2")
            assert other.marking.pg_origin != taken
        finally:
            other.close()
    finally:
        target.close()
        pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_mariadb_writes_carry_the_skip_replication_flag(mariadb_db, tmp_path):
    from agent import binlog
    mariadb_db.execute(CONTACTS["maria"])
    server = mariadb_db.server
    server.execute("FLUSH BINARY LOGS")
    (log_name, *_), = server.execute("SHOW MASTER STATUS")
    # a user with privileges on this database only: MariaDB 10.11 lets any session set skip_replication
    user = f"w{mariadb_db.name}"[:32]
    server.execute(f"CREATE USER '{user}'@'127.0.0.1'")
    server.execute(f"GRANT ALL ON `{mariadb_db.name}`.* TO '{user}'@'127.0.0.1'")
    url = f"mysql+pymysql://{user}@127.0.0.1:{server.port}/{mariadb_db.name}"
    target = open_target(config(tmp_path, url))
    ev = Events()
    try:
        target.send([ev.make("insert", FULL)])
        mariadb_db.execute("INSERT INTO contacts (customer_id, name) VALUES (2, 'typed in the CRM')")
        target.send([ev.make("update", {**FULL, "price_tier": "gold"}, FULL, ["price_tier"])])
        with target.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT @cdc_origin, @@skip_replication").one() == (MARK, 1)
    finally:
        target.close()
    data = (server.data / log_name).read_bytes()
    parser = binlog.BinlogParser()
    rows = []
    for raw in binlog.split_binlog_file(data):
        e = parser.parse(raw)
        if isinstance(e, binlog.Rows) and e.table_map is not None and e.table_map.table == "contacts":
            first = e.rows[0]
            ident = (first[1] if e.op == "update" else first)["customer_id"]
            rows.append((e.op, ident, bool(e.flags & 0x8000)))      # LOG_EVENT_SKIP_REPLICATION_F
    assert rows == [("insert", 1, True), ("insert", 2, False), ("update", 1, True)], rows
    server.execute(f"DROP USER '{user}'@'127.0.0.1'")


def test_sqlite_writes_mark_the_trigger_changelog(tmp_path):
    crm = tmp_path / "crm.db"
    with sqlite3.connect(crm) as c:
        c.execute(CONTACTS["lite"])
    # trigger capture installed on the CRM database by its own agent
    capture = tmp_path / "crm-agent"
    capture.mkdir()
    (capture / "agent.toml").write_text(f"""
[agent]
name = "crm-east"
state_dir = "state"
[source]
kind = "trigger"
dsn = "sqlite:///{crm}"
tables = ["main.contacts"]
[[targets]]
name = "f"
kind = "file"
path = "{tmp_path}/out.jsonl"
[health]
listen = "off"
""")
    out = cli("setup", "-c", str(capture / "agent.toml"))
    assert out.returncode == 0, out.stdout + out.stderr
    work = tmp_path / "erp-agent"
    work.mkdir()
    target = open_target(config(work, f"sqlite:///{crm}"))
    ev = Events()
    try:
        target.send([ev.make("insert", FULL)])
        with sqlite3.connect(crm) as c:
            c.execute("INSERT INTO contacts (customer_id, name) VALUES (2, 'typed in the CRM')")
        target.send([ev.make("update", {**FULL, "price_tier": "gold"}, FULL, ["price_tier"])])
    finally:
        target.close()
    with sqlite3.connect(crm) as c:
        got = [tuple(r) for r in c.execute("SELECT op, json_extract(coalesce(after, before), '$.customer_id'), "
                                           "origin FROM cdc_changelog WHERE op IN ('I', 'U', 'D') ORDER BY id")]
        assert c.execute("SELECT count(*) FROM cdc_changelog_origin").fetchone() == (0,)   # taken out before COMMIT
    assert got == [("I", 1, MARK), ("I", 2, None), ("U", 1, MARK)], got
    assert MARK.startswith(PREFIX)


# ---------------------------------------------------------------- end to end: cdc-agent run


ERP = """CREATE TABLE customers (customer_id int PRIMARY KEY, name text, price_tier text, discount_pct numeric(5,2),
         street text);
         ALTER TABLE customers REPLICA IDENTITY FULL"""


def test_run_conflicts_in_health_metrics_and_a_crash_before_the_record(pg_cluster, pg_db, mariadb_db, tmp_path):
    import urllib.request

    from tests.agentproc import AgentProcess, wait_for
    from tests.plugins import free_port
    from tests.test_sql_target import sql_config
    pg_db.execute(ERP)
    crm_pg = pg_cluster.create_database()
    crm_pg.execute(CONTACTS["pg"])
    mariadb_db.execute(CONTACTS["maria"])
    lite = tmp_path / "crm.db"
    with sqlite3.connect(lite) as c:
        c.execute(CONTACTS["lite"])
    crms = {"pg": Db("pg", crm_pg), "maria": Db("maria", mariadb_db), "lite": Db("lite", str(lite))}
    port = free_port()
    cfg = sql_config(tmp_path, pg_db.dsn, ["public.customers"], {
        "pg": crm_pg.dsn.replace("postgresql://", "postgresql+psycopg://"), "maria": mariadb_db.sqlalchemy_url,
        "lite": f"sqlite:///{lite.name}"}, extra="""tables = { "public.customers" = "contacts" }
columns = { "public.customers.discount_pct" = "discount" }
owns = { "public.customers" = ["price_tier", "discount_pct"] }""")
    cfg.write_text(cfg.read_text().replace('listen = "off"', f'listen = "127.0.0.1:{port}"'))
    out = cli("setup", "-c", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    assert crm_pg.execute("SELECT count(*) FROM cdc_agent_conflicts") == [(0,)]
    check = cli("check", "-c", str(cfg))
    assert check.returncode == 0, check.stdout
    assert re.search(r"\[ok  \] target maria: no-echo mark +skip_replication", check.stdout), check.stdout

    def everywhere(sql: str) -> dict:
        return {n: db.run(sql) for n, db in crms.items()}

    def health() -> dict:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())

    def listed() -> list[dict]:
        got = cli("conflicts", "-c", str(cfg), "--json")
        assert got.returncode == 0, got.stderr
        return [json.loads(x) for x in got.stdout.splitlines()]

    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        pg_db.execute("INSERT INTO customers VALUES (1, 'Acme', 'silver', 5.00, 'Main St 1')")
        wait_for(lambda: all(r == [("silver",)] for r in everywhere("SELECT price_tier FROM contacts").values()),
                 60, what="the insert in every CRM")
        # a CRM user overwrites the ERP-owned price tier (and its own name); then the ERP changes it
        for db in crms.values():
            db.run("UPDATE contacts SET price_tier = 'platinum', name = 'Acme (CRM)' WHERE customer_id = 1")
        pg_db.execute("UPDATE customers SET price_tier = 'gold', street = 'Side St 2' WHERE customer_id = 1")
        wait_for(lambda: all(r == [("gold", "Acme (CRM)")] for r in
                             everywhere("SELECT price_tier, name FROM contacts").values()), 60, what="the ERP's value")
        wait_for(lambda: len(listed()) == 3, 30, what="three conflicts recorded")
        assert sorted((c["target"], c["key"], c["column"], c["overwritten"], c["applied"]) for c in listed()) == [
            (n, "1", "price_tier", "platinum", "gold") for n in ("lite", "maria", "pg")]
        h = health()
        assert {n: (t["conflicts"], t["unowned_changes"]) for n, t in h["targets"].items()} == \
            {"pg": (1, 1), "maria": (1, 1), "lite": (1, 1)}
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for n in crms:
            assert (f'cdc_agent_conflicts_total{{agent="erp-sql",column="price_tier",table="public.customers",'
                    f'target="{n}"}} 1.0') in metrics, metrics
            assert (f'cdc_agent_unowned_changes_total{{agent="erp-sql",column="street",table="public.customers",'
                    f'target="{n}"}} 1.0') in metrics
        # an ERP delete does not delete the CRM contacts (owns: deletes default to ignore)
        pg_db.execute("INSERT INTO customers VALUES (2, 'Beta', 'bronze', 0, 'x')")
        pg_db.execute("DELETE FROM customers WHERE customer_id = 2")
        pg_db.execute("UPDATE customers SET name = 'Acme Ltd' WHERE customer_id = 1")      # unowned only
        wait_for(lambda: all(h["unowned_changes"] == 2 for h in health()["targets"].values()), 30,
                 what="the last change applied")
        assert all(r == [(1,), (2,)] for r in everywhere("SELECT customer_id FROM contacts ORDER BY 1").values())

        # SIGKILL between the target's commit and the conflict record in the agent's state: the state refuses
        # the record (a trigger), so the conflict exists only in the target databases when the agent dies
        spool_db = tmp_path / "state" / "spool.db"
        with sqlite3.connect(spool_db, timeout=30) as c:
            c.execute("CREATE TRIGGER refuse BEFORE INSERT ON conflicts BEGIN SELECT RAISE(ABORT, 'refused'); END")
        for db in crms.values():
            db.run("UPDATE contacts SET discount = 1 WHERE customer_id = 1")
        pg_db.execute("UPDATE customers SET discount_pct = 7 WHERE customer_id = 1")
        wait_for(lambda: all(r == [(1,)] for r in everywhere("SELECT count(*) FROM cdc_agent_conflicts").values()),
                 60, what="the conflicts committed in the targets")
        assert len(listed()) == 3
        wait_for(lambda: agent.log().count("conflicts stay in the target's cdc_agent_conflicts for now") >= 3, 30,
                 what="the refused copies logged")
        kids = agent.children()
        agent.kill()
        for k in kids:
            os.kill(k, signal.SIGKILL)
        with sqlite3.connect(spool_db, timeout=30) as c:
            c.execute("DROP TRIGGER refuse")
        agent.start()
        wait_for(lambda: len(listed()) == 6, 60, what="the conflicts copied after the restart")
        assert all(r == [(0,)] for r in everywhere("SELECT count(*) FROM cdc_agent_conflicts").values())
        assert sorted((c["target"], c["column"], float(c["overwritten"]), float(c["applied"]))
                      for c in listed() if c["column"] == "discount") == \
            [(n, "discount", 1.0, 7.0) for n in ("lite", "maria", "pg")]
        assert all(Decimal(str(r[0][0])) == 7 for r in everywhere("SELECT discount FROM contacts WHERE customer_id = 1")
                   .values())
        # the other window: copied into the state, killed before the target's copy was deleted
        wait_for(lambda: agent.children(), 15, what="the delivery process")
        assert agent.stop() == 0
        ev = next(c for c in listed() if c["target"] == "pg" and c["column"] == "discount")
        crm_pg.execute("INSERT INTO cdc_agent_conflicts VALUES ('erp-sql', 'pg', %s, 'discount', 'public.customers', "
                       "'1', '\"1.00\"', '\"7.00\"', 0)", (ev["event_id"],))
        agent.start()
        wait_for(lambda: crm_pg.execute("SELECT count(*) FROM cdc_agent_conflicts") == [(0,)], 60,
                 what="the target's copy taken")
        assert len(listed()) == 6
        assert health()["targets"]["pg"]["conflicts"] == 2
        # reconcile compares the owned columns only (the CRM's name differs, and is the CRM's), and rows the
        # ERP deleted are no difference when deletes are ignored
        rc = cli("reconcile", "-c", str(cfg), "--target", "maria", "--json")
        assert rc.returncode == 0, rc.stdout + rc.stderr
        mariadb_db.execute("UPDATE contacts SET price_tier = 'tin' WHERE customer_id = 1")
        rc = cli("reconcile", "-c", str(cfg), "--target", "maria", "--repair")
        assert rc.returncode == 1 and "different" in rc.stdout, rc.stdout + rc.stderr
        assert mariadb_db.execute("SELECT customer_id, price_tier, name FROM contacts ORDER BY 1") == [
            (1, "gold", "Acme (CRM)"), (2, "bronze", None)]
        st = cli("status", "-c", str(cfg))
        assert "conflicts: pg 2 (unowned changes passed over: 2), maria 2 (unowned changes passed over: 2), " \
               "lite 2" in st.stdout, st.stdout
        wait_for(lambda: agent.children(), 15, what="the delivery process")
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert "Traceback" not in agent.log(), agent.log()[-3000:]


def test_conflicts_older_than_the_retention_are_pruned(tmp_path):
    """The audit trail of conflicts does not grow without bound: conflicts of the given targets detected
    before the retention go, in limited steps; newer ones, other targets' and the unowned counts stay."""
    from collections import Counter
    spool = Spool(tmp_path / "state")
    now = time.time()

    def row(eid: str, age_days: float) -> dict:
        return {"event_id": eid, "col": "discount", "tbl": "public.customers", "row_key": '{"id":1}',
                "overwritten": "1", "applied": "2", "detected_at": now - age_days * 86400}
    conflict_store.record(spool, "crm", [row(f"old{i}", 100 + i) for i in range(5)] + [row("new", 1)],
                          Counter({("public.customers", "email"): 3}))
    conflict_store.record(spool, "shop", [row("shop-old", 200)], Counter())
    keep = 90 * 86400
    assert conflict_store.prune(spool, ["crm"], keep, limit=3) == 3
    assert conflict_store.prune(spool, ["crm"], keep, limit=3) == 2
    assert conflict_store.prune(spool, ["crm"], keep, limit=3) == 0
    assert [(c["target"], c["event_id"]) for c in conflict_store.listing(spool)] == [("shop", "shop-old"),
                                                                                     ("crm", "new")]
    assert conflict_store.unowned_counts(spool) == {"crm": {("public.customers", "email"): 3}}
    spool.close()
