"""The compiled event path for RowChanges of any source (agent/_fastpg.c's render_dicts + render_event, used by
EventMapper for the MySQL, trigger and snapshot-free changes whose values arrive as Python dicts) against the
pure EventMapper._event: generated row images of JSON-form values (strings with escapes, `|` and `\\`, big
and small integers, floats with negative exponents and -0.0, booleans, NULL, RawJson, arrays, values C does
not write), columns that change type between images, and generated rules must give byte-identical events,
the same dead letters, or the same error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import config, fastpath
from agent.changes import RowChange
from agent.mapping import EventMapper
from agent.rawjson import RawJson
from tests.test_fastevents import rules
from tests.plugins import property_examples

needs_extension = pytest.mark.skipif(not fastpath.compiled(), reason="agent._fastpg is not built (no C compiler)")

TEXT = st.text(max_size=8) | st.sampled_from(["", "a|b", "back\\slash", '"q"', "\n", "é", "\\N", "\x7f"])
# longer strings with the bytes that need escapes anywhere: json_string passes over 8 plain bytes at a time
TEXT |= st.text(st.sampled_from('ab"\\\n\x01\x1f\x20\x7fé€|'), min_size=7, max_size=40)
SCALARS = {
    "str": TEXT,
    "int": st.integers(-(2 ** 63), 2 ** 63 - 1) | st.integers(-(2 ** 70), 2 ** 70),
    "float": st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1e-7, 1e16, 5e-324]),
    "bool": st.booleans(),
    "json": st.sampled_from(['{"a": 1}', "[1, 2]", "null", '"x"', "1e400"]).map(RawJson),
    "list": st.lists(st.none() | st.integers(-5, 5) | TEXT | st.booleans() | st.floats(allow_nan=False),
                     max_size=3),
    "dict": st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
}


@st.composite
def cases(draw):
    n = draw(st.integers(1, 6))
    names = [f"c{i}" for i in range(n)]
    types = [draw(st.sampled_from(sorted(SCALARS))) for _ in range(n)]

    def image():
        out = {}
        for c, t in zip(names, types):
            if draw(st.integers(0, 19)) == 0:
                t = draw(st.sampled_from(sorted(SCALARS)))     # a loosely typed source
            out[c] = None if draw(st.integers(0, 5)) == 0 else draw(SCALARS[t])
        return out

    after = image()
    before = {c: (after[c] if draw(st.booleans()) else v) for c, v in image().items()}
    if draw(st.integers(0, 9)) == 0:
        del before[names[-1]]                  # an image without every column (a partial binlog image)
    op = draw(st.sampled_from(["insert", "update", "update-no-old", "delete"]))
    keys = tuple(draw(st.lists(st.sampled_from(names), max_size=2, unique=True)))
    unavailable = (names[0],) if op.startswith("update") and draw(st.integers(0, 9)) == 0 else ()
    ch = dict(table="db.t", op=op.split("-")[0], before=None if op in ("insert", "update-no-old") else before,
              after=None if op == "delete" else after, position="0000000000000123:00000042",
              commit_time="2026-11-23T10:00:00.000000Z", commit_ts=1.5, txid="99", key_columns=keys,
              unavailable=unavailable)
    return ch, draw(rules(n))


def mapped(pure: bool, ch: dict, event_rules):
    m = EventMapper(config.parse({
        "agent": {"name": "m1"},
        "source": {"kind": "mysql", "dsn": "mysql://cdc@127.0.0.1:3306/db", "tables": ["db.t"]},
        "targets": [{"name": "f", "kind": "file", "path": "x.jsonl"}],
        "events": [dict(r, table="db.t") for r in event_rules]}), pure=pure)
    try:
        # twice: the second change meets the layout and plans the first one left
        events, failures = m.map([RowChange(**ch), RowChange(**ch)])
    except Exception as e:      # e.g. an integer beyond 64 bits or a dict value: raised alike on both paths
        return type(e).__name__, str(e)
    return ([(e.id, e.type, e.subject, e.body, e.only_target) for e in events],
            [(f.event_type, f.reason, f.change) for f in failures])


@needs_extension
@settings(max_examples=property_examples(2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_and_pure_events_of_row_dicts_are_byte_identical(case):
    ch, event_rules = case
    assert mapped(False, ch, event_rules) == mapped(True, ch, event_rules)


@needs_extension
def test_row_dicts_take_the_compiled_path(monkeypatch):
    made = []
    real = fastpath.render_event
    monkeypatch.setattr(fastpath, "render_event", lambda *a: made.append(real(*a)) or made[-1])
    ch = dict(table="db.t", op="update", before={"id": 7, "name": "a|b", "price": "1.50"},
              after={"id": 7, "name": "c", "price": "1.50"}, position="0000000000000123:00000042",
              commit_time="2026-11-23T10:00:00.000000Z", commit_ts=1.5, txid="99", key_columns=("id",))
    got = mapped(False, ch, [])
    assert len(made) == 2 and all(type(x) is tuple for x in made)
    assert got == mapped(True, ch, [])
    assert b'"changed":["name"]' in got[0][0][3]
