"""PostgreSQL trigger capture version 004 (statement-level triggers with transition tables, one changelog row
per statement of up to 1000 rows) against a real PostgreSQL 15: multi-row statements give the same changes as
the row triggers of version 003 on the same workload, an UPDATE's rows pair by primary key (also when keys
change), reads stay bounded and positions stable across re-reads, and an install at version 3 upgrades with
rows pending in the changelog. The pure unpacking and pairing are checked on their own at the end."""

from __future__ import annotations

import pytest

from agent.sources.trigger import TriggerAdmin, TriggerSource
from agent.sources.trigger import statements
from tests.test_trigger_source import PgBackend, drain, event_form, make_config, started

# autovacuum off: a DELETE's rows come in heap order, the same on both tables only while no vacuum runs on
# one of them between the statements (seen on a loaded machine)
TABLE = ("CREATE TABLE {t} (id int PRIMARY KEY, n numeric(12,2), f float8, ts timestamptz, b bytea, "
         "j jsonb, tags text[], p pt, note text) WITH (autovacuum_enabled = off)")

# one workload, run on a table captured per row (version 003) and on one captured per statement (004)
WORKLOAD = [
    "INSERT INTO {t} SELECT g, g / 7.0, g / 3.0, '2026-11-23 10:00:00+05:30'::timestamptz + g * interval '1 s', "
    "  decode(lpad(to_hex(g), 8, '0'), 'hex'), jsonb_build_object('g', g, 'big', 1e20), ARRAY['a', g::text], "
    "  ROW(g / 4.0, 'l ' || g)::pt, CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END "
    "FROM generate_series(1, 2500) g",                                     # 2500 rows: chunks of 1000
    "UPDATE {t} SET n = n + 1, note = 'bulk' WHERE id % 3 = 0",           # 833 rows, no key change
    "UPDATE {t} SET id = id + 100000, p = ROW(1, 'moved')::pt WHERE id <= 1200",   # keys change, 2 chunks
    "UPDATE {t} SET id = 7 WHERE id = 100001",                             # one row, key changes
    "UPDATE {t} SET note = 'none' WHERE id < 0",                           # no row (each op: the ERP's
    "INSERT INTO {t} SELECT * FROM {t} WHERE false",                       # statement must not fail)
    "DELETE FROM {t} WHERE id < 0",
    "DELETE FROM {t} WHERE id % 2 = 0",                                     # many
    "INSERT INTO {t} (id, note) VALUES (-1, 'one')",
    "DELETE FROM {t}",
]


def _changes(src: TriggerSource) -> list:
    return [(c.op, None if c.before is None else event_form(c.before), None if c.after is None else
             event_form(c.after)) for c in drain(src, max_changes=700)]


def _count(pg_db, cl: str) -> int:
    return pg_db.execute(f"SELECT count(*) FROM {cl}")[0][0]


