DROP TRIGGER IF EXISTS {{trigger}} ON {{qtable}}
