"""The agent's spool connections leave WAL checkpoints to the checkpoint thread (agent/spool_checkpoints.py):
their commits do not copy the WAL into spool.db, the thread does, and nothing spooled is lost or changed
by it. Appends are packed before the write lock; what a replay leaves new is packed again."""

import os
import sqlite3
import time

from agent.mapping import MappedEvent
from agent.spool import BACKSTOP_CHECKPOINT_PAGES, Spool
from agent.spool_checkpoints import SpoolCheckpointer


def ev(i: int) -> MappedEvent:
    # incompressible bodies: the WAL grows by pages, as it does with many events
    body = b'{"id":"%06d","pad":"%s"}' % (i, os.urandom(3000).hex().encode())
    return MappedEvent(id=f"id-{i}", type="row.public.t", subject=str(i), position=f"{i:08d}", commit_ts=1.0,
                       body=body)


def fill(sp: Spool, batches: int = 100) -> list[MappedEvent]:
    """About 1800 WAL pages: past the default threshold of 1000 pages at which a commit checkpoints."""
    out = []
    for b in range(batches):
        events = [ev(b * 25 + k) for k in range(25)]
        sp.append(events, [], f"ckpt-{b}")
        out += events
    return out


def db_size(folder) -> int:
    return (folder / "spool.db").stat().st_size


def test_the_agents_commits_leave_checkpoints_to_the_thread(tmp_path):
    plain_dir, agent_dir = tmp_path / "plain", tmp_path / "agent"
    plain = Spool(plain_dir)
    agent = Spool(agent_dir, background_checkpoints=True)
    assert plain.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert agent.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_CHECKPOINT_PAGES
    plain_before, agent_before = db_size(plain_dir), db_size(agent_dir)
    fill(plain)
    events = fill(agent)
    assert db_size(plain_dir) > plain_before + 1_000_000        # its commits checkpointed into spool.db
    assert db_size(agent_dir) == agent_before                    # all of it still in the WAL
    cp = SpoolCheckpointer(agent_dir, every=0.01)
    cp.start()
    deadline = time.monotonic() + 60
    while db_size(agent_dir) < agent_before + 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    cp.stop()
    assert not cp.is_alive()
    assert cp.checkpoints >= 1
    assert db_size(agent_dir) > agent_before + 1_000_000         # the thread copied the WAL into spool.db
    # every event reads back as spooled, through a fresh connection too
    assert [e.body for e in agent.fetch(0, 10_000)] == [e.body for e in events]
    agent.close()
    again = Spool(agent_dir)
    assert [e.body for e in again.fetch(0, 10_000)] == [e.body for e in events]
    assert again.checkpoint() == "ckpt-99"
    again.close()
    plain.close()


def test_a_checkpointer_without_a_spool_file_keeps_trying_and_creates_none(tmp_path):
    """A failing checkpoint (here: no spool.db yet) neither ends the thread nor raises, and the thread never
    makes a spool file of its own; stop() ends it."""
    cp = SpoolCheckpointer(tmp_path, every=0.01)
    cp.start()
    time.sleep(0.05)
    assert cp.is_alive()
    cp.stop()
    assert not cp.is_alive()
    assert cp.checkpoints == 0
    assert not (tmp_path / "spool.db").exists()


def test_a_replayed_part_is_packed_again_from_what_is_new(tmp_path):
    """append packs before it takes the write lock; a batch of which some events are spooled already stores
    only the new ones, in frames of their own (not the frames packed for the whole batch)."""
    sp = Spool(tmp_path, background_checkpoints=True)
    first = [ev(i) for i in range(3)]
    assert sp.append(first, [], "c1") == 3
    batch = first[1:] + [ev(3), ev(4)]
    assert sp.append(batch, [], "c2") == 2
    got = sp.fetch(0, 100)
    assert [e.id for e in got] == ["id-0", "id-1", "id-2", "id-3", "id-4"]
    assert [e.seq for e in got] == [1, 2, 3, 4, 5]
    assert [e.body for e in got] == [e.body for e in first] + [batch[2].body, batch[3].body]
    rows = sqlite3.connect(tmp_path / "spool.db").execute("SELECT seq, n FROM frames ORDER BY seq").fetchall()
    assert rows == [(1, 3), (4, 2)]
    sp.close()
