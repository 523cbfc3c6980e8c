"""Spool frames (agent/spool_frames.py, agent/spool.py): one row per source batch, and everything that
addressed single events still exact — cursors inside a frame (also across a SIGKILL of delivery),
`snapshot --target` events counted only for their target, a retried read dead letter keeping its id and
target, an old state_dir's per-event rows migrated, pruning inside a frame and at its boundary."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import astuple

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.changes import RowChange
from agent.mapping import EventMapper, MappedEvent, event_id
from agent.shipped import shipped
from agent.spool import FRAME_EVENTS, Spool
from agent import fastpath, spool_frames
from agent.spool_frames import FrameHead, pack
from tests.agentproc import ROOT, read_events, wait_for
from tests.test_delivery import cli, file_block, load, write_config
from tests.plugins import property_examples


def ev(i: int, typ: str = "row.public.t", only: str | None = None, ts: float = 1.0) -> MappedEvent:
    eid = f"{i:032x}"
    pos = f"{i:016X}:000001"
    body = orjson.dumps({"specversion": "1.0", "id": eid, "type": typ, "subject": str(i), "position": pos,
                         "data": {"n": i, "pad": "x" * (i % 7)}})
    return MappedEvent(eid, typ, str(i), pos, ts, body, only_target=only)


def frame_rows(sp: Spool) -> list[tuple[int, int]]:
    return list(sp.db.execute("SELECT seq, n FROM frames ORDER BY seq"))


def test_a_batch_is_one_row_and_every_event_comes_back_byte_for_byte(tmp_path):
    sp = Spool(tmp_path)
    evs = [ev(i, "a.x" if i % 3 else "b.y") for i in range(1, 101)]
    # an id missing from its body, and an id that occurs twice: both restored exactly
    evs.append(MappedEvent("no-such-id", "a.x", "s", f"{101:016X}:000001", 2.0, b'{"k":"v"}'))
    evs.append(MappedEvent("dup", "a.x", "s|2", f"{102:016X}:000001", 2.0, b'{"id":"dup","again":"dup"}'))
    assert sp.append(evs, [], "c1") == 102
    assert frame_rows(sp) == [(1, 102)]
    got = sp.fetch(0, 1000)
    assert [(e.seq, e.id, e.type, e.subject, e.position, e.commit_ts, e.body) for e in got] == \
           [(i + 1, e.id, e.type, e.subject, e.position, e.commit_ts, e.body) for i, e in enumerate(evs)]
    stored = sp.db.execute("SELECT length(head) + length(body) FROM frames").fetchone()[0]
    assert stored < sum(len(e.body) for e in evs) / 2          # compressed, each id stored once


def test_cursor_inside_a_frame_resumes_at_the_next_event(tmp_path):
    """A reader that stops after some batches of a frame (its cursor inside the frame) and a new reader
    (a new connection, nothing cached) continue at the next event: the batches join up exactly."""
    sp = Spool(tmp_path)
    sp.ensure_targets(["t"])
    sp.append([ev(i) for i in range(1, 51)], [], "c1")
    sp.append([ev(i) for i in range(51, 81)], [], "c2")
    assert frame_rows(sp) == [(1, 50), (51, 30)]
    seen = []
    for _ in range(3):
        batch = sp.fetch(sp.counters("t").cursor, 7)
        seen += [e.seq for e in batch]
        sp.advance("t", batch[-1].seq, len(batch), [])
    assert sp.counters("t").cursor == 21 and sp.pending("t") == 59
    sp.close()
    again = Spool(tmp_path)
    while batch := again.fetch(again.counters("t").cursor, 13):     # crosses the frame boundary at 50/51
        seen += [e.seq for e in batch]
        again.advance("t", batch[-1].seq, len(batch), [])
    assert seen == list(range(1, 81))
    assert [e.id for e in again.fetch(20, 3)] == [ev(i).id for i in (21, 22, 23)]


WORKER = textwrap.dedent("""
    import sys, threading, time
    sys.path.insert(0, {root!r})
    from agent import config
    from agent.monitor import Monitor
    from agent.spool import Spool
    from agent.worker import TargetWorker
    cfg = config.load({cfg!r})
    spool = Spool(cfg.agent.state_dir)
    stop = threading.Event()
    w = TargetWorker(cfg, cfg.targets[0], Monitor("a", "postgres"), stop)
    w.start()
    while spool.pending(cfg.targets[0].name):
        time.sleep(0.02)
    stop.set(); w.wake.set(); w.join(20)
