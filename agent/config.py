"""`agent.toml` parsed once into typed, validated objects (CONTRACT §2).

Nothing else in the agent reads raw TOML. Every error names the file, the key path and the problem.
Secrets (DSN passwords, signing secrets, auth headers) must come from the environment as ${NAME}:
a secret written in the file is refused, so the file can be reviewed and versioned safely.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adapters

from . import secrets
from .config_checks import (check_postgres_dsn, check_target_events, check_written_paths, read_config_text,
                            valid_host)
from .config_reader import _at_most, _options, _Reader, _refuse_literal_secret, _resolve, _tname, _url
from .errors import ConfigError
from .connect_options import ConnectOptions
from .options import OptionError
from .sources.trigger.dsn import parse_dsn

NAME_RE = re.compile(r"^[a-z0-9_-]+\Z")          # \Z: "$" would let a trailing newline through
OPS = ("insert", "update", "delete")
PRIORITIES = ("high", "normal", "low")
SOURCE_KINDS = ("postgres", "mysql", "trigger", "debezium")
DEBEZIUM_CONNECTORS = ("postgres", "mysql", "sqlserver", "oracle", "db2")
TARGET_FORMATS = ("cloudevents", "cloudevents-binary", "debezium")
MAX_BATCH_SIZE = 100_000                     # events per target batch; far above any useful size
MAX_RETRY_SECONDS = 86_400.0                 # a wait longer than a day is a typo, not a policy
MAX_AGENT_NAME = 59                          # the default slot and publication are cdc_<name>, at most 63


@dataclass(frozen=True)
class AgentSettings:
    name: str
    state_dir: Path
    log_format: str = "text"                 # "text" | "json"
    log_level: str = "info"
    spool_retention_seconds: float = 3600.0  # delivered events are kept this long (for replay), then pruned
    spool_max_events: int = 1_000_000        # undelivered events; at the limit capture pauses (backpressure)
    checkpoint_log_seconds: float = 30.0     # how often a "checkpoint" line is logged
    delivery: str = "process"                # "process": targets in a child process (both cores); "thread"
    catalog: Path | None = None              # the accepted event catalog (docs/catalog.md): check/run compare
    conflicts_retention_days: float = 90.0   # two-way sync conflicts are kept this long, then pruned


@dataclass(frozen=True)
class SourceSettings:
    kind: str
    dsn: str
    tables: tuple[str, ...]
    # postgres
    slot: str = ""
    publication: str = ""
    heartbeat_seconds: float = 30.0          # 0 disables; keeps an idle database's slot advancing
    # mysql
    server_id: int = 4242
    signal_table: str = ""                   # snapshot watermarks: "table" or "db.table" (docs/snapshots.md)
    # trigger
    poll_interval_seconds: float = 0.2
    changelog_table: str = "cdc_changelog"
    max_wait_seconds: float = 30.0           # trigger gap tracking: how long a missing id may stay open
    trigger_level: str = "statement"         # PostgreSQL: "statement" | "row" triggers (docs/trigger-capture.md)
    # debezium (docs/debezium.md, "The embedded source")
    connector: str = ""                      # postgres | mysql | sqlserver | oracle | db2
    properties: tuple[tuple[str, str], ...] = ()   # passed to the connector as written (after ${ENV})
    jvm_options: tuple[str, ...] = ()        # e.g. ("-Xmx512m",): the JVM runs inside the agent process
    # all
    batch_size: int = 5000                   # changes per read / spool commit
    snapshot: str = "initial"                # "initial" | "never" | "when_needed" (docs/snapshots.md)
    snapshot_chunk_rows: int = 10000         # rows per snapshot chunk (one keyset read each)

    @property
    def database_kind(self) -> str:
        """The kind of database the source reads: a debezium source's connector, else the kind itself (what
        reading the catalog or rendering Debezium's envelope goes by)."""
        return self.connector if self.kind == "debezium" else self.kind


