"""`[[alerts]]`: the condition language, the pending → firing → resolved states, Alertmanager's webhook format,
delivery to a real receiver with retries, and a running agent whose lag and dead letters fire and resolve."""

from __future__ import annotations


import orjson
import pytest

from agent import config as config_mod
from agent.alerts import (AlertBook, AlertNotifier, AlertRule, AlertSyntaxError, alertmanager_payload, lookup,
                          parse_when)
from agent.errors import ConfigError
from tests.agentproc import AgentProcess, wait_for
from tests.plugins.http_receiver import HttpReceiver
from tests.test_pg_pipeline import cli


def rule(when: str, for_seconds: float = 0.0, name: str = "r", webhook: str = "http://127.0.0.1:1/") -> AlertRule:
    path, op, num = parse_when(when)
    return AlertRule(name=name, when=when, path=path, op=op, threshold=num, webhook=webhook, for_seconds=for_seconds)


@pytest.mark.parametrize("when, path, op, num", [
    ("targets.crm.pending > 1000", ("targets", "crm", "pending"), ">", 1000.0),
    ("source.lag_seconds>=2.5", ("source", "lag_seconds"), ">=", 2.5),
    ('event_types."order.status.changed".p95_ms > 2000', ("event_types", "order.status.changed", "p95_ms"), ">",
     2000.0),
    ("dead_letters != 0", ("dead_letters",), "!=", 0.0),
    ("source.connected == 0", ("source", "connected"), "==", 0.0),
    ("x < -1e3", ("x",), "<", -1000.0),
])
def test_when_is_parsed(when, path, op, num):
    assert parse_when(when) == (path, op, num)


@pytest.mark.parametrize("when", ["targets.crm.pending", "> 5", "a.b > five", "a..b > 1", "a. > 1", 'a."b > 1',
                                  "a b > 1", "a > 1 > 2", ""])
def test_bad_when_is_refused(when):
    with pytest.raises(AlertSyntaxError):
        parse_when(when)


def test_lookup_reads_numbers_and_booleans_only():
    report = {"source": {"connected": True, "position": "00AB"}, "targets": {"crm": {"pending": 7}}}
    assert lookup(report, ("targets", "crm", "pending")) == 7
    assert lookup(report, ("source", "connected")) == 1.0
    assert lookup(report, ("source", "position")) is None
    assert lookup(report, ("targets", "erp", "pending")) is None


def test_fires_after_holding_for_seconds_once_then_resolves():
    book = AlertBook((rule("targets.crm.pending > 10", for_seconds=30),), "erp-east")
    high = {"targets": {"crm": {"pending": 50}}}
    assert book.evaluate(high, now=100) == []                      # pending since 100
    assert book.evaluate(high, now=129) == []
    fired = book.evaluate(high, now=130)
    assert [n.status for n in fired] == ["firing"] and fired[0].value == 50
    assert book.evaluate(high, now=131) == []                      # once, not on every evaluation
    assert [a["name"] for a in book.firing()] == ["r"]
    resolved = book.evaluate({"targets": {"crm": {"pending": 3}}}, now=140)
    assert [(n.status, n.starts_at, n.ends_at) for n in resolved] == [("resolved", 130, 140)]
    assert book.firing() == []


def test_a_dip_restarts_the_hold():
    book = AlertBook((rule("a > 1", for_seconds=10),), "x")
    book.evaluate({"a": 5}, now=0)
    book.evaluate({"a": 0}, now=5)           # dipped: no notification (it never fired)
    assert book.evaluate({"a": 5}, now=12) == []
    assert [n.status for n in book.evaluate({"a": 5}, now=22)] == ["firing"]


def test_a_high_priority_dead_letter_skips_the_hold():
    book = AlertBook((rule("dead_letters > 0", for_seconds=600),), "x")
    assert book.evaluate({"dead_letters": 1, "dead_letters_by_priority": {"high": 0}}, now=0) == []
    fired = book.evaluate({"dead_letters": 2, "dead_letters_by_priority": {"high": 1}}, now=1)
    assert [n.status for n in fired] == ["firing"]


def test_payload_follows_alertmanager_webhook_format():
    n = AlertBook((rule("a > 1", name="crm-backlog"),), "erp-east").evaluate({"a": 3}, now=1_700_000_000)[0]
    p = alertmanager_payload(n, "erp-east", "http://127.0.0.1:8765/")
    assert p["version"] == "4" and p["status"] == "firing" and p["receiver"]
    assert set(p) >= {"groupKey", "truncatedAlerts", "groupLabels", "commonLabels", "commonAnnotations",
                      "externalURL", "alerts"}
    (a,) = p["alerts"]
    assert a["labels"]["alertname"] == "crm-backlog" and a["labels"]["agent"] == "erp-east"
    assert a["labels"]["severity"] == "warning"
    assert a["startsAt"] == "2023-11-14T22:13:20.000000Z" and a["endsAt"] == "0001-01-01T00:00:00Z"
    assert a["annotations"]["value"] == "3" and a["fingerprint"]


