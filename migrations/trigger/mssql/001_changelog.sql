-- cdc-agent trigger capture for SQL Server 2016 SP1+, version 1: the changelog and the version table.
-- Generated and unit-checked; not yet tested against a live server (see docs/trigger-capture.md).
-- IDENTITY starts at the install time in microseconds, so ids never repeat after a new setup. The reader
-- emits rows in id order and tracks gaps (uncommitted or rolled-back ids, identity cache jumps) with a
-- bounded wait; rows are deleted only after the agent spooled them.
CREATE TABLE {{qversion}} (
    version    int NOT NULL PRIMARY KEY,
    name       nvarchar(200) NOT NULL,
    applied_at datetime2(6) NOT NULL
)
;
CREATE TABLE {{qcl}} (
    id      bigint IDENTITY({{seed}}, 1) NOT NULL PRIMARY KEY,
    txid    bigint NOT NULL,
    tbl     nvarchar(300) NOT NULL,
    op      char(1) NOT NULL,
    [before] nvarchar(max) NULL,
    [after]  nvarchar(max) NULL,
    created datetime2(7) NOT NULL
)
;
-- The start marker: the first id. A reader that starts without a checkpoint knows from it that every
-- later id is a change, so a transaction still open at its start is waited for like any gap.
INSERT INTO {{qcl}} (txid, tbl, op, created) VALUES (CURRENT_TRANSACTION_ID(), N'', 'S', SYSUTCDATETIME())
