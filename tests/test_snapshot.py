"""Incremental snapshots (agent/snapshot.py) against a real PostgreSQL: rows that exist before the agent,
writers changing random keys while the chunks are read, the agent SIGKILLed mid-snapshot; the delivered
events rebuild the table exactly, and the snapshot resumes instead of starting again."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request

import psycopg

from tests.agentproc import AgentProcess, read_events, wait_for
from tests.plugins import free_port
from tests.test_pg_pipeline import cli, write_config

ROWS, CHUNK = 3000, 100


def _rebuild(events: list[dict]) -> dict[int, tuple]:
    """Apply each subject's events in position order (first delivery of each id): read/insert/update ->
    row = after, delete -> gone."""
    seen, table = set(), {}
    for e in sorted(events, key=lambda e: e["position"]):
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        k = int(e["subject"])
        after = e["data"]["after"]
        if after is None:
            table.pop(k, None)
        else:
            table[k] = (after["v"], after["pad"])
    return table


def _db_table(dsn: str) -> dict[int, tuple]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, v, pad FROM items")}


def _writer(dsn: str, stop: threading.Event, errors: list, seed: int):
    rng = random.Random(seed)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                k = rng.randrange(1, ROWS + 200)
                r = rng.random()
                if r < 0.5:
                    conn.execute("UPDATE items SET v = v + 1 WHERE id = %s", (k,))
                elif r < 0.75:
                    conn.execute("DELETE FROM items WHERE id = %s", (k,))
                else:
                    conn.execute("INSERT INTO items VALUES (%s, 0, 'new') ON CONFLICT (id) DO UPDATE SET v = "
                                 "items.v + 100", (k,))
                time.sleep(0.001)
    except Exception as e:  # surfaced by the test
        errors.append(repr(e))


def _snapshots(cfg) -> list[dict]:
    p = cli("snapshot", "-c", str(cfg), "--status", "--json")
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []


def test_initial_snapshot_with_writers_and_kills(pg_db, tmp_path):
    # no autovacuum: an autoanalyze while the writers delete would move the estimate checked below
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text) WITH (autovacuum_enabled = off)")
    pg_db.execute(f"INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g")
    pg_db.execute("ANALYZE items")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"], snapshot="initial",
                       extra_source=f"snapshot_chunk_rows = {CHUNK}")
    port = free_port()
    cfg.write_text(cfg.read_text().replace('listen = "off"', f'listen = "127.0.0.1:{port}"'))
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    stop, errors = threading.Event(), []
    writers = [threading.Thread(target=_writer, args=(pg_db.dsn, stop, errors, seed)) for seed in (1, 2)]
    for w in writers:
        w.start()
    # a wide window between each chunk's read and its HIGH watermark: the writer changes rows of the chunk
    # in it, whose read images are older than those changes and must be dropped
    # (0.3 s: 30 chunks take 9 s or more, so the checks below, a CLI start among them, see it running also on
    # a slow machine; at 0.1 s a loaded CI machine once saw the snapshot done before it asked /health)
    agent = AgentProcess(cfg, tmp_path / "agent.log", env={"CDC_AGENT_SNAPSHOT_WINDOW_PAUSE": "0.3"})
    kills = 0
    try:
        agent.start()
        altered = False
        for n in (500, 1200, 2000):
            wait_for(lambda n=n: sum(e["data"]["op"] == "read" for e in read_events(out)) >= n, 60,
                     what=f"{n} read events")
            if not altered:
                # progress while it runs: the running agent's own view, /health (first: it answers at once),
                # with the estimate from the statistics
                live = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
                snap = live["source"]["snapshot"]
                assert snap["state"] == "running" and snap["tables"]["public.items"]["rows_done"] >= 100, snap
                assert snap["tables"]["public.items"]["rows_estimate"] == ROWS
                # and `cdc-agent status` (the spool's view)
                st = json.loads(cli("status", "-c", str(cfg), "--json").stdout)["source"]["snapshot"]
                assert st["state"] == "running" and st["id"].startswith("initial-"), st
                assert st["tables"]["public.items"]["rows_done"] >= 100
                assert st["tables"]["public.items"]["rows_estimate"] == ROWS
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                assert 'cdc_agent_snapshot_rows_total{agent="erp-test",table="public.items"}' in metrics
                # a snapshot holds no lock beyond one short statement: DDL with a short lock timeout goes through
                with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
                    conn.execute("SET lock_timeout = '3s'")
                    conn.execute("ALTER TABLE items ADD COLUMN extra int")
                altered = True
            agent.kill()
            kills += 1
            agent.start()
        wait_for(lambda: any(s["state"] == "done" for s in _snapshots(cfg)), 90, interval=0.5,
                 what="the snapshot to finish")
        time.sleep(0.5)
        stop.set()
        for w in writers:
            w.join()
        assert not errors, errors
        expected = _db_table(pg_db.dsn)
        wait_for(lambda: _rebuild(read_events(out)) == expected, 60, interval=0.5,
                 what="the delivered events to rebuild the table")
        assert agent.stop() == 0, agent.log()
    finally:
        stop.set()
        agent.kill()
    events = read_events(out, final=True)
    assert _rebuild(events) == expected
    reads = [e for e in events if e["data"]["op"] == "read"]
    assert all(e["data"]["before"] is None for e in reads)
    # resumed, never from zero: at most a chunk (and a batch in flight) again per kill
    assert len({e["id"] for e in reads}) <= ROWS + CHUNK * kills, len(reads)
    assert len(reads) <= ROWS + (CHUNK + 500) * kills
    snap = [s for s in _snapshots(cfg) if s["state"] == "done"][0]
    assert snap["id"].startswith("initial-")


def test_snapshot_command_bad_input(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)")
    pg_db.execute("CREATE TABLE nokey (a int, b text)")
    pg_db.execute("ALTER TABLE nokey REPLICA IDENTITY FULL")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items", "public.nokey"])
    assert cli("setup", "-c", str(cfg)).returncode == 0
    p = cli("snapshot", "-c", str(cfg), "--table", "public.nosuch")
    assert p.returncode == 2 and "public.nosuch is not captured" in p.stderr and len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", "public.items", "--where", "nosuchcol > 3")
    assert p.returncode == 1 and "--where" in p.stderr and "nosuchcol" in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", "public.nokey")
    assert p.returncode == 1 and "public.nokey has no primary key" in p.stderr and len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", "public.items", "--target", "nosuch")
    assert p.returncode == 2 and "nosuch" in p.stderr
    p = cli("snapshot", "-c", str(cfg), "--cancel", "nosuch-id")
    assert p.returncode == 1 and "no snapshot request" in p.stderr
    # a good request: an id, pending in --status, cancellable
    p = cli("snapshot", "-c", str(cfg), "--table", "public.items", "--where", "id > 10")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.strip()
    assert [s["state"] for s in _snapshots(cfg) if s["id"] == rid] == ["pending"]
    assert cli("snapshot", "-c", str(cfg), "--cancel", rid).returncode == 0


def test_when_needed_after_the_slot_was_dropped(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)")
    pg_db.execute("INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, 300) g")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"],
                       snapshot="when_needed",
                       extra_source='snapshot_chunk_rows = 50')
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: sum(e["data"]["op"] == "read" for e in read_events(out)) >= 300, 60, what="initial snapshot")
        pg_db.execute("UPDATE items SET v = 1 WHERE id <= 10")
        wait_for(lambda: sum(e["data"]["op"] == "update" for e in read_events(out)) >= 10, 30, what="updates")
        with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
            slot = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots").fetchone()
            conn.execute("SELECT pg_terminate_backend(%s)", (slot[1],))
            wait_for(lambda: conn.execute("SELECT pg_drop_replication_slot(%s) IS NULL", (slot[0],)).fetchone()
                     if not conn.execute("SELECT active FROM pg_replication_slots").fetchone()[0] else False,
                     30, what="the slot dropped")
            # changes while no slot exists: lost from the log; the new snapshot brings the rows as they are
            # (a row deleted in that gap cannot be sent: docs/snapshots.md)
            conn.execute("UPDATE items SET v = 2 WHERE id > 290")
            conn.execute("INSERT INTO items VALUES (301, 7, 'in the gap')")
        wait_for(lambda: sum(e["data"]["op"] == "read" for e in read_events(out)) >= 601, 90, interval=0.5,
                 what="a second snapshot")
        pg_db.execute("UPDATE items SET v = 3 WHERE id = 1")      # streaming again
        expected = _db_table(pg_db.dsn)
        wait_for(lambda: _rebuild(read_events(out)) == expected, 60, interval=0.5, what="the rebuilt table")
        assert agent.stop() == 0
    assert "when_needed" in agent.log()


def test_on_demand_snapshot_for_one_target(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)")
    pg_db.execute("INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, 250) g")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"], extra_source='snapshot_chunk_rows = 40')
    cfg.write_text(cfg.read_text() + '\n[[targets]]\nname = "crm"\nkind = "file"\npath = "out/crm.jsonl"\n')
    assert cli("setup", "-c", str(cfg)).returncode == 0
    audit, crm = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "crm.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        time.sleep(2)
        p = cli("snapshot", "-c", str(cfg), "--table", "public.items", "--target", "crm", "--where", "id > 50")
        assert p.returncode == 0, p.stderr
        wait_for(lambda: len(read_events(crm)) >= 200, 60, what="the snapshot at crm")
        pg_db.execute("UPDATE items SET v = 9 WHERE id = 3")
        wait_for(lambda: any(e["data"]["op"] == "update" for e in read_events(audit)), 30, what="the update at audit")
        wait_for(lambda: any(e["data"]["op"] == "update" for e in read_events(crm)), 30, what="the update at crm")
        wait_for(lambda: any(s["state"] == "done" for s in _snapshots(cfg)), 30, what="done")
        assert agent.stop() == 0
    at_crm = read_events(crm, final=True)
    assert sorted(int(e["subject"]) for e in at_crm if e["data"]["op"] == "read") == list(range(51, 251))
    assert [e["data"]["op"] for e in read_events(audit, final=True)] == ["update"]


def test_restart_after_the_slot_was_dropped(pg_db, tmp_path):
    """The slot dropped by hand while the agent was stopped: `run` must notice before it creates a new slot.
    Without "when_needed" it stops with the reason (and creates no slot); with it, a snapshot, then streaming."""
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)")
    pg_db.execute("INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, 200) g")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"], snapshot="initial",
                       extra_source='snapshot_chunk_rows = 50')
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: sum(e["data"]["op"] == "read" for e in read_events(out)) >= 200, 60, what="initial snapshot")
        pg_db.execute("UPDATE items SET v = 1 WHERE id <= 10")
        wait_for(lambda: sum(e["data"]["op"] == "update" for e in read_events(out)) >= 10, 30, what="updates")
        assert agent.stop() == 0
    slots = lambda: pg_db.execute("SELECT slot_name FROM pg_replication_slots")    # noqa: E731
    (slot,), = slots()
    pg_db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    pg_db.execute("UPDATE items SET v = 2 WHERE id > 190")          # lost from the log: no slot holds it
    pg_db.execute("DELETE FROM items WHERE id = 100")
    # snapshot = "initial": the restarted agent stops capture with the reason and leaves the slot alone
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: "does not exist, and the spool's checkpoint" in agent.log(), 30, what="the reason in the log")
        time.sleep(1)
        assert slots() == [] and 'snapshot = "when_needed"' in agent.log()
        assert agent.stop() == 0
    # snapshot = "when_needed": a new slot and a snapshot, then streaming; nothing the table holds is missing
    cfg.write_text(cfg.read_text().replace('snapshot = "initial"', 'snapshot = "when_needed"'))
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: sum(e["data"]["op"] == "read" for e in read_events(out)) >= 399, 60, what="a second snapshot")
        assert slots() == [(slot,)]
        pg_db.execute("UPDATE items SET v = 3 WHERE id = 1")      # streaming again
        wait_for(lambda: _rebuild(read_events(out)).get(1) == (3, "row 1"), 30, what="the update after the snapshot")
        assert agent.stop() == 0
    rebuilt = _rebuild(read_events(out, final=True))
    rebuilt.pop(100)            # deleted while no slot existed: the snapshot cannot send it (docs/snapshots.md)
    assert rebuilt == _db_table(pg_db.dsn)
    assert "when_needed" in agent.log()
