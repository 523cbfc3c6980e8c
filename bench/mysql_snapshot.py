"""MySQL / MariaDB snapshot — rows/s of an incremental snapshot (agent/snapshot.py with the MySQL reader,
agent/sources/mysql/snapshot.py) of one 12-column table into the file target, next to, in the same run and
on the same table (a throwaway MariaDB 10.11):

  1. `mariadb --batch --quick -e 'SELECT * FROM t'` to /dev/null (the server's own client: the reference)
  2. `SELECT ... INTO OUTFILE` (the server writes the file itself)
  3. MysqlSnapshotReader alone: the chunk reads and the values in their JSON form, no pipeline
  4. `cdc-agent run` + `cdc-agent snapshot`: request to the last line in the file target (spooled, fsynced)

and the agent's peak RSS and the database's extra load (InnoDB rows read, buffer pool read requests) for
each.

    python -m bench.mysql_snapshot [--rows 1000000] [--chunk 10000] [--skip-agent]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench.common import ROOT, AgentRun, emit, table, tmpdir, wait_lines
from bench.mysql_drain import agent_config

sys.path.insert(0, str(ROOT))
from tests.plugins.mariadb import MariaDbServer  # noqa: E402  (the same throwaway server the tests use)

DDL = """
CREATE TABLE bench_items (
  id bigint PRIMARY KEY, customer_id int NOT NULL, sku varchar(40) NOT NULL, qty int, price decimal(12,2),
  discount float, active tinyint(1), created timestamp(6) NULL, ship_date date, note varchar(100), attrs json,
  ref char(36))
