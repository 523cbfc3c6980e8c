"""Scenario — the capture process from the replayed frames to the spool's frames, compiled path only: the
drain's real pgoutput frames (as bench.capture_glue replays them) → `CaptureCore.read` → `EventMapper.map`
→ `spool_frames.pack` of frames of FRAME_EVENTS (the Spool's codec: what `Spool.append` does but SQLite),
and the frees of the batch's changes and events timed apart. CPU µs per change of each step; the body
bytes are never read in Python (as in the agent), so the run sees what the capture process pays.

    python -m bench.capture_pack [--changes 200000] [--rounds 3] [--messages FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agent.capture import CaptureCore
from agent.mapping import EventMapper
from agent.spool import FRAME_EVENTS
from agent.spool_frames import FrameCodec, pack
from bench.capture_glue import _source, replay_setup
from bench.common import emit, table


def run(cfg, frames: list[bytes]) -> tuple[dict[str, float], int, int]:
    src = _source(cfg, frames, False)
    core, mapper, codec = CaptureCore(src), EventMapper(cfg), FrameCodec()
    s = {"read": 0.0, "map": 0.0, "pack": 0.0, "free": 0.0}
    n = out = 0
    clock = time.process_time
    while True:
        t0 = clock()
        batch = core.read(cfg.source.batch_size, 0.001)
        t1 = clock()
        if not batch.changes and batch.checkpoint is None:
            break
        events, _ = mapper.map(batch.changes)
        n += len(batch.changes)
        t2 = clock()
        del batch
        t3 = clock()
        for i in range(0, len(events), FRAME_EVENTS):
            head, body = pack(events[i:i + FRAME_EVENTS], codec)
            out += len(head) + len(body)
        t4 = clock()
        del events
        t5 = clock()
        s["read"] += t1 - t0
        s["map"] += t2 - t1
        s["pack"] += t4 - t3
        s["free"] += (t3 - t2) + (t5 - t4)
    return s, n, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=Path, help="keep the messages read in this file; read them from it next time")
    args = ap.parse_args()
    cfg, frames = replay_setup(args)
    rows = []
    for r in range(args.rounds):
        s, n, out = run(cfg, frames)
        us = {k: v * 1e6 / n for k, v in s.items()}
        emit({"scenario": "capture_pack", "round": r + 1, "changes": n,
              **{f"{k}_us_per_change": round(v, 3) for k, v in us.items()},
              "total_us_per_change": round(sum(us.values()), 3), "frame_bytes_per_change": round(out / n, 1)})
        rows.append((f"round {r + 1}", *(f"{v:.2f}" for v in us.values()), f"{sum(us.values()):.2f}"))
    table(rows, ("µs CPU per change", "read", "map", "pack", "free", "total"))


if __name__ == "__main__":
    main()
