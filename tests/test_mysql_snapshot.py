"""Incremental snapshots of the MySQL/MariaDB source (agent/sources/mysql/snapshot.py) against real throwaway
MariaDB 10.11 servers: rows read equal rows streamed for every type; writers changing random keys while the
chunks are read and the agent SIGKILLed mid-snapshot, and the delivered events still rebuild the table; DDL
goes through; one target only; `when_needed` after the binlog was purged; bad input; the signal table."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from agent.snapshot import SnapshotError
from agent.sources.mysql import MysqlAdmin
from tests.agentproc import AgentProcess, read_events, wait_for
from tests.test_mysql_source import TYPE_ROWS, TYPES_DDL, drain, make_config, started
from tests.test_pg_pipeline import cli
from tests.test_snapshot import _rebuild

ROWS, CHUNK = 3000, 100


def write_config(tmp_path: Path, db, tables: list[str], snapshot: str = "initial", extra_source: str = "",
                 targets: str = "", health: str = "off") -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "maria-snap"
state_dir = "state"
checkpoint_log_seconds = 2

[source]
kind = "mysql"
dsn = "{db.url}"
tables = {json.dumps([f"{db.name}.{t}" for t in tables])}
server_id = 4300
snapshot = "{snapshot}"
{extra_source}

[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"
{targets}
[health]
listen = "{health}"
""")
    return cfg


def _db_table(db) -> dict[int, tuple]:
    return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, v, pad FROM items")}


def _fill(db, rows: int) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad varchar(100))")
    db.execute(f"INSERT INTO items SELECT seq, 0, CONCAT('row ', seq) FROM seq_1_to_{rows}")
    db.execute("ANALYZE TABLE items")


def _writer(db, stop: threading.Event, errors: list, seed: int):
    rng = random.Random(seed)
    try:
        conn = db.connect()
        with conn.cursor() as cur:
            while not stop.is_set():
                k = rng.randrange(1, ROWS + 200)
                r = rng.random()
                if r < 0.5:
                    cur.execute("UPDATE items SET v = v + 1 WHERE id = %s", (k,))
                elif r < 0.75:
                    cur.execute("DELETE FROM items WHERE id = %s", (k,))
                else:
                    cur.execute("INSERT INTO items (id, v, pad) VALUES (%s, 0, 'new') "
                                "ON DUPLICATE KEY UPDATE v = v + 100", (k,))
                time.sleep(0.001)
        conn.close()
    except Exception as e:  # surfaced by the test
        errors.append(repr(e))


def _snapshots(cfg) -> list[dict]:
    p = cli("snapshot", "-c", str(cfg), "--status", "--json")
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []


def _reads(path: Path) -> int:
    return sum(e["data"]["op"] == "read" for e in read_events(path))


# ---------------------------------------------------------------- values: read == streamed


