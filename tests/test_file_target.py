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
