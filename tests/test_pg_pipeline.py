"""End to end against a real throwaway PostgreSQL: `cdc-agent run` as a process, domain events into a file
target, and the crash-safety guarantee under SIGKILL."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from agent import fastpath
from tests.agentproc import (ROOT, AgentProcess, check_random_transactions, pid_running,
                             random_transactions, read_events, wait_for)

ERP_DDL = """
CREATE TABLE customers (customer_id int PRIMARY KEY, name text NOT NULL, price_tier text,
                        discount_pct numeric(5,2), street text, city text);
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id int NOT NULL, status char(1) NOT NULL,
                     total numeric(12,2));
CREATE TABLE order_lines (order_id bigint, line_no int, sku text, qty int, PRIMARY KEY (order_id, line_no));
ALTER TABLE customers REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
"""

RULES = """
[[events]]
type = "customer.pricing.updated"
table = "public.customers"
on = ["update"]
changed = ["price_tier", "discount_pct"]
fields = { id = "customer_id", tier = "price_tier", discount = "discount_pct" }

[[events]]
type = "customer.address.changed"
table = "public.customers"
on = ["update"]
changed = ["street", "city"]
fields = ["customer_id", "street", "city"]

[[events]]
type = "customer.order.placed"
table = "public.orders"
on = ["insert"]
fields = ["order_id", "customer_id", "total"]

