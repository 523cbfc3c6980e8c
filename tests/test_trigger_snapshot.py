"""Incremental snapshots over trigger capture (agent/sources/trigger/snapshot.py) against real databases:
SQLite and PostgreSQL always, MariaDB when its server is installed. A read row equals the captured row of
the same data; rows that exist before the agent, writers changing random keys while the chunks are read,
the agent SIGKILLed mid-snapshot: the delivered events rebuild the table exactly and the snapshot resumes
instead of starting again; `--target`; bad input; setup / teardown / check of the watermark objects."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.sources.trigger import TriggerAdmin, TriggerSource
from agent.sources.trigger.snapshot import TriggerSnapshotReader
from tests.agentproc import ROOT, AgentProcess, read_events, wait_for
from tests.test_trigger_source import (DDL, EXPECTED, INSERT, MariaBackend, PgBackend, SqliteBackend, drain,
                                       event_form, make_config)

ROWS, CHUNK = 2000, 100


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(params=["sqlite", "pg", "mariadb"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        return SqliteBackend(tmp_path / "erp.db")
    if request.param == "pg":
        return PgBackend(request.getfixturevalue("pg_db"), odbc=False)
    return MariaBackend(request.getfixturevalue("mariadb_db"), odbc=False)


# ---------------------------------------------------------------- a read row is a captured row

NULLS = "INSERT INTO customers (customer_id, name) VALUES (7, 'only a name')"


def test_chunk_rows_equal_captured_rows(backend, tmp_path):
    d = backend.dialect
    backend.write(DDL[d])
    extra = []
    if d == "postgresql":
        # a composite: the trigger writes its text form too (before_texts / after_texts)
        backend.write("CREATE TYPE addr AS (street text, n int)", "ALTER TABLE customers ADD COLUMN home addr")
        extra = ["UPDATE customers SET home = ROW('Main St', 5) WHERE customer_id = 42"]
    cfg = make_config(tmp_path, backend, ["customers"])
    TriggerAdmin(cfg).setup()
    # the writer's session settings must not matter to either side
    session = (["SET SESSION bytea_output = 'escape'", "SET SESSION TimeZone = 'America/Lima'",
                "SET SESSION extra_float_digits = 0"] if d == "postgresql" else [])
    backend.write(*session, INSERT[d], NULLS, *extra)
    src = TriggerSource(cfg)
    src.start(None)
    try:
        captured = {c.after["customer_id"]: c.after for c in drain(src)}     # the last image of each row
    finally:
        src.close()
    reader = TriggerSnapshotReader(cfg)
    try:
        table = backend.table("customers")
        assert reader.key_columns(table) == ("customer_id",)
        rows, last = reader.read_chunk(table, ("customer_id",), None, 1, None)
        more, last2 = reader.read_chunk(table, ("customer_id",), last, 10, None)
        assert reader.read_chunk(table, ("customer_id",), last2, 10, None) == ([], None)
    finally:
        reader.close()
    got = rows + more
    assert [r["customer_id"] for r in got] == [7, 42]
    for r in got:
        assert event_form(r) == event_form(captured[r["customer_id"]])
        assert list(r) == list(captured[r["customer_id"]])          # column order too
    want = dict(EXPECTED[d])
    if d == "postgresql":
        want["home"] = '("Main St",5)'
    assert event_form(got[1]) == want


def test_composite_keys_and_where(tmp_path):
    be = SqliteBackend(tmp_path / "erp.db")
    be.write("CREATE TABLE lines (order_id INTEGER, line TEXT, qty INTEGER, PRIMARY KEY (order_id, line))")
    be.write(*[f"INSERT INTO lines VALUES ({o}, 'l{n:02d}', {o * n})" for o in range(1, 6) for n in range(1, 8)])
    cfg = make_config(tmp_path, be, ["lines"])
    TriggerAdmin(cfg).setup()
    reader = TriggerSnapshotReader(cfg)
    try:
        seen, last = [], None
        while True:
            rows, last = reader.read_chunk("main.lines", ("order_id", "line"), last, 4, "qty % 2 = 0 OR line = 'l01'")
            if not rows:
                break
            seen += [(r["order_id"], r["line"]) for r in rows]
    finally:
        reader.close()
    want = sorted((o, f"l{n:02d}") for o in range(1, 6) for n in range(1, 8) if (o * n) % 2 == 0 or n == 1)
    assert seen == want


# ---------------------------------------------------------------- writers, kills, rebuild

def _agent_config(tmp_path: Path, be, snapshot: str = "initial", extra_targets: str = "") -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "snap"
state_dir = "state"
delivery = "thread"
[source]
kind = "trigger"
dsn = "{be.dsn}"
tables = ["{be.table('items')}"]
poll_interval_seconds = 0.05
max_wait_seconds = 2
snapshot = "{snapshot}"
snapshot_chunk_rows = {CHUNK}
[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"
{extra_targets}
[health]
listen = "off"
""")
    return cfg


