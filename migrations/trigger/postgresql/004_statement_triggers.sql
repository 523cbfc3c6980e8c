-- Version 4: statement-level capture. Each captured table gets three AFTER ... FOR EACH STATEMENT triggers
-- (INSERT, UPDATE, DELETE: a trigger with transition tables serves one event) that see the statement's
-- rows as transition tables (REFERENCING OLD TABLE / NEW TABLE). One changelog row per statement holds its
-- rows as JSON arrays (`before`: the old rows, `after`: the new rows, `nrows`: how many); the reader
-- unpacks them into one change per row and pairs an UPDATE's old and new rows by primary key
-- (agent/sources/trigger/statements.py). A statement of more than 1000 rows writes one changelog row per
-- 1000 rows, so no json value grows without bound (a value over 1 GB would fail the ERP's statement).
-- Rows written in the row form of versions 1 to 3 (nrows NULL) are read as before; the function still
-- takes a row-level call, the same as version 3, so an old row trigger that is still attached keeps working.
-- The function's settings, SECURITY DEFINER, the origin marker and the text forms are those of version 3.
ALTER TABLE {{qcl}} ADD COLUMN nrows integer
;
CREATE OR REPLACE FUNCTION {{qfn}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD' SET "IntervalStyle" = 'iso_8601'
SET extra_float_digits = 1 SET bytea_output = 'hex'
AS $$
DECLARE
    cols text[];
    q text;
    texpr text;
    old_texts json;
    new_texts json;
    done bigint;
    big boolean := false;
    tname text := TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME;
    marker text := pg_catalog.current_setting('cdc.origin', true);
BEGIN
    IF marker OPERATOR(pg_catalog.=) '' THEN
        marker := NULL;
    END IF;
    IF TG_NARGS OPERATOR(pg_catalog.>) 0 THEN
        SELECT pg_catalog.array_agg(x.attname::pg_catalog.text ORDER BY x.attnum) INTO cols
          FROM pg_catalog.pg_attribute x
         WHERE x.attrelid OPERATOR(pg_catalog.=) TG_RELID AND x.attnum OPERATOR(pg_catalog.>) 0
           AND NOT x.attisdropped AND x.attname::pg_catalog.text OPERATOR(pg_catalog.=) ANY (TG_ARGV);
    END IF;
    IF TG_LEVEL OPERATOR(pg_catalog.=) 'ROW' THEN
        -- a row trigger of version 3: the row form
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
        INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, before_texts, after_texts)
        VALUES (pg_catalog.txid_current(), tname, pg_catalog.left(TG_OP, 1),
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_json(OLD) END,
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_json(NEW) END,
                marker, pg_catalog.clock_timestamp(), old_texts, new_texts);
        RETURN NULL;
    END IF;
    -- statement level. The text forms of some columns (composites, hstore: see version 3), when named
    IF cols IS NOT NULL THEN
        SELECT 'pg_catalog.json_agg(pg_catalog.json_object($1, ARRAY[' OPERATOR(pg_catalog.||)
               pg_catalog.string_agg('(s.r).' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c)
                   OPERATOR(pg_catalog.||) '::pg_catalog.text', ', ')
               OPERATOR(pg_catalog.||) ']::pg_catalog.text[]))'
          INTO texpr FROM pg_catalog.unnest(cols) AS c;
    END IF;
    -- up to 1000 rows (nearly every statement): one changelog row, written by one statement (each query
    -- on a transition table costs about as much as the row trigger's whole insert). The LIMIT stops the
    -- scan of a bigger statement's rows at 1001; such a statement writes nothing here.
    IF texpr IS NULL THEN
        IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows)
            SELECT pg_catalog.txid_current(), tname, 'I', n.j, marker, pg_catalog.clock_timestamp(), n.n
              FROM (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT r FROM new_rows r LIMIT 1001) s) n
             WHERE n.n OPERATOR(pg_catalog.>=) 1 AND n.n OPERATOR(pg_catalog.<=) 1000;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows)
            SELECT pg_catalog.txid_current(), tname, 'D', o.j, marker, pg_catalog.clock_timestamp(), o.n
              FROM (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT r FROM old_rows r LIMIT 1001) s) o
             WHERE o.n OPERATOR(pg_catalog.>=) 1 AND o.n OPERATOR(pg_catalog.<=) 1000;
        ELSE
            INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows)
            SELECT pg_catalog.txid_current(), tname, 'U', o.j, n.j, marker, pg_catalog.clock_timestamp(),
                   pg_catalog.int4larger(o.n, n.n)
              FROM (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT r FROM old_rows r LIMIT 1001) s) o,
                   (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT r FROM new_rows r LIMIT 1001) s) n
             WHERE pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.>=) 1
               AND pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.<=) 1000;
        END IF;
    ELSE
        q := '(SELECT pg_catalog.json_agg(s.r) AS j, ' OPERATOR(pg_catalog.||) texpr OPERATOR(pg_catalog.||)
             ' AS t, pg_catalog.count(*)::pg_catalog.int4 AS n FROM (SELECT r FROM ';
        IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, after_texts, nrows) '
                    'SELECT pg_catalog.txid_current(), $2, ''I'', n.j, $3, pg_catalog.clock_timestamp(), n.t, n.n '
                    'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows r LIMIT 1001) s) n '
                    'WHERE n.n OPERATOR(pg_catalog.>=) 1 AND n.n OPERATOR(pg_catalog.<=) 1000'
              USING cols, tname, marker;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, before_texts, nrows) '
                    'SELECT pg_catalog.txid_current(), $2, ''D'', o.j, $3, pg_catalog.clock_timestamp(), o.t, o.n '
                    'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows r LIMIT 1001) s) o '
                    'WHERE o.n OPERATOR(pg_catalog.>=) 1 AND o.n OPERATOR(pg_catalog.<=) 1000'
              USING cols, tname, marker;
        ELSE
            EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, before_texts, '
                    'after_texts, nrows) SELECT pg_catalog.txid_current(), $2, ''U'', o.j, n.j, $3, '
                    'pg_catalog.clock_timestamp(), o.t, n.t, pg_catalog.int4larger(o.n, n.n) FROM '
                    OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows r LIMIT 1001) s) o, '
                    OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows r LIMIT 1001) s) n '
                    'WHERE pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.>=) 1 '
                    'AND pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.<=) 1000'
              USING cols, tname, marker;
        END IF;
    END IF;
    GET DIAGNOSTICS done = ROW_COUNT;
    IF done OPERATOR(pg_catalog.>) 0 THEN
        RETURN NULL;
    END IF;
    -- nothing written: the statement changed no row, or more than 1000
    -- (a query naming a transition table the trigger does not have fails when planned: one IF each)
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        big := EXISTS (SELECT 1 FROM old_rows OFFSET 1000);
    END IF;
    IF NOT big AND TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        big := EXISTS (SELECT 1 FROM new_rows OFFSET 1000);
    END IF;
    IF NOT big THEN
        RETURN NULL;
    END IF;
    -- more than 1000 rows: one changelog row per 1000, by position in the transition tables (an UPDATE's
    -- k-th old and new chunks in one row; the reader pairs by key inside it)
    texpr := COALESCE(texpr, 'NULL::pg_catalog.json');
    q := '(SELECT s.g, pg_catalog.json_agg(s.r) AS j, ' OPERATOR(pg_catalog.||) texpr OPERATOR(pg_catalog.||)
         ' AS t, pg_catalog.count(*)::pg_catalog.int4 AS n FROM (SELECT r, (pg_catalog.row_number() OVER ()'
         ' OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 1000 AS g FROM ';
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, after_texts, nrows) '
                'SELECT pg_catalog.txid_current(), $2, ''I'', n.j, $3, pg_catalog.clock_timestamp(), n.t, n.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows r) s GROUP BY s.g)' OPERATOR(pg_catalog.||) ' n ORDER BY n.g'
          USING cols, tname, marker;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, before_texts, nrows) '
                'SELECT pg_catalog.txid_current(), $2, ''D'', o.j, $3, pg_catalog.clock_timestamp(), o.t, o.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows r) s GROUP BY s.g)' OPERATOR(pg_catalog.||) ' o ORDER BY o.g'
          USING cols, tname, marker;
    ELSE
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, before_texts, after_texts, '
                'nrows) SELECT pg_catalog.txid_current(), $2, ''U'', o.j, n.j, $3, pg_catalog.clock_timestamp(), '
                'o.t, n.t, pg_catalog.int4larger(COALESCE(o.n, 0), COALESCE(n.n, 0)) FROM '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows r) s GROUP BY s.g)' OPERATOR(pg_catalog.||) ' o FULL JOIN '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows r) s GROUP BY s.g)' OPERATOR(pg_catalog.||)
                ' n USING (g) ORDER BY g'
          USING cols, tname, marker;
    END IF;
    RETURN NULL;
