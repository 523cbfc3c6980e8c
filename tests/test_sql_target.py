"""The `sql` target end to end: a PostgreSQL source replicated into PostgreSQL, MariaDB and SQLite by
`cdc-agent run`, with concurrent writers and SIGKILLs; values the replica cannot hold; reconcile and repair."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess, pid_running, wait_for
from tests.test_pg_pipeline import _writer, cli

AUDIT_PG = """
CREATE TABLE audit (id bigint, version int, op text);
CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN INSERT INTO audit VALUES (OLD.id, -1, 'D'); RETURN OLD; END IF;
  INSERT INTO audit VALUES (NEW.id, NEW.version, left(TG_OP, 1)); RETURN NEW;
END $$;
CREATE TRIGGER audit_items AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit_items();
"""
AUDIT_MARIADB = [
    "CREATE TABLE audit (id bigint, version int, op char(1))",
    "CREATE TRIGGER audit_i AFTER INSERT ON items FOR EACH ROW INSERT INTO audit VALUES (NEW.id, NEW.version, 'I')",
    "CREATE TRIGGER audit_u AFTER UPDATE ON items FOR EACH ROW INSERT INTO audit VALUES (NEW.id, NEW.version, 'U')",
    "CREATE TRIGGER audit_d AFTER DELETE ON items FOR EACH ROW INSERT INTO audit VALUES (OLD.id, -1, 'D')",
]
AUDIT_SQLITE = """
CREATE TABLE audit (id integer, version integer, op text);
CREATE TRIGGER audit_i AFTER INSERT ON items BEGIN INSERT INTO audit VALUES (NEW.id, NEW.version, 'I'); END;
CREATE TRIGGER audit_u AFTER UPDATE ON items BEGIN INSERT INTO audit VALUES (NEW.id, NEW.version, 'U'); END;
CREATE TRIGGER audit_d AFTER DELETE ON items BEGIN INSERT INTO audit VALUES (OLD.id, -1, 'D'); END;
"""


def sql_config(tmp_path: Path, source_dsn: str, tables: list[str], targets: dict[str, str], extra: str = "",
               rules: str = "") -> Path:
    blocks = "".join(f'\n[[targets]]\nname = "{n}"\nkind = "sql"\nurl = "{u}"\n{extra}\n' for n, u in targets.items())
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "erp-sql"
state_dir = "state"

[source]
kind = "postgres"
dsn = "{source_dsn}"
tables = {json.dumps(tables)}
heartbeat_seconds = 1
# the tests count each change applied once; an initial snapshot's reads would be upserts on top of them
snapshot = "never"
{rules}
{blocks}
[health]
listen = "off"
""")
    return cfg


def pg_rows(db, sql: str) -> list[tuple]:
    return [tuple(r) for r in db.execute(sql)]


