"""PostgreSQL trigger capture version 006 (the capture functions' one-row fast paths, migration
006_lean_capture.sql) against a real PostgreSQL 15: the changelog rows are exactly those version 005 writes
for the same statements (one-row, multi-row and empty statements, key changes, the origin marker, a writer
with odd settings; the function without the SET clause, the one with it, with and without text-form columns;
statement and row triggers), one-row statements on a table whose columns are named like the fast path's
aliases still give whole rows, and an install at version 005 upgrades with rows pending."""

from __future__ import annotations

import pytest

from agent.sources.trigger import TriggerAdmin
from agent.sources.trigger import install as trg_install
from tests.test_trigger_source import PgBackend, drain, make_config, started
from tests.test_trigger_statements import ODD_SESSION

TABLES = {
    # settings-free types: the function without the SET clause
    "plain": "CREATE TABLE {t} (id int PRIMARY KEY, n numeric(12,2), s text, ts timestamptz, j jsonb, ids int[])",
    # a float and an interval: the function with the SET clause, no text-form column
    "floaty": "CREATE TABLE {t} (id int PRIMARY KEY, f float8, fr real, iv interval, b bytea)",
    # a composite: the function with the SET clause and a text-form column (version 4's path)
    "texty": "CREATE TABLE {t} (id int PRIMARY KEY, p lean_pt, note text)",
}
ROW = {
    "plain": "{id}, {id} / 7.0, 's' || {id}, timestamptz '2026-11-23 10:00:00+05:30' + {id} * interval '1 s', "
             "jsonb_build_object('g', {id}), ARRAY[{id}, -{id}]",
    "floaty": "{id}, {id} / 3.0, {id} / 9.0, {id} * interval '90 min', decode(lpad(to_hex({id}), 4, '0'), 'hex')",
    "texty": "{id}, ROW({id} / 4.0, 'l ' || {id})::lean_pt, 'n' || {id}",
}
SET = {"plain": "s = s || '!', n = n + 1", "floaty": "f = f * 2, iv = iv + interval '1 s'",
       "texty": "note = note || '!', p = ROW(1, 'moved')::lean_pt"}

# (statements, origin): each element is one transaction
WORKLOAD = [
    (["INSERT INTO {t} VALUES ({row1})"], None),                                   # one row each
    (["UPDATE {t} SET {set} WHERE id = 1"], None),
    (["INSERT INTO {t} SELECT {rows} FROM generate_series(2, 6) g"], None),        # several rows
    (["UPDATE {t} SET {set} WHERE id BETWEEN 2 AND 4", "UPDATE {t} SET id = 100 WHERE id = 5"], None),
    (["UPDATE {t} SET {set} WHERE id < 0", "DELETE FROM {t} WHERE id < 0",        # no row
      "INSERT INTO {t} SELECT * FROM {t} WHERE false"], None),
    ([*ODD_SESSION, "UPDATE {t} SET {set} WHERE id = 2", "INSERT INTO {t} VALUES ({row7})"], None),
    (["DELETE FROM {t} WHERE id = 3", "UPDATE {t} SET {set} WHERE id = 4"], "crm-sync"),   # origin marker
    (["DELETE FROM {t} WHERE id = 100"], "cdc-agent/t"),
    (["DELETE FROM {t}"], None),
]

STORED = ("SELECT tbl, op, before::text, after::text, origin, nrows, before_texts::text, after_texts::text "
          "FROM {cl} ORDER BY id")


def _run_workload(be: PgBackend, kind: str, table: str) -> None:
    for stmts, origin in WORKLOAD:
        be.write(*(s.format(t=table, set=SET[kind], row1=ROW[kind].format(id=1), row7=ROW[kind].format(id=7),
                            rows=ROW[kind].format(id="g")) for s in stmts), origin=origin)


def _stored(pg_db, cl: str, table: str) -> list[tuple]:
    return [(r[0].replace(table, "T"), *r[1:]) for r in pg_db.execute(STORED.format(cl=cl))]


