"""The PostgreSQL source against a real throwaway server: resume strictly after a checkpoint, large
transactions in pieces, before images and unchanged TOAST values, errors, heartbeat, and the admin side
(`check`, `setup`, `teardown`, partly through the CLI as a user runs it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from agent import config
from agent.errors import CdcError, SourceFatal, SourceUnavailable
from agent.sources.postgres import HEARTBEAT_PREFIX, PostgresAdmin, PostgresSource
from tests.capturing import read
from tests.plugins.leaks import secret

ROOT = Path(__file__).resolve().parent.parent


def make_config(dsn: str, tmp_path: Path, tables, rules=(), **source):
    source.setdefault("heartbeat_seconds", 0)
    return config.parse({"agent": {"name": "pgsrc", "state_dir": str(tmp_path / "state")},
                         "source": {"kind": "postgres", "dsn": dsn, "tables": list(tables), **source},
                         "events": list(rules),
                         "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]})


def write_toml(tmp_path: Path, dsn: str, tables, extra: str = "") -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(f"""[agent]
name = "pgsrc"
state_dir = "state"

[source]
kind = "postgres"
dsn = "{dsn}"
tables = [{", ".join(f'"{t}"' for t in tables)}]
{extra}
[[targets]]
name = "f"
kind = "file"
path = "out.jsonl"

