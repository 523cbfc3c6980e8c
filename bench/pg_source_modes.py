"""PostgreSQL source alone: the SQL decoding functions against the streaming replication protocol, next to
`pg_recvlogical`, on the same WAL in the same run (docs/postgres-source.md uses these figures).

    python -m bench.pg_source_modes [--rows 1000000] [--txn-rows 10000]

One slot is created before `--rows` changes (60% inserts, 30% updates, 10% deletes on the 12-column mixed
table, 10k-row transactions) are written; each mode then drains its own copy of it
(pg_copy_logical_replication_slot), one after the other so they do not compete for the cores:

  pg_recvlogical        streaming, pgoutput, output to /dev/null (the reference)
  sql_server_only       SELECT count(*) FROM pg_logical_slot_peek_binary_changes(...): the server alone
  sql_fetch_raw         the same rows fetched through psycopg (server-side cursor), not decoded
  sql_decode            ... and decoded into RowChanges (agent/pgoutput.py + agent/pgvalues.py)
  stream_raw            START_REPLICATION through psycopg, CopyData received, not decoded
  stream_decode         CaptureCore(PostgresSource).read() in a loop: receive, decode, convert values, RowChanges,
                        confirming each checkpoint (what the agent runs)
Figures: changes/s per mode, and each mode's rate over pg_recvlogical's.

Then idle latency: `--latency-samples` single-row transactions committed one at a time; the time from the
commit returning to the change being read, for the streaming source and for SQL polling every
`--poll-ms` (peek, then pg_replication_slot_advance past what was read), with the server time one empty
poll costs.
"""

from __future__ import annotations

import argparse
import time

from bench.common import (MIXED_DDL, bench_cluster, emit, pg_recvlogical_drain, table, tmpdir,
                          write_mixed_changes)

PUB = "bench_pub"


def _config(dsn: str, slot: str, state: str):
    from agent import config
    return config.parse({"agent": {"name": "bench", "state_dir": state},
                         "source": {"kind": "postgres", "dsn": dsn, "tables": ["public.bench_items"],
                                    "slot": slot, "publication": PUB, "heartbeat_seconds": 0},
                         "targets": [{"name": "f", "kind": "file", "path": "/dev/null"}]})


def sql_server_only(db, slot: str, endpos: str) -> int:
    return db.execute(f"SELECT count(*) FROM pg_logical_slot_peek_binary_changes('{slot}', '{endpos}', NULL, "
                      f"'proto_version', '1', 'publication_names', '{PUB}')")[0][0]


def sql_fetch(db, cfg, slot: str, endpos: str, decode: bool) -> int:
    """The SQL path as a source would run it: one peek over a server-side cursor, rows decoded by the same
    code the streaming source uses."""
    from agent import pgoutput as po
    from agent.sources.postgres import PostgresSource
    src = PostgresSource(cfg)          # not started: only its decoder and row building are used
    dec = src._decoder
    n = 0
    with db.connect() as conn, conn.transaction():
        with conn.cursor(name="peek") as cur:
            cur.itersize = 10_000
            cur.execute(f"SELECT data FROM pg_logical_slot_peek_binary_changes('{slot}', '{endpos}', NULL, "
                        f"'proto_version', '1', 'publication_names', '{PUB}')")
            if not decode:
                for _ in cur:
                    n += 1
                return n
            out = []
            for (data,) in cur:
                m = dec.decode(data, 0)
                k = m.kind
                if k == "I" or k == "U" or k == "D":
                    out.append(src._row(m))
                    if len(out) >= 5000:
                        n += len(out)
                        out = []
                elif k == "B":
                    src._begin(m)
                elif k == "R":
                    src._relation(m)
                elif k == "C":
                    src._in_txn = False
            n += len(out)
    src.close()
    _ = po
    return n


