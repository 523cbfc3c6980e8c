"""The delivery side alone, in one process: a kept spool (e.g. `CDC_BENCH_KEEP=1 python -m bench.drain`'s
state/spool.db) delivered again, from cursor 0, into a fresh file target, through one TargetWorker's lines
path as the delivery child runs it (fetch_runs → lines → send_lines: write, fsync, DONTNEED → advance →
the monitor's digest). No capture process and no database server compete with it, so its CPU per event is
steadier than the drain's; reference in the same run: the same bytes written and fsynced in the same batch
sizes by a bare loop (the write path alone, as the file target does it).

    python -m bench.delivery_replay --spool /tmp/cdc-bench-drain-*/state/spool.db [--rounds 3] [--tailer]

CPU µs per event (user + system, getrusage of this process), wall µs per event, minor page faults. The
worker runs in a thread, as in the child (malloc gives threads arenas of their own), after the child's
malloc thresholds are set (`--no-malloc-tuning` leaves glibc's); `--tailer`: a reader in another process
tails the file meanwhile, as bench.drain's `wait_lines` does (a consumer of the file changes which pages the
target's writes get: docs/performance.md, "Delivery child, fifth pass").
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent import config as agent_config, delivery_child
from agent.monitor import Monitor
from agent.spool import Spool
from agent.worker import TargetWorker, tune_gc
from bench.common import emit, table, tmpdir


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


# a reader tailing the file as bench.drain's wait_lines does (every 50 ms, what was appended since), in a
# process of its own: what a consumer of the file does to the page cache the target writes into
TAILER = """
import os, sys, time
path, offset = sys.argv[1], 0
while not os.path.exists(sys.argv[2]):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for buf in iter(lambda: f.read(1 << 20), b""):
                offset += len(buf)
    except FileNotFoundError:
        pass
    time.sleep(0.05)
"""


def replay(spool_db: Path, work: Path, tailer: bool = False, no_malloc_tuning: bool = False) -> dict:
    """Deliver every event of a copy of `spool_db` into work/out/events.jsonl; the figures of that.
    `tailer`: with a reader tailing the file in another process meanwhile; `no_malloc_tuning`: without the
    child's malloc thresholds (they stay set for the rest of the process once set)."""
    state = work / "state"
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    shutil.copyfile(spool_db, state / "spool.db")
    with sqlite3.connect(state / "spool.db") as db:
        db.execute("UPDATE targets SET cursor = 0, delivered = 0")
        (events,) = db.execute("SELECT coalesce(sum(n), 0) FROM frames").fetchone()
    (work / "agent.toml").write_text('[agent]\nname = "replay"\nstate_dir = "state"\n\n'
                                     '[source]\nkind = "postgres"\ndsn = "postgresql://replay@127.0.0.1/replay"\n'
                                     'tables = ["public.t"]\n\n'
                                     '[[targets]]\nname = "file"\nkind = "file"\npath = "out/events.jsonl"\n\n'
                                     '[health]\nlisten = "off"\n')
    cfg = agent_config.load(work / "agent.toml")
    monitor = Monitor(cfg.agent.name, cfg.source.kind)
    monitor.digests = {}
    monitor.relay = lambda name, digest: None
    worker = TargetWorker(cfg, cfg.targets[0], monitor, threading.Event())
    spool = Spool(cfg.agent.state_dir)
    spool.ensure_targets([t.name for t in cfg.targets])
    from adapters import build_target
    target = build_target(cfg.targets[0])
    target.open()
    name = cfg.targets[0].name
    done = work / "replay.done"
    done.unlink(missing_ok=True)
    reader = subprocess.Popen([sys.executable, "-c", TAILER, str(work / "out" / "events.jsonl"), str(done)]) \
        if tailer else None
    keep_pages = getattr(delivery_child, "keep_malloc_pages", None)   # what the child does first (not in
    if keep_pages is not None and not no_malloc_tuning:              # a tree from before it: A/B runs)
        keep_pages()

    def deliver() -> None:     # TargetWorker._deliver_all's lines path, without its waits
        while True:
            cursor = spool.counters(name).cursor
            runs, upto = worker._next_runs(spool, cursor)
            if upto == cursor:
                break
            worker._send_lines(spool, target, target.send_lines, runs, upto, None)

    tune_gc()              # as the delivery child does after its imports
    # in a thread of its own, as the delivery child runs its worker (malloc gives threads arenas of their own)
    thread = threading.Thread(target=deliver)
    u0, s0, f0 = _usage()
    t0 = time.perf_counter()
    thread.start()
    thread.join()
    wall = time.perf_counter() - t0
    u1, s1, f1 = _usage()
    done.touch()
    if reader is not None:
        reader.wait()
    target.close()
    spool.close()
    size = os.path.getsize(work / "out" / "events.jsonl")
    return {"events": events, "bytes": size, "user_s": u1 - u0, "sys_s": s1 - s0, "wall_s": wall,
            "minflt": f1 - f0}


