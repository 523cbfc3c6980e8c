"""Targets that own their options (adapters/<kind>.py, read by the generic reader in agent/config.py), the
settings common to every target, and the delivery worker's edges: a position the target applied itself, a
format rendered once, and a bug that stops the worker visibly instead of being retried as an outage."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

import adapters
from adapters.http import HttpOptions
from agent import config as config_mod
from agent import formats, worker
from agent.errors import ConfigError, TargetRejected, TargetUnavailable
from agent.health import HealthServer, health_report
from agent.interfaces import DeliveryResult, SpooledEvent
from agent.monitor import Monitor
from agent.options import ConfigPath, OptionError, Secret, Url, option
from agent.spool import Spool
from tests.agentproc import ROOT, wait_for
from tests.plugins import free_port
from tests.test_delivery import (ENV, Delivery, counters, customer_changes, file_block, http_block, load,
                                 spool_changes, write_config)

# ------------------------------------------------------------------------------------------ config side


def target_error(tmp_path, monkeypatch, block: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load(write_config(tmp_path, block), monkeypatch)
    return ei.value


def test_retry_settings_are_common_to_every_target_kind(tmp_path, monkeypatch):
    block = file_block("audit") + ("retry_initial_seconds = 0.25\nretry_max_seconds = 2\ncircuit_failures = 3\n"
                                   "circuit_open_seconds = 4\n")
    cfg = load(write_config(tmp_path, block + http_block("crm", "http://127.0.0.1:9/x")), monkeypatch)
    audit, crm = cfg.targets
    assert (audit.retry_initial_seconds, audit.retry_max_seconds, audit.circuit_failures,
            audit.circuit_open_seconds) == (0.25, 2.0, 3, 4.0)
    assert audit.batch_size == 5000 and crm.batch_size == 10          # the kind's default, or what is written
    assert (crm.retry_initial_seconds, crm.retry_max_seconds) == (0.1, 0.8)
    w = worker.TargetWorker(cfg, audit, Monitor("a", "postgres"), threading.Event())
    assert (w.policy.initial, w.policy.maximum, w.policy.circuit_failures, w.policy.circuit_open_seconds) == \
        (0.25, 2.0, 3, 4.0)


@pytest.mark.parametrize("block,key,words", [
    (http_block("crm", "http://127.0.0.1:99999/hooks"), "targets[0].url", "port out of range"),
    (http_block("crm", "http://127.0.0.1:0/hooks"), "targets[0].url", "port out of range"),
    (http_block("crm", "http:///hooks"), "targets[0].url", "with a host"),
    (http_block("crm", "http://u:literal-pw@127.0.0.1/hooks"), "targets[0].url", "environment variable"),
    (http_block("crm", "http://127.0.0.1:9/x", batch_size=2**62), "targets[0].batch_size", "at most 100000"),
    (http_block("crm", "http://127.0.0.1:9/x", batch_size=100_001), "targets[0].batch_size", "at most 100000"),
    (http_block("crm", "http://127.0.0.1:9/x", timeout_seconds="inf"), "targets[0].timeout_seconds", "finite"),
    (http_block("crm", "http://127.0.0.1:9/x", timeout_seconds=0), "targets[0].timeout_seconds",
     "greater than zero"),
    (http_block("crm", "http://127.0.0.1:9/x").replace('"${T_SECRET}"', '"whsec_bGl0ZXJhbA=="'),
     "targets[0].signing_secret", "environment variable"),
    (file_block("audit") + "url = \"http://x\"\n", "targets[0].url", "unknown key"),
    (file_block("audit") + "format = \"avro\"\n", "targets[0].format", "cloudevents"),
    (file_block("audit").replace('"file"', '"carrier-pigeon"'), "targets[0].kind", "must be one of file, http"),
    (file_block("audit").replace('"file"', '"../agent"'), "targets[0].kind", "must be one of"),
])
def test_target_config_refuses_what_would_only_fail_when_used(tmp_path, monkeypatch, block, key, words):
    err = target_error(tmp_path, monkeypatch, block)
    assert err.key == key and words in err.problem, str(err)
    assert "literal-pw" not in str(err)


def test_signing_secret_checked_by_the_http_options(tmp_path, monkeypatch):
    monkeypatch.setenv("T_BAD", "whsec_not base64!")
    err = target_error(tmp_path, monkeypatch, http_block("crm", "http://127.0.0.1:9/x").replace(
        "${T_SECRET}", "${T_BAD}"))
    assert err.key == "targets[0].signing_secret" and "base64" in err.problem
    assert "not base64!" not in str(err)


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """A kind's options as another target module would declare them (the reader knows no kind by name)."""
    url: Url = option(schemes=("amqp", "amqps"))
    routing_key: str = option("{type}")
    password: Secret | None = None
    ca_file: ConfigPath | None = None
    qos: int = option(1, choices=(0, 1, 2))
    prefetch: int = option(10, minimum=1, maximum=1000)
    durable: bool = True
    servers: tuple[str, ...] = option(("a",), nonempty=True)
    properties: dict[str, str] = option({}, secret_keys=r"(?i)token")

    def __post_init__(self):
        if self.durable and self.qos == 0:
            raise OptionError("qos", "must be 1 or 2 for durable delivery")


