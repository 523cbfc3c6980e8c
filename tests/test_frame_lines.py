"""The file target's path without an event object per body (agent/worker.py `_send_lines`,
agent/spool_frames.py `FrameHead.lines`): the same bytes as the per-event path, the cursor moving only
after the write, `snapshot --target` events only for their target, and a target that refuses some events
all the same getting them isolated into dead letters as on the usual path."""

from __future__ import annotations

import threading

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent import config, spool_frames
from agent.errors import TargetRejected, TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection
from agent.mapping import MappedEvent
from agent.monitor import Monitor
from agent.spool import Spool
from agent.spool_frames import FrameHead, lines_of, pack
from agent.worker import TargetWorker
from tests.agentproc import wait_for
from tests.plugins import property_examples
from tests.test_spool_frames import frame_events


def ev(i: int, typ: str = "row.public.t", only: str | None = None, ts: float = 1.0) -> MappedEvent:
    eid = f"{i:032x}"
    pos = f"{i:016X}:000001"
    body = orjson.dumps({"specversion": "1.0", "id": eid, "type": typ, "subject": str(i), "data": {"n": i}})
    return MappedEvent(eid, typ, str(i), pos, ts, body, only_target=only)


def cfg_with_file(tmp_path, events: list[str] | None = None) -> config.Config:
    target = {"name": "f", "kind": "file", "path": "out/e.jsonl"}
    if events is not None:
        target["events"] = events
    source = {"kind": "postgres", "dsn": "postgresql://x@h/d", "tables": ["public.t", "public.u"]}
    return config.parse({"agent": {"name": "a", "state_dir": "state"}, "source": source, "targets": [target]},
                        base=tmp_path)


def test_lines_are_the_bodies_as_fetch_restores_them(tmp_path):
    sp = Spool(tmp_path)
    evs = [ev(i, "a.x" if i % 3 else "b.y") for i in range(1, 40)]
    evs.append(MappedEvent("no-such-id", "a.x", "s", f"{40:016X}:000001", 2.0, b'{"k":"v"}'))   # id not in it
    sp.append(evs[:25], [], "c1")
    sp.append(evs[25:], [], "c2")                     # two frames
    for after, limit in ((0, 100), (7, 10), (20, 12), (24, 1), (30, 100)):
        parts: list[bytes] = []
        for frame, lo, hi in sp.fetch_runs(after, limit):
            frame.lines(lo, hi, parts)
        assert b"".join(parts) == b"".join(e.body + b"\n" for e in sp.fetch(after, limit))
        assert lines_of(sp.fetch_runs(after, limit)) == b"".join(parts)
    sp.close()


def pure_lines(runs) -> bytes:
    parts: list[bytes] = []
    for frame, lo, hi in runs:
        frame.lines(lo, hi, parts)
    return b"".join(parts)


def loaded(evs) -> FrameHead:
    head, body = pack(evs)
    f = FrameHead(1, len(evs), None, head)
    f.load_body(body)
    return f


compiled = pytest.mark.skipif(spool_frames._join_lines is None,
                              reason="agent._fastpg is not built, or CDC_AGENT_PURE=1")


@compiled
@settings(max_examples=property_examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_events().filter(bool), min_size=1, max_size=3), st.data())
def test_compiled_lines_are_the_pure_lines_byte_for_byte(frames, data):
    """Ids absent, twice, empty, non-ASCII (cut by their UTF-8 bytes); runs of several frames, any bounds."""
    runs = []
    for evs in frames:
        lo = data.draw(st.integers(0, len(evs)))
        runs.append((loaded(evs), lo, data.draw(st.integers(lo, len(evs)))))
    got = spool_frames._join_lines([(f.payload, f.starts, f.offs, f.ids, lo, hi) for f, lo, hi in runs])
    assert got == pure_lines(runs) == b"".join(e.body + b"\n" for evs, (_, lo, hi) in zip(frames, runs)
                                               for e in evs[lo:hi])
    assert type(got) is bytes


@compiled
def test_compiled_lines_leave_unusual_frames_to_the_pure_path():
    f = loaded([ev(1), ev(2)])
    good = (f.payload, f.starts, f.offs, f.ids, 0, 2)
    odd = [
        (bytearray(f.payload), *good[1:]),                       # not bytes
        (f.payload, f.starts[:2], *good[2:]),                    # starts shorter than hi + 1
        (f.payload, f.starts, [f.offs[0], 10**6], f.ids, 0, 2),  # the id's offset past its body
        (f.payload, f.starts, f.offs, [f.ids[0], b"x"], 0, 2),   # an id that is not a str
        (f.payload, [0, -1, 5], f.offs, f.ids, 0, 2),            # a body before the payload
        (f.payload, f.starts, f.offs, f.ids, 2, 1),              # lo after hi
        (f.payload, f.starts, f.offs, f.ids, 0, 2.0),            # not an int
        (f.payload, f.starts, f.offs, f.ids),                    # not six fields
    ]
    for run in odd:
        assert spool_frames._join_lines([good, run]) is None, run
    assert spool_frames._join_lines([good, good]) == 2 * pure_lines([(f, 0, 2)])
    assert spool_frames._join_lines([]) == b""
    with pytest.raises(TypeError):
        spool_frames._join_lines((good,))


