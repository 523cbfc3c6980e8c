"""Running as a service: the shipped systemd unit passes `systemd-analyze verify` with no warning, the agent
runs the demo config as an unprivileged user with the unit's umask, sd_notify readiness and watchdog pings
reach a NOTIFY_SOCKET, and the shipped Prometheus rules pass promtool and only name metrics the agent serves."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent.service import Notifier
from tests.agentproc import ROOT, read_events

UNIT = ROOT / "packaging" / "cdc-agent.service"


def _cdc_agent_script() -> str:
    return str(Path(sys.executable).with_name("cdc-agent"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies_without_warnings(tmp_path):
    unit = tmp_path / "cdc-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/cdc-agent/bin/cdc-agent", _cdc_agent_script()))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    text = UNIT.read_text()
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=cdc-agent", "ProtectSystem=strict",
                      "NoNewPrivileges=true", "EnvironmentFile=", "UMask=0077", "StateDirectory=cdc-agent"):
        assert directive in text, directive


def test_unit_verify_would_catch_a_typo(tmp_path):
    """The check above means something: a misspelt directive makes systemd-analyze complain."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "cdc-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/cdc-agent/bin/cdc-agent", _cdc_agent_script())
                    .replace("ProtectSystem=strict", "ProtectSystem=strickt"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "strickt" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the service user")
def test_demo_runs_as_the_units_user_with_its_umask():
    user = "cdc-agent"
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
    home = Path(tempfile.mkdtemp(prefix="cdc-service-"))
    try:
        shutil.copy(ROOT / "agent.toml", home / "agent.toml")
        shutil.chown(home, user, user)
        shutil.chown(home / "agent.toml", user, user)
        # the test interpreter may live under /root (pyenv), which the service user cannot enter: run Debian's
        # python3 of the same minor version on the test environment's packages
        python = sys.executable if _others_can_run(sys.executable) else "/usr/bin/python3"
        if not _others_can_run(python):
            pytest.skip("no Python interpreter the service user may run")
        site = ":".join(p for p in sys.path if p.endswith("site-packages"))
        cmd = (f"umask 0077; PYTHONPATH={ROOT}:{site} exec {python} -m agent.cli demo -c {home / 'agent.toml'} "
               "--seconds 3 --quiet")
        r = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", cmd], cwd=home, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        state = home / "demo-state"
        events = read_events(state / "out" / "events.jsonl", final=True)
        assert events, r.stdout
        for p in [state, *state.rglob("*")]:
            st = p.stat()
            assert st.st_uid == pwd.getpwnam(user).pw_uid, p
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{p} is readable by others: {oct(st.st_mode)}"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _others_can_run(path: str) -> bool:
    """Every directory on the way is searchable, and the file executable, by a user who is not its owner."""
    p = Path(path).resolve()
    if not p.exists() or not p.stat().st_mode & stat.S_IXOTH:
        return False
    return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)


def test_notify_readiness_and_watchdog_reach_the_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
        n.ready("capturing")
        assert s.recv(4096) == b"READY=1\nSTATUS=capturing"
        n.watchdog()
        assert s.recv(4096) == b"WATCHDOG=1"
        n.watchdog()                           # within half the period: no second ping
        time.sleep(0.12)
        n.watchdog()
        assert s.recv(4096) == b"WATCHDOG=1"
        s.settimeout(0.05)
        with pytest.raises(TimeoutError):
            s.recv(4096)
    assert Notifier({}).send("READY=1") is False          # outside systemd: nothing, no error
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None   # not our pid


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_prometheus_rules_pass_promtool():
    r = subprocess.run(["promtool", "check", "rules", str(ROOT / "docs" / "prometheus-rules.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_rules_and_grafana_name_only_metrics_the_agent_serves(tmp_path):
    from agent import config as config_mod
    from agent.metrics import render_metrics
    from agent.monitor import Monitor
    from agent.spool import Spool

    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text('[agent]\nname = "m"\n[source]\nkind = "postgres"\ndsn = "postgresql://u@127.0.0.1/db"\n'
                        'tables = ["public.t"]\n[[events]]\ntype = "t.changed"\ntable = "public.t"\nsla_ms = 100\n'
                        '[[targets]]\nname = "f"\nkind = "file"\npath = "o.jsonl"\n')
    cfg = config_mod.load(cfg_file)
    monitor = Monitor("m", "postgres")
    monitor.tracker.observe("f", [0.05], ["t.changed"])
    spool = Spool(cfg.agent.state_dir)
    try:
        text = render_metrics(cfg, monitor, spool).decode()
    finally:
        spool.close()
    served = set(re.findall(r"^# TYPE (cdc_agent_[a-z0-9_]+) ", text, re.M))
    served |= {n + "_total" for n in served}
    wanted = set(re.findall(r"cdc_agent_[a-z0-9_]+", (ROOT / "docs" / "prometheus-rules.yml").read_text()
                            + (ROOT / "docs" / "grafana-dashboard.json").read_text()))
    wanted = {re.sub(r"_bucket$", "", w) for w in wanted}
    missing = {w for w in wanted if w not in served and w.removesuffix("_total") not in served}
    # lag and retained WAL are only served while a source is connected; the others must be there
    assert missing <= {"cdc_agent_lag_seconds", "cdc_agent_retained_wal_bytes"}, missing


def test_version_flag():
    import agent
    r = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"cdc-agent {agent.__version__}"


def test_run_tells_systemd_it_is_ready_pings_the_watchdog_and_says_stopping(pg_db, tmp_path):
    from tests.agentproc import AgentProcess, wait_for
    from tests.test_pg_pipeline import cli, write_config

    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = write_config(tmp_path, pg_db.dsn, ["public.t"])
    assert cli("setup", "-c", str(cfg)).returncode == 0
    path = str(tmp_path / "notify.sock")
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(0.2)

        def drain():
            try:
                while True:
                    got.append(s.recv(4096))
            except TimeoutError:
                pass
            return got

        # WATCHDOG_PID unset: systemd sets it for the main process; the agent then pings every 0.25 s
        with AgentProcess(cfg, tmp_path / "agent.log", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "500000"}) as a:
            wait_for(lambda: any(m.startswith(b"READY=1") for m in drain()), 30, what="READY=1")
            wait_for(lambda: sum(m == b"WATCHDOG=1" for m in drain()) >= 3, 30, what="watchdog pings")
            assert a.stop() == 0, a.log()
        drain()
    assert any(m.startswith(b"STOPPING=1") for m in got), got
    ready = next(m for m in got if m.startswith(b"READY=1"))
    assert b"STATUS=capturing from postgres, delivering to audit" in ready
