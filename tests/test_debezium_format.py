"""`format = "debezium"` compared with real Debezium 3.6 (embedded, tests/dbzembed.py) reading the same
throwaway database: the same changes over the contract's types, field by field. Equal, except the fields in
ALLOWED_DIFFERENCES, each explained in docs/debezium.md."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent import config
from agent.column_types import ColumnTypes
from agent.debezium import VERSION
from agent.errors import TargetUnavailable
from tests.agentproc import AgentProcess, read_events, wait_for
from tests.dbzembed import capture, needs_debezium
from tests.test_pg_pipeline import cli


# source fields that differ on purpose (docs/debezium.md, "Differences"); every other field must be equal
ALLOWED_DIFFERENCES = {
    "postgres": {"version", "lsn", "sequence"},
    "mysql": {"version", "pos"},
}

PG_COLUMNS = ("si smallint, i integer, bi bigint, num numeric(10,2), numfree numeric, r real, d double precision, "
              "b boolean, t text, vc varchar(20), ch char(3), dt date, tm time, tm3 time(3), tmtz timetz, "
              "ts timestamp, ts3 timestamp(3), tstz timestamptz, iv interval, ba bytea, j json, jb jsonb, "
              "u uuid, ia int[], ta text[], da date[]")
PG_ROWS = [
    "(1, 7, -2147483648, 9007199254740993, 12.50, 3.14159, 1.5, 0.1, true, 'é', 'v', 'ab', '2026-11-23', "
    "'10:15:02.123456', '10:15:02.5', '10:15:02+02', '2026-11-23 10:15:02.123456', '2026-11-23 10:15:02.123', "
    "'2026-11-23 10:15:02.123456+01', '1 day 2 hours 3 minutes 4.5 seconds', '\\x00ff', '{\"a\": 1.50}', "
    "'{\"b\": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2}', '{\"x\",\"y z\"}', '{2026-01-02,1969-12-31}')",
    "(2, -1, 0, -1, -0.01, 1e-20, -0.25, 1e300, false, '', 'a\"b', 'xyz', '1969-12-31', '00:00:00', '23:59:59.999', "
    "'00:00:00.5-05:30', '1960-01-01 00:00:00.5', '2000-02-29 23:59:59', '2026-01-01 00:00:00+00', "
    "'-1 year 2 mons 3 days -00:00:01.25', '\\x', '[1, {\"a\": null}]', '{\"k\": \"v\", \"a\": 1}', "
    "'00000000-0000-0000-0000-000000000000', '{1,NULL}', '{}', '{NULL}')",
    "(3" + ", NULL" * 26 + ")",
]


def compare(kind: str, ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    allowed = ALLOWED_DIFFERENCES[kind]
    for a, d in zip(ours, theirs):
        assert list(a) == list(d), "the envelope's fields, in Debezium's order"
        assert a["op"] == d["op"] and a["transaction"] == d["transaction"]
        assert a["before"] == d["before"], (a["op"], a["before"], d["before"])
        assert a["after"] == d["after"], (a["op"], a["after"], d["after"])
        assert list(a["source"]) == list(d["source"]), "the source block's fields, in Debezium's order"
        for k in a["source"]:
            if k not in allowed:
                assert a["source"][k] == d["source"][k], (k, a["source"][k], d["source"][k])
        assert a["source"]["version"] == VERSION
        if os.environ.get("CDC_SHOW_DIFF"):
            print(a["op"], {k: (a["source"][k], d["source"][k]) for k in allowed})
        for k in ("ts_ms", "ts_us", "ts_ns"):                  # processing time: when each of us rendered it
            assert type(a[k]) is int and abs(a[k] / {"ts_ms": 1e3, "ts_us": 1e6, "ts_ns": 1e9}[k] - time.time()) < 600


def agent_config(tmp_path: Path, kind: str, dsn: str, table: str, extra: str = "") -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "erp"
state_dir = "state"

[source]
kind = "{kind}"
dsn = "{dsn}"
tables = ["{table}"]
snapshot = "never"          # these tests count the events of their own writes
{extra}

[[targets]]
name = "dbz"
kind = "file"
path = "out/events.jsonl"
format = "debezium"

[health]
listen = "off"
""")
    return cfg


def agent_output(cfg: Path, tmp_path: Path, n: int) -> list[dict]:
    out = tmp_path / "out" / "events.jsonl"
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_for(lambda: len(read_events(out)) >= n, 60, what=f"{n} events from the agent\n{agent.log()[-3000:]}")
    return read_events(out, final=True)


@needs_debezium
def test_postgres_envelope_equals_debezium(pg_db, tmp_path):
    pg_db.execute(f"CREATE TABLE vals (id int PRIMARY KEY, {PG_COLUMNS}); ALTER TABLE vals REPLICA IDENTITY FULL")
    cfg = agent_config(tmp_path, "postgres", pg_db.dsn, "public.vals")
    assert cli("setup", "-c", str(cfg)).returncode == 0
    pg_db.execute("SELECT pg_create_logical_replication_slot('dbz', 'pgoutput')")
    for row in PG_ROWS:
        pg_db.execute(f"INSERT INTO vals VALUES {row}")
    pg_db.execute("UPDATE vals SET num = 13.75, t = 'x', tstz = '2026-11-23 23:30:00.5-01', iv = '2 mons' "
                  "WHERE id = 1")
    pg_db.execute("DELETE FROM vals WHERE id = 2")
    ours = agent_output(cfg, tmp_path, 5)
    theirs = capture({
        "name": "cmp", "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(tmp_path / "dbz-offsets.dat"), "offset.flush.interval.ms": "0",
        "database.hostname": "127.0.0.1", "database.port": pg_db.cluster.port, "database.user": "postgres",
        "database.password": "unused", "database.dbname": pg_db.name, "topic.prefix": "erp",
        "plugin.name": "pgoutput", "slot.name": "dbz", "publication.name": "cdc_erp",
        "publication.autocreate.mode": "disabled", "table.include.list": "public.vals", "snapshot.mode": "no_data",
    }, want=5)
    compare("postgres", ours, theirs)
    # the agent's lsn is the transaction's commit LSN: past the change's own, in the same order
    for a, d in zip(ours, theirs):
        assert a["source"]["lsn"] >= d["source"]["lsn"]


