"""Dashboard memory: the agent runs at a steady load for a while with a wall screen polling `/dashboard.json`
every second; its RSS (VmRSS of the process tree) is sampled every few seconds. The reference is the RSS
after the warm-up minute in the same run: the figure is the growth from there to the end, as a ratio.

    python -m bench.dashboard_memory [--seconds 300] [--rate 2000]

The history ring fills in an hour (720 points per series at 5 s); run with --seconds 3900 to see it full.
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import AgentRun, agent_config, bench_cluster, emit, proc_tree, setup_capture, table, tmpdir
from tests.plugins import free_port


def rss_mb(pid: int) -> float:
    total = 0
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--rate", type=int, default=2000, help="changes per second written")
    ap.add_argument("--warmup", type=int, default=60)
    args = ap.parse_args()
    cluster = bench_cluster()
    db = cluster.create_database()
    db.execute("CREATE TABLE orders (order_id bigint PRIMARY KEY, status char(1), total numeric(12,2))")
    work = tmpdir("cdc-bench-dash-")
    port = free_port()
    cfg = agent_config(work / "agent.toml", db.dsn, ["public.orders"], health=f"127.0.0.1:{port}", extra_source="""
[[events]]
type = "order.status.changed"
table = "public.orders"
sla_ms = 2000
priority = "high"
""", name="benchdash")
    setup_capture(cfg)
    run = AgentRun(cfg, work / "agent.log").start()
    stop = threading.Event()

    def writer() -> None:
        n = 0
        with db.connect() as conn:
            while not stop.is_set():
                t0 = time.monotonic()
                with conn.transaction():
                    for _ in range(args.rate // 10):
                        n += 1
                        conn.execute("INSERT INTO orders VALUES (%s, 'N', 10) ON CONFLICT (order_id) DO UPDATE "
                                     "SET status = CASE orders.status WHEN 'N' THEN 'S' ELSE 'N' END",
                                     (n % 50_000,))
                stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))

    def screen() -> None:
        while not stop.is_set():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard.json", timeout=5).read()
            except OSError:
                pass
            stop.wait(1.0)

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=screen, daemon=True)]
    for t in threads:
        t.start()
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds:
            time.sleep(5)
            samples.append((round(time.monotonic() - t0), rss_mb(run.proc.pid)))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        run.stop()
        cluster.destroy()
    ref = next((r for s, r in samples if s >= args.warmup), samples[0][1])
    end = samples[-1][1]
    emit({"scenario": "dashboard_memory", "seconds": args.seconds, "rate": args.rate, "rss_after_warmup_mb": ref,
          "rss_end_mb": end, "rss_max_mb": max(r for _, r in samples), "growth_ratio": round(end / ref, 3)})
    table([(s, r) for s, r in samples[:: max(1, len(samples) // 12)]], ("second", "RSS MB"))


if __name__ == "__main__":
    main()
