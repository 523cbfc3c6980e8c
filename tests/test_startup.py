"""What `cdc-agent run` imports and does at start (issue #19: the drain is timed from the agent's exec, so
start-up counts). A module a config does not use must not be imported on the run path: each one cost every
agent process milliseconds before its source started streaming."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from agent import cli
from tests.agentproc import ROOT
from tests.plugins import free_port
from tests.test_pg_source import write_toml

# `cdc-agent run` in a fresh interpreter, up to its first attempt to reach the source (a closed port): the
# modules loaded by then, and whether the cyclic collector is on again once capture runs
_PROBE = """
import gc, json, sys
from agent import cli, pipeline
def failed(self, e, n):
    print(json.dumps({"modules": sorted(sys.modules), "gc": gc.isenabled(), "frozen": gc.get_freeze_count()}))
    self.stop.set()
pipeline.Agent._source_failed = failed
sys.exit(cli.main(["run", "-c", sys.argv[1]]))
"""

# nothing in this config asks for them: no [health] listen, no [[alerts]], no sql target
_UNUSED = ("agent.health", "agent.dashboard", "agent.alerts", "agent.metrics", "agent.reconcile", "adapters.sql",
           "http.server", "prometheus_client", "apscheduler")


def _config(tmp_path, extra: str = "") -> str:
    """A postgres source on a closed port (nothing answers) to the file target, no health listener."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    return str(write_toml(tmp_path, dsn, ["public.items"], 'snapshot = "never"\n' + extra))


def _probe(config: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, config], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_run_imports_no_module_the_config_does_not_use(tmp_path):
    seen = _probe(_config(tmp_path))
    modules = set(seen["modules"])
    # the probe ran where capture runs: the source and the target of the config are there
    assert {"agent.sources.postgres.stream", "adapters.file", "agent.delivery"} <= modules
    assert [m for m in _UNUSED if m in modules] == []
    # the collector is off only while `run` starts: capture runs with it on, after tune_gc's collect and freeze
    assert seen["gc"] is True and seen["frozen"] > 0


def test_alerts_are_still_read_when_configured(tmp_path):
    from agent import config as config_mod
    cfg = config_mod.load(_config(tmp_path, '[[alerts]]\nname = "lag"\nwhen = "source.lag_seconds > 60"\nwebhook = "http://127.0.0.1:9/hook"\n'))
    assert [r.name for r in cfg.alerts.rules] == ["lag"]
    assert config_mod.load(_config(tmp_path)).alerts.rules == ()


def test_run_that_stops_before_capture_turns_the_collector_back_on(tmp_path, capsys):
    bad = tmp_path / "agent.toml"
    bad.write_text("[agent]\nname = 'Bad Name'\n")
    assert gc.isenabled()
    assert cli.main(["run", "-c", str(bad)]) == 2
    assert "config error" in capsys.readouterr().err
    assert gc.isenabled()
