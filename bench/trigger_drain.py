"""The trigger source's own cost per changelog row (PostgreSQL): a backlog written by pgbench's tpcb-like
transactions (four one-row statements each) is drained by the source alone (`--mode source`: TriggerSource
poll + confirm in this process, no capture core, spool or target) or by `cdc-agent run` to a file target
(`--mode agent`). Reports CPU µs per change of the process and of its database session(s) (window reads,
deletes), from /proc. The writers are stopped while it drains, so the figures are the agent's alone.

With `--mode steady` the agent runs caught up while pgbench writes `--rate` transactions/s for `--seconds`.

    python -m bench.trigger_drain [--txns 20000] [--rounds 2] [--mode source,agent,steady] [--row] [--rate 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PG_BIN, ROOT, bench_cluster, emit, proc_cpu_seconds, proc_tree, table, tmpdir
from bench.trigger_overhead import PGBENCH_TABLES, _count_lines, _cpu_or_0, trigger_config

from agent.sources.trigger import TriggerAdmin  # noqa: E402


def _backlog(cluster, txns: int) -> int:
    subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-n",
                    "-c", "4", "-j", "2", "-t", str(txns // 4), "bench"], check=True, capture_output=True)
    return cluster.execute("SELECT count(*) FROM cdc_changelog", dbname="bench")[0][0]


def _sessions(cluster, exclude: set[int]) -> list[int]:
    return [r[0] for r in cluster.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND datname = 'bench'", dbname="bench") if r[0] not in exclude]


def drain_source(cfg, cluster, changes: int) -> dict:
    from agent.changes import Commit, RowChange
    from agent.sources.trigger.reader import TriggerSource
    src = TriggerSource(cfg)
    before = set(_sessions(cluster, set()))
    src.start(None)
    pids = _sessions(cluster, before)
    c0, d0, t0 = time.process_time(), sum(_cpu_or_0(p) for p in pids), time.perf_counter()
    got = 0
    idle = 0
    while got < changes and idle < 50:
        items = src.poll(cfg.source.batch_size, 0.0)
        n = sum(1 for i in items if isinstance(i, RowChange))
        got += n
        idle = 0 if n else idle + 1
        for i in items:
            if isinstance(i, Commit):
                src.confirm(i.checkpoint)
    c1, d1, t1 = time.process_time(), sum(_cpu_or_0(p) for p in pids), time.perf_counter()
    src.close()
    return {"changes": got, "cpu_us": (c1 - c0) / max(got, 1) * 1e6, "db_us": (d1 - d0) / max(got, 1) * 1e6,
            "seconds": t1 - t0}


def drain_agent(cfg_path: Path, work: Path, cluster, changes: int) -> dict:
    (work / "state").mkdir(exist_ok=True)
    before = set(_sessions(cluster, set()))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids: set[int] = set()
        dcpu: dict[int, float] = {}
        deadline = time.monotonic() + 600
        out = work / "out" / "events.jsonl"
        while time.monotonic() < deadline:
            pids |= set(_sessions(cluster, before))
            for p in pids:
                dcpu[p] = max(dcpu.get(p, 0.0), _cpu_or_0(p))
            if out.exists() and _count_lines(out) >= changes:
                break
            time.sleep(0.2)
        t1 = time.perf_counter()
        for p in pids:
            dcpu[p] = max(dcpu.get(p, 0.0), _cpu_or_0(p))
        cpu = sum(proc_cpu_seconds(p) for p in proc_tree(proc.pid))
        delivered = _count_lines(out) if out.exists() else 0
    finally:
        _stop_and_clean(proc, work)
    # the process's CPU includes its start-up (imports, connect, catalog): about a constant per run
    return {"changes": delivered, "cpu_us": cpu / max(delivered, 1) * 1e6,
            "db_us": sum(dcpu.values()) / max(delivered, 1) * 1e6, "seconds": t1 - t0}


def steady_agent(cfg_path: Path, work: Path, cluster, rate: int, seconds: int) -> dict:
    """The agent caught up while pgbench writes `rate` transactions/s (-R): its CPU per change then includes
    the fixed costs of each poll and batch, which a drain of a backlog spreads over full batches."""
    (work / "state").mkdir(exist_ok=True)
    before = set(_sessions(cluster, set()))
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        pids = _sessions(cluster, before)
        c0 = sum(proc_cpu_seconds(p) for p in proc_tree(proc.pid))
        d0 = sum(_cpu_or_0(p) for p in pids)
        t0 = time.perf_counter()
        subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                        "-n", "-c", "2", "-j", "2", "-R", str(rate), "-T", str(seconds), "bench"], check=True,
                       capture_output=True)
        txns = cluster.execute("SELECT count(*) FROM pgbench_history", dbname="bench")[0][0]
        changes = (txns - _history_before[0]) * 4
        out = work / "out" / "events.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or _count_lines(out) < changes):
            time.sleep(0.1)
        t1 = time.perf_counter()
        c1 = sum(proc_cpu_seconds(p) for p in proc_tree(proc.pid))
        d1 = sum(_cpu_or_0(p) for p in pids)
        delivered = _count_lines(out) if out.exists() else 0
    finally:
        _stop_and_clean(proc, work)
    return {"changes": delivered, "cpu_us": (c1 - c0) / max(delivered, 1) * 1e6,
            "db_us": (d1 - d0) / max(delivered, 1) * 1e6, "seconds": t1 - t0}


def _stop_and_clean(proc: subprocess.Popen, work: Path) -> None:
    """Stop an agent of a phase and remove its state and output, so the next phase starts from nothing."""
    proc.terminate()
    proc.wait(60)
    for p in ("state", "out"):
        subprocess.run(["rm", "-rf", str(work / p)], check=False)


_history_before = [0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--txns", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", default="source,agent")
    ap.add_argument("--row", action="store_true", help='trigger_level = "row" instead of statement triggers')
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=300, help="steady mode: pgbench transactions/s (-R)")
    ap.add_argument("--seconds", type=int, default=10, help="steady mode: how long pgbench writes")
    args = ap.parse_args()
    work = tmpdir("trigger-drain-")
    cluster = bench_cluster(max_connections="100")
    rows = []
    try:
        cluster.create_database("bench")
        subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                        "-i", "-q", "-s", "10", "bench"], check=True, capture_output=True)
        extra = ('trigger_level = "row"\n' if args.row else "") + f"batch_size = {args.batch_size}\n"
        cfg, _ = trigger_config(work, cluster.dsn("bench"), PGBENCH_TABLES, extra)
        admin = TriggerAdmin(cfg)
        _, agent_cfg = trigger_config(work, cluster.dsn("bench"), PGBENCH_TABLES, extra + 'snapshot = "never"\n'
                                      '[[events]]\ntype = "history.changed"\ntable = "public.pgbench_history"\n'
                                      'key = ["aid", "mtime"]', "agent-run.toml")
        for rnd in range(1, args.rounds + 1):
            for mode in args.mode.split(","):
                admin.setup()
                if mode == "steady":
                    n = 0
                    _history_before[0] = cluster.execute("SELECT count(*) FROM pgbench_history", dbname="bench")[0][0]
                    r = steady_agent(agent_cfg, work, cluster, args.rate, args.seconds)
                else:
                    n = _backlog(cluster, args.txns)
                    changes = args.txns * 4
                    r = drain_source(cfg, cluster, changes) if mode == "source" else \
                        drain_agent(agent_cfg, work, cluster, changes)
                admin.teardown()
                cluster.execute("VACUUM ANALYZE", dbname="bench")
                emit({"scenario": "trigger_drain", "mode": mode, "round": rnd, "changelog_rows": n,
                      "row_triggers": args.row, **{k: round(v, 2) if isinstance(v, float) else v
                                                   for k, v in r.items()}})
                rows.append((f"{mode}, round {rnd}", r["changes"], f"{r['cpu_us']:.1f}", f"{r['db_us']:.1f}",
                             f"{r['changes'] / r['seconds']:.0f}"))
    finally:
        cluster.destroy()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    table(rows, ("drain", "changes", "process µs/change", "db sessions µs/change", "changes/s"))


if __name__ == "__main__":
    main()