def read_demo(tmp_path, table: dict):
    r = config_mod._Reader("agent.toml", "targets[0]", table, {f.name for f in dataclasses.fields(DemoOptions)})
    return config_mod._options(r, DemoOptions, tmp_path)


def test_the_generic_reader_reads_any_options_dataclass(tmp_path, monkeypatch):
    monkeypatch.setenv("T_MQ_PW", "mq-secret-pw-1")
    monkeypatch.setenv("T_MQ_TOKEN", "mq-token-abc")
    o = read_demo(tmp_path, {"url": "amqps://app:${T_MQ_PW}@mq.local:5671/vh", "password": "${T_MQ_PW}",
                             "ca_file": "certs/ca.pem", "qos": 2, "servers": ["x", "y"],
                             "properties": {"api_token": "Bearer ${T_MQ_TOKEN}", "app": "erp"}})
    assert o.url == "amqps://app:mq-secret-pw-1@mq.local:5671/vh" and o.password == "mq-secret-pw-1"
    assert o.ca_file == (tmp_path / "certs/ca.pem").resolve() and o.servers == ("x", "y")
    assert o.properties == {"api_token": "Bearer mq-token-abc", "app": "erp"} and o.routing_key == "{type}"
    from agent.secrets import redact
    assert redact("pw mq-secret-pw-1 tok mq-token-abc") == "pw *** tok ***"
    for table, key, words in [
        ({"url": "http://mq.local"}, "targets[0].url", "amqp:// or amqps://"),
        ({"url": "amqp://h", "qos": 3}, "targets[0].qos", "one of 0, 1, 2"),
        ({"url": "amqp://h", "qos": 0}, "targets[0].qos", "durable"),             # __post_init__'s OptionError
        ({"url": "amqp://h", "prefetch": 0}, "targets[0].prefetch", "at least 1"),
        ({"url": "amqp://h", "prefetch": 1001}, "targets[0].prefetch", "at most 1000"),
        ({"url": "amqp://h", "durable": "yes"}, "targets[0].durable", "a boolean"),
        ({"url": "amqp://h", "servers": []}, "targets[0].servers", "must not be empty"),
        ({"url": "amqp://h", "password": "hunter22"}, "targets[0].password", "environment variable"),
        ({"url": "amqp://h", "properties": {"api_token": "abc"}}, "targets[0].properties.api_token",
         "environment variable"),
        ({"url": "amqp://h", "properties": {"n": 1}}, "targets[0].properties.n", "must be a string"),
        ({"url": "amqp://h", "colour": "red"}, "targets[0].colour", "unknown key"),
        ({"routing_key": "x"}, "targets[0].url", "required"),
    ]:
        with pytest.raises(ConfigError) as ei:
            read_demo(tmp_path, table)
        assert ei.value.key == key and words in ei.value.problem, (table, str(ei.value))
        assert "hunter22" not in str(ei.value)


def test_every_built_kind_declares_its_options_in_its_own_module():
    assert {"file", "http", "sql", "kafka", "nats", "rabbitmq", "redis", "mqtt"} <= set(adapters.kinds())
    assert "envelope" not in adapters.kinds()
    for kind in adapters.kinds():
        spec = adapters.target_kind(kind)
        assert dataclasses.is_dataclass(spec.options) and spec.options.__module__ == f"adapters.{kind}"
    src = (ROOT / "agent/config.py").read_text()
    for word in ('"file"', '"http"', "FileOptions", "HttpOptions", "kafka"):
        assert word not in src, f"config.py knows the target kind {word} by name"