class Delivering:
    """One TargetWorker on the config's spool, in this process, until the block ends."""

    def __init__(self, cfg: config.Config):
        self.monitor = Monitor("a", "postgres")
        self.stop = threading.Event()
        self.worker = TargetWorker(cfg, cfg.targets[0], self.monitor, self.stop)

    def __enter__(self):
        self.worker.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.worker.wake.set()
        self.worker.join(30)


def test_only_the_targets_own_and_shared_events_reach_the_file_and_the_cursor_passes_the_rest(tmp_path):
    cfg = cfg_with_file(tmp_path)
    sp = Spool(cfg.agent.state_dir)
    sp.ensure_targets(["f", "other"])
    sp.append([ev(i) for i in range(1, 6)], [], "c1")
    sp.append([ev(i, only="other") for i in range(6, 9)], [], "c2")      # snapshot --target other
    sp.append([ev(i, only="f") for i in range(9, 11)], [], "c3")         # snapshot --target f
    sp.append([ev(i) for i in range(11, 13)], [], "c4")
    with Delivering(cfg) as d:
        wait_for(lambda: d.worker.caught_up.is_set() and sp.counters("f").cursor == 12, 20, what="delivery")
    got = [orjson.loads(x)["subject"] for x in (tmp_path / "out/e.jsonl").read_bytes().splitlines()]
    assert got == [str(i) for i in [1, 2, 3, 4, 5, 9, 10, 11, 12]]
    c = sp.counters("f")
    assert (c.cursor, c.delivered, c.dead_lettered) == (12, 9, 0)
    assert sp.counters("other").cursor == 0
    assert d.monitor.histogram("f").count == 9
    assert d.monitor.tracker.type_p95()["row.public.t"][1] == 9
    sp.close()


class RefusingLinesTarget:
    """A target that can take lines but refuses them as a batch, and on the usual path refuses one event."""

    name = "f"

    def __init__(self, refuse_seq: int, outage_first: bool = False):
        self.refuse_seq, self.outages = refuse_seq, int(outage_first)
        self.sent: list[int] = []
        self.line_calls = 0

    def open(self):
        return None

    def send_lines(self, data: bytes) -> None:
        self.line_calls += 1
        if self.outages:
            self.outages -= 1
            raise TargetUnavailable("down for a moment")
        raise TargetRejected("refused as a batch")

    def send(self, events) -> DeliveryResult:
        self.sent += [e.seq for e in events if e.seq != self.refuse_seq]
        return DeliveryResult(rejected=[Rejection(e.seq, "HTTP 422: bad") for e in events
                                        if e.seq == self.refuse_seq])

    def close(self) -> None:
        pass


def test_a_refusal_on_the_lines_path_puts_the_refused_event_in_dead_letters(tmp_path, monkeypatch):
    cfg = cfg_with_file(tmp_path)
    fake = RefusingLinesTarget(refuse_seq=3, outage_first=True)
    monkeypatch.setattr("agent.worker.build_target", lambda settings: fake)
    sp = Spool(cfg.agent.state_dir)
    sp.ensure_targets(["f"])
    sp.append([ev(i) for i in range(1, 6)], [], "c1")
    with Delivering(cfg) as d:
        d.worker.policy.initial = 0.01
        wait_for(lambda: sp.counters("f").cursor == 5, 20, what="delivery")
    assert fake.line_calls == 2                     # retried after the outage, then refused
    assert fake.sent == [1, 2, 4, 5]
    c = sp.counters("f")
    assert (c.delivered, c.dead_lettered) == (4, 1)
    assert [dl.event_id for dl in sp.dead_letters("f")] == [f"{3:032x}"]
    sp.close()


def test_event_patterns_take_the_usual_path(tmp_path):
    """A target with event patterns filters per event type: only the wanted types are written."""
    cfg = cfg_with_file(tmp_path, events=["row.public.t"])
    sp = Spool(cfg.agent.state_dir)
    sp.ensure_targets(["f"])
    sp.append([ev(i, "row.public.t" if i % 2 else "row.public.u") for i in range(1, 11)], [], "c1")
    with Delivering(cfg):
        wait_for(lambda: sp.counters("f").cursor == 10, 20, what="delivery")
    got = [orjson.loads(x)["subject"] for x in (tmp_path / "out/e.jsonl").read_bytes().splitlines()]
    assert got == ["1", "3", "5", "7", "9"]
    assert sp.counters("f").delivered == 5
    sp.close()
