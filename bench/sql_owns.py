"""What two-way sync costs the `sql` target (python -m bench.sql_owns [--changes 50000] [--batch 1000]): the
same changes (70% inserts, 20% updates with their before image, 10% deletes) applied in the same run by

- the plain target (whole rows, unmarked): the reference;
- the plain target with the no-echo mark on its sessions (adapters/_sqlmark.py);
- a target with `owns` on three of the six columns, marked: per batch it reads the owned columns of the rows
  it updates (`SELECT ... FOR UPDATE`) and compares them with `before` (no conflict happens here: nobody
  else writes), and its deletes are applied (`deletes = "apply"`, to do the same work as the reference).

Prints rows/s of each (best of two interleaved rounds, after a warm-up) and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import orjson

from bench.common import bench_cluster, emit, table, tmpdir

DDL = ("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad varchar(60), "
       "amount decimal(12,2), at {ts})")
COLS = ("id", "writer", "version", "pad", "amount", "at")


def events(n: int):
    from agent.interfaces import SpooledEvent
    rng = random.Random(1)
    live: dict[int, dict] = {}
    next_id, out = 0, []
    for i in range(n):
        r = rng.random()
        if r < 0.7 or not live:
            next_id += 1
            op, before = "insert", None
            after = dict(zip(COLS, (next_id, 1, 0, "x" * rng.randint(0, 50), f"{rng.randint(0, 99999)}.25",
                                    "2026-11-23T10:15:02.123456Z")))
            live[next_id] = after
        elif r < 0.9:
            k = rng.choice(list(live)) if len(live) < 64 else rng.choice(list(live)[-2000:])
            op, before = "update", live[k]
            after = {**before, "version": before["version"] + 1, "pad": "y", "amount": f"{rng.randint(0, 999)}.50",
                     "at": "2026-11-23T11:00:00Z"}
            live[k] = after
        else:
            k = rng.choice(list(live)[-2000:])
            op, before, after = "delete", live.pop(k), None
        key = (after or before)["id"]
        changed = [c for c in COLS if before and after and before[c] != after[c]] if op == "update" else None
        body = orjson.dumps({"specversion": "1.0", "id": f"e{i}", "source": "cdc-agent://bench/public.items",
                             "type": "row.public.items", "subject": str(key), "position": f"{i:016d}",
                             "data": {"op": op, "key": {"id": key}, "before": before, "after": after,
                                      "changed": changed}})
        out.append(SpooledEvent(i + 1, f"e{i}", "row.public.items", str(key), body, 0.0, f"{i:016d}"))
    return out


def run_target(url: str, evs, batch: int, state: Path, **opts) -> float:
    from types import SimpleNamespace

    from adapters.sql import SqlOptions, SqlTarget
    from agent.spool import Spool
    Spool(state).close()
    o = SqlOptions(url=url, tables={"public.items": "items"}, offsets_agent="bench", state_dir=str(state), **opts)
    t = SqlTarget(SimpleNamespace(name="bench", options=o))
    t.open()
    t0 = time.perf_counter()
    for s in range(0, len(evs), batch):
        res = t.send(evs[s:s + batch])
        assert not res.rejected
    dt = time.perf_counter() - t0
    t.close()
    return dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--kinds", default="postgresql,mariadb,sqlite")
    a = ap.parse_args(argv)
    evs = events(a.changes)
    work = Path(tmpdir("cdc-bench-owns-"))
    results = []
    owns = {"public.items": ("pad", "amount", "at")}
    runs = {"plain": {}, "marked": {"marker": "cdc-agent/bench"},
            "owns": {"marker": "cdc-agent/bench", "deletes": "apply", "owns": owns}}
    for kind in a.kinds.split(","):
        cleanup = None
        if kind == "postgresql":
            cluster = bench_cluster()
            cleanup = cluster.destroy
            cluster.execute(DDL.format(ts="timestamptz"))
            url = cluster.dsn().replace("postgresql://", "postgresql+psycopg://")

            def reset(c=cluster):
                c.execute("TRUNCATE items; DELETE FROM cdc_agent_offsets")
        elif kind == "mariadb":
            from tests.plugins.mariadb import MariaDbServer
            server = MariaDbServer().start()
            cleanup = server.destroy
            db = server.create_database("bench")
            db.execute(DDL.format(ts="datetime(6)"))
            url = db.sqlalchemy_url

            def reset(d=db):
                d.execute("TRUNCATE items")
                d.execute("DELETE FROM cdc_agent_offsets")
        else:
            import sqlite3
            path = work / "replica.db"
            with sqlite3.connect(path) as c:
                c.execute("PRAGMA journal_mode=WAL")
                c.execute(DDL.format(ts="datetime"))
                # trigger capture's origin table, so that the mark is written in every transaction
                c.execute("CREATE TABLE cdc_changelog_origin (origin TEXT NOT NULL)")
            url = f"sqlite:///{path}"

            def reset(p=path):
                with sqlite3.connect(p) as c:
                    c.execute("DELETE FROM items")
                    c.execute("DELETE FROM cdc_agent_offsets")
        try:
            secs: dict[str, float] = {}
            run_target(url, evs[:2000], a.batch, work / f"state-{kind}-warm", **runs["owns"])   # imports, caches
            reset()
            for rnd in range(2):                      # best of two rounds, interleaved (the machine is shared)
                for name, opts in runs.items():
                    took = run_target(url, evs, a.batch, work / f"state-{kind}-{name}-{rnd}", **opts)
                    secs[name] = min(secs.get(name, took), took)
                    reset()
            fig = {"replica": kind, "changes": a.changes, "batch": a.batch,
                   **{f"{n}_rows_per_s": round(a.changes / s) for n, s in secs.items()},
                   "marked_ratio": round(secs["plain"] / secs["marked"], 2),
                   "owns_ratio": round(secs["plain"] / secs["owns"], 2)}
            emit(fig)
            results.append((kind, fig["plain_rows_per_s"], fig["marked_rows_per_s"], fig["marked_ratio"],
                            fig["owns_rows_per_s"], fig["owns_ratio"]))
        finally:
            if cleanup:
                cleanup()
    table(results, ("replica", "plain rows/s", "marked rows/s", "ratio", "owns + marked rows/s", "ratio"))


if __name__ == "__main__":
    main()
