"""No echo, the source side (CONTRACT §4, docs/two-way-sync.md): changes a cdc-agent `sql` target wrote are
not captured again, on real servers, with writes marked by hand the way the target marks its own:
PostgreSQL a replication origin `cdc-agent/<name>` on the writing session, MariaDB `skip_replication = 1`.
(Trigger capture's `origin` column: tests/test_trigger_source.py, every dialect.) The skipped transactions
still move the checkpoint, so a slot retains no WAL because of them, and they are counted."""

from __future__ import annotations

import time

import pytest

from agent.metrics import render_metrics
from agent.pgoutput import parse_lsn
from agent.sources.postgres import PostgresAdmin
from tests import test_mysql_source as my
from tests import test_pg_source as pgs
from tests.capturing import read


def pg_marked(db, origin: str, *stmts: str) -> None:
    """One transaction written the way a `sql` target writes: its session set up with replication origin
    `origin` (created if missing)."""
    with db.connect() as c:
        if not c.execute("SELECT 1 FROM pg_replication_origin WHERE roname = %s", (origin,)).fetchall():
            c.execute("SELECT pg_replication_origin_create(%s)", (origin,))
        c.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
        with c.transaction():
            for s in stmts:
                c.execute(s)


def pg_drain(src, idle_reads: int = 4, until=lambda src: True, timeout: float = 60):
    """Every change and the last checkpoint, confirming as the pipeline does, until `idle_reads` reads in a
    row bring nothing (a read over skipped changes alone brings nothing either, so one is not enough) and
    `until(src)` holds (a loaded walsender can pause longer than the idle reads mid-transaction)."""
    changes, ckpt, idle = [], None, 0
    deadline = time.monotonic() + timeout
    while idle < idle_reads or (not until(src) and time.monotonic() < deadline):
        b = read(src, 1000, 0.25)
        changes.extend(b.changes)
        if b.checkpoint:
            ckpt = b.checkpoint
            src.confirm(b.checkpoint)
        idle = 0 if b.changes or b.checkpoint else idle + 1
    return changes, ckpt


def test_postgres_skips_transactions_a_cdc_agent_wrote_and_still_confirms_past_them(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    cfg = pgs.make_config(pg_db.dsn, tmp_path, ["public.t"])
    PostgresAdmin(cfg).setup()
    pg_db.execute("INSERT INTO t VALUES (1, 'plain')")
    pg_marked(pg_db, "cdc-agent/crm", "INSERT INTO t VALUES (2, 'echo')", "UPDATE t SET v = 'echo 2' WHERE id = 2",
              "UPDATE t SET v = 'echo 1' WHERE id = 1")
    pg_marked(pg_db, "cdc-agent/pgsrc", "DELETE FROM t WHERE id = 2")     # the agent's own name: skipped too
    pg_marked(pg_db, "replica-of-x", "INSERT INTO t VALUES (3, 'another origin')")   # not a cdc-agent: captured
    pg_marked(pg_db, "replica-of-x", "INSERT INTO t VALUES (5, 'again')", "INSERT INTO t VALUES (6, 'again')")
    pg_db.execute("INSERT INTO t VALUES (4, 'plain')")
    src = pgs.started(cfg)
    try:
        got, ckpt = pg_drain(src, until=lambda s: s.status().skipped_echo >= 4)
        assert [(c.op, c.after["id"]) for c in got] == [("insert", 1), ("insert", 3), ("insert", 5), ("insert", 6),
                                                          ("insert", 4)]
        assert src.status().skipped_echo == 4
        # decoding gives a transaction written under an origin the origin's timestamp, 0 (2000-01-01) when the
        # writer set none (seen here for an origin's later transactions): the time it arrived is used instead
        assert all(abs(c.commit_ts - time.time()) < 600 for c in got), [c.commit_time for c in got]
    finally:
        src.close()

    # a stretch of nothing but echo: the source hands out its checkpoint, the slot is confirmed past it
    pg_marked(pg_db, "cdc-agent/crm", *[f"INSERT INTO t VALUES ({i}, 'echo')" for i in range(10, 60)])
    after_echo = parse_lsn(pg_db.execute("SELECT pg_current_wal_lsn()::text")[0][0])
    src = pgs.started(cfg, ckpt)
    try:
        changes, echo_ckpt = [], None
        deadline = time.monotonic() + 60
        while echo_ckpt is None and time.monotonic() < deadline:
            # (again while the stretch's COMMIT has not come: a loaded walsender can send it after the idle reads)
            more, echo_ckpt = pg_drain(src, until=lambda s: s.status().skipped_echo >= 50)
            changes += more
        assert changes == [] and src.status().skipped_echo == 50
        lag = src.status().lag_seconds
        assert lag is None or lag < 600, lag          # not "since 2000-01-01"
        assert echo_ckpt is not None and int(echo_ckpt, 16) > int(ckpt, 16)
        confirmed = pg_db.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                  "WHERE slot_name = 'cdc_pgsrc'")[0][0]
        assert parse_lsn(confirmed) >= after_echo
    finally:
        src.close()


