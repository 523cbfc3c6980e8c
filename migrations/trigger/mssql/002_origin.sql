-- Version 2: the session-origin marker: a session that runs
-- EXEC sp_set_session_context N'cdc.origin', N'cdc-agent/<name>' has its changes marked, so that the agent
-- can recognise its own writes. The triggers are re-created from table.v002.sql.
ALTER TABLE {{qcl}} ADD origin nvarchar(200) NULL
