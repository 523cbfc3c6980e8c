"""The sync-health dashboard in a real headless browser (Debian's chromium, driven by Playwright with
`executable_path`; no browser download): it loads with every request outside the agent refused, shows each
target, its numbers move as events flow, a failing HTTP target's tile turns red and its alert appears, an
event id can be traced per target. `CDC_DOCS_SCREENSHOT=1` writes the screenshot to docs/dashboard.png."""

from __future__ import annotations

import os
import shutil
import time

import orjson
import pytest

from agent.history import History, LatencyTracker, Reservoir, percentiles
from tests.agentproc import ROOT, AgentProcess, read_events, wait_for
from tests.plugins import free_port
from tests.plugins.http_receiver import HttpReceiver
from tests.test_pg_pipeline import cli

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


# ---------------------------------------------------------------- fixed-size history (pure)


def test_reservoir_stays_bounded_and_uniform():
    r = Reservoir(cap=100)
    r.add_many([float(i) for i in range(100_000)])
    assert len(r.samples) == 100 and r.seen == 100_000
    assert 20_000 < sorted(r.samples)[50] < 80_000          # a sample of all, not the first 100


def test_percentiles_nearest_rank():
    assert percentiles([float(i) for i in range(1, 101)]) == [50.0, 95.0, 99.0]
    assert percentiles([]) == [None, None, None]


def test_history_is_a_ring_and_series_line_up():
    h = History(step=10, span=100)
    for i in range(50):
        report = {"source": {"lag_seconds": i}, "targets": {"a": {"delivered": i * 10, "failed": 0, "pending": 1}}}
        if i >= 45:
            report["targets"]["b"] = {"delivered": i, "failed": i, "pending": 0}     # a target added later
        h.record(i * 10.0, report, {"a": [0.01, 0.02, 0.03]})
    snap = h.snapshot()
    assert len(snap["times"]) == 10
    assert all(len(v) == 10 for v in snap["series"].values())
    assert snap["series"]["targets.a.events_per_second"][-1] == 1.0
    assert snap["series"]["targets.b.pending"] == [None] * 5 + [0] * 5       # padded before it existed
    assert snap["series"]["targets.a.p95_ms"][-1] == 20.0


def test_type_latency_window():
    t = LatencyTracker(cap=100)     # all 100 kept: with a smaller sample the p95 is 5.0 only most of the time
    t.observe("crm", [0.1] * 90 + [5.0] * 10, ["order.status.changed"] * 100)
    p95, n = t.type_p95()["order.status.changed"]
    assert p95 == 5.0 and n == 100
    assert t.type_p95(now=time.time() + 3600)["order.status.changed"] == (None, 0)   # out of the window


# ---------------------------------------------------------------- the page in a browser


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_dashboard_in_a_browser(pg_db, tmp_path, browser):
    pg_db.execute("CREATE TABLE customers (customer_id int PRIMARY KEY, name text, price_tier text)")
    pg_db.execute("ALTER TABLE customers REPLICA IDENTITY FULL")
    crm = HttpReceiver().start()
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "wall-screen"
state_dir = "state"
[source]
kind = "postgres"
dsn = "{pg_db.dsn}"
tables = ["public.customers"]
heartbeat_seconds = 1
snapshot = "never"
[[events]]
type = "customer.pricing.updated"
table = "public.customers"
on = ["insert", "update"]
priority = "high"
sla_ms = 60000
[[targets]]
name = "audit"
kind = "file"
path = "out/events.jsonl"
[[targets]]
name = "crm"
kind = "http"
url = "{crm.url}"
headers = {{ Authorization = "Bearer ${{CRM_TOKEN}}" }}
retry_initial_seconds = 0.2
retry_max_seconds = 0.5
[health]
listen = "127.0.0.1:{port}"
[[alerts]]
name = "crm-failing"
when = "targets.crm.failed > 0"
webhook = "http://127.0.0.1:{free_port()}/unreachable"
severity = "critical"
""")
    secret = "s3cr3t-token-value"
    os.environ["CRM_TOKEN"] = secret          # also for the `setup` subprocess below
    try:
        assert cli("setup", "-c", str(cfg)).returncode == 0
    finally:
        del os.environ["CRM_TOKEN"]
    outside: list[str] = []
    try:
        with AgentProcess(cfg, tmp_path / "agent.log", env={"CRM_TOKEN": secret}) as agent:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def only_the_agent(route):
                if route.request.url.startswith(f"http://127.0.0.1:{port}/"):
                    route.continue_()
                else:                                 # no internet: anything else is refused
                    outside.append(route.request.url)
                    route.abort()
            page.route("**/*", only_the_agent)
            wait_for(lambda: _ok(port), 30, what="the health endpoint")
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector('[data-target="crm"]')
            assert page.locator('[data-target="audit"]').count() == 1

            with pg_db.connect() as conn:
                for i in range(30):
                    conn.execute("INSERT INTO customers VALUES (%s, %s, 'silver')", (i, f"c{i}"))
            page.wait_for_function(
                "() => document.querySelector('[data-target=\"crm\"] dd:nth-of-type(2)').textContent.trim() === '30'",
                timeout=30_000)
            assert "state-ok" in page.locator('[data-target="crm"]').get_attribute("class")

            crm.behave("status", 503)                # the CRM goes down
            with pg_db.connect() as conn:
                conn.execute("UPDATE customers SET price_tier = 'gold' WHERE customer_id < 5")
            page.wait_for_function(
                "() => /state-(retrying|circuit_open)/.test(document.querySelector('[data-target=\"crm\"]').className)",
                timeout=30_000)
            border = page.locator('[data-target="crm"]').evaluate("e => getComputedStyle(e).borderTopColor")
            assert border == "rgb(214, 69, 69)", border          # red
            page.wait_for_selector("#alerts.active", timeout=30_000)
            assert "crm-failing" in page.locator("#alert-list").inner_text()
            assert page.locator('[data-target="audit"] dd:nth-of-type(2)').inner_text().strip() == "35"

            wait_for(lambda: len(read_events(tmp_path / "out" / "events.jsonl")) >= 35, 30, what="audit events")
            event_id = read_events(tmp_path / "out" / "events.jsonl")[-1]["id"]
            page.fill("#event-id", event_id)
            page.click("#lookup button")
            page.wait_for_selector("#event-result table")
            trace = page.locator("#event-result").inner_text()
            assert "audit\tdelivered" in trace and "crm\tpending" in trace, trace

            html = page.content()
            assert secret not in html and secret not in orjson.dumps(_json(port, "/dashboard.json")).decode()
            # the docs' screenshot: written there on request (CDC_DOCS_SCREENSHOT=1), else next to the test
            shot = ROOT / "docs" / "dashboard.png" if os.environ.get("CDC_DOCS_SCREENSHOT") else tmp_path / "dash.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            mobile = browser.new_page(viewport={"width": 390, "height": 844})
            mobile.goto(f"http://127.0.0.1:{port}/")
            mobile.wait_for_selector('[data-target="crm"]')
            width = mobile.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a phone: it scrolls sideways"
            crm.behave("ok")
            assert agent.stop() == 0, agent.log()
    finally:
        crm.close()
    assert outside == [], f"the page asked for something outside the agent: {outside}"


def _ok(port: int) -> bool:
    try:
        return bool(_json(port, "/health"))
    except OSError:
        return False


def _json(port: int, path: str):
    import urllib.error
    import urllib.request
    try:
        return orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read())
    except urllib.error.HTTPError as e:
        return orjson.loads(e.read())
