"""What the rabbitmq, redis and mqtt targets share on top of adapters/envelope.py: the destination of one
spooled event, and its body and attributes in the target's `format`. Pure: no I/O, no client library."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.envelope import STRUCTURED_CONTENT_TYPE, Template, TemplateError, binary_parts
from agent.errors import TargetUnavailable
from agent.interfaces import SpooledEvent
from agent.options import OptionError

DEBEZIUM_CONTENT_TYPE = "application/json"


def require_client(module: str, kind: str, package: str) -> None:
    """The broker client a target needs, or TargetUnavailable saying how to install it (health shows it)."""
    import importlib
    try:
        importlib.import_module(module)
    except ImportError:
        raise TargetUnavailable(f"the {kind} target needs the {package} package: "
                                f"pip install 'cdc-agent[{kind}]'") from None


def parse_template(key: str, text: str) -> Template:
    """A destination template option, or OptionError naming the key (a config error: file, key, problem)."""
    try:
        return Template.parse(text)
    except TemplateError as e:
        raise OptionError(key, str(e)) from None


def agent_of(source: str) -> str:
    """The agent name in an event source `cdc-agent://<agent>/<schema>.<table>`."""
    return source.split("://", 1)[-1].partition("/")[0]


def event_agent(event: SpooledEvent, fmt: str) -> str:
    """The agent that produced `event` (its body in the target's format)."""
    import orjson
    source = orjson.loads(event.body).get("source", "")
    if fmt == "debezium":                       # Debezium's source block names the agent
        return str(source.get("name", "")) if isinstance(source, dict) else ""
    return agent_of(source)


def destination(template: Template, event: SpooledEvent, source: str | None) -> str:
    """`template` rendered for `event`; `source` is the CloudEvent's source (None: read it from the body)."""
    if not template.fields:
        return template.text
    if template.fields == {"type"}:
        return template.text.format(type=event.type)
    if source is None:
        import orjson
        source = orjson.loads(event.body).get("source", "")
    return template.render(event.type, source, agent_of(source))


@dataclass(slots=True)
class Message:
    """One event as a broker message: the payload, its content type, and the CloudEvents attributes a
    binding puts beside it (binary mode; empty otherwise). `source` is set when the body was read."""

    body: bytes
    content_type: str
    attributes: dict[str, str]
    source: str | None = None


def message(event: SpooledEvent, fmt: str) -> Message:
    """`event.body` is the structured CloudEvent for "cloudevents" and "cloudevents-binary" (the worker
    passes it unrendered) and the Debezium envelope for "debezium"."""
    if fmt == "cloudevents-binary":
        parts = binary_parts(event.body)
        return Message(parts.data, parts.content_type, parts.attributes, parts.attributes.get("source", ""))
    if fmt == "debezium":
        return Message(event.body, DEBEZIUM_CONTENT_TYPE, {})
    return Message(event.body, STRUCTURED_CONTENT_TYPE, {})
