-- Version 6: the same changelog rows for less of the writer's time. Measured first (docs/trigger-capture.md,
-- "Version 006 and where a captured statement's time goes"): for a one-row UPDATE, the statement trigger's
-- aggregate query (json_agg and count over LIMIT 1001 of each transition table) was the largest part of its
-- capture (about 9 of 36 µs), and the plpgsql variables and IFs around it cost a little more. So both capture
-- functions now:
-- - write a one-row statement (the common case) with one plain INSERT ... SELECT over the transition table(s),
--   guarded by NOT EXISTS (... OFFSET 1), and go on to version 4's general form only when that wrote nothing
--   (no row, or more than one);
-- - write a row trigger's row (trigger_level = "row", or a row trigger of versions 1 to 3 still attached)
--   with one INSERT and no variables;
-- - compute the table name and the origin marker in the INSERT itself.
-- The rows written are exactly those of version 4 (one-element arrays for one row, nrows 1; the same texts:
-- json_build_array and json_agg write an element alike), so the reader is unchanged. One fix on the way:
-- version 4 named a row by its bare alias (`SELECT r FROM new_rows r`), which means the column r when the
-- table has one, so a table with a column named r had that column's values captured instead of its rows;
-- here rows are always `alias.*` (or ARRAY[alias.*]), the whole row whatever the columns are called.
-- Only the function bodies change (CREATE OR REPLACE keeps the functions the triggers point at; nothing new
-- for teardown to remove); the function with the SET clause takes the fast paths when its trigger names no
-- text-form columns.
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
    big boolean;
    tname text;
    marker text;
