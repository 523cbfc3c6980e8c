"""The config `cdc-agent connect plan` prints is a working Debezium connector, and the position moves both
ways: run in real Debezium (embedded, tests/dbzembed.py; adapted for embedded mode only in where offsets are
kept: a file instead of Connect's offsets topic, written and read as PATCH/GET .../offsets would), it
resumes exactly at the stopped agent's checkpoint (no change lost, none repeated), and the agent resumes
exactly where the connector stopped."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent import config, connect
from agent.spool import Spool
from tests.agentproc import AgentProcess, read_events, wait_for
from tests.dbzembed import capture, needs_debezium, read_offsets, write_offsets
from tests.test_pg_pipeline import cli

pytestmark = needs_debezium


def write_cfg(tmp_path: Path, port: int, db: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(f"""
[agent]
name = "erp"
state_dir = "state"

[source]
kind = "postgres"
dsn = "postgresql://postgres:${{ERP_PASSWORD}}@127.0.0.1:{port}/{db}"
tables = ["public.customers"]
snapshot = "never"          # these tests count the events of their own writes
heartbeat_seconds = 1

[[targets]]
name = "dbz"
kind = "file"
path = "out/events.jsonl"
format = "debezium"

[connect]
url = "http://127.0.0.1:1"
name = "erp-conn"

[health]
listen = "off"
""")
    return p


def changes_of(records: list[dict]) -> list[tuple]:
    return [(r["op"], (r["after"] or r["before"])["id"], r["after"]) for r in records if "op" in r]


def run_agent_until(cfg: Path, tmp_path: Path, n: int) -> list[dict]:
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: len(read_events(out)) >= n, 60, what=f"{n} events\n{agent.log()[-3000:]}")
        time.sleep(2)                       # anything beyond n (a repeated change) would show meanwhile
    return read_events(out, final=True)


def test_plan_runs_in_debezium_and_the_position_moves_both_ways(pg_db, tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_PASSWORD", "unused-with-trust-auth")
    pg_db.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, tier text, disc numeric(5,2)); "
                  "ALTER TABLE customers REPLICA IDENTITY FULL")
    cfg_path = write_cfg(tmp_path, pg_db.cluster.port, pg_db.name)
    assert cli("setup", "-c", str(cfg_path)).returncode == 0
    cfg = config.load(cfg_path)

    # A: the agent captures, then stops
    pg_db.execute("INSERT INTO customers VALUES (1, 'Acme', 'silver', 5.00), (2, 'Bolt', 'gold', 7.50)")
    pg_db.execute("UPDATE customers SET tier = 'gold' WHERE id = 1")
    agent_a = run_agent_until(cfg_path, tmp_path, 3)
    assert [(op, i) for op, i, _ in changes_of(agent_a)] == [("c", 1), ("c", 2), ("u", 1)]
    spool = Spool(cfg.agent.state_dir, readonly=True)
    after_a = spool.checkpoint()
    spool.close()

    # B: B1 counts as spooled by the agent but not yet confirmed to the slot (what a SIGKILL between the
    # spool's commit and the confirm leaves): its checkpoint is past B1 while the slot still holds it. So the
    # connector must follow the offset, not merely the slot, to skip B1 and lose nothing after it.
    pg_db.execute("INSERT INTO customers VALUES (5, 'Eon', 'gold', 2.00)")
    (lsn,), = pg_db.execute("SELECT pg_current_wal_lsn()::text")
    hi, lo = lsn.split("/")
    checkpoint = f"{(int(hi, 16) << 32) + int(lo, 16):016X}"
    assert checkpoint > after_a
    spool = Spool(cfg.agent.state_dir)
    spool.set_checkpoint(checkpoint)
    spool.close()
    pg_db.execute("INSERT INTO customers VALUES (3, 'Cog', 'bronze', 0.00)")
    pg_db.execute("UPDATE customers SET disc = 9.25 WHERE id = 2")
    pg_db.execute("DELETE FROM customers WHERE id = 1")
    planned, _ = connect.plan(cfg, has_checkpoint=True)
    assert planned["snapshot.mode"] == "no_data" and planned["database.password"] == "${env:ERP_PASSWORD}"
    offsets_file = tmp_path / "connect-offsets.dat"
    write_offsets(offsets_file, "erp-conn", connect.partition(cfg),
                  connect.offset_from_checkpoint(cfg, checkpoint))
    embedded = {**planned, "name": "erp-conn",
                # embedded mode: no Connect worker resolves ${env:...}, and offsets live in a file
                "database.password": os.environ["ERP_PASSWORD"],
                "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
                "offset.storage.file.filename": str(offsets_file), "offset.flush.interval.ms": "0"}
    theirs = capture(embedded, want=3, settle=3)
    assert changes_of(theirs) == [
        ("c", 3, {"id": 3, "name": "Cog", "tier": "bronze", "disc": "0.00"}),
        ("u", 2, {"id": 2, "name": "Bolt", "tier": "gold", "disc": "9.25"}),
        ("d", 1, None)], "exactly B after B1: nothing before the checkpoint again, nothing after it lost"

    # back to the agent: its checkpoint from the connector's offset, then C
    mine = [o for o in read_offsets(offsets_file) if o["partition"] == connect.partition(cfg)]
    back = connect.checkpoint_from_offset(cfg, mine[0]["offset"])
    assert back > checkpoint
    spool = Spool(cfg.agent.state_dir)
    spool.set_checkpoint(back)
    spool.close()
    pg_db.execute("INSERT INTO customers VALUES (4, 'Dyn', 'silver', 1.00)")
    pg_db.execute("UPDATE customers SET name = 'Cog Ltd' WHERE id = 3")
    agent_c = run_agent_until(cfg_path, tmp_path, 5)[3:]
    assert [(op, i) for op, i, _ in changes_of(agent_c)] == [("c", 4), ("u", 3)], "exactly C: B not again"