def test_rows_read_equal_rows_streamed_for_every_type(mariadb_db, tmp_path):
    """The contract's type list (decimals, datetimes with fractions, json, blobs, enums/sets, bit, unsigned,
    NULLs, and MariaDB's uuid/inet6/JSON, geometry, generated and invisible columns): a chunk read of the rows
    gives exactly what the binlog gave for the same rows, keys and order included."""
    mariadb_db.execute(TYPES_DDL)
    mariadb_db.execute("ALTER TABLE alltypes ADD COLUMN u uuid, ADD COLUMN i6 inet6, ADD COLUMN mj json, "
                       "ADD COLUMN g point, ADD COLUMN gen int AS (id * 2) VIRTUAL, ADD COLUMN hid int INVISIBLE "
                       "DEFAULT 7, ADD COLUMN ts0 timestamp NULL, ADD COLUMN dt3 datetime(3), ADD COLUMN f2 float")
    table = f"{mariadb_db.name}.alltypes"
    cfg = make_config(tmp_path, mariadb_db.url, [table])
    assert MysqlAdmin(cfg).setup()
    src, _ = started(cfg)
    cols = ("id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d, d2, f, db, b1, b12, c, vc, tx, mt, bn, vb, bl, dt, dtm, "
            "dtm0, ts, tm, tm6, tm3, y, j, e, s, l1")
    try:
        conn = mariadb_db.connect()
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"INSERT INTO alltypes ({cols}) VALUES " + ", ".join(TYPE_ROWS))
            cur.execute("UPDATE alltypes SET u = '6ccd780c-baba-1026-9564-5b8c656024db', i6 = '::ffff:1.2.3.4', "
                        "mj = '{\"a\": 1.50e3, \"b\": [1, 2]}', g = POINT(1.5, 2), ts0 = '2020-02-02 01:02:03', "
                        "dt3 = '2020-01-01 00:00:00.5', f2 = 16777217 WHERE id = 1")
            cur.execute("UPDATE alltypes SET ts0 = '1970-01-01 00:00:01', dt3 = '1000-01-01 00:00:00', "
                        "f2 = 0.1 WHERE id = 2")
        conn.close()
        streamed: dict[int, dict] = {}
        for changes, _ in drain(src):
            for c in changes:
                streamed[c.after["id"]] = c.after
        reader = src.snapshot_reader()
        try:
            keys = reader.key_columns(table)
            assert keys == ("id",)
            first, last = reader.read_chunk(table, keys, None, 2, None)
            rest, last2 = reader.read_chunk(table, keys, last, 2, None)
            none, last3 = reader.read_chunk(table, keys, last2, 2, None)
            assert reader.estimate(table) == 3
        finally:
            reader.close()
    finally:
        src.close()
    assert (last, last2, none, last3) == (["2"], ["3"], [], None)
    read = first + rest
    assert [r["id"] for r in read] == [1, 2, 3]
    for row in read:
        s = streamed[row["id"]]
        assert list(row) == list(s), "the same columns in the same order"
        assert row == s
        assert [type(v) for v in row.values()] == [type(v) for v in s.values()]
    assert read[0]["f2"] == 16777216.0 and read[1]["f2"] == 0.1 and read[0]["dt3"] == "2020-01-01T00:00:00.500000"
    assert read[0]["ts0"] == "2020-02-02T01:02:03.000000Z" and read[0]["hid"] == 7 and read[0]["gen"] == 2


def test_composite_binary_and_enum_keys_resume_in_key_order(mariadb_db, tmp_path):
    """Keyset reads over a composite key (varbinary, enum, datetime(6), decimal): every row exactly once,
    in ORDER BY order, chunk after chunk, from the stored text of the last key."""
    mariadb_db.execute("CREATE TABLE k (b varbinary(4), e enum('z','a','m'), t datetime(6), d decimal(8,3), "
                       "v int, PRIMARY KEY (b, e, t, d))")
    rows = [(bytes([i % 3, 0xff]), ("z", "a", "m")[i % 3], f"2026-01-0{1 + i % 2} 10:00:00.{i:06d}", f"{i % 4}.125",
             i) for i in range(60)]
    conn = mariadb_db.connect()
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO k VALUES (%s, %s, %s, %s, %s)", rows)
    conn.close()
    table = f"{mariadb_db.name}.k"
    cfg = make_config(tmp_path, mariadb_db.url, [table])
    MysqlAdmin(cfg).setup()
    from agent.sources.mysql import MysqlSource
    reader = MysqlSource(cfg).snapshot_reader()
    try:
        keys = reader.key_columns(table)
        got, after = [], None
        while True:
            chunk, after = reader.read_chunk(table, keys, after, 7, None)
            if not chunk:
                break
            json.dumps(after)                    # progress is stored as JSON
            got.extend(r["v"] for r in chunk)
    finally:
        reader.close()
    assert keys == ("b", "e", "t", "d")
    assert got == [r[0] for r in mariadb_db.execute("SELECT v FROM k ORDER BY b, e, t, d")]
    assert sorted(got) == list(range(60))


# ---------------------------------------------------------------- the whole agent