BEGIN
    IF TG_NARGS OPERATOR(pg_catalog.=) 0 THEN
        IF TG_LEVEL OPERATOR(pg_catalog.=) 'ROW' THEN
            INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created)
            VALUES (pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, pg_catalog.left(TG_OP, 1),
                    CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_json(OLD) END,
                    CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_json(NEW) END,
                    CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                            THEN pg_catalog.current_setting('cdc.origin', true) END,
                    pg_catalog.clock_timestamp());
            RETURN NULL;
        END IF;
        -- one changed row (nearly every statement of an ERP): no aggregate, no LIMIT, no row count; written
        -- exactly as the general form below writes one row (one-element arrays, nrows 1). NOT EXISTS (... OFFSET
        -- 1): the transition table holds at most one row; a statement of none or of more writes nothing here.
        -- `o.*`, not `o`: the whole row also when the table has a column named o
        IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
            INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows)
            SELECT pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, 'U',
                   pg_catalog.json_build_array(o.*), pg_catalog.json_build_array(n.*),
                   CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                            THEN pg_catalog.current_setting('cdc.origin', true) END,
                   pg_catalog.clock_timestamp(), 1
              FROM old_rows o, new_rows n
             WHERE NOT EXISTS (SELECT FROM old_rows OFFSET 1) AND NOT EXISTS (SELECT FROM new_rows OFFSET 1);
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows)
            SELECT pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, 'I', pg_catalog.json_build_array(n.*),
                   CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                            THEN pg_catalog.current_setting('cdc.origin', true) END,
                   pg_catalog.clock_timestamp(), 1
              FROM new_rows n
             WHERE NOT EXISTS (SELECT FROM new_rows OFFSET 1);
        ELSE
            INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows)
            SELECT pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, 'D', pg_catalog.json_build_array(o.*),
                   CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                            THEN pg_catalog.current_setting('cdc.origin', true) END,
                   pg_catalog.clock_timestamp(), 1
              FROM old_rows o
             WHERE NOT EXISTS (SELECT FROM old_rows OFFSET 1);
        END IF;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    -- none or more than one row: as version 4
    tname := TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME;
    marker := pg_catalog.current_setting('cdc.origin', true);
    IF marker OPERATOR(pg_catalog.=) '' THEN
        marker := NULL;
    END IF;
    big := false;
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
               pg_catalog.string_agg('tr.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c)
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
              FROM (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT * FROM new_rows LIMIT 1001) tr) n
             WHERE n.n OPERATOR(pg_catalog.>=) 1 AND n.n OPERATOR(pg_catalog.<=) 1000;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows)
            SELECT pg_catalog.txid_current(), tname, 'D', o.j, marker, pg_catalog.clock_timestamp(), o.n
              FROM (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT * FROM old_rows LIMIT 1001) tr) o
             WHERE o.n OPERATOR(pg_catalog.>=) 1 AND o.n OPERATOR(pg_catalog.<=) 1000;
        ELSE
            INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows)
            SELECT pg_catalog.txid_current(), tname, 'U', o.j, n.j, marker, pg_catalog.clock_timestamp(),
                   pg_catalog.int4larger(o.n, n.n)
              FROM (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT * FROM old_rows LIMIT 1001) tr) o,
                   (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                      FROM (SELECT * FROM new_rows LIMIT 1001) tr) n
             WHERE pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.>=) 1
               AND pg_catalog.int4larger(o.n, n.n) OPERATOR(pg_catalog.<=) 1000;
        END IF;
    ELSE
        q := '(SELECT pg_catalog.json_agg(tr.*) AS j, ' OPERATOR(pg_catalog.||) texpr OPERATOR(pg_catalog.||)
             ' AS t, pg_catalog.count(*)::pg_catalog.int4 AS n FROM (SELECT * FROM ';
        IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, after_texts, nrows) '
                    'SELECT pg_catalog.txid_current(), $2, ''I'', n.j, $3, pg_catalog.clock_timestamp(), n.t, n.n '
                    'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows LIMIT 1001) tr) n '
                    'WHERE n.n OPERATOR(pg_catalog.>=) 1 AND n.n OPERATOR(pg_catalog.<=) 1000'
              USING cols, tname, marker;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, before_texts, nrows) '
                    'SELECT pg_catalog.txid_current(), $2, ''D'', o.j, $3, pg_catalog.clock_timestamp(), o.t, o.n '
                    'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows LIMIT 1001) tr) o '
                    'WHERE o.n OPERATOR(pg_catalog.>=) 1 AND o.n OPERATOR(pg_catalog.<=) 1000'
              USING cols, tname, marker;
        ELSE
            EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, before_texts, '
                    'after_texts, nrows) SELECT pg_catalog.txid_current(), $2, ''U'', o.j, n.j, $3, '
                    'pg_catalog.clock_timestamp(), o.t, n.t, pg_catalog.int4larger(o.n, n.n) FROM '
                    OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows LIMIT 1001) tr) o, '
                    OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows LIMIT 1001) tr) n '
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
    -- (a row travels as ARRAY[tr.*], the whole row whatever the columns are called; its text forms as x,
    -- built where tr is in scope)
    texpr := NULL;
    IF cols IS NOT NULL THEN
        SELECT 'pg_catalog.json_object($1, ARRAY[' OPERATOR(pg_catalog.||)
               pg_catalog.string_agg('tr.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c)
                   OPERATOR(pg_catalog.||) '::pg_catalog.text', ', ')
               OPERATOR(pg_catalog.||) ']::pg_catalog.text[])'
          INTO texpr FROM pg_catalog.unnest(cols) AS c;
    END IF;
    q := '(SELECT s.g, pg_catalog.json_agg((s.a)[1]) AS j, ' OPERATOR(pg_catalog.||)
         CASE WHEN texpr IS NULL THEN 'NULL::pg_catalog.json' ELSE 'pg_catalog.json_agg(s.x)' END
         OPERATOR(pg_catalog.||) ' AS t, pg_catalog.count(*)::pg_catalog.int4 AS n FROM (SELECT ARRAY[tr.*] AS a, '
         OPERATOR(pg_catalog.||) COALESCE(texpr, 'NULL::pg_catalog.json') OPERATOR(pg_catalog.||) ' AS x, '
         '(pg_catalog.row_number() OVER () OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 1000 AS g FROM ';
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, after_texts, nrows) '
                'SELECT pg_catalog.txid_current(), $2, ''I'', n.j, $3, pg_catalog.clock_timestamp(), n.t, n.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows tr) s GROUP BY s.g)' OPERATOR(pg_catalog.||) ' n ORDER BY n.g'
          USING cols, tname, marker;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, before_texts, nrows) '
                'SELECT pg_catalog.txid_current(), $2, ''D'', o.j, $3, pg_catalog.clock_timestamp(), o.t, o.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows tr) s GROUP BY s.g)' OPERATOR(pg_catalog.||) ' o ORDER BY o.g'
          USING cols, tname, marker;
    ELSE
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, before_texts, after_texts, '
                'nrows) SELECT pg_catalog.txid_current(), $2, ''U'', o.j, n.j, $3, pg_catalog.clock_timestamp(), '
                'o.t, n.t, pg_catalog.int4larger(COALESCE(o.n, 0), COALESCE(n.n, 0)) FROM '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows tr) s GROUP BY s.g)' OPERATOR(pg_catalog.||) ' o FULL JOIN '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows tr) s GROUP BY s.g)' OPERATOR(pg_catalog.||)
                ' n USING (g) ORDER BY g'
          USING cols, tname, marker;
    END IF;
    RETURN NULL;