def test_multi_row_statements_give_what_row_triggers_give(pg_db, tmp_path):
    be = PgBackend(pg_db, odbc=False)
    pg_db.execute("CREATE TYPE pt AS (x numeric, label text)")
    pg_db.execute(TABLE.format(t="by_row"))
    pg_db.execute(TABLE.format(t="by_stmt"))
    rows_cfg = make_config(tmp_path / "r", be, ["by_row"], changelog_table="cl_rows")
    stmt_cfg = make_config(tmp_path / "s", be, ["by_stmt"], changelog_table="cl_stmts")
    TriggerAdmin(rows_cfg).setup(upto=3)            # the row triggers of version 003
    TriggerAdmin(stmt_cfg).setup()
    assert 4 in {r[0] for r in pg_db.execute("SELECT version FROM cl_stmts_version")}
    kinds = dict(pg_db.execute("SELECT c.relname, string_agg(DISTINCT CASE WHEN t.tgtype & 1 = 1 THEN 'row' "
                               "ELSE 'statement' END, ',') FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                               "WHERE NOT t.tgisinternal GROUP BY c.relname"))
    assert kinds == {"by_row": "row", "by_stmt": "statement"}
    for stmt in WORKLOAD:
        be.write(stmt.format(t="by_row"))
        be.write(stmt.format(t="by_stmt"))
    n_changes = _count(pg_db, "cl_rows")
    assert n_changes == 2500 + 833 + 1200 + 1 + 1250 + 1 + 1251
    # 3 + 1 + 2 + 1 + 2 + 1 + 2 statement rows (chunks of at most 1000 rows); statements of no row write none
    assert _count(pg_db, "cl_stmts") == 12
    src = started(rows_cfg)
    try:
        by_row = _changes(src)
    finally:
        src.close()
    src = started(stmt_cfg)
    try:
        first = src.read(700, 1)           # bounded: whole statement rows, at most 700 + 999 changes
        assert 700 <= len(first.changes) < 1700 and first.checkpoint.startswith("o/")
    finally:
        src.close()                        # never confirmed: the next start reads the same again
    src = started(stmt_cfg)
    try:
        again = src.read(700, 1)
        assert [(c.position, c.after) for c in again.changes] == [(c.position, c.after) for c in first.changes]
        src.confirm(again.checkpoint)
        rest = drain(src, max_changes=700)
    finally:
        src.close()
    stmt_changes = [(c.op, None if c.before is None else event_form(c.before),
                     None if c.after is None else event_form(c.after)) for c in again.changes + rest]
    assert len(by_row) == n_changes
    assert stmt_changes == by_row                     # same changes, same values, same order
    positions = [c.position for c in again.changes + rest]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert len({len(p) for p in positions}) == 1
    moved = [c for c in rest + again.changes if c.op == "update" and c.before["id"] != c.after["id"]]
    assert len(moved) == 1201 and all(c.after["id"] in (c.before["id"] + 100000, 7) for c in moved)
    assert _count(pg_db, "cl_stmts") == 0


def test_update_renumbering_keys_is_paired_by_key(pg_db, tmp_path):
    """`SET id = id + 1` over 1..5: keys 2..5 exist before and after; each pairs with itself (its row before
    and after the statement), and the one key that went (1) pairs with the one that came (6)."""
    be = PgBackend(pg_db, odbc=False)
    # DEFERRABLE: the key is checked at the end of the statement (else `id = id + 1` collides on the way)
    be.write("CREATE TABLE items (id int PRIMARY KEY DEFERRABLE, v text)",
             "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 5) g")
    cfg = make_config(tmp_path, be, ["items"])
    TriggerAdmin(cfg).setup()
    be.write("UPDATE items SET id = id + 1")
    be.write("UPDATE items SET id = 3 - id + 5, v = v || '!' WHERE id IN (2, 6)")     # a swap: 2 <-> 6
    src = started(cfg)
    try:
        got = drain(src)
    finally:
        src.close()
    pairs = [(c.before["id"], c.before["v"], c.after["id"], c.after["v"]) for c in got]
    assert pairs[:5] == [(1, "v1", 6, "v5"), (2, "v2", 2, "v1"), (3, "v3", 3, "v2"), (4, "v4", 4, "v3"),
                         (5, "v5", 5, "v4")]
    assert sorted(pairs[5:]) == [(2, "v1", 2, "v5!"), (6, "v5", 6, "v1!")]
    assert all(c.op == "update" for c in got)


def test_upgrade_from_version_3_with_rows_pending(pg_db, tmp_path):
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"])
    admin = TriggerAdmin(cfg)
    admin.setup(upto=3)
    be.write("INSERT INTO items SELECT g, g FROM generate_series(1, 30) g")
    be.write("UPDATE items SET v = -v WHERE id <= 10", origin="cdc-agent/t")      # the agent's own: skipped
    src = started(cfg)
    try:
        early = src.read(12, 1)               # an agent at version 3 read part, and stopped
        src.confirm(early.checkpoint)
    finally:
        src.close()
    assert [c.after["id"] for c in early.changes] == list(range(1, 13))
    lines = admin.setup()                     # the newer agent upgrades (what `run` does at start)
    assert any("version 004" in ln for ln in lines) and any("triggers on public.items" in ln for ln in lines)
    assert pg_db.execute("SELECT count(*) FROM cdc_changelog WHERE nrows IS NULL")[0][0] == 18 + 10
    trig = sorted(r[0] for r in pg_db.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
    assert trig == ["cdc_changelog_capture_d", "cdc_changelog_capture_i", "cdc_changelog_capture_u"]
    assert admin.setup()[0].startswith("trigger capture is up to date (version")
    assert all(i.ok or i.warning for i in admin.check())
    be.write("INSERT INTO items SELECT g, g FROM generate_series(31, 40) g")
    be.write("UPDATE items SET v = 0 WHERE id > 35", origin="cdc-agent/t")
    be.write("DELETE FROM items WHERE id > 38", origin="crm-sync")
    src = started(cfg, early.checkpoint)
    try:
        rest = drain(src)
        assert src.skipped_own == 10 + 5                   # counted per row, also in a statement row
    finally:
        src.close()
    assert [(c.op, (c.after or c.before)["id"]) for c in rest] == (
        [("insert", i) for i in range(13, 41)] + [("delete", 39), ("delete", 40)])
    positions = [c.position for c in early.changes + rest]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert pg_db.execute("SELECT count(*) FROM cdc_changelog")[0][0] == 0


# ---------------------------------------------------------------- the pure part


def test_split_array_keeps_exact_texts():
    imgs = statements.split_array('[{"id":1,"n":12.50,"j":{"a":[1,"]"]}}, \n {"id":2,"n":1e400}]')
    assert [i.text for i in imgs] == ['{"id":1,"n":12.50,"j":{"a":[1,"]"]}}', '{"id":2,"n":1e400}']
    assert imgs[0]["n"] == "12.50" and imgs[0].spans["j"] == '{"a":[1,"]"]}'
    assert statements.split_array("[]") == [] and statements.split_array(None) == []
    # a text that does not parse as a whole: element by element, nothing lost
    bad = statements.split_array('[{"id":1,"y":0000}, {"id":2}]')
    assert [b["id"] for b in bad] == [1, 2]


@pytest.mark.parametrize("olds,news,want", [
    ([1, 2, 3], [1, 2, 3], [(0, 0), (1, 1), (2, 2)]),              # no key changed
    ([1, 2, 3], [3, 1, 2], [(0, 1), (1, 2), (2, 0)]),              # another order
    ([1, 2, 3], [2, 3, 4], [(0, 2), (1, 0), (2, 1)]),              # renumbered: 1 went, 4 came
    ([1, 2], [10, 20], [(0, 0), (1, 1)]),                          # all keys changed: in order
    ([1, 2], [1], [(0, 0), (1, None)]),                            # a side shorter: never lost
])
def test_pair_update_by_key(olds, news, want):
    o = [{"id": k, "v": "o"} for k in olds]
    n = [{"id": k, "v": "n"} for k in news]
    assert statements.pair_update(o, n, ("id",)) == want
    assert statements.pair_update(o, n, ()) == [(i, i) if i < len(n) else (i, None) for i in range(len(o))]


def test_unpack_gives_ops_and_text_forms():
    got = statements.unpack("U", '[{"id":1}, {"id":2}]', '[{"id":2}]', None, '[{"p":"(1,x)"}]', ("id",))
    assert [(op, b, a, t) for op, b, a, t in got] == [("D", {"id": 1}, None, (None, None)),
                                                     ("U", {"id": 2}, {"id": 2}, (None, '{"p":"(1,x)"}'))]


PLAIN = ("CREATE TABLE {t} (id int PRIMARY KEY, n numeric, s varchar(20), c char(3), ok bool, u uuid, j json, "
         "jb jsonb, d date, ts timestamp, tz timestamptz, tzs timestamptz[], ds date[], ids int8[])")
PLAIN_ROW = ("INSERT INTO {t} SELECT g, g / 3.0, 's' || g, 'ab', g % 2 = 0, md5(g::text)::uuid, "
             "'{{\"a\": 1.50, \"b\": [1e5]}}', '{{\"x\": 12345678901234567890}}', date '0044-03-15 BC' + g, "
             "timestamp '2026-11-23 10:00:00.5' + g * interval '1 h', "
             "timestamptz '1850-01-01 00:00:00+00' + g * interval '1 day', "
             "ARRAY[timestamptz '2026-11-23 10:15:02.123456+05:30', 'infinity'], ARRAY[date '2026-02-28'], "
             "ARRAY[g, -g] FROM generate_series(1, 40) g")
ODD_SESSION = ["SET TimeZone = 'Asia/Kathmandu'", "SET DateStyle = 'SQL, DMY'", "SET extra_float_digits = -10",
               "SET IntervalStyle = 'postgres_verbose'", "SET bytea_output = 'escape'"]


def test_tables_of_settings_free_types_use_the_function_without_set(pg_db, tmp_path):
    """The function without the SET clause gives the same values as version 003's (with it), also for a
    writer with odd settings; a column whose JSON form needs the settings moves the table to the other."""
    be = PgBackend(pg_db, odbc=False)
    pg_db.execute(PLAIN.format(t="by_row"))
    pg_db.execute(PLAIN.format(t="plain"))
    rows_cfg = make_config(tmp_path / "r", be, ["by_row"], changelog_table="cl_rows")
    cfg = make_config(tmp_path / "s", be, ["plain"], changelog_table="cl_stmts")
    TriggerAdmin(rows_cfg).setup(upto=3)
    admin = TriggerAdmin(cfg)
    admin.setup()
    fns = {r[0] for r in pg_db.execute("SELECT DISTINCT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = "
                                       "t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relname = 'plain'")}
    assert fns == {"cl_stmts_capture_plain"}
    for t in ("by_row", "plain"):
        be.write(*ODD_SESSION, PLAIN_ROW.format(t=t))
        be.write(*ODD_SESSION, f"UPDATE {t} SET tz = tz + interval '30 min', d = d + 1 WHERE id > 30")
    src = started(rows_cfg)
    try:
        want = _changes(src)
    finally:
        src.close()
    src = started(cfg)
    try:
        got = _changes(src)
    finally:
        src.close()
    assert len(got) == 50 and got == want
    assert got[0][2]["tz"] == "1850-01-02T00:00:00.000000Z" and got[0][2]["d"] == "-0043-03-16"
    # a float column: to_json would follow the writer's extra_float_digits; the table moves to the function
    # with the SET clause (check first says the triggers are out of date)
    pg_db.execute("ALTER TABLE plain ADD COLUMN f float8")
    assert any(i.name == "triggers public.plain" and not i.ok for i in admin.check())
    admin.setup()
    fns = {r[0] for r in pg_db.execute("SELECT DISTINCT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = "
                                       "t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relname = 'plain'")}
    assert fns == {"cl_stmts_capture"}
    be.write(*ODD_SESSION, "UPDATE plain SET f = 0.1 WHERE id = 1")
    src = started(cfg)
    try:
        [ch] = drain(src)
    finally:
        src.close()
    assert ch.after["f"] == 0.1


def _trigger_kinds(pg_db, table: str) -> set[tuple[str, str, str]]:
    return set(pg_db.execute(
        "SELECT t.tgname::text, CASE WHEN t.tgtype & 1 = 1 THEN 'row' ELSE 'statement' END, p.proname::text "
        "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid "
        f"WHERE NOT t.tgisinternal AND c.relname = '{table}'"))


def test_trigger_level_row_and_switching_levels(pg_db, tmp_path):
    """trigger_level = "row": version 004 with one row trigger per table (the cheaper kind for one-row
    statements), calling the function without SET where the types allow; switching the level re-creates the
    triggers in one transaction and nothing is captured twice or lost."""
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)",
             "CREATE TABLE floats (id int PRIMARY KEY, f float8)")
    row_cfg = make_config(tmp_path, be, ["items", "floats"], trigger_level="row")
    stmt_cfg = make_config(tmp_path, be, ["items", "floats"])
    TriggerAdmin(row_cfg).setup()
    assert _trigger_kinds(pg_db, "items") == {("cdc_changelog_capture", "row", "cdc_changelog_capture_plain")}
    assert _trigger_kinds(pg_db, "floats") == {("cdc_changelog_capture", "row", "cdc_changelog_capture")}
    assert TriggerAdmin(row_cfg).setup()[0].startswith("trigger capture is up to date")
    be.write("INSERT INTO items SELECT g, g FROM generate_series(1, 3) g", *ODD_SESSION,
             "INSERT INTO floats VALUES (1, 0.1)")
    assert pg_db.execute("SELECT count(*) FROM cdc_changelog WHERE nrows IS NULL")[0][0] == 4      # row form
    lines = TriggerAdmin(stmt_cfg).setup()
    assert any("triggers on public.items" in ln for ln in lines)
    kinds = _trigger_kinds(pg_db, "items")
    assert {k for _, k, _ in kinds} == {"statement"} and len(kinds) == 3
    be.write("UPDATE items SET v = v + 10")
    TriggerAdmin(row_cfg).setup()
    assert {k for _, k, _ in _trigger_kinds(pg_db, "items")} == {"row"}
    be.write("DELETE FROM items WHERE id = 2")
    src = started(row_cfg)
    try:
        got = drain(src)
    finally:
        src.close()
    assert [(c.op, (c.after or c.before)["id"], (c.after or c.before).get("v", (c.after or c.before).get("f")))
            for c in got] == [("insert", 1, 1), ("insert", 2, 2), ("insert", 3, 3), ("insert", 1, 0.1),
                              ("update", 1, 11), ("update", 2, 12), ("update", 3, 13), ("delete", 2, 12)]


def test_trigger_level_is_checked_when_the_config_is_read(tmp_path):
    from agent import config
    from agent.errors import ConfigError
    doc = {"agent": {"name": "t", "state_dir": str(tmp_path / "state")},
           "source": {"kind": "trigger", "dsn": f"sqlite:///{tmp_path / 'x.db'}", "tables": ["main.t"],
                      "trigger_level": "per-row"},
           "targets": [{"name": "f", "kind": "file", "path": str(tmp_path / "out.jsonl")}]}
    with pytest.raises(ConfigError, match="trigger_level.*statement.*row"):
        config.parse(doc, file=str(tmp_path / "agent.toml"), base=tmp_path)
    doc["source"]["trigger_level"] = "row"
    assert config.parse(doc, file=str(tmp_path / "agent.toml"), base=tmp_path).source.trigger_level == "row"
