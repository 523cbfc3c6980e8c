"""`cdc-agent connect` against the Kafka Connect REST stand-in (tests/plugins/connect_standin.py): the plan,
idempotent deploy, status and restarts, pause/resume/delete, Connect's errors as one line, and the offsets
hand-off both ways. That the plan is a working connector is shown with real Debezium in
tests/test_connect_debezium.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import cli, config, connect
from agent.spool import Spool

PASSWORD = "s3cret-Pw"


def write_cfg(tmp_path: Path, url: str, *, kind: str = "postgres", connect_extra: str = "", rules: str = "") -> Path:
    dsn = ("postgresql://cdc:${ERP_PASSWORD}@db.example:5433/erp" if kind == "postgres"
           else "mysql://cdc:${ERP_PASSWORD}@db.example:3307/erp")
    tables = '["public.customers", "public.orders"]' if kind == "postgres" else '["erp.customers", "erp.orders"]'
    p = tmp_path / "agent.toml"
    p.write_text(f"""
[agent]
name = "erp-east"
state_dir = "state"

[source]
kind = "{kind}"
dsn = "{dsn}"
tables = {tables}
{"heartbeat_seconds = 5" if kind == "postgres" else ""}

{rules}

[[targets]]
name = "f"
kind = "file"
path = "out.jsonl"

[connect]
url = "{url}"
options = {{ "tasks.max" = "1", "errors.log.enable" = "true" }}
{connect_extra}
""")
    return p


def run(capsys, cfg: Path, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["connect", *args, "-c", str(cfg)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("ERP_PASSWORD", PASSWORD)


RULES = """
[[events]]
type = "customer.pricing.updated"
table = "public.customers"
on = ["update"]
changed = ["price_tier"]
key = ["customer_id"]
fields = { id = "customer_id", tier = "price_tier" }