def test_replicas_equal_the_source_after_sigkills(pg_cluster, pg_db, mariadb_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    replica_pg = pg_cluster.create_database()
    lite = tmp_path / "replica.db"
    cfg = sql_config(tmp_path, pg_db.dsn, ["public.items"], {
        "pg": replica_pg.dsn.replace("postgresql://", "postgresql+psycopg://"),
        "maria": mariadb_db.sqlalchemy_url, "lite": f"sqlite:///{lite.name}"}, extra="batch_size = 300")
    # setup creates the slot, the offsets tables and the replica tables (typed from the source)
    dry = cli("setup", "-c", str(cfg), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("CREATE TABLE cdc_agent_offsets") == 3 and "CREATE TABLE items" in dry.stdout
    done = cli("setup", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    check = cli("check", "-c", str(cfg))
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"\[ok  \] target maria: table items +exists with the 4 columns and key \(id\)", check.stdout)
    replica_pg.execute(AUDIT_PG)
    for s in AUDIT_MARIADB:
        mariadb_db.execute(s)
    with sqlite3.connect(lite) as c:
        c.executescript(AUDIT_SQLITE)

    writers, per_writer = 3, 1500
    expected = [defaultdict(list) for _ in range(writers)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(pg_db.dsn, w, per_writer, expected[w], errors, stop))
               for w in range(writers)]
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    rng = random.Random(11)
    source_sql = "SELECT id, writer, version, pad FROM items ORDER BY id"

    def replicas() -> dict[str, list[tuple]]:
        with sqlite3.connect(lite) as c:
            lite_rows = [tuple(r) for r in c.execute(source_sql)]
        return {"pg": pg_rows(replica_pg, source_sql), "maria": [tuple(r) for r in mariadb_db.execute(source_sql)],
                "lite": lite_rows}
    try:
        for t in threads:
            t.start()
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 2.5))
            wait_for(lambda: agent.children(), 15, what="the delivery process")
            kids = agent.children()
            agent.kill()
            wait_for(lambda kids=kids: not any(pid_running(k) for k in kids), 10, what="the delivery process to exit")
            agent.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        want = pg_rows(pg_db, source_sql)
        assert want
        wait_for(lambda: all(r == want for r in replicas().values()), 120, interval=0.5,
                 what="every replica equal to the source")
        wait_for(lambda: agent.children(), 15, what="the restarted agent to be up (its signal handlers set)")
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()
    got = replicas()
    for name, rows in got.items():
        assert rows == want, name
    # the window a SIGKILL rarely hits, forced: every spool cursor back to the start, as if each batch had been
    # committed in the replicas and the agent killed before its cursor moved; the replicas' own positions
    # (cdc_agent_offsets) make the agent skip all of it
    with sqlite3.connect(tmp_path / "state" / "spool.db") as c:
        assert c.execute("UPDATE targets SET cursor = 0").rowcount == 3
    pg_db.execute("UPDATE items SET version = version + 100000 WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 3)")
    want = pg_rows(pg_db, source_sql)
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: all(r == want for r in replicas().values()), 60, interval=0.5,
                 what="the replicas equal to the source again")
        wait_for(lambda: agent.children(), 15, what="the agent up")
        assert agent.stop() == 0
    # no change applied twice: an (id, version) of an insert/update, or a delete, is in each audit at most once
    audits = {"pg": pg_rows(replica_pg, "SELECT id, version, op FROM audit"),
              "maria": [tuple(r) for r in mariadb_db.execute("SELECT id, version, op FROM audit")]}
    with sqlite3.connect(lite) as c:
        audits["lite"] = [tuple(r) for r in c.execute("SELECT id, version, op FROM audit")]
    for name, rows in audits.items():
        seen = defaultdict(int)
        for i, v, _op in rows:
            seen[(i, v)] += 1
        twice = {k: n for k, n in seen.items() if n > 1}
        assert not twice, (name, list(twice.items())[:5])
        assert len(rows) > len(want), name          # the audit saw the traffic
    # each replica holds its position, equal to what it applied
    for db in (replica_pg,):
        (pos,), = pg_rows(db, "SELECT position FROM cdc_agent_offsets WHERE agent = 'erp-sql' AND target = 'pg'")
        assert pos
    assert "Traceback" not in agent.log(), agent.log()[-3000:]


TYPED_DDL = """
CREATE TABLE typed (id int PRIMARY KEY, amount numeric(20,6), big numeric(38,10), at timestamptz, local timestamp,
                    day date, tod time, span interval, raw bytea, doc jsonb, flag boolean, name varchar(10),
                    score double precision);
"""


