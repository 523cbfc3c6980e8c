-- Snapshot read events asked with `cdc-agent snapshot --target NAME` go to that target only: the other
-- targets' workers pass over them (agent/worker.py). NULL: every target.
ALTER TABLE events ADD COLUMN only_target TEXT;