@dataclass(frozen=True)
class EventRule:
    type: str
    table: str
    on: frozenset[str] = frozenset(OPS)
    changed: tuple[str, ...] | None = None
    key: tuple[str, ...] | None = None
    fields: tuple[tuple[str, str], ...] | None = None          # (output name, column)
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> raw code -> canonical
    priority: str = "normal"                 # "high" | "normal" | "low": orders dead letters and alerts
    sla_ms: int | None = None                # p95 commit-to-delivery above this degrades health


@dataclass(frozen=True)
class OutboxRule:
    """An application's outbox table: each inserted row becomes one event (agent/outbox.py)."""
    table: str
    type_column: str = "event_type"
    key_column: str = "aggregate_id"
    payload_column: str = "payload"
    headers_column: str | None = None         # a JSON object of CloudEvents extension attributes
    types: tuple[str, ...] | None = None      # the event types the table may carry; others are dead letters
    delete_after: bool = False                # delete the rows once their events are spooled


@dataclass(frozen=True)
class TargetSettings:
    """What every target has, whatever its kind; `options` is the kind's own options dataclass
    (declared in its module in adapters/, read by `_options`)."""
    name: str
    kind: str
    events: tuple[str, ...] = ("*",)
    format: str = "cloudevents"              # "cloudevents" | "debezium"
    batch_size: int = 100
    # retry, backoff and circuit breaker (agent/retry.py), the same for every kind
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    circuit_failures: int = 5                # consecutive failures that open the circuit
    circuit_open_seconds: float = 30.0
    options: Any = None

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, p) for p in self.events)


@dataclass(frozen=True)
class HealthSettings:
    listen: str | None = "127.0.0.1:8765"    # None when "off"
    max_lag_seconds: float | None = None
    max_retained_wal_bytes: int | None = None
    max_pending_events: int | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = (self.listen or "").rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class AlertSettings:
    rules: tuple = ()                        # agent.alerts.AlertRule
    external_url: str = ""                   # generatorURL / externalURL in notifications (the dashboard)


@dataclass(frozen=True)
class ConnectSettings:
    """[connect] (CONTRACT §8): the same capture as a Debezium connector on Kafka Connect (agent/connect.py)."""
    url: str
    name: str
    options: dict[str, str] = field(default_factory=dict)   # extra connector config, passed through
    secrets: str = "env"          # how the connector gets the password: "env" or "file:/path/on/workers"


@dataclass(frozen=True)
class Config:
    path: Path
    agent: AgentSettings
    source: SourceSettings
    events: tuple[EventRule, ...]
    targets: tuple[TargetSettings, ...]
    health: HealthSettings
    alerts: AlertSettings = AlertSettings()
    outbox: tuple[OutboxRule, ...] = ()
    connect: ConnectSettings | None = None

    def priority_of(self, event_type: str) -> str:
        """A dead letter's business priority: the highest of the rules that emit its type."""
        found = {r.priority for r in self.events if r.type == event_type}
        for p in PRIORITIES:
            if p in found:
                return p
        return "normal"

    def target(self, name: str) -> TargetSettings:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


# ---------------------------------------------------------------- sections