def test_types_and_a_value_the_replica_cannot_hold(pg_cluster, pg_db, mariadb_db, tmp_path):
    pg_db.execute(TYPED_DDL.replace("varchar(10)", "text"))
    replica_pg = pg_cluster.create_database()
    replica_pg.execute(TYPED_DDL)
    mariadb_db.execute("CREATE TABLE typed (id int PRIMARY KEY, amount decimal(20,6), big decimal(38,10), "
                       "at datetime(6), local datetime(6), day date, tod time(6), span varchar(100), raw blob, "
                       "doc json, flag boolean, name varchar(5), score double)")
    cfg = sql_config(tmp_path, pg_db.dsn, ["public.typed"], {
        "pg": replica_pg.dsn.replace("postgresql://", "postgresql+psycopg://"), "maria": mariadb_db.sqlalchemy_url})
    assert cli("setup", "-c", str(cfg)).returncode == 0
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        pg_db.execute("""INSERT INTO typed VALUES
          (1, 12345678901234.123456, 1234567890123456789012345678.0123456789, '2026-11-23 10:15:02.123456+02',
           '2026-11-23 10:15:02.5', '2026-02-28', '23:59:59.999999', '1 day 02:03:04.5', '\\x00ff10',
           '{"b": [1, 2.5], "a": "x"}', true, 'abc', 0.1),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'toolongvalue', NULL),
          (3, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, 'ok', NULL)""")
        pg_db.execute("UPDATE typed SET amount = 2.5 WHERE id = 3")
        pg_db.execute("DELETE FROM typed WHERE id = 1")
        pg_db.execute("INSERT INTO typed (id, amount, name) VALUES (1, 99.000001, 'again')")

        last = [(Decimal("99.000001"),)]
        wait_for(lambda: pg_rows(replica_pg, "SELECT amount FROM typed WHERE id = 1") == last and
                 mariadb_db.execute("SELECT amount FROM typed WHERE id = 1") == last, 60, what="the last change")

        def letters():
            out = cli("dlq", "list", "-c", str(cfg), "--json").stdout
            return [json.loads(line) for line in out.splitlines() if line.strip()]
        wait_for(lambda: len(letters()) == 2, 30, what="a dead letter per replica")
        assert agent.stop() == 0
    # 'toolongvalue' fits neither replica's column (varchar(10), varchar(5)): a dead letter in each, with the
    # database's message
    dead = letters()
    assert sorted(d["target"] for d in dead) == ["maria", "pg"] and {d["subject"] for d in dead} == {"2"}, dead
    assert all("too long" in d["reason"].lower() for d in dead), dead
    # everything else was applied, in both, with its value
    for rows in (pg_rows(replica_pg, "SELECT id, amount, name FROM typed ORDER BY id"),
                 [tuple(r) for r in mariadb_db.execute("SELECT id, amount, name FROM typed ORDER BY id")]):
        assert [(r[0], str(r[1]), r[2]) for r in rows] == [(1, "99.000001", "again"), (3, "2.500000", "ok")]
    # the first row's values before its delete: replay the insert alone into fresh rows of both replicas
    pg_db.execute("""INSERT INTO typed VALUES
          (10, 12345678901234.123456, 1234567890123456789012345678.0123456789, '2026-11-23 10:15:02.123456+02',
           '2026-11-23 10:15:02.5', '2026-02-28', '23:59:59.999999', '1 day 02:03:04.5', '\\x00ff10',
           '{"b": [1, 2.5], "a": "x"}', true, 'abc', 0.1)""")
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: mariadb_db.execute("SELECT count(*) FROM typed WHERE id = 10") == [(1,)] and
                 pg_rows(replica_pg, "SELECT count(*) FROM typed WHERE id = 10") == [(1,)], 60, what="row 10")
        assert agent.stop() == 0
    src = pg_rows(pg_db, "SELECT amount::text, big::text, at, local, day, tod, span::text, raw, doc::text, flag, "
                         "name, score FROM typed WHERE id = 10")
    rep = pg_rows(replica_pg, "SELECT amount::text, big::text, at, local, day, tod, span::text, raw, doc::text, "
                              "flag, name, score FROM typed WHERE id = 10")
    assert rep == src
    (m,) = mariadb_db.execute("SELECT amount, big, at, local, day, tod, raw, doc, flag, name, score FROM typed "
                              "WHERE id = 10")
    assert str(m[0]) == "12345678901234.123456" and str(m[1]) == "1234567890123456789012345678.0123456789"
    assert m[2].isoformat() == "2026-11-23T08:15:02.123456"          # the instant, in UTC
    assert m[3].isoformat() == "2026-11-23T10:15:02.500000" and str(m[4]) == "2026-02-28"
    assert bytes(m[6]) == b"\x00\xff\x10" and json.loads(m[7]) == {"a": "x", "b": [1, 2.5]}
    assert m[8] == 1 and m[9] == "abc" and m[10] == 0.1
    # reconcile compares the values across the dialects in one normalised form: only the dead-lettered row
    # differs (and, in MariaDB, the interval kept as its ISO 8601 text in a varchar)
    for target, different in (("pg", []), ("maria", ["10"])):
        out = cli("reconcile", "-c", str(cfg), "--target", target, "--json")
        assert out.returncode == 1 and out.stdout.startswith("["), out.stdout + out.stderr
        (r,) = json.loads(out.stdout)
        assert (r["missing"], r["extra"], r["different"]) == (["2"], [], different), (target, r)


