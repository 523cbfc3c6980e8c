"""Trigger capture's cost on the source: a write workload's rate with the capture triggers installed over
its rate without, in the same run (goal: at least 0.85).

PostgreSQL: pgbench's TPC-B-like transactions (UPDATE accounts, SELECT, UPDATE tellers, UPDATE branches,
INSERT history: four captured changes per transaction), several clients, fsync on, on a throwaway cluster.
Phases alternate (off, on, off, on, ...) so that drift (checkpoints, cache warm-up) hits both alike; the
ratio is the mean "on" rate over the mean "off" rate. With --v3 a third phase per round installs version 003
(row triggers) instead of the newest (statement triggers), as the reference from before; with --row
one installs the newest version with trigger_level = "row"; with --v5 one installs version 005 (statement
triggers before version 006's one-row fast paths) and with --v5 --row also 005 with row triggers. With --bulk the
same phases also run a bulk workload (per transaction: INSERT ... SELECT of 1000 rows, UPDATE of them,
DELETE of them; rows per second). With --cpu, instead of rates, the database backend's CPU time per
transaction (off, newest, 005, newest with row triggers, 005 with row triggers, version 003) and the WAL
bytes per transaction for the same workloads run as a server-side loop in one session. With --agent the last
phases run with the agent draining the changelog at the same time (its reads and deletes are part of the
source's cost): once started on an empty changelog (caught up), once started behind a backlog of one phase's
changes (catching up); the agent's own CPU time per change is reported too.
SQLite: one writer (SQLite has one at a time), small UPDATE + INSERT transactions, WAL, synchronous=FULL.

    python -m bench.trigger_overhead [--seconds 8] [--rounds 2] [--clients 1,4] [--scale 10] [--agent] [--floor]
        [--v3] [--v5] [--row] [--bulk] [--cpu [--cpu-txns 20000]] [--no-sqlite]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PG_BIN, ROOT, bench_cluster, emit, table, tmpdir

from agent import config  # noqa: E402
from agent.sources.trigger import TriggerAdmin  # noqa: E402

PGBENCH_TABLES = ["public.pgbench_accounts", "public.pgbench_tellers", "public.pgbench_branches",
                  "public.pgbench_history"]


def trigger_config(work: Path, dsn: str, tables: list[str], extra: str = "", name: str = "agent.toml"):
    path = work / name
    path.write_text(f"""[agent]
name = "bench"
state_dir = "state"
delivery = "thread"
[source]
kind = "trigger"
dsn = "{dsn}"
tables = {tables!r}
poll_interval_seconds = 0.1
{extra}
[[targets]]
name = "file"
kind = "file"
path = "out/events.jsonl"
[health]
listen = "off"
""".replace("'", '"'))
    return config.load(path), path


def pgbench(cluster, db: str, args: list[str]) -> str:
    r = subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                        *args, db], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pgbench failed: {r.stderr[-2000:]}")
    return r.stdout


LABELS = {"row": 'newest version, trigger_level = "row"', "v3": "version 003 (row triggers)",
          "v5": "version 005 (statement triggers, before 006)", "v5row": 'version 005, trigger_level = "row"'}
# the version each phase installs (None: the newest) and whether with row triggers
PHASES = {"on": (None, False), "row": (None, True), "v5": (5, False), "v5row": (5, True), "v3": (3, False)}
BULK_ROWS = 1000
BULK_SCRIPT = f"""BEGIN;
INSERT INTO bulk_items SELECT :client_id * 10000000 + g, g % 7, 'row ' || g, now()
  FROM generate_series(1, {BULK_ROWS}) g;