"""

FILL = """INSERT INTO bench_items SELECT seq, seq % 5000, CONCAT('SKU-', seq), seq % 17, (seq % 100000) / 100.0,
    (seq % 7) / 10.0, seq % 2, TIMESTAMPADD(SECOND, seq, '2026-11-23 10:00:00'),
    DATE_ADD('2026-01-01', INTERVAL seq % 365 DAY), CONCAT('note ', seq),
    JSON_OBJECT('g', seq, 'tags', JSON_ARRAY('a', 'b')), MD5(seq) FROM seq_{lo}_to_{hi}"""

LOAD = ("Innodb_buffer_pool_read_requests", "Handler_read_next", "Handler_read_rnd_next", "Bytes_sent")


def db_load(server) -> dict:
    return {k: int(v) for k, v in server.execute(
        "SHOW GLOBAL STATUS WHERE Variable_name IN (" + ", ".join(f"'{k}'" for k in LOAD) + ")")}


def delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


def measured(server, fn) -> tuple[float, dict]:
    before = db_load(server)
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return seconds, delta(before, db_load(server))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--skip-agent", action="store_true", help="leave out the end-to-end agent run")
    args = ap.parse_args()
    work = tmpdir("cdc-bench-mysql-snapshot-")
    outdir = work / "outfile"
    outdir.mkdir()
    os.chmod(work, 0o755)
    os.chmod(outdir, 0o777)                       # the server (the mysql user when root) writes INTO OUTFILE here
    server = MariaDbServer(**{"innodb-buffer-pool-size": "512M", "secure-file-priv": str(outdir)}).start()
    try:
        db = server.create_database("bench")
        db.execute(DDL)
        for lo in range(1, args.rows + 1, 100_000):
            db.execute(FILL.format(lo=lo, hi=min(args.rows, lo + 99_999)))
        db.execute("ANALYZE TABLE bench_items")
        db.execute("SELECT count(*) FROM bench_items")          # warm: every run reads from the buffer pool
        fig: dict = {"scenario": "mysql_snapshot", "server": server.execute("SELECT VERSION()")[0][0],
                     "rows": args.rows, "chunk_rows": args.chunk}
        rows = []

        def client():
            with open(os.devnull, "wb") as devnull:
                subprocess.run(["mariadb", "--batch", "--quick", "-h", "127.0.0.1", "-P", str(server.port), "-uroot",
                                "bench", "-e", "SELECT * FROM bench_items"], check=True, stdout=devnull, timeout=3600)
        ref_s, ref_load = measured(server, client)
        ref_rate = args.rows / ref_s
        fig.update(client_seconds=round(ref_s, 2), client_rows_per_s=round(ref_rate), db_load_client=ref_load)
        rows.append(("mariadb --batch -e 'SELECT *' (→ /dev/null)", f"{ref_s:.2f}", f"{ref_rate:,.0f}", "1.00", ""))

        def outfile():
            db.execute(f"SELECT * FROM bench_items INTO OUTFILE '{outdir}/items.tsv'")
        out_s, out_load = measured(server, outfile)
        (outdir / "items.tsv").unlink()
        fig.update(outfile_seconds=round(out_s, 2), outfile_rows_per_s=round(args.rows / out_s),
                   db_load_outfile=out_load)
        rows.append(("SELECT ... INTO OUTFILE", f"{out_s:.2f}", f"{args.rows / out_s:,.0f}",
                     f"{ref_s / out_s:.2f}", ""))

        cfg = agent_config(work, db.url, f'snapshot = "never"\nsnapshot_chunk_rows = {args.chunk}')
        subprocess.run([sys.executable, "-m", "agent.cli", "setup", "-c", str(cfg)], cwd=ROOT, check=True,
                       capture_output=True)

        from agent import config
        from agent.sources.mysql.snapshot import MysqlSnapshotReader
        reader = MysqlSnapshotReader(config.load(cfg))
        n = 0

        def read_all():
            nonlocal n
            keys, after = reader.key_columns("bench.bench_items"), None
            while True:
                chunk, after = reader.read_chunk("bench.bench_items", keys, after, args.chunk, None)
                if not chunk:
                    return
                n += len(chunk)
        try:
            rd_s, rd_load = measured(server, read_all)
        finally:
            reader.close()
        assert n == args.rows, n
        fig.update(reader_seconds=round(rd_s, 2), reader_rows_per_s=round(n / rd_s),
                   reader_ratio_vs_client=round(ref_s / rd_s, 3), db_load_reader=rd_load)
        rows.append(("MysqlSnapshotReader (chunks → JSON values)", f"{rd_s:.2f}", f"{n / rd_s:,.0f}",
                     f"{ref_s / rd_s:.2f}", ""))

        if not args.skip_agent:
            agent = AgentRun(cfg, work / "agent.log").start()
            deadline = time.time() + 60
            while "connected" not in (work / "agent.log").read_text(errors="replace"):
                if time.time() > deadline or agent.proc.poll() is not None:
                    raise RuntimeError("agent did not start:\n" + (work / "agent.log").read_text(errors="replace"))
                time.sleep(0.1)
            time.sleep(1)
            idle_rss = agent.peak_rss_mb()
            before = db_load(server)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "agent.cli", "snapshot", "-c", str(cfg)], cwd=ROOT, check=True,
                           capture_output=True)
            done = wait_lines(work / "out" / "events.jsonl", args.rows, timeout=3600, proc=agent.proc)
            snap_s = done - t0
            agent_load = delta(before, db_load(server))
            peak, cpu = agent.peak_rss_mb(), agent.cpu_seconds()
            agent.stop()
            fig.update(agent_seconds=round(snap_s, 2), agent_rows_per_s=round(args.rows / snap_s),
                       agent_ratio_vs_client=round(ref_s / snap_s, 3), idle_rss_mb=idle_rss, peak_rss_mb=peak,
                       agent_cpu_seconds=round(cpu, 1), db_load_agent=agent_load)
            rows.append(("cdc-agent snapshot (→ file target, fsynced)", f"{snap_s:.2f}", f"{args.rows / snap_s:,.0f}",
                         f"{ref_s / snap_s:.2f}", f"{peak} MB (idle {idle_rss})"))
        emit(fig)
        table(rows, (f"snapshot of {args.rows:,} rows", "seconds", "rows/s", "vs mariadb client", "peak RSS"))
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
