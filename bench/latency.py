"""Scenario 2 — steady latency: writers commit at each rate for `--seconds`; for every event the time it
appears in the file target minus the source transaction's commit time (the event's `time`, taken from the
commit record, not the agent's clock) gives commit-to-file latency; p50 / p95 / p99 per rate.

    python -m bench.latency [--rates 2000,5000,10000] [--seconds 60] [--writers N] [--no-stages]

So that the bench does not slow what it measures:
- the tailer runs in its own process and parses only the `time` field of each line (cached per commit);
- the writers are processes too, one connection each, ceil(rate / WRITER_RATE) of them unless --writers
  says; the achieved rate is reported next to the asked one.
The reference, measured in the same run: the latency floor of this disk, a bare loop of small write+fsync
in the bench's directory, once alone just before each rate (with one-row SQLite commits, WAL +
synchronous=FULL, as the spool does) and once alongside the rate (one fsync every 10 ms, in its own
process: the disk as the agent sees it); latencies are also printed as a ratio against the latter's p50/p99.
The writers time their INSERT + COMMIT too: PostgreSQL's side, its own WAL fsync included (the event's
commit time is stamped before that fsync).
Stages: the agent runs with CDC_AGENT_TIMING (agent/timing.py) and each capture batch is followed through
source read → batch closed → mapped → spool committed → delivery fetched → written → fsynced → cursor
committed; the p50/p99 of each stage per rate tell where the milliseconds go.
"""

from __future__ import annotations

import argparse
import bisect
import math
import multiprocessing as mp
import os
import sqlite3
import time
from array import array
from datetime import datetime
from pathlib import Path

import psycopg

from bench.common import MIXED_DDL, AgentRun, agent_config, bench_cluster, emit, setup_capture, table, tmpdir

TICK = 0.01           # each writer commits one transaction every 10 ms
WRITER_RATE = 15_000  # changes/s one writer process is asked for at most


def writer(dsn: str, per_tick: int, seconds: float, start_id: int, stride: int, offset: int, t_start: float,
           out) -> None:
    """Commits `per_tick` rows every TICK from wall time `t_start`; ids start_id + k*stride + offset, so
    several writers never collide. Sends (rows, ticks that began more than one TICK late, the seconds each
    INSERT + COMMIT took: PostgreSQL's side of the commit, its WAL fsync included)."""
    n = late = 0
    took = array("d")
    with psycopg.connect(dsn, autocommit=True) as conn:
        delay = t_start - time.time()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        tick = 0
        while True:
            due = t0 + tick * TICK
            now = time.perf_counter()
            if now - t0 >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            elif now - due > TICK:
                late += 1
            base = tick * per_tick
            t = time.perf_counter()
            conn.execute(f"""INSERT INTO bench_items SELECT {start_id} + (({base} + g) * {stride} + {offset}),
                g % 5000, 'SKU-' || g, 1, 9.99, 0.5, true, now(), current_date, 'n', '{{}}'::jsonb,
                md5(g::text)::uuid FROM generate_series(0, {per_tick - 1}) g""")
            took.append(time.perf_counter() - t)
            n += per_tick
            tick += 1
    out.send((n, late, took.tobytes()))


def fsync_probe(folder: str, seconds: float, t_start: float, out) -> None:
    """Own process, during a rate: one small append+fsync every TICK, each timed; the disk's latency under
    the same load as the agent's (it adds one small fsync per 10 ms to it). Sends the durations."""
    path = Path(folder) / "fsync-probe-live"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    took = array("d")
    delay = t_start - time.time()
    if delay > 0:
        time.sleep(delay)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        os.write(fd, b"x" * 200 + b"\n")
        os.fsync(fd)
        took.append(time.perf_counter() - t)
        time.sleep(max(0.0, TICK - (time.perf_counter() - t)))
    os.close(fd)
    path.unlink()
    out.send(took.tobytes())


def tailer(path: str, conn) -> None:
    """Own process: follows the file target and records (arrival time - commit time) for each new line.
    Commands on `conn`: "count" → lines seen since the last "take"; "take" → their latencies; "stop"."""
    try:
        os.nice(-10)     # on a loaded machine a tailer waiting for the CPU would add its wait to every figure
    except OSError:
        pass             # not root: the comparison with the agent's own write stamp (stages) shows the gap
    lat = array("d")
    commit_of: dict[bytes, float] = {}
    f = None
    buf = b""
    while True:
        if conn.poll():
            cmd = conn.recv()
            if cmd == "count":
                conn.send(len(lat))
            elif cmd == "take":
                conn.send(lat.tobytes())
                lat = array("d")
            else:
                return
        if f is None:
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                time.sleep(0.001)
                continue
        chunk = f.read(1 << 20)
        if not chunk:
            time.sleep(0.0005)
            continue
        now = time.time()
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            i = line.find(b'"time":"') + 8
            raw = line[i:line.index(b'"', i)]
            commit = commit_of.get(raw)
            if commit is None:
                if len(commit_of) > 100_000:
                    commit_of.clear()
                commit = commit_of[raw] = datetime.fromisoformat(raw.decode().replace("Z", "+00:00")).timestamp()
            lat.append(now - commit)


