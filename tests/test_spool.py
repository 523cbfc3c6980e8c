"""The spool on a real SQLite file: events + checkpoint commit together, replays are ignored by identity,
cursors are per target, pruning keeps what a target still needs, seq is never reused."""

import os
import subprocess
import sys
import textwrap
import time

import orjson

from agent import config
from agent.mapping import MappedEvent, MappingFailure
from agent.spool import Spool


def ev(pos: str, typ: str = "row.public.t", subject: str = "1") -> MappedEvent:
    return MappedEvent(id=f"id-{pos}-{typ}", type=typ, subject=subject, position=pos, commit_ts=1.0,
                       body=b'{"id":"%s"}' % pos.encode())


def test_events_and_checkpoint_commit_together_and_replays_are_ignored(tmp_path):
    sp = Spool(tmp_path)
    assert sp.checkpoint() is None
    assert sp.append([ev("A:1"), ev("A:2")], [], None) == 2
    assert sp.checkpoint() is None                       # mid-transaction: no checkpoint yet
    assert sp.append([ev("A:1"), ev("A:2"), ev("A:3")], [], "ckpt-A") == 1   # the replay adds only A:3
    assert sp.checkpoint() == "ckpt-A"
    assert [e.body for e in sp.fetch(0, 10)] == [b'{"id":"A:1"}', b'{"id":"A:2"}', b'{"id":"A:3"}']
    sp.close()
    again = Spool(tmp_path)                              # reopening keeps both
    assert again.checkpoint() == "ckpt-A"
    assert [e.body for e in again.fetch(0, 10)] == [b"{\"id\":\"A:%d\"}" % i for i in (1, 2, 3)]