[[events]]
type = "order.status.changed"
table = "public.orders"
values = { status = { N = "accepted" } }
"""


def test_plan_is_the_postgres_connector_config_with_the_password_as_a_reference(tmp_path, capsys):
    cfg = write_cfg(tmp_path, "http://127.0.0.1:1", rules=RULES)
    rc, out, err = run(capsys, cfg, "plan")
    assert rc == 0
    c = json.loads(out)
    assert c["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert (c["database.hostname"], c["database.port"], c["database.user"], c["database.dbname"]) == (
        "db.example", "5433", "cdc", "erp")
    assert c["database.password"] == "${env:ERP_PASSWORD}"
    assert PASSWORD not in out + err
    assert c["table.include.list"] == r"public\.customers,public\.orders"
    assert (c["slot.name"], c["publication.name"], c["publication.autocreate.mode"]) == (
        "cdc_erp_east", "cdc_erp_east", "disabled")
    assert c["topic.prefix"] == "erp-east" and c["heartbeat.interval.ms"] == "5000"
    assert c["snapshot.mode"] == "initial"                      # no checkpoint yet
    assert c["message.key.columns"] == "public.customers:customer_id"
    assert c["errors.log.enable"] == "true"                     # [connect] options passed through
    assert c["decimal.handling.mode"] == "string" and c["value.converter.schemas.enable"] == "false"
    notes = [line for line in err.splitlines() if line.startswith("# not expressed: ")]
    assert any("changed = ['price_tier']" in n for n in notes)
    assert any("renames" in n and "customer.pricing.updated" in n for n in notes)
    assert any("values mappings (status)" in n for n in notes)
    assert any("on = ['update']" in n for n in notes)


def test_plan_mysql_and_file_config_provider(tmp_path, capsys):
    cfg = write_cfg(tmp_path, "http://127.0.0.1:1", kind="mysql",
                    connect_extra='secrets = "file:/opt/connect/secrets.properties"')
    rc, out, err = run(capsys, cfg, "plan")
    c = json.loads(out)
    assert c["connector.class"] == "io.debezium.connector.mysql.MySqlConnector"
    assert c["database.password"] == "${file:/opt/connect/secrets.properties:ERP_PASSWORD}"
    assert c["database.server.id"] == "4242" and c["database.include.list"] == "erp"
    assert c["table.include.list"] == r"erp\.customers,erp\.orders"
    assert "bootstrap.servers" in err and PASSWORD not in out + err


def test_literal_secret_in_options_is_a_config_error(tmp_path, capsys):
    cfg = write_cfg(tmp_path, "http://127.0.0.1:1", connect_extra="")
    cfg.write_text(cfg.read_text().replace('"errors.log.enable" = "true"', '"database.password" = "hunter22"'))
    rc, out, err = run(capsys, cfg, "plan")
    assert rc == 2 and "connect.options.database.password" in err and "hunter22" not in err


def test_deploy_is_idempotent_and_status_pause_resume_delete(tmp_path, capsys, connect_standin):
    cfg = write_cfg(tmp_path, connect_standin.url)
    rc, out, _ = run(capsys, cfg, "deploy")
    assert rc == 0 and "created" in out
    first = dict(connect_standin.connectors["erp-east"]["config"])
    rc, out, _ = run(capsys, cfg, "deploy")
    assert rc == 0 and "updated (or unchanged)" in out
    assert connect_standin.connectors["erp-east"]["config"] == first and len(connect_standin.connectors) == 1
    assert first["database.password"] == "${env:ERP_PASSWORD}"

    rc, out, _ = run(capsys, cfg, "status")
    assert rc == 0 and "connector erp-east: RUNNING" in out and "task 0: RUNNING" in out
    connect_standin.fail_task("erp-east")
    rc, out, _ = run(capsys, cfg, "status")
    assert rc == 1 and "task 0: FAILED" in out and "ConnectException: boom" in out
    rc, out, _ = run(capsys, cfg, "status", "--restart-failed")
    assert rc == 0 and "task 0: restart requested" in out
    assert ("POST", "/connectors/erp-east/tasks/0/restart") in connect_standin.requests
    rc, out, _ = run(capsys, cfg, "status")
    assert rc == 0 and "task 0: RUNNING" in out

    assert run(capsys, cfg, "pause")[0] == 0 and connect_standin.connectors["erp-east"]["state"] == "PAUSED"
    assert run(capsys, cfg, "resume")[0] == 0 and connect_standin.connectors["erp-east"]["state"] == "RUNNING"
    assert run(capsys, cfg, "restart")[0] == 0
    assert ("POST", "/connectors/erp-east/restart") in connect_standin.requests
    assert run(capsys, cfg, "delete")[0] == 0 and "erp-east" not in connect_standin.connectors
    rc, out, err = run(capsys, cfg, "status")
    assert rc == 1 and err.count("\n") == 1
    assert "GET /connectors/erp-east/status: not found: Connector erp-east not found" in err


def test_connect_errors_are_one_line(tmp_path, capsys, connect_standin):
    cfg = write_cfg(tmp_path, connect_standin.url)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('"tasks.max" = "1"', '"tasks.max" = "1", "topic.prefix" = ""'))
    rc, _, err = run(capsys, bad, "deploy")
    assert rc == 1 and err.count("\n") == 1
    assert 'refused the request: Connector configuration is invalid and contains the following 1 error(s): ' \
           'Missing required configuration "topic.prefix"' in err
    connect_standin.rebalancing = True
    rc, _, err = run(capsys, cfg, "deploy")
    assert rc == 1 and err.count("\n") == 1 and "busy" in err and "worker rebalance" in err
    connect_standin.rebalancing = False
    down = tmp_path / "down.toml"
    down.write_text(cfg.read_text().replace(connect_standin.url, "http://127.0.0.1:9"))
    rc, _, err = run(capsys, down, "status")
    assert rc == 1 and err.count("\n") == 1 and "unreachable" in err


def spool_with_checkpoint(cfg_path: Path, checkpoint: str) -> None:
    cfg = config.load(cfg_path)
    spool = Spool(cfg.agent.state_dir)
    spool.set_checkpoint(checkpoint)
    spool.close()


def test_handoff_sets_the_offset_before_the_connector_runs_and_handback_returns_it(tmp_path, capsys,
                                                                                    connect_standin):
    cfg = write_cfg(tmp_path, connect_standin.url)
    spool_with_checkpoint(cfg, "00000000016B3748")
    rc, out, _ = run(capsys, cfg, "plan")
    assert json.loads(out)["snapshot.mode"] == "no_data"         # the agent captured already: no snapshot
    rc, out, err = run(capsys, cfg, "deploy", "--handoff")
    assert rc == 0, err
    c = connect_standin.connectors["erp-east"]
    assert c["state"] == "RUNNING"
    assert c["offsets"] == [{"partition": {"server": "erp-east"},
                             "offset": {"lsn_proc": 0x16B3748 - 1, "lsn_commit": 0x16B3748, "lsn": 0x16B3748,
                                        "ts_usec": c["offsets"][0]["offset"]["ts_usec"]}}]
    # created stopped, offsets altered, then resumed: it never ran without the agent's position
    writes = [r for r in connect_standin.requests if r[0] != "GET"]
    assert writes == [("POST", "/connectors"), ("PATCH", "/connectors/erp-east/offsets"),
                      ("PUT", "/connectors/erp-east/resume")]

    # the connector moved on; hand the position back to the agent
    c["offsets"][0]["offset"].update(lsn=0x2000000, lsn_commit=0x2000000, lsn_proc=0x2000000)
    rc, out, err = run(capsys, cfg, "handback")
    assert rc == 0, err
    assert c["state"] == "STOPPED"
    spool = Spool(config.load(cfg).agent.state_dir)
    assert spool.checkpoint() == "0000000002000000"
    spool.close()

    # handing off again to the existing connector: it is stopped before its offsets change
    connect_standin.requests.clear()
    assert run(capsys, cfg, "deploy", "--handoff")[0] == 0
    writes = [r for r in connect_standin.requests if r[0] != "GET"]
    assert writes == [("PUT", "/connectors/erp-east/config"), ("PUT", "/connectors/erp-east/stop"),
                      ("PATCH", "/connectors/erp-east/offsets"), ("PUT", "/connectors/erp-east/resume")]


def test_offsets_cannot_change_while_running_and_the_error_says_so(tmp_path, capsys, connect_standin):
    cfg = config.load(write_cfg(tmp_path, connect_standin.url))
    client = connect.ConnectClient(connect_standin.url, "erp-east")
    client.put_config(connect.plan(cfg)[0])
    with pytest.raises(connect.ConnectError, match="must be in the STOPPED state"):
        client.alter_offsets([{"partition": connect.partition(cfg), "offset": {"lsn": 1}}])
    client.close()


def test_mysql_offsets_convert_both_ways(tmp_path):
    cfg = config.load(write_cfg(tmp_path, "http://127.0.0.1:1", kind="mysql"))
    off = connect.offset_from_checkpoint(cfg, "gtid=0-1-42;file=mysql-bin.000003;pos=1234")
    assert off == {"file": "mysql-bin.000003", "pos": 1234}
    assert connect.checkpoint_from_offset(cfg, {**off, "row": 1, "server_id": 1}) == "file=mysql-bin.000003;pos=1234"
