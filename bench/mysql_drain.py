"""MySQL / MariaDB binlog drain: N row changes (inserts, updates, deletes over a 12-column mixed-type table)
are written to a throwaway MariaDB 10.11 while the agent is stopped; then, over the same binlog range in the
same run, one after the other (two cores):

  1. `mariadb-binlog --read-from-remote-server --base64-output=DECODE-ROWS -v` (the server's own tool, to /dev/null)
  2. MysqlSource alone: binlog stream, decode, values in their JSON form, RowChange objects -- on the
     compiled rows decoder (agent/_fastmy.c) when it is built, then again on the pure-Python one
  3. python-mysql-replication (BinLogStreamReader, rows with Python values)
  4. `cdc-agent run` end to end: source, mapping, spool (SQLite, fsync), file target (fsync) — rows/s into the file

    python -m bench.mysql_drain [--rows 200000] [--skip-agent] [--skip-pmr] [--map] [--profile-capture]

`cdc-agent run` also reports the CPU of its capture process (source, mapping, spool) apart from the whole
tree's (with the delivery child), as µs per row; --profile-capture samples the capture process with py-spy
--native while it drains and prints the functions with the most self time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.common import (ROOT, AgentRun, Profiler, emit, proc_cpu_seconds, run_measured, table, tmpdir,
                          wait_lines)

sys.path.insert(0, str(ROOT))
from tests.plugins.mariadb import MariaDbServer  # noqa: E402  (the same throwaway server the tests use)

DDL = """
CREATE TABLE bench_items (
  id bigint PRIMARY KEY, customer_id int NOT NULL, sku varchar(40) NOT NULL, qty int, price decimal(12,2),
  discount float, active tinyint(1), created timestamp(6) NULL, ship_date date, note varchar(100), attrs json,
  ref char(36))
"""


def write_changes(db, total: int, txn_rows: int = 10_000) -> dict:
    """60% inserts, 30% updates, 10% deletes, in transactions of `txn_rows`, generated server-side."""
    ins, upd = int(total * 0.6), int(total * 0.3)
    dele = total - ins - upd
    t0 = time.perf_counter()
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            for lo in range(0, ins, txn_rows):
                hi = min(ins, lo + txn_rows)
                cur.execute(f"""INSERT INTO bench_items SELECT seq, seq % 5000, CONCAT('SKU-', seq), seq % 17,
                    (seq % 100000) / 100.0, (seq % 7) / 10.0, seq % 2, TIMESTAMPADD(SECOND, seq, '2026-11-23 10:00:00'),
                    DATE_ADD('2026-01-01', INTERVAL seq % 365 DAY), CONCAT('note ', seq),
                    JSON_OBJECT('g', seq, 'tags', JSON_ARRAY('a', 'b')), MD5(seq)
                    FROM seq_{lo + 1}_to_{hi}""")
            for lo in range(0, upd, txn_rows):
                hi = min(upd, lo + txn_rows)
                cur.execute(f"UPDATE bench_items SET qty = qty + 1, price = price + 1, note = 'updated' "
                            f"WHERE id BETWEEN {lo + 1} AND {hi}")
            for lo in range(0, dele, txn_rows):
                hi = min(dele, lo + txn_rows)
                cur.execute(f"DELETE FROM bench_items WHERE id BETWEEN {ins - hi + 1} AND {ins - lo}")
    finally:
        conn.close()
    return {"inserts": ins, "updates": upd, "deletes": dele, "write_seconds": round(time.perf_counter() - t0, 2)}


def agent_config(work: Path, dsn: str, extra_source: str = "") -> Path:
    """`cdc-agent run`'s configuration in `work`: the bench table → the file target (out/events.jsonl);
    `extra_source`: more lines of [source]."""
    cfg = work / "agent.toml"
    cfg.write_text(f"""[agent]