class Writer(threading.Thread):
    """Updates, deletes and re-inserts random keys until stopped (one connection, autocommit statements)."""

    def __init__(self, be, seed: int):
        super().__init__(daemon=True)
        self.be, self.rng, self.stop, self.errors, self.done = be, random.Random(seed), threading.Event(), [], 0

    def statement(self) -> tuple[str, tuple]:
        k = self.rng.randrange(1, ROWS + 200)
        r = self.rng.random()
        if r < 0.5:
            return "UPDATE items SET v = v + 1 WHERE id = %s", (k,)
        if r < 0.75:
            return "DELETE FROM items WHERE id = %s", (k,)
        if self.be.dialect == "mysql":
            return "INSERT INTO items VALUES (%s, 0, 'new') ON DUPLICATE KEY UPDATE v = v + 100", (k,)
        return "INSERT INTO items VALUES (%s, 0, 'new') ON CONFLICT (id) DO UPDATE SET v = items.v + 100", (k,)

    def run(self):
        try:
            if self.be.dialect == "sqlite":
                conn = sqlite3.connect(self.be.path, isolation_level=None, timeout=30)
                run = lambda q, p: conn.execute(q.replace("%s", "?"), p)     # noqa: E731
            elif self.be.dialect == "postgresql":
                conn = self.be.db.connect()          # autocommit
                run = conn.execute
            else:
                conn = self.be.db.connect()          # autocommit
                cur = conn.cursor()
                run = cur.execute
            while not self.stop.is_set():
                run(*self.statement())
                self.done += 1
                time.sleep(0.002)
            conn.close()
        except Exception as e:  # surfaced by the test
            self.errors.append(repr(e))


def _rebuild(events: list[dict]) -> dict[int, tuple]:
    """Apply each subject's events in delivery order (first delivery of each id): read/insert/update ->
    row = after, delete -> gone."""
    seen, table = set(), {}
    for e in events:
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        after = e["data"]["after"]
        if after is None:
            table.pop(int(e["subject"]), None)
        else:
            table[int(e["subject"])] = (after["v"], after["pad"])
    return table


def _db_table(be) -> dict[int, tuple]:
    if be.dialect == "sqlite":
        c = sqlite3.connect(be.path)
        try:
            return {r[0]: (r[1], r[2]) for r in c.execute("SELECT id, v, pad FROM items")}
        finally:
            c.close()
    return {r[0]: (r[1], r[2]) for r in be.db.execute("SELECT id, v, pad FROM items")}


def _snapshots(cfg) -> list[dict]:
    p = cli("snapshot", "-c", str(cfg), "--status", "--json")
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []


def _fill(be, rows: int) -> None:
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad varchar(40))")
    for start in range(1, rows + 1, 500):
        values = ", ".join(f"({i}, 0, 'row {i}')" for i in range(start, min(rows, start + 499) + 1))
        be.write(f"INSERT INTO items VALUES {values}")