def test_initial_snapshot_with_writers_kills_and_ddl(mariadb_db, tmp_path):
    from tests.plugins import free_port
    import urllib.request
    _fill(mariadb_db, ROWS)
    port = free_port()
    cfg = write_config(tmp_path, mariadb_db, ["items"], extra_source=f"snapshot_chunk_rows = {CHUNK}",
                       health=f"127.0.0.1:{port}")
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    stop, errors = threading.Event(), []
    writers = [threading.Thread(target=_writer, args=(mariadb_db, stop, errors, seed)) for seed in (1, 2)]
    for w in writers:
        w.start()
    # a wide window between each chunk's read and its HIGH watermark: the writers change rows of the chunk
    # in it, whose read images are older than those changes and must be dropped
    agent = AgentProcess(cfg, tmp_path / "agent.log", env={"CDC_AGENT_SNAPSHOT_WINDOW_PAUSE": "0.1"})
    kills = 0
    try:
        agent.start()
        altered = False
        for n in (500, 1200, 2000):
            wait_for(lambda n=n: _reads(out) >= n, 60, what=f"{n} read events")
            if not altered:
                live = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
                snap = live["source"]["snapshot"]
                t = snap["tables"][f"{mariadb_db.name}.items"]
                assert snap["state"] == "running" and t["rows_done"] >= 100, snap
                assert ROWS / 2 <= t["rows_estimate"] <= ROWS * 2, snap       # InnoDB's TABLE_ROWS estimate
                # no lock beyond one short statement: DDL with a 3 s metadata lock timeout goes through
                conn = mariadb_db.connect()
                with conn.cursor() as cur:
                    cur.execute("SET SESSION lock_wait_timeout = 3")
                    t0 = time.monotonic()
                    cur.execute("ALTER TABLE items ADD COLUMN extra int")
                    cur.execute("UPDATE items SET v = v + 1000 WHERE id = 7")
                    assert time.monotonic() - t0 < 3
                conn.close()
                altered = True
            agent.kill()
            kills += 1
            agent.start()
        wait_for(lambda: any(s["state"] == "done" for s in _snapshots(cfg)), 90, interval=0.5,
                 what="the snapshot to finish")
        time.sleep(0.5)
        stop.set()
        for w in writers:
            w.join()
        assert not errors, errors
        expected = _db_table(mariadb_db)
        wait_for(lambda: _rebuild(read_events(out)) == expected, 60, interval=0.5,
                 what="the delivered events to rebuild the table")
        assert agent.stop() == 0, agent.log()
    finally:
        stop.set()
        agent.kill()
    events = read_events(out, final=True)
    assert _rebuild(events) == expected
    reads = [e for e in events if e["data"]["op"] == "read"]
    assert all(e["data"]["before"] is None for e in reads)
    # chunks read after the ALTER carry the new column, like the stream's events
    assert any("extra" in e["data"]["after"] for e in reads)
    # resumed, never from zero: at most a chunk (and a batch in flight) again per kill
    assert len({e["id"] for e in reads}) <= ROWS + CHUNK * kills, len(reads)
    assert len(reads) <= ROWS + (CHUNK + 500) * kills
    snap = [s for s in _snapshots(cfg) if s["state"] == "done"][0]
    assert snap["id"].startswith("initial-")
    assert "Traceback" not in agent.log()


