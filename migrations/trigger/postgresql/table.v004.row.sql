CREATE TRIGGER {{trigger}} AFTER INSERT OR UPDATE OR DELETE ON {{qtable}}
    FOR EACH ROW EXECUTE FUNCTION {{capture_fn}}({{text_columns}})
