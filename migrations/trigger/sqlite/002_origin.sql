-- Version 2: the session-origin marker. SQLite has no session variables, and a trigger in the main
-- schema cannot see a TEMP table, so the marker is a one-row table: a writer that wants its changes
-- marked inserts its origin in it at the start of its transaction and deletes it before COMMIT. SQLite
-- has one writer at a time, so no other session ever sees the row. The triggers are re-created from
-- table.v002.sql.
ALTER TABLE {{qcl}} ADD COLUMN origin TEXT
;
CREATE TABLE {{qorigin}} (origin TEXT NOT NULL)
