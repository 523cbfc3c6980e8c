-- Spool frames (agent/spool_frames.py): one row per source batch instead of one per event.
-- A frame's events take the consecutive spool numbers seq .. seq + n - 1; target cursors stay event
-- numbers, so a cursor can stand inside a frame. Columns read without the bodies come first: SQLite then
-- does not read a frame's body pages to answer them.
-- The rows of the old `events` table are packed into frames by agent/spool.py in the same transaction
-- (a state_dir from before keeps everything it spooled), then that table is dropped.
CREATE TABLE IF NOT EXISTS frames (
    seq            INTEGER PRIMARY KEY,   -- the spool number of its first event
    n              INTEGER NOT NULL,      -- how many events it holds
    min_position   TEXT NOT NULL,         -- lowest and highest position of its events: a change replayed
    max_position   TEXT NOT NULL,         --   after a crash is recognised by (position, type)
    min_ts         REAL NOT NULL,         -- commit times of its events (replay --since)
    max_ts         REAL NOT NULL,
    spooled_at     REAL NOT NULL,
    only_target    TEXT,                  -- snapshot --target: every event of the frame is for this target only
    head           BLOB NOT NULL,         -- per-event id, type, subject, position, commit time (compressed)
    body           BLOB NOT NULL          -- the CloudEvent bodies (compressed)
);
CREATE INDEX IF NOT EXISTS frames_max_position ON frames (max_position);
CREATE INDEX IF NOT EXISTS frames_for_one_target ON frames (seq) WHERE only_target IS NOT NULL;