MY_COLUMNS = ("ti tinyint, si smallint, mi mediumint, i int, bi bigint, ubi bigint unsigned, num decimal(10,2), "
              "f float, d double, b tinyint(1), b1 bit(1), bt bit(16), t text, vc varchar(20), ch char(3), dt date, "
              "tm time(6), tm0 time, dtm datetime, dtm3 datetime(3), dtm6 datetime(6), tsp timestamp(6) NULL, "
              "tsp0 timestamp NULL, yr year, ba blob, vb varbinary(8), j json, e enum('a','b'), st set('x','y')")
MY_ROWS = [
    "(1, -5, 7, 8, -2147483648, 9007199254740993, 18446744073709551615, 12.50, 1.5, 0.1, 1, b'1', b'0000000100000010', "
    "'é', 'v', 'ab', '2026-11-23', '10:15:02.123456', '-838:59:59', '2026-11-23 10:15:02', '2026-11-23 10:15:02.5', "
    "'2026-11-23 10:15:02.123456', '2026-11-23 10:15:02.123456', '2026-11-23 10:15:02', 2026, x'00ff', x'0102', "
    "'{\"a\": 1.50}', 'b', 'x,y')",
    "(2, 0, -1, 0, 0, -1, 0, -0.01, -0.25, 1e300, 0, b'0', b'0', '', 'a\"b', 'xyz', '1969-12-31', '00:00:00', "
    "'25:00:00', '1960-01-01 00:00:00', '1960-01-01 00:00:00.001', '2000-02-29 23:59:59.000001', "
    "'1970-01-01 00:00:01.5', '2038-01-19 03:14:07', 1901, x'', x'', '[1, {\"a\": null}]', 'a', '')",
    "(3" + ", NULL" * 29 + ")",
]


def binlog_dumps(server) -> int:
    return sum(1 for r in server.execute("SHOW PROCESSLIST") if r[4] == "Binlog Dump")


@needs_debezium
def test_mariadb_envelope_equals_debezium(make_mariadb_server, tmp_path):
    # Debezium's MySQL connector talks MySQL 8.4 to a server reporting a newer version (NOTES.md)
    server = make_mariadb_server(version="5.7.19-MariaDB-10.11.19")
    server.execute("CREATE DATABASE erp")
    server.execute(f"CREATE TABLE erp.vals (id int PRIMARY KEY, {MY_COLUMNS})")
    cfg = agent_config(tmp_path, "mysql", server.url("erp"), "erp.vals", "server_id = 4242")
    out = tmp_path / "out" / "events.jsonl"

    def changes():
        wait_for(lambda: binlog_dumps(server) >= 2, 60, what="the agent and Debezium reading the binlog")
        for row in MY_ROWS:
            server.execute(f"INSERT INTO erp.vals VALUES {row}")
        server.execute("UPDATE erp.vals SET num = 13.75, t = 'x', tsp = '2026-11-23 23:30:00.5' WHERE id = 1")
        server.execute("DELETE FROM erp.vals WHERE id = 2")

    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        theirs = capture({
            "name": "cmp", "connector.class": "io.debezium.connector.mysql.MySqlConnector",
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(tmp_path / "dbz-offsets.dat"), "offset.flush.interval.ms": "0",
            "database.hostname": "127.0.0.1", "database.port": server.port, "database.user": "root",
            "database.password": "", "database.server.id": "5401", "topic.prefix": "erp",
            "database.include.list": "erp", "table.include.list": "erp.vals", "include.schema.changes": "false",
            "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
            "schema.history.internal.file.filename": str(tmp_path / "dbz-history.dat"), "snapshot.mode": "no_data",
        }, want=5, during=changes)
        wait_for(lambda: len(read_events(out)) >= 5, 60, what=f"5 events from the agent\n{agent.log()[-3000:]}")
    ours = read_events(out, final=True)
    compare("mysql", ours, theirs)
    for a, d in zip(ours, theirs):
        # the agent's pos is where the change's transaction starts in the binlog, Debezium's where its row
        # event does: the same file, in the same order, never past it
        assert a["source"]["pos"] <= d["source"]["pos"]


def test_column_types_are_read_once_and_kept_and_without_them_delivery_waits(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, d date, ts timestamp(3), z timestamptz)")

    def cfg_for(dsn: str):
        return config.parse({"agent": {"name": "a", "state_dir": str(tmp_path / "state")},
                             "source": {"kind": "postgres", "dsn": dsn, "tables": ["public.t"]},
                             "targets": [{"name": "f", "kind": "file", "path": "x.jsonl", "format": "debezium"}]})
    down = "postgresql://postgres@127.0.0.1:1/x?connect_timeout=2"
    (tmp_path / "state").mkdir()
    with pytest.raises(TargetUnavailable, match="column types of public.t"):
        ColumnTypes(cfg_for(down)).table("public.t", {"id", "d"})          # never another shape than Debezium's
    types = ColumnTypes(cfg_for(pg_db.dsn)).table("public.t", {"id", "d"})
    assert types == {"id": "", "d": "date", "ts": "ts_ms", "z": "zoned_ts:6"}
    # kept in the state_dir: a restart renders without the database
    assert ColumnTypes(cfg_for(down)).table("public.t", {"id", "d"}) == types
