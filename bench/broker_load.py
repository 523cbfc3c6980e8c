"""What the broker benchmarks (bench/kafka.py, bench/nats.py) share: realistic events, a throughput run and
a paced run that measures commit-to-ack latency, for a target and for a bare client loop alike.

"Commit" here is the moment an event becomes available to deliver (the spool commit, as the worker sees it);
"ack" the moment the broker confirmed the batch holding it. A sender loop takes whatever is available, up to
`batch_size`, sends it and waits for the acknowledgement, as the target worker does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import orjson

from agent.interfaces import SpooledEvent


def make_events(n: int, subjects: int = 1000, pad: int = 120) -> list[SpooledEvent]:
    """CloudEvents of about 600 bytes, like a row event of a 12-column table."""
    out = []
    for i in range(n):
        subject = str(i % subjects)
        ev = {"specversion": "1.0", "id": f"{i:032x}", "source": "cdc-agent://bench/public.bench_items",
              "type": "row.public.bench_items", "subject": subject, "time": "2026-12-01T10:00:00.000000Z",
              "datacontenttype": "application/json", "position": f"{i:016X}:000001", "txid": str(i // 10),
              "data": {"op": "insert", "key": {"id": i}, "before": None, "changed": None,
                       "after": {"id": i, "customer_id": i % 5000, "sku": f"SKU-{i}", "qty": 3, "price": "9.99",
                                 "active": True, "note": "x" * pad}}}
        out.append(SpooledEvent(i + 1, ev["id"], ev["type"], subject, orjson.dumps(ev), 0.0, ev["position"]))
    return out


def throughput(send: Callable[[list[SpooledEvent]], None], events: list[SpooledEvent], batch_size: int) -> float:
    """Events per second through `send`, one batch after another."""
    t0 = time.perf_counter()
    for k in range(0, len(events), batch_size):
        send(events[k:k + batch_size])
    return len(events) / (time.perf_counter() - t0)


def paced_latency(send: Callable[[list[SpooledEvent]], None], events: list[SpooledEvent], rate: int,
                  batch_size: int) -> dict:
    """Events become available at `rate`/s; a sender delivers what is there in batches of up to batch_size.
    Returns p50/p95/p99 of ack time minus availability time (ms), and the rate achieved."""
    ready: deque[tuple[SpooledEvent, float]] = deque()
    done = threading.Event()

    def feeder() -> None:
        t0 = time.perf_counter()
        for i, ev in enumerate(events):
            due = t0 + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            ready.append((ev, time.perf_counter()))
        done.set()

    lat: list[float] = []
    th = threading.Thread(target=feeder, daemon=True)
    t_start = time.perf_counter()
    th.start()
    while not (done.is_set() and not ready):
        if not ready:
            time.sleep(0.0005)
            continue
        batch = [ready.popleft() for _ in range(min(batch_size, len(ready)))]
        send([ev for ev, _ in batch])
        acked = time.perf_counter()
        lat.extend(acked - t for _, t in batch)
    elapsed = time.perf_counter() - t_start
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1)
    return {"p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "achieved_per_s": round(len(lat) / elapsed)}


def median_figures(runs: list[dict]) -> dict:
    """Per figure, the median over the rounds."""
    return {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
