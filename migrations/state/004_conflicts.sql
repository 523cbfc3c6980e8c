-- Two-way sync (issue 16): conflicts a sql target with `owns` detected (copied here from the target
-- database's cdc_agent_conflicts once the batch committed; a second copy is ignored by the key), and the
-- source changes of columns the source does not own that it passed over, counted per column.
CREATE TABLE IF NOT EXISTS conflicts (
    target      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    col         TEXT NOT NULL,
    tbl         TEXT NOT NULL,
    row_key     TEXT NOT NULL,
    overwritten TEXT,
    applied     TEXT,
    detected_at REAL NOT NULL,
    PRIMARY KEY (target, event_id, col)
);
CREATE INDEX IF NOT EXISTS conflicts_by_time ON conflicts (target, detected_at);
CREATE TABLE IF NOT EXISTS unowned_changes (
    target  TEXT NOT NULL,
    tbl     TEXT NOT NULL,
    col     TEXT NOT NULL,
    changes INTEGER NOT NULL,
    PRIMARY KEY (target, tbl, col)
);
