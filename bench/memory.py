"""Scenario 3 — memory: the agent's peak RSS (VmHWM of its process tree)
  a) while a single 1M-row transaction passes into the file target;
  b) while 100k changes pass with its only target (HTTP) down, so everything stays in the spool.

    python -m bench.memory [--rows 1000000] [--down-changes 100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import (MIXED_DDL, ROOT, AgentRun, agent_config, bench_cluster, emit, setup_capture, table,
                          tmpdir, wait_lines)
from tests.plugins import free_port

BIG_TXN = """INSERT INTO bench_items SELECT g, g % 5000, 'SKU-' || g, g % 17, (g % 100000) / 100.0, (g % 7) / 10.0,
  g % 2 = 0, now(), date '2026-01-01' + (g % 365), 'note ' || g, jsonb_build_object('g', g), md5(g::text)::uuid
  FROM generate_series({lo}, {hi}) g"""


def pending(cfg) -> int:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--json", "-c", str(cfg)], cwd=ROOT,
                         capture_output=True, text=True)
    try:
        return sum(t["pending"] for t in json.loads(out.stdout)["targets"].values())
    except (ValueError, KeyError):
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--down-changes", type=int, default=100_000)
    args = ap.parse_args()
    cluster = bench_cluster()
    rows = []
    try:
        # a) one big transaction
        work = tmpdir("cdc-bench-mem-")
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"])
        setup_capture(cfg)
        agent = AgentRun(cfg, work / "agent.log").start()
        time.sleep(2)
        base = agent.peak_rss_mb()
        t0 = time.perf_counter()
        db.execute(BIG_TXN.format(lo=1, hi=args.rows))
        done = wait_lines(work / "out" / "events.jsonl", args.rows, timeout=3600, proc=agent.proc)
        peak = agent.peak_rss_mb()
        agent.stop()
        fig = {"scenario": "memory_big_transaction", "rows": args.rows, "idle_rss_mb": base, "peak_rss_mb": peak,
               "seconds_commit_to_last_event": round(done - t0, 1)}
        emit(fig)
        rows.append((f"one {args.rows:,}-row transaction → file", base, peak))

        # b) target down: the backlog goes to the spool, not to memory
        work = tmpdir("cdc-bench-mem-down-")
        db2 = cluster.create_database("bench_down")
        db2.execute(MIXED_DDL)
        dead = free_port()      # nothing listens here: every POST is refused
        targets = f'[[targets]]\nname = "down"\nkind = "http"\nurl = "http://127.0.0.1:{dead}/hook"\n'
        cfg = agent_config(work / "agent.toml", db2.dsn, ["public.bench_items"], targets=targets,
                           name="bench-down")
        setup_capture(cfg)
        agent = AgentRun(cfg, work / "agent.log").start()
        time.sleep(2)
        base = agent.peak_rss_mb()
        with db2.connect() as conn:
            for lo in range(0, args.down_changes, 1000):
                conn.execute(BIG_TXN.format(lo=lo + 1, hi=lo + 1000))
        deadline = time.monotonic() + 600
        while pending(cfg) < args.down_changes and time.monotonic() < deadline:
            time.sleep(0.5)
        peak = agent.peak_rss_mb()
        held = pending(cfg)
        agent.stop()
        fig = {"scenario": "memory_target_down", "changes": args.down_changes, "spooled": held,
               "idle_rss_mb": base, "peak_rss_mb": peak}
        emit(fig)
        rows.append((f"{args.down_changes:,} changes, target down", base, peak))
        table(rows, ("memory", "idle RSS MB", "peak RSS MB"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
