"""The event catalog (agent/catalog.py): the schema it describes is the schema the agent emits (every delivered
event of a workload over all the contract's types validates; a mutated one does not), the AsyncAPI document
is valid AsyncAPI 3.0, and `--check` tells breaking from compatible changes."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import jsonschema

from agent import config
from agent.catalog import build, dumps
from agent.catalog_diff import compare
from tests.agentproc import ROOT, AgentProcess, wait_for
from tests.test_values_differential import MY_COLUMNS, PG_COLUMNS, my_values, pg_values

DATA = Path(__file__).parent / "data"
VALIDATOR = jsonschema.Draft202012Validator


def write_config(tmp_path: Path, kind: str, dsn: str, tables: list[str], rules: str = "", extra_agent: str = "",
                 targets: str = "") -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(f"""[agent]
name = "cat-test"
state_dir = "state"
{extra_agent}

[source]
kind = "{kind}"
dsn = "{dsn}"
tables = [{", ".join(f'"{t}"' for t in tables)}]
snapshot = "never"          # these tests count the events of their own writes
{"heartbeat_seconds = 1" if kind == "postgres" else ""}
{rules}
[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"
{targets}
[health]
listen = "off"
""")
    return p


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def delivered(cfg_path: Path, workload, n_total: int, timeout: float = 90) -> list[dict]:
    """Run the agent; once its source is connected, `workload()` changes rows; the events delivered."""
    out = cfg_path.parent / "out" / "events.jsonl"
    with AgentProcess(cfg_path, cfg_path.parent / "agent.log") as agent:
        try:
            wait_for(lambda: "connected, resuming" in agent.log(), timeout, what="the source to connect")
            workload()
            wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= n_total, timeout,
                     what=f"{n_total} events")
        except AssertionError:
            raise AssertionError(agent.log()[-3000:]) from None
        assert agent.stop() == 0
    # stdlib json: 1e400 in a json column is a valid JSON number (inf here), big integers stay exact
    return [json.loads(line) for line in out.read_bytes().splitlines()]


def assert_all_valid(catalog: dict, events: list[dict]) -> None:
    problems = []
    for e in events:
        assert e["type"] in catalog, e["type"]
        errs = list(VALIDATOR(catalog[e["type"]]).iter_errors(e))
        problems += [f"{e['type']} {list(err.absolute_path)}: {err.message[:200]}" for err in errs]
    assert not problems, "\n".join(problems[:20])


def assert_mutation_rejected(catalog: dict, event: dict, side: str, field: str, value) -> None:
    bad = copy.deepcopy(event)
    bad["data"][side][field] = value
    assert not VALIDATOR(catalog[bad["type"]]).is_valid(bad), (field, value)


PG_RULES = """
[[events]]
type = "vals.flags.changed"
table = "public.vals"
on = ["insert", "update"]
fields = { ident = "id", flag = "b", status = "st" }
values = { st = { N = "new", S = "shipped" } }
"""


def test_postgres_events_validate_against_the_catalog(pg_db, tmp_path):
    cols = ", ".join(f"{c} {t}" for c, t in PG_COLUMNS)
    pg_db.execute(f"CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);"
                  f"CREATE TABLE vals (id int PRIMARY KEY, st char(1) NOT NULL DEFAULT 'N', m mood, dm posint, "
                  f"a2 int[][], {cols})")
    rng = random.Random(7)
    placeholders = ", ".join(f"%s::{t}" for _, t in PG_COLUMNS)

    def insert(ids):
        with pg_db.connect() as conn:
            for i in ids:
                row = pg_values(rng, i)
                conn.execute(f"INSERT INTO vals VALUES (%s, %s, %s, %s, %s, {placeholders})",
                             [i, "NS"[i % 2], ["sad", "happy", None][i % 3], i + 1, [[1, 2], [3, None]]]
                             + [row[c] for c, _ in PG_COLUMNS])
    cfg_path = write_config(tmp_path, "postgres", pg_db.dsn, ["public.vals"], PG_RULES)
    cfg = config.load(cfg_path)
    catalog = build(cfg)
    assert sorted(catalog) == ["vals.flags.changed"]
    # row events: the same table without a rule
    (tmp_path / "rows").mkdir()
    cfg_rows_path = write_config(tmp_path / "rows", "postgres", pg_db.dsn, ["public.vals"])
    cfg_rows = config.load(cfg_rows_path)
    catalog.update(build(cfg_rows))
    assert sorted(catalog) == ["row.public.vals", "vals.flags.changed"]
    schema = catalog["vals.flags.changed"]["properties"]["data"]["properties"]["after"]["properties"]
    assert schema["status"]["enum"] == ["new", "shipped"] and set(schema) == {"ident", "flag", "status"}
    rows = catalog["row.public.vals"]["properties"]["data"]["properties"]["after"]["properties"]
    assert rows["m"]["enum"] == ["sad", "happy", None] and rows["dm"]["type"] == ["integer", "null"]

    def workload(first):
        def run():
            insert(range(first, first + 20))                         # all the edge rows
            pg_db.execute(f"UPDATE vals SET st = 'S', t = 'changed' WHERE id >= {first + 15}")
            pg_db.execute(f"DELETE FROM vals WHERE id >= {first + 18}")
        return run
    # the rule fires on inserts and updates: 20 + 5
    events = delivered(cfg_path, workload(100), 25)
    # row events (the second agent resumes where the slot stands): 20 + 5 + 2
    events += delivered(cfg_rows_path, workload(200), 27)
    assert {e["data"]["op"] for e in events} == {"insert", "update", "delete"}
    assert_all_valid(catalog, events)
    row_event = next(e for e in events if e["type"] == "row.public.vals" and e["data"]["after"]
                     and e["data"]["after"]["i4"] is not None)
    for field, value in (("i4", "12"), ("num", 12.5), ("tstz", "2026-01-01 10:00:00"), ("i2", 70000),
                         ("a_i4", ["x"]), ("m", "angry"), ("u", "not-a-uuid"), ("unknown_column", 1)):
        assert_mutation_rejected(catalog, row_event, "after", field, value)
    rule_event = next(e for e in events if e["type"] == "vals.flags.changed")
    assert_mutation_rejected(catalog, rule_event, "after", "status", "S")       # the raw code, not mapped


MY_WORKLOAD_COLUMNS = [(c, t) for c, t in MY_COLUMNS if t not in ("uuid", "inet4", "inet6")]


def test_mariadb_events_validate_against_the_catalog(mariadb_db, tmp_path):
    # uuid/inet4/inet6: the binlog source sends them as base64 until it reads the catalog's type hints
    # (docs/values.md); the catalog describes the contract's form, so they are left out of this workload
    cols = ", ".join(f"{c} {t}" for c, t in MY_WORKLOAD_COLUMNS)
    mariadb_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {cols})")
    rng = random.Random(7)
    placeholders = ", ".join(["%s"] * (len(MY_WORKLOAD_COLUMNS) + 1))

    def write(ids, more=()):
        conn = mariadb_db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET sql_mode = ''")
                for i in ids:
                    row = my_values(rng, i % 20)
                    cur.execute(f"INSERT INTO vals VALUES ({placeholders})",
                                [i] + [row[c] for c, _ in MY_WORKLOAD_COLUMNS])
                for sql in more:
                    cur.execute(sql)
            conn.commit()
        finally:
            conn.close()
    cfg_path = write_config(tmp_path, "mysql", mariadb_db.url, [f"{mariadb_db.name}.vals"],
                            rules="server_id = 7311\n")      # goes in [source]
    catalog = build(config.load(cfg_path))
    after = catalog[f"row.{mariadb_db.name}.vals"]["properties"]["data"]["properties"]["after"]["properties"]
    assert after["e"]["enum"] == ["a", "bé", "", None] and after["j"] == {"description": after["j"]["description"]}
    assert after["tiu"]["maximum"] == 255 and after["biu"]["maximum"] == 2**64 - 1
    # 20 inserts, 5 updates, 2 deletes from the binlog
    events = delivered(cfg_path, lambda: write(range(100, 120), ["UPDATE vals SET vc = 'changed' WHERE id < 105",
                                                                  "DELETE FROM vals WHERE id >= 118"]), 27)
    assert {e["data"]["op"] for e in events} == {"insert", "update", "delete"}
    assert_all_valid(catalog, events)
    ev = next(e for e in events if e["data"]["after"] and e["data"]["after"]["d"] is not None)
    for field, value in (("ti", 200), ("d", 1.5), ("dtm6", "2026-01-01 10:00:00"), ("e", "zz"), ("bl", "***")):
        assert_mutation_rejected(catalog, ev, "after", field, value)


def test_asyncapi_document_is_valid_asyncapi_3(pg_db, tmp_path, monkeypatch):
    pg_db.execute("CREATE TABLE customers (id int PRIMARY KEY, tier text); CREATE TABLE outbox "
                  "(id bigserial PRIMARY KEY, event_type text NOT NULL, aggregate_id text NOT NULL, payload jsonb)")
    monkeypatch.setenv("CRM_TOKEN", "s3cret-token")
    cfg_path = write_config(tmp_path, "postgres", pg_db.dsn, ["public.customers", "public.outbox"], """
[[events]]
type = "customer.tier.changed"
table = "public.customers"

[[outbox]]
table = "public.outbox"
""", targets="""
[[targets]]
name = "crm"
kind = "http"
url = "https://crm.example.com:8443/hooks/erp?tenant=1"
headers = { Authorization = "Bearer ${CRM_TOKEN}" }
events = ["customer.*"]
""")
    r = cli("catalog", "-c", cfg_path, "--format", "asyncapi")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    spec = json.loads((DATA / "asyncapi-3.0.0.schema.json").read_text())
    jsonschema.Draft7Validator(spec).validate(doc)
    assert "s3cret" not in r.stdout and "tenant" not in r.stdout
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {"out/events.jsonl", "/hooks/erp"}
    assert doc["servers"]["crm"]["host"] == "crm.example.com:8443"
    crm = [c for c in doc["channels"].values() if c["address"] == "/hooks/erp"][0]
    assert list(crm["messages"]) == ["customer.tier.changed"]           # the target's events filter
    # every message payload schema is itself valid JSON Schema 2020-12, and the same as the jsonschema catalog
    catalog = json.loads(cli("catalog", "-c", cfg_path).stdout)
    for m in doc["components"]["messages"].values():
        VALIDATOR.check_schema(m["payload"]["schema"])
        assert m["payload"]["schema"] == catalog[m["name"]]
    # deterministic: the same bytes twice
    assert cli("catalog", "-c", cfg_path, "--format", "asyncapi").stdout == r.stdout
    broken = copy.deepcopy(doc)
    broken["channels"]["bogus"] = {"address": 5}
    assert not jsonschema.Draft7Validator(spec).is_valid(broken)


CHECK_RULES = """
[[events]]
type = "order.status.changed"
table = "public.orders"
fields = {{ order_id = "id", {status_name} = "status", qty = "qty" }}
values = {{ status = {{ N = "accepted", S = "shipped"{extra} }} }}
"""


def test_check_reports_breaking_and_compatible_changes(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE orders (id int PRIMARY KEY, status char(1), qty int, note text);"
                  "CREATE TABLE items (id int PRIMARY KEY, name text)")
    tables = ["public.orders", "public.items"]

    def catalog(status_name="status", extra=', H = "on_hold"', more_rules=""):
        rules = CHECK_RULES.format(status_name=status_name, extra=extra) + more_rules
        return build(config.load(write_config(tmp_path, "postgres", pg_db.dsn, tables, rules)))

    base = catalog()
    assert compare(base, catalog()) == []

    def report(changes):
        return [(c.breaking, c.text) for c in changes]

    renamed = report(compare(base, catalog(status_name="state")))
    assert (True, "order.status.changed: field data.before/after.status removed") in renamed
    assert (False, "order.status.changed: optional field data.before/after.state added") in renamed
    removed_value = report(compare(base, catalog(extra="")))
    assert any(b and "enum value(s) removed: 'on_hold'" in t for b, t in removed_value), removed_value
    new_rule = report(compare(base, catalog(
        more_rules='\n[[events]]\ntype = "item.renamed"\ntable = "public.items"\n')))
    assert new_rule == [(True, "row.public.items: event type removed (consumers no longer receive it)"),
                        (False, "item.renamed: new event type")]

    pg_db.execute("ALTER TABLE items ADD COLUMN price numeric(10,2)")
    added = report(compare(base, catalog()))
    assert added == [(False, "row.public.items: optional field data.before/after.price added")]
    pg_db.execute("ALTER TABLE items DROP COLUMN name")
    dropped = report(compare(base, catalog()))
    assert (True, "row.public.items: field data.before/after.name removed") in dropped
    pg_db.execute("ALTER TABLE orders ALTER COLUMN qty TYPE smallint")
    narrowed = report(compare(base, catalog()))
    assert any(b and "qty range -2147483648..2147483647 → -32768..32767 (narrowed)" in t for b, t in narrowed), narrowed

    # the command: exit 1 on a breaking change, 0 when only compatible ones
    old = tmp_path / "old.json"
    old.write_bytes(dumps(base))
    cfg_path = write_config(tmp_path, "postgres", pg_db.dsn, tables, CHECK_RULES.format(status_name="status", extra=""))
    r = cli("catalog", "-c", cfg_path, "--check", old)
    assert r.returncode == 1 and "[BREAKING]" in r.stdout and "enum value(s) removed" in r.stdout, r.stdout + r.stderr
    same = tmp_path / "same.json"
    assert cli("catalog", "-c", cfg_path, "-o", same).returncode == 0
    pg_db.execute("ALTER TABLE items ADD COLUMN sku text")
    r = cli("catalog", "-c", cfg_path, "--check", same)
    assert r.returncode == 0, r.stdout
    assert "[ok] row.public.items: optional field data.before/after.sku added" in r.stdout, r.stdout


def test_run_refuses_a_breaking_change_unless_accepted(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    cfg_path = write_config(tmp_path, "postgres", pg_db.dsn, ["public.items"],
                            extra_agent='catalog = "events.catalog.json"')
    accepted = tmp_path / "events.catalog.json"
    r = cli("check", "-c", cfg_path)
    assert "does not exist yet" in r.stdout, r.stdout
    with AgentProcess(cfg_path, tmp_path / "agent.log") as agent:      # the first run records the catalog
        wait_for(accepted.exists, 60, what="the catalog file")
        agent.stop()
    first = accepted.read_bytes()
    pg_db.execute("ALTER TABLE items DROP COLUMN name")
    r = cli("check", "-c", cfg_path)
    assert r.returncode == 1 and "field data.before/after.name removed" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "breaking change" in r.stderr, r.stderr
    assert accepted.read_bytes() == first
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg_path), "--accept-breaking"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: accepted.read_bytes() != first, 60, what="the accepted catalog")
    finally:
        proc.terminate()
        proc.wait(30)
    assert cli("check", "-c", cfg_path).returncode == 0


def test_demo_catalog_describes_the_demo_events(tmp_path):
    from tests.test_demo import run_demo
    cfg = tmp_path / "agent.toml"
    cfg.write_text((ROOT / "agent.toml").read_text())
    r = run_demo(ROOT, cfg, "--seconds", "4", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    out = cli("catalog", "-c", cfg, "-o", tmp_path / "events.catalog.json")
    assert out.returncode == 0, out.stderr
    catalog = json.loads((tmp_path / "events.catalog.json").read_text())
    assert sorted(catalog) == ["customer.address.changed", "customer.order.placed", "customer.pricing.updated",
                               "order.status.changed", "row.main.order_lines"]
    status = catalog["order.status.changed"]["properties"]["data"]["properties"]["after"]["properties"]["status"]
    assert set(status["enum"]) >= {"accepted", "shipped", "returned"}
    events = [json.loads(line) for line in (tmp_path / "demo-state" / "out" / "events.jsonl").read_bytes().splitlines()]
    assert len({e["type"] for e in events}) == 5
    assert_all_valid(catalog, events)
    ev = next(e for e in events if e["type"] == "order.status.changed" and e["data"]["after"])
    assert_mutation_rejected(catalog, ev, "after", "status", "X")
    assert_mutation_rejected(catalog, ev, "after", "order_id", "1")
