"""Shared by the rabbitmq, redis and mqtt target tests: spooled events as the worker hands them to a target,
settings built by the config reader, bad-config checks through the CLI, and the end-to-end crash workload
(PostgreSQL writers, SIGKILLs of the agent, one broker restart) whose consumer is the broker's own client."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from collections.abc import Callable

import orjson

from agent import config
from agent.interfaces import SpooledEvent
from tests.agentproc import ROOT, AgentProcess, check_random_transactions, pid_running, wait_for


def event(seq: int, *, subject: str = "42", etype: str = "customer.updated", table: str = "public.customers",
          agent: str = "erp", pad: int = 0) -> SpooledEvent:
    """A spooled event whose body is a structured CloudEvent as the mapper writes it."""
    eid = f"0190a0b0-0000-7000-8000-{seq:012d}"
    body = orjson.dumps({
        "specversion": "1.0", "id": eid, "source": f"cdc-agent://{agent}/{table}", "type": etype,
        "subject": subject, "time": "2026-12-01T09:00:00.123456Z", "datacontenttype": "application/json",
        "position": f"{seq:016X}", "txid": 7,
        "data": {"op": "update", "before": None, "after": {"id": subject, "seq": seq, "pad": "x" * pad}}})
    return SpooledEvent(seq, eid, etype, subject, body, 1796115600.0 + seq, f"{seq:016X}")


def settings(kind: str, fmt: str = "cloudevents", **options) -> config.TargetSettings:
    """TargetSettings as `agent.toml` would give them (through the config reader, so options are checked)."""
    cfg = config.parse(_raw(kind, fmt, options), file="agent.toml", base=Path("/tmp"))
    return cfg.targets[0]


def _raw(kind: str, fmt: str, options: dict) -> dict:
    return {"agent": {"name": "erp", "state_dir": "/tmp/unused"},
            "source": {"kind": "postgres", "dsn": "postgresql://u@127.0.0.1/db", "tables": ["public.customers"]},
            "targets": [{"name": "bus", "kind": kind, "format": fmt, **options}]}


def check_bad_config(tmp_path: Path, target_toml: str, key: str, words: str, env: dict | None = None) -> None:
    """`cdc-agent check` on a config with this target: exit 2, one line naming the file, key and problem."""
    p = tmp_path / "agent.toml"
    p.write_text(f"""
[agent]
name = "erp"
[source]
kind = "postgres"
dsn = "postgresql://u@127.0.0.1/db"
tables = ["public.customers"]
snapshot = "never"          # these tests count the events of their own writes
[[targets]]
{target_toml}
""")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "check", "-c", str(p)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", **(env or {})}, cwd=ROOT, timeout=60)
    assert r.returncode == 2, r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(p) in lines[0] and key in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    for secret in (env or {}).values():
        assert secret not in r.stderr + r.stdout


WRITE_SECONDS = 8.0     # the writers' changes are spread over this long, so the broker restart and the agent
                        # kills land while there is still something to deliver (a fast agent is idle otherwise)


def _writer(dsn: str, w: int, n_changes: int, expected: dict, errors: list) -> None:
    import psycopg

    from tests.agentproc import random_transactions
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            txns = list(random_transactions(w, n_changes, expected))
            start = time.monotonic()
            for i, txn in enumerate(txns):
                with conn.transaction():
                    for sql, params in txn:
                        conn.execute(sql, params)
                pause = start + WRITE_SECONDS * (i + 1) / len(txns) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
    except Exception as e:  # surfaced by the test
        errors.append(repr(e))


def crash_workload(pg_db, tmp_path: Path, target_toml: str, received: Callable[[], list[dict]],
                   restart_broker: Callable[[], None], *, writers: int = 4, per_writer: int = 2500,
                   kills: int = 3, seed: int = 7) -> str:
    """PostgreSQL writers on `items` while the agent delivers to the broker target `target_toml`; the agent is
    SIGKILLed `kills` times, the broker restarted once (before the first kill, while the agent delivers).
    `received()` returns every
    CloudEvent the consumer got so far (duplicates included). Checks: every change arrived, each subject in
    order, redeliveries identical. Returns the agent's log."""
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "erp-test"
state_dir = "state"
[source]
kind = "postgres"
dsn = "{pg_db.dsn}"
tables = ["public.items"]
snapshot = "never"          # these tests count the events of their own writes
heartbeat_seconds = 1
[[targets]]
{target_toml}
retry_initial_seconds = 0.2
retry_max_seconds = 1
circuit_open_seconds = 1
[health]
listen = "off"
""")
    setup = subprocess.run([sys.executable, "-m", "agent.cli", "setup", "-c", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    expected = [defaultdict(list) for _ in range(writers)]
    errors: list[str] = []
    threads = [threading.Thread(target=_writer, args=(pg_db.dsn, w, per_writer, expected[w], errors))
               for w in range(writers)]
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    rng = random.Random(seed)
    total = writers * per_writer
    try:
        for t in threads:
            t.start()
        for k in range(kills):
            time.sleep(rng.uniform(0.8, 2.0))
            if k == 0:                     # while the agent delivers: its connection breaks under it
                restart_broker()
                time.sleep(rng.uniform(0.5, 1.5))
            wait_for(lambda: agent.children(), 20, what="the agent's delivery process to start")
            kids = agent.children()
            agent.kill()
            wait_for(lambda kids=kids: not any(pid_running(c) for c in kids), 10, what="the delivery process to exit")
            agent.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        wait_for(lambda: len({e["id"] for e in received()}) >= total, 120, interval=0.5,
                 what=f"{total} distinct events at the consumer")
        rc = agent.stop()
        assert rc == 0, (rc, agent.log()[-3000:])
    finally:
        agent.kill()
    events = received()
    check_random_transactions(events, expected)
    log = agent.log()
    assert "Traceback" not in log, log[-3000:]
    return log