def test_parsing_a_config_imports_no_client_library_and_no_import_circle(tmp_path):
    cfg = write_config(tmp_path, http_block("crm", "http://127.0.0.1:9/x") + file_block("audit"))
    code = (f"import sys; from agent import config; config.load({str(cfg)!r}); "
            "assert 'httpx' not in sys.modules, 'parsing a config imported httpx'; "
            "import agent.delivery; assert 'agent.pipeline' not in sys.modules, 'delivery imports pipeline'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", **ENV})
    assert r.returncode == 0, r.stderr
    assert "from .pipeline" not in (ROOT / "agent/delivery.py").read_text()
    for mod in ("agent/pipeline.py", "agent/delivery.py"):
        src = (ROOT / mod).read_text()
        assert not re.search(r"(?m)^\s+from \.(pipeline|delivery|worker) import", src), f"{mod}: a lazy import"


# ------------------------------------------------------------------------------------------ worker side


class RecordingTarget:
    """A target in memory: records what it was sent; `applied` is what open() reports; `script` is a list of
    exceptions raised by the next sends (None: accept)."""

    def __init__(self, applied: str | None = None, script: list | None = None, reject_ids: set | None = None):
        self.name = "test"
        self.applied, self.script, self.reject_ids = applied, list(script or []), reject_ids or set()
        self.sent: list[SpooledEvent] = []
        self.sends = 0
        self.opened = 0

    def open(self) -> str | None:
        self.opened += 1
        return self.applied

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        self.sends += 1
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise err
        if self.reject_ids and any(e.id in self.reject_ids for e in events):
            raise TargetRejected("HTTP 422: no")
        self.sent.extend(events)
        return DeliveryResult()

    def close(self) -> None:
        pass


def use_target(monkeypatch, target) -> None:
    monkeypatch.setattr(worker, "build_target", lambda settings: target)


def fast_file_cfg(tmp_path, monkeypatch, extra: str = ""):
    block = file_block("audit") + ("batch_size = 4\nretry_initial_seconds = 0.05\nretry_max_seconds = 0.1\n"
                                   + extra)
    return load(write_config(tmp_path, block), monkeypatch)


def test_events_the_target_applied_itself_are_not_sent_again(tmp_path, monkeypatch):
    cfg = fast_file_cfg(tmp_path, monkeypatch)
    changes = customer_changes(10)
    ids = spool_changes(cfg, changes)
    sp = Spool(cfg.agent.state_dir)
    spooled = sp.fetch(0, 100)
    sp.close()
    assert [e.position for e in spooled] == [c.position for c in changes]       # the spool hands positions on
    target = RecordingTarget(applied=changes[5].position)
    use_target(monkeypatch, target)
    with Delivery(cfg):
        wait_for(lambda: counters(cfg, "audit")[1] == 0, 20, what="the cursor past everything")
    assert [e.id for e in target.sent] == ids[6:]
    assert target.opened == 1
    assert counters(cfg, "audit")[0].delivered == 4


def test_debezium_is_rendered_once_per_event_however_often_it_is_sent(tmp_path, monkeypatch):
    cfg = fast_file_cfg(tmp_path, monkeypatch, 'format = "debezium"\n')
    ids = spool_changes(cfg, customer_changes(8))
    # the column types Debezium's encodings need, as a first render would have read them (no database here)
    (cfg.agent.state_dir / "column_types.json").write_text(orjson.dumps(
        {"kind": "postgres", "tables": {"public.customers": {}}}).decode())
    calls = []
    real = formats.render

    def counting_render(body, fmt, cfg=None):
        calls.append(orjson.loads(body)["id"])
        return real(body, fmt, cfg)

    monkeypatch.setattr(worker, "render", counting_render)
    # two outages, then the batch holding ids[1] is split down to it (rejected), the rest goes through
    target = RecordingTarget(script=[TargetUnavailable("down"), TargetUnavailable("down")], reject_ids={ids[1]})
    use_target(monkeypatch, target)
    with Delivery(cfg):
        wait_for(lambda: counters(cfg, "audit")[1] == 0, 20, what="delivery")
    assert sorted(calls) == sorted(ids), "each event rendered exactly once"
    assert target.sends > 4
    # the envelope is Debezium's (no agent fields in it); the event id travels beside it, for headers
    assert [e.id for e in target.sent] == ids[:1] + ids[2:]
    assert all(orjson.loads(e.body)["op"] in "cud" and "id" not in orjson.loads(e.body) for e in target.sent)
    assert counters(cfg, "audit")[2][0].body is not None and orjson.loads(counters(cfg, "audit")[2][0].body)[
        "id"] == ids[1]                                  # the dead letter keeps the CloudEvent