def pct(xs, p: float) -> float:
    """p-th percentile of seconds, in ms."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")


def fsync_floor(folder: Path, rounds: int = 300) -> dict:
    """The disk's latency floor: p50/p99 of one small append+fsync, and of one-row SQLite commits in WAL mode
    with synchronous=FULL (what a spool commit costs at least)."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    fs = []
    for _ in range(rounds):
        t = time.perf_counter()
        os.write(fd, b"x" * 200 + b"\n")
        os.fsync(fd)
        fs.append(time.perf_counter() - t)
    os.close(fd)
    os.unlink(path)
    db = sqlite3.connect(folder / "commit-probe.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (x blob)")
    sq = []
    for _ in range(rounds):
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 2000,))
        db.execute("COMMIT")
        sq.append(time.perf_counter() - t)
    db.close()
    for p in folder.glob("commit-probe.db*"):
        p.unlink()
    return {"fsync_p50_ms": round(pct(fs, 50), 2), "fsync_p99_ms": round(pct(fs, 99), 2),
            "sqlite_commit_p50_ms": round(pct(sq, 50), 2), "sqlite_commit_p99_ms": round(pct(sq, 99), 2)}


STAGES = (  # name, (capture or delivery record, stamp) from, to
    # PostgreSQL's WAL flush (the commit time is stamped before it), the walsender, the socket, and the
    # capture loop finishing the batch before (reading again only after its spool commit)
    ("commit→read", ("c", "commit0"), ("c", "first")),
    ("linger", ("c", "first"), ("c", "closed")),          # the batch waits for more
    ("map", ("c", "closed"), ("c", "mapped")),
    ("spool", ("c", "mapped"), ("c", "spooled")),         # pack + SQLite commit (fsync)
    ("handoff", ("c", "spooled"), ("d", "fetch")),        # wake + the delivery finishing the batch before
    ("fetch+write", ("d", "fetch"), ("d", "written")),    # spool read, write(): the line is in the file
    ("fsync", ("d", "written"), ("d", "sent")),           # not on this batch's path: on the next one's
    ("advance", ("d", "sent"), ("d", "advanced")),        # cursor commit (fsync), idem
    ("commit→written", ("c", "commit0"), ("d", "written")),
    ("confirm+loop", ("c", "spooled"), ("c", "next_entered")),  # the capture loop after a spool commit
)


