"""Scenario — the capture core alone: the per-change CPU of the PostgreSQL hot path inside one process,
with no I/O: real pgoutput messages of the drain's 12-column table (read once from a slot with
pg_logical_slot_peek_binary_changes, under the source connection's session settings), decoded into
RowChanges and mapped into CloudEvent bodies, on the compiled core (agent/_fastpg.c) and on the pure-Python
path it falls back to, in the same run. The reference is the pure path; a bare `for` loop over the same
messages (`bytes` copy and first byte, what any consumer pays) is printed too.

    python -m bench.capture_core [--changes 200000] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

from agent import config, pgoutput as po, pgvalues
from agent.mapping import EventMapper
from agent.fastrow import RowLayout
from agent.sources.postgres.stream import SESSION_OPTIONS, RelMeta, row_change
from bench.common import MIXED_DDL, bench_cluster, emit, table, write_mixed_changes

BATCH = 2000


def read_messages(changes: int) -> list[bytes]:
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        db.execute("CREATE PUBLICATION core_pub FOR TABLE bench_items")
        db.execute("SELECT pg_create_logical_replication_slot('core', 'pgoutput')")
        write_mixed_changes(db, changes)
        with db.connect() as conn:
            for opt in SESSION_OPTIONS.split("-c ")[1:]:
                name, _, val = opt.strip().partition("=")
                conn.execute(f"SET {name} = '{val}'")
            rows = conn.execute("SELECT data FROM pg_logical_slot_peek_binary_changes('core', NULL, NULL, "
                                "'proto_version', '1', 'publication_names', 'core_pub')").fetchall()
        return [bytes(r[0]) for r in rows]
    finally:
        cluster.destroy()


PATHS = ("compiled", "tuples", "pure")


def run(msgs: list[bytes], path: str, mapper: EventMapper) -> tuple[float, float, int, int]:
    """(decode+row seconds, map seconds, changes, body bytes) of CPU time. Paths: compiled (render_row +
    render_event), tuples (the compiled tuple decoder into Python values, mapped in Python: the core before
    it rendered events) and pure (no C at all)."""
    dec = po.Decoder(pure=path == "pure")
    if path == "tuples":
        dec._render = None
    decode_s = map_s = 0.0
    n = size = 0
    batch = []
    t0 = time.process_time()
    for buf in msgs:
        m = dec.decode(buf, 0)
        k = m.kind
        if k == "I" or k == "U" or k == "D":
            batch.append(row_change(m, m.relation.info, "0000000001000000:00000001", "2026-11-23T10:00:00.000000Z",
                                    1795428000.0, "7412"))
            if len(batch) >= BATCH:
                t1 = time.process_time()
                decode_s += t1 - t0
                events, _ = mapper.map(batch)
                t0 = time.process_time()
                map_s += t0 - t1
                n += len(batch)
                size += sum(len(e.body) for e in events)
                batch = []
        elif k == "R":
            oids = [c.type_oid for c in m.columns]
            dec.set_converters(m.oid, pgvalues.converters(oids))
            key_index = tuple(i for i, c in enumerate(m.columns) if c.key)
            m.info = RelMeta(m.qualified, True, ("id",), key_index, RowLayout(m.names, key_index))
    decode_s += time.process_time() - t0
    if batch:
        t1 = time.process_time()
        mapper.map(batch)
        map_s += time.process_time() - t1
        n += len(batch)
    return decode_s, map_s, n, size


def bare_loop(msgs: list[bytes]) -> float:
    t0 = time.process_time()
    k = 0
    for buf in msgs:
        k += bytes(buf)[0]
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one round of each path; print the top")
    args = ap.parse_args()
    msgs = read_messages(args.changes)
    mapper = EventMapper(config.parse({
        "agent": {"name": "bench"}, "source": {"kind": "postgres", "dsn": "postgresql://x@h/bench",
                                               "tables": ["public.bench_items"]},
        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}]}))
    rows = []
    for r in range(args.rounds):
        figs = {}
        for path in PATHS:
            d, m, n, size = run(msgs, path, mapper)
            figs[path] = (d, m, n)
            emit({"scenario": "capture_core", "round": r + 1, "path": path, "changes": n,
                  "decode_row_us_per_change": round(d * 1e6 / n, 2), "map_us_per_change": round(m * 1e6 / n, 2),
                  "total_us_per_change": round((d + m) * 1e6 / n, 2), "body_bytes_per_change": round(size / n)})
        bare = bare_loop(msgs) * 1e6 / figs["pure"][2]
        us = {p: (figs[p][0] * 1e6 / figs[p][2], figs[p][1] * 1e6 / figs[p][2]) for p in PATHS}
        tot = {p: sum(us[p]) for p in PATHS}
        emit({"scenario": "capture_core_ratio", "round": r + 1,
              "compiled_over_tuples": round(tot["compiled"] / tot["tuples"], 3),
              "compiled_over_pure": round(tot["compiled"] / tot["pure"], 3),
              "bare_loop_us_per_message": round(bare, 2)})
        rows.append((f"round {r + 1}", *(f"{us[p][0]:.2f} + {us[p][1]:.2f} = {tot[p]:.2f}" for p in PATHS),
                     f"{tot['compiled'] / tot['tuples']:.2f} / {tot['compiled'] / tot['pure']:.2f}", f"{bare:.2f}"))
    table(rows, ("µs CPU per change (decode+row + map)", "compiled", "tuples (C decode, Python map)", "pure",
                 "compiled / tuples / pure", "bare loop"))
    if args.profile:
        for path in ("compiled", "tuples"):
            prof = cProfile.Profile()
            prof.enable()
            run(msgs, path, mapper)
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
            print(f"--- cProfile, {path} path (tottime)")
            print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


if __name__ == "__main__":
    main()