""")


def test_delivery_killed_mid_frame_resumes_at_the_next_event(tmp_path, monkeypatch):
    """SIGKILL of a delivery process in the middle of a frame (3000 events in frames of 1000; a file target,
    7 events a batch, each fsynced, so no cursor falls on a frame's end): a new one resumes inside the frame.
    Every event arrives, in order; what arrives twice is at most the one batch that was written but not
    confirmed when the process died."""
    cfg_path = write_config(tmp_path, file_block("audit") + "batch_size = 7\n")
    cfg = load(cfg_path, monkeypatch)
    sp = Spool(cfg.agent.state_dir)
    sp.ensure_targets(["audit"])
    n = 3 * FRAME_EVENTS
    sp.append([ev(i) for i in range(1, n + 1)], [], "c1")
    assert frame_rows(sp) == [(1 + k * FRAME_EVENTS, FRAME_EVENTS) for k in range(3)]
    out = tmp_path / "out" / "events.jsonl"
    script = WORKER.format(root=str(ROOT), cfg=str(cfg_path))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=os.environ.copy())
    try:
        wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 600, 60, what="600 lines")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    cursor = sp.counters("audit").cursor
    assert 0 < cursor < n and cursor % FRAME_EVENTS, "the kill did not land inside a frame"
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=120, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = [e["data"]["n"] for e in read_events(out, final=True)]
    assert sorted(set(got)) == list(range(1, n + 1))               # nothing lost
    dups = len(got) - n
    assert 0 <= dups <= 7                                          # at most the unconfirmed batch again
    # in order, except that one batch may come again right where the new process started
    firsts = [i for i in range(1, len(got)) if got[i] <= got[i - 1]]
    assert len(firsts) <= 1
    if firsts:
        k = firsts[0]
        assert got[:k] + [x for x in got[k:] if x > got[k - 1]] == list(range(1, n + 1))
    assert sp.counters("audit").cursor == n and sp.pending("audit") == 0


def test_pending_counts_only_the_events_meant_for_each_target(tmp_path):
    sp = Spool(tmp_path)
    sp.ensure_targets(["a", "b"])
    evs = [ev(1), ev(2)] + [ev(i, only="a") for i in range(3, 9)] + [ev(9), ev(10)]
    sp.append(evs, [], "c1")
    assert frame_rows(sp) == [(1, 2), (3, 6), (9, 2)]          # a frame per run of the same only_target
    assert sp.pending("a") == 10 and sp.pending("b") == 4 and sp.max_pending() == 10
    sp.advance("b", 5, 2, [])                                 # b's cursor inside a's frame: 3 of a's are left
    assert sp.pending("b") == 2
    sp.advance("b", 10, 2, [])
    assert sp.pending("b") == 0 and sp.max_pending() == 10
    sp.advance("a", 4, 4, [])
    assert sp.pending("a") == 6 and sp.max_pending() == 6
    sp.append([ev(i, only="b") for i in range(11, 14)], [], "c2")
    assert (sp.pending("a"), sp.pending("b"), sp.max_pending()) == (6, 3, 6)
    # what the workers hand out: b never gets a's events
    assert [e.seq for e in sp.fetch(10, 100)] == [11, 12, 13]
    assert {e.only_target for e in sp.fetch(0, 100)} == {None, "a", "b"}


def test_pruning_inside_a_frame_and_at_its_boundary(tmp_path):
    sp = Spool(tmp_path)
    sp.ensure_targets(["t"])
    for k in range(3):
        sp.append([ev(i, ts=100.0 + i) for i in range(5 * k + 1, 5 * k + 6)], [], f"c{k}")
    assert frame_rows(sp) == [(1, 5), (6, 5), (11, 5)]
    sp.advance("t", 7, 7, [])                                 # inside the second frame
    assert sp.prune(0) == 7
    assert frame_rows(sp) == [(6, 5), (11, 5)]                # the first row went; the second holds 8..10 still
    assert sp.pruned_through() == (7, 107.0)
    assert [e.seq for e in sp.fetch(0, 100)] == list(range(8, 16))   # nothing at or before the mark
    assert sp.first_seq_at(position=ev(6).position) is None          # a replay from a pruned point: refused
    assert sp.first_seq_at(position=ev(8).position) == 8
    assert sp.first_seq_at(since_ts=0) == 8
    assert sp.event_at(7) is None and sp.event_at(8) == (ev(8).position, 108.0)
    assert sp.types_after(0) == {"row.public.t": 8}
    assert sp.prune(0) == 0                                   # nothing more until the cursor moves
    sp.advance("t", 10, 3, [])                                # exactly at the frame's end
    assert sp.prune(0) == 3 and frame_rows(sp) == [(11, 5)] and sp.pruned_through() == (10, 110.0)
    sp.advance("t", 15, 5, [])
    assert sp.prune(0, limit=2) == 2 and frame_rows(sp) == [(11, 5)]   # small steps, inside the last frame
    assert sp.prune(0) == 3 and frame_rows(sp) == []
    sp.append([ev(16)], [], "c4")                             # numbering goes on after an emptied spool
    assert frame_rows(sp) == [(16, 1)] and sp.pending("t") == 1


def test_a_replayed_batch_is_recognised_by_position_and_type(tmp_path):
    sp = Spool(tmp_path)
    sp.append([ev(i) for i in range(1, 11)], [], None)        # mid-transaction, then the process died
    # the source sends the transaction again from its start, with the rest of it; a second rule's event of
    # an old change (another type at the same position) is new
    again = [ev(i) for i in range(1, 16)] + [ev(3, "second.rule")]
    assert sp.append(again, [], "c1") == 6
    got = sp.fetch(0, 100)
    assert [(e.position, e.type) for e in got] == [(ev(i).position, "row.public.t") for i in range(1, 16)] + \
        [(ev(3).position, "second.rule")]
    assert sp.append(again, [], "c1") == 0


def _legacy_state_dir(state) -> None:
    """A spool as the agent wrote it before frames: migrations 1 and 2, one row per event."""
    state.mkdir()
    db = sqlite3.connect(state / "spool.db", isolation_level=None)
    for f in sorted(shipped("migrations/state").glob("00[12]_*.sql")):
        db.executescript(f.read_text())
    db.execute("PRAGMA user_version = 2")
    rows = [(s, ev(s).id, ev(s).type, ev(s).subject, ev(s).position, 50.0 + s, time.time(), ev(s).body,
             "crm" if s in (8, 9) else None) for s in (1, 2, 3, 4, 5, 8, 9, 10)]
    db.executemany("INSERT INTO events (seq, id, type, subject, position, commit_ts, spooled_at, body, only_target) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("UPDATE sqlite_sequence SET seq = 12 WHERE name = 'events'")    # replays used 11 and 12
    db.execute("INSERT INTO targets (name, cursor, delivered) VALUES ('audit', 3, 3), ('crm', 3, 3)")
    db.execute("INSERT INTO meta (key, value) VALUES ('source_checkpoint', 'old-ckpt')")
    db.close()


def test_an_old_state_dir_with_per_event_rows_is_migrated_and_delivered(tmp_path, monkeypatch):
    cfg_path = write_config(tmp_path, file_block("audit") + file_block("crm", "out/crm.jsonl"))
    cfg = load(cfg_path, monkeypatch)
    _legacy_state_dir(cfg.agent.state_dir)
    status = cli("status", "-c", str(cfg_path))        # reads only: cannot upgrade, says what will
    assert status.returncode != 0 and "older cdc-agent" in status.stderr + status.stdout, status.stderr
    assert "Traceback" not in status.stderr
    sp = Spool(cfg.agent.state_dir)
    assert sp.db.execute("PRAGMA user_version").fetchone()[0] >= 3
    assert not sp.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
    assert frame_rows(sp) == [(1, 5), (8, 2), (10, 1)]          # consecutive runs, one per only_target
    assert sp.checkpoint() == "old-ckpt"
    got = sp.fetch(3, 100)
    assert [(e.seq, e.id, e.body, e.commit_ts, e.only_target) for e in got] == \
           [(s, ev(s).id, ev(s).body, 50.0 + s, "crm" if s in (8, 9) else None) for s in (4, 5, 8, 9, 10)]
    assert sp.pending("crm") == 12 - 3 and sp.pending("audit") == 12 - 3 - 2   # an upper bound: old gaps
    assert sp.append([ev(5), ev(13)], [], "new-ckpt") == 1     # old identities still hold; seq goes on at 13
    assert frame_rows(sp)[-1] == (13, 1)
    sp.close()
    from tests.test_delivery import Delivery
    with Delivery(cfg):
        wait_for(lambda: len(read_events(tmp_path / "out" / "events.jsonl")) == 4, 20, what="audit's events")
        wait_for(lambda: len(read_events(tmp_path / "out" / "crm.jsonl")) == 6, 20, what="crm's events")
    assert [e["data"]["n"] for e in read_events(tmp_path / "out" / "events.jsonl", final=True)] == [4, 5, 10, 13]
    assert [e["data"]["n"] for e in read_events(tmp_path / "out" / "crm.jsonl", final=True)] == [4, 5, 8, 9, 10, 13]


def test_dlq_retry_of_a_read_event_keeps_its_id_and_its_target(tmp_path, monkeypatch):
    """A snapshot row (`snapshot --target crm`) that no rule could map goes to dead letters; once the
    config is fixed, `dlq retry` spools it with the id it would have had, for crm only."""
    cfg_path = write_config(tmp_path, file_block("audit") + file_block("crm", "out/crm.jsonl"))
    cfg = load(cfg_path, monkeypatch)
    read = RowChange(table="public.orders", op="read", before=None, after={"order_id": 7, "status": "X"},
                     position="00000000000000A0:000001:00000001", commit_time="2026-11-23T10:15:02.123456Z",
                     commit_ts=time.time(), key_columns=("order_id",),
                     id_key='snapshot\x00req1\x00public.orders\x00[7]', target="crm")
    events, failures = EventMapper(cfg).map([read])
    assert events == [] and len(failures) == 1
    sp = Spool(cfg.agent.state_dir)
    sp.ensure_targets(["audit", "crm"])
    sp.append([], failures, None)
    sp.close()
    cfg_path.write_text(cfg_path.read_text().replace('S = "shipped"', 'S = "shipped", X = "cancelled"'))
    fixed = cli("dlq", "retry", "-c", str(cfg_path))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    expected, _ = EventMapper(load(cfg_path, monkeypatch)).map([read])
    assert expected[0].id == event_id("erp-test", read.id_key, "order.status.changed")
    sp = Spool(cfg.agent.state_dir)
    [spooled] = sp.fetch(0, 10)
    assert (spooled.id, spooled.only_target) == (expected[0].id, "crm")
    assert orjson.loads(spooled.body)["id"] == expected[0].id
    assert sp.pending("crm") == 1 and sp.pending("audit") == 0
    sp.close()


@pytest.mark.parametrize("n", [1, 2, 700])
def test_frame_codec_round_trip(n):
    evs = [ev(i, f"t{i % 3}") for i in range(1, n + 1)]
    head, body = pack(evs)
    f = FrameHead(41, n, "x", head)
    f.load_body(body)
    got = f.events(0, n)
    assert [(e.seq, e.id, e.type, e.subject, e.position, e.body, e.only_target) for e in got] == \
           [(41 + i, e.id, e.type, e.subject, e.position, e.body, "x") for i, e in enumerate(evs)]
    with pytest.raises(ValueError):
        FrameHead(41, n + 1, None, head)


def test_a_damaged_frame_is_one_clear_spool_error(tmp_path):
    from agent.errors import SpoolError
    sp = Spool(tmp_path)
    sp.append([ev(i) for i in range(1, 4)], [], "c1")
    sp.db.execute("UPDATE frames SET body = x'789c00'")          # a cut zlib stream
    with pytest.raises(SpoolError, match="frame 1 is damaged"):
        sp.fetch(0, 10)
    sp.db.execute("UPDATE frames SET head = x'00'")
    with pytest.raises(SpoolError, match="frame 1 is damaged"):
        sp.types_after(0)


FORMAT1 = ROOT / "tests" / "data" / "spool-frames-format1.json"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def format1_events() -> list[MappedEvent]:
    """The events in tests/data/spool-frames-format1.json, as they were spooled."""
    return [ev(i, "a.x" if i % 3 else "b.y", ts=100.0 + i) for i in range(1, 7)] + \
        [ev(i, only="crm", ts=100.0 + i) for i in range(7, 10)] + \
        [MappedEvent("no-such-id", "a.x", "s", f"{10:016X}:000001", 110.0, b'{"k":"v"}'),
         MappedEvent("dup", "a.x", "s|2", f"{11:016X}:000001", 111.0, b'{"id":"dup","again":"dup"}')]


def spool_with_format1_frames(state) -> Spool:
    """A spool holding the frames an agent before format 2 wrote (zlib), its cursors and checkpoint."""
    sp = Spool(state)
    rows = orjson.loads(FORMAT1.read_bytes())["frames"]
    sp.db.executemany("INSERT INTO frames (seq, n, min_position, max_position, min_ts, max_ts, spooled_at, "
                      "only_target, head, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      [(r["seq"], r["n"], r["min_position"], r["max_position"], r["min_ts"], r["max_ts"],
                        time.time(), r["only_target"], bytes.fromhex(r["head"]), bytes.fromhex(r["body"]))
                       for r in rows])
    sp.db.execute("INSERT INTO targets (name, cursor, delivered) VALUES ('audit', 3, 3), ('crm', 0, 0)")
    sp.db.execute("INSERT INTO meta (key, value) VALUES ('source_checkpoint', 'old-ckpt')")
    assert all(h[:2] == b"\x78\x01" for h, in sp.db.execute("SELECT head FROM frames"))     # zlib, really
    return sp


def test_zlib_frames_of_an_older_agent_are_read_next_to_new_zstd_frames(tmp_path):
    sp = spool_with_format1_frames(tmp_path / "state")
    old = format1_events()
    assert [(e.seq, e.id, e.type, e.subject, e.position, e.commit_ts, e.body, e.only_target)
            for e in sp.fetch(0, 100)] == \
        [(i + 1, e.id, e.type, e.subject, e.position, e.commit_ts, e.body, e.only_target) for i, e in enumerate(old)]
    # what reads only the heads: the dashboard's search, replay lookups, counting
    assert sp.find_event(ev(5).id) == (5, "a.x", "5", ev(5).position)
    assert sp.first_seq_at(position=ev(8).position) == 8 and sp.first_seq_at(since_ts=105.5) == 6
    assert sp.event_at(9) == (ev(9).position, 109.0)
    assert sp.types_after(3) == {"a.x": 4, "b.y": 1, "row.public.t": 3}
    assert sp.append([old[4], old[10]], [], "c3") == 0           # replays of old events: known by their heads
    new = [ev(i, ts=100.0 + i) for i in range(12, 15)]
    assert sp.append(new, [], "new-ckpt") == 3
    head, body = sp.db.execute("SELECT head, body FROM frames WHERE seq = 12").fetchone()
    assert head[:4] == ZSTD_MAGIC and body[:4] == ZSTD_MAGIC
    got = sp.fetch(8, 100)                                      # across the old frames into the new one
    assert [(e.seq, e.id, e.body) for e in got] == [(s, e.id, e.body) for s, e in enumerate(old[8:] + new, 9)]
    assert sp.pending("audit") == 14 - 3 - 3 and sp.pending("crm") == 14
    sp.advance("audit", 14, 8, [])
    sp.advance("crm", 10, 10, [])
    assert sp.prune(0) == 10 and frame_rows(sp) == [(10, 2), (12, 3)]
    assert [e.seq for e in sp.fetch(0, 100)] == [11, 12, 13, 14]


def test_an_upgraded_agent_delivers_what_an_older_one_spooled(tmp_path, monkeypatch):
    """The real delivery path (workers, file targets) over a spool of zlib frames and new zstd frames."""
    cfg_path = write_config(tmp_path, file_block("audit") + file_block("crm", "out/crm.jsonl"))
    cfg = load(cfg_path, monkeypatch)
    sp = spool_with_format1_frames(cfg.agent.state_dir)
    sp.append([ev(12, ts=112.0)], [], "new-ckpt")
    sp.close()
    from tests.test_delivery import Delivery
    with Delivery(cfg):
        wait_for(lambda: len(read_events(tmp_path / "out" / "events.jsonl")) == 6, 20, what="audit's events")
        wait_for(lambda: len(read_events(tmp_path / "out" / "crm.jsonl")) == 12, 20, what="crm's events")
    spooled = format1_events() + [ev(12)]
    bodies = [orjson.loads(e.body) for e in spooled]
    assert read_events(tmp_path / "out" / "crm.jsonl", final=True) == bodies
    assert read_events(tmp_path / "out" / "events.jsonl", final=True) == bodies[3:6] + bodies[9:]


def test_a_damaged_zstd_frame_is_one_clear_spool_error(tmp_path):
    """zstd's content checksum: a changed byte in a body is an error, never a wrong event."""
    from agent.errors import SpoolError
    sp = Spool(tmp_path)
    sp.append([ev(i) for i in range(1, 40)], [], "c1")
    body = bytearray(sp.db.execute("SELECT body FROM frames").fetchone()[0])
    assert body[:4] == ZSTD_MAGIC
    body[len(body) // 2] ^= 0x20
    sp.db.execute("UPDATE frames SET body = ?", (bytes(body),))
    with pytest.raises(SpoolError, match="frame 1 is damaged"):
        Spool(tmp_path).fetch(0, 10)
    sp.db.execute("UPDATE frames SET body = ?", (zlib.compress(b"x" * 10),))     # a zlib body under a zstd head
    with pytest.raises(SpoolError, match="frame 1 is damaged"):
        Spool(tmp_path).fetch(0, 10)
    assert sp.types_after(0) == {"row.public.t": 39}           # the head is whole: counting still works


def _frame_event(draw, i: int, types: list[str]) -> MappedEvent:
    eid = draw(st.sampled_from([f"{i:032x}", "", "dup", "é-ü", "x" * 40]))
    before = draw(st.binary(max_size=30))
    where = draw(st.sampled_from(["in", "twice", "absent"]))
    body = before + (eid.encode() if where != "absent" else b"") + draw(st.binary(max_size=30)) + \
        (eid.encode() if where == "twice" else b"")
    typ = draw(st.sampled_from(types))
    if draw(st.booleans()):
        typ = "".join(list(typ))          # an equal str that is another object
    ts = draw(st.floats(allow_nan=False, allow_infinity=False))
    return MappedEvent(eid, typ, draw(st.text(max_size=8)), f"{draw(st.integers(0, 99)):016X}:000001", ts, body)


@st.composite
def frame_events(draw) -> list[MappedEvent]:
    types = draw(st.lists(st.sampled_from(["a.x", "b.y", "row.public.t", "ü.t"]), min_size=1, max_size=3))
    return [_frame_event(draw, i, types) for i in range(draw(st.integers(0, 40)))]


class OtherEvent(MappedEvent):
    """Not exactly a MappedEvent: pack reads its fields as attributes."""
    __slots__ = ()


@pytest.mark.skipif(spool_frames._pack_events is None, reason="agent._fastpg is not built, or CDC_AGENT_PURE=1")
@settings(max_examples=property_examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_events())
def test_compiled_pack_makes_the_pure_frame_byte_for_byte(evs):
    assert fastpath._glue()                     # MappedEvents are read at their slots' offsets (fp_event_fields)
    evs = [OtherEvent(*astuple(e)) if i % 5 == 4 else e for i, e in enumerate(evs)]     # and as attributes
    into = bytearray(b"?" * 50)                 # a buffer a longer frame left: only its first `size` bytes count
    *compiled, size = spool_frames._pack_events(evs, into)
    *pure, joined = spool_frames._fields_pure(evs)
    assert compiled == pure and bytes(into[:size]) == joined
    assert [type(x) for x in compiled] == [type(x) for x in pure]
    if evs:
        head, body = pack(evs)
        f = FrameHead(1, len(evs), None, head)
        f.load_body(body)
        assert [(e.id, e.type, e.subject, e.position, e.commit_ts, e.body) for e in f.events(0, len(evs))] == \
               [(e.id, e.type, e.subject, e.position, e.commit_ts, e.body) for e in evs]


@pytest.mark.skipif(spool_frames._pack_events is None, reason="agent._fastpg is not built, or CDC_AGENT_PURE=1")
def test_compiled_pack_leaves_unusual_events_to_the_pure_path():
    odd = [MappedEvent("a", "t", "s", "p", 1.0, bytearray(b'{"id":"a"}'))]
    assert spool_frames._pack_events(odd, bytearray()) is None
    head, body = pack(odd)                      # packed in Python instead: the same frame
    f = FrameHead(1, 1, None, head)
    f.load_body(body)
    assert f.events(0, 1)[0].body == b'{"id":"a"}'


@pytest.mark.skipif(spool_frames._pack_events is None, reason="agent._fastpg is not built, or CDC_AGENT_PURE=1")
def test_compiled_pack_finds_the_first_id_as_find_does_near_the_start_and_past_it():
    # pack_events tries the first 64 starts 8 bytes at a time, then memchr: ids at every offset across that
    # edge, after near misses (the first 8 or more bytes alike), twice, at the very end, cut short, absent
    ids = ["0123456789abcdef0123456789abcdef", "abcdefgh", "abcdefghi", "abc", "a", "é-ü-é-ü!"]
    evs = []
    for eid in ids:
        idb = eid.encode()
        misses = [b"", idb[:-1] + b"~", idb[:8], idb[:len(idb) - 1], b"\x00" * 9]
        for off in [0, 1, 7, 8, 26, 27, 56, 57, 63, 64, 65, 71, 72, 100]:
            for miss in misses:
                pre = (miss + b'{"specversion":"1.0","id":"' * 4)[:off]
                for body in (pre + idb, pre + idb + b'","source"', pre + idb + b"x" + idb, pre + idb[:-1], pre,
                             pre + miss + idb):
                    evs.append(MappedEvent(eid, "t", "s", f"{len(evs):016X}:000001", 1.0, body))
    into = bytearray()
    *compiled, size = spool_frames._pack_events(evs, into)
    *pure, joined = spool_frames._fields_pure(evs)
    assert compiled == pure and bytes(into[:size]) == joined
    assert compiled[3] == [e.body.find(e.id.encode()) for e in evs]        # (the offsets are find's)
