-- The agent's own state (SQLite, in state_dir/spool.db). Applied by agent/spool.py in version order;
-- PRAGMA user_version holds the version applied last.

-- Key/value state: the source checkpoint (opaque, source-specific) and friends.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Events in source commit order. seq is the spool order every target cursor walks;
-- (position, type) identifies an event, so a change replayed after a crash is not spooled twice.
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after pruning empties the table
    id         TEXT NOT NULL,
    type       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    position   TEXT NOT NULL,
    commit_ts  REAL NOT NULL,
    spooled_at REAL NOT NULL,
    body       BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_identity ON events (position, type);

-- One cursor per target: every event with seq <= cursor has been delivered or dead-lettered.
CREATE TABLE IF NOT EXISTS targets (
    name          TEXT PRIMARY KEY,
    cursor        INTEGER NOT NULL DEFAULT 0,
    delivered     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);

-- What a target rejected for good (target = name), or what no rule could map (target NULL).
CREATE TABLE IF NOT EXISTS dead_letters (
    dl_id      INTEGER PRIMARY KEY,
    target     TEXT,
    event_id   TEXT,
    type       TEXT NOT NULL,
    position   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    body       BLOB,          -- the event as it was sent (delivery failures)
    change     BLOB,          -- the raw row change (mapping failures), mapped again on retry
    created_at REAL NOT NULL,
    retries    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_target ON dead_letters (target);