END
$$
;
CREATE OR REPLACE FUNCTION {{qfn_plain}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    done bigint;
    big boolean;
    q text;
    tname text;
    marker text;
BEGIN
    IF TG_LEVEL OPERATOR(pg_catalog.=) 'ROW' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created)
        VALUES (pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, pg_catalog.left(TG_OP, 1),
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_json(OLD) END,
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_json(NEW) END,
                CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                        THEN pg_catalog.current_setting('cdc.origin', true) END,
                pg_catalog.clock_timestamp());
        RETURN NULL;
    END IF;
    -- one changed row (nearly every statement of an ERP): no aggregate, no LIMIT, no row count; written
    -- exactly as the general form below writes one row (one-element arrays, nrows 1). NOT EXISTS (... OFFSET
    -- 1): the transition table holds at most one row; a statement of none or of more writes nothing here.
    -- `o.*`, not `o`: the whole row also when the table has a column named o
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows)
        SELECT pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, 'U',
               pg_catalog.json_build_array(o.*), pg_catalog.json_build_array(n.*),
               CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                        THEN pg_catalog.current_setting('cdc.origin', true) END,
               pg_catalog.clock_timestamp(), 1
          FROM old_rows o, new_rows n
         WHERE NOT EXISTS (SELECT FROM old_rows OFFSET 1) AND NOT EXISTS (SELECT FROM new_rows OFFSET 1);
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows)
        SELECT pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, 'I', pg_catalog.json_build_array(n.*),
               CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                        THEN pg_catalog.current_setting('cdc.origin', true) END,
               pg_catalog.clock_timestamp(), 1
          FROM new_rows n
         WHERE NOT EXISTS (SELECT FROM new_rows OFFSET 1);
    ELSE
        INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows)
        SELECT pg_catalog.txid_current(), TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME, 'D', pg_catalog.json_build_array(o.*),
               CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                        THEN pg_catalog.current_setting('cdc.origin', true) END,
               pg_catalog.clock_timestamp(), 1
          FROM old_rows o
         WHERE NOT EXISTS (SELECT FROM old_rows OFFSET 1);
    END IF;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    -- none or more than one row: as version 4
    tname := TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME;
    marker := pg_catalog.current_setting('cdc.origin', true);
    IF marker OPERATOR(pg_catalog.=) '' THEN
        marker := NULL;
    END IF;
    big := false;
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows)
        SELECT pg_catalog.txid_current(), tname, 'I', n.j, marker, pg_catalog.clock_timestamp(), n.n
          FROM (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT * FROM new_rows LIMIT 1001) tr) n
         WHERE n.n OPERATOR(pg_catalog.>=) 1 AND n.n OPERATOR(pg_catalog.<=) 1000;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows)
        SELECT pg_catalog.txid_current(), tname, 'D', o.j, marker, pg_catalog.clock_timestamp(), o.n
          FROM (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT * FROM old_rows LIMIT 1001) tr) o
         WHERE o.n OPERATOR(pg_catalog.>=) 1 AND o.n OPERATOR(pg_catalog.<=) 1000;
    ELSE
        INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows)
        SELECT pg_catalog.txid_current(), tname, 'U', o.j, n.j, marker, pg_catalog.clock_timestamp(),
               pg_catalog.int4larger(o.n, n.n)
          FROM (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT * FROM old_rows LIMIT 1001) tr) o,
               (SELECT pg_catalog.json_agg(tr.*) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n
                  FROM (SELECT * FROM new_rows LIMIT 1001) tr) n
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
    q := '(SELECT s.g, pg_catalog.json_agg((s.a)[1]) AS j, pg_catalog.count(*)::pg_catalog.int4 AS n FROM (SELECT '
         'ARRAY[tr.*] AS a, (pg_catalog.row_number() OVER () OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 1000 AS g FROM ';
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, after, origin, created, nrows) '
                'SELECT pg_catalog.txid_current(), $1, ''I'', n.j, $2, pg_catalog.clock_timestamp(), n.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows tr) s GROUP BY s.g) n ORDER BY n.g'
          USING tname, marker;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, origin, created, nrows) '
                'SELECT pg_catalog.txid_current(), $1, ''D'', o.j, $2, pg_catalog.clock_timestamp(), o.n '
                'FROM ' OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows tr) s GROUP BY s.g) o ORDER BY o.g'
          USING tname, marker;
    ELSE
        EXECUTE 'INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created, nrows) '
                'SELECT pg_catalog.txid_current(), $1, ''U'', o.j, n.j, $2, pg_catalog.clock_timestamp(), '
                'pg_catalog.int4larger(COALESCE(o.n, 0), COALESCE(n.n, 0)) FROM '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'old_rows tr) s GROUP BY s.g) o FULL JOIN '
                OPERATOR(pg_catalog.||) q OPERATOR(pg_catalog.||) 'new_rows tr) s GROUP BY s.g) n USING (g) ORDER BY g'
          USING tname, marker;
    END IF;
    RETURN NULL;
END
$$
