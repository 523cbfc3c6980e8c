"""The README's first command: `cdc-agent demo` creates the sample ERP, captures it with triggers and prints
domain events of every kind, which are also in the file target."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.agentproc import ROOT, check_delivery, read_events

DOMAIN = ("customer.pricing.updated", "customer.address.changed", "customer.order.placed", "order.status.changed")


def run_demo(cwd: Path, config: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "demo", "-c", str(config), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_demo_prints_domain_events_of_every_kind(tmp_path):
    cfg = tmp_path / "agent.toml"
    shutil.copy(ROOT / "agent.toml", cfg)
    r = run_demo(ROOT, cfg, "--seconds", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    printed = Counter(t for line in r.stdout.splitlines() for t in DOMAIN if f"  {t} " in line)
    assert all(printed[t] >= 1 for t in DOMAIN), r.stdout
    assert "row.main.order_lines" in r.stdout           # the table without a rule still arrives
    events = read_events(tmp_path / "demo-state" / "out" / "events.jsonl", final=True)
    check_delivery(events)
    types = Counter(e["type"] for e in events)
    assert all(types[t] >= 1 for t in DOMAIN)
    assert sum(types.values()) == sum(printed.values()) + types["row.main.order_lines"]
    status = [e for e in events if e["type"] == "order.status.changed"]
    allowed = {"accepted", "on_hold", "allocated", "partially_shipped", "shipped", "invoiced", "returned"}
    assert all(e["data"]["after"]["status"] in allowed for e in status)      # ERP codes mapped
    placed = next(e for e in events if e["type"] == "customer.order.placed")
    assert isinstance(placed["data"]["after"]["total"], str) and "." in placed["data"]["after"]["total"]
    # everything captured was confirmed and deleted from the changelog
    db = sqlite3.connect(tmp_path / "demo-state" / "erp.db")
    assert db.execute("SELECT COUNT(*) FROM cdc_changelog WHERE op <> 'S'").fetchone()[0] == 0
    db.close()
    # a second run starts over from a fresh sample database
    r2 = run_demo(ROOT, cfg, "--seconds", "1", "--quiet")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "business transactions" in r2.stdout and "order.status.changed" in r2.stdout
    import re
    assert not re.search(r"(?m)^  \d\d:\d\d:\d\d\.\d{3}  ", r2.stdout)            # --quiet: no event lines


def test_demo_never_replaces_a_database_it_did_not_make(tmp_path):
    cfg = tmp_path / "agent.toml"
    shutil.copy(ROOT / "agent.toml", cfg)
    (tmp_path / "demo-state").mkdir()
    real = sqlite3.connect(tmp_path / "demo-state" / "erp.db")
    real.execute("CREATE TABLE precious (x int)")
    real.commit()
    real.close()
    r = run_demo(ROOT, cfg, "--seconds", "1")
    assert r.returncode == 1 and "not the demo's database" in r.stderr and "Traceback" not in r.stderr
    assert sqlite3.connect(tmp_path / "demo-state" / "erp.db").execute("SELECT COUNT(*) FROM precious").fetchone()


def test_demo_from_a_fresh_clone(tmp_path):
    """As a new user: clone the repository and run the demo from it (the project's Python packages are
    already installed here; scripts/demo.sh would install them into .venv first)."""
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "agent/demo.py", "agent/demo_erp.sql",
                              "agent.toml", "migrations/trigger/sqlite/001_changelog.sql"],
                             cwd=ROOT, capture_output=True)
    assert tracked.returncode == 0, tracked.stderr          # a clone has only what is committed
    clone = tmp_path / "clone"
    r = subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = run_demo(clone, clone / "agent.toml", "--seconds", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(t in r.stdout for t in ("customer.order.placed", "order.status.changed"))
    assert "`cdc-agent status -c agent.toml`" in r.stdout
    assert (clone / "demo-state" / "out" / "events.jsonl").exists()


def test_demo_from_an_installed_wheel(tmp_path):
    """Installed from a wheel (not a checkout), the example config and the SQL migrations must come along:
    the spool's schema and the trigger capture are SQL files outside the Python packages. The wheel goes into
    a new prefix without the checkout; the dependencies come from this environment."""
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    # --ignore-installed: without it pip first uninstalls this environment's own (editable) cdc-agent
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                        "--prefix", str(prefix), *map(str, wheels.glob("cdc_agent-*.whl"))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    site = next(prefix.glob("lib/python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")     # after the wheel's own packages
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([str(prefix / "bin" / "python"), "-c",
                        "import agent, sys; from agent.cli import main; print(agent.__file__, file=sys.stderr); "
                        "sys.exit(main(['demo', '--seconds', '2', '--quiet']))"],
                       capture_output=True, text=True, cwd=work, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(site) in r.stderr                          # the installed copy ran, not the checkout
    assert "order.status.changed" in r.stdout and "Traceback" not in r.stderr
    assert "`cdc-agent run -c cdc-agent-demo/agent.toml`" in r.stdout      # where the config copy is
    events = read_events(work / "cdc-agent-demo" / "demo-state" / "out" / "events.jsonl", final=True)
    assert {e["type"] for e in events} >= {"customer.order.placed", "order.status.changed"}
    shipped = sorted(p.name for p in (prefix / "share" / "cdc-agent").iterdir())
    assert shipped == ["agent.toml", "docs", "migrations", "packaging"]