def test_on_demand_snapshot_for_one_target(mariadb_db, tmp_path):
    _fill(mariadb_db, 250)
    cfg = write_config(tmp_path, mariadb_db, ["items"], snapshot="never", extra_source="snapshot_chunk_rows = 40",
                       targets='[[targets]]\nname = "crm"\nkind = "file"\npath = "out/crm.jsonl"\n')
    assert cli("setup", "-c", str(cfg)).returncode == 0
    audit, crm = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "crm.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: "connected" in agent.log(), 30, what="the agent to connect")
        p = cli("snapshot", "-c", str(cfg), "--table", f"{mariadb_db.name}.items", "--target", "crm",
                "--where", "id > 50")
        assert p.returncode == 0, p.stderr
        wait_for(lambda: len(read_events(crm)) >= 200, 60, what="the snapshot at crm")
        mariadb_db.execute("UPDATE items SET v = 9 WHERE id = 3")
        wait_for(lambda: any(e["data"]["op"] == "update" for e in read_events(audit)), 30, what="the update at audit")
        wait_for(lambda: any(e["data"]["op"] == "update" for e in read_events(crm)), 30, what="the update at crm")
        wait_for(lambda: any(s["state"] == "done" for s in _snapshots(cfg)), 30, what="done")
        assert agent.stop() == 0
    at_crm = read_events(crm, final=True)
    assert sorted(int(e["subject"]) for e in at_crm if e["data"]["op"] == "read") == list(range(51, 251))
    assert [e["data"]["op"] for e in read_events(audit, final=True)] == ["update"]


def _purge_all_but_current(server) -> None:
    server.execute("FLUSH BINARY LOGS")
    current = server.execute("SHOW MASTER STATUS")[0][0]
    for _ in range(100):                     # MariaDB keeps a file until InnoDB's commit is durable
        server.execute(f"PURGE BINARY LOGS TO '{current}'")
        if len(server.execute("SHOW BINARY LOGS")) == 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"binlogs not purged: {server.execute('SHOW BINARY LOGS')}")


def test_when_needed_after_the_binlog_was_purged(make_mariadb_server, tmp_path):
    server = make_mariadb_server()
    db = server.create_database("erp")
    _fill(db, 300)
    cfg = write_config(tmp_path, db, ["items"], snapshot="when_needed", extra_source="snapshot_chunk_rows = 50")
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: _reads(out) >= 300, 60, what="initial snapshot")
        db.execute("UPDATE items SET v = 1 WHERE id <= 10")
        wait_for(lambda: sum(e["data"]["op"] == "update" for e in read_events(out)) >= 10, 30, what="updates")
        assert agent.stop() == 0
    # while the agent is down: changes, then the binlogs holding them are purged (lost to capture; the new
    # snapshot brings the rows as they are; a row deleted in that gap cannot be sent: docs/snapshots.md)
    db.execute("UPDATE items SET v = 2 WHERE id > 290")
    db.execute("INSERT INTO items VALUES (301, 7, 'in the gap')")
    _purge_all_but_current(server)
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: _reads(out) >= 601, 90, interval=0.5, what="a second snapshot")
        db.execute("UPDATE items SET v = 3 WHERE id = 1")          # streaming again
        db.execute("DELETE FROM items WHERE id = 2")
        expected = _db_table(db)
        wait_for(lambda: _rebuild(read_events(out)) == expected, 60, interval=0.5, what="the rebuilt table")
        assert agent.stop() == 0
    log = agent.log()
    assert "when_needed" in log and "binlogs purged" in log and "Traceback" not in log
    assert sum(s["state"] == "done" for s in _snapshots(cfg)) == 2


def test_purged_binlog_without_when_needed_stops_with_one_clear_message(make_mariadb_server, tmp_path):
    server = make_mariadb_server()
    db = server.create_database("erp")
    _fill(db, 10)
    cfg = write_config(tmp_path, db, ["items"], snapshot="initial")
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: _reads(out) >= 10, 60, what="initial snapshot")
        assert agent.stop() == 0
    db.execute("UPDATE items SET v = 2")
    _purge_all_but_current(server)
    agent = AgentProcess(cfg, tmp_path / "agent2.log").start()
    try:
        wait_for(lambda: "binlogs purged" in agent.log(), 60, what="the purged binlog reported")
    finally:
        agent.kill()
    assert 'snapshot = "when_needed"' in agent.log() and "Traceback" not in agent.log()
    assert _reads(out) == 10                                          # no second snapshot on its own


# ---------------------------------------------------------------- bad input, setup, check


