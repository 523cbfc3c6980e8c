"""Source kind `mysql` against real throwaway MariaDB 10.11 servers: values as the database holds them,
resume strictly after a checkpoint, server restart, ALTER TABLE mid-stream, purged binlogs, `check`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import config
from agent.errors import SourceFatal, SourceUnavailable
from agent.rawjson import RawJson
from agent.sources.mysql import MysqlAdmin, MysqlSource, parse_checkpoint, parse_dsn
from tests.agentproc import ROOT, AgentProcess, check_random_transactions, random_transactions, read_events, wait_for
from tests.capturing import read
from tests.plugins.leaks import secret
from tests.mysql_decoder_paths import mysql_decoder_path  # noqa: F401  (on both rows decoders; one_decoder_path: once)


def make_config(tmp_path: Path, url: str, tables: list[str], server_id: int = 4242, name: str = "t"):
    return config.parse({"agent": {"name": name, "state_dir": str(tmp_path / "state")},
                         "source": {"kind": "mysql", "dsn": url, "tables": tables, "server_id": server_id},
                         "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]},
                        file=str(tmp_path / "agent.toml"), base=tmp_path)


def drain(src: MysqlSource, max_changes: int = 1000, idle_reads: int = 2, wait: float = 0.3):
    """Read until `idle_reads` reads in a row bring nothing; returns [(changes, checkpoint)] per batch."""
    out, idle = [], 0
    while idle < idle_reads:
        b = read(src, max_changes, wait)
        if b.changes or b.checkpoint:
            out.append((b.changes, b.checkpoint))
        idle = 0 if b.changes else idle + 1
    return out


def started(cfg, checkpoint=None) -> tuple[MysqlSource, str]:
    """A started source and the checkpoint it starts from (a fresh start hands it out first)."""
    src = MysqlSource(cfg)
    src.start(checkpoint)
    if checkpoint is None:
        first = read(src, 10, 0.5)
        assert first.changes == [] and first.checkpoint
        checkpoint = first.checkpoint
    return src, checkpoint


# ---------------------------------------------------------------- values

TYPES_DDL = """
CREATE TABLE alltypes (
  id int PRIMARY KEY, ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned, mi mediumint,
  miu mediumint unsigned, i int, iu int unsigned, bi bigint, biu bigint unsigned, d decimal(12,2),
  d2 decimal(30,10), f float, db double, b1 bit(1), b12 bit(12), c char(10), vc varchar(200), tx text,
  mt mediumtext, bn binary(6), vb varbinary(20), bl blob, dt date, dtm datetime(6), dtm0 datetime,
  ts timestamp(6) NULL, tm time, tm6 time(6), tm3 time(3), y year, j json, e enum('new','held','shipped'),
  s set('red','green','blue'), l1 varchar(20) CHARACTER SET latin1)
"""

TYPE_ROWS = [
    "(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, "
    "18446744073709551615, -1234567890.12, 12345678901234567890.0123456789, 0.1, 2.718281828459045, b'1', "
    "b'101010101010', 'abc  ', 'h€llo 😀 wörld', 'text ✓', REPEAT('long ', 2000), x'00ff00', x'deadbeef', "
    "x'0001020304', '2026-02-28', '9999-12-31 23:59:59.999999', '1000-01-01 00:00:00', '2038-01-19 03:14:07.999999', "
    "'-838:59:59', '-00:00:00.000001', '12:34:56.789', 2155, "
    "'{\"a\": [1, 2.5, \"x\", null, true], \"b\": {\"c\": \"😀\"}}', "
    "'shipped', 'red,blue', 'ÿé àç')",
    "(2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -3.5, -1e-300, b'0', b'0', '', '', '', '', x'', x'', x'', "
    "'0000-00-00', '2026-11-23 10:15:02.000000', '2026-11-23 10:15:02', '1970-01-01 00:00:01', '00:00:00', "
    "'838:59:59.000000', '-12:00:00.5', 1901, '[]', 'new', '', 'x')",
    "(3, " + ", ".join(["NULL"] * 35) + ")",
]

# an independent SELECT that renders every column in the contract's form
EXPECTED_SELECT = """
SELECT id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, CAST(d AS CHAR), CAST(d2 AS CHAR), CAST(f AS CHAR), db,
  b1 + 0, b12 + 0, c, vc, tx, mt, REPLACE(TO_BASE64(bn), '\\n', ''), REPLACE(TO_BASE64(vb), '\\n', ''),
  REPLACE(TO_BASE64(bl), '\\n', ''), DATE_FORMAT(dt, '%Y-%m-%d'), DATE_FORMAT(dtm, '%Y-%m-%dT%H:%i:%s.%f'),
  DATE_FORMAT(dtm0, '%Y-%m-%dT%H:%i:%s'), DATE_FORMAT(ts, '%Y-%m-%dT%H:%i:%s.%fZ'), CAST(tm AS CHAR),
  CAST(tm6 AS CHAR), CAST(tm3 AS CHAR), y + 0, j, CAST(e AS CHAR), CAST(s AS CHAR), l1
