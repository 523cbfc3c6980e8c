"""Config parsing: a good file gives typed objects; each kind of broken file gives one clear error
naming the file and key, through the CLI with exit code 2 and no traceback."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError

GOOD = """
[agent]
name = "erp-east"
state_dir = "state"

[source]
kind = "postgres"
dsn = "postgresql://cdc:${ERP_PASSWORD}@127.0.0.1:5432/erp"
tables = ["public.customers", "public.orders"]

[[events]]
type = "customer.pricing.updated"
table = "public.customers"
on = ["update"]
changed = ["price_tier"]
fields = { id = "customer_id", tier = "price_tier" }

[[events]]
type = "order.status.changed"
table = "public.orders"
values = { status = { N = "accepted", S = "shipped" } }

[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"

[[targets]]
name = "crm"
kind = "http"
url = "http://127.0.0.1:9000/hooks"
events = ["customer.*"]
headers = { Authorization = "Bearer ${CRM_TOKEN}" }

[health]
listen = "off"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("ERP_PASSWORD", "s3cr3t-pw")
    monkeypatch.setenv("CRM_TOKEN", "tok-12345")


def test_good_config_parses_into_typed_objects(tmp_path):
    cfg = config.load(write(tmp_path, GOOD))
    assert cfg.agent.name == "erp-east"
    assert cfg.agent.state_dir == (tmp_path / "state").resolve()
    assert cfg.source.dsn == "postgresql://cdc:s3cr3t-pw@127.0.0.1:5432/erp"
    assert cfg.source.slot == "cdc_erp_east" and cfg.source.publication == "cdc_erp_east"
    r0 = cfg.events[0]
    assert r0.on == frozenset({"update"}) and r0.changed == ("price_tier",)
    assert r0.fields == (("id", "customer_id"), ("tier", "price_tier"))
    assert cfg.events[1].on == frozenset({"insert", "update", "delete"})
    assert cfg.events[1].values["status"]["S"] == "shipped"
    audit, crm = cfg.targets
    assert audit.options.path == (tmp_path / "out/events.jsonl").resolve()
    assert crm.options.headers == {"Authorization": "Bearer tok-12345"}
    assert crm.wants("customer.pricing.updated") and not crm.wants("order.status.changed")
    assert cfg.health.listen is None


BROKEN = [
    # (what is broken, replacement of GOOD text (old, new), expected key path, words of the message)
    ("missing agent name", ('name = "erp-east"\n', ""), "agent.name", "required"),
    ("bad agent name", ('name = "erp-east"', 'name = "ERP East"'), "agent.name", "[a-z0-9_-]+"),
    ("unknown key", ('state_dir = "state"', 'state_dir = "state"\ncolour = "red"'), "agent.colour", "unknown key"),
    ("unknown source kind", ('kind = "postgres"', 'kind = "oracle"'), "source.kind", "must be one of"),
    ("tables not a list", ('tables = ["public.customers", "public.orders"]', 'tables = "public.customers"'),
     "source.tables", "must be an array"),
    ("table without schema", ('"public.orders"]', '"orders"]'), "source.tables", "schema.table"),
    ("missing env var", ("${ERP_PASSWORD}", "${NOPE_NOT_SET}"), "source.dsn", "NOPE_NOT_SET"),
    ("literal password", ("${ERP_PASSWORD}", "hunter22"), "source.dsn", "environment variable"),
    ("rule on uncaptured table", ('table = "public.orders"\nvalues', 'table = "public.invoices"\nvalues'),
     "events[1].table", "not in source.tables"),
    ("bad op", ('on = ["update"]', 'on = ["upsert"]'), "events[0].on", "subset"),
    ("changed column not in fields", ('changed = ["price_tier"]', 'changed = ["discount_pct"]'),
     "events[0].changed", "not in fields"),
    ("target kind not built yet", ('kind = "file"', 'kind = "sql"'), "targets[0].kind", "not supported yet"),
    ("missing file path", ('path = "out/events.jsonl"\n', ""), "targets[0].path", "required"),
    ("duplicate target name", ('name = "crm"', 'name = "audit"'), "targets[1].name", "used twice"),
    ("bad url", ('url = "http://127.0.0.1:9000/hooks"', 'url = "ftp://x"'), "targets[1].url", "http"),
    ("literal token", ("Bearer ${CRM_TOKEN}", "Bearer abcdef"), "targets[1].headers.Authorization",
     "environment variable"),
    ("wrong type", ("[[targets]]\nname = \"audit\"", "[[targets]]\nname = \"audit\"\nbatch_size = \"ten\""),
     "targets[0].batch_size", "must be an integer"),
    ("bad listen", ('listen = "off"', 'listen = "nowhere"'), "health.listen", "host:port"),
    ("no targets", (GOOD[GOOD.index("[[targets]]"):GOOD.index("[health]")], ""), "targets", "at least one"),
    ("not toml", ("[health]", "[health"), None, "not valid TOML"),
]


@pytest.mark.parametrize("what,change,key,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_names_file_key_and_problem(tmp_path, what, change, key, words):
    old, new = change
    assert old in GOOD, what
    p = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.file == str(p)
    if key:
        assert ei.value.key == key
    assert words in ei.value.problem


@pytest.mark.parametrize("what,change,key,words", BROKEN[:12:1], ids=[b[0] for b in BROKEN[:12]])
def test_cli_reports_broken_config_in_one_line_exit_2(tmp_path, what, change, key, words):
    old, new = change
    p = write(tmp_path, GOOD.replace(old, new, 1))
    r = subprocess.run([sys.executable, "-m", "agent.cli", "check", "-c", str(p)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "ERP_PASSWORD": "s3cr3t-pw", "CRM_TOKEN": "tok-12345"},
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(p) in lines[0] and words in lines[0]
    assert "Traceback" not in r.stderr and "s3cr3t-pw" not in r.stderr + r.stdout


def test_missing_file_and_bad_argument_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-c", str(tmp_path / "nope.toml")],
                       capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "agent.cli", "frobnicate"], capture_output=True, text=True,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