def test_initial_snapshot_with_writers_and_kills(backend, tmp_path):
    be = backend
    _fill(be, ROWS)
    cfg = _agent_config(tmp_path, be)
    p = cli("setup", "-c", str(cfg))
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out" / "events.jsonl"
    writers = [Writer(be, seed) for seed in (1, 2)]
    for w in writers:
        w.start()
    # a wide window between each chunk's read and its HIGH watermark: the writers change rows of the chunk
    # in it, whose read images are older than those changes and must be dropped
    agent = AgentProcess(cfg, tmp_path / "agent.log", env={"CDC_AGENT_SNAPSHOT_WINDOW_PAUSE": "0.1"})
    kills = 0
    try:
        agent.start()
        for n in (300, 900, 1500):
            wait_for(lambda n=n: sum(e["data"]["op"] == "read" for e in read_events(out)) >= n, 90,
                     what=f"{n} read events")
            if kills == 0:
                # progress while it runs (`cdc-agent status`, the spool's view)
                st = json.loads(cli("status", "-c", str(cfg), "--json").stdout)["source"]["snapshot"]
                assert st["state"] == "running" and st["id"].startswith("initial-"), st
                assert st["tables"][be.table("items")]["rows_done"] >= CHUNK, st
            agent.kill()
            kills += 1
            agent.start()
        wait_for(lambda: any(s["state"] == "done" for s in _snapshots(cfg)), 120, interval=0.5,
                 what="the snapshot to finish")
        time.sleep(0.5)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join()
        assert not any(w.errors for w in writers), [w.errors for w in writers]
        assert all(w.done > 50 for w in writers)
        expected = _db_table(be)
        wait_for(lambda: _rebuild(read_events(out)) == expected, 60, interval=0.5,
                 what="the delivered events to rebuild the table")
        assert agent.stop() == 0, agent.log()
    finally:
        for w in writers:
            w.stop.set()
        agent.kill()
    events = read_events(out, final=True)
    assert _rebuild(events) == expected
    reads = [e for e in events if e["data"]["op"] == "read"]
    assert all(e["data"]["before"] is None for e in reads)
    # resumed, never from zero: at most a chunk (and a batch in flight) again per kill
    assert len({e["id"] for e in reads}) <= ROWS + CHUNK * kills, len(reads)
    assert len(reads) <= ROWS + (CHUNK + 500) * kills
    assert any(e["data"]["op"] == "update" for e in events)       # the writers' changes came too
    snap = [s for s in _snapshots(cfg) if s["state"] == "done"][0]
    assert snap["id"].startswith("initial-")
    # no watermark ever became an event, and none is left in the changelog
    assert not [e for e in events if "watermark" in e["type"] or "watermark" in e["source"]]


# ---------------------------------------------------------------- on demand, one target, bad input

def test_on_demand_snapshot_for_one_target(tmp_path):
    be = SqliteBackend(tmp_path / "erp.db")
    _fill(be, 250)
    cfg = _agent_config(tmp_path, be, snapshot="never",
                        extra_targets='[[targets]]\nname = "crm"\nkind = "file"\npath = "out/crm.jsonl"\n')
    assert cli("setup", "-c", str(cfg)).returncode == 0
    audit, crm = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "crm.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        time.sleep(1.5)
        p = cli("snapshot", "-c", str(cfg), "--table", "main.items", "--target", "crm", "--where", "id > 50")
        assert p.returncode == 0, p.stderr
        wait_for(lambda: len(read_events(crm)) >= 200, 60, what="the snapshot at crm")
        be.write("UPDATE items SET v = 9 WHERE id = 3")
        wait_for(lambda: any(e["data"]["op"] == "update" for e in read_events(audit)), 30, what="the update at audit")
        wait_for(lambda: any(e["data"]["op"] == "update" for e in read_events(crm)), 30, what="the update at crm")
        wait_for(lambda: any(s["state"] == "done" for s in _snapshots(cfg)), 30, what="done")
        assert agent.stop() == 0
    at_crm = read_events(crm, final=True)
    assert sorted(int(e["subject"]) for e in at_crm if e["data"]["op"] == "read") == list(range(51, 251))
    assert [e["data"]["op"] for e in read_events(audit, final=True)] == ["update"]


