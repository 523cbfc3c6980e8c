-- Version 5: snapshot watermarks (docs/snapshots.md). A watermark is a changelog row with op 'W' and
-- 'cdc-agent-watermark:<window>:low|high' in tbl, written by the agent in a transaction of its own, so the
-- reader meets it among the changes in the same order as a change committed at that moment. The agent
-- writes it through this function: it needs EXECUTE on the function (granted to nobody else; PUBLIC's
-- default EXECUTE is revoked), not INSERT on the changelog. No trigger changes.
CREATE FUNCTION {{qwm}}(mark text) RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog AS $$
    INSERT INTO {{qcl}} (txid, tbl, op, created)
    VALUES (pg_catalog.txid_current(), mark, 'W', pg_catalog.clock_timestamp())
$$
;
REVOKE ALL ON FUNCTION {{qwm}}(text) FROM PUBLIC
