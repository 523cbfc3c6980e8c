-- Version 2: the session-origin marker. A session that sets `SET cdc.origin = 'cdc-agent/<name>'` (or
-- set_config('cdc.origin', ..., true) for one transaction) has its changes marked, so that the agent can
-- recognise its own writes (two-way sync without loops).
ALTER TABLE {{qcl}} ADD COLUMN origin text
;
CREATE OR REPLACE FUNCTION {{qfn}}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO {{qcl}} (txid, tbl, op, before, after, origin, created)
    VALUES (pg_catalog.txid_current(),
            TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME,
            pg_catalog.left(TG_OP, 1),
            CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_json(OLD) END,
            CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_json(NEW) END,
            CASE WHEN pg_catalog.current_setting('cdc.origin', true) OPERATOR(pg_catalog.<>) ''
                 THEN pg_catalog.current_setting('cdc.origin', true) END,
            pg_catalog.clock_timestamp());
    RETURN NULL;
END
$$