[health]
listen = "off"
""")
    return p


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def started(cfg, checkpoint=None) -> PostgresSource:
    src = PostgresSource(cfg)
    src.start(checkpoint)
    return src


def drain(src, n: int | None = None, max_changes: int = 1000, rounds: int = 40, confirm: bool = False):
    """Read until `n` changes and a checkpoint arrived (or, n=None, until a read brings nothing)."""
    changes, ckpt = [], None
    for _ in range(rounds):
        b = read(src, max_changes, 0.25)
        changes.extend(b.changes)
        if b.checkpoint:
            ckpt = b.checkpoint
            if confirm:
                src.confirm(b.checkpoint)
        if n is None and not b.changes and b.checkpoint is None:
            break
        if n is not None and len(changes) >= n and b.checkpoint:
            break
    return changes, ckpt


def slot_row(db, slot="cdc_pgsrc"):
    return db.execute("SELECT confirmed_flush_lsn, active_pid FROM pg_replication_slots WHERE slot_name = %s",
                      (slot,))


@pytest.fixture
def tdb(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.t"])
    PostgresAdmin(cfg).setup()
    return pg_db, cfg


# ---------------------------------------------------------------- positions and checkpoints


def test_resume_strictly_after_checkpoint(tdb):
    db, cfg = tdb
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    src = started(cfg)
    a, ckpt_a = drain(src, 2)
    src.close()                        # not confirmed: the slot still holds transaction A
    assert [c.after["id"] for c in a] == [1, 2] and ckpt_a and len(ckpt_a) == 16
    assert [c.position for c in a] == [a[0].position[:17] + "00000001", a[0].position[:17] + "00000002"]
    assert a[0].position[:16] < ckpt_a and a[0].txid == a[1].txid and a[0].commit_time.endswith("Z")

    db.execute("INSERT INTO t VALUES (3, 'c')")
    db.execute("UPDATE t SET v = 'cc' WHERE id = 3")
    src = started(cfg, ckpt_a)
    bc, ckpt_c = drain(src, 2)
    assert [(c.op, c.after["id"]) for c in bc] == [("insert", 3), ("update", 3)]
    assert all(c.position > ckpt_a for c in bc) and bc[0].position < bc[1].position
    src.confirm(ckpt_c)
    src.close()

    db.execute("DELETE FROM t WHERE id = 1")
    src = started(cfg, ckpt_a)         # an older checkpoint than the slot's: the server starts at its own
    d, _ = drain(src, 1)
    src.close()
    assert [(c.op, c.before) for c in d] == [("delete", {"id": 1})]


def test_transactions_sent_again_are_skipped(tdb):
    db, cfg = tdb
    db.execute("INSERT INTO t VALUES (1, 'a')")
    src = started(cfg)
    _, ckpt_a = drain(src, 1)
    src.close()
    db.execute("INSERT INTO t VALUES (2, 'b')")
    src = PostgresSource(cfg)
    # ask the server for everything the slot still has, as a server resending after a crash would
    src._start_replication = lambda ckpt: PostgresSource._start_replication(src, 0)
    src.start(ckpt_a)
    try:
        got, ckpt_b = drain(src, 1)
        more, _ = drain(src, None)
    finally:
        src.close()
    assert [c.after["id"] for c in got + more] == [2] and ckpt_b > ckpt_a


def test_large_transaction_comes_in_pieces(tdb):
    db, cfg = tdb
    db.execute("INSERT INTO t VALUES (0, 'small')")
    db.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
    src = started(cfg)
    try:
        batches = []
        for _ in range(100):
            b = read(src, 100, 0.5)
            if b.changes or b.checkpoint:
                batches.append(b)
            if sum(len(x.changes) for x in batches) >= 1001 and b.checkpoint:
                break
    finally:
        src.close()
    # the small transaction ends its batch (with its checkpoint), even though the big one was already arriving
    assert [c.after["id"] for c in batches[0].changes] == [0] and batches[0].checkpoint
    big = batches[1:]
    assert all(len(b.changes) <= 100 for b in big)
    assert all(b.checkpoint is None for b in big[:-1]) and big[-1].checkpoint is not None
    rows = [c for b in big for c in b.changes]
    assert [c.after["id"] for c in rows] == list(range(1, 1001))
    prefix = rows[0].position[:17]
    assert [c.position for c in rows] == [f"{prefix}{i:08d}" for i in range(1, 1001)]
    assert prefix[:16] > batches[0].checkpoint and big[-1].checkpoint > prefix[:16]
    assert len(big) >= 10


def test_multi_table_transaction_keeps_its_order(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (k text, n int, PRIMARY KEY (n, k))")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.a", "public.b"])
    PostgresAdmin(cfg).setup()
    with pg_db.connect() as conn, conn.transaction():
        conn.execute("INSERT INTO a VALUES (1)")
        conn.execute("INSERT INTO b VALUES ('x', 1)")
        conn.execute("UPDATE a SET id = 2")
        conn.execute("DELETE FROM b")
    src = started(cfg)
    got, _ = drain(src, 4)
    src.close()
    assert [(c.table, c.op) for c in got] == [("public.a", "insert"), ("public.b", "insert"),
                                             ("public.a", "update"), ("public.b", "delete")]
    assert got[1].key_columns == ("n", "k")            # primary key order, not column order
    assert got[3].before == {"k": "x", "n": 1}
    assert [c.position for c in got] == sorted(c.position for c in got) and len({c.txid for c in got}) == 1


# ---------------------------------------------------------------- before images and TOAST


def test_before_images_default_and_full(pg_db, tmp_path):
    pg_db.execute("""CREATE TABLE d (id int PRIMARY KEY, v text, n int);
                     CREATE TABLE f (id int PRIMARY KEY, v text, n int);
                     ALTER TABLE f REPLICA IDENTITY FULL;""")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.d", "public.f"])
    PostgresAdmin(cfg).setup()
    for t in ("d", "f"):
        pg_db.execute(f"INSERT INTO {t} VALUES (1, 'a', 10)")
        pg_db.execute(f"UPDATE {t} SET v = 'b' WHERE id = 1")
        pg_db.execute(f"UPDATE {t} SET id = 2 WHERE id = 1")
        pg_db.execute(f"DELETE FROM {t} WHERE id = 2")
    src = started(cfg)
    got, _ = drain(src, 8)
    src.close()
    d, f = got[:4], got[4:]
    # DEFAULT: no old image for updates (a key change logs only the old key: partial, so none), key on delete
    assert [c.before for c in d] == [None, None, None, {"id": 2}]
    assert d[2].after == {"id": 2, "v": "b", "n": 10}
    assert [c.before for c in f] == [None, {"id": 1, "v": "a", "n": 10}, {"id": 1, "v": "b", "n": 10},
                                     {"id": 2, "v": "b", "n": 10}]
    assert [c.after for c in f][3] is None and all(c.unavailable == () for c in got)


def test_unchanged_toast_values(pg_db, tmp_path):
    pg_db.execute("""CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
                     CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
                     ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
                     ALTER TABLE docs_full ALTER body SET STORAGE EXTERNAL;
                     ALTER TABLE docs_full REPLICA IDENTITY FULL;""")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.docs", "public.docs_full"])
    PostgresAdmin(cfg).setup()
    body = "0123456789abcdef" * 1000                     # stored out of line: not logged when unchanged
    for t in ("docs", "docs_full"):
        pg_db.execute(f"INSERT INTO {t} VALUES (1, 't0', %s)", (body,))
        pg_db.execute(f"UPDATE {t} SET title = 't1' WHERE id = 1")
        pg_db.execute(f"UPDATE {t} SET body = 'short' WHERE id = 1")
    src = started(cfg)
    got, _ = drain(src, 6)
    src.close()
    ins, upd, upd2 = got[:3]
    assert ins.after["body"] == body
    assert upd.after == {"id": 1, "title": "t1"} and upd.unavailable == ("body",) and upd.before is None
    assert upd2.after == {"id": 1, "title": "t1", "body": "short"} and upd2.unavailable == ()
    ins, upd, upd2 = got[3:]
    assert upd.after == {"id": 1, "title": "t1", "body": body} and upd.unavailable == ()
    assert upd.before == {"id": 1, "title": "t0", "body": body}
    assert upd2.before["body"] == body and upd2.after["body"] == "short"


# ---------------------------------------------------------------- status, errors


def test_status_and_idle_confirm(tdb):
    db, cfg = tdb
    db.execute("INSERT INTO t VALUES (1, 'a')")
    src = started(cfg)
    try:
        got, ckpt = drain(src, 1, confirm=True)
        st = src.status()
        assert st.connected and st.position == got[0].position and st.lag_seconds == 0.0
        assert isinstance(st.retained_wal_bytes, int) and st.retained_wal_bytes >= 0
        confirmed = db.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0][0]
        from agent.pgoutput import parse_lsn
        assert parse_lsn(confirmed) >= int(ckpt, 16)
    finally:
        src.close()
    assert not src.status().connected


def test_missing_slot_or_publication_is_fatal(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.t"])
    with pytest.raises(SourceFatal, match=r'slot "cdc_pgsrc" does not exist.*cdc-agent setup'):
        started(cfg)
    PostgresAdmin(cfg).setup()
    pg_db.execute("DROP PUBLICATION cdc_pgsrc")
    with pytest.raises(SourceFatal, match=r'publication "cdc_pgsrc" does not exist'):
        started(cfg)


def test_unreachable_server_is_retriable_and_keeps_the_password_out(tmp_path, monkeypatch):
    monkeypatch.setenv("T_PG_PW", secret("s3cr3t-pw"))
    cfg = config.parse({"agent": {"name": "pgsrc", "state_dir": str(tmp_path / "state")},
                        "source": {"kind": "postgres", "dsn": "postgresql://cdc:${T_PG_PW}@127.0.0.1:1/erp",
                                   "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "o")}]})
    with pytest.raises(SourceUnavailable) as e:
        started(cfg)
    assert "s3cr3t" not in str(e.value) and "connect" in str(e.value)
    items = PostgresAdmin(cfg).check()
    assert [(i.name, i.ok) for i in items] == [("connect", False)] and "s3cr3t" not in items[0].detail


def test_lost_connection_is_retriable_and_resumes(tdb):
    db, cfg = tdb
    db.execute("INSERT INTO t VALUES (1, 'a')")
    src = started(cfg)
    _, ckpt = drain(src, 1)
    db.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'cdc_pgsrc'")
    with pytest.raises(SourceUnavailable):
        for _ in range(50):
            read(src, 10, 0.1)
    src.close()
    db.execute("INSERT INTO t VALUES (2, 'b')")
    for _ in range(50):                # the terminated walsender may hold the slot for a moment
        try:
            src = started(cfg, ckpt)
            break
        except SourceUnavailable:
            time.sleep(0.1)
    got, _ = drain(src, 1)
    src.close()
    assert [c.after["id"] for c in got] == [2]


def test_truncate_and_unlisted_tables_produce_no_changes(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE extra (id int PRIMARY KEY)")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.t"])
    PostgresAdmin(cfg).setup()
    pg_db.execute("ALTER PUBLICATION cdc_pgsrc ADD TABLE extra")       # a DBA widened the publication
    pg_db.execute("INSERT INTO extra VALUES (1); INSERT INTO t VALUES (1)")
    pg_db.execute("TRUNCATE t")
    pg_db.execute("INSERT INTO t VALUES (2)")
    src = started(cfg)
    got, _ = drain(src, 2)
    rest, _ = drain(src, None)
    src.close()
    assert [(c.table, c.after["id"]) for c in got + rest] == [("public.t", 1), ("public.t", 2)]
    assert got[0].position.endswith(":00000001")


# ---------------------------------------------------------------- heartbeat


def test_heartbeat_advances_an_idle_databases_slot(pg_cluster, pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = make_config(pg_db.dsn, tmp_path, ["public.t"], heartbeat_seconds=0.3)
    PostgresAdmin(cfg).setup()
    pg_db.execute("SELECT pg_create_logical_replication_slot('probe', 'pgoutput')")
    other = pg_cluster.create_database()
    src = started(cfg)
    try:
        other.execute("CREATE TABLE busy (id int); INSERT INTO busy SELECT generate_series(1, 10000)")
        target = pg_db.execute("SELECT pg_current_wal_lsn()")[0][0]
        reached, changes = False, []
        t0 = time.monotonic()
        while time.monotonic() < t0 + 20 and not (reached and time.monotonic() > t0 + 1.0):   # >= 3 heartbeats
            b = read(src, 100, 0.2)      # the pipeline keeps reading; nothing arrives for this database
            changes += b.changes
            reached = pg_db.execute("SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots "
                                    "WHERE slot_name = 'cdc_pgsrc'", (target,))[0][0]
    finally:
        src.close()
        pg_cluster.drop_database(other.name)
    assert reached and changes == []
    # the heartbeat is a logical message in this database (and produced no events above)
    msgs = pg_db.execute("SELECT count(*) FROM pg_logical_slot_peek_binary_changes('probe', NULL, NULL, "
                         "'proto_version', '1', 'publication_names', 'cdc_pgsrc', 'messages', 'true') "
                         "WHERE position(%s::bytea in data) > 0", (HEARTBEAT_PREFIX.encode(),))[0][0]
    assert msgs >= 1


# ---------------------------------------------------------------- check, setup, teardown


def test_check_against_wal_level_replica_exits_1_with_the_fix(make_pg_cluster, tmp_path):
    cluster = make_pg_cluster(wal_level="replica")
    cluster.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = write_toml(tmp_path, cluster.dsn(), ["public.t"])
    r = cli("check", "-c", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[FAIL] wal_level" in r.stdout and "wal_level = replica" in r.stdout
    assert "fix: ALTER SYSTEM SET wal_level = logical;" in r.stdout and "restart" in r.stdout
    assert "Traceback" not in r.stderr


def test_check_reports_tables_keys_identity_and_privileges(pg_db, pg_cluster, tmp_path):
    pg_db.execute("""CREATE TABLE good (id int PRIMARY KEY, s text); ALTER TABLE good REPLICA IDENTITY FULL;
                     CREATE TABLE nopk (a int, b text);
                     CREATE TABLE deflt (id int PRIMARY KEY, s text);
                     CREATE TABLE plain (id int PRIMARY KEY, s text);""")
    tables = ["public.good", "public.nopk", "public.deflt", "public.plain", "public.ghost"]
    rules = [{"type": "x.changed", "table": "public.deflt", "on": ["update"], "changed": ["s"]},
             {"type": "y.changed", "table": "public.good", "on": ["update"], "changed": ["s"]}]
    items = {i.name: i for i in PostgresAdmin(make_config(pg_db.dsn, tmp_path, tables, rules)).check()}
    for name in ("connect", "wal_level", "replication privilege", "max_replication_slots", "max_wal_senders",
                 "replication connection", "table public.good", "replica identity public.good", "publication",
                 "replication slot"):
        assert items[name].ok, items[name]
    assert not items["table public.ghost"].ok and "source.tables" in items["table public.ghost"].fix
    assert not items["primary key public.nopk"].ok and "ADD PRIMARY KEY" in items["primary key public.nopk"].fix
    nopk = items["replica identity public.nopk"]
    assert not nopk.ok and not nopk.warning and nopk.fix == 'ALTER TABLE "public"."nopk" REPLICA IDENTITY FULL;'
    deflt = items["replica identity public.deflt"]                 # a rule uses `changed`: a failure
    assert not deflt.ok and not deflt.warning and "x.changed" in deflt.detail
    assert deflt.fix == 'ALTER TABLE "public"."deflt" REPLICA IDENTITY FULL;'
    plain = items["replica identity public.plain"]                 # no such rule: a warning
    assert not plain.ok and plain.warning and "REPLICA IDENTITY FULL" in plain.fix
    # setup refuses to publish a table whose UPDATEs would then fail
    with pytest.raises(SourceFatal, match="nopk.*REPLICA IDENTITY FULL"):
        PostgresAdmin(make_config(pg_db.dsn, tmp_path, ["public.nopk"])).setup()

    role = f"cdc_plain_{pg_db.name}"
    pg_cluster.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        dsn = pg_cluster.dsn(pg_db.name, user=role)
        items = {i.name: i for i in PostgresAdmin(make_config(dsn, tmp_path, ["public.good"])).check()}
        assert items["connect"].ok
        priv = items["replication privilege"]
        assert not priv.ok and priv.fix == f'ALTER ROLE "{role}" REPLICATION;'
        assert not items["replication slot"].ok
        assert "pg_create_logical_replication_slot" in items["replication slot"].fix
        pub = items["publication"]
        assert not pub.ok and 'CREATE PUBLICATION "cdc_pgsrc" FOR TABLE "public"."good"' in pub.fix
    finally:
        pg_cluster.execute(f'DROP ROLE "{role}"')


def test_setup_dry_run_idempotent_setup_and_teardown(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)")
    cfg = write_toml(tmp_path, pg_db.dsn, ["public.t"])

    def objects():
        return (pg_db.execute("SELECT slot_name, plugin FROM pg_replication_slots"),
                sorted(r[0] for r in pg_db.execute("SELECT tablename FROM pg_publication_tables "
                                                   "WHERE pubname = 'cdc_pgsrc'")))

    r = cli("setup", "--dry-run", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert 'CREATE PUBLICATION "cdc_pgsrc" FOR TABLE "public"."t";' in r.stdout
    assert "SELECT pg_create_logical_replication_slot('cdc_pgsrc', 'pgoutput');" in r.stdout
    assert objects() == ([], [])                                   # nothing was run
    r = cli("setup", "-c", str(cfg))
    assert r.returncode == 0 and "created publication" in r.stdout and "created replication slot" in r.stdout
    assert objects() == ([("cdc_pgsrc", "pgoutput")], ["t"])
    r = cli("setup", "-c", str(cfg))
    assert r.returncode == 0 and "exists" in r.stdout and "created" not in r.stdout, r.stdout
    assert "0 statement(s)" in cli("setup", "--dry-run", "-c", str(cfg)).stdout

    # the table list changed: the publication follows
    cfg2 = make_config(pg_db.dsn, tmp_path, ["public.t", "public.u"])
    assert any(s.startswith('ALTER PUBLICATION "cdc_pgsrc" SET TABLE') for s in PostgresAdmin(cfg2).setup_sql())
    PostgresAdmin(cfg2).setup()
    assert objects()[1] == ["t", "u"]

    # teardown refuses while an agent streams from the slot, then removes both
    src = started(make_config(pg_db.dsn, tmp_path, ["public.t"]))
    try:
        r = cli("teardown", "-c", str(cfg))
        assert r.returncode == 1 and "in use" in r.stderr and "stop the agent" in r.stderr
    finally:
        src.close()
    r = cli("teardown", "--dry-run", "-c", str(cfg))
    assert r.returncode == 0 and "pg_drop_replication_slot('cdc_pgsrc')" in r.stdout and objects()[0]
    r = cli("teardown", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "dropped replication slot cdc_pgsrc" in r.stdout and "dropped publication cdc_pgsrc" in r.stdout
    assert objects() == ([], [])
    assert not pg_db.execute("SELECT 1 FROM pg_publication WHERE pubname = 'cdc_pgsrc'")
    r = cli("teardown", "-c", str(cfg))
    assert r.returncode == 0 and "did not exist" in r.stdout


def test_setup_against_unreachable_server_is_one_line(tmp_path):
    cfg = write_toml(tmp_path, "postgresql://cdc@127.0.0.1:1/erp", ["public.t"])
    r = cli("setup", "-c", str(cfg))
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("setup", "--dry-run", "-c", str(cfg))                 # no server to ask: the full first setup
    assert r.returncode == 0 and "CREATE PUBLICATION" in r.stdout


def test_admin_errors_are_cdc_errors(pg_db, tmp_path):
    cfg = make_config(pg_db.dsn, tmp_path, ["public.missing"])
    with pytest.raises(CdcError, match="do not exist"):
        PostgresAdmin(cfg).setup()
    with pytest.raises(psycopg.Error):       # sanity: the table really is missing
        pg_db.execute("SELECT 1 FROM public.missing")


def test_server_errors_read_well_and_are_classified_by_their_sqlstate():
    from agent.sources.postgres.common import translate_result
    quiet = translate_result("", "", "replication stream ended")
    assert isinstance(quiet, SourceUnavailable)
    assert str(quiet) == "replication stream ended: the server gave no reason"      # no internal class names
    gone = translate_result("42704", 'replication slot "x" does not exist', "START_REPLICATION failed")
    assert isinstance(gone, SourceFatal) and str(gone).endswith('"x" does not exist')
    assert isinstance(translate_result("57P01", "terminating connection", "lost"), SourceUnavailable)
    assert isinstance(translate_result("ZZ999", "odd", "lost"), SourceUnavailable)


def test_check_warns_that_stored_generated_columns_are_not_in_the_log(pg_db, tmp_path):
    pg_db.execute("""CREATE TABLE priced (id int PRIMARY KEY, net numeric(12,2),
                                         gross numeric(12,2) GENERATED ALWAYS AS (net * 1.19) STORED);
                     CREATE TABLE other (id int PRIMARY KEY, g int GENERATED ALWAYS AS (id * 2) STORED);""")
    items = {i.name: i for i in PostgresAdmin(make_config(pg_db.dsn, tmp_path, ["public.priced"])).check()}
    gen = items["generated columns"]
    assert not gen.ok and gen.warning
    assert "public.priced: gross" in gen.detail and "other" not in gen.detail     # only captured tables


def test_check_fails_a_rule_naming_a_column_the_table_lacks(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE cust (id int PRIMARY KEY, name text, status text)")
    good = {"type": "cust.ok", "table": "public.cust", "changed": ["name"], "key": ["id"],
            "fields": {"who": "name"}, "values": {"status": {"a": "active"}}}
    cases = [("changed", ["nmae"]), ("key", ["cust_id"]), ("fields", ["id", "gone"]), ("values", {"stat": {"a": "x"}})]
    for k, v in cases:
        rules = [good, {"type": "cust.bad", "table": "public.cust", k: v}]
        items = [i for i in PostgresAdmin(make_config(pg_db.dsn, tmp_path, ["public.cust"], rules)).check()
                 if i.name == "columns public.cust"]
        assert len(items) == 1 and not items[0].ok and not items[0].warning, (k, items)
        assert f"events[1] (cust.bad): {k} names column" in items[0].detail and f"events[1].{k}" in items[0].fix
    items = PostgresAdmin(make_config(pg_db.dsn, tmp_path, ["public.cust"], [good])).check()
    assert not [i for i in items if i.name == "columns public.cust"]             # every named column exists
