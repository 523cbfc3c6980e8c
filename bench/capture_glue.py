"""Scenario — the capture process's glue: real pgoutput frames of the drain's 12-column table replayed
through `PostgresSource.poll` (the replication read loop, with a stand-in for the libpq connection that hands
out the frames) -> `CaptureCore.read` (batches, checkpoints) -> `EventMapper.map` (CloudEvent bodies), in one
process with no I/O: what the capture process pays per change besides the socket and the spool. `--live`:
the same from a real replication connection (the slot read again from its start each round), psycopg and
the socket reads included. The compiled path and the pure path (CDC_AGENT_PURE's) run in the same run; the
pure path is the reference.

    python -m bench.capture_glue [--changes 200000] [--rounds 3] [--profile] [--messages FILE] [--live]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pickle
import pstats
import struct
import time
from pathlib import Path

from agent import config, fastpath, pgoutput as po
from agent.capture import CaptureCore
from agent.mapping import EventMapper
from agent.sources.postgres.stream import PostgresSource
from agent.sources.postgres import PostgresAdmin
from bench.capture_core import read_messages
from bench.common import MIXED_DDL, agent_config, bench_cluster, emit, table, tmpdir, write_mixed_changes

_XLOG = struct.Struct(">cQQq")


class _ReplayConn:
    """The slice of psycopg's PGconn that PostgresSource.poll uses, handing out recorded CopyData frames."""

    def __init__(self, frames: list[bytes]):
        self.frames, self.i = frames, 0

    def get_copy_data(self, async_: int):
        i = self.i
        if i < len(self.frames):
            self.i = i + 1
            f = self.frames[i]
            return len(f), memoryview(f)
        return 0, b""

    def consume_input(self) -> None:
        pass

    def put_copy_data(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


class _NoPoll:
    def poll(self, ms: float) -> list:
        return []


def _source(cfg, frames: list[bytes], pure: bool) -> PostgresSource:
    src = PostgresSource(cfg)
    src._decoder = po.Decoder(pure=pure)
    src._take = fastpath.row_taker() if src._decoder.renders else None
    src._pg = _ReplayConn(frames)        # type: ignore[assignment]
    src._poll = _NoPoll()                # type: ignore[assignment]
    src._meta_query = lambda sql, params=None: [("id",)]     # type: ignore[method-assign]
    return src


def run(cfg, frames: list[bytes], pure: bool) -> tuple[float, float, int, int]:
    """(read seconds, map seconds, changes, body bytes) of CPU time."""
    src = _source(cfg, frames, pure)
    core = CaptureCore(src)
    mapper = EventMapper(cfg, pure=pure)
    read_s = map_s = 0.0
    n = size = 0
    while True:
        t0 = time.process_time()
        batch = core.read(cfg.source.batch_size, 0.001)
        t1 = time.process_time()
        if not batch.changes and batch.checkpoint is None:
            break
        events, failures = mapper.map(batch.changes)
        t2 = time.process_time()
        read_s += t1 - t0
        map_s += t2 - t1
        n += len(batch.changes)
        size += sum(len(e.body) for e in events)
        assert not failures, failures[:1]
    return read_s, map_s, n, size


def run_live(cfg, changes: int, pure: bool) -> tuple[float, float, int, int]:
    """The same over a real replication connection (the whole slot, from its start): psycopg's
    get_copy_data, the socket reads and the walsender's framing are in it."""
    src = PostgresSource(cfg)
    src._decoder = po.Decoder(pure=pure)
    src._take = fastpath.row_taker() if src._decoder.renders else None
    src.start(None)
    try:
        core = CaptureCore(src)
        mapper = EventMapper(cfg, pure=pure)
        read_s = map_s = 0.0
        n = size = 0
        while n < changes:
            t0 = time.process_time()
            batch = core.read(cfg.source.batch_size, 2.0)
            t1 = time.process_time()
            events, _ = mapper.map(batch.changes)
            t2 = time.process_time()
            read_s += t1 - t0
            map_s += t2 - t1
            n += len(batch.changes)
            size += sum(len(e.body) for e in events)
        return read_s, map_s, n, size
    finally:
        src.close()


def live(args) -> None:
    work = tmpdir("cdc-bench-glue-")
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        cfg = config.load(agent_config(work / "agent.toml", db.dsn, ["public.bench_items"],
                                       extra_source="heartbeat_seconds = 0"))
        PostgresAdmin(cfg).setup()
        write_mixed_changes(db, args.changes)
        report(args, lambda path: run_live(cfg, args.changes, pure=path == "pure"), "live")
    finally:
        cluster.destroy()


def report(args, run_path, label: str) -> None:
    rows = []
    for r in range(args.rounds):
        us = {}
        for path in ("compiled", "pure"):
            rd, mp, n, size = run_path(path)
            us[path] = (rd * 1e6 / n, mp * 1e6 / n)
            emit({"scenario": f"capture_glue_{label}", "round": r + 1, "path": path, "changes": n,
                  "read_us_per_change": round(us[path][0], 2), "map_us_per_change": round(us[path][1], 2),
                  "total_us_per_change": round(sum(us[path]), 2), "body_bytes_per_change": round(size / n)})
        ratio = sum(us["compiled"]) / sum(us["pure"])
        emit({"scenario": f"capture_glue_{label}_ratio", "round": r + 1, "compiled_over_pure": round(ratio, 3)})
        rows.append((f"round {r + 1}", *(f"{us[p][0]:.2f} + {us[p][1]:.2f} = {sum(us[p]):.2f}" for p in us),
                     f"{ratio:.3f}"))
    table(rows, (f"{label}: µs CPU per change (poll+read + map)", "compiled", "pure", "compiled / pure"))


def frames_of(msgs: list[bytes]) -> list[bytes]:
    """Each pgoutput message as the XLogData ('w') frame the walsender sends it in."""
    return [_XLOG.pack(b"w", 0x1000000 + i, 0x1000000 + i, 0) + m for i, m in enumerate(msgs)]


def replay_setup(args) -> tuple[config.Config, list[bytes]]:
    """The replay's config and frames: the messages read from a slot (`--changes` of them), or from the
    `--messages` file a run before kept."""
    if args.messages and args.messages.exists():
        msgs = pickle.loads(args.messages.read_bytes())
    else:
        msgs = read_messages(args.changes)
        if args.messages:
            args.messages.write_bytes(pickle.dumps(msgs))
    cfg = config.parse({
        "agent": {"name": "bench"}, "source": {"kind": "postgres", "dsn": "postgresql://x@h/bench",
                                               "tables": ["public.bench_items"], "heartbeat_seconds": 0},
        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}]})
    return cfg, frames_of(msgs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one round of the compiled path")
    ap.add_argument("--messages", type=Path,
                    help="keep the messages read in this file; read them from it next time")
    ap.add_argument("--live", action="store_true",
                    help="read the changes from a real replication connection instead of replaying frames")
    args = ap.parse_args()
    if args.live:
        live(args)
        return
    cfg, frames = replay_setup(args)
    report(args, lambda path: run(cfg, frames, pure=path == "pure"), "replay")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(cfg, frames, pure=False)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(16)
        print("--- cProfile, compiled path (tottime)")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:5000])


if __name__ == "__main__":
    main()
