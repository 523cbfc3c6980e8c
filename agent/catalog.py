"""The event catalog (docs/catalog.md): what every event type the config can emit looks like, as JSON Schema
2020-12 of the whole CloudEvent typed from the source tables' real columns, and as an AsyncAPI 3.0 document
of the channels each target publishes them on. Output is deterministic (sorted keys), so it can be
committed and diffed; `catalog_diff.compare` tells compatible from breaking changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from .catalog_columns import ANY_JSON, TIMESTAMPTZ, TableShape, read_tables, with_null
from .config import OPS, Config, EventRule
from .mapping import event_source
from .errors import CdcError
from .secrets import redact

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FORMAT = "application/schema+json;version=2020-12"
ID_FORM = {"type": "string", "pattern": "^[0-9a-f]{32}$"}


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


# ---------------------------------------------------------------- JSON Schema per event type


def _envelope(cfg: Config, typ: Any, table: str, data: dict, origin: str, extensions: bool = False) -> dict:
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT, "title": typ["const"] if "const" in typ else f"events of {origin}",
        "description": f"CloudEvent emitted by cdc-agent {cfg.agent.name} from {table} ({origin})",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "position",
                     "txid", "data"],
        "properties": {
            "specversion": {"const": "1.0"}, "id": ID_FORM, "source": {"const": event_source(cfg.agent.name, table)},
            "type": typ, "subject": {"type": "string"}, "time": TIMESTAMPTZ,
            "datacontenttype": {"const": "application/json"}, "position": {"type": "string"},
            "txid": {"type": ["string", "null"]}, "data": data,
        },
        "additionalProperties": False,
    }
    if extensions:          # outbox headers: CloudEvents extension attributes
        # (properties and patternProperties both apply to a name: the standard attributes are excluded)
        reserved = "|".join(sorted(schema["properties"]) + ["data_base64", "dataschema"])
        schema["patternProperties"] = {
            f"^(?!({reserved})$)[a-z0-9]{{1,20}}$": {"type": ["string", "integer", "boolean"]}}
    return schema


def _field_schema(shape: TableShape, col: str, rule: EventRule) -> dict:
    c = shape.column(col)
    if c is None:
        raise CdcError(f"rule {rule.type}: column {col!r} is not a column of {shape.table} "
                       f"(columns: {', '.join(x.name for x in shape.columns)})")
    form = c.form
    if col in rule.values:
        form = {"enum": sorted(set(rule.values[col].values()))}
    out = with_null(form) if c.nullable else dict(form)
    out["description"] = f"{shape.table}.{col} ({c.db_type})"
    return out


def _row_event(cfg: Config, rule: EventRule, shape: TableShape, origin: str) -> dict:
    fields = rule.fields or tuple((c.name, c.name) for c in shape.columns)
    for col in list(rule.values) + list(rule.changed or ()):
        if shape.column(col) is None:
            raise CdcError(f"rule {rule.type}: column {col!r} is not a column of {shape.table}")
    props = {out: _field_schema(shape, col, rule) for out, col in fields}
    row = {"type": ["object", "null"], "properties": props, "additionalProperties": False}
    key_cols = rule.key or shape.key     # none: the mapper dead-letters the changes (no key, no subject)
    key_props = {}
    for k in key_cols:
        c = shape.column(k)
        if c is None:
            raise CdcError(f"rule {rule.type}: key column {k!r} is not a column of {shape.table}")
        key_props[k] = with_null(c.form) if c.nullable else dict(c.form)
    ops = set(rule.on) | ({"read"} if "insert" in rule.on else set())
    data = {
        "type": "object", "required": ["op", "key", "before", "after", "changed"],
        "properties": {
            "op": {"enum": [o for o in (*OPS, "read") if o in ops]},
            "key": {"type": "object", "required": list(key_cols), "properties": key_props,
                    "additionalProperties": False},
            "before": row, "after": row,
            # which fields changed (all of them for inserts and deletes); null: unknown (no old image)
            "changed": {"type": ["array", "null"], "items": {"type": "string"}},
            # fields whose new value the log does not carry (PostgreSQL unchanged TOAST): absent from `after`
            "unavailable": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    return _envelope(cfg, {"const": rule.type}, shape.table, data, origin)


def event_types(cfg: Config) -> list[tuple[str, str, EventRule | None, Any]]:
    """(catalog key, table, rule, origin) for every event type the config can emit, in config order."""
    out: list[tuple[str, str, EventRule | None, Any]] = []
    outbox_tables = {o.table for o in cfg.outbox}
    for i, rule in enumerate(cfg.events):
        out.append((rule.type, rule.table, rule, f"events[{i}]"))
    named = {r.table for r in cfg.events}
    for table in cfg.source.tables:
        if table not in named and table not in outbox_tables:
            out.append((f"row.{table}", table, EventRule(type=f"row.{table}", table=table), "row events"))
    for i, o in enumerate(cfg.outbox):
        for t in o.types or (f"outbox.{o.table}",):
            out.append((t, o.table, None, (i, o)))
    return out


def build(cfg: Config, shapes: dict[str, TableShape] | None = None) -> dict[str, dict]:
    """The JSON Schema catalog: event type → schema of the whole CloudEvent."""
    kinds = event_types(cfg)
    if shapes is None:
        shapes = read_tables(cfg, sorted({table for _, table, rule, _ in kinds if rule is not None}))
    catalog: dict[str, dict] = {}
    for key, table, rule, origin in kinds:
        if rule is not None:
            catalog[key] = _row_event(cfg, rule, shapes[table], origin)
            continue
        i, o = origin
        typ = {"const": key} if o.types else {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"}
        payload = dict(ANY_JSON)
        payload["description"] = f"the {o.payload_column} column of the outbox row, as the application wrote it"
        catalog[key] = _envelope(cfg, typ, table, payload, f"outbox[{i}]", extensions=o.headers_column is not None)
    return catalog


# ---------------------------------------------------------------- AsyncAPI 3.0


def _safe_url(url: str) -> tuple[str, str, str]:
    """(protocol, host, pathname) of a URL without credentials and query (tokens hide there)."""
    p = urlsplit(redact(url))
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return p.scheme, host, urlunsplit(("", "", p.path or "/", "", ""))


def _target_channel(cfg: Config, t, event_type: str, table: str) -> tuple[dict, str, str]:
    """(server, address, description) of where target `t` publishes events of `event_type`."""
    o = t.options
    source = event_source(cfg.agent.name, table)

    def render(template: str) -> str:
        from adapters.envelope import Template
        return Template.parse(template).render(event_type, source, cfg.agent.name)

    if t.kind == "file":
        path = Path(o.path)
        try:
            shown = os.path.relpath(path, cfg.path.resolve().parent)
        except ValueError:
            shown = str(path)
        return {"host": "localhost", "protocol": "file"}, shown, "JSON lines, one event per line, appended"
    if t.kind == "http":
        proto, host, url_path = _safe_url(o.url)
        return ({"host": host, "protocol": proto}, url_path,
                "POST of a JSON array of events (application/cloudevents-batch+json); this message is one of them")
    protocol = {"kafka": "kafka", "nats": "nats", "rabbitmq": "amqp", "redis": "redis",
                "mqtt": "mqtt"}.get(t.kind, t.kind)
    url = getattr(o, "url", None)
    servers = getattr(o, "bootstrap_servers", None)
    if servers:
        host = (servers if isinstance(servers, str) else ",".join(servers)).split(",")[0].strip()
    elif url:
        protocol_from_url, host, _ = _safe_url(url)
        protocol = protocol_from_url or protocol
    else:
        host = "localhost"
    for attr in ("topic", "subject", "routing_key", "stream"):
        template = getattr(o, attr, None)
        if template:
            template = getattr(template, "text", template)
            address = render(template)
            exchange = getattr(o, "exchange", None)
            desc = f"{attr} {template!r}" + (f" on exchange {exchange!r}" if exchange else "")
            return {"host": host, "protocol": protocol}, address, desc
    return {"host": host, "protocol": protocol}, t.name, f"{t.kind} target"


def _ident(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in s)


def asyncapi(cfg: Config, catalog: dict[str, dict]) -> dict:
    kinds = {key: table for key, table, _, _ in event_types(cfg)}
    servers: dict[str, dict] = {}
    channels: dict[str, dict] = {}
    operations: dict[str, dict] = {}
    messages: dict[str, dict] = {}
    for key, schema in catalog.items():
        messages[_ident(key)] = {
            "name": key, "title": schema["title"], "summary": schema["description"],
            "contentType": "application/cloudevents+json",
            "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": schema},
        }
    for t in cfg.targets:
        server, debezium = None, t.format != "cloudevents"
        for key in catalog:
            generic = "const" not in catalog[key]["properties"]["type"]   # an outbox without `types`
            # an outbox without `types` may carry any type: listed on the targets that take every type
            if not (("*" in t.events) if generic else t.wants(key)):
                continue
            server, address, desc = _target_channel(cfg, t, "{type}" if generic else key, kinds[key])
            servers[_ident(t.name)] = {**server, "description": f"target {t.name} ({t.kind})"}
            cid = _ident(f"{t.name}.{address}")
            ch = channels.setdefault(cid, {"address": address, "description": f"target {t.name}: {desc}",
                                           "servers": [{"$ref": f"#/servers/{_ident(t.name)}"}], "messages": {}})
            if "{type}" in address:
                ch["parameters"] = {"type": {"description": "the event type the outbox row names"}}
            mid = _ident(key)
            if debezium:
                mid = _ident(f"{key}.{t.format}")
                messages.setdefault(mid, {"name": key, "summary": f"{key} in the {t.format} format (not described "
                                                                  "by the catalog's schemas)",
                                          "contentType": "application/json", "payload": {}})
            ch["messages"][mid] = {"$ref": f"#/components/messages/{mid}"}
            op = operations.setdefault(cid, {"action": "send", "channel": {"$ref": f"#/channels/{cid}"},
                                             "summary": f"cdc-agent {cfg.agent.name} delivers to {t.name}",
                                             "messages": []})
            op["messages"].append({"$ref": f"#/channels/{cid}/messages/{mid}"})
    for op in operations.values():
        op["messages"].sort(key=lambda m: m["$ref"])
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"cdc-agent {cfg.agent.name} events", "version": "1.0.0",
                 "description": f"Domain events cdc-agent {cfg.agent.name} emits from its {cfg.source.kind} source"},
        "defaultContentType": "application/cloudevents+json",
        "servers": servers, "channels": channels, "operations": operations,
        "components": {"messages": messages},
    }


# ---------------------------------------------------------------- the command


def load_catalog(path: Path) -> dict[str, dict]:
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise CdcError(f"catalog file {path} does not exist (write one with `cdc-agent catalog -o {path}`)") from None
    except (OSError, orjson.JSONDecodeError) as e:
        raise CdcError(f"cannot read catalog {path}: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise CdcError(f"catalog {path} is not a JSON object of event type → JSON Schema (--format jsonschema)")
    return doc


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def catalog_command(cfg: Config, args) -> int:
    from .catalog_diff import compare, print_changes
    catalog = build(cfg)
    if args.check:
        changes = compare(load_catalog(Path(args.check)), catalog)
        breaking = print_changes(changes, sys.stdout)
        if breaking and not args.accept_breaking:
            return 1
    doc = asyncapi(cfg, catalog) if args.format == "asyncapi" else catalog
    if args.output:
        write_atomic(Path(args.output), dumps(doc))
    elif not args.check:
        sys.stdout.write(dumps(doc).decode())
    return 0


def gate(cfg: Config, accept_breaking: bool, log) -> int:
    """`run`: compare with the accepted catalog ([agent] catalog); refuse a breaking change unless accepted.
    The file is (re)written with what this config emits when it is missing, or the changes are compatible or
    accepted, so it always describes what consumers get."""
    from .catalog_diff import compare
    current = build(cfg)
    path = cfg.agent.catalog
    assert path is not None              # run calls this only when [agent] catalog is set
    if path.exists():
        changes = compare(load_catalog(path), current)
        breaking = [c for c in changes if c.breaking]
        for c in changes:
            log.warning("catalog %s: %s", "BREAKING" if c.breaking else "compatible", c.text)
        if breaking and not accept_breaking:
            log.error("%d breaking change(s) against the accepted catalog %s: not starting (review them with "
                      "`cdc-agent catalog --check %s`; start with --accept-breaking to accept them)",
                      len(breaking), path, path)
            return 1
        if not changes:
            return 0
    write_atomic(path, dumps(current))
    log.info("event catalog written to %s", path)
    return 0
