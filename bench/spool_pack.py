"""Micro-benchmark of the spool's append path (no database server): the events of the drain's table
(bench.drain: 60% inserts, 30% updates, 10% deletes of the 12-column table, CloudEvent bodies as the compiled
core renders them) packed into frames of 1000, decoded again, and spooled with `Spool.append`. CPU µs per
event (process time, best of the rounds), bytes per event; zlib level 1 (the frame codec before zstd) on the
same bytes in the same run as the reference.

    python -m bench.spool_pack [--events 5000] [--rounds 15] [--from events.jsonl]

`--from`: real events, one CloudEvent per line (e.g. the drain's out/events.jsonl) instead of generated ones.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import zlib
from pathlib import Path

import orjson

from agent import fastpath, spool_frames
from agent.mapping import MappedEvent
from agent.spool import FRAME_EVENTS, Spool
from bench.common import emit, table, tmpdir


def drain_events(n: int) -> list[MappedEvent]:
    """n events shaped like the drain's: same fields, same value shapes, random-looking ids."""
    out = []
    ins, upd = int(n * 0.6), int(n * 0.3)
    for k in range(n):
        g = k + 1 if k < ins else (k - ins + 1 if k < ins + upd else ins - (k - ins - upd))
        op = "insert" if k < ins else "update" if k < ins + upd else "delete"
        pos = f"{0x1BBEB20 + 4096 * (k // 10000):016X}:{k % 10000 + 1:08X}"
        eid = hashlib.blake2b(f"bench\x00{pos}\x00row.public.bench_items".encode(), digest_size=16).hexdigest()
        row = {"id": g, "customer_id": g % 5000, "sku": f"SKU-{g}", "qty": g % 17 + (op == "update"),
               "price": f"{(g % 100000) / 100 + (op == 'update'):.2f}", "discount": (g % 7) / 10,
               "active": g % 2 == 0, "created": f"2026-11-23T10:{g // 60 % 60:02d}:{g % 60:02d}.000000Z",
               "ship_date": f"2026-{1 + g % 12:02d}-{1 + g % 28:02d}",
               "note": "updated" if op == "update" else f"note {g}",
               "attrs": orjson.Fragment(b'{"g": %d, "tags": ["a", "b"]}' % g),
               "ref": hashlib.md5(str(g).encode()).hexdigest()}
        data = {"op": op, "key": {"id": g}, "before": {"id": g} if op == "delete" else None,
                "after": None if op == "delete" else row,
                "changed": ["id"] if op == "delete" else None if op == "update" else list(row)}
        body = orjson.dumps({"specversion": "1.0", "id": eid, "source": "cdc-agent://bench/public.bench_items",
                             "type": "row.public.bench_items", "subject": str(g),
                             "time": "2026-12-01T14:46:16.478176Z", "datacontenttype": "application/json",
                             "position": pos, "txid": str(727 + k // 10000), "data": data})
        out.append(MappedEvent(eid, "row.public.bench_items", str(g), pos, 1764600376.478176 + k // 10000, body))
    return out


def file_events(path: Path, n: int) -> list[MappedEvent]:
    out = []
    with open(path, "rb") as f:
        for line in f:
            body = line.rstrip(b"\n")
            d = orjson.loads(body)
            out.append(MappedEvent(d["id"], d["type"], d.get("subject", ""), d.get("position", ""), 1.0, body))
            if len(out) >= n:
                break
    return out


def cpu_us_per_event(fn, n_events: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e6 / n_events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--from", dest="source", type=Path, default=None, help="a JSONL file of real CloudEvents")
    args = ap.parse_args()
    # as in the agent's capture process, where the PostgreSQL source initialises the compiled glue: pack then
    # reads a MappedEvent's fields at their slots (fp_event_fields) instead of as attributes
    if fastpath.compiled() and hasattr(fastpath, "_glue"):
        fastpath._glue()
    events = file_events(args.source, args.events) if args.source else drain_events(args.events)
    n = len(events)
    frames = [events[i:i + FRAME_EVENTS] for i in range(0, n, FRAME_EVENTS)]
    packed = [spool_frames.pack(f) for f in frames]

    codec = spool_frames.FrameCodec() if hasattr(spool_frames, "FrameCodec") else None

    def pack_all():
        # one frame at a time, each result dropped before the next, as Spool.append does: a batch's worth of
        # joined bodies alive at once would make the allocator return memory to the system and fault it in again
        for f in frames:
            spool_frames.pack(f, codec) if codec else spool_frames.pack(f)

    def unpack_all():
        for (head, body), f in zip(packed, frames):
            h = spool_frames.FrameHead(1, len(f), None, head)
            h.load_body(body)
            h.events(0, len(f))

    def bodies_only():          # FrameHead.load_body: decompression and its checks, no events made
        for (head, body), f in zip(packed, frames):
            spool_frames.FrameHead(1, len(f), None, head).load_body(body)

    def heads_only():
        for (head, _), f in zip(packed, frames):
            spool_frames.FrameHead(1, len(f), None, head)

    # the reference: zlib level 1 over the same bytes (bodies with the id cut out, as frames store them)
    cut = [b"".join(e.body.replace(e.id.encode(), b"", 1) for e in f) for f in frames]

    def zlib_compress():
        for c in cut:
            zlib.compress(c, 1)

    zc = [zlib.compress(c, 1) for c in cut]

    def zlib_decompress():
        for z in zc:
            zlib.decompress(z)

    work = tmpdir("cdc-bench-spool-pack-")
    spool = Spool(work)
    spool_rounds = []

    def append_all():
        # new positions every round: the spool's replay check sees a new batch, as in a drain
        for f in frames:
            spool.append(f, [], f"ckpt-{len(spool_rounds)}")
        spool_rounds.append(1)

    base = [(e.id, e.type, e.subject, e.position, e.commit_ts, e.body) for e in events]

    def fresh_positions(r: int) -> None:
        for e, (_, _, _, pos, _, _) in zip(events, base):
            e.position = f"{r:04d}{pos}"

    figures: dict[str, float] = {}
    figures["pack_us_per_event"] = cpu_us_per_event(pack_all, n, args.rounds)
    figures["unpack_us_per_event"] = cpu_us_per_event(unpack_all, n, args.rounds)
    figures["heads_us_per_event"] = cpu_us_per_event(heads_only, n, args.rounds)
    figures["head_and_load_body_us_per_event"] = cpu_us_per_event(bodies_only, n, args.rounds)
    # pack's parts: the per-event work (compiled when built; the pure reference in the same run), then zstd
    fields = getattr(spool_frames, "_fields_pure", None)
    if fields is not None:
        compiled = spool_frames._pack_events
        into = bytearray()

        def each(fn):
            def run():
                for x in frames:
                    fn(x)
            return run

        if compiled is not None:
            figures["pack_fields_compiled_us_per_event"] = cpu_us_per_event(each(lambda f: compiled(f, into)), n,
                                                                            args.rounds)
        figures["pack_fields_pure_us_per_event"] = cpu_us_per_event(each(fields), n, args.rounds)
        made = {id(f): fields(f) for f in frames}
        heads = {id(f): orjson.dumps([spool_frames.FORMAT, *made[id(f)][:-1]]) for f in frames}
        figures["pack_head_json_us_per_event"] = cpu_us_per_event(
            each(lambda f: orjson.dumps([spool_frames.FORMAT, *made[id(f)][:-1]])), n, args.rounds)
        figures["pack_zstd_us_per_event"] = cpu_us_per_event(
            each(lambda f: (codec.compress(heads[id(f)]), codec.compress(made[id(f)][-1]))), n, args.rounds)
    # the file target's lines (the worker's `_send_lines`): the compiled join and the pure one, same frames
    loaded = []
    for (head, body), f in zip(packed, frames):
        h = spool_frames.FrameHead(1, len(f), None, head)
        h.load_body(body)
        loaded.append(h)

    def lines_pure():           # all the frames as one batch (the file target's batch_size is 5000), dropped
        parts: list[bytes] = []  # before the next: results kept alive would be faulted in afresh each round
        for h in loaded:
            h.lines(0, h.n, parts)
        b"".join(parts)

    figures["lines_pure_us_per_event"] = cpu_us_per_event(lines_pure, n, args.rounds)
    if getattr(spool_frames, "_join_lines", None) is not None:
        runs = [(h, 0, h.n) for h in loaded]
        figures["lines_compiled_us_per_event"] = cpu_us_per_event(lambda: spool_frames.lines_of(runs), n,
                                                                  args.rounds)
    best_append = float("inf")
    for r in range(args.rounds):
        fresh_positions(r)
        t0 = time.process_time()
        append_all()
        best_append = min(best_append, time.process_time() - t0)
    figures["append_us_per_event"] = best_append * 1e6 / n
    figures["zlib1_compress_us_per_event"] = cpu_us_per_event(zlib_compress, n, args.rounds)
    figures["zlib1_decompress_us_per_event"] = cpu_us_per_event(zlib_decompress, n, args.rounds)
    stored = sum(len(h) + len(b) for h, b in packed)
    figures["frame_bytes_per_event"] = stored / n
    figures["zlib1_body_bytes_per_event"] = sum(len(z) for z in zc) / n
    figures["raw_bytes_per_event"] = sum(len(e.body) for e in events) / n
    spool.close()
    emit({"scenario": "spool_pack", "events": n, "frame_events": FRAME_EVENTS,
          "format": spool_frames.FORMAT, **{k: round(v, 3) for k, v in figures.items()}})
    table([(k, f"{v:.3f}") for k, v in figures.items()], (f"spool append path, {n} events", "value"))


if __name__ == "__main__":
    main()