@pytest.mark.parametrize("level", ["statement", "row"])
def test_version_6_writes_what_version_5_wrote(pg_db, tmp_path, level):
    be = PgBackend(pg_db, odbc=False)
    pg_db.execute("CREATE TYPE lean_pt AS (x numeric, label text)")
    for kind, ddl in TABLES.items():
        pg_db.execute(ddl.format(t=f"{kind}_v5"))
        pg_db.execute(ddl.format(t=f"{kind}_v6"))
    cfg5 = make_config(tmp_path / "5", be, [f"{k}_v5" for k in TABLES], changelog_table="cl_v5",
                       trigger_level=level)
    cfg6 = make_config(tmp_path / "6", be, [f"{k}_v6" for k in TABLES], changelog_table="cl_v6",
                       trigger_level=level)
    TriggerAdmin(cfg5).setup(upto=5)
    TriggerAdmin(cfg6).setup()
    assert trg_install.newest_version("postgresql") >= 6
    assert {r[0] for r in pg_db.execute("SELECT version FROM cl_v6_version")} >= {5, 6}
    assert max(r[0] for r in pg_db.execute("SELECT version FROM cl_v5_version")) == 5
    for kind in TABLES:
        _run_workload(be, kind, f"{kind}_v5")
        _run_workload(be, kind, f"{kind}_v6")
    for kind in TABLES:
        want = [r for r in _stored(pg_db, "cl_v5", f"public.{kind}_v5") if r[0] == "T"]
        got = [r for r in _stored(pg_db, "cl_v6", f"public.{kind}_v6") if r[0] == "T"]
        assert len(want) >= 10 and got == want, kind
    # the events too (the reader is the same; this proves the rows read back alike)
    events = []
    for cfg in (cfg5, cfg6):
        src = started(cfg)
        try:
            events.append([(c.op, c.table.split("_v")[0], c.before, c.after, c.position.count(":"))
                           for c in drain(src)])
        finally:
            src.close()
    assert events[0] == events[1] and len(events[0]) > 30


CLASH = [
    "INSERT INTO {t} VALUES (1, 10, 'a', 1, 2, 3, 4, 5, 6, ROW(1, 'p')::lean_pt)",           # one row
    "UPDATE {t} SET o = 11, n = 'b' WHERE id = 1",
    "INSERT INTO {t} SELECT g, g, 'm', g, g, g, g, g, g, ROW(g, 'q')::lean_pt FROM generate_series(2, 1205) g",
    "UPDATE {t} SET r = -r WHERE id <= 4",                                                  # several rows
    "DELETE FROM {t} WHERE id > 1",                                                        # chunks of 1000
    "DELETE FROM {t} WHERE id = 1",
]


@pytest.mark.parametrize("composite", [False, True])
def test_columns_named_like_the_functions_aliases(pg_db, tmp_path, composite):
    """Columns named like the capture functions' aliases (o, n, r, tr, s, x, g, t): statement triggers give
    the whole rows, as row triggers do, for one row, several rows and chunks of 1000, with and without a
    text-form column. (Version 4 wrote the values of a column named r instead of the rows.)"""
    be = PgBackend(pg_db, odbc=False)
    pg_db.execute("CREATE TYPE lean_pt AS (x numeric, label text)")
    for t in ("clash_stmt", "clash_row"):
        pg_db.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, o int, n text, r int, tr int, s int, x int, g int, "
                      f"t int, {'p lean_pt' if composite else 'p text'})")
    stmt_cfg = make_config(tmp_path / "s", be, ["clash_stmt"], changelog_table="cl_s")
    row_cfg = make_config(tmp_path / "r", be, ["clash_row"], changelog_table="cl_r", trigger_level="row")
    TriggerAdmin(stmt_cfg).setup()
    TriggerAdmin(row_cfg).setup()
    for stmt in CLASH:
        for t in ("clash_stmt", "clash_row"):
            be.write(stmt.format(t=t) if composite else stmt.format(t=t).replace("::lean_pt", "::text"))
    got = []
    for cfg in (stmt_cfg, row_cfg):
        src = started(cfg)
        try:
            got.append([(c.op, c.before, c.after) for c in drain(src)])
        finally:
            src.close()
    assert got[0] == got[1] and len(got[0]) == 1 + 1 + 1204 + 4 + 1204 + 1
    assert got[0][0] == ("insert", None, {"id": 1, "o": 10, "n": "a", "r": 1, "tr": 2, "s": 3, "x": 4, "g": 5,
                                          "t": 6, "p": "(1,p)"})


def test_upgrade_from_version_5_with_rows_pending(pg_db, tmp_path):
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"])
    admin = TriggerAdmin(cfg)
    admin.setup(upto=5)
    be.write("INSERT INTO items VALUES (1, 1)", "INSERT INTO items SELECT g, g FROM generate_series(2, 5) g")
    src = started(cfg)
    try:
        early = src.read(1, 1)
        src.confirm(early.checkpoint)
    finally:
        src.close()
    lines = admin.setup()
    assert any("version 006" in ln for ln in lines)
    assert admin.setup()[0].startswith("trigger capture is up to date (version 006")
    assert all(i.ok or i.warning for i in admin.check())
    be.write("UPDATE items SET v = -v WHERE id = 2", "DELETE FROM items WHERE id > 3")
    src = started(cfg, early.checkpoint)
    try:
        rest = drain(src)
    finally:
        src.close()
    assert [(c.op, (c.after or c.before)["id"]) for c in early.changes + rest] == (
        [("insert", i) for i in range(1, 6)] + [("update", 2), ("delete", 4), ("delete", 5)])
    positions = [c.position for c in early.changes + rest]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    admin.teardown()
    left = pg_db.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'cdc_changelog%'")[0][0]
    assert left == 0 and not pg_db.execute("SELECT 1 FROM pg_class WHERE relname LIKE 'cdc_changelog%'")