def test_reconcile_finds_and_repairs(pg_cluster, pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text, amount numeric(8,2))")
    lite = tmp_path / "replica.db"
    replica_pg = pg_cluster.create_database()
    cfg = sql_config(tmp_path, pg_db.dsn, ["public.items"], {
        "pg": replica_pg.dsn.replace("postgresql://", "postgresql+psycopg://"), "lite": f"sqlite:///{lite.name}"})
    assert cli("setup", "-c", str(cfg)).returncode == 0
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        pg_db.execute("INSERT INTO items SELECT g, 1, 0, 'p' || g, g / 100.0 FROM generate_series(1, 3000) g")
        wait_for(lambda: pg_rows(replica_pg, "SELECT count(*) FROM items") == [(3000,)], 60,
                 what="the rows in the replica")
        wait_for(lambda: sqlite3.connect(lite).execute("SELECT count(*) FROM items").fetchone() == (3000,), 60,
                 what="the rows in sqlite")
        assert agent.stop() == 0
    same = cli("reconcile", "-c", str(cfg), "--target", "pg")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 missing, 0 extra, 0 different" in same.stdout
    # drift made directly in the replicas: 2 deleted, 3 changed, 1 added
    replica_pg.execute("DELETE FROM items WHERE id IN (5, 2999)")
    replica_pg.execute("UPDATE items SET pad = 'changed' WHERE id IN (10, 1500)")
    replica_pg.execute("UPDATE items SET amount = amount + 0.01 WHERE id = 2000")
    replica_pg.execute("INSERT INTO items VALUES (9999, 9, 9, 'extra', 1)")
    with sqlite3.connect(lite) as c:
        c.execute("DELETE FROM items WHERE id = 7")
        c.execute("UPDATE items SET version = 5 WHERE id = 8")
        c.execute("INSERT INTO items VALUES (0, 0, 0, 'zero', 0)")
    out = cli("reconcile", "-c", str(cfg), "--target", "pg", "--json", "--chunk-rows", "500")
    assert out.returncode == 1, out.stderr
    (r,) = json.loads(out.stdout)
    assert (r["missing"], r["extra"], r["different"]) == (["5", "2999"], ["9999"], ["10", "1500", "2000"])
    # 500-row chunks: 1-500 (5, 10), 1001-1500, 1501-2000, 2501-3000 (2999), after 3000 (9999); each row read once
    assert (r["chunks"], r["chunks_differing"]) == (7, 5)
    assert r["rows_fetched"] == 3000 + 3000 - 2 + 1
    lite_out = json.loads(cli("reconcile", "-c", str(cfg), "--target", "lite", "--json").stdout)[0]
    assert (lite_out["missing"], lite_out["extra"], lite_out["different"]) == (["7"], ["0"], ["8"])
    # the schedule (reconcile_every) in a running agent: drift in health and metrics
    from agent import config as config_mod
    from agent.health import health_report
    from agent.metrics import render_metrics
    from agent.monitor import Monitor
    from agent.reconcile import start_schedule
    from agent.spool import Spool
    cfg.write_text(cfg.read_text().replace('kind = "sql"', 'kind = "sql"\nreconcile_every = "1s"'))
    loaded = config_mod.load(cfg)
    monitor = Monitor("erp-sql", "postgres")
    sched = start_schedule(loaded, monitor)
    try:
        wait_for(lambda: {"pg", "lite"} <= set(monitor.drift), 30, what="a scheduled reconcile of both targets")
    finally:
        sched.shutdown(wait=True)
    spool = Spool(loaded.agent.state_dir, readonly=True)
    try:
        report = health_report(loaded, monitor, spool)
        metrics = render_metrics(loaded, monitor, spool).decode()
    finally:
        spool.close()
    drift = report["targets"]["pg"]["drift"]
    assert (drift["missing"], drift["extra"], drift["different"], drift["error"]) == (2, 1, 3, None), drift
    assert report["targets"]["lite"]["drift"]["missing"] == 1
    assert 'cdc_agent_target_drift_rows{agent="erp-sql",kind="different",target="pg"} 3.0' in metrics
    for target in ("pg", "lite"):
        fixed = cli("reconcile", "-c", str(cfg), "--target", target, "--repair")
        assert fixed.returncode == 1 and "repaired" in fixed.stdout, fixed.stdout + fixed.stderr
        again = cli("reconcile", "-c", str(cfg), "--target", target)
        assert again.returncode == 0, again.stdout
    src = pg_rows(pg_db, "SELECT id, writer, version, pad, amount FROM items ORDER BY id")
    assert pg_rows(replica_pg, "SELECT id, writer, version, pad, amount FROM items ORDER BY id") == src
    assert cli("reconcile", "-c", str(cfg), "--target", "nope").returncode == 2
    assert cli("reconcile", "-c", str(cfg), "--target", "pg", "--table", "public.other").returncode == 2


