"""The README's first command: `cdc-agent demo` creates the sample ERP, captures it with triggers and prints
domain events of every kind, which are also in the file target."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

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
    events = read_events(tmp_path / "demo-state" / "out" / "events.jsonl")
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
    if tracked.returncode != 0:
        pytest.skip("the demo's files are not committed yet (a clone would not have them)")
    clone = tmp_path / "clone"
    r = subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = run_demo(clone, clone / "agent.toml", "--seconds", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(t in r.stdout for t in ("customer.order.placed", "order.status.changed"))
    assert (clone / "demo-state" / "out" / "events.jsonl").exists()