class BuggyTarget(RecordingTarget):
    def send(self, events):
        self.sends += 1
        return {}["no such key"]          # a bug in an adapter


def test_a_bug_in_a_target_stops_its_worker_visibly_instead_of_retrying(tmp_path, monkeypatch, caplog):
    port = free_port()
    cfg = load(write_config(tmp_path, file_block("audit") + "retry_initial_seconds = 0.05\n"
                            + file_block("other", "out/other.jsonl"),
                            health=f'listen = "127.0.0.1:{port}"'), monkeypatch)
    spool_changes(cfg, customer_changes(5))
    target = BuggyTarget()
    real_build = worker.build_target
    monkeypatch.setattr(worker, "build_target", lambda s: target if s.name == "audit" else real_build(s))
    caplog.set_level(logging.INFO)
    with Delivery(cfg) as d:
        d.workers["audit"].join(20)
        assert not d.workers["audit"].is_alive(), "the worker must stop on a bug, not retry it"
        wait_for(lambda: counters(cfg, "other")[1] == 0, 20, what="the other target")   # unaffected
        live = d.monitor.targets["audit"]
        assert live.state == "stopped" and "KeyError" in live.last_error and "bug" in live.last_error
        server = HealthServer(cfg, d.monitor)
        server.start()
        try:
            r = subprocess.run([sys.executable, "-m", "agent.cli", "status", "-c", str(cfg.path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **ENV})
        finally:
            server.stop()
    assert target.sends == 1
    assert counters(cfg, "audit")[1] == 5 and counters(cfg, "audit")[0].failed == 0    # not an outage
    bug_logs = [rec for rec in caplog.records if rec.exc_info and "audit" in rec.getMessage()]
    assert bug_logs and bug_logs[0].levelno == logging.ERROR and bug_logs[0].exc_info[0] is KeyError
    assert r.returncode == 1 and "failing" in r.stdout, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("audit "))
    assert "stopped" in line and "KeyError" in line


@pytest.mark.parametrize("broken,error", [
    (dict(batch_size=10**20), "OverflowError"),                           # more than SQLite can bind
    (dict(kind="http", options=HttpOptions(url="http://127.0.0.1:99999/x")), "Port out of range"),
])
def test_a_worker_that_dies_on_settings_says_so_in_health(tmp_path, monkeypatch, broken, error):
    # a Config built without the reader (tests, tools) can hold what only fails when used: the worker must
    # still end visibly rather than leave health saying ok
    cfg = fast_file_cfg(tmp_path, monkeypatch)
    spool_changes(cfg, customer_changes(3))
    cfg = dataclasses.replace(cfg, targets=(dataclasses.replace(cfg.targets[0], **broken),))
    with Delivery(cfg) as d:
        d.workers["audit"].join(20)
        assert not d.workers["audit"].is_alive()
        spool = Spool(cfg.agent.state_dir)
        try:
            report = health_report(cfg, d.monitor, spool)
        finally:
            spool.close()
    t = report["targets"]["audit"]
    assert t["state"] == "stopped" and error in t["last_error"]
    assert report["status"] == "failing" and any("audit stopped" in x for x in report["reasons"])


def test_a_target_that_cannot_open_is_retried_with_its_settings(tmp_path, monkeypatch):
    cfg = fast_file_cfg(tmp_path, monkeypatch)
    ids = spool_changes(cfg, customer_changes(3))

    class FlakyOpen(RecordingTarget):
        def open(self):
            self.opened += 1
            if self.opened < 3:
                raise TargetUnavailable("broker not reachable")
            return None

    target = FlakyOpen()
    use_target(monkeypatch, target)
    with Delivery(cfg) as d:
        wait_for(lambda: counters(cfg, "audit")[1] == 0 and d.monitor.targets["audit"].state == "ok", 20,
                 what="delivery after the target opened")
    assert target.opened == 3 and [e.id for e in target.sent] == ids
    assert counters(cfg, "audit")[0].failed == 2


def test_module_of_a_target_kind_is_one_file(tmp_path):
    # the pattern other target modules copy: options, target class and KIND in adapters/<kind>.py
    for kind in adapters.kinds():
        src = Path(adapters.__file__).with_name(f"{kind}.py").read_text()
        assert "KIND = TargetKind(" in src
