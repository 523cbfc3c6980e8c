"""Source kind `trigger` against real databases: SQLite always; PostgreSQL 15 and MariaDB 10.11 through their
native drivers and through unixODBC. Values in the contract's JSON forms (MariaDB: compared with what the
binlog source reads for the same changes), no change lost under interleaved long transactions, setup →
upgrade → teardown leaving the catalog as it was, the agent's own writes recognised, SIGKILL during 20k (in CI 8k)
changes, and SQL Server's generated DDL (no server here)."""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from agent import config
from agent.changes import Commit, RowChange
from agent.errors import ConfigError, SourceFatal
from agent.mapping import EventMapper
from agent.sources import trigger as trg
from agent.sources.trigger import install as trg_install, postgresql as trg_pg, values as trg_values
from agent.sources.trigger import TriggerAdmin, TriggerSource
from tests.agentproc import AgentProcess, check_delivery, read_events, wait_for


def odbc_driver(name: str) -> None:
    try:
        import pyodbc
    except ImportError:
        pytest.skip("pyodbc is not installed")
    if name not in pyodbc.drivers():
        pytest.skip(f"ODBC driver {name!r} is not installed (Debian: unixodbc odbc-postgresql odbc-mariadb)")


# ---------------------------------------------------------------- databases under test


class Backend:
    """One database the trigger source is pointed at, plus a writer for the test's workload."""

    dialect = ""
    schema = ""
    dsn = ""

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def write(self, *stmts: str, origin: str | None = None) -> None:
        raise NotImplementedError

    def catalog(self) -> list:
        raise NotImplementedError


