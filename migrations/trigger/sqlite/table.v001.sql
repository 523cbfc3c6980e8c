CREATE TRIGGER {{qtrigger_i}} AFTER INSERT ON {{qtable_name}} FOR EACH ROW BEGIN
    INSERT INTO {{cl}} (tbl, op, before, after, created)
    VALUES ({{table_lit}}, 'I', NULL, {{new_json}}, (julianday('now') - 2440587.5) * 86400.0);
END
;
CREATE TRIGGER {{qtrigger_u}} AFTER UPDATE ON {{qtable_name}} FOR EACH ROW BEGIN
    INSERT INTO {{cl}} (tbl, op, before, after, created)
    VALUES ({{table_lit}}, 'U', {{old_json}}, {{new_json}}, (julianday('now') - 2440587.5) * 86400.0);
END
;
CREATE TRIGGER {{qtrigger_d}} AFTER DELETE ON {{qtable_name}} FOR EACH ROW BEGIN
    INSERT INTO {{cl}} (tbl, op, before, after, created)
    VALUES ({{table_lit}}, 'D', {{old_json}}, NULL, (julianday('now') - 2440587.5) * 86400.0);
END
