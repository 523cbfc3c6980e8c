-- cdc-agent trigger capture for SQLite, version 1: the changelog and the version table.
-- SQLite has one writer at a time, so changelog ids are taken in commit order; the reader still tracks
-- gaps like on the other engines. The id is the rowid (max + 1 on insert; cheaper than AUTOINCREMENT,
-- which rewrites sqlite_sequence on every insert): so that ids are never reused, the agent never deletes
-- the row with the highest id, it blanks it into a marker ('S') instead.
CREATE TABLE {{qversion}} (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
;
CREATE TABLE {{qcl}} (
    id      INTEGER PRIMARY KEY,
    tbl     TEXT NOT NULL,
    op      TEXT NOT NULL,
    before  TEXT,
    after   TEXT,
    created REAL NOT NULL
)
;
-- The start marker: the first id, the install time in microseconds, so that ids (and event positions)
-- never repeat after a teardown and a new setup. A reader that starts without a checkpoint knows from it
-- that every later id is a change.
INSERT INTO {{qcl}} (id, tbl, op, created) VALUES ({{seed}}, '', 'S', (julianday('now') - 2440587.5) * 86400.0)
