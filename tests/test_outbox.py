"""Outbox routing (agent/outbox.py) on PostgreSQL and MariaDB: application transactions write outbox rows
concurrently, some roll back, the agent is SIGKILLed a few times: exactly the committed rows become events,
per aggregate in commit order, each row under one id; `delete_after` removes delivered rows, and neither
those deletes nor updates of outbox rows emit anything."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

from agent import config
from agent.catalog import build
from agent.changes import RowChange
from agent.mapping import EventMapper
from agent.rawjson import RawJson
from tests.agentproc import AgentProcess, wait_for
from tests.test_pg_pipeline import pid_running

WRITERS, TXNS, AGGREGATES = 4, 150, 5
PI = "3.14159265358979323846264338327950288"      # more digits than a float: the payload is kept exact


def write_config(tmp_path: Path, kind: str, dsn: str, tables: list[str], outbox_table: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(f"""[agent]
name = "outbox-test"
state_dir = "state"

[source]
kind = "{kind}"
dsn = "{dsn}"
tables = [{", ".join(f'"{t}"' for t in tables)}]
snapshot = "never"          # these tests count the events of their own writes
{"heartbeat_seconds = 1" if kind == "postgres" else "server_id = 7312"}

[[outbox]]
table = "{outbox_table}"
type_column = "event_type"
key_column = "aggregate_id"
payload_column = "payload"
headers_column = "headers"
delete_after = true