@pytest.mark.parametrize("change, problem", [
    (('url = "sqlite:///{lite}"', 'url = "not a url"'), "targets[0].url: is not a SQLAlchemy URL"),
    (('url = "sqlite:///{lite}"', 'url = "oracle://u@h/x"'), "targets[0].url: database 'oracle' is not supported"),
    (('url = "sqlite:///{lite}"', 'url = "postgresql+psycopg://u:secretpw@h/x"'), "password written in the file"),
    (('url = "sqlite:///{lite}"', 'url = "sqlite:///{lite}"\ntables = {{"public.nope" = "nope"}}'),
     "targets[0].tables.public.nope: is not captured"),
    (('url = "sqlite:///{lite}"', 'url = "sqlite:///{lite}"\nreconcile_every = "soon"'),
     "targets[0].reconcile_every: must be a duration"),
])
def test_bad_configs_are_one_line_exit_2(tmp_path, change, problem):
    cfg = sql_config(tmp_path, "postgresql://postgres@127.0.0.1:1/x", ["public.items"],
                     {"lite": "sqlite:///{lite}"})
    text = cfg.read_text().replace(change[0], change[1]).replace("{lite}", "r.db").replace("{{", "{").replace("}}", "}")
    cfg.write_text(text)
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert problem in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "secretpw" not in r.stderr


def test_rules_that_drop_columns_are_refused(tmp_path):
    rules = '[[events]]\ntype = "item.changed"\ntable = "public.items"\nfields = ["id", "pad"]\n'
    cfg = sql_config(tmp_path, "postgresql://postgres@127.0.0.1:1/x", ["public.items"], {"lite": "sqlite:///r.db"},
                     rules=rules)
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 2 and "does not carry whole rows" in r.stderr, r.stderr


def test_check_fails_on_a_replica_table_without_the_key(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, pad text)")
    lite = tmp_path / "r.db"
    with sqlite3.connect(lite) as c:
        c.execute("CREATE TABLE items (id integer, pad text)")
    cfg = sql_config(tmp_path, pg_db.dsn, ["public.items"], {"lite": "sqlite:///r.db"})
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 1 and "has no primary key" in r.stdout, r.stdout + r.stderr