def test_snapshot_command_bad_input(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)")
    mariadb_db.execute("CREATE TABLE nokey (a int, b text)")
    d = mariadb_db.name
    cfg = write_config(tmp_path, mariadb_db, ["items", "nokey"], snapshot="never")
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.items")
    assert p.returncode == 1 and "signal table" in p.stderr and "cdc-agent setup" in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1
    assert cli("setup", "-c", str(cfg)).returncode == 0
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.nosuch")
    assert p.returncode == 2 and f"{d}.nosuch is not captured" in p.stderr and len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.items", "--where", "nosuchcol > 3")
    assert p.returncode == 1 and "--where" in p.stderr and "nosuchcol" in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.items", "--where", "id > 3; DROP TABLE items")
    assert p.returncode == 1 and "--where" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.nokey")
    assert p.returncode == 1 and f"{d}.nokey has no primary key" in p.stderr and len(p.stderr.splitlines()) == 1
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.items", "--target", "nosuch")
    assert p.returncode == 2 and "nosuch" in p.stderr
    # a good request (a --where with a LIKE: no %-formatting anywhere)
    p = cli("snapshot", "-c", str(cfg), "--table", f"{d}.items", "--where", "pad LIKE '%x%' OR id > 10")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.strip()
    assert [s["state"] for s in _snapshots(cfg) if s["id"] == rid] == ["pending"]
    assert cli("snapshot", "-c", str(cfg), "--cancel", rid).returncode == 0
    assert mariadb_db.execute("SHOW TABLES LIKE 'items'")


def test_a_table_without_a_key_fails_the_request_not_the_agent(mariadb_db, tmp_path):
    _fill(mariadb_db, 200)
    mariadb_db.execute("CREATE TABLE nokey (a int)")
    cfg = write_config(tmp_path, mariadb_db, ["items", "nokey"], snapshot="initial",
                       extra_source="snapshot_chunk_rows = 50")
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:     # `run` creates the signal table itself
        wait_for(lambda: any(s["state"] == "failed" for s in _snapshots(cfg)), 60, what="the request to fail")
        mariadb_db.execute("INSERT INTO items VALUES (1000, 1, 'after')")
        wait_for(lambda: any(e["data"]["op"] == "insert" for e in read_events(out)), 30, what="streaming goes on")
        assert agent.stop() == 0
    failed = [s for s in _snapshots(cfg) if s["state"] == "failed"][0]
    assert f"{mariadb_db.name}.nokey has no primary key" in failed["error"]
    assert _reads(out) == 200                                   # the table before it was read whole


