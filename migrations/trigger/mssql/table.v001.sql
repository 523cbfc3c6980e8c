-- SQL Server triggers fire once per statement: inserted and deleted are paired on the primary key (an
-- update that changes the key becomes a delete and an insert).
CREATE OR ALTER TRIGGER {{qtrigger}} ON {{qtable}} AFTER INSERT, UPDATE, DELETE AS
BEGIN
    SET NOCOUNT ON;
    INSERT INTO {{qcl}} (txid, tbl, op, [before], [after], created)
    SELECT CURRENT_TRANSACTION_ID(), {{table_lit}},
           CASE WHEN {{d_key_null}} THEN 'I' WHEN {{i_key_null}} THEN 'D' ELSE 'U' END,
           CASE WHEN {{d_key_null}} THEN NULL ELSE ({{old_json}}) END,
           CASE WHEN {{i_key_null}} THEN NULL ELSE ({{new_json}}) END,
           SYSUTCDATETIME()
    FROM inserted AS i FULL OUTER JOIN deleted AS d ON {{key_join}};
END
