-- Version 3: row images that do not depend on the writing session's settings. The capture function runs
-- with its own TimeZone, DateStyle, IntervalStyle, extra_float_digits and bytea_output (a function's SET
-- clause holds only while it runs; the ERP's session keeps its own settings), so to_json() writes
-- timestamptz in UTC, dates and intervals in ISO forms and floats in their shortest exact form. Columns
-- that to_json() writes as objects (composites, hstore) are named in the trigger's arguments; their text
-- form goes to before_texts / after_texts, as the log source has it. Only columns the table still has are
-- read, so a dropped or renamed column never fails the ERP's write.
ALTER TABLE {{qcl}} ADD COLUMN before_texts json, ADD COLUMN after_texts json
;
CREATE OR REPLACE FUNCTION {{qfn}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD' SET "IntervalStyle" = 'iso_8601'
SET extra_float_digits = 1 SET bytea_output = 'hex'
AS $$
DECLARE
    cols text[];
    q text;
    old_texts json;
    new_texts json;
BEGIN
    IF TG_NARGS OPERATOR(pg_catalog.>) 0 THEN
        SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attnum) INTO cols
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) TG_RELID AND a.attnum OPERATOR(pg_catalog.>) 0
           AND NOT a.attisdropped AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) ANY (TG_ARGV);
        IF cols IS NOT NULL THEN
            SELECT 'SELECT pg_catalog.json_object($2, ARRAY[' OPERATOR(pg_catalog.||)
                   pg_catalog.string_agg('($1).' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c)
                       OPERATOR(pg_catalog.||) '::pg_catalog.text', ', ')
                   OPERATOR(pg_catalog.||) ']::pg_catalog.text[])'
              INTO q FROM pg_catalog.unnest(cols) AS c;
            IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
                EXECUTE q INTO old_texts USING OLD, cols;
            END IF;
            IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
                EXECUTE q INTO new_texts USING NEW, cols;
            END IF;
        END IF;
    END IF;
    INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, before_texts, after_texts)
    VALUES (pg_catalog.txid_current(),
            TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME,
            pg_catalog.left(TG_OP, 1),
            CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_json(OLD) END,
            CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_json(NEW) END,
            CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                 THEN pg_catalog.current_setting('cdc.origin', true) END,
            pg_catalog.clock_timestamp(), old_texts, new_texts);
    RETURN NULL;
END
$$
