"""`reconcile` on a large table with a handful of differences, next to a full SELECT of both sides compared in
Python (python -m bench.reconcile [--rows 1000000] [--chunk-rows 5000]).

A PostgreSQL source and a PostgreSQL replica (two databases of one throwaway cluster, fsync on) get the same
rows, generated server-side; then 5 differences are made in the replica (2 deleted, 2 changed, 1 added).
Reported: reconcile's wall time, rows read and chunks compared row by row; the full SELECT's wall time and
rows read (both sides fetched whole into memory, then compared by key).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import bench_cluster, emit, table, tmpdir

DDL = ("CREATE TABLE items (id bigint PRIMARY KEY, customer_id int, sku text, qty int, price numeric(12,2), "
       "created timestamptz, note varchar(100))")
FILL = ("INSERT INTO items SELECT g, g % 1000, 'sku-' || g, g % 17, (g % 100000) / 100.0, "
        "'2026-01-01'::timestamptz + g * interval '1 second', 'note ' || g FROM generate_series(1, {n}) g")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=5000)
    a = ap.parse_args(argv)
    cluster = bench_cluster()
    try:
        src = cluster.create_database("src")
        rep = cluster.create_database("rep")
        for db in (src, rep):
            db.execute(DDL)
            db.execute(FILL.format(n=a.rows))
            db.execute("ANALYZE items")
        n = a.rows
        rep.execute(f"DELETE FROM items WHERE id IN (17, {n // 2})")
        rep.execute(f"UPDATE items SET qty = qty + 1 WHERE id = {n // 3}")
        rep.execute(f"UPDATE items SET price = price + 0.01 WHERE id = {n - 5}")
        rep.execute(f"INSERT INTO items VALUES ({n + 10}, 1, 'extra', 1, 1, now(), 'x')")
        work = Path(tmpdir("cdc-bench-reconcile-"))
        cfg_path = work / "agent.toml"
        cfg_path.write_text(f"""
[agent]
name = "bench"
state_dir = "state"
[source]
kind = "postgres"
dsn = "{src.dsn}"
tables = ["public.items"]
[[targets]]
name = "replica"
kind = "sql"
url = "{rep.dsn.replace('postgresql://', 'postgresql+psycopg://')}"
[health]
listen = "off"
""")
        from agent import config
        from agent.reconcile import reconcile
        cfg = config.load(cfg_path)
        t0 = time.perf_counter()
        (res,) = reconcile(cfg, "replica", chunk_rows=a.chunk_rows)
        rec_s = time.perf_counter() - t0
        assert (len(res.missing), len(res.extra), len(res.different)) == (2, 1, 2), res

        import psycopg
        t0 = time.perf_counter()
        sides = []
        fetched = 0
        for db in (src, rep):
            with psycopg.connect(db.dsn) as conn, conn.cursor(name="full") as cur:
                cur.itersize = 10000
                cur.execute("SELECT * FROM items ORDER BY id")
                rows = {r[0]: r for r in cur}
                fetched += len(rows)
                sides.append(rows)
        s, r = sides
        diffs = sum(1 for k in s if k not in r) + sum(1 for k in r if k not in s) + \
            sum(1 for k, v in s.items() if k in r and r[k] != v)
        full_s = time.perf_counter() - t0
        assert diffs == 5
        fig = {"rows": a.rows, "differences": 5, "chunk_rows": a.chunk_rows,
               "reconcile_seconds": round(rec_s, 2), "reconcile_rows_read": res.rows_fetched,
               "reconcile_chunks": res.chunks, "reconcile_chunks_differing": res.chunks_differing,
               "full_select_seconds": round(full_s, 2), "full_select_rows_read": fetched}
        emit(fig)
        table([("reconcile (chunked checksums, values normalised)", fig["reconcile_seconds"], res.rows_fetched,
                f"{res.chunks_differing} of {res.chunks} chunks compared row by row"),
               ("full SELECT of both sides, raw tuples compared", fig["full_select_seconds"], fetched, "-")],
              ("method", "seconds", "rows read", "row-level work"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