[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"

[health]
listen = "off"
""")
    return p


def events_in(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = path.read_bytes()
    data = data[:data.rfind(b"\n") + 1]
    return [json.loads(line, parse_float=str) for line in data.splitlines() if line.strip()]


def app_writer(connect, insert_sql: str, w: int, committed: list, errors: list) -> None:
    """Application transactions: bump an aggregate's version (row lock: per aggregate, commit order is
    version order), write one or two outbox rows; one in five rolls back."""
    rng = random.Random(w)
    conn = connect()
    try:
        for i in range(TXNS):
            agg = f"agg-{rng.randrange(AGGREGATES)}"
            rollback = rng.random() < 0.2
            cur = conn.cursor()
            cur.execute("UPDATE aggregates SET version = version + 1 WHERE id = %s", (agg,))
            cur.execute("SELECT version FROM aggregates WHERE id = %s", (agg,))
            version = cur.fetchone()[0]
            rows = []
            for part in range(rng.randint(1, 2)):
                payload = f'{{"agg": "{agg}", "version": {version}, "part": {part}, "writer": {w}, "pi": {PI}}}'
                headers = json.dumps({"traceparent": f"00-{w:032x}-{i:016x}-01", "writer": w})
                cur.execute(insert_sql, ("order.updated" if part == 0 else "order.noted", agg, payload, headers))
                rows.append((agg, version, part))
            if rollback:
                conn.rollback()
            else:
                conn.commit()
                committed.extend(rows)
            cur.close()
            time.sleep(rng.uniform(0, 0.04))   # the writes outlast the kills
    except Exception as e:             # noqa: BLE001 - reported by the test
        errors.append(repr(e))
    finally:
        conn.close()


def run_workload(cfg_path: Path, tmp_path: Path, connect, insert_sql: str, count_outbox, more_rows) -> None:
    out = tmp_path / "out" / "events.jsonl"
    committed: list = []
    errors: list = []
    agent = AgentProcess(cfg_path, tmp_path / "agent.log").start()
    rng = random.Random(3)
    try:
        wait_for(lambda: "connected, resuming" in agent.log(), 60, what="the source to connect")
        threads = [threading.Thread(target=app_writer, args=(connect, insert_sql, w, committed, errors))
                   for w in range(WRITERS)]
        for t in threads:
            t.start()
        during: list[bool] = []
        for _ in range(3):
            # past the delivery process's start (a kill during its spawn handshake leaves a child traceback)
            time.sleep(rng.uniform(1.0, 2.0))
            wait_for(lambda: agent.children(), 20, what="the delivery process")
            kids = agent.children()
            during.append(any(t.is_alive() for t in threads))
            agent.kill()
            wait_for(lambda kids=kids: not any(pid_running(k) for k in kids), 10, what="the delivery process to exit")
            agent.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert sum(during) >= 2, "the kills must fall while the application writes"
        want = {(a, v, p) for a, v, p in committed}
        wait_for(lambda: len({e["id"] for e in events_in(out)}) >= len(want), 120, interval=0.3,
                 what=f"{len(want)} distinct events")
        # after the crashes: rows written now are deleted once spooled, and their deletes emit nothing
        extra = more_rows()
        wait_for(lambda: len({e["id"] for e in events_in(out)}) >= len(want) + len(extra), 60, what="the last events")
        wait_for(lambda: count_outbox(extra) == 0, 60, what="the consumed outbox rows to be deleted")
        time.sleep(1.5)              # time for a (wrong) event of those deletes to arrive
        assert agent.stop() == 0
    finally:
        agent.kill()
    events = events_in(out)
    want |= set(extra)
    by_id: dict[str, tuple] = {}
    by_row: dict[tuple, str] = {}
    for e in events:
        d = e["data"]
        row = (d["agg"], int(d["version"]), int(d["part"]))
        assert by_id.setdefault(e["id"], row) == row, "one id, two rows"
        assert by_row.setdefault(row, e["id"]) == e["id"], f"row {row} delivered under two ids"
        assert e["type"] == ("order.updated" if row[2] == 0 else "order.noted") and e["subject"] == row[0]
        assert d["pi"] == PI, "the payload's numbers keep their digits"
        if "writer" in d:                                                 # the headers became attributes
            assert e["traceparent"].startswith("00-") and e["writer"] == int(d["writer"])
    assert set(by_row) == want, (f"missing {sorted(want - set(by_row))[:5]}, "
                                 f"not committed {sorted(set(by_row) - want)[:5]}")
    # per aggregate, in commit order (first deliveries; a redelivery repeats an earlier one)
    seen: set = set()
    order = defaultdict(list)
    for e in events:
        if e["id"] not in seen:
            seen.add(e["id"])
            order[e["subject"]].append((int(e["data"]["version"]), int(e["data"]["part"])))
    for agg, versions in order.items():
        assert versions == sorted(versions), f"{agg} out of commit order: {versions}"
    # every event fits the catalog's outbox schema
    schema = build(config.load(tmp_path / "agent.toml"))["outbox.{}".format(events[0]["source"].split("/", 3)[3])]
    for e in events[:50]:
        jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(e)))
    assert "Traceback" not in agent.log(), agent.log()[-3000:]


def test_postgres_outbox_under_concurrency_rollbacks_and_sigkill(pg_db, tmp_path):
    import psycopg
    pg_db.execute("CREATE SCHEMA app; CREATE TABLE app.aggregates (id text PRIMARY KEY, version int NOT NULL);"
                  "CREATE TABLE app.outbox (id bigserial PRIMARY KEY, event_type text NOT NULL, "
                  "aggregate_id text NOT NULL, payload jsonb NOT NULL, headers json)")
    pg_db.execute("INSERT INTO app.aggregates SELECT 'agg-' || g, 0 FROM generate_series(0, %s) g" % (AGGREGATES - 1))
    cfg_path = write_config(tmp_path, "postgres", pg_db.dsn, ["app.outbox"], "app.outbox")

    def connect():
        return psycopg.connect(pg_db.dsn, options="-c search_path=app")

    def more_rows():
        with connect() as conn:
            ids = [conn.execute("INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ('order.updated', "
                                f"'agg-x', '{{\"agg\": \"agg-x\", \"version\": {v}, \"part\": 0, \"pi\": {PI}}}') "
                                "RETURNING id").fetchone()[0] for v in range(3)]
            conn.execute("UPDATE outbox SET event_type = 'order.changed'")       # updates emit nothing
        return [("agg-x", v, 0) for v in range(3)] if ids else []

    def count(_extra):
        return pg_db.execute("SELECT count(*) FROM app.outbox WHERE aggregate_id = 'agg-x'")[0][0]

    run_workload(cfg_path, tmp_path, connect,
                 "INSERT INTO outbox (event_type, aggregate_id, payload, headers) VALUES (%s, %s, %s, %s)",
                 count, more_rows)


def test_mariadb_outbox_under_concurrency_rollbacks_and_sigkill(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE aggregates (id varchar(20) PRIMARY KEY, version int NOT NULL)")
    mariadb_db.execute("CREATE TABLE outbox (id bigint AUTO_INCREMENT PRIMARY KEY, event_type varchar(80) NOT NULL, "
                       "aggregate_id varchar(20) NOT NULL, payload json NOT NULL, headers text)")
    for a in range(AGGREGATES):
        mariadb_db.execute("INSERT INTO aggregates VALUES (%s, 0)", (f"agg-{a}",))
    table = f"{mariadb_db.name}.outbox"
    cfg_path = write_config(tmp_path, "mysql", mariadb_db.url, [table], table)

    def connect():
        conn = mariadb_db.connect()
        conn.autocommit(False)
        return conn

    def more_rows():
        conn = connect()
        try:
            with conn.cursor() as cur:
                for v in range(3):
                    cur.execute("INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ('order.updated', "
                                f"'agg-x', '{{\"agg\": \"agg-x\", \"version\": {v}, \"part\": 0, \"pi\": {PI}}}')")
                cur.execute("UPDATE outbox SET event_type = 'order.changed'")
            conn.commit()
        finally:
            conn.close()
        return [("agg-x", v, 0) for v in range(3)]

    def count(_extra):
        return mariadb_db.execute("SELECT count(*) FROM outbox WHERE aggregate_id = 'agg-x'")[0][0]

    run_workload(cfg_path, tmp_path, connect,
                 "INSERT INTO outbox (event_type, aggregate_id, payload, headers) VALUES (%s, %s, %s, %s)",
                 count, more_rows)


# ---------------------------------------------------------------- the mapping alone


def outbox_config(**outbox):
    return config.parse({"agent": {"name": "a", "state_dir": "/tmp/x"},
                         "source": {"kind": "postgres", "dsn": "postgresql://u@h/db", "tables": ["app.outbox"]},
                         "outbox": [{"table": "app.outbox", **outbox}],
                         "targets": [{"name": "f", "kind": "file", "path": "/tmp/x-out/events.jsonl"}]})


def change(op, row, position="0000000000000001:00000001", before=None):
    return RowChange(table="app.outbox", op=op, before=before, after=row, position=position,
                     commit_time="2026-12-01T10:00:00.000000Z", commit_ts=0.0, txid="9", key_columns=("id",))


def test_outbox_rows_map_to_events_with_ids_from_their_key():
    mapper = EventMapper(outbox_config(types=["order.placed"]))
    row = {"id": 7, "event_type": "order.placed", "aggregate_id": 42, "payload": RawJson('{"n": 1.10, "n": 2}')}
    (ev,), fails = mapper.map([change("insert", row)])
    assert not fails and ev.type == "order.placed" and ev.subject == "42"
    assert b'"data":{"n": 1.10, "n": 2}' in ev.body                      # as the database wrote it
    again, _ = mapper.map([change("read", row, position="0000000000000009:00000001")])
    assert again[0].id == ev.id                                           # read again: the same id
    other, _ = mapper.map([change("insert", {**row, "id": 8})])
    assert other[0].id != ev.id
    assert mapper.map([change("update", row, before=row), change("delete", None, before=row)]) == ([], [])
    _, fails = mapper.map([change("insert", {**row, "event_type": "order.cancelled"})])
    assert "not in the types" in fails[0].reason
    _, fails = mapper.map([change("insert", {**row, "payload": "not json"})])
    assert "not JSON" in fails[0].reason


@pytest.mark.parametrize("outbox, problem", [
    ({"table": "app.other"}, "is not in source.tables"),
    ({"table": "app.outbox", "typo": 1}, "unknown key"),
])
def test_outbox_config_errors(outbox, problem):
    from agent.errors import ConfigError
    with pytest.raises(ConfigError, match=problem):
        config.parse({"agent": {"name": "a"}, "source": {"kind": "postgres", "dsn": "postgresql://u@h/db",
                                                         "tables": ["app.outbox"]},
                      "outbox": [outbox], "targets": [{"name": "f", "kind": "file", "path": "/tmp/x"}]})


def test_an_outbox_table_cannot_also_have_event_rules():
    from agent.errors import ConfigError
    with pytest.raises(ConfigError, match=r"outbox\[0\]\.table: .*also the table of events\[0\]"):
        config.parse({"agent": {"name": "a"}, "source": {"kind": "postgres", "dsn": "postgresql://u@h/db",
                                                         "tables": ["app.outbox"]},
                      "events": [{"type": "x.y", "table": "app.outbox"}],
                      "outbox": [{"table": "app.outbox"}],
                      "targets": [{"name": "f", "kind": "file", "path": "/tmp/x"}]})


def test_outbox_headers_become_attributes_or_dead_letters():
    mapper = EventMapper(outbox_config(headers_column="h"))
    row = {"id": 1, "event_type": "order.placed", "aggregate_id": "a", "payload": RawJson("{}"),
           "h": RawJson('{"tenant": "east", "attempt": 2}')}
    (ev,), _ = mapper.map([change("insert", row)])
    body = json.loads(ev.body)
    assert body["tenant"] == "east" and body["attempt"] == 2 and body["data"] == {}
    for bad in ('{"type": "evil"}', '{"Upper": "x"}', '{"nested": {"a": 1}}', '[1]'):
        events, fails = mapper.map([change("insert", {**row, "h": RawJson(bad)})])
        assert not events and fails, bad
