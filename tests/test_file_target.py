"""File target: appends one JSON line per event, fsyncs, and cuts a torn last line on open."""

import orjson

from adapters.file import FileTarget
from agent import config
from agent.interfaces import SpooledEvent


def target(tmp_path):
    cfg = config.parse({"agent": {"name": "a"},
                        "source": {"kind": "postgres", "dsn": "postgresql://x@h/d", "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": "out/e.jsonl"}]}, base=tmp_path)
    return FileTarget(cfg.targets[0])


def sev(i):
    return SpooledEvent(i, f"id{i}", "t", str(i), orjson.dumps({"id": f"id{i}", "n": i}), 0.0)


def test_appends_lines_across_batches_and_reopen(tmp_path):
    t = target(tmp_path)
    t.open()
    t.send([sev(1), sev(2)])
    t.close()
    t = target(tmp_path)
    t.send([sev(3)])
    lines = (tmp_path / "out/e.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["n"] for x in lines] == [1, 2, 3]


def test_torn_last_line_is_cut_on_open(tmp_path):
    t = target(tmp_path)
    t.send([sev(1)])
    t.close()
    with open(tmp_path / "out/e.jsonl", "ab") as f:
        f.write(b'{"id":"id2","n"')          # a crash mid-write
    t = target(tmp_path)
    t.open()
    t.send([sev(2)])
    lines = (tmp_path / "out/e.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["n"] for x in lines] == [1, 2]


def test_fsynced_batches_leave_the_page_cache_unless_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("os.posix_fadvise", lambda fd, off, n, advice: calls.append((off, n, advice)),
                        raising=False)
    t = target(tmp_path)
    t.send([sev(1)])
    t.close()
    size = (tmp_path / "out/e.jsonl").stat().st_size
    t = target(tmp_path)         # reopened: the next range starts at the file's end
    t.send([sev(2), sev(3)])
    end = (tmp_path / "out/e.jsonl").stat().st_size
    import os
    assert calls == [(0, size, os.POSIX_FADV_DONTNEED), (size, end - size, os.POSIX_FADV_DONTNEED)]
    cfg = config.parse({"agent": {"name": "a"},
                        "source": {"kind": "postgres", "dsn": "postgresql://x@h/d", "tables": ["public.t"]},
                        "targets": [{"name": "f", "kind": "file", "path": "out/e.jsonl",
                                     "keep_in_page_cache": True}]}, base=tmp_path)
    calls.clear()
    kept = FileTarget(cfg.targets[0])
    kept.send([sev(4)])
    assert calls == []


def test_a_failing_fadvise_changes_nothing_delivered(tmp_path, monkeypatch):
    def refuse(*_):
        raise OSError(22, "Invalid argument")
    monkeypatch.setattr("os.posix_fadvise", refuse, raising=False)
    t = target(tmp_path)
    t.send([sev(1)])
    assert (tmp_path / "out/e.jsonl").read_bytes().count(b"\n") == 1
