"""Destination templates and the binary-mode split shared by the broker targets (pure)."""

import orjson
import pytest

from adapters.envelope import Template, TemplateError, binary_parts, source_table


def test_template_renders_each_placeholder():
    t = Template.parse("erp.{agent}.{schema}.{table}.{type}")
    assert t.render("customer.pricing.updated", "cdc-agent://erp-east/public.customers", "erp-east") == \
        "erp.erp-east.public.customers.customer.pricing.updated"


def test_template_without_table_placeholders_does_not_need_the_source():
    t = Template.parse("events-{agent}")
    assert not t.needs_table
    assert t.render("x", "not a source", "a1") == "events-a1"


@pytest.mark.parametrize("text, problem", [
    ("{tabel}", "unknown placeholder {tabel}"),
    ("{type!r}", "no format spec"),
    ("{type:>10}", "no format spec"),
    ("open {brace", "not a valid template"),
    ("", "must not be empty"),
])
def test_template_refuses_what_it_cannot_render(text, problem):
    with pytest.raises(TemplateError, match=problem.replace("{", r"\{").replace("}", r"\}").replace("!", "!")):
        Template.parse(text)


def test_literal_braces_survive():
    assert Template.parse("a{{b}}.{type}").render("t", "", "x") == "a{b}.t"


def test_source_table_percent_decoded():
    assert source_table("cdc-agent://erp/My%20Schema.Order%20Lines") == ("My Schema", "Order Lines")


def test_binary_parts_moves_data_to_the_body_and_keeps_attributes():
    ev = {"specversion": "1.0", "id": "abc", "source": "cdc-agent://a/public.t", "type": "row.public.t",
          "subject": "1", "time": "2026-01-01T00:00:00.000000Z", "datacontenttype": "application/json",
          "position": "0000000000000001:00000001", "txid": "9", "data": {"op": "insert", "after": {"id": 1}}}
    parts = binary_parts(orjson.dumps(ev))
    assert orjson.loads(parts.data) == ev["data"]
    assert parts.content_type == "application/json"
    assert parts.attributes["id"] == "abc" and parts.attributes["position"] == ev["position"]
    assert "data" not in parts.attributes and "datacontenttype" not in parts.attributes
