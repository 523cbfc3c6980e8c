"""Mapping rules → CloudEvents: which rules fire, changed/key/subject/fields/renames, values mapping,
unmapped codes as failures, default row events, stable ids."""

import orjson
import pytest

from agent import config
from agent.changes import RowChange
from agent.mapping import EventMapper, change_from_json, change_to_json, event_id

RAW = {
    "agent": {"name": "erp-east"},
    "source": {"kind": "postgres", "dsn": "postgresql://cdc@127.0.0.1/erp",
               "tables": ["public.customers", "public.orders", "public.order_lines"]},
    "events": [
        {"type": "customer.pricing.updated", "table": "public.customers", "on": ["update"],
         "changed": ["price_tier", "discount_pct"], "key": ["customer_id"],
         "fields": ["customer_id", "price_tier", "discount_pct"]},
        {"type": "customer.address.changed", "table": "public.customers", "on": ["update"],
         "changed": ["street", "city"], "fields": {"id": "customer_id", "street": "street", "town": "city"}},
        {"type": "order.status.changed", "table": "public.orders", "on": ["insert", "update"],
         "changed": ["status"], "values": {"status": {"N": "accepted", "S": "shipped"}}},
    ],
    "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}],
}


def change(table, op, before, after, pos="00000000016B3748:00000001", key=("customer_id",), **kw):
    return RowChange(table=table, op=op, before=before, after=after, position=pos,
                     commit_time="2026-11-23T10:15:02.123456Z", commit_ts=1795428902.123456, txid="7412",
                     key_columns=key, **kw)


@pytest.fixture
def mapper():
    return EventMapper(config.parse(RAW))


CUST_BEFORE = {"customer_id": 42, "name": "Acme", "price_tier": "silver", "discount_pct": "5.00",
               "street": "Main 1", "city": "Oslo"}


def test_pricing_update_fires_only_its_rule_with_projected_fields(mapper):
    after = dict(CUST_BEFORE, price_tier="gold", discount_pct="12.50")
    events, failures = mapper.map([change("public.customers", "update", CUST_BEFORE, after)])
    assert not failures
    assert [e.type for e in events] == ["customer.pricing.updated"]
    ev = orjson.loads(events[0].body)
    assert ev["specversion"] == "1.0" and ev["source"] == "cdc-agent://erp-east/public.customers"
    assert ev["subject"] == "42" and ev["time"] == "2026-11-23T10:15:02.123456Z" and ev["txid"] == "7412"
    assert ev["data"] == {"op": "update", "key": {"customer_id": 42},
                          "before": {"customer_id": 42, "price_tier": "silver", "discount_pct": "5.00"},
                          "after": {"customer_id": 42, "price_tier": "gold", "discount_pct": "12.50"},
                          "changed": ["price_tier", "discount_pct"]}
    assert ev["id"] == events[0].id == event_id("erp-east", "00000000016B3748:00000001", "customer.pricing.updated")


def test_renamed_fields_and_two_rules_on_one_change_get_different_ids(mapper):
    after = dict(CUST_BEFORE, price_tier="gold", city="Bergen")
    events, _ = mapper.map([change("public.customers", "update", CUST_BEFORE, after)])
    assert [e.type for e in events] == ["customer.pricing.updated", "customer.address.changed"]
    addr = orjson.loads(events[1].body)["data"]
    assert addr["after"] == {"id": 42, "street": "Main 1", "town": "Bergen"} and addr["changed"] == ["town"]
    assert events[0].id != events[1].id


def test_update_of_unwatched_column_fires_nothing_but_insert_and_delete_do_not_apply(mapper):
    after = dict(CUST_BEFORE, name="Acme AS")
    events, failures = mapper.map([change("public.customers", "update", CUST_BEFORE, after)])
    assert events == [] and failures == []
    events, _ = mapper.map([change("public.customers", "insert", None, CUST_BEFORE)])
    assert events == []       # both customer rules are on update only


def test_unknown_old_image_fires_changed_rules_with_changed_null(mapper):
    events, _ = mapper.map([change("public.customers", "update", None, dict(CUST_BEFORE, name="x"))])
    assert {e.type for e in events} == {"customer.pricing.updated", "customer.address.changed"}
    assert orjson.loads(events[0].body)["data"]["changed"] is None


def test_values_mapping_and_unmapped_code_goes_to_failures(mapper):
    order = {"order_id": 7, "status": "N"}
    events, failures = mapper.map([
        change("public.orders", "insert", None, order, key=("order_id",)),
        change("public.orders", "update", order, {"order_id": 7, "status": "X"}, pos="00000000016B3748:00000002",
               key=("order_id",)),
    ])
    assert len(events) == 1
    data = orjson.loads(events[0].body)["data"]
    assert data["after"]["status"] == "accepted" and data["changed"] == ["order_id", "status"]
    assert len(failures) == 1 and "'X'" in failures[0].reason and failures[0].event_type == "order.status.changed"
    assert change_from_json(failures[0].change).after == {"order_id": 7, "status": "X"}


def test_uncovered_table_emits_row_events_for_every_op(mapper):
    line = {"order_id": 7, "line_no": 1, "qty": 3}
    chs = [change("public.order_lines", op, b, a, pos=f"00000000016B3748:0000000{i}", key=("order_id", "line_no"))
           for i, (op, b, a) in enumerate([("insert", None, line), ("update", line, dict(line, qty=4)),
                                           ("delete", dict(line, qty=4), None)])]
    events, _ = mapper.map(chs)
    assert [e.type for e in events] == ["row.public.order_lines"] * 3
    assert [e.subject for e in events] == ["7|1"] * 3
    d = [orjson.loads(e.body)["data"] for e in events]
    assert d[0]["before"] is None and d[2]["after"] is None and d[1]["changed"] == ["qty"]
    assert d[2]["changed"] == ["order_id", "line_no", "qty"]


def test_unchanged_toast_column_is_left_out_never_a_placeholder(mapper):
    b = {"order_id": 1, "line_no": 1, "qty": 1}
    a = {"order_id": 1, "line_no": 1, "qty": 2}
    events, _ = mapper.map([change("public.order_lines", "update", None, a, key=("order_id", "line_no"),
                                   unavailable=("note",))])
    data = orjson.loads(events[0].body)["data"]
    assert "note" not in data["after"] and data["unavailable"] == ["note"]
    assert b  # the old image is unknown here: changed is null
    assert data["changed"] is None


def test_ids_are_stable_and_change_json_roundtrips(mapper):
    ch = change("public.customers", "update", CUST_BEFORE, dict(CUST_BEFORE, price_tier="gold"))
    first, _ = mapper.map([ch])
    again, _ = EventMapper(config.parse(RAW)).map([change_from_json(change_to_json(ch))])
    assert [e.id for e in first] == [e.id for e in again]
    assert [e.body for e in first] == [e.body for e in again]
