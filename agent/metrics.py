"""`GET /metrics`: Prometheus text format, every name prefixed `cdc_agent_`, every sample labelled with the
agent's name.

Built per request by a collector that reads the spool (persistent counters: they survive restarts, so
`*_total` only resets when state_dir is wiped) and the Monitor (live state, captured changes, latency),
into a private CollectorRegistry: nothing is registered globally, and two agents in one process (tests)
do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .config import Config
from .monitor import Monitor
from .spool import Spool

P = "cdc_agent_"


class _Collector:
    def __init__(self, cfg: Config, monitor: Monitor | None, spool: Spool):
        self.cfg, self.monitor, self.spool = cfg, monitor, spool

    def collect(self):
        cfg, mon, spool = self.cfg, self.monitor, self.spool
        agent = cfg.agent.name
        src = mon.source_status() if mon else None

        m = CounterMetricFamily(P + "changes_captured", "Row changes read from the source since the agent started.",
                                labels=["agent"])
        m.add_metric([agent], mon.captured if mon else 0)
        yield m

        m = CounterMetricFamily(P + "echo_skipped", "Row changes not captured because a cdc-agent sql target "
                                "wrote them (no echo), since the agent started.", labels=["agent"])
        m.add_metric([agent], src.skipped_echo if src else 0)
        yield m

        g = GaugeMetricFamily(P + "source_connected", "1 while the source database is connected.", labels=["agent"])
        g.add_metric([agent], 1 if src and src.connected else 0)
        yield g
        if src and src.lag_seconds is not None:
            g = GaugeMetricFamily(P + "lag_seconds", "Time since the commit of the oldest change not yet spooled "
                                  "(0 when caught up).", labels=["agent"])
            g.add_metric([agent], src.lag_seconds)
            yield g
        if src and src.retained_wal_bytes is not None:
            g = GaugeMetricFamily(P + "retained_wal_bytes", "WAL the replication slot holds back on the database "
                                  "server.", labels=["agent"])
            g.add_metric([agent], src.retained_wal_bytes)
            yield g
        rows_fn = getattr(mon, "snapshot_rows_fn", None)
        if rows_fn:
            m = CounterMetricFamily(P + "snapshot_rows", "Rows read by snapshots (op read) since the agent started.",
                                    labels=["agent", "table"])
            for table, n in sorted(rows_fn().items()):
                m.add_metric([agent, table], n)
            yield m
        g = GaugeMetricFamily(P + "backpressure", "1 while capture is paused because the spool is full.",
                              labels=["agent"])
        g.add_metric([agent], 1 if mon and mon.backpressure else 0)
        yield g

        names = [t.name for t in cfg.targets]
        counters = {c.name: c for c in spool.all_counters()}
        delivered = CounterMetricFamily(P + "events_delivered", "Events the target accepted.",
                                        labels=["agent", "target"])
        failed = CounterMetricFamily(P + "events_failed", "Failed delivery attempts (each retried batch counts "
                                     "once).", labels=["agent", "target"])
        dead = CounterMetricFamily(P + "events_dead_lettered", "Events the target rejected for good (moved to "
                                   "dead letters).", labels=["agent", "target"])
        pending = GaugeMetricFamily(P + "spool_pending_events", "Spooled events not yet delivered to the target.",
                                    labels=["agent", "target"])
        up = GaugeMetricFamily(P + "target_up", "1 while the target accepts deliveries (not retrying, circuit "
                               "closed).", labels=["agent", "target"])
        stored = GaugeMetricFamily(P + "dead_letters", "Dead letters currently stored (target \"\" for changes no "
                                   "rule could map).", labels=["agent", "target"])
        for name in names:
            c = counters.get(name)
            delivered.add_metric([agent, name], c.delivered if c else 0)
            failed.add_metric([agent, name], c.failed if c else 0)
            dead.add_metric([agent, name], c.dead_lettered if c else 0)
            pending.add_metric([agent, name], spool.pending(name))
            state = mon.target(name).state if mon else "ok"
            up.add_metric([agent, name], 1 if state == "ok" else 0)
            stored.add_metric([agent, name], spool.count_dead_letters(name))
        stored.add_metric([agent, ""], spool.count_unmapped())
        yield from (delivered, failed, dead, pending, up, stored)

        if any(getattr(t.options, "owns", None) for t in cfg.targets):
            yield from _conflict_metrics(cfg, spool)
        if mon is not None and mon.drift:
            g = GaugeMetricFamily(P + "target_drift_rows", "Rows the last scheduled reconcile found missing, extra "
                                  "or different in a sql target.", labels=["agent", "target", "kind"])
            for name, d in mon.drift.items():
                for kind in ("missing", "extra", "different"):
                    g.add_metric([agent, name, kind], d.get(kind) or 0)
            yield g
        if mon is not None:
            h = HistogramMetricFamily(P + "delivery_latency_seconds", "Source commit to target acknowledgement, "
                                      "per event.", labels=["agent", "target"])
            for name in names:
                buckets, total, _count = mon.histogram(name).snapshot()
                h.add_metric([agent, name], buckets, total)
            yield h
            yield from self._event_types(agent)
            alerts = GaugeMetricFamily(P + "alert_firing", "1 while an [[alerts]] rule fires.",
                                       labels=["agent", "alert", "severity"])
            firing = {a["name"] for a in mon.alerts.firing()} if mon.alerts is not None else set()
            for r in cfg.alerts.rules:
                alerts.add_metric([agent, r.name, r.severity], 1 if r.name in firing else 0)
            yield alerts

    def _event_types(self, agent: str):
        """Per event type: p95 commit-to-delivery latency over the last 5 minutes, and its `sla_ms` (so a
        Prometheus rule can compare the two: docs/prometheus-rules.yml)."""
        p95 = GaugeMetricFamily(P + "event_type_latency_p95_seconds", "p95 commit-to-delivery latency of an event "
                                "type over the last 5 minutes (all targets).", labels=["agent", "type"])
        sla = GaugeMetricFamily(P + "event_type_sla_seconds", "The event type's sla_ms, in seconds.",
                                labels=["agent", "type"])
        mon = self.monitor
        assert mon is not None                 # collect() calls this only with a monitor
        for typ, (value, _n) in sorted(mon.tracker.type_p95().items()):
            if value is not None:
                p95.add_metric([agent, typ], value)
        seen: set[str] = set()
        for r in self.cfg.events:
            if r.sla_ms is not None and r.type not in seen:
                seen.add(r.type)
                sla.add_metric([agent, r.type], min(x.sla_ms for x in self.cfg.events
                                                    if x.type == r.type and x.sla_ms is not None) / 1000)
        yield p95
        yield sla


def _conflict_metrics(cfg: Config, spool: Spool):
    """Two-way sync (sql targets with owns): conflicts recorded, and source changes of unowned columns passed
    over, per target, table, column (persistent, agent/conflicts.py)."""
    from .conflicts import counts, unowned_counts
    agent = cfg.agent.name
    labels = ["agent", "target", "table", "column"]
    found = CounterMetricFamily(P + "conflicts", "Target-side changes of owned columns overwritten by the "
                                "authoritative value (cdc-agent conflicts).", labels=labels)
    passed = CounterMetricFamily(P + "unowned_changes", "Source changes of columns the source does not own, not "
                                 "written to the target.", labels=labels)
    for fam, by_target in ((found, counts(spool)), (passed, unowned_counts(spool))):
        for t in cfg.targets:
            if getattr(t.options, "owns", None):
                for (table, column), n in sorted(by_target.get(t.name, {}).items()):
                    fam.add_metric([agent, t.name, table, column], n)
        yield fam


def render_metrics(cfg: Config, monitor: Monitor | None, spool: Spool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(cfg, monitor, spool))
    return generate_latest(registry)