def _agent(file: str, raw: Any, base: Path) -> AgentSettings:
    r = _Reader(file, "agent", raw, {f.name for f in dataclasses.fields(AgentSettings)})
    name = r.get("name", str)
    if not NAME_RE.match(name):
        raise r.fail("name", f"must match [a-z0-9_-]+ (it is part of slot names and event sources), got {name!r}")
    if len(name) > MAX_AGENT_NAME:
        raise r.fail("name", f"must be at most {MAX_AGENT_NAME} characters (the default slot and publication "
                             f"names are cdc_<name>, at most 63), got {len(name)}")
    state_dir = r.file_path("state_dir", base, "state")
    if state_dir.exists() and not state_dir.is_dir():
        raise r.fail("state_dir", f"{state_dir} exists and is not a directory")
    log_format = r.get("log_format", str, "text")
    if log_format not in ("text", "json"):
        raise r.fail("log_format", f'must be "text" or "json", got {log_format!r}')
    level = r.get("log_level", str, "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise r.fail("log_level", f'must be one of debug, info, warning, error, got {level!r}')
    delivery = r.get("delivery", str, "process")
    if delivery not in ("process", "thread"):
        raise r.fail("delivery", f'must be "process" or "thread", got {delivery!r}')
    return AgentSettings(
        name=name,
        state_dir=state_dir,
        log_format=log_format,
        log_level=level,
        spool_retention_seconds=r.positive("spool_retention_seconds", float, 3600.0, zero_ok=True),
        spool_max_events=r.positive("spool_max_events", int, 1_000_000),
        checkpoint_log_seconds=r.positive("checkpoint_log_seconds", float, 30.0),
        delivery=delivery,
        catalog=(base / r.get("catalog", str)).resolve() if r.has("catalog") else None,
        conflicts_retention_days=r.positive("conflicts_retention_days", float, 90.0),
    )


_SOURCE_KEYS = {
    "postgres": {"slot", "publication", "heartbeat_seconds"},
    "mysql": {"server_id", "signal_table"},
    "trigger": {"poll_interval_seconds", "changelog_table", "max_wait_seconds", "trigger_level"},
    "debezium": {"connector", "properties", "jvm_options", "slot", "publication", "server_id", "heartbeat_seconds"},
}


def _table_name(r: _Reader, k: str, name: str, kind: str) -> str:
    parts = name.split(".")
    if len(parts) != 2 or not all(parts):
        hint = '"db.table"' if kind == "mysql" else '"schema.table"'
        raise r.fail(k, f"table {name!r} must be written as {hint}")
    return name


def _source(file: str, raw: Any, agent_name: str, base: Path) -> SourceSettings:
    if not isinstance(raw, dict):
        raise ConfigError(file, "source", "required table is missing" if raw is None else "must be a table")
    kind = raw.get("kind")
    if kind is None:
        raise ConfigError(file, "source.kind", f"required key is missing (one of {', '.join(SOURCE_KINDS)})")
    if kind not in SOURCE_KINDS:
        raise ConfigError(file, "source.kind", f"must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    common = {"kind", "dsn", "tables", "batch_size", "snapshot", "snapshot_chunk_rows"}
    r = _Reader(file, "source", raw, common | _SOURCE_KEYS[kind])
    raw_dsn = r.get("dsn", str, env=False)
    _refuse_literal_secret(r, "dsn", raw_dsn, "password")
    dsn = r.expand("dsn", raw_dsn)
    secrets.register(secrets.dsn_password(dsn))
    if kind == "trigger":
        parse_dsn(dsn, file)                      # the one place that knows trigger DSNs
    if kind == "postgres":
        check_postgres_dsn(r, dsn)
    connector = ""
    if kind == "debezium":
        connector = r.get("connector", str)
        if connector not in DEBEZIUM_CONNECTORS:
            raise r.fail("connector", f"must be one of {', '.join(DEBEZIUM_CONNECTORS)}, got {connector!r}")
        if connector == "postgres":
            check_postgres_dsn(r, dsn)
        elif connector != "mysql":
            from .sources.debezium.dsn import parse_dsn as parse_dbz_dsn     # the one place that knows them
            parse_dbz_dsn(connector, dsn, r.fail)
    if kind == "mysql" or connector == "mysql":
        from .sources.mysql.common import parse_dsn as parse_mysql_dsn    # here: that package imports config
        mysql_dsn = parse_mysql_dsn(dsn, file)
        if not mysql_dsn.unix_socket and not valid_host(mysql_dsn.host):
            raise r.fail("dsn", f"has a host that is neither an IP address nor a DNS name: {mysql_dsn.host!r}")
    if kind == "trigger" and dsn.startswith("sqlite:///"):
        # SQLAlchemy sqlite URLs: a relative path is relative to the config file, like every path in it
        p = dsn[len("sqlite:///"):]
        if p and not p.startswith("/") and p != ":memory:":
            dsn = "sqlite:///" + str(_resolve(r, "dsn", base, p))
    tables = r.str_list("tables", nonempty=True)
    tables = tuple(_table_name(r, "tables", t, connector or kind) for t in tables)
    if len(set(tables)) != len(tables):
        raise r.fail("tables", "lists a table twice")
    default_ident = "cdc_" + agent_name.replace("-", "_")
    s = SourceSettings(
        kind=kind, dsn=dsn, tables=tables,
        slot=r.get("slot", str, default_ident),
        publication=r.get("publication", str, default_ident),
        heartbeat_seconds=r.positive("heartbeat_seconds", float, 30.0, zero_ok=True),
        server_id=r.positive("server_id", int, 4242),
        signal_table=r.get("signal_table", str, default_ident[:57] + "_signal"),
        poll_interval_seconds=r.positive("poll_interval_seconds", float, 0.2),
        changelog_table=r.get("changelog_table", str, "cdc_changelog"),
        max_wait_seconds=r.positive("max_wait_seconds", float, 30.0),
        trigger_level=r.get("trigger_level", str, "statement"),
        batch_size=r.positive("batch_size", int, 5000),
        snapshot=_snapshot_mode(r),
        snapshot_chunk_rows=r.positive("snapshot_chunk_rows", int, 10000),
        connector=connector,
        properties=_debezium_properties(r) if kind == "debezium" else (),
        jvm_options=r.str_list("jvm_options", ()),
    )
    if s.trigger_level not in ("statement", "row"):
        raise r.fail("trigger_level", f'must be "statement" or "row", got {s.trigger_level!r}')
    for k in ("slot", "publication", "changelog_table"):
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", getattr(s, k)):
            raise r.fail(k, f"must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63), "
                            f"got {getattr(s, k)!r}")
    if not re.fullmatch(r"(?:[A-Za-z0-9_$]{1,64}\.)?[A-Za-z0-9_$]{1,64}", s.signal_table):
        raise r.fail("signal_table", f'must be "table" or "db.table" (letters, digits, _ and $), '
                                     f'got {s.signal_table!r}')
    if not 1 <= s.server_id < 2**32:
        raise r.fail("server_id", "must be between 1 and 4294967295")
    return s


def _debezium_properties(r: _Reader) -> tuple[tuple[str, str], ...]:
    """`properties = {...}`: strings (numbers and booleans written as such), passed to the connector. A key
    naming a password or secret must take its value from ${ENV}, like a dsn's password."""
    raw = r.get("properties", dict, {}, env=False)
    out = []
    for k, v in raw.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        elif not isinstance(v, str):
            raise r.fail(f"properties.{k}", f"must be a string, a number or a boolean, got {_tname(v)}")
        if re.search(r"password|secret|credential", k, re.I):
            _refuse_literal_secret(r, f"properties.{k}", v, "secret")
            v = r.expand(f"properties.{k}", v)
            secrets.register(v)
        else:
            v = r.expand(f"properties.{k}", v)
        out.append((k, v))
    return tuple(out)


def _rule(file: str, i: int, raw: Any, tables: tuple[str, ...]) -> EventRule:
    r = _Reader(file, f"events[{i}]", raw, {"type", "table", "on", "changed", "key", "fields", "values", "priority",
                                             "sla_ms"})
    typ = r.get("type", str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", typ):
        raise r.fail("type", f"must be a dotted name like customer.pricing.updated, got {typ!r}")
    table = r.get("table", str)
    if table not in tables:
        raise r.fail("table", f"{table!r} is not in source.tables ({', '.join(tables)})")
    on = r.str_list("on", OPS)
    bad = [o for o in on if o not in OPS]
    if bad or not on:
        raise r.fail("on", f"must be a non-empty subset of {', '.join(OPS)}, got {list(on)}")
    changed = r.opt_str_list("changed", nonempty=True)
    key = r.opt_str_list("key", nonempty=True)
    fields: tuple[tuple[str, str], ...] | None = None
    if r.has("fields"):
        fv = r.table["fields"]
        if isinstance(fv, list):
            cols = r.str_list("fields", nonempty=True)
            fields = tuple((c, c) for c in cols)
        elif isinstance(fv, dict):
            if not fv:
                raise r.fail("fields", "must not be empty")
            for out, col in fv.items():
                if not isinstance(col, str):
                    raise r.fail(f"fields.{out}", f"must be a column name string, got {_tname(col)}")
            fields = tuple(fv.items())
        else:
            raise r.fail("fields", f"must be an array of columns or a table of new name = column, got {_tname(fv)}")
        if changed:
            listed = {c for _, c in fields}
            missing = [c for c in changed if c not in listed]
            if missing:
                raise r.fail("changed", f"column {missing[0]!r} is not in fields (changed lists fields by column name)")
    values: dict[str, dict[str, str]] = {}
    if r.has("values"):
        vv = r.get("values", dict)
        for col, mapping in vv.items():
            if not isinstance(mapping, dict) or not mapping:
                raise r.fail(f"values.{col}", "must be a non-empty table of raw code = canonical value")
            for code, canon in mapping.items():
                if not isinstance(canon, str):
                    raise r.fail(f"values.{col}.{code}", f"must be a string, got {_tname(canon)}")
            values[col] = dict(mapping)
    priority = r.get("priority", str, "normal")
    if priority not in PRIORITIES:
        raise r.fail("priority", f'must be "high", "normal" or "low", got {priority!r}')
    sla_ms = r.positive("sla_ms", int, None)
    return EventRule(type=typ, table=table, on=frozenset(on), changed=changed, key=key, fields=fields, values=values,
                     priority=priority, sla_ms=sla_ms)


EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _outboxes(file: str, raw: Any, tables: tuple[str, ...], rules: tuple[EventRule, ...]) -> tuple[OutboxRule, ...]:
    """`[[outbox]]` tables: in source.tables, named by no `[[events]]` rule, each at most once."""
    if not isinstance(raw, list):
        raise ConfigError(file, "outbox", "must be an array of tables: write [[outbox]]")
    out: list[OutboxRule] = []
    for i, item in enumerate(raw):
        r = _Reader(file, f"outbox[{i}]", item, {f.name for f in dataclasses.fields(OutboxRule)})
        table = r.get("table", str)
        if table not in tables:
            raise r.fail("table", f"{table!r} is not in source.tables ({', '.join(tables)})")
        if any(o.table == table for o in out):
            raise r.fail("table", f"{table!r} is already an outbox table")
        named = next((j for j, rule in enumerate(rules) if rule.table == table), None)
        if named is not None:
            raise r.fail("table", f"{table!r} is also the table of events[{named}]: an outbox table emits the events "
                                  "its rows describe, not row events")
        cols = {k: r.get(k, str, default) for k, default in
                (("type_column", "event_type"), ("key_column", "aggregate_id"), ("payload_column", "payload"))}
        headers = r.get("headers_column", str, None)
        types = r.opt_str_list("types", nonempty=True)
        for t in types or ():
            if not EVENT_TYPE_RE.fullmatch(t):
                raise r.fail("types", f"must list dotted names like order.placed, got {t!r}")
        out.append(OutboxRule(table=table, headers_column=headers, types=types,
                              delete_after=r.get("delete_after", bool, False), **cols))
    return tuple(out)


_TARGET_COMMON = {f.name for f in dataclasses.fields(TargetSettings)} - {"options"}


def _target(file: str, i: int, raw: Any, base: Path) -> TargetSettings:
    """The settings every target has, then its kind's options (declared in adapters/<kind>.py)."""
    path = f"targets[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(file, path, "must be a table")
    kind = raw.get("kind")
    if kind is None:
        raise ConfigError(file, f"{path}.kind", f"required key is missing (one of {', '.join(adapters.kinds())})")
    try:
        spec = adapters.target_kind(kind)
    except LookupError as e:
        raise ConfigError(file, f"{path}.kind", str(e.args[0])) from None
    own = {f.name for f in dataclasses.fields(spec.options) if not f.metadata.get("internal")}
    if own & _TARGET_COMMON:
        raise TypeError(f"adapters/{kind}.py redeclares common target settings {sorted(own & _TARGET_COMMON)}")
    r = _Reader(file, path, raw, _TARGET_COMMON | own)
    name = r.get("name", str)
    if not NAME_RE.match(name):
        raise r.fail("name", f"must match [a-z0-9_-]+, got {name!r}")
    fmt = r.get("format", str, "cloudevents")
    formats = [f for f in TARGET_FORMATS if f != "cloudevents-binary" or spec.binary_mode]
    if fmt not in formats:
        allowed = " or ".join(f'"{f}"' for f in formats)
        raise r.fail("format", f"must be {allowed} for a {kind} target, got {fmt!r}")
    return TargetSettings(
        name=name, kind=kind, format=fmt,
        events=r.str_list("events", ("*",), nonempty=True),
        batch_size=_at_most(r, "batch_size", r.positive("batch_size", int, spec.batch_size), MAX_BATCH_SIZE),
        retry_initial_seconds=_at_most(r, "retry_initial_seconds", r.positive("retry_initial_seconds", float, 0.5),
                                       MAX_RETRY_SECONDS),
        retry_max_seconds=_at_most(r, "retry_max_seconds", r.positive("retry_max_seconds", float, 60.0),
                                   MAX_RETRY_SECONDS),
        circuit_failures=r.positive("circuit_failures", int, 5),
        circuit_open_seconds=_at_most(r, "circuit_open_seconds", r.positive("circuit_open_seconds", float, 30.0),
                                      MAX_RETRY_SECONDS),
        options=_options(r, spec.options, base),
    )


def _health(file: str, raw: Any) -> HealthSettings:
    r = _Reader(file, "health", raw, {"listen", "max_lag_seconds", "max_retained_wal_bytes", "max_pending_events"})
    listen = r.get("listen", str, "127.0.0.1:8765")
    if listen == "off":
        listen = None
    else:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise r.fail("listen", f'must be "host:port" or "off", got {listen!r}')
        if not valid_host(host) or (":" in host and not host.startswith("[")):
            raise r.fail("listen", f'has a host that is neither an IP address nor a DNS name (an IPv6 address is '
                                   f'written in brackets: "[::1]:8765"), got {listen!r}')
    return HealthSettings(
        listen=listen,
        max_lag_seconds=r.positive("max_lag_seconds", float, None),
        max_retained_wal_bytes=r.positive("max_retained_wal_bytes", int, None),
        max_pending_events=r.positive("max_pending_events", int, None),
    )


def _alerts(file: str, raw: Any, health: HealthSettings) -> AlertSettings:
    if not isinstance(raw, list):
        raise ConfigError(file, "alerts", "must be an array of tables: write [[alerts]]")
    url = f"http://{health.listen}/" if health.listen else ""
    if not raw:         # agent.alerts only with [[alerts]]: it cost every agent process ~8 ms of its start
        return AlertSettings(rules=(), external_url=url)
    from .alerts import WEBHOOK_SCHEMES, AlertRule, AlertSyntaxError, parse_when

    rules: list[AlertRule] = []
    for i, item in enumerate(raw):
        r = _Reader(file, f"alerts[{i}]", item, {"name", "when", "for_seconds", "webhook", "severity", "summary"})
        name = r.get("name", str)
        if not NAME_RE.match(name):
            raise r.fail("name", f"must match [a-z0-9_-]+, got {name!r}")
        if name in {x.name for x in rules}:
            raise r.fail("name", f"alert name {name!r} is used twice")
        when = r.get("when", str)
        try:
            path, op, threshold = parse_when(when)
        except AlertSyntaxError as e:
            raise r.fail("when", str(e)) from None
        webhook = _url(r, "webhook", WEBHOOK_SCHEMES)
        severity = r.get("severity", str, "warning")
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", severity):
            raise r.fail("severity", f"must be a short lower-case label like warning or critical, got {severity!r}")
        rules.append(AlertRule(name=name, when=when, path=path, op=op, threshold=threshold, webhook=webhook,
                               for_seconds=r.positive("for_seconds", float, 0.0, zero_ok=True), severity=severity,
                               summary=r.get("summary", str, "")))
    return AlertSettings(rules=tuple(rules), external_url=url)


def load(path: str | os.PathLike) -> Config:
    """Read and validate a config file. Raises ConfigError with file, key path and problem."""
    p = Path(path)
    file = str(p)
    text = read_config_text(p, file)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, None, f"not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(file, None, "not valid TOML: arrays or tables nested too deeply") from None
    return parse(raw, file=file, base=p.resolve().parent)


def parse(raw: dict, *, file: str = "agent.toml", base: Path | None = None) -> Config:
    base = base or Path.cwd()
    unknown = sorted(set(raw) - {"agent", "source", "events", "outbox", "targets", "health", "alerts", "connect"})
    if unknown:
        raise ConfigError(file, unknown[0], "unknown section (allowed: agent, source, events, outbox, targets, "
                                            "health, alerts, connect)")
    if "agent" not in raw:
        raise ConfigError(file, "agent", "required table [agent] is missing")
    agent = _agent(file, raw["agent"], base)
    source = _source(file, raw.get("source"), agent.name, base)
    rules_raw = raw.get("events", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(file, "events", "must be an array of tables: write [[events]]")
    rules = tuple(_rule(file, i, r, source.tables) for i, r in enumerate(rules_raw))
    for i, rule in enumerate(rules):
        # an event id is (agent, position, type): two such rules would give two events one id
        first = next(j for j, other in enumerate(rules) if (other.table, other.type) == (rule.table, rule.type))
        if first != i:
            raise ConfigError(file, f"events[{i}].type", f"{rule.type!r} is already the type of events[{first}] on "
                              f"table {rule.table}: two rules on one table need different types (an event's id "
                              "is derived from its change and its type)")
    outbox = _outboxes(file, raw.get("outbox", []), source.tables, rules)
    targets_raw = raw.get("targets")
    if targets_raw is None:
        raise ConfigError(file, "targets", "at least one [[targets]] is required")
    if not isinstance(targets_raw, list) or not targets_raw:
        raise ConfigError(file, "targets", "must be one or more [[targets]] tables")
    targets = tuple(_target(file, i, t, base) for i, t in enumerate(targets_raw))
    names = [t.name for t in targets]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(file, f"targets[{i}].name", f"target name {n!r} is used twice")
    if "outbox" not in raw:                  # outbox events take their type from the row: not known here
        check_target_events(file, targets, rules, source.tables)
    check_written_paths(file, targets, agent, source)
    health = _health(file, raw.get("health", {}))
    alerts = _alerts(file, raw.get("alerts", []), health)
    connect = _connect(file, raw["connect"], agent.name, base) if "connect" in raw else None
    cfg = Config(path=Path(file), agent=agent, source=source, events=rules, targets=targets, health=health,
                 alerts=alerts, outbox=outbox, connect=connect)
    return _finish_targets(cfg, base)


def _finish_targets(cfg: Config, base: Path) -> Config:
    """A kind's checks against the whole config (`TargetKind.finish`: a sql target's tables must be captured)."""
    done = []
    for i, t in enumerate(cfg.targets):
        finish = adapters.target_kind(t.kind).finish
        if finish is not None:
            try:
                t = dataclasses.replace(t, options=finish(cfg, t, base))
            except OptionError as e:
                raise ConfigError(str(cfg.path), f"targets[{i}].{e.key}", e.problem) from None
        done.append(t)
    return dataclasses.replace(cfg, targets=tuple(done))


def _connect(file: str, raw: Any, agent_name: str, base: Path) -> ConnectSettings:
    o = _options(_Reader(file, "connect", raw, {f.name for f in dataclasses.fields(ConnectOptions)}), ConnectOptions,
                 base)
    return ConnectSettings(url=o.url, name=o.name or agent_name, options=dict(o.options), secrets=o.secrets)


SNAPSHOT_MODES = ("initial", "never", "when_needed")


def _snapshot_mode(r) -> str:
    mode = r.get("snapshot", str, "initial")
    if mode not in SNAPSHOT_MODES:
        raise r.fail("snapshot", f"must be one of {', '.join(SNAPSHOT_MODES)}, got {mode!r}")
    return mode