def stages(path: Path, since: float) -> dict:
    """Per capture batch closed after `since`, joined with the delivered batch that carried its last event:
    p50/p99 of each stage, ms (the batch's oldest change: its first)."""
    import json
    caps, dels = [], []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        r = json.loads(line)
        (caps if r["k"] == "capture" else dels).append(r)
    for a, b in zip(caps, caps[1:]):
        a["next_entered"] = b["entered"]
    caps = [c for c in caps if c["closed"] >= since]
    dels.sort(key=lambda d: d["seq"])
    dseq = [d["seq"] for d in dels]
    spans: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    woke = []
    per_change = array("d")     # commit→written weighted by the batch's changes (at its oldest commit time)
    for c in caps:
        i = bisect.bisect_left(dseq, c["seq"])
        if i == len(dels):
            continue
        d = dels[i]
        rec = {"c": c, "d": d}
        for name, (ra, ka), (rb, kb) in STAGES:
            a, b = rec[ra].get(ka), rec[rb].get(kb)
            if a is not None and b is not None:
                spans[name].append(max(0.0, b - a))
        if d.get("written") is not None:
            per_change.extend([max(0.0, d["written"] - c["commit0"])] * c["n"])
        if d.get("woke") is not None and d["woke"] >= c["spooled"]:
            woke.append(d["woke"] - c["spooled"])
    out: dict = {"batches": len(caps), "changes_per_batch_p50":
                 sorted(c["n"] for c in caps)[len(caps) // 2] if caps else 0}
    for name, xs in spans.items():
        out[name] = (round(pct(xs, 50), 1), round(pct(xs, 99), 1))
    out["wake (when idle)"] = (round(pct(woke, 50), 2), round(pct(woke, 99), 2))
    out["per change"] = (round(pct(per_change, 50), 1), round(pct(per_change, 99), 1))
    return out


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="2000,5000,10000")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--writers", type=int, default=0, help="writer processes per rate (default: by rate)")
    ap.add_argument("--no-stages", action="store_true", help="run the agent without CDC_AGENT_TIMING")
    args = ap.parse_args()
    work = tmpdir("cdc-bench-lat-")
    timing_log = work / "stages.jsonl"
    if not args.no_stages:
        os.environ["CDC_AGENT_TIMING"] = str(timing_log)
    ctx = mp.get_context("spawn")
    cluster = bench_cluster()
    rows, stage_rows = [], []
    tail_proc = None
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"])
        setup_capture(cfg)
        agent = AgentRun(cfg, work / "agent.log").start()
        out = work / "out" / "events.jsonl"
        tail_conn, child_conn = ctx.Pipe()
        tail_proc = ctx.Process(target=tailer, args=(str(out), child_conn), daemon=True)
        tail_proc.start()
        db.execute("INSERT INTO bench_items SELECT 0, 0, 'warmup', 0, 0, 0, true, now(), current_date, '', '{}', "
                   "md5('0')::uuid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tail_conn.send("count")
            if tail_conn.recv():
                break
            time.sleep(0.05)
        next_id = 1
        for rate in (int(r) for r in args.rates.split(",")):
            floor = fsync_floor(work)
            nwriters = args.writers or max(1, math.ceil(rate / WRITER_RATE))
            per_tick = max(1, round(rate / nwriters * TICK))
            tail_conn.send("take")
            tail_conn.recv()
            load_before = load()
            t_start = time.time() + 0.5
            pipes, procs = [], []
            for w in range(nwriters):
                mine, theirs = ctx.Pipe()
                p = ctx.Process(target=writer, args=(db.dsn, per_tick, args.seconds, next_id, nwriters, w, t_start,
                                                     theirs), daemon=True)
                p.start()
                pipes.append(mine)
                procs.append(p)
            probe_pipe, theirs = ctx.Pipe()
            probe = ctx.Process(target=fsync_probe, args=(str(work), args.seconds, t_start, theirs), daemon=True)
            probe.start()
            results = [c.recv() for c in pipes]
            live = array("d")
            live.frombytes(probe_pipe.recv())
            probe.join()
            for p in procs:
                p.join()
            n = sum(r[0] for r in results)
            late = sum(r[1] for r in results)
            took = array("d")
            for r in results:
                took.frombytes(r[2])
            next_id += n + nwriters
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                tail_conn.send("count")
                if tail_conn.recv() >= n:
                    break
                time.sleep(0.05)
            tail_conn.send("take")
            seen = array("d")
            seen.frombytes(tail_conn.recv())
            lat = seen[int(len(seen) * 0.05):]  # the first 5% warm the path up
            fig = {"scenario": "latency", "target_rate": rate, "writers": nwriters,
                   "achieved_rate": round(n / args.seconds), "late_ticks": late, "events": len(seen),
                   "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1),
                   "p99_ms": round(pct(lat, 99), 1), "max_ms": round(max(lat) * 1000, 1) if lat else None,
                   "pg_commit_p50_ms": round(pct(took, 50), 1), "pg_commit_p99_ms": round(pct(took, 99), 1),
                   "live_fsync_p50_ms": round(pct(live, 50), 2), "live_fsync_p99_ms": round(pct(live, 99), 2),
                   **floor, "load": f"{load_before}-{load()}"}
            # against the fsync probe that ran alongside: the disk as the agent saw it
            fig["p50_over_fsync_p50"] = round(fig["p50_ms"] / max(0.01, fig["live_fsync_p50_ms"]), 1)
            fig["p99_over_fsync_p99"] = round(fig["p99_ms"] / max(0.01, fig["live_fsync_p99_ms"]), 1)
            emit(fig)
            st = stages(timing_log, t_start + args.seconds * 0.05) if not args.no_stages else {}
            if st:
                emit({"scenario": "latency_stages", "target_rate": rate, **st})
                for name, _, _ in STAGES:
                    if name in st:
                        stage_rows.append((rate, name, *st[name]))
                stage_rows.append((rate, "wake (when idle)", *st.get("wake (when idle)", ("", ""))))
            stamped = "/".join(str(x) for x in st.get("per change", ("-", "-")))
            rows.append((rate, fig["achieved_rate"], nwriters, fig["p50_ms"], fig["p95_ms"], fig["p99_ms"], stamped,
                         f"{fig['live_fsync_p50_ms']}/{fig['live_fsync_p99_ms']}",
                         f"{fig['p50_over_fsync_p50']}/{fig['p99_over_fsync_p99']}", fig["load"]))
        emit({"scenario": "latency_rss", "agent_peak_rss_mb": agent.peak_rss_mb()})
        agent.stop()
        table(rows, ("changes/s asked", "achieved", "writers", "p50 ms", "p95 ms", "p99 ms",
                     "agent-stamped p50/p99 (per change)", "live fsync p50/p99 ms", "÷ fsync p50/p99", "load"))
        if stage_rows:
            print()
            table(stage_rows, ("changes/s", "stage (per batch, its oldest change)", "p50 ms", "p99 ms"))
    finally:
        if tail_proc is not None and tail_proc.is_alive():
            tail_proc.terminate()
        cluster.destroy()


if __name__ == "__main__":
    main()