def test_snapshot_command_bad_input(tmp_path):
    be = SqliteBackend(tmp_path / "erp.db")
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)", "CREATE TABLE nokey (a int, b text)")
    cfg = tmp_path / "agent.toml"
    _agent_config(tmp_path, be)
    cfg.write_text(cfg.read_text().replace('tables = ["main.items"]', 'tables = ["main.items", "main.nokey"]'))
    assert cli("setup", "-c", str(cfg)).returncode == 0
    p = cli("snapshot", "-c", str(cfg), "--table", "main.nosuch")
    assert p.returncode == 2 and "main.nosuch is not captured" in p.stderr and len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", "main.items", "--where", "nosuchcol > 3")
    assert p.returncode == 1 and "--where" in p.stderr and "nosuchcol" in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", "main.nokey")
    assert p.returncode == 1 and "main.nokey has no primary key" in p.stderr and len(p.stderr.splitlines()) == 1
    # check says the same beforehand
    p = cli("check", "-c", str(cfg))
    assert p.returncode == 1 and "snapshot keys" in p.stdout and "main.nokey" in p.stdout, p.stdout
    # a good request: an id, pending in --status, cancellable
    p = cli("snapshot", "-c", str(cfg), "--table", "main.items", "--where", "id > 10 AND pad <> 'a:b'")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.strip()
    assert [s["state"] for s in _snapshots(cfg) if s["id"] == rid] == ["pending"]
    assert cli("snapshot", "-c", str(cfg), "--cancel", rid).returncode == 0


# ---------------------------------------------------------------- setup, check, teardown (PostgreSQL)

def test_watermark_function_setup_check_teardown(pg_db, tmp_path):
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)")
    before = be.catalog()
    cfg = _agent_config(tmp_path, be)
    p = cli("setup", "-c", str(cfg), "--dry-run")
    assert p.returncode == 0 and "cdc_changelog_watermark" in p.stdout and "REVOKE ALL ON FUNCTION" in p.stdout
    assert cli("setup", "-c", str(cfg)).returncode == 0
    assert pg_db.execute("SELECT has_function_privilege('public', 'public.cdc_changelog_watermark(text)', "
                         "'EXECUTE')") == [(False,)]          # only the owner (and grantees) may write watermarks
    p = cli("check", "-c", str(cfg))
    assert "snapshot watermarks" in p.stdout and "EXECUTE on public.cdc_changelog_watermark(text)" in p.stdout
    # a role that may read the changelog but not write watermarks: check says what to grant
    pg_db.execute("CREATE ROLE snapless LOGIN")
    pg_db.execute("GRANT SELECT, DELETE ON public.cdc_changelog TO snapless")
    pg_db.execute("GRANT SELECT ON public.cdc_changelog_version, public.items TO snapless")
    assert "//postgres@" in cfg.read_text()
    (tmp_path / "low.toml").write_text(cfg.read_text().replace("//postgres@", "//snapless@"))
    p = cli("check", "-c", str(tmp_path / "low.toml"))
    assert p.returncode == 1 and "no EXECUTE on public.cdc_changelog_watermark(text)" in p.stdout, p.stdout
    assert "GRANT EXECUTE ON FUNCTION public.cdc_changelog_watermark(text) TO" in p.stdout
    pg_db.execute("DROP OWNED BY snapless")
    pg_db.execute("DROP ROLE snapless")
    p = cli("teardown", "-c", str(cfg))
    assert p.returncode == 0, p.stderr
    assert be.catalog() == before


# ---------------------------------------------------------------- a change in flight across the LOW watermark