UPDATE bulk_items SET k = k + 1 WHERE id >= :client_id * 10000000 AND id < (:client_id + 1) * 10000000;
DELETE FROM bulk_items WHERE id >= :client_id * 10000000 AND id < (:client_id + 1) * 10000000;
END;
"""


def pg_rate(cluster, seconds: float, clients: int, script: Path | None = None, cpu: list | None = None) -> float:
    """pgbench's rate; with `cpu`, also appends the CPU time of pgbench's own backends per transaction (µs),
    sampled over the middle of the run: what the writers' sessions spend, cold caches and all (the --cpu
    loop runs hot and shows a fraction of it)."""
    extra = ["-f", str(script)] if script else []
    proc = subprocess.Popen([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                             "-n", *extra, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(int(seconds)),
                             "bench"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sample = None
    if cpu is not None and seconds >= 4:
        time.sleep(1.5)
        pids = [r[0] for r in cluster.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'",
                                              dbname="bench")]
        c0, t0 = sum(_cpu_or_0(p) for p in pids), time.monotonic()
        time.sleep(seconds - 3)
        sample = (sum(_cpu_or_0(p) for p in pids) - c0) / (time.monotonic() - t0)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed: {err[-2000:]}")
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out) or re.search(r"tps = ([\d.]+)", out)
    tps = float(m.group(1))
    if cpu is not None and sample is not None:
        cpu.append(sample / tps * 1e6)
    return tps


def bench_pg(args, work: Path, rows: list) -> None:
    cluster = bench_cluster(max_connections="100")
    try:
        cluster.create_database("bench")
        pgbench(cluster, "bench", ["-i", "-q", "-s", str(args.scale)])
        tables = PGBENCH_TABLES
        script = None
        if args.bulk:
            cluster.execute("CREATE TABLE bulk_items (id bigint PRIMARY KEY, k int, s text, ts timestamptz)",
                            dbname="bench")
            tables = PGBENCH_TABLES + ["public.bulk_items"]
            script = work / "bulk.sql"
            script.write_text(BULK_SCRIPT)
        cfg, cfg_path = trigger_config(work, cluster.dsn("bench"), tables)
        admin = TriggerAdmin(cfg)
        row_admin = TriggerAdmin(trigger_config(work, cluster.dsn("bench"), tables, 'trigger_level = "row"',
                                                "agent-row.toml")[0])
        pg_rate(cluster, 3, max(args.clients))                    # warm-up
        base = 0.0
        workloads = [(c, None) for c in args.clients] + ([(1, script)] if script else [])
        phases = (("off", "on") + (("v5",) if args.v5 else ()) + (("row",) if args.row else ())
                  + (("v5row",) if args.v5 and args.row else ()) + (("v3",) if args.v3 else ()))
        for clients, wl in workloads:
            rates: dict[str, list[float]] = {p: [] for p in phases}
            bcpu: dict[str, list[float]] = {p: [] for p in phases}
            for rnd in range(1, args.rounds + 1):
                for phase in phases:
                    if phase != "off":
                        upto, by_row = PHASES[phase]
                        (row_admin if by_row else admin).setup(upto=upto)
                    tps = pg_rate(cluster, args.seconds, clients, wl, bcpu[phase]) * (BULK_ROWS if wl else 1)
                    changelog = cluster.execute("SELECT count(*) FROM cdc_changelog", dbname="bench")[0][0] \
                        if phase != "off" else 0
                    if phase != "off":
                        admin.teardown()
                    cluster.execute("VACUUM ANALYZE", dbname="bench")
                    rates[phase].append(tps)
                    emit({"scenario": "trigger_overhead", "engine": "postgresql", "phase": phase, "round": rnd,
                          "clients": clients, "workload": "bulk" if wl else "tpcb-like", "scale": args.scale,
                          "seconds": args.seconds, "tps" if not wl else "rows_per_s": round(tps, 1),
                          "changelog_rows": changelog,
                          "backend_cpu_us_per_txn": round(bcpu[phase][-1], 1) if bcpu[phase] else None})
            mean = {p: sum(r) / len(r) for p, r in rates.items()}
            mcpu = {p: round(sum(r) / len(r), 1) for p, r in bcpu.items() if r}
            off, on = mean["off"], mean["on"]
            ratio = on / off
            if not wl:
                base = off
            unit = "rows/s" if wl else "tps"
            emit({"scenario": "trigger_overhead", "engine": "postgresql", "summary": True, "clients": clients,
                  "workload": "bulk" if wl else "tpcb-like", "off": round(off, 1), "on": round(on, 1),
                  "ratio": round(ratio, 3), "goal": 0.85, "fsync": "on",
                  **{p: round(mean[p], 1) for p in phases[2:]},
                  **{f"ratio_{p}": round(mean[p] / off, 3) for p in phases[2:]},
                  "backend_cpu_us_per_txn": mcpu})
            what = (f"postgresql bulk (INSERT/UPDATE/DELETE of {BULK_ROWS} rows), {clients} client(s)" if wl
                    else f"postgresql pgbench tpcb-like, {clients} client(s)")
            rows.append((what, f"{off:.0f} {unit}", f"{on:.0f} {unit}", f"{ratio:.2f}"))
            for p in phases[2:]:
                rows.append((f"  the same, {LABELS[p]}", f"{off:.0f} {unit}", f"{mean[p]:.0f} {unit}",
                             f"{mean[p] / off:.2f}"))
        if args.floor:
            # the least any row trigger can cost: one plain insert per changed row, no row images
            clients = args.clients[-1]
            cluster.execute("CREATE TABLE floor_log (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                            "txid bigint NOT NULL, tbl text NOT NULL, created timestamptz NOT NULL); "
                            "CREATE FUNCTION floor_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                            "INSERT INTO floor_log (txid, tbl, created) VALUES (txid_current(), TG_TABLE_NAME, "
                            "clock_timestamp()); RETURN NULL; END $$", dbname="bench")
            for t in PGBENCH_TABLES:
                cluster.execute(f"CREATE TRIGGER floor_log AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW "
                                "EXECUTE FUNCTION floor_log()", dbname="bench")
            tps = pg_rate(cluster, args.seconds, clients)
            cluster.execute("DROP TABLE floor_log; DROP FUNCTION floor_log() CASCADE", dbname="bench")
            emit({"scenario": "trigger_overhead", "engine": "postgresql", "phase": "floor", "clients": clients,
                  "tps": round(tps, 1), "ratio": round(tps / base, 3)})
            rows.append(("  floor: minimal row trigger (no images)", f"{base:.0f} tps", f"{tps:.0f} tps",
                         f"{tps / base:.2f}"))
        if args.agent:
            clients = args.clients[-1]
            # no initial snapshot: the phase measures the drain of the changelog, not a read of the tables; and
            # a key for pgbench_history (it has no primary key: without one each of its changes is dead-lettered)
            _, agent_cfg = trigger_config(work, cluster.dsn("bench"), tables, 'snapshot = "never"\n[[events]]\n'
                                          'type = "history.changed"\ntable = "public.pgbench_history"\n'
                                          'key = ["aid", "mtime"]', "agent-run.toml")
            for mode in ("caught up", "catching up"):
                admin.setup()
                if mode == "catching up":
                    pg_rate(cluster, args.seconds, clients)      # a backlog: one phase's changes, no agent
                backlog = cluster.execute("SELECT count(*) FROM cdc_changelog", dbname="bench")[0][0]
                (work / "state").mkdir(exist_ok=True)
                proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(agent_cfg)], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    time.sleep(3 if mode == "caught up" else 0.5)
                    # the agent's own sessions (reads, deletes), besides its process
                    backends = [r[0] for r in cluster.execute(
                        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND "
                        "pid <> pg_backend_pid() AND datname = 'bench'", dbname="bench")]
                    cpu0 = backend_cpu(proc.pid)
                    db0 = sum(_cpu_or_0(p) for p in backends)
                    tps = pg_rate(cluster, args.seconds, clients)
                    cpu1 = backend_cpu(proc.pid)
                    db1 = sum(_cpu_or_0(p) for p in backends)
                    left = cluster.execute("SELECT count(*) FROM cdc_changelog", dbname="bench")[0][0]
                    delivered = _count_lines(work / "out" / "events.jsonl")
                finally:
                    proc.terminate()
                    proc.wait(60)
                admin.teardown()
                for p in ("state", "out"):
                    subprocess.run(["rm", "-rf", str(work / p)], check=False)
                changes = tps * args.seconds * 4
                emit({"scenario": "trigger_overhead", "engine": "postgresql", "phase": f"on+agent {mode}",
                      "clients": clients, "tps": round(tps, 1), "ratio": round(tps / base, 3), "backlog": backlog,
                      "changelog_rows_left": left, "delivered": delivered,
                      "agent_cpu_s": round(cpu1 - cpu0, 2),
                      "agent_cpu_us_per_written_change": round((cpu1 - cpu0) / changes * 1e6, 1),
                      "agent_sessions_cpu_s": round(db1 - db0, 2),
                      "agent_sessions_cpu_us_per_written_change": round((db1 - db0) / changes * 1e6, 1)})
                rows.append((f"  the same, agent running ({mode}{f', {backlog} rows behind' if backlog else ''})",
                             f"{base:.0f} tps", f"{tps:.0f} tps", f"{tps / base:.2f}"))
    finally:
        cluster.destroy()


CPU_TPCB = """DO $$ DECLARE a int; t int; b int; d int; BEGIN
FOR i IN 1..{n} LOOP
    a := 1 + (random() * 999999)::int; t := 1 + (random() * 99)::int; b := 1 + (random() * 9)::int;
    d := (random() * 10000)::int - 5000;
    UPDATE pgbench_accounts SET abalance = abalance + d WHERE aid = a;
    PERFORM abalance FROM pgbench_accounts WHERE aid = a;
    UPDATE pgbench_tellers SET tbalance = tbalance + d WHERE tid = t;
    UPDATE pgbench_branches SET bbalance = bbalance + d WHERE bid = b;
    INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (t, b, a, d, CURRENT_TIMESTAMP);
    COMMIT;
