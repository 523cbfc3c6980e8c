"""What bench/rabbitmq.py, bench/redis.py and bench/mqtt.py share. Each measures, in one run, against the
machine's broker:

- throughput: N events through the target's `send` (batches of the target's default size, built from
  spooled events as the worker hands them over) next to a bare client loop publishing the same bodies with
  the same guarantee (publisher confirms / MULTI-EXEC / PUBACK per message), as events/s and their ratio;
- latency: PostgreSQL writers commit at 5,000 changes/s for `--seconds`; a consumer written with the broker's
  client records arrival minus the event's `time` (the source commit), p50/p95/p99 — commit-to-consumer, so
  it includes the broker's own delivery, an upper bound of commit-to-ack; next to it the bare client loop
  publishing what fell due at 5,000/s in batches, due-to-ack p50/p99, and the target's `send` driven the same
  way (target-level latency, comparable with the bare loop's: no capture, no spool).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from collections.abc import Callable

import orjson

from bench.common import MIXED_DDL, AgentRun, agent_config, bench_cluster, emit, setup_capture, table, tmpdir
from bench.latency import pct, writer
from tests.brokers_b_support import event

TICK = 0.01


def args(default_events: int = 50_000) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=default_events)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    return ap.parse_args()


def events(n: int) -> list:
    return [event(i, subject=str(i % 1000), pad=200) for i in range(1, n + 1)]


def target_rate(target, evs: list, batch: int) -> float:
    target.open()
    t0 = time.perf_counter()
    for i in range(0, len(evs), batch):
        result = target.send(evs[i:i + batch])
        assert not result.rejected, result.rejected[:1]
    dt = time.perf_counter() - t0
    target.close()
    return len(evs) / dt


def commit_latency(body: bytes, now: float) -> float:
    ev = orjson.loads(body)
    return now - datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()


def bare_latency(publish_batch: Callable[[list], None], rate: int, seconds: float, max_batch: int = 500) -> list[float]:
    """Messages fall due at `rate`/s; each round publishes every message due so far (at most `max_batch`, as
    the agent batches what is spooled) and waits for their acks. A message's latency is its ack time minus the
    time it fell due, so a loop that cannot keep up shows as growing latency."""
    pool = events(max_batch)
    lat: list[float] = []
    t0 = time.perf_counter()
    sent = 0
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
        due_count = int((now - t0) * rate) - sent
        if due_count <= 0:
            time.sleep(0.001)
            continue
        k = min(due_count, max_batch)
        publish_batch(pool[:k])
        acked = time.perf_counter()
        lat.extend(acked - (t0 + (sent + i) / rate) for i in range(k))
        sent += k
    return lat


def best_rates(rounds: int, bare: Callable[[], float], target: Callable[[], float]) -> tuple[float, float]:
    """Alternating rounds, best of each: the machine is shared, and a noisy neighbour should not decide."""
    b = t = 0.0
    for _ in range(rounds):
        b = max(b, bare())
        t = max(t, target())
    return b, t


def agent_latency(target_toml: str, consumer, rate: int, seconds: float, name: str) -> tuple[dict, list[float]]:
    """The agent with `target_toml` from a bench PostgreSQL; `consumer.lat` fills with commit-to-arrival times."""
    work = tmpdir(f"cdc-bench-{name}-")
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"], targets=target_toml)
        setup_capture(cfg)
        agent = AgentRun(cfg, work / "agent.log").start()
        db.execute("INSERT INTO bench_items SELECT 0, 0, 'warmup', 0, 0, 0, true, now(), current_date, '', '{}', "
                   "md5('0')::uuid")
        deadline = time.monotonic() + 60
        while not consumer.lat:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no event reached the consumer; see {work / 'agent.log'}")
            time.sleep(0.05)
        consumer.lat.clear()
        n = writer(db, rate, seconds, 1)
        deadline = time.monotonic() + 120
        while len(consumer.lat) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        rss = agent.peak_rss_mb()
        agent.stop()
        return {"achieved_rate": round(n / seconds), "received": len(consumer.lat), "agent_peak_rss_mb": rss}, \
            consumer.lat[int(len(consumer.lat) * 0.05):]          # the first 5% warm the path up
    finally:
        cluster.destroy()


def report(broker: str, n: int, bare: float, agent: float, lat_fig: dict, lat: list[float], bare_lat: list[float],
           rate: int, target_lat: list[float]) -> None:
    fig = {"scenario": f"{broker}_throughput", "events": n, "bare_client_per_s": round(bare),
           "target_per_s": round(agent), "ratio": round(agent / bare, 2)}
    emit(fig)
    lfig = {"scenario": f"{broker}_latency", "rate": rate, **lat_fig, "p50_ms": round(pct(lat, 50), 1),
            "p95_ms": round(pct(lat, 95), 1), "p99_ms": round(pct(lat, 99), 1),
            "bare_client_p50_ms": round(pct(bare_lat, 50), 1), "bare_client_p99_ms": round(pct(bare_lat, 99), 1),
            "target_level_p50_ms": round(pct(target_lat, 50), 1), "target_level_p99_ms": round(pct(target_lat, 99), 1)}
    emit(lfig)
    table([(broker, fig["bare_client_per_s"], fig["target_per_s"], fig["ratio"], lfig["target_level_p99_ms"],
            lfig["bare_client_p99_ms"], lfig["p50_ms"], lfig["p99_ms"])],
          ("broker", "bare events/s", "target events/s", "ratio", "target p99 ms", "bare p99 ms",
           "agent commit-to-consumer p50 ms", "p99 ms"))