name = "bench"
state_dir = "state"
[source]
kind = "mysql"
dsn = "{dsn}"
tables = ["bench.bench_items"]
{extra_source}
[[targets]]
name = "file"
kind = "file"
path = "out/events.jsonl"
[health]
listen = "off"
""")
    return cfg


def record_start(cfg: Path) -> str:
    """The agent starts once (recording in its spool where capture begins) and stops, so the changes can
    come while it is down; returns that checkpoint. It runs until its spool has one (with kind = "debezium"
    the first comes with a Debezium heartbeat, which on an idle server can take a while)."""
    work = cfg.parent
    agent = AgentRun(cfg, work / "agent.log").start()
    try:
        deadline = time.time() + 120
        while "connected" not in (work / "agent.log").read_text(errors="replace") or \
                _spool_checkpoint(work / "state") is None:
            if time.time() > deadline or agent.proc.poll() is not None:
                raise RuntimeError("agent did not start and record a checkpoint:\n"
                                   + (work / "agent.log").read_text(errors="replace"))
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        agent.stop()
    checkpoint = _spool_checkpoint(work / "state")
    if checkpoint is None:
        raise RuntimeError("the agent stopped without a checkpoint in its spool")
    return checkpoint


def _spool_checkpoint(state: Path) -> str | None:
    from agent.spool import Spool
    if not (state / "spool.db").exists():
        return None
    spool = Spool(state, readonly=True)
    try:
        return spool.checkpoint()
    finally:
        spool.close()


def mariadb_binlog_run(server: MariaDbServer, first_file: str, start_pos: int) -> dict:
    """`mariadb-binlog -v` over the binlog from (first_file, start_pos) to its end, output to /dev/null:
    wall seconds, CPU seconds and peak RSS (its rusage)."""
    files = [r[0] for r in server.execute("SHOW BINARY LOGS")]
    files = files[files.index(first_file):]
    cmd = ["mariadb-binlog", "--read-from-remote-server", "-h", "127.0.0.1", "-P", str(server.port), "-uroot",
           "--base64-output=DECODE-ROWS", "-v", f"--start-position={start_pos}", *files]
    with open("/dev/null", "wb") as devnull:
        return run_measured(cmd, stdout=devnull)


def mariadb_binlog_seconds(server: MariaDbServer, first_file: str, start_pos: int) -> float:
    return mariadb_binlog_run(server, first_file, start_pos)["seconds"]


def source_seconds(cfg_path, checkpoint: str, rows: int) -> tuple[float, int, float]:
    """Wall seconds, rows read, and this process's CPU µs per row (the server's work is not in it)."""
    from agent import config
    from agent.capture import CaptureCore
    from agent.sources.mysql import MysqlSource
    src = MysqlSource(config.load(cfg_path))
    core = CaptureCore(src)
    t0 = time.perf_counter()
    c0 = time.process_time()
    src.start(checkpoint)
    n = 0
    try:
        while n < rows:
            n += len(core.read(5000, 1.0).changes)
    finally:
        src.close()
    return time.perf_counter() - t0, n, (time.process_time() - c0) * 1e6 / max(1, n)


def mapping_cpu(cfg_path, checkpoint: str, rows: int) -> dict:
    """CPU µs per row of EventMapper.map over the source's changes, the compiled renderer (render_dicts +
    render_event) next to the pure path on the same batches, and the bodies compared."""
    from agent import config
    from dataclasses import fields

    from agent.capture import CaptureCore
    from agent.changes import RowChange
    from agent.mapping import EventMapper
    from agent.sources.mysql import MysqlSource
    cfg = config.load(cfg_path)
    src = MysqlSource(cfg)
    core = CaptureCore(src)
    compiled, pure = EventMapper(cfg, pure=False), EventMapper(cfg, pure=True)
    src.start(checkpoint)
    n, t_c, t_p, same = 0, 0.0, 0.0, True
    try:
        while n < rows:
            changes = core.read(5000, 1.0).changes
            n += len(changes)
            # the pure mapper gets plain RowChanges (a RenderedRowChange would take the C renderer on it too)
            plain = [RowChange(**{f.name: getattr(c, f.name) for f in fields(RowChange)}) for c in changes]
            t = time.process_time()
            ev_c, _ = compiled.map(changes)
            t_c += time.process_time() - t
            t = time.process_time()
            ev_p, _ = pure.map(plain)
            t_p += time.process_time() - t
            same = same and [e.body for e in ev_c] == [e.body for e in ev_p]
    finally:
        src.close()
    return {"map_compiled_us_per_row": round(t_c * 1e6 / n, 2), "map_pure_us_per_row": round(t_p * 1e6 / n, 2),
            "map_ratio": round(t_c / t_p, 3), "bodies_identical": same}


def pmr_seconds(server: MariaDbServer, gtid: str, rows: int, timeout: float = 600) -> tuple[float, int]:
    """python-mysql-replication over the same range. blocking=True: with blocking=False on MariaDB it
    reconnects at the end of the binlog and reads it again from auto_position (counts would double)."""
    import logging
    import threading

    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
    logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)
    result = {"n": 0, "seconds": None}

    def run():
        t0 = time.perf_counter()
        stream = BinLogStreamReader(connection_settings={"host": "127.0.0.1", "port": server.port, "user": "root",
                                                         "passwd": ""},
                                    server_id=5151, is_mariadb=True, auto_position=gtid, blocking=True,
                                    only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent])
        try:
            for ev in stream:
                result["n"] += len(ev.rows)
                if result["n"] >= rows:
                    break
            result["seconds"] = time.perf_counter() - t0
        finally:
            stream.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if result["seconds"] is None:
        raise RuntimeError(f"python-mysql-replication read {result['n']} of {rows} rows in {timeout}s")
    return result["seconds"], result["n"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--skip-agent", action="store_true", help="leave out the end-to-end `cdc-agent run`")
    ap.add_argument("--skip-pmr", action="store_true", help="leave out python-mysql-replication")
    ap.add_argument("--map", action="store_true",
                    help="also EventMapper.map's CPU per row over the source's changes, compiled next to pure")
    ap.add_argument("--profile-capture", action="store_true",
                    help="sample the agent's capture process with py-spy --native; print the top functions")
    args = ap.parse_args()
    work = tmpdir("cdc-bench-mysql-", keep=args.profile_capture)
    server = MariaDbServer(**{"innodb-buffer-pool-size": "512M", "max-binlog-size": "256M"}).start()
    try:
        db = server.create_database("bench")
        db.execute(DDL)
        cfg = agent_config(work, db.url)
        checkpoint = record_start(cfg)
        from agent.sources.mysql import parse_checkpoint
        cp = parse_checkpoint(checkpoint)
        written = write_changes(db, args.rows)
        fig = {"scenario": "mysql_drain", "server": server.execute("SELECT VERSION()")[0][0], "rows": args.rows,
               **written}

        ref_s = mariadb_binlog_seconds(server, cp["file"], int(cp["pos"]))
        ref_rate = args.rows / ref_s
        fig.update(mariadb_binlog_seconds=round(ref_s, 2), mariadb_binlog_rows_per_s=round(ref_rate))
        rows = [("mariadb-binlog DECODE-ROWS -v (→ /dev/null)", f"{ref_s:.2f}", f"{ref_rate:,.0f}", "1.00")]

        from agent import fastmy
        src_s, n, src_us = source_seconds(cfg, checkpoint, args.rows)
        src_rate = n / src_s
        path = "compiled" if fastmy.enabled() else "pure Python"
        fig.update(source_seconds=round(src_s, 2), source_rows_per_s=round(src_rate),
                   source_ratio_vs_mariadb_binlog=round(src_rate / ref_rate, 3), source_decoder=path,
                   source_cpu_us_per_row=round(src_us, 2))
        rows.append((f"MysqlSource (decode + JSON values; {path} rows decoder)", f"{src_s:.2f}",
                     f"{src_rate:,.0f}", f"{src_rate / ref_rate:.2f}"))
        if fastmy.enabled():
            # the same read on the pure-Python rows decoder (the fallback and reference), for the comparison
            os.environ[fastmy.PURE_ENV] = "1"
            try:
                pure_s, n, pure_us = source_seconds(cfg, checkpoint, args.rows)
            finally:
                del os.environ[fastmy.PURE_ENV]
            pure_rate = n / pure_s
            fig.update(source_pure_seconds=round(pure_s, 2), source_pure_rows_per_s=round(pure_rate),
                       source_pure_ratio_vs_mariadb_binlog=round(pure_rate / ref_rate, 3),
                       source_pure_cpu_us_per_row=round(pure_us, 2))
            rows.append(("MysqlSource (… pure-Python rows decoder, CDC_AGENT_PURE=1)", f"{pure_s:.2f}",
                         f"{pure_rate:,.0f}", f"{pure_rate / ref_rate:.2f}"))

        if args.map:
            fig.update(mapping_cpu(cfg, checkpoint, args.rows))

        if not args.skip_pmr:
            pmr_s, n = pmr_seconds(server, cp["gtid"], args.rows)
            pmr_rate = n / pmr_s
            fig.update(pmr_seconds=round(pmr_s, 2), pmr_rows_per_s=round(pmr_rate),
                       source_ratio_vs_pmr=round(src_rate / pmr_rate, 2))
            rows.append(("python-mysql-replication", f"{pmr_s:.2f}", f"{pmr_rate:,.0f}", f"{pmr_rate / ref_rate:.2f}"))

        if not args.skip_agent:
            agent = AgentRun(cfg, work / "agent.log").start()
            profiler = Profiler(agent.proc.pid, work / "profile.txt", capture_only=True) \
                if args.profile_capture else None
            done = wait_lines(work / "out" / "events.jsonl", args.rows, timeout=3600, proc=agent.proc)
            if profiler:
                profiler.stop()
            agent_s = done - agent.t0
            rss, cpu = agent.peak_rss_mb(), agent.cpu_seconds()
            capture_cpu = proc_cpu_seconds(agent.proc.pid)   # the main process captures; delivery is its child
            agent.stop()
            rate = args.rows / agent_s
            fig.update(agent_seconds=round(agent_s, 2), agent_rows_per_s=round(rate),
                       agent_ratio_vs_mariadb_binlog=round(rate / ref_rate, 3), agent_peak_rss_mb=rss,
                       agent_cpu_seconds=round(cpu, 1), capture_cpu_seconds=round(capture_cpu, 2),
                       capture_cpu_us_per_row=round(capture_cpu * 1e6 / args.rows, 2),
                       agent_cpu_us_per_row=round(cpu * 1e6 / args.rows, 2))
            rows.append(("cdc-agent run (→ file target, fsynced)", f"{agent_s:.2f}", f"{rate:,.0f}",
                         f"{rate / ref_rate:.2f}"))
        emit(fig)
        table(rows, (f"drain of {args.rows} row changes", "seconds", "rows/s", "vs mariadb-binlog"))
        if not args.skip_agent and profiler:
            top = profiler.top(25)
            emit({"scenario": "mysql_drain_capture_profile", "self_percent": top})
            table(top, ("capture process: function (py-spy --native, self time)", "% of samples"))
            print(f"raw samples: {work / 'profile.txt'}")
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