END LOOP; END $$"""
CPU_BULK = f"""DO $$ BEGIN
FOR i IN 1..{{n}} LOOP
    INSERT INTO bulk_items SELECT g, g % 7, 'row ' || g, now() FROM generate_series(1, {BULK_ROWS}) g;
    UPDATE bulk_items SET k = k + 1;
    DELETE FROM bulk_items;
    COMMIT;
END LOOP; END $$"""


def _wal_lsn(c) -> str:
    return c.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def _wal_diff(c, a: str, b: str) -> float:
    return float(c.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (a, b)).fetchone()[0])


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _cpu_or_0(pid: int) -> float:
    try:
        return backend_cpu(pid)
    except FileNotFoundError:           # the session ended
        return 0.0


def backend_cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def bench_pg_cpu(args, work: Path, rows: list) -> None:
    """The database backend's CPU time per transaction (from /proc), one session running the workload as a
    server-side loop: what the triggers add to the ERP's own work, without the client, the protocol and the
    commit's fsync wait, and much less disturbed by other load on the machine than a rate."""
    cluster = bench_cluster(max_connections="100")
    try:
        cluster.create_database("bench")
        pgbench(cluster, "bench", ["-i", "-q", "-s", str(args.scale)])
        cluster.execute("CREATE TABLE bulk_items (id bigint PRIMARY KEY, k int, s text, ts timestamptz)",
                        dbname="bench")
        cfg, _ = trigger_config(work, cluster.dsn("bench"), PGBENCH_TABLES + ["public.bulk_items"])
        admin = TriggerAdmin(cfg)
        row_cfg, _ = trigger_config(work, cluster.dsn("bench"), PGBENCH_TABLES + ["public.bulk_items"],
                                    'trigger_level = "row"', "agent-row.toml")
        row_admin = TriggerAdmin(row_cfg)
        n, nb = args.cpu_txns, max(1, args.cpu_txns // 1000)
        phases = ("off", "on", "v5", "row", "v5row", "v3")
        cpu: dict[str, dict[str, list[float]]] = {p: {"tpcb": [], "bulk": []} for p in phases}
        wal: dict[str, dict[str, list[float]]] = {p: {"tpcb": [], "bulk": []} for p in phases}
        with cluster.connect("bench") as c:
            c.execute("SET synchronous_commit = off")       # CPU is measured, not the wait for the disk
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            c.execute(CPU_TPCB.format(n=min(n, 2000)))     # warm-up
            for rnd in range(1, args.rounds + 1):
                for phase in phases:
                    if phase != "off":
                        upto, by_row = PHASES[phase]
                        (row_admin if by_row else admin).setup(upto=upto)
                    w0 = _wal_lsn(c)
                    t0 = backend_cpu(pid)
                    c.execute(CPU_TPCB.format(n=n))
                    t1 = backend_cpu(pid)
                    w1 = _wal_lsn(c)
                    c.execute(CPU_BULK.format(n=nb))
                    t2 = backend_cpu(pid)
                    w2 = _wal_lsn(c)
                    if phase != "off":
                        admin.teardown()
                    c.execute("VACUUM pgbench_history")
                    cpu[phase]["tpcb"].append((t1 - t0) / n * 1e6)
                    cpu[phase]["bulk"].append((t2 - t1) / (nb * 3 * BULK_ROWS) * 1e6)
                    wal[phase]["tpcb"].append(_wal_diff(c, w1, w0) / n)
                    wal[phase]["bulk"].append(_wal_diff(c, w2, w1) / (nb * 3 * BULK_ROWS))
                    emit({"scenario": "trigger_overhead_cpu", "phase": phase, "round": rnd,
                          "tpcb_us_per_txn": round(cpu[phase]["tpcb"][-1], 1),
                          "bulk_us_per_row": round(cpu[phase]["bulk"][-1], 2),
                          "tpcb_wal_bytes_per_txn": round(wal[phase]["tpcb"][-1]),
                          "bulk_wal_bytes_per_row": round(wal[phase]["bulk"][-1])})
        for wl, unit in (("tpcb", "µs/txn"), ("bulk", "µs/row")):
            m = {p: sum(v[wl]) / len(v[wl]) for p, v in cpu.items()}
            mw = {p: sum(v[wl]) / len(v[wl]) for p, v in wal.items()}
            emit({"scenario": "trigger_overhead_cpu", "summary": True, "workload": wl, "unit": unit,
                  **{p: round(x, 2) for p, x in m.items()}, "ratio": round(m["off"] / m["on"], 3),
                  **{f"ratio_{p}": round(m["off"] / m[p], 3) for p in phases[2:]},
                  **{f"wal_bytes_{p}": round(x) for p, x in mw.items()}})
            what = ("backend CPU, tpcb-like txn (server-side loop)" if wl == "tpcb"
                    else f"backend CPU, {BULK_ROWS}-row INSERT/UPDATE/DELETE (per row)")
            rows.append((what, f"{m['off']:.2f} {unit}", f"{m['on']:.2f} {unit}", f"{m['off'] / m['on']:.2f}"))
            for p in phases[2:]:
                rows.append((f"  the same, {LABELS[p]}", f"{m['off']:.2f} {unit}", f"{m[p]:.2f} {unit}",
                             f"{m['off'] / m[p]:.2f}"))
            wunit = "B/txn" if wl == "tpcb" else "B/row"
            rows.append((f"  WAL bytes, {'tpcb-like txn' if wl == 'tpcb' else 'per row'}", f"{mw['off']:.0f} {wunit}",
                         f"{mw['on']:.0f} {wunit}", f"{mw['off'] / mw['on']:.2f}"))
            for p in phases[2:]:
                rows.append((f"    the same, {LABELS[p]}", f"{mw['off']:.0f} {wunit}", f"{mw[p]:.0f} {wunit}",
                             f"{mw['off'] / mw[p]:.2f}"))
    finally:
        cluster.destroy()


def sqlite_rate(path: Path, seconds: float, accounts: int) -> float:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA synchronous = FULL")
    rnd = random.Random(1)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        aid = rnd.randint(1, accounts)
        delta = rnd.randint(-5000, 5000)
        c.execute("BEGIN")
        c.execute("UPDATE accounts SET balance = balance + ? WHERE aid = ?", (delta, aid))
        c.execute("INSERT INTO history (aid, delta, mtime) VALUES (?, ?, CURRENT_TIMESTAMP)", (aid, delta))
        c.execute("COMMIT")
        n += 1
    c.close()
    return n / seconds


def bench_sqlite(args, work: Path, rows: list) -> None:
    path = work / "erp.db"
    accounts = 100_000
    c = sqlite3.connect(path)
    c.executescript("""PRAGMA journal_mode = WAL;
        CREATE TABLE accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, balance INTEGER NOT NULL,
                               filler TEXT);
        CREATE TABLE history (hid INTEGER PRIMARY KEY, aid INTEGER NOT NULL, delta INTEGER NOT NULL,
                              mtime DATETIME NOT NULL);""")
    c.executemany("INSERT INTO accounts VALUES (?, ?, 0, ?)", ((i, i % 10, "x" * 84) for i in range(1, accounts + 1)))
    c.commit()
    c.close()
    cfg, _ = trigger_config(work, f"sqlite:///{path}", ["main.accounts", "main.history"])
    admin = TriggerAdmin(cfg)
    seconds = max(2.0, args.seconds / 2)
    sqlite_rate(path, 1, accounts)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for rnd in range(1, args.rounds + 1):
        for phase in ("off", "on"):
            if phase == "on":
                admin.setup()
            r = sqlite_rate(path, seconds, accounts)
            if phase == "on":
                admin.teardown()
            rates[phase].append(r)
            emit({"scenario": "trigger_overhead", "engine": "sqlite", "phase": phase, "round": rnd,
                  "seconds": seconds, "tps": round(r, 1)})
    off, on = sum(rates["off"]) / len(rates["off"]), sum(rates["on"]) / len(rates["on"])
    emit({"scenario": "trigger_overhead", "engine": "sqlite", "summary": True, "tps_off": round(off, 1),
          "tps_on": round(on, 1), "ratio": round(on / off, 3), "goal": 0.85, "synchronous": "FULL"})
    rows.append(("sqlite (1 writer, UPDATE+INSERT)", f"{off:.0f} tps", f"{on:.0f} tps", f"{on / off:.2f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4],
                    help="pgbench client counts, comma-separated (default 1,4)")
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--agent", action="store_true", help="also a phase with the agent draining the changelog")
    ap.add_argument("--floor", action="store_true", help="also a minimal row trigger (one plain insert, no row "
                                                         "images): the least any trigger capture can cost")
    ap.add_argument("--v3", action="store_true", help="also phases with version 003 (row triggers) installed")
    ap.add_argument("--row", action="store_true", help='also phases with trigger_level = "row" (newest version)')
    ap.add_argument("--v5", action="store_true", help="also phases with version 005 installed (the reference "
                                                      "before 006; with --row also 005's row triggers)")
    ap.add_argument("--bulk", action="store_true", help="also a bulk workload (1000-row statements, 1 client)")
    ap.add_argument("--cpu", action="store_true", help="instead of rates: the backend's CPU time and WAL bytes per "
                                                       "transaction (off, newest, 005, row triggers of both, 003), "
                                                       "a server-side loop")
    ap.add_argument("--cpu-txns", type=int, default=20000)
    ap.add_argument("--no-sqlite", action="store_true")
    args = ap.parse_args()
    work = tmpdir("cdc-bench-trigger-")
    rows: list = []
    if args.cpu:
        bench_pg_cpu(args, work, rows)
        print()
        table(rows, ("workload", "without triggers", "with triggers", "ratio (CPU without / with)"))
        return
    bench_pg(args, work, rows)
    if not args.no_sqlite:
        (work / "sqlite").mkdir()
        bench_sqlite(args, work / "sqlite", rows)
    print()
    table(rows, ("workload", "without triggers", "with triggers", "ratio (goal >= 0.85)"))


if __name__ == "__main__":
    main()
