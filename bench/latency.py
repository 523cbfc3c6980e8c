"""Scenario 2 — steady latency: writers commit at 2k, 5k and 10k changes/s for 60 s each; for every event
the time it appears in the file target minus the source transaction's commit time (the event's `time`,
taken from the commit record, not the agent's clock) gives commit-to-file latency; p50 / p95 / p99 per rate.

    python -m bench.latency [--rates 2000,5000,10000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from datetime import datetime

import orjson

from bench.common import MIXED_DDL, AgentRun, agent_config, bench_cluster, emit, setup_capture, table, tmpdir

TICK = 0.01   # the writer commits one transaction every 10 ms


def writer(db, rate: int, seconds: float, start_id: int) -> int:
    per_tick = max(1, round(rate * TICK))
    n, next_id = 0, start_id
    with db.connect() as conn:
        t0 = time.perf_counter()
        tick = 0
        while True:
            due = t0 + tick * TICK
            now = time.perf_counter()
            if now - t0 >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            conn.execute(f"""INSERT INTO bench_items SELECT g, g % 5000, 'SKU-' || g, 1, 9.99, 0.5, true, now(),
                current_date, 'n', '{{}}'::jsonb, md5(g::text)::uuid
                FROM generate_series({next_id}, {next_id + per_tick - 1}) g""")
            next_id += per_tick
            n += per_tick
            tick += 1
    return n


class Tailer(threading.Thread):
    """Follows the file target and records (arrival time - commit time) for each new line."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.lat, self.stop = path, [], threading.Event()

    def run(self) -> None:
        while not os.path.exists(self.path):
            time.sleep(0.001)
        with open(self.path, "rb") as f:
            buf = b""
            while not self.stop.is_set():
                chunk = f.read(1 << 20)
                if not chunk:
                    time.sleep(0.001)
                    continue
                now = time.time()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    ev = orjson.loads(line)
                    commit = datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()
                    self.lat.append(now - commit)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="2000,5000,10000")
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    work = tmpdir("cdc-bench-lat-")
    cluster = bench_cluster()
    rows = []
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"])
        setup_capture(cfg)
        agent = AgentRun(cfg, work / "agent.log").start()
        out = work / "out" / "events.jsonl"
        db.execute("INSERT INTO bench_items SELECT 0, 0, 'warmup', 0, 0, 0, true, now(), current_date, '', '{}', "
                   "md5('0')::uuid")
        tail = Tailer(str(out))
        tail.start()
        while not tail.lat:
            time.sleep(0.05)
        next_id = 1
        for rate in (int(r) for r in args.rates.split(",")):
            tail.lat.clear()
            n = writer(db, rate, args.seconds, next_id)
            next_id += n
            deadline = time.monotonic() + 120
            while len(tail.lat) < n and time.monotonic() < deadline:
                time.sleep(0.05)
            lat = tail.lat[int(len(tail.lat) * 0.05):]  # the first 5% warm the path up
            fig = {"scenario": "latency", "target_rate": rate, "achieved_rate": round(n / args.seconds),
                   "events": len(tail.lat), "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1),
                   "p99_ms": round(pct(lat, 99), 1), "max_ms": round(max(lat) * 1000, 1)}
            emit(fig)
            rows.append((rate, fig["achieved_rate"], fig["p50_ms"], fig["p95_ms"], fig["p99_ms"]))
        fig = {"scenario": "latency_rss", "agent_peak_rss_mb": agent.peak_rss_mb()}
        emit(fig)
        tail.stop.set()
        agent.stop()
        table(rows, ("changes/s asked", "achieved", "p50 ms", "p95 ms", "p99 ms"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
