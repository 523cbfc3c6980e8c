-- A mapping failure is stored once per (position, type): the spool looks it up before inserting, for every
-- failure of every batch. Through dead_letters_target that lookup read every unmapped dead letter, so a
-- flood of unmappable changes made each batch slower than the last (quadratic). This index answers it.
CREATE INDEX IF NOT EXISTS dead_letters_unmapped ON dead_letters (position, type) WHERE target IS NULL;