[[events]]
type = "order.status.changed"
table = "public.orders"
on = ["insert", "update"]
changed = ["status"]
fields = ["order_id", "status"]
values = { status = { N = "accepted", H = "on_hold", S = "shipped", I = "invoiced" } }
"""


def write_config(tmp_path: Path, dsn: str, tables: list[str], rules: str = "", extra_source: str = "",
                 snapshot: str = "never") -> Path:
    # "never" by default: these tests assert the exact events of the changes they make, and an initial
    # snapshot racing their first writes would add read events (tests/test_snapshot.py covers snapshots)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "erp-test"
state_dir = "state"
checkpoint_log_seconds = 2

[source]
kind = "postgres"
dsn = "{dsn}"
tables = {tables!r}
heartbeat_seconds = 1
snapshot = "{snapshot}"
{extra_source}
{rules}
[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"

[health]
listen = "off"
""".replace("'", '"'))
    return cfg


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# The one end-to-end run on both paths (docs/performance.md, "the pure-Python fallback in CI"): the compiled
# decoder, row and event renderers (agent/_fastpg.c), and the pure-Python reference the agent falls back to
# (CDC_AGENT_PURE=1, or no C compiler at install). The decoder-level equality is the property tests' job.
@pytest.mark.parametrize("path", ["compiled", "pure"])
def test_domain_events_from_postgres(pg_db, tmp_path, path):
    if path == "compiled" and not fastpath.compiled():
        pytest.skip("agent._fastpg is not built (no C compiler at install)")
    pg_db.execute(ERP_DDL)
    cfg = write_config(tmp_path, pg_db.dsn, ["public.customers", "public.orders", "public.order_lines"], RULES)
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    env = {fastpath.PURE_ENV: "1" if path == "pure" else "0"}
    with AgentProcess(cfg, tmp_path / "agent.log", env=env) as agent:
        with pg_db.connect() as conn:
            conn.execute("INSERT INTO customers VALUES (42, 'Acme', 'silver', 5.00, 'Main St 1', 'Springfield')")
            conn.execute("UPDATE customers SET price_tier = 'gold', discount_pct = 12.50 WHERE customer_id = 42")
            conn.execute("UPDATE customers SET name = 'Acme Corp' WHERE customer_id = 42")   # no rule fires
            conn.execute("UPDATE customers SET city = 'Shelbyville' WHERE customer_id = 42")
            with conn.transaction():   # one transaction over three tables: its order must be kept
                conn.execute("INSERT INTO orders VALUES (1001, 42, 'N', 99.90)")
                conn.execute("INSERT INTO order_lines VALUES (1001, 1, 'SKU-1', 3), (1001, 2, 'SKU-2', 1)")
                conn.execute("UPDATE orders SET status = 'H' WHERE order_id = 1001")
            conn.execute("UPDATE orders SET total = 100.00 WHERE order_id = 1001")          # status unchanged
            conn.execute("UPDATE orders SET status = 'S' WHERE order_id = 1001")
            conn.execute("DELETE FROM order_lines WHERE order_id = 1001 AND line_no = 2")
            conn.execute("UPDATE orders SET status = 'X' WHERE order_id = 1001")            # unmapped code
        wait_for(lambda: len(read_events(out)) >= 9, 30, what="9 events")
        wait_for(lambda: "'X'" in cli("dlq", "list", "-c", str(cfg)).stdout, 30, interval=0.5,
                 what="the unmapped status code in dead letters")
        assert agent.stop() == 0, agent.log()
    # the running agent says once that it runs in pure Python (whichever part meets the choice first)
    said = [ln for ln in agent.log().splitlines() if "CDC_AGENT_PURE is set:" in ln and "in pure Python" in ln]
    assert len(said) == (1 if path == "pure" else 0), agent.log()
    events = read_events(out, final=True)
    assert [e["type"] for e in events] == [
        "customer.pricing.updated",            # the insert: no customer rule is on insert; the name change: none
        "customer.address.changed",
        "customer.order.placed", "order.status.changed",     # one insert, two rules: two events, rule order
        "row.public.order_lines", "row.public.order_lines",  # a table no rule names: row events
        "order.status.changed",                               # H; then the total change fires nothing
        "order.status.changed",                               # S
        "row.public.order_lines"]                             # the delete; 'X' went to dead letters
    by_type = defaultdict(list)
    for e in events:
        by_type[e["type"]].append(e)

    pricing = by_type["customer.pricing.updated"]
    assert len(pricing) == 1
    p = pricing[0]
    assert p["subject"] == "42" and p["source"] == "cdc-agent://erp-test/public.customers"
    assert p["data"]["op"] == "update"
    assert p["data"]["key"] == {"customer_id": 42}
    assert p["data"]["before"] == {"id": 42, "tier": "silver", "discount": "5.00"}
    assert p["data"]["after"] == {"id": 42, "tier": "gold", "discount": "12.50"}
    assert sorted(p["data"]["changed"]) == ["discount", "tier"]
    assert p["time"].endswith("Z") and p["specversion"] == "1.0"

    addr = by_type["customer.address.changed"]
    assert len(addr) == 1 and addr[0]["data"]["changed"] == ["city"]
    assert addr[0]["data"]["after"] == {"customer_id": 42, "street": "Main St 1", "city": "Shelbyville"}

    placed = by_type["customer.order.placed"]
    assert len(placed) == 1 and placed[0]["data"]["after"] == {"order_id": 1001, "customer_id": 42, "total": "99.90"}
    assert placed[0]["data"]["before"] is None

    status = by_type["order.status.changed"]
    assert [(s["data"]["before"] or {}).get("status") for s in status] == [None, "accepted", "on_hold"]
    assert [s["data"]["after"]["status"] for s in status] == ["accepted", "on_hold", "shipped"]
    assert all(s["subject"] == "1001" for s in status)

    lines = by_type["row.public.order_lines"]
    assert [(ln["data"]["op"], ln["subject"]) for ln in lines] == [("insert", "1001|1"), ("insert", "1001|2"),
                                                                ("delete", "1001|2")]
    assert lines[2]["data"]["after"] is None and lines[2]["data"]["key"] == {"order_id": 1001, "line_no": 2}

    # the multi-table transaction: one commit position prefix, ordinals in statement order
    tx = [e for e in events if e["position"].split(":")[0] == placed[0]["position"].split(":")[0]]
    assert [e["type"] for e in tx] == ["customer.order.placed", "order.status.changed", "row.public.order_lines",
                                       "row.public.order_lines", "order.status.changed"]
    assert [e["position"] for e in tx] == sorted(e["position"] for e in tx)
    assert len({e["txid"] for e in tx}) == 1

    # the unmapped status code 'X' is a dead letter, not an event with a raw code
    assert not any(e["type"] == "order.status.changed" and e["data"]["after"]["status"] == "X" for e in events)

    # ids are unique and positions strictly increase in the file (a single target, no crash)
    assert len({e["id"] for e in events}) == len(events)
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)


