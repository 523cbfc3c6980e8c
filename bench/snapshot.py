"""Snapshot — rows/s of an incremental snapshot (agent/snapshot.py) of one table into the file target,
next to `COPY ... TO STDOUT` of the same table in the same run; the agent's peak RSS; the extra load on the
database (pg_stat_database tuples/blocks read, while each runs).

    python -m bench.snapshot [--rows 1000000] [--chunk 10000] [--source postgres|trigger]

`--source trigger` snapshots the same table through trigger capture (watermarks in the changelog, chunks
with the trigger's row-image expression) instead of logical decoding.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import (MIXED_DDL, ROOT, AgentRun, Profiler, agent_config, bench_cluster, emit, setup_capture,
                          spool_bytes, table, tmpdir, wait_lines)

FILL = """INSERT INTO bench_items SELECT g, g % 5000, 'SKU-' || g, g % 17, (g % 100000) / 100.0,
    (g % 7) / 10.0, g % 2 = 0, '2026-11-23 10:00:00+00'::timestamptz + g * interval '1 second',
    date '2026-01-01' + (g % 365), 'note ' || g, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', 'b')),
    md5(g::text)::uuid FROM generate_series({lo}, {hi}) g"""


def db_load(db) -> dict:
    with db.connect() as conn:
        r = conn.execute("SELECT tup_returned, tup_fetched, blks_read, blks_hit FROM pg_stat_database "
                         "WHERE datname = current_database()").fetchone()
        conn.execute("SELECT pg_stat_clear_snapshot()")
    return dict(zip(("tup_returned", "tup_fetched", "blks_read", "blks_hit"), r))


def delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--source", choices=("postgres", "trigger"), default="postgres")
    ap.add_argument("--profile", action="store_true", help="sample the agent with py-spy; print the top functions")
    args = ap.parse_args()
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        for lo in range(1, args.rows + 1, 100_000):
            db.execute(FILL.format(lo=lo, hi=min(args.rows, lo + 99_999)))
        db.execute("VACUUM ANALYZE bench_items")

        # COPY of the same table, the reference
        time.sleep(1)
        before = db_load(db)
        t0 = time.perf_counter()
        copied = 0
        with db.connect() as conn, conn.cursor() as cur:
            with cur.copy("COPY bench_items TO STDOUT") as cp:
                for block in cp:
                    copied += len(block)
        copy_s = time.perf_counter() - t0
        time.sleep(1)
        copy_load = delta(before, db_load(db))

        work = tmpdir("cdc-bench-snapshot-", keep=args.profile)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"],
                           extra_source=f'snapshot = "never"\nsnapshot_chunk_rows = {args.chunk}')
        if args.source == "trigger":
            cfg.write_text(cfg.read_text().replace('kind = "postgres"', 'kind = "trigger"', 1).replace(
                "postgresql://", "postgresql+psycopg://", 1))
        setup_capture(cfg)
        agent = AgentRun(cfg, work / "agent.log").start()
        time.sleep(3)
        idle_rss = agent.peak_rss_mb()
        idle_cpu = agent.cpu_seconds()       # start-up, before the snapshot is asked for
        before = db_load(db)
        profiler = Profiler(agent.proc.pid, work / "profile.txt") if args.profile else None
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "agent.cli", "snapshot", "-c", str(cfg)], cwd=ROOT, check=True,
                       capture_output=True)
        done = wait_lines(work / "out" / "events.jsonl", args.rows, timeout=3600, proc=agent.proc)
        snap_s = done - t0
        if profiler:
            profiler.stop()
        peak = agent.peak_rss_mb()
        cpu = agent.cpu_seconds() - idle_cpu
        agent.stop()
        spooled = spool_bytes(work / "state")
        time.sleep(1)
        snap_load = delta(before, db_load(db))
        fig = {"scenario": "snapshot", "source": args.source, "rows": args.rows, "chunk_rows": args.chunk,
               "snapshot_rows_per_second": round(args.rows / snap_s), "copy_rows_per_second": round(args.rows / copy_s),
               "ratio": round(copy_s / snap_s, 2), "copy_mb": round(copied / 1e6, 1), "idle_rss_mb": idle_rss,
               "peak_rss_mb": peak, "agent_cpu_us_per_row": round(cpu * 1e6 / args.rows, 1),
               "spool_bytes_per_row": round(spooled / args.rows, 1),
               "db_load_snapshot": snap_load, "db_load_copy": copy_load}
        emit(fig)
        table([(f"{args.source} snapshot of {args.rows:,} rows → file", f"{fig['snapshot_rows_per_second']:,}/s",
                f"COPY {fig['copy_rows_per_second']:,}/s", fig["ratio"], f"{peak} MB")],
              ("scenario", "cdc-agent", "reference", "ratio", "peak RSS"))
        if profiler:
            table(profiler.top(25), ("function (py-spy, self time)", "% of samples"))
            print(f"raw samples: {work / 'profile.txt'}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
