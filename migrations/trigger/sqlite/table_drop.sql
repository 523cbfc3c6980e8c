DROP TRIGGER IF EXISTS {{qtrigger_i}}
;
DROP TRIGGER IF EXISTS {{qtrigger_u}}
;
DROP TRIGGER IF EXISTS {{qtrigger_d}}
