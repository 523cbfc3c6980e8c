"""Where trigger capture's cost goes on PostgreSQL, part by part: pgbench's tpcb-like transactions (four
one-row statements) from real client sessions, with the capture of the newest version installed and then
taken apart, each variant measured as the writers' backend CPU per transaction and their rate, over the same
workload without triggers in the same run (the reference).

The variants keep the installed triggers and redefine the body of the capture function they call
(`cdc_changelog_capture_plain`: pgbench's tables have only types whose JSON is independent of the session)
or switch between the statement triggers and one row trigger per table calling the same function:

- `stmt_full`, `row_full`: the capture as installed (statement level, the default; `trigger_level = "row"`);
- `stmt_empty`, `row_empty`: the trigger fires and the function returns at once (the trigger mechanism,
  transition tables included);
- `stmt_const`, `row_const`: the function writes one constant changelog row per call (one SPI INSERT with
  its identity, two index entries and `txid_current()`, no row images): the floor of any capture that writes
  a changelog row in the writer's transaction;
- `stmt_noimg`: the installed function with its row images replaced by NULL (what the JSON images cost);
- `stmt_invoker`: the installed function as SECURITY INVOKER (what SECURITY DEFINER costs per call);
- `stmt_brin`, `row_brin`: the installed capture with the changelog's txid index (a btree, which the reader
  and the pruning use) replaced by a BRIN index, which a monotonic column like txid suits: what the btree's
  entry costs per changelog row;
- `stmt_noidx`: the installed capture with no txid index at all (the floor of what its index costs);
- `row_send`, `row_text`: the row trigger's INSERT with its images in another form, to see what the JSON
  costs: the binary form of the row (`record_send`, into bytea columns the bench adds) or its text form
  (`record_out`, `OLD::text`); no reader decodes these, they only price the writer's side.

Variants alternate within each round so that drift (cache warm-up, table growth, checkpoints) hits all alike;
the changelog is emptied after each. A variant whose text replacement does not apply (the function changed)
stops the run rather than measuring the wrong thing.

    python -m bench.trigger_parts [--rounds 3] [--seconds 6] [--clients 1] [--only stmt_full,stmt_const]
"""

from __future__ import annotations

import argparse

from bench.common import bench_cluster, emit, table, tmpdir
from bench.trigger_overhead import PGBENCH_TABLES, pg_rate, pgbench, trigger_config

from agent.sources.trigger import TriggerAdmin

FUNCTION = "cdc_changelog_capture_plain"
STATEMENT_TRIGGERS = ("cdc_changelog_capture_i", "cdc_changelog_capture_u", "cdc_changelog_capture_d")
ROW_TRIGGER = "bench_parts_row"
IMAGES = ("pg_catalog.json_build_array(o.*)", "pg_catalog.json_build_array(n.*)")
VARIANTS = ("stmt_full", "row_full", "stmt_empty", "row_empty", "stmt_const", "row_const", "stmt_noimg",
            "stmt_invoker", "stmt_brin", "row_brin", "stmt_noidx", "row_send", "row_text")
TXID_INDEX = "cdc_changelog_txid"
TXID_INDEXES: dict[str, str | None] = {         # variant's index: the statement that makes it (none: no index)
    "btree": f"CREATE INDEX {TXID_INDEX} ON public.cdc_changelog (txid)",
    "brin": f"CREATE INDEX {TXID_INDEX} ON public.cdc_changelog USING brin (txid)",
    "none": None,
}