def test_notifier_retries_until_the_receiver_accepts(tmp_path):
    rx = HttpReceiver().start()
    try:
        rx.script("status", 503, times=2)
        r = rule("a > 1", webhook=rx.url)
        book = AlertBook((r,), "erp-east")
        notifier = AlertNotifier("erp-east")
        notifier.start()
        notifier.submit(book.evaluate({"a": 2}, now=10))
        notifier.submit(book.evaluate({"a": 0}, now=20))
        wait_for(lambda: notifier.sent == 2, 30, what="both notifications accepted")
        notifier.stop()
        bodies = [orjson.loads(q.body) for q in rx.requests]
        assert [b["status"] for b in bodies] == ["firing", "firing", "firing", "resolved"]
        assert [q.status for q in rx.requests] == [503, 503, 200, 200]
    finally:
        rx.close()


@pytest.mark.parametrize("alert, key, problem", [
    ('name = "a"\nwhen = "x >"\nwebhook = "http://h:1/"', "alerts[0].when", "must be"),
    ('name = "a"\nwhen = "x > 1"\nwebhook = "ftp://h/"', "alerts[0].webhook", "http"),
    ('name = "A B"\nwhen = "x > 1"\nwebhook = "http://h:1/"', "alerts[0].name", "must match"),
    ('name = "a"\nwhen = "x > 1"\nwebhook = "http://h:1/"\nfor_seconds = -1', "alerts[0].for_seconds", "zero or more"),
    ('name = "a"\nwhen = "x > 1"\nwebhook = "http://h:1/"\nlabel = "x"', "alerts[0].label", "unknown key"),
])
def test_bad_alert_config_names_the_key(tmp_path, alert, key, problem):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""[agent]\nname = "a"\n[source]\nkind = "trigger"\ndsn = "sqlite:///erp.db"\ntables = ["main.t"]
[[targets]]\nname = "f"\nkind = "file"\npath = "out.jsonl"\n[[alerts]]\n{alert}\n""")
    with pytest.raises(ConfigError) as e:
        config_mod.load(cfg)
    assert e.value.key == key and problem in e.value.problem


def test_running_agent_fires_and_resolves_lag_and_dead_letter_alerts(pg_db, tmp_path):
    """A target that is down fills a tiny spool, capture pauses, lag grows: the lag alert fires; one event
    the target refuses for good is a dead letter: that alert fires too. The target recovers, the dead letter
    is dropped: both resolve."""
    pg_db.execute("CREATE TABLE customers (customer_id int PRIMARY KEY, name text)")
    target, hooks = HttpReceiver().start(), HttpReceiver().start()
    try:
        target.behave("status", 503)
        cfg = tmp_path / "agent.toml"
        cfg.write_text(f"""
