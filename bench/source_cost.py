"""Scenario 4 — source cost: CPU seconds used on the database server by the process serving the agent
(walsender or backend) per 100k changes, next to the walsender serving pg_recvlogical on the same data.

    python -m bench.source_cost [--changes 300000]
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time

from bench.common import (setup_capture, MIXED_DDL, PG_BIN, AgentRun, agent_config, bench_cluster, emit,
                          proc_cpu_seconds,
                          table, tmpdir, wait_lines, write_mixed_changes)


def serving_pid(db, slot: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active_pid IS NOT NULL",
                          (slot,))
        if rows:
            return rows[0][0]
        time.sleep(0.01)
    raise TimeoutError(f"nobody took slot {slot}")


class CpuSampler(threading.Thread):
    """Keeps the last CPU reading of a server process (it is gone once the client disconnects)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.last, self.stop = pid, 0.0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = proc_cpu_seconds(self.pid)
            if v:
                self.last = v
            time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=300_000)
    args = ap.parse_args()
    work = tmpdir("cdc-bench-cost-")
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"])
        setup_capture(cfg)
        db.execute("SELECT pg_create_logical_replication_slot('recv_ref', 'pgoutput')")
        write_mixed_changes(db, args.changes)
        endpos = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]

        ref = subprocess.Popen([str(PG_BIN / "pg_recvlogical"), "-d", cluster.dsn("bench"), "-S", "recv_ref",
                                "--start", "-E", endpos, "-o", "proto_version=1", "-o", "publication_names=cdc_bench",
                                "-f", "/dev/null", "--no-loop"])
        s = CpuSampler(serving_pid(db, "recv_ref"))
        s.start()
        ref.wait(3600)
        time.sleep(0.1)
        s.stop.set()
        ref_cpu = s.last

        agent = AgentRun(cfg, work / "agent.log").start()
        s = CpuSampler(serving_pid(db, "cdc_bench"))
        s.start()
        wait_lines(work / "out" / "events.jsonl", args.changes, timeout=3600, proc=agent.proc)
        agent_cpu = s.last
        s.stop.set()
        agent.stop()
        per = 100_000 / args.changes
        fig = {"scenario": "source_cost", "changes": args.changes,
               "pg_recvlogical_server_cpu_s_per_100k": round(ref_cpu * per, 3),
               "agent_server_cpu_s_per_100k": round(agent_cpu * per, 3),
               "ratio": round(agent_cpu / ref_cpu, 2) if ref_cpu else None}
        emit(fig)
        table([("pg_recvlogical", fig["pg_recvlogical_server_cpu_s_per_100k"]),
               ("cdc-agent", fig["agent_server_cpu_s_per_100k"])],
              ("server process CPU per 100k changes", "seconds"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
