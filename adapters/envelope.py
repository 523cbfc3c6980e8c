"""What the message-broker targets share: destination templates over event attributes, and the split of a
structured CloudEvent into the attributes and data of a protocol binding's binary mode.

Pure: no I/O, no client library. The broker modules (kafka, nats, rabbitmq, redis, mqtt) build on it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

PLACEHOLDERS = ("type", "table", "schema", "agent")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Template:
    """A destination name (topic, subject, routing key, stream) with `{type}`, `{table}`, `{schema}`,
    `{agent}` placeholders. Parsed once at config time so a typo is a config error, not a runtime one."""

    text: str
    fields: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Template:
        if not text:
            raise TemplateError("must not be empty")
        fields = set()
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as e:
            raise TemplateError(f"is not a valid template ({e}); write {{type}}, {{table}}, {{schema}} or {{agent}},"
                                " and {{ }} for literal braces") from None
        for _, name, spec, conv in parts:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                raise TemplateError(f"unknown placeholder {{{name}}} (known: "
                                    + ", ".join("{" + p + "}" for p in PLACEHOLDERS) + ")")
            if spec or conv:
                raise TemplateError(f"placeholder {{{name}}} takes no format spec or conversion")
            fields.add(name)
        return cls(text, frozenset(fields))

    @property
    def needs_table(self) -> bool:
        return bool(self.fields & {"table", "schema"})

    def render(self, event_type: str, source: str, agent: str) -> str:
        """`source` is the event's CloudEvents source (cdc-agent://agent/schema.table)."""
        if not self.fields:
            return self.text
        schema, table = source_table(source) if self.needs_table else ("", "")
        return self.text.format(type=event_type, table=table, schema=schema, agent=agent)


def source_table(source: str) -> tuple[str, str]:
    """(schema, table) from an event source `cdc-agent://<agent>/<schema>.<table>` (percent-decoded)."""
    path = source.split("://", 1)[-1]
    _, _, qualified = path.partition("/")
    schema, _, table = unquote(qualified).partition(".")
    return schema, table


@dataclass(slots=True)
class BinaryParts:
    """A CloudEvent in a binding's binary mode: context attributes apart, `data` as the message body."""

    attributes: dict[str, str]        # specversion, id, source, type, subject, time, extensions...
    data: bytes
    content_type: str                 # of `data` (datacontenttype)


def binary_parts(body: bytes) -> BinaryParts:
    """Split a structured CloudEvent (what the spool holds) for a binding's binary content mode. Attribute
    values become strings (the bindings carry them as header strings); `datacontenttype` is the body's type."""
    ev: dict[str, Any] = orjson.loads(body)
    data = ev.pop("data", None)
    content_type = ev.pop("datacontenttype", "application/json")
    attrs = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in ev.items() if v is not None}
    return BinaryParts(attrs, orjson.dumps(data), content_type)


def event_origin(body: bytes, fmt: str) -> tuple[str, str, str]:
    """(agent, schema, table) of an event as the worker hands it over: a CloudEvent (its `source`), or a
    Debezium envelope (its `source` block)."""
    ev = orjson.loads(body)
    if fmt == "debezium":
        src = ev.get("source") or {}
        return str(src.get("name", "")), str(src.get("schema", "")), str(src.get("table", ""))
    source = str(ev.get("source", ""))
    agent = source.split("://", 1)[-1].partition("/")[0]
    schema, table = source_table(source)
    return agent, schema, table


class Destinations:
    """Renders a destination template for events; what it needs from the body is read only when the
    template uses it (the agent's name is the same for every event: read once)."""

    def __init__(self, template: Template):
        self.template = template
        self._agent: str | None = None
        self._static = not template.fields
        self._needs_body = bool(template.fields & {"table", "schema"})

    def render(self, event_type: str, body: bytes, fmt: str) -> str:
        if self._static:
            return self.template.text
        schema = table = ""
        if self._needs_body or ("agent" in self.template.fields and self._agent is None):
            agent, schema, table = event_origin(body, fmt)
            self._agent = agent
        return self.template.text.format(type=event_type, table=table, schema=schema, agent=self._agent or "")


def event_attributes(body: bytes, *names: str) -> tuple[str, ...]:
    """A few top-level attributes of a structured CloudEvent, for templates and keys."""
    ev = orjson.loads(body)
    return tuple(str(ev.get(n, "")) for n in names)
