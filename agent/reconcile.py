"""`cdc-agent reconcile` (CONTRACT §5): a source table against a `sql` target's copy, in key-range chunks.

Each chunk is the next `chunk_rows` source rows by key, and the replica rows in the same key range. Both are
turned into one comparable form (adapters/_sqlvalues.py `comparable`: the event value forms, so DECIMAL
12.5 equals numeric "12.50" and a timestamptz its UTC DATETIME) and hashed; only a chunk whose checksums
differ is compared row by row. Every row is read once from each side, a chunk at a time: memory stays one
chunk, and the row-level work is spent on the few chunks that differ. A row that one database sorts into
another chunk (text keys under different collations) is matched up at the end, not reported twice.

`--repair` writes the source's current rows for missing and different keys into the replica and deletes the
extra ones, through the sql target's own upsert statements, in one transaction per table; it does not touch
the target's position in cdc_agent_offsets: events still spooled are newer than nothing it wrote that matters
(a later change of a row has a later event, which then applies on top), so the replica converges on the source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TableResult:
    table: str
    replica_table: str
    source_rows: int = 0
    replica_rows: int = 0
    rows_fetched: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    missing: list = field(default_factory=list)        # keys at the source, not in the replica
    extra: list = field(default_factory=list)          # keys in the replica, not at the source
    different: list = field(default_factory=list)      # keys in both, with different values
    repaired: bool = False
    seconds: float = 0.0

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.different)


def _digest(rows: list[tuple]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for r in rows:
        h.update(orjson.dumps(r))
    return h.digest()


def reconcile_table(cfg, settings, source_table: str, *, repair: bool = False, chunk_rows: int = 5000,
                    src_engine=None, rep_engine=None, progress=None) -> TableResult:
    from sqlalchemy import MetaData, Table, select

    from adapters._sqladmin import source_engine, source_table_name
    from adapters._sqlreplica import Replica, key_range, split_name
    from adapters._sqlvalues import comparer_for
    from adapters.sql import make_engine, marking_for

    opts = settings.options
    started = time.monotonic()
    own_src, own_rep = src_engine is None, rep_engine is None
    src_engine = src_engine or source_engine(cfg)
    marking = marking_for(opts, "repair") if repair else None      # repairs are marked like the target's writes
    rep_engine = rep_engine or make_engine(opts.url, marking)
    try:
        dst = opts.tables[source_table]
        res = TableResult(source_table, dst)
        schema, name = source_table_name(cfg, source_table)
        stab = Table(name, MetaData(), autoload_with=src_engine, schema=schema)
        rschema, rname = split_name(dst, rep_engine.dialect.name)
        rtab = Table(rname, MetaData(), autoload_with=rep_engine, schema=rschema)
        renames = {k.rpartition(".")[2]: v for k, v in opts.columns.items() if k.rpartition(".")[0] == source_table}
        key = [c.name for c in stab.primary_key.columns]
        if not key:
            raise ConfigError(str(cfg.path), None, f"source table {source_table} has no primary key to reconcile by")
        owned = opts.owns.get(source_table)          # two-way sync: only the key and the owned columns are ours
        cols = [c.name for c in stab.columns if renames.get(c.name, c.name) in rtab.c
                and (owned is None or c.name in owned or c.name in key)]
        rcols = [renames.get(c, c) for c in cols]
        rkey = [renames.get(k, k) for k in key]
        comparers = [comparer_for(stab.c[c].type) for c in cols]
        kidx = [cols.index(k) for k in key]
        json_cols = {c for c in cols if type(stab.c[c].type).__name__.upper() in ("JSON", "JSONB")}

        def canon(row, _apply=lambda f, v: f(v)) -> tuple:
            return tuple(map(_apply, comparers, row))

        src_only: dict[tuple, tuple] = {}      # canonical key -> (canonical row, raw source row)
        rep_only: dict[tuple, tuple] = {}
        different: dict[tuple, tuple] = {}
        last: tuple | None = None
        sel_src = select(*(stab.c[c] for c in cols))
        sel_rep = select(*(rtab.c[c] for c in rcols))
        with src_engine.connect() as sconn, rep_engine.connect() as rconn:
            while True:
                q = sel_src.order_by(*(stab.c[k] for k in key)).limit(chunk_rows)
                w = key_range(stab, tuple(key), last, None)
                srows = sconn.execute(q.where(w) if w is not None else q).all()
                upto = tuple(srows[-1][i] for i in kidx) if len(srows) == chunk_rows else None
                w = key_range(rtab, tuple(rkey), last, upto)
                rrows = rconn.execute(sel_rep.where(w) if w is not None else sel_rep).all()
                res.chunks += 1
                res.source_rows += len(srows)
                res.replica_rows += len(rrows)
                res.rows_fetched += len(srows) + len(rrows)
                sc = [canon(r) for r in srows]
                rc = sorted(canon(r) for r in rrows)
                if _digest(sorted(sc)) != _digest(rc):
                    res.chunks_differing += 1
                    smap = {tuple(c[i] for i in kidx): (c, r) for c, r in zip(sc, srows)}
                    rmap = {tuple(c[i] for i in kidx): c for c in rc}
                    for k, (c, raw) in smap.items():
                        other = rmap.pop(k, None)
                        if other is None:
                            src_only[k] = (c, raw)
                        elif other != c:
                            different[k] = raw
                    for k, c in rmap.items():
                        rep_only[k] = (c, None)
                if progress is not None:
                    progress(res)
                if upto is None:
                    break
                last = upto
        for k in list(src_only):                # sorted into different chunks by the two databases
            if k in rep_only:
                c, raw = src_only.pop(k)
                if rep_only.pop(k)[0] != c:
                    different[k] = raw
        if opts.deletes_for(source_table) == "ignore":
            rep_only.clear()        # rows the source deleted (or never had) stay in the target by design
        res.missing, res.extra, res.different = sorted(src_only), sorted(rep_only), sorted(different)
        if repair and res.differences:
            replica = Replica(rep_engine, dataclasses.replace(opts, tables={source_table: dst}))
            plan = replica.plans[source_table]

            def source_row(raw) -> dict:
                d = dict(zip(cols, raw))
                for c in json_cols:
                    if isinstance(d[c], (str, bytes)):
                        d[c] = orjson.loads(d[c])
                return d

            # (plan, op, key, row): deletes carry no row
            changes: list[tuple[Any, str, tuple[Any, ...], dict[str, Any] | None]] = [
                (plan, "d", tuple(plan.writers[k](v) for k, v in zip(rkey, kk)), None) for kk in rep_only
                if opts.deletes_for(source_table) == "apply"]      # deletes = "ignore": extra rows are theirs
            for raw in [v[1] for v in src_only.values()] + list(different.values()):
                row = replica.row(plan, source_row(raw), set())
                changes.append((plan, "u", tuple(row[k] for k in plan.key), row))
            with rep_engine.begin() as conn:
                marked = marking is not None and marking.begin(conn)
                replica.apply_in(conn, changes)
                if marked and marking is not None:
                    marking.end(conn)
            res.repaired = True
        res.seconds = round(time.monotonic() - started, 3)
        return res
    finally:
        if own_src:
            src_engine.dispose()
        if own_rep:
            rep_engine.dispose()


def reconcile(cfg, target_name: str, tables: list[str] | None = None, *, repair: bool = False,
              chunk_rows: int = 5000, progress=None) -> list[TableResult]:
    settings = cfg.target(target_name)
    return [reconcile_table(cfg, settings, t, repair=repair, chunk_rows=chunk_rows, progress=progress)
            for t in (tables or list(settings.options.tables))]


def _terminal_progress(r: TableResult) -> None:
    sys.stderr.write(f"\r{r.table}: {r.source_rows} source rows compared, "
                     f"{r.chunks_differing} chunk(s) differ so far")
    sys.stderr.flush()


def _key_text(k: tuple) -> str:
    return "|".join(str(v) for v in k)


def reconcile_command(cfg, args) -> int:
    names = [t.name for t in cfg.targets if t.kind == "sql"]
    if args.target not in names:
        print(f"cdc-agent: --target {args.target}: not a sql target of {cfg.path} (sql targets: "
              f"{', '.join(names) or 'none'})", file=sys.stderr)
        return 2
    mapped = list(cfg.target(args.target).options.tables)
    for t in args.table or []:
        if t not in mapped:
            print(f"cdc-agent: --table {t}: not replicated by target {args.target} ({', '.join(mapped)})",
                  file=sys.stderr)
            return 2
    if args.chunk_rows < 1:
        print("cdc-agent: --chunk-rows must be greater than zero", file=sys.stderr)
        return 2
    progress = _terminal_progress if sys.stderr.isatty() and not args.json else None
    results = reconcile(cfg, args.target, args.table, repair=args.repair, chunk_rows=args.chunk_rows,
                        progress=progress)
    if progress is not None:
        sys.stderr.write("\n")
    if args.json:
        print(orjson.dumps([{**r.__dict__, "missing": [_key_text(k) for k in r.missing],
                             "extra": [_key_text(k) for k in r.extra],
                             "different": [_key_text(k) for k in r.different]} for r in results],
                           option=orjson.OPT_INDENT_2).decode())
    else:
        for r in results:
            print(f"{r.table} -> {r.replica_table}: {r.source_rows} rows at the source, {r.replica_rows} in the "
                  f"replica; {len(r.missing)} missing, {len(r.extra)} extra, {len(r.different)} different"
                  f" ({r.chunks} chunks, {r.chunks_differing} differing, {r.rows_fetched} rows read, {r.seconds}s)"
                  + ("; repaired" if r.repaired else ""))
            for label, keys in (("missing", r.missing), ("extra", r.extra), ("different", r.different)):
                for k in keys[:50]:
                    print(f"  {label:<9} {_key_text(k)}")
                if len(keys) > 50:
                    print(f"  ... and {len(keys) - 50} more {label}")
    return 1 if any(r.differences for r in results) else 0


# ---------------------------------------------------------------- the schedule, in the running agent


def start_schedule(cfg, monitor) -> Any:
    """An APScheduler job per sql target with `reconcile_every`: reconcile without repair, the counts go to
    `monitor.drift[target]` (health `targets.NAME.drift`, metrics `cdc_agent_target_drift_rows`)."""
    from adapters.sql import every_seconds
    jobs = [(t, every_seconds(t.options.reconcile_every)) for t in cfg.targets
            if t.kind == "sql" and t.options.reconcile_every]
    if not jobs:
        return None
    from apscheduler.schedulers.background import BackgroundScheduler
    sched = BackgroundScheduler(daemon=True)
    for t, seconds in jobs:
        sched.add_job(_scheduled, "interval", seconds=seconds, args=(cfg, t.name, monitor), id=f"reconcile-{t.name}",
                      max_instances=1, coalesce=True, next_run_time=None)
    sched.start()
    for t, seconds in jobs:     # the first run soon after start, then every interval
        sched.modify_job(f"reconcile-{t.name}", next_run_time=_soon(min(seconds, 5.0)))
    return sched


def _soon(seconds: float):
    import datetime as dt
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def _scheduled(cfg, target_name: str, monitor) -> None:
    from .secrets import redact
    drift: dict[str, Any]
    try:
        results = reconcile(cfg, target_name)
        drift = {"missing": sum(len(r.missing) for r in results), "extra": sum(len(r.extra) for r in results),
                 "different": sum(len(r.different) for r in results), "checked_at": time.time(), "error": None}
        if drift["missing"] or drift["extra"] or drift["different"]:
            log.warning("reconcile of target %s: %d missing, %d extra, %d different rows (cdc-agent reconcile "
                        "--target %s lists them; --repair fixes them)", target_name, drift["missing"],
                        drift["extra"], drift["different"], target_name)
    except Exception as e:
        log.warning("scheduled reconcile of target %s failed: %s", target_name, redact(str(e)))
        drift = {**monitor.drift.get(target_name, {}), "error": redact(str(e).splitlines()[0] if str(e) else
                                                                       type(e).__name__), "checked_at": time.time()}
    monitor.drift[target_name] = drift
