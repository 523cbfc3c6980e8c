CREATE TRIGGER {{trigger_i}} AFTER INSERT ON {{qtable}} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{capture_fn}}({{text_columns}})
;
CREATE TRIGGER {{trigger_u}} AFTER UPDATE ON {{qtable}} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{capture_fn}}({{text_columns}})
;
CREATE TRIGGER {{trigger_d}} AFTER DELETE ON {{qtable}} REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{capture_fn}}({{text_columns}})