def replaced(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if old not in text:
            raise SystemExit(f"the capture function no longer contains {old!r}: update bench/trigger_parts.py")
        text = text.replace(old, new)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--only", type=lambda v: v.split(","), help="a comma-separated subset of the variants")
    args = ap.parse_args()
    names = ["off"] + [n for n in (args.only or VARIANTS) if n != "off"]
    unknown = set(names) - {"off", *VARIANTS}
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")

    work = tmpdir("cdc-bench-trigger-parts-")
    cluster = bench_cluster(max_connections="100")
    try:
        cluster.create_database("bench")
        pgbench(cluster, "bench", ["-i", "-q", "-s", str(args.scale)])

        def q(sql: str) -> list:
            return cluster.execute(sql, dbname="bench")

        TriggerAdmin(trigger_config(work, cluster.dsn("bench"), PGBENCH_TABLES)[0]).setup()
        fn = q(f"SELECT oid::regprocedure::text FROM pg_proc WHERE proname = '{FUNCTION}'")[0][0]
        installed = q(f"SELECT pg_get_functiondef('{fn}'::regprocedure)")[0][0]
        head = installed.split("BEGIN", 1)[0]       # CREATE OR REPLACE FUNCTION ... AS $function$ DECLARE ...
        for t in PGBENCH_TABLES:
            q(f"CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW "
              f"EXECUTE FUNCTION {FUNCTION}()")

        def level(kind: str) -> None:
            for t in PGBENCH_TABLES:
                for tg in STATEMENT_TRIGGERS:
                    q(f"ALTER TABLE {t} {'ENABLE' if kind == 'stmt' else 'DISABLE'} TRIGGER {tg}")
                q(f"ALTER TABLE {t} {'ENABLE' if kind == 'row' else 'DISABLE'} TRIGGER {ROW_TRIGGER}")

        empty = head + "BEGIN RETURN NULL; END $function$"
        const = head + ("BEGIN INSERT INTO public.cdc_changelog (txid, tbl, op, created) VALUES "
                        "(pg_catalog.txid_current(), 'x', 'U', pg_catalog.clock_timestamp()); RETURN NULL; "
                        "END $function$")
        noimg = replaced(installed, [(i, "NULL::json") for i in IMAGES])
        q("ALTER TABLE public.cdc_changelog ADD COLUMN bench_before bytea, ADD COLUMN bench_after bytea, "
          "ADD COLUMN bench_before_text text, ADD COLUMN bench_after_text text")

        def row_images(columns: str, image: str) -> str:
            return head + (f"BEGIN INSERT INTO public.cdc_changelog (txid, tbl, op, created, {columns}) VALUES "
                           "(pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' "
                           "OPERATOR(pg_catalog.||) TG_TABLE_NAME, pg_catalog.left(TG_OP, 1), "
                           "pg_catalog.clock_timestamp(), "
                           f"CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN {image.format('OLD')} END, "
                           f"CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN {image.format('NEW')} END); "
                           "RETURN NULL; END $function$")
        if not q(f"SELECT 1 FROM pg_indexes WHERE indexname = '{TXID_INDEX}' AND indexdef LIKE '%btree (txid)'"):
            raise SystemExit(f"the changelog has no btree {TXID_INDEX}: update bench/trigger_parts.py")
        # name: (trigger level, function body, security definer, the txid index)
        variants: dict[str, tuple[str, str, bool, str]] = {
            "off": ("off", installed, True, "btree"),
            "stmt_full": ("stmt", installed, True, "btree"), "row_full": ("row", installed, True, "btree"),
            "stmt_empty": ("stmt", empty, True, "btree"), "row_empty": ("row", empty, True, "btree"),
            "stmt_const": ("stmt", const, True, "btree"), "row_const": ("row", const, True, "btree"),
            "stmt_noimg": ("stmt", noimg, True, "btree"), "stmt_invoker": ("stmt", installed, False, "btree"),
            "stmt_brin": ("stmt", installed, True, "brin"), "row_brin": ("row", installed, True, "brin"),
            "stmt_noidx": ("stmt", installed, True, "none"),
            "row_send": ("row", row_images("bench_before, bench_after", "pg_catalog.record_send({})"), True, "btree"),
            "row_text": ("row", row_images("bench_before_text, bench_after_text", "{}::pg_catalog.text"), True,
                         "btree"),
        }
        assert set(variants) == {"off", *VARIANTS}
        figures: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for rnd in range(1, args.rounds + 1):
            for name in names:
                kind, body, definer, index = variants[name]
                level(kind)
                q(f"DROP INDEX IF EXISTS public.{TXID_INDEX}")
                create_index = TXID_INDEXES[index]
                if create_index:
                    q(create_index)
                q(body)
                q(f"ALTER FUNCTION {fn} {'SECURITY DEFINER' if definer else 'SECURITY INVOKER'}")
                cpu: list[float] = []
                tps = pg_rate(cluster, args.seconds, args.clients, None, cpu)
                rows = q("SELECT count(*) FROM cdc_changelog")[0][0]
                q("TRUNCATE cdc_changelog")
                q("VACUUM ANALYZE")
                figures[name].append((tps, cpu[0] if cpu else float("nan")))
                emit({"scenario": "trigger_parts", "variant": name, "round": rnd, "clients": args.clients,
                      "tps": round(tps, 1), "backend_cpu_us_per_txn": round(cpu[0], 1) if cpu else None,
                      "changelog_rows": rows})
        mean = {n: (sum(t for t, _ in v) / len(v), sum(c for _, c in v) / len(v)) for n, v in figures.items()}
        off_tps, off_cpu = mean["off"]
        summary = []
        for n in names:
            tps, us = mean[n]
            emit({"scenario": "trigger_parts", "summary": True, "variant": n, "clients": args.clients,
                  "rounds": args.rounds, "tps": round(tps, 1), "ratio": round(tps / off_tps, 3),
                  "backend_cpu_us_per_txn": round(us, 1), "added_cpu_us_per_txn": round(us - off_cpu, 1)})
            summary.append((n, f"{tps:.0f}", f"{tps / off_tps:.3f}", f"{us:.0f}", f"{us - off_cpu:+.0f}"))
        table(summary, (f"variant ({args.clients} client(s), {args.rounds} rounds)", "tps", "ratio to off",
                        "backend CPU µs/txn", "over off"))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
