"""Scenario 1 — drain: N changes (inserts, updates, deletes over a 12-column mixed-type table) are written
while the agent is stopped; then pg_recvlogical drains a slot created at the same point, and the agent
drains its own slot into the file target. Same cluster, same data, same run; one after the other so they do
not compete for the two cores.

    python -m bench.drain [--changes 1000000]
"""

from __future__ import annotations

import argparse

from bench.common import (setup_capture, AgentRun, Profiler, agent_config, bench_cluster, emit, pg_recvlogical_drain,
                          proc_cpu_seconds, proc_cpu_split, proc_tree, spool_bytes, table, tmpdir, wait_lines,
                          write_mixed_changes, MIXED_DDL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=None, help="source.batch_size for the agent")
    ap.add_argument("--delivery", choices=["process", "thread"], default=None, help="[agent] delivery")
    ap.add_argument("--profile", action="store_true", help="sample the agent with py-spy; print the top functions")
    ap.add_argument("--profile-capture", action="store_true",
                    help="sample only the capture process, native frames included (py-spy --native)")
    args = ap.parse_args()
    work = tmpdir("cdc-bench-drain-", keep=args.profile or args.profile_capture)
    cluster = bench_cluster()
    try:
        db = cluster.create_database("bench")
        db.execute(MIXED_DDL)
        # no initial snapshot: its reads would interleave with the stream and count among the lines waited for
        extra = 'snapshot = "never"\n' + (f"batch_size = {args.batch_size}" if args.batch_size else "")
        cfg = agent_config(work / "agent.toml", db.dsn, ["public.bench_items"], extra_source=extra,
                           extra_agent=f'delivery = "{args.delivery}"' if args.delivery else "")
        setup_capture(cfg)
        db.execute("SELECT pg_create_logical_replication_slot('recv_ref', 'pgoutput')")
        written = write_mixed_changes(db, args.changes)
        endpos = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]

        ref_s = pg_recvlogical_drain(cluster, "bench", "recv_ref", "cdc_bench", endpos)
        ref_rate = args.changes / ref_s

        agent = AgentRun(cfg, work / "agent.log").start()
        profiler = None
        if args.profile or args.profile_capture:
            profiler = Profiler(agent.proc.pid, work / "profile.txt", capture_only=args.profile_capture)
        done = wait_lines(work / "out" / "events.jsonl", args.changes, timeout=3600, proc=agent.proc)
        if profiler:
            profiler.stop()
        agent_s = done - agent.t0
        rss = agent.peak_rss_mb()
        cpu = agent.cpu_seconds()
        capture_cpu = proc_cpu_seconds(agent.proc.pid)      # the main process is capture; delivery is its child
        children = [proc_cpu_split(p) for p in proc_tree(agent.proc.pid)[1:]]
        delivery_user, delivery_sys = sum(u for u, _ in children), sum(s for _, s in children)
        agent.stop()
        spooled = spool_bytes(work / "state")
        rate = args.changes / agent_s
        fig = {"scenario": "drain", "changes": args.changes, **written,
               "pg_recvlogical_seconds": round(ref_s, 2), "pg_recvlogical_changes_per_s": round(ref_rate),
               "agent_seconds": round(agent_s, 2), "agent_changes_per_s": round(rate),
               "ratio_vs_pg_recvlogical": round(rate / ref_rate, 3), "agent_peak_rss_mb": rss,
               "agent_cpu_seconds": round(cpu, 1), "capture_cpu_seconds": round(capture_cpu, 2),
               "capture_cpu_us_per_change": round(capture_cpu * 1e6 / args.changes, 1),
               "agent_cpu_us_per_change": round(cpu * 1e6 / args.changes, 1),
               "delivery_cpu_us_per_change": round((delivery_user + delivery_sys) * 1e6 / args.changes, 1),
               "delivery_user_us_per_change": round(delivery_user * 1e6 / args.changes, 1),
               "delivery_sys_us_per_change": round(delivery_sys * 1e6 / args.changes, 1),
               "spool_bytes": spooled, "spool_bytes_per_change": round(spooled / args.changes, 1)}
        emit(fig)
        table([("pg_recvlogical (pgoutput → /dev/null)", f"{ref_s:.2f}", f"{ref_rate:,.0f}", ""),
               ("cdc-agent (→ file target, fsynced)", f"{agent_s:.2f}", f"{rate:,.0f}", f"{rss} MB")],
              (f"drain of {args.changes} changes", "seconds", "changes/s", "peak RSS"))
        print(f"ratio agent / pg_recvlogical: {rate / ref_rate:.2f}")
        if profiler:
            top = profiler.top()
            emit({"scenario": "drain_profile", "self_percent": top})
            table(top, ("function (py-spy, self time)", "% of samples"))
            print(f"raw samples: {work / 'profile.txt'}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