def stream_raw(cfg, total_msgs_hint: int, endpos: int) -> int:
    """Receive CopyData until a keepalive or message at/after endpos; count 'w' frames."""
    from agent import pgoutput as po
    from agent.sources.postgres import PostgresSource
    src = PostgresSource(cfg)
    src.start(None)
    n = 0
    try:
        while True:
            data = src._recv(5.0)
            if data is None:
                break
            if data[0] == 119:
                n += 1
                if po.parse_xlogdata(bytes(data[:25])).wal_end >= endpos and data[25] == 67:   # the last Commit
                    break
            elif data[0] == 107 and po.parse_keepalive(bytes(data)).wal_end >= endpos:
                break
    finally:
        src.close()
    return n


def stream_decode(cfg, total: int, endpos: int) -> int:
    from agent.capture import CaptureCore
    from agent.sources.postgres import PostgresSource
    src = PostgresSource(cfg)
    src.start(None)
    core = CaptureCore(src)
    n = 0
    try:
        while True:
            b = core.read(5000, 5.0)
            n += len(b.changes)
            if b.checkpoint is not None:
                src.confirm(b.checkpoint)
                if int(b.checkpoint, 16) >= endpos or n >= total:
                    break
            elif not b.changes:
                break
    finally:
        src.close()
    return n


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class _Writer:
    """Commits single-row transactions at random moments (every 2-20 ms), independent of the reader,
    remembering when each commit returned."""

    def __init__(self, db, samples: int):
        import threading
        self.db, self.samples, self.committed = db, samples, {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import random
        rng = random.Random(1)
        with self.db.connect() as conn:
            for i in range(self.samples):
                time.sleep(rng.uniform(0.002, 0.02))
                conn.execute("INSERT INTO lat VALUES (%s)", (i,))
                self.committed[i] = time.perf_counter()


def latency_stream(db, cfg, samples: int) -> list[float]:
    from agent.capture import CaptureCore
    from agent.sources.postgres import PostgresSource
    src = PostgresSource(cfg)
    src.start(None)
    core = CaptureCore(src)
    seen = {}
    w = _Writer(db, samples)
    w.thread.start()
    try:
        while len(seen) < samples:
            b = core.read(100, 1.0)
            now = time.perf_counter()
            for c in b.changes:
                seen[c.after["id"]] = now
            if b.checkpoint:
                src.confirm(b.checkpoint)
    finally:
        src.close()
        w.thread.join()
    return [max(0.0, seen[i] - w.committed[i]) for i in range(samples)]


def latency_sql(db, slot: str, samples: int, poll_s: float) -> tuple[list[float], list[float]]:
    """Poll with peek every poll_s; after each find, advance the slot past it (what a SQL-based source
    would do). Returns latencies and the durations of empty polls."""
    from agent import pgoutput as po
    peek = (f"SELECT lsn, data FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, "
            f"'proto_version', '1', 'publication_names', 'lat_pub')")
    seen, empty = {}, []
    w = _Writer(db, samples)
    dec = po.Decoder()
    with db.connect() as r:
        w.thread.start()
        while len(seen) < samples:
            c0 = time.perf_counter()
            rows = r.execute(peek).fetchall()
            now = time.perf_counter()
            if not rows:
                empty.append(now - c0)
            for _, d in rows:
                m = dec.decode(bytes(d))
                if m.kind == "I":
                    seen[int(m.new[0])] = now
            if rows:
                r.execute(f"SELECT pg_replication_slot_advance('{slot}', %s)", (rows[-1][0],))
            time.sleep(poll_s)
    w.thread.join()
    return [max(0.0, seen[i] - w.committed[i]) for i in range(samples)], empty


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000, help="row changes to write and drain")
    ap.add_argument("--txn-rows", type=int, default=10_000)
    ap.add_argument("--latency-samples", type=int, default=300)
    ap.add_argument("--poll-ms", type=float, default=10.0, help="SQL polling interval for the latency phase")
    args = ap.parse_args()
    from agent import pgoutput as po
    cluster = bench_cluster()
    work = tmpdir("cdc-bench-modes-")
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        db.execute(f"CREATE PUBLICATION {PUB} FOR TABLE bench_items")
        db.execute("SELECT pg_create_logical_replication_slot('orig', 'pgoutput')")
        written = write_mixed_changes(db, args.rows, args.txn_rows)
        endpos = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
        end = po.parse_lsn(endpos)
        modes = ["pg_recvlogical", "sql_server_only", "sql_fetch_raw", "sql_decode", "stream_raw", "stream_decode"]
        for m in modes:
            db.execute(f"SELECT pg_copy_logical_replication_slot('orig', 'm_{m}')")
        emit({"scenario": "pg_source_modes", "phase": "written", "rows": args.rows, **written})
        results = {}
        for m in modes:
            slot = f"m_{m}"
            cfg = _config(db.dsn, slot, str(work / "state"))
            t0 = time.perf_counter()
            if m == "pg_recvlogical":
                pg_recvlogical_drain(cluster, "bench", slot, PUB, endpos)
                n = args.rows
            elif m == "sql_server_only":
                n = sql_server_only(db, slot, endpos)
            elif m == "sql_fetch_raw":
                n = sql_fetch(db, cfg, slot, endpos, decode=False)
            elif m == "sql_decode":
                n = sql_fetch(db, cfg, slot, endpos, decode=True)
            elif m == "stream_raw":
                n = stream_raw(cfg, args.rows, end)
            else:
                n = stream_decode(cfg, args.rows, end)
            secs = time.perf_counter() - t0
            rate = args.rows / secs
            results[m] = (secs, rate, n)
            emit({"scenario": "pg_source_modes", "mode": m, "seconds": round(secs, 2),
                  "changes_per_s": round(rate), "items_seen": n})
        ref = results["pg_recvlogical"][1]
        rows = [(m, f"{s:.2f}", f"{r:,.0f}", f"{r / ref:.2f}") for m, (s, r, _) in results.items()]
        emit({"scenario": "pg_source_modes", "summary": True, "rows": args.rows,
              **{f"{m}_per_s": round(r) for m, (_, r, _) in results.items()},
              "stream_decode_over_sql_decode": round(results["stream_decode"][1] / results["sql_decode"][1], 2),
              "stream_decode_over_pg_recvlogical": round(results["stream_decode"][1] / ref, 2)})
        print()
        table(rows, ("mode", "seconds", f"changes/s ({args.rows:,} changes)", "× pg_recvlogical"))

        # idle latency: fresh slots over a small table, one single-row transaction at a time
        db.execute("CREATE TABLE lat (id int PRIMARY KEY); CREATE PUBLICATION lat_pub FOR TABLE lat")
        db.execute("SELECT pg_create_logical_replication_slot('lat_stream', 'pgoutput')")
        from agent import config
        lcfg = config.parse({"agent": {"name": "bench", "state_dir": str(work / "state")},
                             "source": {"kind": "postgres", "dsn": db.dsn, "tables": ["public.lat"],
                                        "slot": "lat_stream", "publication": "lat_pub", "heartbeat_seconds": 0},
                             "targets": [{"name": "f", "kind": "file", "path": "/dev/null"}]})
        st = latency_stream(db, lcfg, args.latency_samples)
        db.execute("TRUNCATE lat")
        db.execute("SELECT pg_create_logical_replication_slot('lat_sql', 'pgoutput')")   # nothing old in it
        sq, empty = latency_sql(db, "lat_sql", args.latency_samples, args.poll_ms / 1000)
        ms = lambda x: round(x * 1000, 2)  # noqa: E731
        lat = {"scenario": "pg_source_modes", "phase": "latency", "samples": args.latency_samples,
               "stream_p50_ms": ms(_pct(st, 50)), "stream_p99_ms": ms(_pct(st, 99)),
               "sql_poll_ms": args.poll_ms, "sql_p50_ms": ms(_pct(sq, 50)), "sql_p99_ms": ms(_pct(sq, 99)),
               "sql_empty_poll_ms_avg": ms(sum(empty) / max(1, len(empty)))}
        emit(lat)
        print()
        table([("streaming (CaptureCore.read)", lat["stream_p50_ms"], lat["stream_p99_ms"], ""),
               (f"SQL peek every {args.poll_ms:g} ms + advance", lat["sql_p50_ms"], lat["sql_p99_ms"],
                lat["sql_empty_poll_ms_avg"])],
              ("commit → read, one row at a time", "p50 ms", "p99 ms", "one empty poll, ms"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
