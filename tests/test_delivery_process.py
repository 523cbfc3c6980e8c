"""The delivery child of `cdc-agent run` (agent/delivery.py): one interpreter of its own, started without
multiprocessing (so no resource tracker beside it) and without the command line's modules, given the config
over a pipe (its secrets never on its command line), and started again when it dies."""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path

from agent.delivery import DeliveryProcess
from agent.delivery_child import write_all
from agent.monitor import Monitor
from tests.agentproc import AgentProcess, pid_running, read_events, wait_for
from tests.plugins import free_port
from tests.test_pg_pipeline import cli, write_config

PASSWORD = "spawn-test-Pw-8d2f91"

# on the agent's PYTHONPATH: every interpreter of the run writes the modules it had loaded when it exits
_SITECUSTOMIZE = """
import atexit, json, os, sys
def _dump():
    with open(os.path.join(os.environ["CDC_TEST_MODULES_DIR"], f"{os.getpid()}.json"), "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump)
"""


def _descendants(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [d for k in kids for d in _descendants(k)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_child_is_its_own_interpreter_with_no_tracker_no_cli_and_no_secret_in_argv(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    dumps = tmp_path / "modules"
    dumps.mkdir()
    dsn = f"postgresql://postgres:${{CDC_TEST_PW}}@127.0.0.1:{free_port()}/nothing"   # nothing answers there
    cfg = write_config(tmp_path, dsn, ["public.items"])
    env = {"CDC_TEST_PW": PASSWORD, "CDC_TEST_MODULES_DIR": str(dumps),
           "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    agent = AgentProcess(cfg, tmp_path / "agent.log", env=env).start()
    try:
        # exec'd: its command line is the child's own, no longer the parent's copy
        child = wait_for(lambda: [p for p in _descendants(agent.proc.pid) if b"agent.delivery_child" in _cmdline(p)],
                         30, what="the delivery child")[0]
        wait_for(lambda: (tmp_path / "state" / "delivery.lock").exists() and agent._has_started(), 30,
                 what="the agent to start")
        tree = _descendants(agent.proc.pid)
        assert tree == [child], [_cmdline(p) for p in tree]     # no resource tracker, nothing else
        assert not any(b"multiprocessing" in _cmdline(p) for p in tree)
        # the config's secrets went over the pipe: the password (in the config through ${CDC_TEST_PW}) is not
        # on the child's command line
        assert PASSWORD.encode() not in _cmdline(child)
        assert agent.stop() == 0
    finally:
        agent.kill()
    wait_for(lambda: not pid_running(child), 10, what="the delivery child to exit")
    loaded = {int(p.stem): set(json.loads(p.read_text())) for p in dumps.glob("*.json")}
    assert set(loaded) == {agent.proc.pid, child}
    assert "agent.pipeline" in loaded[agent.proc.pid]      # (the dumps are the two processes')
    assert {"agent.worker", "adapters.file", "agent.delivery_child"} <= loaded[child]
    assert not {"agent.cli", "__mp_main__", "agent.delivery", "agent.pipeline", "multiprocessing"} & loaded[child]
    assert "Traceback" not in agent.log()


def test_a_child_that_dies_is_started_again_and_delivers(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, writer int, version int, pad text)")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.items"])
    assert cli("setup", "-c", str(cfg)).returncode == 0
    out = tmp_path / "out" / "events.jsonl"
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        pg_db.execute("INSERT INTO items VALUES (1, 0, 0, 'before')")
        wait_for(lambda: len(read_events(out)) == 1, 30, what="the first event")
        first = agent.children()
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: agent.children() and agent.children() != first, 30, what="a new delivery child")
        pg_db.execute("INSERT INTO items VALUES (2, 0, 0, 'after')")
        wait_for(lambda: {e["subject"] for e in read_events(out)} >= {"1", "2"}, 30, what="the second event")
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert "delivery process exited with code -9; starting a new one" in agent.log()


def test_a_report_that_cannot_be_taken_in_is_logged_and_the_relay_reads_on(caplog):
    """A relay that stopped reading would leave the child blocked on a full pipe, and its deliveries too."""
    monitor = Monitor("a", "postgres")
    r, w = os.pipe()
    for msg in [("digest", "t", "not a digest"), ("live", "t", ("retrying", "down", 3))]:
        data = pickle.dumps(msg)
        write_all(w, len(data).to_bytes(4, "little") + data)
    write_all(w, (100).to_bytes(4, "little") + b"cut short")      # the child died mid-frame
    os.close(w)
    DeliveryProcess(None, monitor, [])._relay_reports(os.fdopen(r, "rb"))     # type: ignore[arg-type]
    live = monitor.targets["t"]
    assert (live.state, live.last_error, live.failed) == ("retrying", "down", 3)
    assert "could not be taken in" in caplog.text