def test_setup_teardown_and_check_of_the_signal_table(mariadb_db, mariadb_server, tmp_path, monkeypatch):
    mariadb_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int)")
    mariadb_db.execute("CREATE TABLE nokey (v int)")
    d = mariadb_db.name
    cfg = write_config(tmp_path, mariadb_db, ["items", "nokey"])
    p = cli("setup", "-c", str(cfg), "--dry-run")
    assert p.returncode == 0 and f"CREATE TABLE IF NOT EXISTS `{d}`.`cdc_maria_snap_signal`" in p.stdout
    assert not mariadb_db.execute("SHOW TABLES LIKE 'cdc_maria_snap_signal'")        # nothing was run
    p = cli("setup", "-c", str(cfg))
    assert p.returncode == 0 and "created" in p.stdout
    assert mariadb_db.execute("SHOW TABLES LIKE 'cdc_maria_snap_signal'")
    assert "exists" in cli("setup", "-c", str(cfg)).stdout                          # idempotent
    before = mariadb_server.execute("SHOW MASTER STATUS")[0][:2]
    p = cli("check", "-c", str(cfg))
    assert "[ok  ] snapshot signal table" in p.stdout, p.stdout
    assert "[FAIL] snapshot keys" in p.stdout and f"{d}.nokey has no primary key: a snapshot" in p.stdout
    assert mariadb_server.execute("SHOW MASTER STATUS")[0][:2] == before, "check wrote to the binlog"

    # a user that may read the tables but not write the signal table: check says what to grant
    mariadb_server.execute("CREATE USER snapro@'%' IDENTIFIED BY 'pw-snapro'")
    mariadb_server.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO snapro@'%'")
    mariadb_server.execute(f"GRANT SELECT ON `{d}`.* TO snapro@'%'")
    try:
        url = f"mysql://snapro:${{SNAPRO_PW}}@127.0.0.1:{mariadb_server.port}/{d}"
        monkeypatch.setenv("SNAPRO_PW", "pw-snapro")
        ro = tmp_path / "ro"
        ro.mkdir()
        (ro / "agent.toml").write_text(cfg.read_text().replace(mariadb_db.url, url))
        p = cli("check", "-c", str(ro / "agent.toml"))
        assert "[FAIL] snapshot signal table" in p.stdout and "GRANT CREATE, INSERT, UPDATE ON" in p.stdout, p.stdout
        assert "pw-snapro" not in p.stdout + p.stderr
        # and a request fails with the grant to give, while streaming is not affected
        from agent import config
        from agent.sources.mysql import MysqlSource
        reader = MysqlSource(config.load(ro / "agent.toml")).snapshot_reader()
        try:
            try:
                reader.validate(f"{d}.items", None)
                raise AssertionError("validate passed without INSERT on the signal table")
            except SnapshotError as e:
                assert "GRANT INSERT, UPDATE ON" in str(e) and "snapro" in str(e)
        finally:
            reader.close()
        mariadb_server.execute(f"GRANT INSERT, UPDATE ON `{d}`.`cdc_maria_snap_signal` TO snapro@'%'")
        p = cli("check", "-c", str(ro / "agent.toml"))
        assert "[ok  ] snapshot signal table" in p.stdout, p.stdout
    finally:
        mariadb_server.execute("DROP USER snapro@'%'")

    p = cli("teardown", "-c", str(cfg), "--dry-run")
    assert f"DROP TABLE IF EXISTS `{d}`.`cdc_maria_snap_signal`" in p.stdout
    p = cli("teardown", "-c", str(cfg))
    assert p.returncode == 0 and "dropped snapshot signal table" in p.stdout
    assert not mariadb_db.execute("SHOW TABLES LIKE 'cdc_maria_snap_signal'")
    p = cli("check", "-c", str(cfg))       # root may create it: setup (or run) will
    assert "[ok  ] snapshot signal table" in p.stdout and "does not exist yet" in p.stdout


def test_a_reader_connection_closed_while_idle_is_opened_again(mariadb_db, mariadb_server, tmp_path):
    """No snapshot for hours: the server drops the reader's idle connection (wait_timeout; here KILL). The
    next request connects again instead of failing the source."""
    mariadb_db.execute("CREATE TABLE items (id int PRIMARY KEY)")
    table = f"{mariadb_db.name}.items"
    cfg = make_config(tmp_path, mariadb_db.url, [table])
    MysqlAdmin(cfg).setup()
    from agent.sources.mysql import MysqlSource
    from agent.sources.mysql import snapshot as mysnap
    reader = MysqlSource(cfg).snapshot_reader()
    try:
        assert reader.key_columns(table) == ("id",)
        mariadb_server.execute(f"KILL {reader.conn.connection_id}")
        reader._used -= mysnap.IDLE_CHECK_SECONDS                 # as if it had been idle that long
        assert reader.key_columns(table) == ("id",)
        reader.watermark("w/1", "low")
    finally:
        reader.close()


def test_debezium_source_of_a_read_row_names_the_binlog_position_of_its_chunk():
    """A read row's position is the HIGH watermark's position plus its ordinal in the chunk; Debezium's
    `source` block takes the binlog file and offset from the first part (pure, no database)."""
    from agent.debezium import _mysql_source
    src = _mysql_source({"position": "00000003:000000001234:00000002:00000007"}, {"ts_ms": 5, "_us": 0}, "erp", "t",
                        {"server_id": 1}, True)
    assert (src["file"], src["pos"], src["row"], src["server_id"]) == ("mysql-bin.000003", 1234, 1, 0)
