-- Version 2: the session-origin marker (`SET @cdc_origin = 'cdc-agent/<name>'` in a session marks its
-- changes, so that the agent can recognise its own writes). The triggers are re-created from table.v002.sql.
ALTER TABLE {{qcl}} ADD COLUMN origin VARCHAR(200) NULL