[agent]
name = "alerting"
state_dir = "state"
spool_max_events = 5
delivery = "thread"
[source]
kind = "postgres"
dsn = "{pg_db.dsn}"
tables = ["public.customers"]
heartbeat_seconds = 1
snapshot = "never"
[[events]]
type = "customer.changed"
table = "public.customers"
priority = "high"
[[targets]]
name = "crm"
kind = "http"
url = "{target.url}"
batch_size = 1
retry_initial_seconds = 0.2
retry_max_seconds = 0.5
circuit_failures = 1000
[health]
listen = "127.0.0.1:{_port()}"
[[alerts]]
name = "lag"
when = "source.lag_seconds > 1.5"
for_seconds = 1
webhook = "{hooks.url}"
severity = "critical"
[[alerts]]
name = "dead-letters"
when = "dead_letters > 0"
for_seconds = 3600
webhook = "{hooks.url}"
""")
        assert cli("setup", "-c", str(cfg)).returncode == 0
        with AgentProcess(cfg, tmp_path / "agent.log") as agent:
            with pg_db.connect() as conn:
                for i in range(12):
                    conn.execute("INSERT INTO customers VALUES (%s, %s)", (i, f"c{i}"))

            def notified(name, status):
                return any(a["labels"]["alertname"] == name and a["status"] == status
                           for q in hooks.requests for a in orjson.loads(q.body)["alerts"])

            wait_for(lambda: notified("lag", "firing"), 60, what="the lag alert firing")
            health = orjson.loads(_get(cfg, "/health"))
            assert [a["name"] for a in health["alerts"]] == ["lag"] and health["alerts"][0]["severity"] == "critical"
            target.behave("reject", subjects={"3"})       # back, but event of customer 3 refused for good
            wait_for(lambda: notified("dead-letters", "firing"), 60,
                     what="the dead-letter alert firing at once (a high-priority type skips for_seconds)")
            wait_for(lambda: notified("lag", "resolved"), 60, what="the lag alert resolved")
            dl = cli("dlq", "list", "-c", str(cfg), "--json").stdout.splitlines()
            assert len(dl) == 1
            assert cli("dlq", "drop", str(orjson.loads(dl[0])["id"]), "-c", str(cfg)).returncode == 0
            wait_for(lambda: notified("dead-letters", "resolved"), 60, what="the dead-letter alert resolved")
            assert agent.stop() == 0, agent.log()
        firing = [orjson.loads(q.body) for q in hooks.requests]
        assert all(b["version"] == "4" for b in firing)
    finally:
        target.close()
        hooks.close()


def _port() -> int:
    from tests.plugins import free_port
    return free_port()


def _get(cfg, path: str) -> bytes:
    import tomllib
    import urllib.error
    import urllib.request
    listen = tomllib.loads(cfg.read_text())["health"]["listen"]
    try:
        return urllib.request.urlopen(f"http://{listen}{path}", timeout=5).read()
    except urllib.error.HTTPError as e:
        return e.read()


def test_an_event_type_over_its_sla_degrades_health(tmp_path):
    from agent.health import health_report
    from agent.monitor import Monitor
    from agent.spool import Spool

    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text('[agent]\nname = "m"\n[source]\nkind = "postgres"\ndsn = "postgresql://u@127.0.0.1/db"\n'
                        'tables = ["public.orders"]\n'
                        '[[events]]\ntype = "order.status.changed"\ntable = "public.orders"\nsla_ms = 2000\n'
                        'priority = "high"\n'
                        '[[events]]\ntype = "order.placed"\ntable = "public.orders"\nsla_ms = 2000\n'
                        '[[targets]]\nname = "f"\nkind = "file"\npath = "o.jsonl"\n')
    cfg = config_mod.load(cfg_file)
    from agent.changes import SourceStatus
    monitor = Monitor("m", "postgres")
    monitor.source_status_fn = lambda: SourceStatus(connected=True)
    monitor.tracker.observe("f", [0.1] * 90 + [3.0] * 10, ["order.status.changed"] * 100)
    monitor.tracker.observe("f", [0.1] * 100, ["order.placed"] * 100)
    spool = Spool(cfg.agent.state_dir)
    try:
        report = health_report(cfg, monitor, spool)
    finally:
        spool.close()
    assert report["event_types"]["order.status.changed"] == {"p95_ms": 3000.0, "sla_ms": 2000, "events": 100,
                                                             "priority": "high"}
    assert report["event_types"]["order.placed"]["p95_ms"] == 100.0
    over = [r for r in report["reasons"] if "sla_ms" in r]
    assert report["status"] == "degraded"
    assert over == ["event type order.status.changed: p95 commit-to-delivery latency 3000 ms is over its sla_ms 2000"]


def test_dlq_list_puts_high_priority_first_and_show_traces_each_target(tmp_path):
    from agent.mapping import MappedEvent
    from agent.spool import Spool
    from tests.test_pg_pipeline import cli as run_cli

    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text('[agent]\nname = "m"\n[source]\nkind = "postgres"\ndsn = "postgresql://u@127.0.0.1/db"\n'
                        'tables = ["public.orders"]\n'
                        '[[events]]\ntype = "order.low"\ntable = "public.orders"\npriority = "low"\n'
                        '[[events]]\ntype = "order.high"\ntable = "public.orders"\npriority = "high"\n'
                        '[[events]]\ntype = "order.normal"\ntable = "public.orders"\n'
                        '[[targets]]\nname = "a"\nkind = "file"\npath = "a.jsonl"\n'
                        '[[targets]]\nname = "b"\nkind = "file"\npath = "b.jsonl"\n')
    cfg = config_mod.load(cfg_file)
    spool = Spool(cfg.agent.state_dir)
    try:
        spool.ensure_targets(["a", "b"])
        types = ["order.low", "order.normal", "order.high", "order.low"]
        spool.append([MappedEvent(f"{i:032x}", t, str(i), f"{i:016X}:00000001", 0.0,
                                  orjson.dumps({"id": f"{i:032x}", "type": t, "subject": str(i)}))
                      for i, t in enumerate(types)], [], "0000000000000009")
        rows = spool.fetch(0, 10)
        spool.advance("a", rows[-1].seq, 0, [(e, f"refused {e.type}") for e in rows])
        spool.advance("b", rows[-1].seq, len(rows), [])
    finally:
        spool.close()
    listed = [orjson.loads(line) for line in run_cli("dlq", "list", "--json", "-c", str(cfg_file)).stdout.splitlines()]
    assert [d["priority"] for d in listed] == ["high", "normal", "low", "low"]
    assert [d["type"] for d in listed] == ["order.high", "order.normal", "order.low", "order.low"]
    shown = run_cli("dlq", "show", str(listed[0]["id"]), "-c", str(cfg_file)).stdout
    assert "priority:  high" in shown
    assert "  a: dead-lettered (refused order.high)" in shown and "  b: delivered" in shown