END
$$
;
-- The same capture without the function's SET clause, for tables whose every column's JSON form is
-- independent of the writing session's settings (integers, numeric, text, bool, uuid, json/jsonb, date,
-- timestamp, timestamptz: to_json writes dates and times in ISO form with their UTC offset whatever
-- DateStyle and TimeZone are, and the reader converts the offset; arrays of those). Saving and restoring
-- five settings costs about as much as a third of the rest of a one-row statement's capture. setup picks
-- this function per table from its column types (agent/sources/trigger/postgresql.py), and re-creates the
-- triggers when the types change. No text-form columns here (composites and hstore need the settings).
CREATE FUNCTION {{qfn_plain}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    done bigint;
    big boolean := false;
    q text;
    tname text := TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME;
    marker text := pg_catalog.current_setting('cdc.origin', true);
BEGIN
    IF marker OPERATOR(pg_catalog.=) '' THEN
        marker := NULL;
    END IF;
    IF TG_LEVEL OPERATOR(pg_catalog.=) 'ROW' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created)
        VALUES (pg_catalog.txid_current(), tname, pg_catalog.left(TG_OP, 1),
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_json(OLD) END,
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_json(NEW) END,
                marker, pg_catalog.clock_timestamp());
        RETURN NULL;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows)
        SELECT pg_catalog.txid_current(), tname, 'I', n.j, marker, pg_catalog.clock_timestamp(), n.n
          FROM (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT r FROM new_rows r LIMIT 1001) s) n
         WHERE n.n OPERATOR(pg_catalog.>=) 1 AND n.n OPERATOR(pg_catalog.<=) 1000;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows)
        SELECT pg_catalog.txid_current(), tname, 'D', o.j, marker, pg_catalog.clock_timestamp(), o.n
          FROM (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT r FROM old_rows r LIMIT 1001) s) o
         WHERE o.n OPERATOR(pg_catalog.>=) 1 AND o.n OPERATOR(pg_catalog.<=) 1000;
    ELSE
        INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows)
        SELECT pg_catalog.txid_current(), tname, 'U', o.j, n.j, marker, pg_catalog.clock_timestamp(),
               pg_catalog.int4larger(o.n, n.n)
          FROM (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT r FROM old_rows r LIMIT 1001) s) o,
               (SELECT pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT r FROM new_rows r LIMIT 1001) s) n
         WHERE pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.>=) 1
           AND pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.<=) 1000;
    END IF;
    GET DIAGNOSTICS done = ROW_COUNT;
    IF done OPERATOR(pg_catalog.>) 0 THEN
        RETURN NULL;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        big := EXISTS (SELECT 1 FROM old_rows OFFSET 1000);
    END IF;
    IF NOT big AND TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        big := EXISTS (SELECT 1 FROM new_rows OFFSET 1000);
    END IF;
    IF NOT big THEN
        RETURN NULL;
    END IF;
    -- more than 1000 rows: as in {{qfn}}
    q := '(SELECT s.g, pg_catalog.json_agg(s.r) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n FROM (SELECT r, '
         '(pg_catalog.row_number() OVER () OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 1000 AS g FROM ';
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows) '
                'SELECT pg_catalog.txid_current(), $1, ''I'', n.j, $2, pg_catalog.clock_timestamp(), n.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows r) s GROUP BY s.g) n ORDER BY n.g'
          USING tname, marker;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows) '
                'SELECT pg_catalog.txid_current(), $1, ''D'', o.j, $2, pg_catalog.clock_timestamp(), o.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows r) s GROUP BY s.g) o ORDER BY o.g'
          USING tname, marker;
    ELSE
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows) '
                'SELECT pg_catalog.txid_current(), $1, ''U'', o.j, n.j, $2, pg_catalog.clock_timestamp(), '
                'pg_catalog.int4larger(COALESCE(o.n, 0), COALESCE(n.n, 0)) FROM '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows r) s GROUP BY s.g) o FULL JOIN '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows r) s GROUP BY s.g) n USING (g) ORDER BY g'
          USING tname, marker;
    END IF;
    RETURN NULL;
END
$$
