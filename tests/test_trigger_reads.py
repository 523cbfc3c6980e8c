"""How the PostgreSQL trigger source paces and confirms its changelog reads, against a real PostgreSQL 15:
caught up, the next read waits for the poll interval (a steady write stream is read in batches of one
interval's commits, not a window per few commits); a window cut at the batch size is read on at once; confirms
that bound their delete by the snapshot confirmed before still delete every read row (pieces of a window, a
transaction that stayed open across windows), and nothing unread. And the pure per-row shortcuts the reader
takes give exactly what the general code gives."""

from __future__ import annotations

import random

from agent.changes import Commit, RowChange
from agent.myvalues import format_timestamp
from agent.pgvalues import timestamp_text, timestamptz_text
from agent.sources.trigger import TriggerAdmin
from agent.sources.trigger.postgresql import _timestamp_json, _timestamptz_json
from agent.sources.trigger.statements import pair_update
from agent.sources.trigger.values import RowImage, ts_text
from tests.test_trigger_source import PgBackend, changelog_count, drain, make_config, started


def _changes(items: list) -> list[RowChange]:
    return [i for i in items if isinstance(i, RowChange)]


def test_caught_up_the_next_read_waits_for_the_poll_interval(pg_db, tmp_path):
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"], poll_interval_seconds=3.0)
    TriggerAdmin(cfg).setup()
    be.write("INSERT INTO items VALUES (1, 1)")
    src = started(cfg)
    try:
        first = src.poll(100, 1)
        assert [c.after["id"] for c in _changes(first)] == [1]
        src.confirm(first[-1].checkpoint)
        be.write("INSERT INTO items VALUES (2, 2)")
        # committed, but the window that read id 1 was exhausted by a short read: caught up, so no read
        # before the poll interval has passed (a read per commit is what made the agent cost 88 µs a change)
        assert src.poll(100, 0.05) == []
        later = src.poll(100, 5)
        assert [c.after["id"] for c in _changes(later)] == [2]
        src.confirm(later[-1].checkpoint)
    finally:
        src.close()


def test_a_window_cut_at_the_batch_size_is_read_on_at_once(pg_db, tmp_path):
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"], poll_interval_seconds=30.0)
    TriggerAdmin(cfg).setup()
    for i in range(1, 11):
        be.write(f"INSERT INTO items VALUES ({i}, {i})")
    src = started(cfg)
    got: list[int] = []
    try:
        for _ in range(4):                  # 10 rows in pieces of 3: none of these polls may wait 30 s
            items = src.poll(3, 0.05)
            assert isinstance(items[-1], Commit)
            got += [c.after["id"] for c in _changes(items)]
            src.confirm(items[-1].checkpoint)
            assert changelog_count(cfg) == 10 - len(got)      # exactly the rows read are deleted
    finally:
        src.close()
    assert got == list(range(1, 11))


def test_confirms_delete_every_read_row_and_nothing_unread(pg_db, tmp_path):
    """A transaction open across windows (its txid below the next window's snapshot xmin bounds: the delete's
    lower bound must not skip it), windows confirmed only at the last of several reads, pieces of a window."""
    be = PgBackend(pg_db, odbc=False)
    be.write("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    cfg = make_config(tmp_path, be, ["items"], poll_interval_seconds=0.05)
    TriggerAdmin(cfg).setup()
    src = started(cfg)
    try:
        with be.connect() as held:
            held.execute("BEGIN")
            held.execute("INSERT INTO items VALUES (100, 0)")          # open: invisible to the next windows
            be.write("INSERT INTO items VALUES (1, 1)")
            be.write("INSERT INTO items VALUES (2, 2)")
            a = drain(src, max_changes=1)                               # pieces, each confirmed
            assert sorted(c.after["id"] for c in a) == [1, 2]
            assert changelog_count(cfg) == 0            # (the open transaction's row is not visible yet)
            be.write("INSERT INTO items VALUES (3, 3)")
            held.execute("COMMIT")
        assert changelog_count(cfg) == 2                # its row was not deleted with the windows before
        be.write("INSERT INTO items VALUES (4, 4)")
        # several reads, one confirm at the end (as the capture core confirms a batch's last checkpoint)
        seen: list[int] = []
        last = None
        for _ in range(20):
            items = src.poll(100, 0.2)
            seen += [c.after["id"] for c in _changes(items)]
            if items:
                last = items[-1].checkpoint
            if len(seen) == 3:
                break
        assert sorted(seen) == [3, 4, 100]
        assert changelog_count(cfg) == 3
        src.confirm(last)
        assert changelog_count(cfg) == 0
    finally:
        src.close()


# ---------------------------------------------------------------- pure shortcuts


def _epoch_text(epoch: float) -> str:
    sec = int(epoch // 1)
    us = int(round((epoch - sec) * 1_000_000))
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return format_timestamp(sec, us)


def test_commit_time_text_with_its_second_cached_is_the_formatted_epoch():
    rnd = random.Random(7)
    epochs = [1764655000 + k / 7 for k in range(50)] + [1764655000.9999996, 0.0, -0.5, -86400.25, 1e10 + 0.5]
    epochs += [rnd.uniform(-1e10, 1e11) for _ in range(2000)]
    epochs += [1764655000 + rnd.random() * 3 for _ in range(2000)]     # runs within one second, as rows come
    for e in epochs:
        assert ts_text(e) == _epoch_text(e), e


def test_to_json_timestamps_shortcut_gives_what_the_parse_gives():
    forms = ["2026-12-02T06:11:42.123456", "2026-12-02T06:11:42", "2026-12-02T06:11:42.5", "0044-03-15T00:00:00",
             "2026-12-02T06:11:42.000000", "2026-12-02T06:11:42.100000", "12345-01-01T00:00:00", "infinity",
             "-infinity", "2026-12-02 06:11:42.123456", "0044-03-15T00:00:00 BC", "２０２６-12-02T06:11:42.123456",
             "2026-12-02T06:11:42.123456+00:00", "2026-12-02T06:11:42.123456+01:00", "2026-12-02T06:11:42+00:00",
             "2026-12-02T06:11:42.5+00:00", "2026-12-02T06:1x:42.123456+00:00", "2026-12-02T06:11:42.123456+00",
             "2026-12-02T06:11:42.123456-05:30", "2026-12-02T06:11:42.000000+00:00", "0001-01-01T00:00:00+00:00 BC"]
    for f in forms:
        assert _timestamp_json(f) == timestamp_text(f), f
        assert _timestamptz_json(f) == timestamptz_text(f), f
    assert _timestamp_json(None) is None and _timestamptz_json(None) is None


def test_a_one_row_update_pairs_its_two_rows_whatever_their_keys():
    old, new = RowImage({"id": 1, "v": 1}, ""), RowImage({"id": 2, "v": 1}, "")
    assert pair_update([old], [new], ("id",)) == [(0, 0)]             # key changed: the only pairing there is
    assert pair_update([old], [old], ("id",)) == [(0, 0)]