def _writer(dsn: str, w: int, n_changes: int, expected: dict, errors: list, stop: threading.Event):
    """Runs writer w's share of the workload (tests.agentproc.random_transactions) through psycopg."""
    import psycopg
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for txn in random_transactions(w, n_changes, expected):
                if stop.is_set():
                    break
                with conn.transaction():
                    for sql, params in txn:
                        conn.execute(sql, params)
    except Exception as e:  # surfaced by the test
        errors.append(repr(e))


@pytest.mark.parametrize("kills", [5])
def test_sigkill_during_concurrent_writes_loses_nothing(pg_db, tmp_path, kills):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"])
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    writers, per_writer = 4, 12_500
    expected = [defaultdict(list) for _ in range(writers)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(pg_db.dsn, w, per_writer, expected[w], errors, stop))
               for w in range(writers)]
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    rng = random.Random(7)
    try:
        for t in threads:
            t.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.8, 2.5))
            wait_for(lambda: agent.children(), 10, what="the agent's delivery process (the default) to start")
            kids = agent.children()
            agent.kill()
            # the delivery process dies with the agent: two of them would deliver the spool twice
            wait_for(lambda kids=kids: not any(pid_running(k) for k in kids), 10, what="the delivery process to exit")
            agent.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        total = writers * per_writer
        wait_for(lambda: len({e["id"] for e in read_events(out)}) >= total, 180, interval=0.5,
                 what=f"{total} distinct events")
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()
    events = read_events(out, final=True)
    check_random_transactions(events, expected)
    want = {k: v for exp in expected for k, v in exp.items()}
    assert len(events) >= total and sum(len(v) for v in want.values()) == total
    log = agent.log()
    assert "Traceback" not in log, log[-3000:]


def test_one_agent_per_state_dir(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"])
    assert cli("setup", "-c", str(cfg)).returncode == 0
    first = AgentProcess(cfg, tmp_path / "first.log").start()
    try:
        wait_for(lambda: (tmp_path / "state" / "agent.lock").exists() and first.children(), 20,
                 what="the first agent to start")
        second = cli("run", "-c", str(cfg))
        assert second.returncode == 1
        assert f"another cdc-agent (pid {first.proc.pid}) is running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        assert first.alive()
        pg_db.execute("INSERT INTO items VALUES (1, 0, 0, 'still captured')")
        wait_for(lambda: read_events(tmp_path / "out" / "events.jsonl"), 20, what="the first agent's event")
    finally:
        assert first.stop() == 0


def test_paused_capture_keeps_the_replication_connection(make_pg_cluster, tmp_path):
    """Backpressure pauses capture; the walsender must not drop the connection meanwhile
    (wal_sender_timeout), or health flaps to failing and the agent reconnects in a loop."""
    from tests.plugins import free_port

    cluster = make_pg_cluster(wal_sender_timeout="2s")
    db = cluster.create_database()
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, pad text)")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "paused"
state_dir = "state"
spool_max_events = 5

[source]
kind = "postgres"
dsn = "{db.dsn}"
tables = ["public.items"]

[[targets]]
name = "down"
kind = "http"
url = "http://127.0.0.1:{free_port()}/events"

[health]
listen = "off"
""")
    assert cli("setup", "-c", str(cfg)).returncode == 0
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        for i in range(20):                        # more than the spool may hold undelivered: capture pauses
            db.execute("INSERT INTO items VALUES (%s, 'x')", (i,))
        wait_for(lambda: "capture paused" in agent.log(), 30, what="capture to pause")
        # plenty more WAL for the stalled stream, so the walsender's output is blocked too
        db.execute("INSERT INTO items SELECT g, repeat('y', 1000) FROM generate_series(100, 5099) g")

        def walsender():
            return db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'cdc_paused'")[0][0]

        pid = walsender()
        assert pid is not None
        deadline = time.monotonic() + 10           # five wal_sender_timeouts
        while time.monotonic() < deadline:
            assert walsender() == pid, agent.log()[-2000:]
            time.sleep(0.5)
        assert "capture resumes" not in agent.log() and "unavailable" not in agent.log()
        assert agent.stop() == 0