FROM alltypes ORDER BY id
"""
COLS = ["id", "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "d", "d2", "f", "db", "b1", "b12", "c",
        "vc", "tx", "mt", "bn", "vb", "bl", "dt", "dtm", "dtm0", "ts", "tm", "tm6", "tm3", "y", "j", "e", "s", "l1"]


def expected_rows(db) -> list[dict]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(EXPECTED_SELECT)
            rows = cur.fetchall()
    finally:
        conn.close()
    out = []
    for r in rows:
        row = dict(zip(COLS, r))
        if row["f"] is not None:
            row["f"] = float(row["f"])
        if row["tm3"] is not None:                  # TIME(3) is sent with microseconds: .789 -> .789000
            hms, _, frac = row["tm3"].partition(".")
            row["tm3"] = f"{hms}.{frac.ljust(6, '0')}"
        if row["j"] is not None:
            row["j"] = RawJson(row["j"])            # embedded as MariaDB stores it, never through a float
        out.append(row)
    return out


def test_every_type_arrives_as_the_database_holds_it(mariadb_db, tmp_path):
    mariadb_db.execute(TYPES_DDL)
    mariadb_db.execute("CREATE TABLE other (id int PRIMARY KEY)")
    cfg = make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.alltypes"])
    src, _ = started(cfg)
    try:
        conn = mariadb_db.connect()
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("INSERT INTO alltypes VALUES " + ", ".join(TYPE_ROWS))
            cur.execute("INSERT INTO other VALUES (1)")                       # not captured
        conn.close()
        expected = expected_rows(mariadb_db)
        mariadb_db.execute("UPDATE alltypes SET vc = CONCAT(COALESCE(vc, ''), '+')")
        after_update = expected_rows(mariadb_db)
        mariadb_db.execute("DELETE FROM alltypes")
        changes = [c for batch, _ in drain(src) for c in batch]
    finally:
        src.close()
    assert {c.table for c in changes} == {f"{mariadb_db.name}.alltypes"}
    ins = [c for c in changes if c.op == "insert"]
    upd = [c for c in changes if c.op == "update"]
    dels = [c for c in changes if c.op == "delete"]
    assert [c.after for c in ins] == expected
    assert [c.before for c in upd] == expected and [c.after for c in upd] == after_update
    assert [c.before for c in dels] == after_update and all(c.after is None for c in dels)
    assert all(c.key_columns == ("id",) for c in changes)
    # contract details a SELECT comparison could hide
    r1 = ins[0].after
    assert r1["biu"] == 18446744073709551615 and r1["d"] == "-1234567890.12" and r1["f"] == 0.1
    assert r1["vc"] == "h€llo 😀 wörld" and r1["bn"] == "AP8AAAAA" and r1["ts"] == "2038-01-19T03:14:07.999999Z"
    assert r1["j"] == RawJson('{"a": [1, 2.5, "x", null, true], "b": {"c": "😀"}}') and r1["s"] == "red,blue"
    assert ins[1].after["dt"] == "0000-00-00" and ins[1].after["tm6"] == "838:59:59.000000"
    assert all(v is None for k, v in ins[2].after.items() if k != "id")
    # one transaction per statement: positions sort in commit order, are unique, and carry the commit time
    positions = [c.position for c in changes]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert all(len(p) == len(positions[0]) for p in positions)
    assert ins[0].commit_time.endswith("Z") and abs(ins[0].commit_ts - time.time()) < 120
    assert ins[0].txid and ins[0].txid.count("-") == 2                     # MariaDB GTID domain-server-seq


# ---------------------------------------------------------------- checkpoints


def test_resume_strictly_after_a_checkpoint(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE items (id int PRIMARY KEY, qty int)")
    cfg = make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.items"])
    src, start = started(cfg)
    conn = mariadb_db.connect()
    with conn.cursor() as cur:
        for i in range(1, 31):                               # 30 one-row transactions
            cur.execute("INSERT INTO items VALUES (%s, 0)", (i,))
        cur.execute("INSERT INTO items SELECT seq, 1 FROM seq_100_to_349")   # one 250-row transaction
        for i in range(1, 11):
            cur.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (i,))
    conn.close()
    try:
        batches = drain(src, max_changes=7)
    finally:
        src.close()
    everything = [c for b, _ in batches for c in b]
    assert len(everything) == 290
    # batches end at transaction boundaries with a checkpoint, or are pieces of the big one (None)
    pieces = [b for b, ck in batches if ck is None]
    assert pieces and all(c.txid == pieces[0][0].txid for b in pieces for c in b)
    # resume from every checkpoint: exactly the changes after it, with the same positions
    for k, (_, ck) in enumerate(batches):
        if ck is None or k == len(batches) - 1:
            continue
        seen = {c.position for b, _ in batches[:k + 1] for c in b}
        src2, _ = started(cfg, ck)
        try:
            rest = [c for b, _ in drain(src2, max_changes=500) for c in b]
        finally:
            src2.close()
        expect = [c for c in everything if c.position not in seen]
        assert [(c.position, c.op, c.after) for c in rest] == [(c.position, c.op, c.after) for c in expect]
        if k > 6:
            break
    # a fresh start hands out where it begins; resuming there replays everything
    src3, _ = started(cfg, start)
    try:
        again = [c for b, _ in drain(src3, max_changes=1000) for c in b]
    finally:
        src3.close()
    assert [c.position for c in again] == [c.position for c in everything]
    assert parse_checkpoint(start)["gtid"] != ""


@pytest.mark.one_decoder_path
def test_server_restart_mid_stream_resumes_without_loss_or_duplicates(make_mariadb_server, tmp_path):
    server = make_mariadb_server()
    db = server.create_database("shop")
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, status char(1))")
    cfg = make_config(tmp_path, db.url, ["shop.orders"])
    src, ckpt = started(cfg)
    spooled: dict[str, tuple] = {}

    def take(batches):
        nonlocal ckpt
        for changes, ck in batches:
            for c in changes:
                assert spooled.setdefault(c.position, (c.op, c.after)) == (c.op, c.after)
            if ck:
                ckpt = ck

    for i in range(1, 21):
        db.execute("INSERT INTO orders VALUES (%s, 'N')", (i,))
    take(drain(src, max_changes=5))
    server.restart()
    with pytest.raises(SourceUnavailable):
        for _ in range(50):
            read(src, 100, 0.2)
    assert not src.status().connected
    src.close()
    for i in range(21, 41):
        db.execute("INSERT INTO orders VALUES (%s, 'N')", (i,))
    db.execute("UPDATE orders SET status = 'S' WHERE id <= 5")
    src2 = MysqlSource(cfg)
    src2.start(ckpt)
    try:
        first = read(src2, 1000, 1.0)
        assert first.changes and min(c.position for c in first.changes) > max(spooled)
        take([(first.changes, first.checkpoint)])
        take(drain(src2))
    finally:
        src2.close()
    inserted = sorted(a["id"] for op, a in spooled.values() if op == "insert")
    assert inserted == list(range(1, 41))
    assert sorted(a["id"] for op, a in spooled.values() if op == "update") == [1, 2, 3, 4, 5]


def test_alter_table_mid_stream_keeps_names_right(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE customers (id int PRIMARY KEY, name varchar(20), tier char(1))")
    cfg = make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.customers"])
    src, start = started(cfg)
    mariadb_db.execute("INSERT INTO customers VALUES (1, 'ann', 'A')")
    mariadb_db.execute("ALTER TABLE customers ADD COLUMN email varchar(40) AFTER name")
    mariadb_db.execute("INSERT INTO customers VALUES (2, 'bob', 'bob@x', 'B')")
    mariadb_db.execute("UPDATE customers SET email = 'ann@x' WHERE id = 1")
    mariadb_db.execute("ALTER TABLE customers DROP COLUMN name")
    mariadb_db.execute("INSERT INTO customers VALUES (3, 'cy@x', 'C')")
    want = [("insert", {"id": 1, "name": "ann", "tier": "A"}),
            ("insert", {"id": 2, "name": "bob", "email": "bob@x", "tier": "B"}),
            ("update", {"id": 1, "name": "ann", "email": "ann@x", "tier": "A"}),
            ("insert", {"id": 3, "email": "cy@x", "tier": "C"})]
    try:
        live = [(c.op, c.after) for b, _ in drain(src) for c in b]
    finally:
        src.close()
    assert live == want
    # replayed later, when the catalog has long changed: each row still carries the names of its time
    src2, _ = started(cfg, start)
    try:
        replay = [(c.op, c.after) for b, _ in drain(src2) for c in b]
    finally:
        src2.close()
    assert replay == want


def test_xa_transactions_are_emitted_at_commit_and_never_after_rollback(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.t"])
    src, start = started(cfg)
    conn = mariadb_db.connect()

    def run(*statements):
        with conn.cursor() as cur:
            for q in statements:
                cur.execute(q)

    def ids(batches):
        return [c.after["id"] for changes, _ in batches for c in changes]

    try:
        run("XA START 'gone'", "INSERT INTO t VALUES (1)", "XA END 'gone'", "XA PREPARE 'gone'")
        mariadb_db.execute("INSERT INTO t VALUES (10)")  # commits while 'gone' is prepared
        run("XA ROLLBACK 'gone'")
        run("XA START 'kept', 'b', 7", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)",
            "XA END 'kept', 'b', 7", "XA PREPARE 'kept', 'b', 7")
        mariadb_db.execute("INSERT INTO t VALUES (11)")
        first = drain(src)
        # nothing of a prepared transaction before its outcome; the checkpoint stays before 'kept'
        assert ids(first) == [10, 11]
        held = [ck for _, ck in first if ck][-1]
        src.close()
        run("XA COMMIT 'kept', 'b', 7")
        run("XA START 'one'", "INSERT INTO t VALUES (4)", "XA END 'one'", "XA COMMIT 'one' ONE PHASE")
    finally:
        conn.close()
        for row in mariadb_db.execute("XA RECOVER FORMAT='SQL'"):  # a prepared transaction outlives its
            mariadb_db.execute(f"XA ROLLBACK {row[3]}")                # session: end it
    # a restart from that checkpoint reads 'kept' again: its changes come once, at its commit
    src2, _ = started(cfg, held)
    try:
        again = drain(src2)
    finally:
        src2.close()
    assert ids(again) == [11, 2, 3, 4]
    replayed = {c.after["id"]: c.position for changes, _ in first + again for c in changes}
    assert replayed[11] == [c.position for c in again[0][0]][0]     # same position: the spool drops the copy
    assert replayed[11] < replayed[2] < replayed[3] < replayed[4]    # positions in commit order


@pytest.mark.one_decoder_path
def test_purged_binlogs_are_fatal_with_a_clear_message(make_mariadb_server, tmp_path):
    server = make_mariadb_server()
    db = server.create_database("erp")
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = make_config(tmp_path, db.url, ["erp.t"])
    src, ckpt = started(cfg)
    db.execute("INSERT INTO t VALUES (1)")
    b = read(src, 10, 1.0)
    ckpt = b.checkpoint or ckpt
    src.close()                                              # the agent is stopped...
    for i in range(2, 5):
        db.execute("INSERT INTO t VALUES (%s)", (i,))
        server.execute("FLUSH BINARY LOGS")
    current = server.execute("SHOW MASTER STATUS")[0][0]
    for _ in range(100):                                     # ...and the binlogs it needs are purged (MariaDB
        server.execute(f"PURGE BINARY LOGS TO '{current}'")  # keeps a file until InnoDB's commit is durable)
        if len(server.execute("SHOW BINARY LOGS")) == 1:
            break
        time.sleep(0.1)
    for checkpoint in (ckpt, "file=" + parse_checkpoint(ckpt)["file"] + ";pos=4"):   # by GTID, and by file/pos
        src2 = MysqlSource(cfg)
        with pytest.raises(SourceFatal) as err:
            src2.start(checkpoint)
            read(src2, 10, 1.0)
        src2.close()
        msg = str(err.value)
        assert "purged" in msg and "reset the agent's checkpoint" in msg and "snapshot" in msg
    assert MysqlAdmin(cfg).check()                           # check still works
    items = {i.name: i for i in MysqlAdmin(cfg).check()}
    assert "checkpoint binlog" not in items                  # no spool in this test: nothing to compare


@pytest.mark.one_decoder_path
def test_check_reports_settings_with_fixes(mariadb_db, mariadb_server, tmp_path):
    mariadb_db.execute("CREATE TABLE good (id int PRIMARY KEY)")
    mariadb_db.execute("CREATE TABLE nokey (v int)")
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(f"""
[agent]
name = "chk"
[source]
kind = "mysql"
dsn = "{mariadb_db.url}"
tables = ["{mariadb_db.name}.good", "{mariadb_db.name}.nokey", "{mariadb_db.name}.missing"]
server_id = 4243
[[targets]]
name = "f"
kind = "file"
path = "out.jsonl"
[health]
listen = "off"
""")

    def check():
        p = subprocess.run([sys.executable, "-m", "agent.cli", "check", "-c", str(cfg_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    code, out = check()
    assert code == 1 and "Traceback" not in out
    assert "[ok  ] binlog_row_metadata" in out and "[ok  ] privilege REPLICATION SLAVE" in out
    assert f"[warn] table {mariadb_db.name}.nokey" in out and f"[FAIL] table {mariadb_db.name}.missing" in out
    mariadb_server.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        code, out = check()
        assert code == 1
        assert "[FAIL] binlog_row_metadata" in out
        assert "SET GLOBAL binlog_row_metadata = 'FULL'" in out and "binlog_row_metadata = FULL" in out
        src = MysqlSource(config.load(cfg_path))
        with pytest.raises(SourceFatal, match="binlog_row_metadata"):
            src.start(None)
        src.close()
    finally:
        mariadb_server.execute("SET GLOBAL binlog_row_metadata = 'FULL'")


@pytest.mark.one_decoder_path
def test_dsn_parsing_and_secrets():
    d = parse_dsn("mysql://cdc:p%40ss@db.example:3307/erp?ssl_mode=required&connect_timeout=5")
    assert (d.user, d.password, d.host, d.port, d.database, d.ssl_mode, d.connect_timeout) == \
        ("cdc", "p@ss", "db.example", 3307, "erp", "required", 5.0)
    assert parse_dsn("mysql://cdc@/erp?unix_socket=/run/mysqld.sock").unix_socket == "/run/mysqld.sock"
    from agent.errors import ConfigError
    for bad in ("postgresql://x@h/db", "mysql://h/db", "mysql://u@h/db?sslmode=on", "mysql://u@h/db?ssl_mode=maybe"):
        with pytest.raises(ConfigError):
            parse_dsn(bad)


def test_agent_run_delivers_domain_events(mariadb_db, tmp_path):
    """`cdc-agent run` end to end: rules, keys, positions and ids from the binlog."""
    db = mariadb_db.name
    mariadb_db.execute("CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id int, status char(1), "
                       "total decimal(12,2))")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "maria"
state_dir = "state"
[source]
kind = "mysql"
dsn = "{mariadb_db.url}"
tables = ["{db}.orders"]
server_id = 4244
snapshot = "never"          # this test counts the events of its own writes
[[events]]
type = "order.status.changed"
table = "{db}.orders"
on = ["insert", "update"]
changed = ["status"]
fields = ["order_id", "status"]
values = {{ status = {{ N = "accepted", S = "shipped" }} }}
[[targets]]
name = "f"
kind = "file"
path = "out.jsonl"
[health]
listen = "off"
""")
    out = tmp_path / "out.jsonl"
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        wait_for(lambda: "connected" in agent.log(), 30, what="the agent to connect")
        mariadb_db.execute("INSERT INTO orders VALUES (1, 7, 'N', 10.50), (2, 8, 'N', 3.00)")
        mariadb_db.execute("UPDATE orders SET status = 'S' WHERE order_id = 1")
        mariadb_db.execute("UPDATE orders SET total = 11.00 WHERE order_id = 2")     # status unchanged: no event
        wait_for(lambda: len(read_events(out)) >= 3, 30, what="three events")
        assert agent.stop() == 0
    finally:
        agent.kill()
    evs = read_events(out)
    assert [(e["type"], e["subject"], e["data"]["op"], e["data"]["after"]) for e in evs] == [
        ("order.status.changed", "1", "insert", {"order_id": 1, "status": "accepted"}),
        ("order.status.changed", "2", "insert", {"order_id": 2, "status": "accepted"}),
        ("order.status.changed", "1", "update", {"order_id": 1, "status": "shipped"}),
    ]
    assert evs[2]["data"]["before"] == {"order_id": 1, "status": "accepted"}
    assert [e["position"] for e in evs] == sorted(e["position"] for e in evs)
    assert evs[0]["source"] == f"cdc-agent://maria/{db}.orders" and evs[0]["time"].endswith("Z")