def test_mariadb_skips_rows_written_with_skip_replication(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    cfg = my.make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.t"])
    src, start = my.started(cfg)
    conn = mariadb_db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1, 'plain')")
            conn.commit()
            cur.execute("SET SESSION skip_replication = 1")          # how a `sql` target marks its writes
            cur.execute("INSERT INTO t VALUES (2, 'echo'), (3, 'echo')")
            cur.execute("UPDATE t SET v = 'echo 1' WHERE id = 1")
            conn.commit()
            cur.execute("DELETE FROM t WHERE id = 3")
            conn.commit()
            cur.execute("SET SESSION skip_replication = 0")
            cur.execute("INSERT INTO t VALUES (4, 'plain')")
            conn.commit()
    finally:
        conn.close()
    try:
        batches = my.drain(src)
        changes = [c for b, _ in batches for c in b]
        assert [(c.op, (c.after or c.before)["id"]) for c in changes] == [("insert", 1), ("insert", 4)]
        assert src.status().skipped_echo == 4
        last = [ck for _, ck in batches if ck][-1]
    finally:
        src.close()
    # the skipped transactions still moved the checkpoint: a restart from it reads none of them again
    conn = mariadb_db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION skip_replication = 1")
            cur.execute("UPDATE t SET v = 'echo 4' WHERE id = 4")
            conn.commit()
    finally:
        conn.close()
    src, _ = my.started(cfg, last)
    try:
        batches = my.drain(src)
        assert [c for b, _ in batches for c in b] == [] and src.status().skipped_echo == 1
        assert any(ck and ck != last for _, ck in batches)
    finally:
        src.close()


def test_health_and_metrics_count_skipped_echo(pg_db, tmp_path):
    from agent.health import health_report
    from agent.monitor import Monitor
    from agent.spool import Spool
    from agent.sources.postgres import PostgresSource
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    cfg = pgs.make_config(pg_db.dsn, tmp_path, ["public.t"])
    PostgresAdmin(cfg).setup()
    pg_marked(pg_db, "cdc-agent/crm", "INSERT INTO t VALUES (1, 'echo')", "INSERT INTO t VALUES (2, 'echo')")
    src = PostgresSource(cfg)
    src.start(None)
    spool = Spool(cfg.agent.state_dir)
    try:
        pg_drain(src)
        mon = Monitor("pgsrc", "postgres")
        mon.source_status_fn = src.status
        assert health_report(cfg, mon, spool)["source"]["skipped_echo"] == 2
        assert "cdc_agent_echo_skipped_total{agent=\"pgsrc\"} 2.0" in render_metrics(cfg, mon, spool).decode()
    finally:
        src.close()
        spool.close()


if __name__ == "__main__":      # pragma: no cover
    pytest.main([__file__])