def test_sql_server_merge_and_ddl_compile():
    """No SQL Server here: the MERGE upsert and the offsets/replica DDL compiled with SQLAlchemy's mssql dialect."""
    from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table
    from sqlalchemy.dialects import mssql
    from sqlalchemy.schema import CreateTable

    from adapters._sqladmin import replica_type
    from adapters._sqlreplica import Plan, offsets_table, upsert_statement
    from sqlalchemy.dialects import postgresql as pg

    t = Table("customers", MetaData(), Column("customer_id", Integer, primary_key=True), Column("tier", String(20)),
              Column("discount", Numeric(5, 2)), schema="dbo")
    plan = Plan("public.customers", t, ("customer_id",), {}, {})
    from adapters.sql import make_engine
    odbc = make_engine("mssql+pyodbc://cdc@db.example/erp?driver=ODBC+Driver+18+for+SQL+Server").dialect  # qmark
    sql = str(upsert_statement(plan, ("customer_id", "tier", "discount"), "mssql").compile(dialect=odbc))
    assert sql == ("MERGE INTO [dbo].[customers] WITH (HOLDLOCK) AS t USING (VALUES (?, ?, ?)) AS s ([customer_id], "
                   "[tier], [discount]) ON t.[customer_id] = s.[customer_id] WHEN MATCHED THEN UPDATE SET t.[tier] = "
                   "s.[tier], t.[discount] = s.[discount] WHEN NOT MATCHED THEN INSERT ([customer_id], [tier], "
                   "[discount]) VALUES (s.[customer_id], s.[tier], s.[discount]);")
    key_only = str(upsert_statement(plan, ("customer_id",), "mssql").compile(dialect=odbc))
    assert "WHEN MATCHED" not in key_only and "WHEN NOT MATCHED THEN INSERT ([customer_id])" in key_only
    ddl = str(CreateTable(offsets_table(MetaData())).compile(dialect=mssql.dialect()))
    assert "CREATE TABLE cdc_agent_offsets" in ddl and "PRIMARY KEY (agent, target)" in ddl
    src = Table("typed", MetaData(), Column("id", Integer, primary_key=True), Column("code", pg.TEXT),
                Column("at", pg.TIMESTAMP(timezone=True)), Column("raw", pg.BYTEA), Column("doc", pg.JSONB),
                Column("score", pg.DOUBLE_PRECISION(precision=53)), Column("amount", pg.NUMERIC(20, 6)))
    rep = Table("typed", MetaData(), *(Column(c.name, replica_type(c.type, c.primary_key, "mssql"), autoincrement=False,
                                              primary_key=c.primary_key) for c in src.columns), schema="dbo")
    ddl = str(CreateTable(rep).compile(dialect=mssql.dialect()))
    assert "IDENTITY" not in ddl
    for piece in ("dbo.typed", "id INTEGER NOT NULL", "code NVARCHAR(max)", "at DATETIMEOFFSET", "raw VARBINARY(max)",
                  "score DOUBLE PRECISION", "amount NUMERIC(20, 6)", "PRIMARY KEY (id)"):
        assert piece in ddl, (piece, ddl)


def test_json_numbers_beyond_double_range_keep_their_digits(tmp_path):
    """A jsonb value like 1e400 travels as written (agent/rawjson.py); the replica's json column gets that text."""
    from types import SimpleNamespace

    from adapters.sql import SqlOptions, SqlTarget
    from agent.interfaces import SpooledEvent
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE docs (id integer PRIMARY KEY, doc json, amount numeric)")
    opts = SqlOptions(url=f"sqlite:///{db}", tables={"public.docs": "docs"}, offsets_agent="t")
    target = SqlTarget(SimpleNamespace(name="lite", options=opts))
    assert target.open() is None
    body = (b'{"source": "cdc-agent://t/public.docs", "data": {"op": "insert", "key": {"id": 1}, "before": null, '
            b'"after": {"id": 1, "doc": {"big": 1e400, "n": 123456789012345678901234567890}, "amount": "0.1"}}}')
    assert target.send([SpooledEvent(1, "e1", "row.public.docs", "1", body, 0.0, "0001")]).rejected == []
    target.close()
    assert target.open() == "0001"
    target.close()
    with sqlite3.connect(db) as c:
        (doc,), = c.execute("SELECT doc FROM docs")
    assert doc == '{"big":1e400,"n":123456789012345678901234567890}'
