"""take_rows reading the replication connection with libpq's PQgetCopyData itself (agent/fastpg_libpq.c),
against a real server: the same changes, row images and events as through psycopg's get_copy_data, and
psycopg's path whenever the libpq found does not agree with psycopg."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psycopg import pq

from agent import fastpath
from agent.changes import RowChange
from agent.mapping import EventMapper
from agent.sources.postgres import PostgresAdmin
from tests.test_pg_source import drain, make_config, started

needs_extension = pytest.mark.skipif(not fastpath.compiled() or os.environ.get(fastpath.PURE_ENV, "") not in ("", "0"),
                                     reason="the compiled core is not built, or not used")


CHILD_ENV = "CDC_TEST_DIRECT_COPY_CHILD"


def ran_in_a_fresh_process(request, tmp_path) -> bool:
    """True when this test ran, and passed, in a child interpreter instead: this worker has loaded a second
    libpq (an ODBC driver's, from a trigger or sql test before this module), and with two the agent keeps
    psycopg's get_copy_data by design (fastpath.libpq_found), so the direct path is tested where one is."""
    path, why = fastpath.libpq_found()
    if path is not None or why != "more than one libpq is loaded" or os.environ.get(CHILD_ENV) == "1":
        return False
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                        f"--basetemp={tmp_path / 'child'}", request.node.nodeid], cwd=root,
                       env={**os.environ, CHILD_ENV: "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    return True


@pytest.fixture
def mixed(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, j jsonb, b bytea)")
    pg_db.execute("CREATE TABLE other (id int PRIMARY KEY)")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.t"])
    PostgresAdmin(cfg).setup()
    pg_db.execute("INSERT INTO t SELECT g, 'row ' || g, g / 3.0, jsonb_build_object('g', g), '\\x00ff' "
                  "FROM generate_series(1, 2500) g")
    pg_db.execute("INSERT INTO other VALUES (1)")
    pg_db.execute("UPDATE t SET v = v || ' again', b = NULL WHERE id % 3 = 0")
    pg_db.execute("DELETE FROM t WHERE id % 7 = 0")
    pg_db.execute("INSERT INTO t VALUES (5000, repeat('long ', 3000), NULL, NULL, NULL)")
    pg_db.execute("UPDATE t SET n = 1 WHERE id = 5000")         # its TOASTed text unchanged: the pure path
    return cfg


def changes_of(cfg, direct: bool, monkeypatch):
    with monkeypatch.context() as m:
        if not direct:
            m.setattr(fastpath, "direct_copy", lambda pgconn: False)
        src = started(cfg)
        try:
            assert src._direct is direct
            changes, ckpt = drain(src, 2500 + 833 + 357 + 2)       # (no confirm: the next start reads it again)
        finally:
            src.close()
    return changes, ckpt


def key(c: RowChange):
    return (type(c).__name__, c.table, c.op, c.before, c.after, c.position, c.commit_time, c.txid, c.key_columns,
            c.unavailable)


@needs_extension
def test_reading_with_libpq_gives_what_psycopg_gives(mixed, monkeypatch, request, tmp_path):
    if ran_in_a_fresh_process(request, tmp_path):
        return
    direct, ckpt_d = changes_of(mixed, True, monkeypatch)
    via_psycopg, ckpt_p = changes_of(mixed, False, monkeypatch)
    assert len(direct) == 2500 + 833 + 357 + 2 and ckpt_d == ckpt_p
    assert [key(c) for c in direct] == [key(c) for c in via_psycopg]
    assert sum(type(c).__name__ == "RenderedRowChange" for c in direct) >= 3000
    events = [EventMapper(mixed).map(cs) for cs in (direct, via_psycopg)]
    assert [(e.id, e.body) for e in events[0][0]] == [(e.id, e.body) for e in events[1][0]]


@needs_extension
def test_a_libpq_that_does_not_agree_with_psycopg_is_not_used(mixed, monkeypatch, caplog, request, tmp_path):
    if ran_in_a_fresh_process(request, tmp_path):
        return
    monkeypatch.setattr(fastpath, "_libpq", fastpath._libpq)         # (restored after the test)
    assert fastpath._fastpg is not None
    monkeypatch.setattr(fastpath._fastpg, "libpq_facts", lambda ptr: (0, 0, 0, 0))
    with caplog.at_level(logging.WARNING, logger="agent.fastpath"):
        src = started(mixed)
        try:
            assert src._direct is False
            changes, _ = drain(src, 10, max_changes=10)
        finally:
            src.close()
    assert len(changes) >= 10
    assert "does not agree with psycopg" in caplog.text
    assert fastpath._libpq is not None and fastpath._libpq[0] is None


def test_the_pure_path_reads_through_psycopg(mixed, monkeypatch):
    monkeypatch.setenv(fastpath.PURE_ENV, "1")
    assert fastpath.direct_copy(object()) is False


PSQLODBC = Path("/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so")


@needs_extension
@pytest.mark.skipif(not PSQLODBC.exists(), reason="the PostgreSQL ODBC driver is not installed")
@pytest.mark.skipif(pq.__impl__ != "binary", reason="psycopg uses the system libpq, the one psqlodbc loads too")
def test_a_second_libpq_in_the_process_keeps_psycopgs_reads(pg_db):
    # in a fresh interpreter: psycopg's libpq, then the ODBC driver's (psqlodbc links the system libpq)
    code = (f"import ctypes, psycopg\nfrom agent import fastpath\nconn = psycopg.connect({pg_db.dsn!r})\n"
            f"ctypes.CDLL({str(PSQLODBC)!r})\nprint(fastpath.libpq_found()[1], fastpath.direct_copy(conn.pgconn))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                       text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != fastpath.PURE_ENV})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "more than one libpq is loaded False"