@pytest.mark.parametrize("kind", ["pg", "mariadb"])
def test_change_committed_after_the_read_is_not_overwritten(kind, request, tmp_path):
    """A transaction takes its changelog id before LOW and commits after the chunk was read: in id order it
    comes before LOW, where its key would not be dropped from the chunk and the older read row would follow
    it. The chunk is read only once the stream has passed LOW, so the change is after LOW and wins."""
    from agent.capture import CaptureCore
    from agent.snapshot import SnapshotRunner, new_request, requests, store_request
    from agent.spool import Spool
    be = (PgBackend(request.getfixturevalue("pg_db"), odbc=False) if kind == "pg"
          else MariaBackend(request.getfixturevalue("mariadb_db"), odbc=False))
    _fill(be, 20)
    cfg = make_config(tmp_path, be, ["items"], max_wait_seconds=1, poll_interval_seconds=0.05)
    TriggerAdmin(cfg).setup()
    spool = Spool(cfg.agent.state_dir)
    src = TriggerSource(cfg)
    src.start(None)
    runner = SnapshotRunner(spool, 100, "t")
    core = CaptureCore(src, on_watermark=runner.on_watermark)
    reader = src.snapshot_reader()
    in_flight = be.db.connect()
    cur = in_flight.cursor()
    cur.execute("BEGIN")
    cur.execute("UPDATE items SET v = 1 WHERE id = 7")        # its changelog id is taken now, below LOW's
    read_chunk = reader.read_chunk
    open_txn = [in_flight]

    def read_then_commit(*args):
        rows = read_chunk(*args)
        while open_txn:
            conn = open_txn.pop()
            conn.commit()                                     # after the read: the read row of 7 is older
            conn.close()
        return rows
    reader.read_chunk = read_then_commit
    runner.attach(reader)
    store_request(spool, new_request([be.table("items")]))
    changes, idle = [], 0
    deadline = time.monotonic() + 60
    try:
        while idle < 5 and time.monotonic() < deadline:
            runner.step()
            b = core.read(1000, 0.2)
            runner.progress_for(b.changes, b.checkpoint)
            changes += b.changes
            if b.checkpoint:
                src.confirm(b.checkpoint)
            done = requests(spool)[0]["state"] == "done"
            idle = idle + 1 if done and not b.changes else 0
    finally:
        runner.detach()
        src.close()
        spool.close()
    assert not open_txn and sum(c.op == "read" for c in changes) >= 19
    table = {}
    for c in changes:                  # each subject's changes in stream order
        if c.after is None:
            table.pop(c.before["id"], None)
        else:
            table[c.after["id"]] = c.after["v"]
    assert table[7] == 1, [(c.op, c.after) for c in changes if (c.after or c.before)["id"] == 7]
    assert table == {r[0]: r[1] for r in be.db.execute("SELECT id, v FROM items")}


def test_mssql_chunk_and_watermark_sql():
    """SQL Server (no server here: the generated SQL): TOP instead of LIMIT, the row-value comparison spelled
    out, the trigger's FOR JSON image as a correlated subquery, the watermark row."""
    from agent.sources.trigger import Names, TableInfo
    from agent.sources.trigger.mssql import DIALECT as ms
    from tests.test_trigger_source import MS_COLUMNS, _balanced
    names = Names("mssql", "dbo", "cdc_changelog")
    info = TableInfo("dbo.order_lines", MS_COLUMNS, ("order_id", "line_no"))
    image, texts = ms.snapshot_image("r", info)
    assert texts is None and image.startswith("(SELECT r.[order_id] AS [order_id]") and image.endswith(
        "FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)")
    sql = ms.chunk_sql("[dbo].[order_lines]", "r", "r.[order_id], r.[line_no], " + image,
                       ["r.[order_id]", "r.[line_no]"], [ms.key_literal(7), ms.key_literal("it's")], "qty > 1", 500)
    assert sql.startswith("SELECT TOP (500) r.[order_id], r.[line_no], (SELECT ")
    assert ("WHERE ((r.[order_id] > 7) OR (r.[order_id] = 7 AND r.[line_no] > N'it''s')) AND (qty > 1) "
            "ORDER BY r.[order_id], r.[line_no]") in sql
    assert _balanced(sql)
    assert ms.watermark_sql(names) == ("INSERT INTO [dbo].[cdc_changelog] (txid, tbl, op, created) "
                                       "VALUES (CURRENT_TRANSACTION_ID(), :mark, 'W', SYSUTCDATETIME())")
