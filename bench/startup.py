"""Start-up: how long `cdc-agent run` takes from its exec to its source streaming and to the first change in the
file target, and the CPU its processes spend on the way (start-up counts in `bench.drain`, which times the
agent from its exec). Each round: a new agent (its own slot, state and output), a few changes written while
it is stopped, then the agent started and timed; `pg_recvlogical` drains a slot created at the same point
(the reference, exec to its end). Medians over the rounds; the log's times give the timeline.

    python -m bench.startup [--rounds 7] [--changes 1000] [--no-compile]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time

from bench.common import (ROOT, MIXED_DDL, agent_config, bench_cluster, compile_agent, emit, pg_recvlogical_drain,
                          proc_cpu_seconds, proc_tree, setup_capture, table, tmpdir, write_mixed_changes)

# the log lines that mark the timeline (agent/pipeline.py)
MARKS = (("started", " started: source "), ("connected", "source postgres connected"))


def _first_line(path, proc, timeout: float = 120) -> float:
    """perf_counter time the file first holds a line (looked at every 2 ms: the figures are tens of ms)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with open(path, "rb") as f:
                if b"\n" in f.read(1 << 16):
                    return time.perf_counter()
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        time.sleep(0.002)
    raise TimeoutError(f"no line in {path} after {timeout}s")


def _log_time(log: str, words: str, wall0: float) -> float | None:
    for line in log.splitlines():
        if words in line:
            t = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
            return t.replace(tzinfo=datetime.UTC).timestamp() - wall0
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--no-compile", action="store_true",
                    help="leave the tree's bytecode as it is (with PYTHONDONTWRITEBYTECODE=1 and no __pycache__: "
                         "every start compiles the agent's modules)")
    args = ap.parse_args()
    if not 0 < args.rounds <= 9:
        ap.error("--rounds: 1 to 9 (two slots a round; the bench cluster has 20)")
    if not args.no_compile:
        compile_agent()
    work = tmpdir("cdc-bench-startup-")
    cluster = bench_cluster()
    rows: dict[str, list[float]] = {"started": [], "connected": [], "first": [], "cpu": [], "ref": []}
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        for i in range(args.rounds):
            run = work / f"r{i}"
            run.mkdir()
            db.execute("TRUNCATE bench_items")
            cfg = agent_config(run / "agent.toml", db.dsn, ["public.bench_items"], name=f"s{i}",
                               extra_source='snapshot = "never"\n')
            setup_capture(cfg)
            db.execute(f"SELECT pg_create_logical_replication_slot('recv_{i}', 'pgoutput')")
            write_mixed_changes(db, args.changes)
            endpos = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
            rows["ref"].append(pg_recvlogical_drain(cluster, "bench", f"recv_{i}", f"cdc_s{i}", endpos))
            log = run / "agent.log"
            wall0, t0 = time.time(), time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg)], cwd=ROOT,
                                    stdout=open(log, "ab"), stderr=subprocess.STDOUT)
            try:
                rows["first"].append(_first_line(run / "out" / "events.jsonl", proc) - t0)
                rows["cpu"].append(sum(proc_cpu_seconds(p) for p in proc_tree(proc.pid)))
            finally:
                proc.terminate()
                proc.wait(60)
            text = log.read_text()
            for key, words in MARKS:
                t = _log_time(text, words, wall0)
                if t is not None:
                    rows[key].append(t)
    finally:
        cluster.destroy()
    med = {k: round(statistics.median(v), 3) for k, v in rows.items() if v}
    emit({"scenario": "startup", "changes": args.changes, "rounds": args.rounds,
          "agent_started_s": med.get("started"), "source_connected_s": med.get("connected"),
          "first_delivered_s": med["first"], "agent_cpu_seconds": med["cpu"], "pg_recvlogical_seconds": med["ref"],
          "first_delivered_vs_pg_recvlogical": round(med["first"] / med["ref"], 2)})
    table([("agent started (log)", med.get("started")), ("source connected (log)", med.get("connected")),
           ("first change in the file", med["first"]), ("agent CPU seconds, all processes", med["cpu"]),
           (f"pg_recvlogical, exec to end of the {args.changes} changes", med["ref"])],
          (f"start-up, median of {args.rounds}", "seconds from exec"))


if __name__ == "__main__":
    main()