def _writer(db, w: int, n_changes: int, expected: dict, errors: list, stop):
    """Runs writer w's share of the workload (tests.agentproc.random_transactions) through PyMySQL."""
    try:
        conn = db.connect()
        with conn.cursor() as cur:
            for txn in random_transactions(w, n_changes, expected):
                if stop.is_set():
                    break
                cur.execute("BEGIN")
                for sql, params in txn:
                    cur.execute(sql, params)
                cur.execute("COMMIT")
        conn.close()
    except Exception as e:  # surfaced by the test
        errors.append(repr(e))


@pytest.mark.one_decoder_path
def test_sigkill_during_concurrent_writes_loses_nothing(mariadb_db, tmp_path):
    import random
    import threading
    from collections import defaultdict

    mariadb_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad varchar(60))")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "killme"
state_dir = "state"
[source]
kind = "mysql"
dsn = "{mariadb_db.url}"
tables = ["{mariadb_db.name}.items"]
server_id = 4245
snapshot = "never"          # this test counts the events of its own writes
[[targets]]
name = "f"
kind = "file"
path = "out/events.jsonl"
[health]
listen = "off"
""")
    out = tmp_path / "out" / "events.jsonl"
    from tests.plugins import crash_workload
    writers, per_writer = 4, crash_workload(12_500)
    expected = [defaultdict(list) for _ in range(writers)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(mariadb_db, w, per_writer, expected[w], errors, stop))
               for w in range(writers)]
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    rng = random.Random(7)
    try:
        wait_for(lambda: "connected" in agent.log(), 30, what="the agent to connect")
        time.sleep(0.5)                                     # the starting checkpoint is spooled
        for t in threads:
            t.start()
        kills = 0      # three at least, up to five while the writers write
        while kills < 3 or (kills < 5 and any(t.is_alive() for t in threads)):
            time.sleep(rng.uniform(0.8, 2.5))
            agent.kill()
            agent.start()
            kills += 1
        for t in threads:
            t.join(120)
        assert not errors, errors
        total = writers * per_writer
        wait_for(lambda: len({e["id"] for e in read_events(out)}) >= total, 120, interval=0.5,
                 what=f"{total} distinct events")
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()
    events = read_events(out, final=True)
    check_random_transactions(events, expected)
    want = {k: v for exp in expected for k, v in exp.items()}
    assert sum(len(v) for v in want.values()) == writers * per_writer
    assert "Traceback" not in agent.log()


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdc-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    for p in (tmp_path, cert_path, key_path):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return str(cert_path), str(key_path)


@pytest.mark.one_decoder_path
def test_tls_and_a_password_user_with_minimal_grants(make_mariadb_server, tmp_path, monkeypatch):
    import shutil
    import tempfile
    certs = Path(tempfile.mkdtemp(prefix="cdc-tls-"))    # readable by the server's OS user (not under pytest's tmp)
    cert, key = _self_signed(certs)
    server = make_mariadb_server(ssl_cert=cert, ssl_key=key)
    db = server.create_database("erp")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, note varchar(20))")
    server.execute("CREATE USER cdc@'%' IDENTIFIED BY 's3cret-pw' REQUIRE SSL")
    server.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO cdc@'%'")
    server.execute("GRANT SELECT ON erp.t TO cdc@'%'")
    monkeypatch.setenv("CDC_PW", secret("s3cret-pw"))
    url = f"mysql://cdc:${{CDC_PW}}@127.0.0.1:{server.port}/erp?ssl_mode=verify_ca&ssl_ca={cert}"
    cfg = config.parse({"agent": {"name": "tls", "state_dir": str(tmp_path / "state")},
                        "source": {"kind": "mysql", "dsn": url, "tables": ["erp.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "o.jsonl")}]})
    src, _ = started(cfg)
    try:
        db.execute("INSERT INTO t VALUES (1, 'over TLS')")
        changes = [c for b, _ in drain(src) for c in b]
        assert src._conn.tls
    finally:
        src.close()
    assert [(c.op, c.after) for c in changes] == [("insert", {"id": 1, "note": "over TLS"})]
    items = {i.name: i for i in MysqlAdmin(cfg).check()}
    assert items["privilege REPLICATION SLAVE"].ok and items["table erp.t"].ok
    monkeypatch.setenv("CDC_PW", "wrong")
    bad = config.parse({"agent": {"name": "tls", "state_dir": str(tmp_path / "state")},
                        "source": {"kind": "mysql", "dsn": url, "tables": ["erp.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "o.jsonl")}]})
    with pytest.raises(SourceFatal) as err:
        MysqlSource(bad).start(None)
    assert "refused" in str(err.value) and "wrong" not in str(err.value)
    no_tls = config.parse({"agent": {"name": "tls", "state_dir": str(tmp_path / "state")},
                           "source": {"kind": "mysql", "dsn": url.split("?")[0] + "?ssl_mode=disabled",
                                      "tables": ["erp.t"]},
                           "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "o.jsonl")}]})
    with pytest.raises(SourceFatal):                         # REQUIRE SSL: refused without TLS
        MysqlSource(no_tls).start(None)
    shutil.rmtree(certs, ignore_errors=True)


def test_minimal_row_image_marks_missing_columns_unavailable(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE stock (id int PRIMARY KEY, sku varchar(20), qty int)")
    mariadb_db.execute("INSERT INTO stock VALUES (1, 'A-1', 5)")
    cfg = make_config(tmp_path, mariadb_db.url, [f"{mariadb_db.name}.stock"])
    src, _ = started(cfg)
    try:
        conn = mariadb_db.connect()
        with conn.cursor() as cur:
            cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")    # a session the DBA forgot about
            cur.execute("UPDATE stock SET qty = 6 WHERE id = 1")
        conn.close()
        changes = [c for b, _ in drain(src) for c in b]
    finally:
        src.close()
    assert [(c.op, c.before, c.after, c.unavailable) for c in changes] == [
        ("update", {"id": 1}, {"qty": 6}, ("id", "sku"))]


@pytest.mark.one_decoder_path
def test_a_binlog_stream_not_read_for_a_while_stays_open(make_mariadb_server, tmp_path):
    """Capture paused by backpressure reads nothing; the server's writes to the dump connection then wait,
    and must not time out (net_write_timeout) while the agent is still there."""
    server = make_mariadb_server(net_write_timeout="1")   # the least; the agent's session raises its own
    db = server.create_database("erp")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    cfg = make_config(tmp_path, db.url, ["erp.t"])
    src, _ = started(cfg)
    try:
        db.execute("INSERT INTO t SELECT seq, repeat('y', 2000) FROM seq_1_to_30000")  # more than the sockets hold
        deadline = time.monotonic() + 4                    # four net_write_timeouts without reading
        while time.monotonic() < deadline:
            src.keepalive()
            time.sleep(0.5)
        got = [c for changes, _ in drain(src) for c in changes]
    finally:
        src.close()
    assert len(got) == 30000


@pytest.mark.one_decoder_path
def test_check_fails_a_rule_naming_a_column_the_table_lacks(mariadb_db, tmp_path):
    mariadb_db.execute("CREATE TABLE cust (id int PRIMARY KEY, name text)")
    table = f"{mariadb_db.name}.cust"
    for k, v in [("changed", ["nmae"]), ("key", ["cust_id"]), ("fields", ["id", "gone"]),
                 ("values", {"stat": {"a": "x"}})]:
        cfg = config.parse({"agent": {"name": "t", "state_dir": str(tmp_path / "state")},
                            "source": {"kind": "mysql", "dsn": mariadb_db.url, "tables": [table]},
                            "events": [{"type": "cust.ok", "table": table, "changed": ["name"], "key": ["id"]},
                                       {"type": "cust.bad", "table": table, k: v}],
                            "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]},
                           file=str(tmp_path / "agent.toml"), base=tmp_path)
        items = [i for i in MysqlAdmin(cfg).check() if i.name == f"columns {table}"]
        assert len(items) == 1 and not items[0].ok and not items[0].warning, (k, items)
        assert f"events[1] (cust.bad): {k} names column" in items[0].detail and f"events[1].{k}" in items[0].fix
