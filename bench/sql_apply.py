"""Rows/s the `sql` target applies into PostgreSQL, MariaDB and SQLite replicas, next to a bare executemany
loop on the same changes in the same run (python -m bench.sql_apply [--changes 100000] [--batch 1000]).

The sql target's figure includes everything it does per batch: parsing the CloudEvents, converting values by
the replica's column types, the upsert/delete statements and the position in cdc_agent_offsets, one
transaction per batch. The bare loop gets ready-made parameter tuples and runs one executemany of the
dialect's upsert and one of the delete per batch, then commits: the floor a hand-written applier would pay.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import orjson

from bench.common import ROOT, bench_cluster, emit, table, tmpdir  # noqa: F401

DDL = ("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad varchar(60), "
       "amount decimal(12,2), at {ts})")


def changes(n: int) -> list[tuple]:
    """(op, id, row) : 70% inserts, 20% updates, 10% deletes of live rows."""
    rng = random.Random(1)
    out, live, next_id = [], [], 0
    for _ in range(n):
        r = rng.random()
        if r < 0.7 or not live:
            next_id += 1
            live.append(next_id)
            out.append(("insert", next_id, (next_id, 1, 0, "x" * rng.randint(0, 50), f"{rng.randint(0, 99999)}.25",
                                            "2026-11-23T10:15:02.123456Z")))
        elif r < 0.9:
            k = rng.choice(live)
            out.append(("update", k, (k, 1, rng.randint(1, 9), "y", "1.50", "2026-11-23T11:00:00Z")))
        else:
            k = live.pop(rng.randrange(len(live)))
            out.append(("delete", k, None))
    return out


def events(chs: list[tuple]):
    from agent.interfaces import SpooledEvent
    cols = ("id", "writer", "version", "pad", "amount", "at")
    out = []
    for i, (op, k, row) in enumerate(chs):
        after = dict(zip(cols, row)) if row else None
        body = orjson.dumps({"specversion": "1.0", "id": str(i), "source": "cdc-agent://bench/public.items",
                             "type": "row.public.items", "subject": str(k), "position": f"{i:016d}",
                             "data": {"op": op, "key": {"id": k}, "before": None if op != "delete" else {"id": k},
                                      "after": after}})
        out.append(SpooledEvent(i + 1, str(i), "row.public.items", str(k), body, 0.0, f"{i:016d}"))
    return out


def run_target(url: str, evs, batch: int) -> float:
    from types import SimpleNamespace

    from adapters.sql import SqlOptions, SqlTarget
    opts = SqlOptions(url=url, tables={"public.items": "items"}, offsets_agent="bench")
    t = SqlTarget(SimpleNamespace(name="bench", options=opts))
    t.open()
    t0 = time.perf_counter()
    for s in range(0, len(evs), batch):
        res = t.send(evs[s:s + batch])
        assert not res.rejected
    dt = time.perf_counter() - t0
    t.close()
    return dt


def bare_loop(kind: str, connect, chs: list[tuple], batch: int) -> float:
    """Ready-made tuples, one executemany of the upsert and one of the delete per batch, commit."""
    import datetime as dt
    from decimal import Decimal
    ts = {v: dt.datetime.fromisoformat(v.replace("Z", "+00:00")) for v in
          ("2026-11-23T10:15:02.123456Z", "2026-11-23T11:00:00Z")}
    ph = "?" if kind == "sqlite" else "%s"
    cols = "id, writer, version, pad, amount, at"
    if kind == "postgresql":
        up = (f"INSERT INTO items ({cols}) VALUES ({', '.join([ph] * 6)}) ON CONFLICT (id) DO UPDATE SET "
              "writer = EXCLUDED.writer, version = EXCLUDED.version, pad = EXCLUDED.pad, amount = EXCLUDED.amount, "
              "at = EXCLUDED.at")
    elif kind == "sqlite":
        up = (f"INSERT INTO items ({cols}) VALUES ({', '.join([ph] * 6)}) ON CONFLICT (id) DO UPDATE SET "
              "writer = excluded.writer, version = excluded.version, pad = excluded.pad, amount = excluded.amount, "
              "at = excluded.at")
    else:
        up = (f"INSERT INTO items ({cols}) VALUES ({', '.join([ph] * 6)}) ON DUPLICATE KEY UPDATE "
              "writer = VALUES(writer), version = VALUES(version), pad = VALUES(pad), amount = VALUES(amount), "
              "at = VALUES(at)")
    rows = []
    for op, k, row in chs:
        if row is None:
            rows.append((op, k, None))
        else:
            at = ts[row[5]] if kind == "postgresql" else ts[row[5]].replace(tzinfo=None).isoformat(" ")
            amount = Decimal(row[4]) if kind != "sqlite" else row[4]
            rows.append((op, k, (row[0], row[1], row[2], row[3], amount, at)))
    conn = connect()
    t0 = time.perf_counter()
    for s in range(0, len(rows), batch):
        cur = conn.cursor()
        part = rows[s:s + batch]
        i = 0
        while i < len(part):             # runs of upserts / deletes, in order (the same grouping, by hand)
            j = i
            while j < len(part) and (part[j][2] is None) == (part[i][2] is None):
                j += 1
            run = part[i:j]
            if run[0][2] is None:
                cur.executemany(f"DELETE FROM items WHERE id = {ph}", [(k,) for _, k, _ in run])
            else:
                last = {}
                for _, k, r in run:
                    last.pop(k, None)
                    last[k] = r
                cur.executemany(up, list(last.values()))
            i = j
        conn.commit()
    dt_ = time.perf_counter() - t0
    conn.close()
    return dt_


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--kinds", default="postgresql,mariadb,sqlite")
    a = ap.parse_args(argv)
    chs = changes(a.changes)
    evs = events(chs)
    results = []
    work = tmpdir("cdc-bench-sql-")
    for kind in a.kinds.split(","):
        cleanup = None
        if kind == "postgresql":
            import psycopg
            cluster = bench_cluster()
            cleanup = cluster.destroy
            cluster.execute(DDL.format(ts="timestamptz"))
            url = cluster.dsn().replace("postgresql://", "postgresql+psycopg://")

            def connect(c=cluster):
                return psycopg.connect(c.dsn())

            def reset(c=cluster):
                c.execute("TRUNCATE items")
        elif kind == "mariadb":
            import pymysql

            from tests.plugins.mariadb import MariaDbServer
            server = MariaDbServer().start()
            cleanup = server.destroy
            db = server.create_database("bench")
            db.execute(DDL.format(ts="datetime(6)"))
            url = db.sqlalchemy_url

            def connect(s=server):
                return pymysql.connect(host="127.0.0.1", port=s.port, user="root", database="bench")

            def reset(d=db):
                d.execute("TRUNCATE items")
        else:
            import sqlite3
            path = Path(work) / "replica.db"
            with sqlite3.connect(path) as c:
                c.execute("PRAGMA journal_mode=WAL")
                c.execute(DDL.format(ts="datetime"))
            url = f"sqlite:///{path}"

            def connect(p=path):
                c = sqlite3.connect(p)
                c.execute("PRAGMA synchronous=FULL")
                return c

            def reset(p=path):
                with sqlite3.connect(p) as c:
                    c.execute("DELETE FROM items")
        try:
            bare = bare_loop(kind, connect, chs, a.batch)
            reset()
            target = run_target(url, evs, a.batch)
            fig = {"replica": kind, "changes": a.changes, "batch": a.batch,
                   "sql_target_rows_per_s": round(a.changes / target), "bare_executemany_rows_per_s":
                   round(a.changes / bare), "ratio": round(bare / target, 2)}
            emit(fig)
            results.append((kind, fig["sql_target_rows_per_s"], fig["bare_executemany_rows_per_s"], fig["ratio"]))
        finally:
            if cleanup:
                cleanup()
    table(results, ("replica", "sql target rows/s", "bare executemany rows/s", "ratio"))


if __name__ == "__main__":
    main()