class SqliteBackend(Backend):
    dialect, schema = "sqlite", "main"

    def __init__(self, path: Path):
        self.path = path
        c = sqlite3.connect(path)
        c.execute("PRAGMA journal_mode = WAL")
        c.close()
        self.dsn = f"sqlite:///{path}"

    def connect(self):
        c = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        return c

    def write(self, *stmts: str, origin: str | None = None) -> None:
        c = self.connect()
        try:
            c.execute("BEGIN IMMEDIATE")
            if origin:
                c.execute("INSERT INTO cdc_changelog_origin VALUES (?)", (origin,))
            for s in stmts:
                c.execute(s)
            if origin:
                c.execute("DELETE FROM cdc_changelog_origin")
            c.execute("COMMIT")
        finally:
            c.close()

    def catalog(self) -> list:
        c = self.connect()
        try:
            return sorted(c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
        finally:
            c.close()


class PgBackend(Backend):
    dialect, schema = "postgresql", "public"

    def __init__(self, db, odbc: bool):
        self.db = db
        self.dsn = (f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={db.cluster.port};DATABASE={db.name};"
                    f"UID=postgres;PWD=;" if odbc else db.dsn.replace("postgresql://", "postgresql+psycopg://"))

    def connect(self):
        return self.db.connect()

    def write(self, *stmts: str, origin: str | None = None) -> None:
        with self.db.connect() as c:
            with c.transaction():
                if origin:
                    c.execute("SELECT set_config('cdc.origin', %s, true)", (origin,))
                for s in stmts:
                    c.execute(s)

    def catalog(self) -> list:
        return sorted(self.db.execute(
            "SELECT 'rel', c.relname, c.relkind::text, n.nspname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', "
            "'pg_toast') UNION ALL SELECT 'proc', p.proname, '', n.nspname FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'public' UNION ALL SELECT 'trigger', t.tgname, "
            "c.relname, '' FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
            "UNION ALL SELECT 'column', c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod), '' "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped"))


class MariaBackend(Backend):
    dialect = "mysql"

    def __init__(self, db, odbc: bool):
        self.db = db
        self.schema = db.name
        port = db.server.port
        self.dsn = (f"DRIVER={{MariaDB Unicode}};SERVER=127.0.0.1;PORT={port};DATABASE={db.name};UID=root;PWD=;"
                    if odbc else db.sqlalchemy_url)

    def connect(self):
        return self.db.connect()

    def write(self, *stmts: str, origin: str | None = None) -> None:
        c = self.db.connect()
        try:
            with c.cursor() as cur:
                cur.execute("SET time_zone = '+05:30'")     # the trigger's values must not depend on it
                cur.execute("BEGIN")
                if origin:
                    cur.execute("SET @cdc_origin = %s", (origin,))
                for s in stmts:
                    cur.execute(s)
                cur.execute("COMMIT")
                cur.execute("SET @cdc_origin = NULL")
        finally:
            c.close()

    def catalog(self) -> list:
        s = self.db.name
        return sorted(self.db.execute(
            "SELECT 'table', TABLE_NAME, TABLE_TYPE, '' FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "UNION ALL SELECT 'column', CONCAT(TABLE_NAME, '.', COLUMN_NAME), COLUMN_TYPE, '' "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "UNION ALL SELECT 'trigger', TRIGGER_NAME, EVENT_OBJECT_TABLE, '' FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = %s", (s, s, s)))


@pytest.fixture(params=["sqlite", "pg", "pg-odbc", "mariadb", "mariadb-odbc"])
def backend(request, tmp_path) -> Backend:
    kind = request.param
    if kind == "sqlite":
        return SqliteBackend(tmp_path / "erp.db")
    if kind.startswith("pg"):
        if kind.endswith("odbc"):
            odbc_driver("PostgreSQL Unicode")
        return PgBackend(request.getfixturevalue("pg_db"), kind.endswith("odbc"))
    if kind.endswith("odbc"):
        odbc_driver("MariaDB Unicode")
    return MariaBackend(request.getfixturevalue("mariadb_db"), kind.endswith("odbc"))


def make_config(tmp_path: Path, be: Backend, tables: list[str], rules: list | None = None, name: str = "t",
                **source):
    return config.parse({"agent": {"name": name, "state_dir": str(tmp_path / "state")},
                         "source": {"kind": "trigger", "dsn": be.dsn, "tables": [be.table(t) for t in tables],
                                    **source},
                         "events": rules or [],
                         "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]},
                        file=str(tmp_path / "agent.toml"), base=tmp_path)


def drain(src: TriggerSource, max_changes: int = 1000, idle_reads: int = 3, wait: float = 0.3,
          batches: list | None = None) -> list:
    """Read and confirm until `idle_reads` reads in a row bring nothing; returns the changes."""
    out, idle = [], 0
    while idle < idle_reads:
        b = src.read(max_changes, wait)
        if b.changes and batches is not None:
            batches.append(b.changes)
        out.extend(b.changes)
        if b.checkpoint:
            src.confirm(b.checkpoint)
        idle = 0 if (b.changes or b.checkpoint) else idle + 1
    return out


def drain_for(src: TriggerSource, seconds: float) -> list:
    out: list = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out += drain(src, idle_reads=1, wait=0.05)
    return out


def started(cfg, checkpoint=None) -> TriggerSource:
    src = TriggerSource(cfg)
    src.start(checkpoint)
    return src


def changelog_count(cfg) -> int:
    a = TriggerAdmin(cfg)
    db = a._connect()
    try:
        return db.query(f"SELECT COUNT(*) FROM {a.names.qcl} WHERE op <> 'S'")[0][0]    # markers are not changes
    finally:
        db.close()


# ---------------------------------------------------------------- values, ops, origin marker

DDL = {
    "sqlite": """CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, price_tier TEXT,
                 discount_pct NUMERIC(5,2), score REAL, photo BLOB, active BOOLEAN, since DATETIME, born DATE,
                 prefs JSON)""",
    "postgresql": """CREATE TABLE customers (customer_id int PRIMARY KEY, name text NOT NULL, price_tier text,
                 discount_pct numeric(5,2), score float8, photo bytea, active boolean, since timestamptz,
                 born date, prefs jsonb, big numeric, f4 real, local_ts timestamp, t time, iv interval,
                 tags text[], amounts numeric[], code char(4), uid uuid, nan float8)""",
    "mysql": """CREATE TABLE customers (customer_id int PRIMARY KEY, name varchar(60) NOT NULL, price_tier varchar(10),
                 discount_pct decimal(5,2), score double, photo varbinary(20), active tinyint(1),
                 since timestamp(6) NULL,
                 born date, prefs json)""",
}

INSERT = {
    "sqlite": "INSERT INTO customers VALUES (42, 'Ann 😀', 'silver', '5.00', 2.718281828459045, x'00ff10', 1, "
              "'2026-11-23 10:15:02', '1990-02-28', '{\"lang\": \"de\", \"n\": 1.5}')",
    "postgresql": "INSERT INTO customers VALUES (42, 'Ann 😀', 'silver', 5.00, 2.718281828459045, '\\x00ff10', true, "
                  "'2026-11-23 10:15:02.123456+05:30', '1990-02-28', '{\"lang\": \"de\", \"n\": 1.5}', "
                  "12345678901234567890.0123456789, 0.1, '2026-11-23 10:15:02', '10:15:02.5', '1 day 02:03:04.5', "
                  "'{a,\"b c\"}', '{1.50,2}', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'NaN')",
    "mysql": "INSERT INTO customers VALUES (42, 'Ann 😀', 'silver', 5.00, 2.718281828459045, x'00ff10', 1, "
             "'2026-11-23 15:45:02.123456', '1990-02-28', '{\"lang\": \"de\", \"n\": 1.5}')",   # +05:30 session
}

# The contract's JSON forms (CONTRACT §3), written out by hand.
EXPECTED = {
    "sqlite": {"customer_id": 42, "name": "Ann 😀", "price_tier": "silver", "discount_pct": "5.00",
               "score": 2.718281828459045, "photo": "AP8Q", "active": True, "since": "2026-11-23T10:15:02",
               "born": "1990-02-28", "prefs": {"lang": "de", "n": 1.5}},
    "postgresql": {"customer_id": 42, "name": "Ann 😀", "price_tier": "silver", "discount_pct": "5.00",
                   "score": 2.718281828459045, "photo": "AP8Q", "active": True,
                   "since": "2026-11-23T04:45:02.123456Z", "born": "1990-02-28", "prefs": {"lang": "de", "n": 1.5},
                   "big": "12345678901234567890.0123456789", "f4": 0.1, "local_ts": "2026-11-23T10:15:02",
                   "t": "10:15:02.500000", "iv": "P1DT2H3M4.5S", "tags": ["a", "b c"], "amounts": ["1.50", "2"],
                   "code": "ab  ", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "nan": "NaN"},
    "mysql": {"customer_id": 42, "name": "Ann 😀", "price_tier": "silver", "discount_pct": "5.00",
              "score": 2.718281828459045, "photo": "AP8Q", "active": 1, "since": "2026-11-23T10:15:02.123456Z",
              "born": "1990-02-28", "prefs": {"lang": "de", "n": 1.5}},
}


def test_insert_update_delete_arrive_in_contract_form(backend, tmp_path):
    d = backend.dialect
    backend.write(DDL[d])
    rules = [{"type": "customer.pricing.updated", "table": backend.table("customers"), "on": ["update"],
              "changed": ["price_tier", "discount_pct"],
              "fields": {"id": "customer_id", "tier": "price_tier", "discount": "discount_pct"}}]
    cfg = make_config(tmp_path, backend, ["customers"], rules)
    lines = TriggerAdmin(cfg).setup()
    assert any("version 002" in ln for ln in lines)
    session = (["SET SESSION bytea_output = 'escape'", "SET SESSION TimeZone = 'America/Lima'"]
               if d == "postgresql" else [])
    backend.write(*session, INSERT[d])
    backend.write(*session, "UPDATE customers SET price_tier = 'gold', discount_pct = 12.5 WHERE customer_id = 42")
    backend.write("UPDATE customers SET name = 'by the agent' WHERE customer_id = 42", origin="cdc-agent/t")
    # no echo: another agent's `sql` target wrote this (two-way sync); only cdc-agent/ markers are skipped
    backend.write("UPDATE customers SET name = 'by the crm agent' WHERE customer_id = 42", origin="cdc-agent/crm")
    backend.write("UPDATE customers SET name = 'Ann' WHERE customer_id = 42", origin="crm-sync")
    backend.write("DELETE FROM customers WHERE customer_id = 42")
    src = started(cfg)
    try:
        changes = drain(src)
        assert src.skipped_own == 2 and src.status().skipped_echo == 2
    finally:
        src.close()
    want = EXPECTED[d]
    gold = {**want, "price_tier": "gold", "discount_pct": "12.50"}
    named = {**gold, "name": "Ann"}
    assert [c.op for c in changes] == ["insert", "update", "update", "delete"]
    # compared as the event writes them: json columns are RawJson (embedded exactly as written)
    ef = [(None if c.before is None else event_form(c.before), None if c.after is None else event_form(c.after))
          for c in changes]
    assert ef[0][0] is None and ef[0][1] == want
    assert ef[1][0] == want and ef[1][1] == gold
    # the agent's own write and another agent's are not captured; another origin is
    assert ef[2][0] == {**gold, "name": "by the crm agent"} and ef[2][1] == named
    assert ef[3][0] == named and ef[3][1] is None
    assert all(c.table == backend.table("customers") and c.key_columns == ("customer_id",) for c in changes)
    assert all(list(c.after or c.before) == list(want) for c in changes)          # column order
    positions = [c.position for c in changes]
    assert positions == sorted(positions) and len(set(positions)) == 4 and len({len(p) for p in positions}) == 1
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", c.commit_time) for c in changes)
    assert all(abs(c.commit_ts - time.time()) < 300 for c in changes)
    if d == "postgresql":
        assert all(c.txid and c.txid.isdigit() for c in changes) and len({c.txid for c in changes}) == 4
    else:
        assert all(c.txid is None for c in changes)
    # the rule sees the same change a log source would give it
    events, failures = EventMapper(cfg).map(changes)
    assert not failures
    pricing = [e for e in events if e.type == "customer.pricing.updated"]
    assert len(pricing) == 1 and pricing[0].subject == "42"
    import orjson
    data = orjson.loads(pricing[0].body)["data"]
    assert data["before"] == {"id": 42, "tier": "silver", "discount": "5.00"}
    assert data["after"] == {"id": 42, "tier": "gold", "discount": "12.50"} and data["changed"] == ["tier", "discount"]
    assert changelog_count(cfg) == 0          # everything confirmed is deleted


def test_mariadb_values_match_the_binlog_source(mariadb_db, tmp_path):
    """Every MariaDB type, one change set, read by both sources: the row images must be identical."""
    from agent.sources.mysql import MysqlSource
    from tests.capturing import read
    from tests.test_mysql_source import TYPE_ROWS, TYPES_DDL
    mariadb_db.execute(TYPES_DDL)
    be = MariaBackend(mariadb_db, odbc=False)
    tcfg = make_config(tmp_path, be, ["alltypes"])
    TriggerAdmin(tcfg).setup()
    bcfg = config.parse({"agent": {"name": "b", "state_dir": str(tmp_path / "bstate")},
                         "source": {"kind": "mysql", "dsn": mariadb_db.url, "tables": [be.table("alltypes")]},
                         "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "b.jsonl")}]})
    binlog = MysqlSource(bcfg)
    binlog.start(None)
    try:
        read(binlog, 10, 0.5)
        conn = mariadb_db.connect()
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("INSERT INTO alltypes VALUES " + ", ".join(TYPE_ROWS))
            cur.execute("SET time_zone = '-07:00'")
            cur.execute("UPDATE alltypes SET vc = CONCAT(COALESCE(vc, ''), '+'), ts = ts")
            cur.execute("DELETE FROM alltypes WHERE id = 2")
        conn.close()
        logged, idle = [], 0
        while len(logged) < 7 and idle < 20:
            b = read(binlog, 100, 0.3)
            logged += b.changes
            idle += not b.changes
    finally:
        binlog.close()
    for odbc in (False, True):
        if odbc:
            odbc_driver("MariaDB Unicode")
            mariadb_db.execute(
                "INSERT INTO cdc_changelog (session_id, tbl, op, `before`, `after`, created) SELECT 0, tbl, op, "
                "`before`, `after`, created FROM cdc_changelog_copy ORDER BY id")
        src = started(make_config(tmp_path, MariaBackend(mariadb_db, odbc), ["alltypes"]))
        try:
            if not odbc:   # keep a copy for the ODBC pass (the first pass deletes what it confirms)
                mariadb_db.execute("CREATE TABLE cdc_changelog_copy AS SELECT * FROM cdc_changelog")
            trig = drain(src)
        finally:
            src.close()
        assert len(trig) == len(logged) == 7
        for t, b in zip(trig, logged):
            assert (t.op, t.table, t.key_columns) == (b.op, b.table, b.key_columns)
            # compared as the events carry them (the binlog side embeds JSON as written: RawJson)
            assert event_form(t.before) == event_form(b.before) and event_form(t.after) == event_form(b.after), \
                f"{t.op}: trigger and binlog images differ"


# ---------------------------------------------------------------- concurrency: nothing missed


@pytest.mark.parametrize("kind", ["pg", "mariadb"])
def test_interleaved_long_transactions_lose_nothing(kind, request, tmp_path):
    """Each round: one transaction takes a low changelog id and stays open for a random while, others
    commit higher ids meanwhile, and the source reads all along. Every change must arrive exactly once;
    per row, in order."""
    if kind == "pg":
        be: Backend = PgBackend(request.getfixturevalue("pg_db"), odbc=False)
    else:
        be = MariaBackend(request.getfixturevalue("mariadb_db"), odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"], poll_interval_seconds=0.01, max_wait_seconds=30)
    TriggerAdmin(cfg).setup()
    src = started(cfg)
    got: list = []
    batches: list = []
    stop = threading.Event()
    errors: list = []

    def reader():
        try:
            while not stop.is_set():
                got.extend(drain(src, idle_reads=1, wait=0.01, batches=batches))
        except Exception as e:      # surfaced below
            errors.append(e)

    rt = threading.Thread(target=reader)
    rt.start()
    rnd = random.Random(5)
    expected: list[tuple[int, int]] = []
    serial = 0
    held_ids: list[int] = []
    try:
        for rnd_no in range(25):
            holder = be.connect()
            cur = holder.cursor()
            serial += 1
            hid = 10_000 + rnd_no
            if kind == "pg":
                holder.autocommit = False
            else:
                cur.execute("BEGIN")
            cur.execute("INSERT INTO items VALUES (%s, %s)", (hid, serial))
            cur.execute("SELECT MAX(id) FROM cdc_changelog")
            held_ids.append(int(cur.fetchone()[0]))
            expected.append((hid, serial))
            for k in range(rnd.randint(2, 6)):          # later ids commit first
                serial += 1
                rid = rnd_no * 100 + k
                be.write(f"INSERT INTO items VALUES ({rid}, {serial})")
                expected.append((rid, serial))
                time.sleep(rnd.random() * 0.02)
            time.sleep(rnd.random() * 0.15)
            serial += 1
            cur.execute("UPDATE items SET v = %s WHERE id = %s", (serial, hid))
            expected.append((hid, serial))
            holder.commit()
            holder.close()
        wait_for(lambda: len(got) >= len(expected) or errors, 30, what="all changes")
        time.sleep(0.3)
    finally:
        stop.set()
        rt.join(10)
        src.close()
    assert not errors, errors
    seen = [(c.after["id"], c.after["v"]) for c in got]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))      # all, exactly once
    by_row: dict[int, list] = {}
    for c in got:
        by_row.setdefault(c.after["id"], []).append(c.position)
    assert all(p == sorted(p) for p in by_row.values())
    # the hard case really happened: a held low id was committed after higher ids had been read
    batch_of = {}
    for i, b in enumerate(batches):
        for c in b:
            batch_of[int(c.position.split(":")[1], 16) if kind == "pg" else int(c.position)] = i
    later_first = sum(1 for h in held_ids if any(cid > h and bi < batch_of[h] for cid, bi in batch_of.items()))
    if kind == "pg":
        assert later_first >= 10
    else:   # gap tracking held the later ids back instead (the wait is far longer than any round)
        assert later_first == 0 and src.gap_waits > 0 and src.late == 0


def test_gap_timeout_delivers_late_commits_without_loss(mariadb_db, tmp_path):
    """max_wait shorter than a transaction: the rows after the gap go on, and the late row still arrives."""
    be = MariaBackend(mariadb_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"], poll_interval_seconds=0.01, max_wait_seconds=0.2)
    TriggerAdmin(cfg).setup()
    src = started(cfg)
    try:
        holder = mariadb_db.connect()
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO items VALUES (1, 1)")
            be.write("INSERT INTO items VALUES (2, 2)")
            be.write("INSERT INTO items VALUES (3, 3)")
            first = drain_for(src, 0.8)                             # waits 0.2 s on the gap, then goes on
            cur.execute("COMMIT")
        holder.close()
        rest = drain(src)
        # rolled back: a permanent gap, skipped after the wait
        with mariadb_db.connect().cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO items VALUES (4, 4)")
            cur.execute("ROLLBACK")
        be.write("INSERT INTO items VALUES (5, 5)")
        last = drain_for(src, 0.8)
    finally:
        src.close()
    assert [c.after["id"] for c in first] == [2, 3]
    assert [c.after["id"] for c in rest] == [1] and src.late == 1
    assert rest[0].position < first[0].position            # delivered late: its position is lower
    assert [c.after["id"] for c in last] == [5]
    assert changelog_count(cfg) == 0


def test_restart_replays_unconfirmed_changes_with_the_same_positions(backend, tmp_path):
    backend.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, backend, ["items"])
    TriggerAdmin(cfg).setup()
    for i in range(1, 31):
        backend.write(f"INSERT INTO items VALUES ({i}, {i})")
    src = started(cfg)
    try:
        b1 = src.read(10, 1)
        src.confirm(b1.checkpoint)
        b2 = src.read(10, 1)          # read, but the agent dies before the spool holds it
    finally:
        src.close()
    n1 = len(b1.changes)           # (a start marker may take a place in the first read)
    assert [c.after["id"] for c in b1.changes] == list(range(1, n1 + 1)) and n1 >= 9
    assert [c.after["id"] for c in b2.changes] == list(range(n1 + 1, n1 + 11))
    # resuming from b1's checkpoint gives b2's changes again, with the same positions (the same event ids)
    src = started(cfg, b1.checkpoint)
    try:
        again = src.read(10, 1)
    finally:
        src.close()
    assert [(c.position, c.after) for c in again.changes] == [(c.position, c.after) for c in b2.changes]
    # resuming from b2's checkpoint (the spool held b2, the confirm was lost): the rest, nothing skipped; a
    # change of b2 that comes again has its old position, so the spool drops it
    src = started(cfg, b2.checkpoint)
    try:
        rest = drain(src)
    finally:
        src.close()
    b2pos = {c.position: c.after["id"] for c in b2.changes}
    assert all(b2pos.get(c.position, c.after["id"]) == c.after["id"] for c in rest)
    assert sorted({c.after["id"] for c in rest} | set(b2pos.values())) == list(range(n1 + 1, 31))
    assert {c.after["id"] for c in rest if c.position not in b2pos} == set(range(n1 + 11, 31))
    assert changelog_count(cfg) == 0


def test_restart_deletes_what_the_spool_holds_when_nothing_new_comes(backend, tmp_path):
    """The agent died after the spool held the last batch and before the changelog rows were deleted;
    with no later change, the restart alone must still delete them."""
    backend.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, backend, ["items"])
    TriggerAdmin(cfg).setup()
    for i in range(1, 8):
        backend.write(f"INSERT INTO items VALUES ({i}, {i})")
    src = started(cfg)
    try:
        b = src.read(100, 1)             # one read takes all seven (and a start marker where there is one)
        got, last = b.changes, b.checkpoint
    finally:
        src.close()                      # never confirmed
    assert sorted(c.after["id"] for c in got) == list(range(1, 8))
    assert changelog_count(cfg) == 7
    src = started(cfg, last)
    try:
        again = drain(src)
    finally:
        src.close()
    assert {c.position for c in again} <= {c.position for c in got}      # replays only, same positions
    assert changelog_count(cfg) == 0


def test_poll_gives_changes_then_the_commit_that_ends_them(backend, tmp_path):
    """The capture core's interface: a poll is the changes of whole windows (PostgreSQL) or of a gap-tracked
    set of ids, then one Commit whose checkpoint covers them; caught up, a poll is an empty list."""
    backend.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, backend, ["items"])
    TriggerAdmin(cfg).setup()
    for i in range(1, 8):
        backend.write(f"INSERT INTO items VALUES ({i}, {i})")
    src = started(cfg)
    got: list = []
    try:
        for _ in range(30):
            items = src.poll(3, 1)
            if not items:
                if len(got) == 7:
                    break
                continue
            commit = items[-1]
            assert isinstance(commit, Commit), items
            assert all(isinstance(i, RowChange) for i in items[:-1]) and len(items) <= 4
            got += items[:-1]
            src.keepalive()                   # paused capture services the source: changes nothing here
            src.confirm(commit.checkpoint)
        assert src.poll(3, 0.2) == []
    finally:
        src.close()
    assert [c.after["id"] for c in got] == list(range(1, 8))
    assert changelog_count(cfg) == 0          # the Commits' checkpoints covered every row


# ---------------------------------------------------------------- install, upgrade, teardown


def test_two_installs_on_one_server_leave_each_other_alone(mariadb_db, mariadb_server, tmp_path):
    """Two ERP databases on one MariaDB server, each captured by its own agent with the default changelog
    name: setting up, re-running setup and tearing down one never touches the other's triggers."""
    other = MariaBackend(mariadb_server.create_database(), odbc=False)
    mine = MariaBackend(mariadb_db, odbc=False)
    for be in (mine, other):
        be.write("CREATE TABLE items (id int PRIMARY KEY, v int)")
    cfg_other = make_config(tmp_path / "o", other, ["items"])
    TriggerAdmin(cfg_other).setup()
    theirs = other.catalog()
    cfg_mine = make_config(tmp_path / "m", mine, ["items"])
    TriggerAdmin(cfg_mine).setup()
    TriggerAdmin(cfg_mine).setup()                   # what `run` does at every start
    assert other.catalog() == theirs
    TriggerAdmin(cfg_mine).teardown()
    assert other.catalog() == theirs
    other.write("INSERT INTO items VALUES (1, 1)")
    assert changelog_count(cfg_other) == 1           # the other install still captures


@pytest.mark.parametrize("kind", ["sqlite", "pg", "mariadb"])
def test_setup_upgrade_teardown_leaves_the_catalog_as_it_was(kind, request, tmp_path):
    if kind == "sqlite":
        be: Backend = SqliteBackend(tmp_path / "erp.db")
    elif kind == "pg":
        be = PgBackend(request.getfixturevalue("pg_db"), odbc=False)
    else:
        be = MariaBackend(request.getfixturevalue("mariadb_db"), odbc=False)
    be.write("CREATE TABLE customers (id int PRIMARY KEY, name varchar(40))",
             "CREATE TABLE orders (id int PRIMARY KEY, status char(1))")
    before = be.catalog()
    cfg = make_config(tmp_path, be, ["customers", "orders"])
    admin = TriggerAdmin(cfg)
    dry = admin.setup_sql()
    assert be.catalog() == before                                # the dry run changes nothing
    assert any("CREATE TABLE" in s for s in dry) and sum("CREATE TRIGGER" in s for s in dry) >= 2
    # an "older agent" installed version 001 only
    admin.setup(upto=1)
    db = admin._connect()
    try:
        assert trg.installed_version(db, admin.names) == 1
        v1_triggers = trg.installed_triggers(db, admin.names)
    finally:
        db.close()
    assert v1_triggers and not any("origin" in body for body in v1_triggers.values()) or kind == "pg"
    be.write("INSERT INTO customers VALUES (1, 'written under version 1')")
    assert any(i.name == "changelog" and not i.ok and "001" in i.detail for i in admin.check())
    # the newer agent upgrades: missing versions applied, triggers re-created; nothing written meanwhile is lost
    lines = admin.setup()
    assert any("002" in ln for ln in lines) and not any("001" in ln for ln in lines if ln.startswith("applied"))
    be.write("INSERT INTO customers VALUES (2, 'written under version 2')")
    be.write("UPDATE orders SET status = 'x'")
    be.write("INSERT INTO orders VALUES (1, 'N')", origin="cdc-agent/t")
    newest = trg_install.newest_version(admin.dialect)
    assert admin.setup() == [f"trigger capture is up to date (version {newest:03d}, 2 table(s)); nothing to do"]
    assert all(i.ok or i.warning for i in admin.check())
    src = started(cfg)
    try:
        got = drain(src)
    finally:
        src.close()
    assert [c.after["name"] for c in got] == ["written under version 1", "written under version 2"]
    assert src.skipped_own == 1
    # a table dropped from the config loses its triggers at the next setup
    cfg1 = make_config(tmp_path, be, ["customers"])
    assert any("no longer captured" in ln for ln in TriggerAdmin(cfg1).setup())
    assert TriggerAdmin(cfg1).teardown()[0].startswith("removed")
    assert be.catalog() == before
    assert TriggerAdmin(cfg1).teardown() == ["nothing to remove: no capture triggers or changelog found"]
    # and after a new setup, ids (hence positions) go on from a higher value
    TriggerAdmin(cfg).setup()
    be.write("INSERT INTO customers VALUES (3, 'after reinstall')")
    src = started(cfg)
    try:
        again = drain(src)
    finally:
        src.close()

    def changelog_id(position: str) -> int:          # PostgreSQL: <window>:<id>[:<row in the statement>]
        return int(position.split(":")[1], 16) if kind == "pg" else int(position)
    assert changelog_id(again[0].position) > changelog_id(got[-1].position)


def test_triggers_follow_a_changed_table(tmp_path):
    be = SqliteBackend(tmp_path / "erp.db")
    be.write("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    cfg = make_config(tmp_path, be, ["customers"])
    admin = TriggerAdmin(cfg)
    admin.setup()
    be.write("ALTER TABLE customers ADD COLUMN email TEXT")
    stale = [i for i in admin.check() if i.name.startswith("triggers")]
    assert stale and not stale[0].ok and "other columns" in stale[0].detail
    assert any("re-created" in ln for ln in admin.setup())
    be.write("INSERT INTO customers VALUES (1, 'ann', 'ann@x')")
    src = started(cfg)
    try:
        assert [c.after for c in drain(src)] == [{"id": 1, "name": "ann", "email": "ann@x"}]
    finally:
        src.close()


def test_cli_setup_dry_run_check_and_teardown(tmp_path):
    import subprocess
    import sys
    be = SqliteBackend(tmp_path / "erp.db")
    be.write("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    (tmp_path / "agent.toml").write_text(
        '[agent]\nname = "t"\nstate_dir = "state"\n[source]\nkind = "trigger"\ndsn = "sqlite:///erp.db"\n'
        'tables = ["main.customers"]\n[[targets]]\nname = "f"\nkind = "file"\npath = "out.jsonl"\n'
        '[health]\nlisten = "off"\n')

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "agent.cli", *args, "-c", str(tmp_path / "agent.toml")],
                              capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60)

    r = cli("check")
    assert r.returncode == 1 and "run `cdc-agent setup`" in r.stdout
    r = cli("setup", "--dry-run")
    assert r.returncode == 0 and "CREATE TRIGGER" in r.stdout and "nothing was run" in r.stdout
    assert "cdc_changelog" not in str(be.catalog())
    r = cli("setup")
    assert r.returncode == 0 and "version 002" in r.stdout
    r = cli("check")
    assert r.returncode == 0 and "ready" in r.stdout, r.stdout
    r = cli("teardown", "--dry-run")
    assert r.returncode == 0 and "DROP TRIGGER" in r.stdout
    r = cli("teardown")
    assert r.returncode == 0 and "removed 3 trigger(s)" in r.stdout
    (tmp_path / "agent.toml").write_text((tmp_path / "agent.toml").read_text().replace("sqlite:///erp.db", "oracle://x"))
    r = cli("check")
    assert r.returncode == 2 and "source.dsn" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- SIGKILL


def test_sigkill_during_a_stream_of_changes_loses_nothing(pg_db, tmp_path):
    """`cdc-agent run` over PostgreSQL trigger capture, killed with SIGKILL at random moments (three times at
    least) while a writer makes 20k changes (8k in CI): every change is delivered, redeliveries are
    identical, per row in order."""
    from tests.plugins import crash_workload
    changes = crash_workload(20_000)
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    out = tmp_path / "out.jsonl"
    cfgfile = tmp_path / "agent.toml"
    cfgfile.write_text(f"""
[agent]
name = "kill"
state_dir = "state"
delivery = "thread"
[source]
kind = "trigger"
dsn = "{be.dsn}"
tables = ["public.items"]
poll_interval_seconds = 0.05
batch_size = 2000
snapshot = "never"
[[targets]]
name = "f"
kind = "file"
path = "{out}"
[health]
listen = "off"
""")
    TriggerAdmin(config.load(cfgfile)).setup()
    rnd = random.Random(11)          # the kill schedule
    expected: Counter = Counter()
    done = threading.Event()

    def writer():
        import psycopg
        rnd = random.Random(12)
        serial = 0
        live: list[int] = []
        next_id = 1
        with psycopg.connect(pg_db.dsn, autocommit=True) as c:
            while serial < changes:
                with c.transaction():
                    for _ in range(rnd.randint(1, 40)):
                        serial += 1
                        r = rnd.random()
                        if r < 0.5 or len(live) < 10:
                            c.execute("INSERT INTO items VALUES (%s, %s)", (next_id, serial))
                            expected[("insert", next_id, serial)] += 1
                            live.append(next_id)
                            next_id += 1
                        elif r < 0.85:
                            i = rnd.choice(live)
                            c.execute("UPDATE items SET v = %s WHERE id = %s", (serial, i))
                            expected[("update", i, serial)] += 1
                        else:
                            i = live.pop(rnd.randrange(len(live)))
                            old = c.execute("DELETE FROM items WHERE id = %s RETURNING v", (i,)).fetchone()[0]
                            expected[("delete", i, old)] += 1
                time.sleep(0.006)          # spread the changes over several seconds of kills
        done.set()

    wt = threading.Thread(target=writer)
    agent = AgentProcess(cfgfile, tmp_path / "agent.log")
    agent.start()
    wt.start()
    kills = 0
    try:
        while not done.is_set() or kills < 3:
            time.sleep(rnd.uniform(0.6, 1.5))
            agent.kill()
            kills += 1
            agent.start()
            if kills > 12:
                break
        wt.join(60)

        def delivered():
            evs = read_events(out)
            return len({e["id"] for e in evs}) >= sum(expected.values()) and evs
        wait_for(delivered, 90, interval=0.5, what=f"all {changes} changes delivered")
        assert agent.stop() == 0
    finally:
        agent.kill()
    events = read_events(out, final=True)
    firsts = check_delivery(events)
    got: Counter = Counter()
    for evs in firsts.values():
        for e in evs:
            d = e["data"]
            img = d["after"] or d["before"]
            got[(d["op"], img["id"], img["v"])] += 1
    assert got == expected
    assert kills >= 3 and len(events) >= changes
    print(f"{kills} kills, {len(events)} events delivered for {sum(expected.values())} changes")
    assert changelog_count(config.load(cfgfile)) == 0


# ---------------------------------------------------------------- SQL Server: generated DDL, unit-checked


MS_COLUMNS = [trg.Column("order_id", "bigint"), trg.Column("line_no", "int"), trg.Column("amount", "decimal"),
              trg.Column("price", "money"), trg.Column("note", "nvarchar"), trg.Column("legacy", "ntext"),
              trg.Column("shipped_at", "datetime2"), trg.Column("at_tz", "datetimeoffset"),
              trg.Column("blob", "varbinary"), trg.Column("shape", "geometry"), trg.Column("x", "real"),
              trg.Column("odd]name", "int")]


def _balanced(sql: str) -> bool:
    depth, i, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            j = sql.index("'", i + 1)
            while j + 1 < n and sql[j + 1] == "'":
                j = sql.index("'", j + 2)
            i = j + 1
            continue
        if ch == "[":
            j = i + 1
            while True:
                j = sql.index("]", j)
                if j + 1 < n and sql[j + 1] == "]":
                    j += 2
                    continue
                break
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def test_mssql_ddl_is_generated_and_well_formed():
    names = trg.Names("mssql", "dbo", "cdc_changelog")
    info = trg.TableInfo("dbo.order_lines", MS_COLUMNS, ("order_id", "line_no"))
    v = trg.table_values(names, info)
    for version in (1, 2):
        [stmt] = trg.render(trg.table_template("mssql", version), v)
        assert stmt.startswith("CREATE OR ALTER TRIGGER [dbo].[cdc_changelog_order_lines] ON [dbo].[order_lines] "
                               "AFTER INSERT, UPDATE, DELETE AS")
        assert "FROM inserted AS i FULL OUTER JOIN deleted AS d ON i.[order_id] = d.[order_id] AND " \
               "i.[line_no] = d.[line_no]" in stmt
        assert ("SESSION_CONTEXT(N'cdc.origin')" in stmt) == (version == 2)
        assert "CURRENT_TRANSACTION_ID()" in stmt and "SYSUTCDATETIME()" in stmt
        assert "FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES" in stmt
        assert "CONVERT(varchar(64), i.[amount]) AS [amount]" in stmt and "CONVERT(varchar(64), d.[price])" in stmt
        assert "legacy" not in stmt                   # ntext cannot be read in inserted/deleted
        assert "i.[shape].STAsBinary() AS [shape]" in stmt and "[odd]]name]" in stmt
        assert _balanced(stmt) and stmt.count("CASE") == stmt.count("END") - 1      # + BEGIN ... END
        assert "N'dbo.order_lines'" in stmt
    stmts = []
    for _ver, _name, tmpl in trg.migrations("mssql"):
        stmts += trg.render(tmpl, names.common(seed=1795000000000000))
    assert [ver for ver, _, _ in trg.migrations("mssql")] == [1, 2, 3]
    assert "id      bigint IDENTITY(1795000000000000, 1) NOT NULL PRIMARY KEY" in stmts[1]
    assert stmts[-1] == "ALTER TABLE [dbo].[cdc_changelog] ADD origin nvarchar(200) NULL"
    assert all(_balanced(s) for s in stmts)
    assert trg.render(trg_install.template_file("mssql", "teardown.sql"), names.common()) == [
        "DROP TABLE IF EXISTS [dbo].[cdc_changelog]", "DROP TABLE IF EXISTS [dbo].[cdc_changelog_version]"]
    mcfg = config.parse({"agent": {"name": "t"},
                         "source": {"kind": "trigger", "dsn": "mssql+pyodbc://u@erp-host/erp",
                                    "tables": ["dbo.order_lines"]},
                         "targets": [{"name": "f", "kind": "file", "path": "o.jsonl"}]})
    assert TriggerAdmin(mcfg)._drop_trigger_sql("dbo.order_lines", "cdc_changelog_order_lines") == \
        "DROP TRIGGER IF EXISTS [dbo].[cdc_changelog_order_lines]"         # what teardown runs per trigger
    # the values SQL Server's FOR JSON writes, in the contract's forms
    conv = dict(trg.converters("mssql", info))
    assert conv["shipped_at"]("2026-11-23T10:15:02.1234567") == "2026-11-23T10:15:02.123456"
    assert conv["at_tz"]("2026-11-23T10:15:02.1234567+02:00") == "2026-11-23T08:15:02.123456Z"
    assert conv["x"](0.10000000149011612) == 0.1
    odbc = "DRIVER={ODBC Driver 18 for SQL Server};SERVER=db;DATABASE=erp;UID=cdc;PWD=${P}"
    assert trg.parse_dsn(odbc).dialect == "mssql"
    assert trg.parse_dsn("mssql+pyodbc://cdc@erp").url.startswith("mssql+pyodbc://")


# ---------------------------------------------------------------- pure helpers


def test_pg_interval_and_bytea_forms():
    f = trg_pg.interval_text_to_iso
    assert f("1 year 2 mons -3 days +04:05:06.5") == "P1Y2M-3DT4H5M6.5S"
    assert f("1 day 02:03:04.5") == "P1DT2H3M4.5S"
    assert f("00:00:00") == "PT0S" and f("-00:00:01.25") == "PT-1.25S"
    assert f("-1 years -2 mons") == "P-1Y-2M" and f("838:00:00") == "PT838H"
    assert f("3 days") == "P3D" and f("P1Y2M") == "P1Y2M"
    assert f("00:00:00.000001") == "PT0.000001S"
    bytea = trg_pg._PG_CONV["bytea"]          # the trigger source's bytea text -> base64
    assert bytea("\\x00ff10") == "AP8Q" and bytea("\\000\\377\\020") == "AP8Q"
    assert bytea("a\\\\b") == "YVxi"
    assert trg_values.utc_z("2026-11-23T10:15:02.5+05:30") == "2026-11-23T04:45:02.500000Z"
    assert trg_values.utc_z("infinity") == "infinity"


def test_dsn_forms():
    p = trg.parse_dsn
    assert p("postgresql://u@h/db").url == "postgresql+psycopg://u@h/db"
    assert p("mysql://u@h/db").url == "mysql+pymysql://u@h/db"
    assert p("sqlite:////tmp/x.db").sqlite_path == "/tmp/x.db"
    t = p("DRIVER={PostgreSQL Unicode};SERVER=h;PORT=5432;DATABASE=erp;UID=u;PWD=x;")
    assert t.dialect == "postgresql" and t.odbc and t.url is None
    t = p("DRIVER={MariaDB Unicode};SERVER=h;DATABASE=erp;UID=u;PWD=x;")
    assert t.dialect == "mysql" and t.url.startswith("mysql+pyodbc:///?odbc_connect=")
    with pytest.raises(ConfigError, match="source.dsn"):
        p("oracle://u@h/db")
    assert trg.render("a {{x}}\n;\n-- note\nb\n;\n", {"x": "1"}) == ["a 1", "b"]


def test_missing_database_or_install_is_a_clear_error(tmp_path):
    be = SqliteBackend(tmp_path / "erp.db")
    be.write("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    cfg = make_config(tmp_path, be, ["customers"])
    with pytest.raises(SourceFatal, match="cdc-agent setup"):
        started(cfg)
    (tmp_path / "erp.db").unlink()
    with pytest.raises(SourceFatal, match="does not exist"):
        started(cfg)
    assert not (tmp_path / "erp.db").exists()          # never created by accident


def test_sqlite_ids_never_go_back_after_everything_is_consumed(tmp_path):
    """SQLite's rowid is max + 1: the source keeps the highest row (as a marker) so that an emptied changelog
    does not hand out old ids (and old positions, hence old event ids) again."""
    be = SqliteBackend(tmp_path / "erp.db")
    be.write("CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER)")
    cfg = make_config(tmp_path, be, ["items"])
    TriggerAdmin(cfg).setup()
    positions = []
    for rnd in range(3):
        be.write(f"INSERT INTO items VALUES ({rnd}, {rnd})")
        src = started(cfg)
        try:
            got = drain(src)
        finally:
            src.close()
        assert [c.after["v"] for c in got] == [rnd]
        positions.append(got[0].position)
        assert changelog_count(cfg) == 0
    assert positions == sorted(positions) and len(set(positions)) == 3


def test_pg_commit_time_comes_from_track_commit_timestamp(make_pg_cluster, tmp_path):
    cluster = make_pg_cluster(track_commit_timestamp="on")
    db = cluster.create_database("erp")
    be = PgBackend(db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY)")
    cfg = make_config(tmp_path, be, ["items"])
    admin = TriggerAdmin(cfg)
    admin.setup()
    assert next(i for i in admin.check() if i.name == "commit time").ok
    with db.connect() as c:
        with c.transaction():
            c.execute("INSERT INTO items VALUES (1)")
            time.sleep(0.3)                     # the commit comes well after the change
        xid = c.execute("SELECT txid FROM cdc_changelog WHERE op = 'I'").fetchone()[0]
        committed = c.execute("SELECT extract(epoch FROM pg_xact_commit_timestamp(%s::text::xid))::float8",
                              (xid % 2**32,)).fetchone()[0]
        changed = c.execute("SELECT extract(epoch FROM created)::float8 FROM cdc_changelog").fetchone()[0]
    src = started(cfg)
    try:
        [ch] = drain(src)
    finally:
        src.close()
    assert abs(ch.commit_ts - committed) < 1e-5 and ch.commit_ts - changed > 0.25


def event_form(row):
    """A row image as an event holds it (json values spliced in, then read back)."""
    import orjson

    from agent import rawjson
    return orjson.loads(rawjson.dumps(row))