def test_hot_writes_wait_for_the_writer_lock_and_go_on_when_it_is_released(tmp_path):
    """append and advance (capture and delivery) take state_dir/spool.lock around their transaction, so one
    waits for the other in the kernel instead of in SQLite's sleeping busy handler; reads do not take it."""
    import fcntl
    import threading

    sp = Spool(tmp_path)
    sp.ensure_targets(["t"])
    sp.append([ev("A:1")], [], "ckpt-A")
    holder = os.open(tmp_path / "spool.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    done = []

    def write(fn):
        other = Spool(tmp_path)                 # a second connection, as the delivery process has
        fn(other)
        done.append(fn)
        other.close()

    writers = [threading.Thread(target=write, args=(lambda s: s.append([ev("A:2")], [], "ckpt-B"),)),
               threading.Thread(target=write, args=(lambda s: s.advance("t", 1, 1, []),))]
    for w in writers:
        w.start()
    for w in writers:
        w.join(0.3)
    assert not done and all(w.is_alive() for w in writers)   # both wait for the lock
    assert sp.checkpoint() == "ckpt-A" and len(sp.fetch(0, 10)) == 1   # reading goes on meanwhile
    fcntl.flock(holder, fcntl.LOCK_UN)
    for w in writers:
        w.join(10)
    assert len(done) == 2
    assert sp.checkpoint() == "ckpt-B" and sp.counters("t").cursor == 1
    os.close(holder)
    sp.close()


def test_nothing_is_pending_once_targets_pass_a_replay(tmp_path):
    """A replay after a restart is ignored by identity but still uses up seq numbers; pending counts must not
    count those gaps once the targets have delivered everything (else backpressure would pause capture
    with nothing left to deliver)."""
    sp = Spool(tmp_path)
    sp.ensure_targets(["t"])
    sp.append([ev(f"{i:04d}") for i in range(10)], [], "c1")
    for _ in range(3):
        assert sp.append([ev(f"{i:04d}") for i in range(10)], [], "c1") == 0     # replayed: ignored
    assert sp.max_pending() >= 10
    last = sp.fetch(0, 100)[-1].seq
    sp.advance("t", last, 10, [])
    assert sp.pending("t") == sp.max_pending() == 0        # the replay was the last thing spooled
    sp.append([ev("0010")], [], "c2")
    assert sp.max_pending() >= 1
    sp.advance("t", sp.fetch(last, 100)[-1].seq, 1, [])
    assert sp.pending("t") == sp.max_pending() == 0
    sp.close()


def test_checkpoint_never_survives_without_its_events(tmp_path):
    """A process killed inside append leaves neither the events nor the checkpoint."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from agent.spool import Spool
        from agent.mapping import MappedEvent
        sp = Spool({str(tmp_path)!r})
        # die when the checkpoint is about to be written: the events are inserted, nothing is committed
        sp.db.set_trace_callback(lambda sql: os._exit(9) if "INTO meta" in sql else None)
        sp.append([MappedEvent("i", "t", "s", "P:1", 1.0, b"{{}}")], [], "ckpt-P")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    sp = Spool(tmp_path)
    assert sp.checkpoint() is None and sp.last_seq() == 0


def test_cursors_are_per_target_and_prune_keeps_what_a_target_needs(tmp_path):
    sp = Spool(tmp_path)
    sp.ensure_targets(["fast", "slow"])
    sp.append([ev(f"A:{i}") for i in range(1, 6)], [], "c1")
    sp.advance("fast", 5, 5, [])
    assert sp.pending("fast") == 0 and sp.pending("slow") == 5
    assert sp.prune(0) == 0                              # slow still needs all five
    sp.advance("slow", 3, 3, [])
    assert sp.prune(0) == 3
    assert [e.seq for e in sp.fetch(3, 10)] == [4, 5]
    sp.advance("slow", 5, 2, [])
    assert sp.prune(0) == 2 and sp.fetch(0, 10) == []
    sp.append([ev("B:1")], [], "c2")                     # seq continues after an emptied table
    assert [e.seq for e in sp.fetch(5, 10)] == [6]
    c = sp.counters("slow")
    assert (c.cursor, c.delivered) == (5, 5)


def test_dead_letters_from_delivery_and_mapping(tmp_path):
    sp = Spool(tmp_path)
    sp.ensure_targets(["crm"])
    fail = MappingFailure("order.status.changed", "A:9", "code 'X' has no mapping", b'{"table":"t"}')
    sp.append([ev("A:1"), ev("A:2")], [fail], "c")
    sp.append([], [fail], "c")                           # a replayed failure is stored once
    first, second = sp.fetch(0, 10)
    sp.advance("crm", 2, 1, [(second, "HTTP 400: bad")])
    dls = sp.dead_letters()
    assert [(d.target, d.type, d.reason) for d in dls] == [
        (None, "order.status.changed", "code 'X' has no mapping"), ("crm", "row.public.t", "HTTP 400: bad")]
    assert dls[1].body == second.body and dls[1].position == "A:2"
    c = sp.counters("crm")
    assert (c.cursor, c.delivered, c.dead_lettered) == (2, 1, 1)
    assert sp.drop_dead_letter(dls[0].dl_id) and sp.count_dead_letters() == 1


def test_new_target_added_later_starts_at_the_oldest_cursor(tmp_path):
    sp = Spool(tmp_path)
    sp.ensure_targets(["a"])
    sp.append([ev("A:1"), ev("A:2")], [], "c")
    sp.advance("a", 1, 1, [])
    sp.ensure_targets(["a", "b"])
    assert sp.counters("b").cursor == 1 and sp.counters("a").cursor == 1


def test_file_is_wal_mode(tmp_path):
    Spool(tmp_path).close()
    assert os.path.exists(tmp_path / "spool.db")
    import sqlite3
    assert sqlite3.connect(tmp_path / "spool.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_prune_respects_retention_and_goes_in_small_steps(tmp_path, monkeypatch):
    import agent.spool as spool_mod
    clock = [1000.0]
    monkeypatch.setattr(spool_mod.time, "time", lambda: clock[0])
    sp = Spool(tmp_path)
    sp.ensure_targets(["t"])
    sp.append([ev(f"A:{i}") for i in range(1, 11)], [], "c1")        # spooled at 1000
    clock[0] = 2000.0
    sp.append([ev(f"B:{i}") for i in range(1, 11)], [], "c2")        # spooled at 2000
    sp.advance("t", 20, 20, [])
    clock[0] = 2500.0                                                 # retention 1000: only the A events are old
    assert [sp.prune(1000, limit=4) for _ in range(4)] == [4, 4, 2, 0]
    assert [e.seq for e in sp.fetch(0, 100)] == list(range(11, 21))
    clock[0] = 3500.0
    assert sp.prune(1000, limit=100) == 10 and sp.fetch(0, 100) == []


def test_targets_with_event_patterns_get_their_types_and_pass_the_rest(tmp_path):
    """Two workers on one spool: one takes every type, one only `customer.*`, which is rare (runs of
    non-matching events longer than what one batch scans). Each gets exactly its events, in spool order,
    and both cursors reach the end of the spool."""
    import threading

    from agent.monitor import Monitor
    from agent.worker import SCAN_LIMIT, TargetWorker
    cfg = config.parse({"agent": {"name": "a", "state_dir": "state"},
                        "source": {"kind": "postgres", "dsn": "postgresql://x@h/d", "tables": ["public.t"]},
                        "events": [{"type": "customer.x", "table": "public.t"}],     # (a pattern must match a type)
                        "targets": [{"name": "all", "kind": "file", "path": "all.jsonl", "batch_size": 700},
                                    {"name": "cust", "kind": "file", "path": "cust.jsonl", "batch_size": 3,
                                     "events": ["customer.*"]}]}, base=tmp_path)
    spool = Spool(cfg.agent.state_dir)
    spool.ensure_targets(["all", "cust"])
    n = 3 * SCAN_LIMIT
    wanted = [i for i in range(n) if i % 2500 == 7 or 100 <= i < 110]
    evs = [MappedEvent(f"id{i}", "customer.x" if i in wanted else "row.public.t", str(i), f"{i:08d}", 1.0,
                       orjson.dumps({"id": f"id{i}", "n": i})) for i in range(n)]
    for k in range(0, n, 1000):
        spool.append(evs[k:k + 1000], [], f"cp{k}")
    stop = threading.Event()
    workers = [TargetWorker(cfg, t, Monitor("a", "postgres"), stop) for t in cfg.targets]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 30
        while spool.max_pending() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for w in workers:
            w.wake.set()
            w.join(15)
    got = {name: [orjson.loads(x)["n"] for x in (tmp_path / f"{name}.jsonl").read_bytes().splitlines()]
           for name in ("all", "cust")}
    assert got["all"] == list(range(n))
    assert got["cust"] == wanted
    assert spool.counters("cust").cursor == spool.counters("all").cursor == spool.last_seq()
    spool.close()


def test_the_unmapped_dead_letter_lookup_is_an_index_search(tmp_path):
    """Each mapping failure is looked up by (position, type) before it is stored; a scan there made a flood
    of unmappable changes quadratic (migration 005 adds the index)."""
    sp = Spool(tmp_path / "state")
    plan = sp.db.execute("EXPLAIN QUERY PLAN SELECT 1 FROM dead_letters WHERE target IS NULL AND position = ? "
                         "AND type = ?", ("p", "t")).fetchall()
    sp.close()
    assert any("USING INDEX dead_letters_unmapped" in row[-1] for row in plan), plan
