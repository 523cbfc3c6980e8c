CREATE TRIGGER {{qtrigger_i}} AFTER INSERT ON {{qtable}} FOR EACH ROW
INSERT INTO {{qcl}} (session_id, tbl, op, `before`, `after`, origin, created)
VALUES (CONNECTION_ID(), {{table_lit}}, 'I', NULL, {{new_json}}, @cdc_origin, UTC_TIMESTAMP(6))
;
CREATE TRIGGER {{qtrigger_u}} AFTER UPDATE ON {{qtable}} FOR EACH ROW
INSERT INTO {{qcl}} (session_id, tbl, op, `before`, `after`, origin, created)
VALUES (CONNECTION_ID(), {{table_lit}}, 'U', {{old_json}}, {{new_json}}, @cdc_origin, UTC_TIMESTAMP(6))
;
CREATE TRIGGER {{qtrigger_d}} AFTER DELETE ON {{qtable}} FOR EACH ROW
INSERT INTO {{qcl}} (session_id, tbl, op, `before`, `after`, origin, created)
VALUES (CONNECTION_ID(), {{table_lit}}, 'D', {{old_json}}, NULL, @cdc_origin, UTC_TIMESTAMP(6))