def bare_writes(path: Path, work: Path, batch: int) -> dict:
    """The replay's output file written again in `batch`-event pieces, each written, fsynced and dropped
    from the page cache as the file target does: the write path's own cost."""
    data = path.read_bytes()
    out = work / "bare.jsonl"
    out.unlink(missing_ok=True)
    cuts = [0]
    nl = -1
    while True:
        for _ in range(batch):
            nl = data.find(b"\n", nl + 1)
            if nl < 0:
                break
        if nl < 0:
            break
        cuts.append(nl + 1)
    if cuts[-1] != len(data):
        cuts.append(len(data))
    view = memoryview(data)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    u0, s0, f0 = _usage()
    t0 = time.perf_counter()
    for a, b in zip(cuts, cuts[1:]):
        os.write(fd, view[a:b])
        os.fsync(fd)
        os.posix_fadvise(fd, a, b - a, os.POSIX_FADV_DONTNEED)
    wall = time.perf_counter() - t0
    u1, s1, f1 = _usage()
    os.close(fd)
    out.unlink()
    return {"user_s": u1 - u0, "sys_s": s1 - s0, "wall_s": wall, "minflt": f1 - f0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spool", type=Path, required=True, help="a kept spool.db (or the state_dir holding it)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-bare", action="store_true", help="skip the bare write loop")
    ap.add_argument("--tailer", action="store_true", help="a reader tails the file meanwhile, as in bench.drain")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's malloc thresholds as they are (the delivery child sets its own)")
    args = ap.parse_args()
    spool_db = args.spool / "spool.db" if args.spool.is_dir() else args.spool
    work = tmpdir("cdc-bench-replay-")
    rows = []
    for r in range(args.rounds):
        fig = replay(spool_db, work, args.tailer, args.no_malloc_tuning)
        n = fig["events"]
        res = {"scenario": "delivery_replay", "round": r + 1, "events": n, "file_bytes": fig["bytes"],
               "cpu_us_per_event": round((fig["user_s"] + fig["sys_s"]) * 1e6 / n, 3),
               "user_us_per_event": round(fig["user_s"] * 1e6 / n, 3),
               "sys_us_per_event": round(fig["sys_s"] * 1e6 / n, 3),
               "wall_us_per_event": round(fig["wall_s"] * 1e6 / n, 3),
               "minflt_per_1000_events": round(fig["minflt"] * 1000 / n, 2)}
        row = ["replay", res["cpu_us_per_event"], res["user_us_per_event"], res["sys_us_per_event"],
               res["wall_us_per_event"], res["minflt_per_1000_events"]]
        if not args.no_bare:
            bare = bare_writes(work / "out" / "events.jsonl", work, 5000)
            res.update({"bare_write_sys_us_per_event": round(bare["sys_s"] * 1e6 / n, 3),
                        "bare_write_wall_us_per_event": round(bare["wall_s"] * 1e6 / n, 3),
                        "replay_sys_vs_bare_write_sys": round(fig["sys_s"] / max(bare["sys_s"], 1e-9), 2)})
            row.append(res["bare_write_sys_us_per_event"])
        emit(res)
        rows.append(tuple(row))
    table(rows, ("round", "CPU µs/event", "user", "sys", "wall µs/event", "minflt/1000", "bare write sys")[
        :len(rows[0])])


if __name__ == "__main__":
    main()
