"""spool_frames.bounds: the compiled event_bounds (agent/fastpg_glue.c) against the lists and min()/max()
the spool computed before, on generated events; and what it hands back to Python."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from agent import fastpath, spool_frames
from agent.mapping import MappedEvent
from tests.plugins import property_examples

compiled = pytest.mark.skipif(spool_frames._event_bounds is None or not fastpath._glue(),
                              reason="the compiled core is not built, or not used")


def reference(events):
    positions, ts = [e.position for e in events], [e.commit_ts for e in events]
    targets = [e.only_target for e in events]
    return min(positions), max(positions), min(ts), max(ts), targets.count(targets[0]) == len(targets)


def event(position: str, ts: float, only: str | None) -> MappedEvent:
    return MappedEvent("id", "t", "s", position, ts, b"{}", None, only)


floats = st.floats(allow_nan=False, width=64) | st.sampled_from([0.0, -0.0])
events = st.lists(st.builds(event, st.text(max_size=6), floats, st.sampled_from([None, "a", "b", "a" * 3])),
                  min_size=1, max_size=30)


@compiled
@settings(max_examples=property_examples(1000), deadline=None)
@given(events)
def test_bounds_are_what_min_and_max_say(evs):
    assert spool_frames._event_bounds is not None
    got = spool_frames._event_bounds(evs)
    want = reference(evs)
    assert got == want and [type(x) for x in got] == [type(x) for x in want]
    assert got[2] is want[2] and got[3] is want[3]          # (the same objects: -0.0 and 0.0 stay apart)
    assert spool_frames.bounds(evs) == want


@compiled
def test_what_it_does_not_read_goes_to_python():
    assert spool_frames._event_bounds is not None
    ok = [event("b", 1.0, None), event("a", 2.0, None)]
    assert spool_frames._event_bounds(ok) == ("a", "b", 1.0, 2.0, True)
    for odd in ([event("a", 1, None)], [event(b"a", 1.0, None)], [ok[0], object()], []):   # type: ignore[arg-type]
        assert spool_frames._event_bounds(odd) is None
    assert spool_frames._event_bounds(tuple(ok)) is None
    assert spool_frames.bounds([event("a", 1, "x"), event("c", 3, "x")]) == ("a", "c", 1, 3, True)
