"""The spool's two committers without a database around them: capture's append and delivery's cursor commit
on one spool, as at a steady rate in `bench.latency`, each commit timed.

    python -m bench.spool_commits [--rate 50000] [--batch 375] [--seconds 20]

This process appends a batch of `--batch` events every batch / rate seconds (the events made beforehand, as
the mapper hands them over) and wakes a delivery process through a pipe, which fetches what is new, writes
it to a file with an fsync (as the file target does) and commits its cursor (Spool.advance), as the agent's
worker does. The agent's WAL checkpoint thread runs here as it does in the agent, where the tree has one.
Printed: p50 / p99 / max of each append and each advance (ms), how often a commit found the other side's
lock held, and the reference from the same run: bare one-row SQLite commits (WAL, synchronous=FULL) and
bare fsyncs in the same directory, measured just before.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from array import array
from pathlib import Path

from bench.common import emit, tmpdir


def pct(xs, p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 2) if xs else float("nan")


def open_spool(state: Path):
    from agent.spool import Spool
    try:
        return Spool(state, background_checkpoints=True)     # the agent's own connections (where the tree has it)
    except TypeError:
        return Spool(state)


def deliver(state: str, wake, out_path: str, result) -> None:
    from agent.spool_frames import lines_of
    spool = open_spool(Path(state))
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    took = array("d")
    cursor = 0
    while True:
        try:
            wake.recv_bytes()
            while wake.poll():
                wake.recv_bytes()
        except EOFError:
            break                              # the appender is done
        while True:
            runs = spool.fetch_runs(cursor, 5000, lines=True)
            if not runs:
                break
            last, _, hi = runs[-1]
            upto = last.seq + hi - 1
            os.write(fd, lines_of(runs))
            os.fsync(fd)
            t = time.perf_counter()
            spool.advance("t", upto, sum(h - lo for _, lo, h in runs), [])
            took.append(time.perf_counter() - t)
            cursor = upto
    os.close(fd)
    spool.close()
    result.send(took.tobytes())


def make_batch(b: int, batch: int) -> list:
    """Batch number `b` (from 0): `batch` events at positions after every earlier batch's."""
    from agent.mapping import MappedEvent
    now = time.time()
    events = []
    for k in range(batch):
        n = b * batch + k + 1
        body = (b'{"specversion":"1.0","id":"%d","source":"cdc-agent/bench","type":"row.public.bench_items",'
                b'"subject":"%d","time":"2026-12-02T06:00:00.%06dZ","datacontenttype":"application/json",'
                b'"data":{"op":"insert","table":"public.bench_items","key":{"id":%d},"after":{"id":%d,'
                b'"qty":%d,"sku":"SKU-%d","price":"9.99","active":true,"note":"n"}}}'
                % (n, n, n % 1000000, n, n, n % 5000, n % 5000))
        events.append(MappedEvent(id=f"ev-{n}", type="row.public.bench_items", subject=str(n),
                                  position=f"{b + 1:016X}:{k:08d}", commit_ts=now, body=body))
    return events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=50_000, help="events per second")
    ap.add_argument("--batch", type=int, default=375, help="events per append")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    from bench.latency import fsync_floor
    work = tmpdir("cdc-bench-spoolcommits-")
    state = work / "state"
    floor = fsync_floor(work)
    spool = open_spool(state)
    spool.ensure_targets(["t"])
    try:
        from agent.spool_checkpoints import SpoolCheckpointer
        checkpoints = SpoolCheckpointer(state)
        checkpoints.start()
        kind = "thread"
    except ImportError:
        checkpoints = None
        kind = "commits"
    every = args.batch / args.rate
    count = int(args.seconds / every)
    ctx = mp.get_context("spawn")
    wake_r, wake_w = ctx.Pipe(duplex=False)
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=deliver, args=(str(state), wake_r, str(work / "out.jsonl"), theirs))
    child.start()
    wake_r.close()
    took = array("d")
    late = 0
    t0 = time.perf_counter()
    for i in range(count):
        events = make_batch(i, args.batch)       # made between two appends, as the mapper hands them over
        due = t0 + i * every
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > every:
            late += 1
        t = time.perf_counter()
        spool.append(events, [], f"{i + 1:016X}")
        took.append(time.perf_counter() - t)
        wake_w.send_bytes(b"w")
    wake_w.close()
    adv = array("d")
    adv.frombytes(mine.recv())
    child.join()
    if checkpoints is not None:
        checkpoints.stop()
    spool.close()
    skip = len(took) // 20                     # the first 5%: the WAL and the caches warm up
    fig = {"scenario": "spool_commits", "rate": args.rate, "batch": args.batch, "appends": len(took),
           "late_batches": late, "checkpoints_by": kind,
           "append_p50_ms": pct(took[skip:], 50), "append_p99_ms": pct(took[skip:], 99),
           "append_max_ms": round(max(took[skip:]) * 1000, 2),
           "advance_p50_ms": pct(adv[skip:], 50), "advance_p99_ms": pct(adv[skip:], 99),
           "advance_max_ms": round(max(adv[skip:]) * 1000, 2), "advances": len(adv), **floor,
           "load": Path("/proc/loadavg").read_text().split()[0]}
    emit(fig)


if __name__ == "__main__":
    main()
