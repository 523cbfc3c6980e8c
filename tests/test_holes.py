"""The silent holes of issue 10, each shown on real parts: a SQLite database captured by the trigger source,
the real spool, the file target, `cdc-agent` commands as processes, and (for the full disk) a small tmpfs.

- a target removed from the config no longer holds back pruning and backpressure; status names it;
  `targets forget` drops it;
- two rules with one type on one table are refused;
- `dlq retry` while the agent runs does not write to a target behind the agent's back;
- a full state_dir stops capture with the reason in health, loses nothing and resumes by itself;
- a bug in mapping stops capture with its traceback, instead of dead-lettering every change;
- `cdc-agent replay` sends a target again what the spool holds, also under a running agent.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from agent import config as config_mod
from agent import logs
from agent.errors import ConfigError
from agent.mapping import MappedEvent
from agent.pipeline import Agent
from agent.spool import Spool
from tests.agentproc import ROOT, AgentProcess, read_events, wait_for
from tests.plugins import free_port


def make_erp(tmp_path: Path) -> Path:
    db = tmp_path / "erp.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, pad TEXT)")
    c.commit()
    c.close()
    return db


def insert(db: Path, ids, pad: int = 0, random_pad: bool = False) -> None:
    c = sqlite3.connect(db, timeout=30)
    with c:
        c.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                      [(i, f"c{i}", os.urandom(pad // 2).hex() if random_pad else "x" * pad) for i in ids])
    c.close()


def write_config(tmp_path: Path, *, targets=("f",), agent_extra: str = "", rules: str = "",
                 health: str = 'listen = "off"', source_extra: str = "") -> Path:
    if "snapshot" not in source_extra:
        # these tests count the events of their own writes: an initial snapshot racing the first inserts may
        # rightly deliver a row twice, once as a read (flaky counts under load)
        source_extra = 'snapshot = "never"\n' + source_extra
    blocks = "".join(f'\n[[targets]]\nname = "{t}"\nkind = "file"\npath = "out/{t}.jsonl"\n' for t in targets)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
[agent]
name = "holes"
state_dir = "state"
checkpoint_log_seconds = 2
{agent_extra}

[source]
kind = "trigger"
dsn = "sqlite:///{tmp_path / 'erp.db'}"
tables = ["main.customers"]
poll_interval_seconds = 0.05
{source_extra}
{rules}
{blocks}
[health]
{health}
""")
    return cfg


def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


class RunningAgent:
    """`Agent.run` on a thread of this process (delivery in threads), stopped like SIGTERM does."""

    def __init__(self, cfg_path: Path):
        self.cfg = config_mod.load(cfg_path)
        self.stop = threading.Event()
        self.agent = Agent(self.cfg, self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as e:  # surfaced by __exit__
            self.error = e

    def out(self, target: str = "f") -> list[dict]:
        return read_events(self.cfg.agent.state_dir.parent / "out" / f"{target}.jsonl")

    def __enter__(self):
        self.thread.start()         # changes count from when the triggers exist: wait for the source
        wait_for(lambda: self.agent.source is not None or self.error, 60, what="the source to connect")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error and not exc[0]:
            raise self.error


def spool_of(cfg_path: Path) -> Spool:
    return Spool(cfg_path.parent / "state")


def ev(n: int) -> MappedEvent:
    return MappedEvent(id=f"id-{n}", type="row.main.customers", subject=str(n), position=f"{n:08d}",
                       commit_ts=time.time(), body=orjson.dumps({"id": f"id-{n}", "subject": str(n)}))


# ------------------------------------------------------------------------------- 1: stale target cursors

def test_only_configured_targets_count_for_pruning_pending_and_new_targets(tmp_path):
    sp = Spool(tmp_path)
    sp.ensure_targets(["a", "old"])
    sp.append([ev(i) for i in range(10)], [], "c1")
    sp.advance("a", sp.last_seq(), 10, [])
    sp.close()

    sp = Spool(tmp_path)                      # the next start: "old" was removed from the config
    sp.ensure_targets(["a"])
    assert sp.max_pending() == 0             # the stale cursor at 0 no longer counts
    assert sp.prune(0) == 10
    assert sp.stale_targets(["a"]) == ["old"]
    sp.ensure_targets(["a", "new"])          # added later: starts where the configured targets are
    assert sp.counters("new").cursor == 10
    assert sp.forget_target("old") and sp.stale_targets(["a", "new"]) == []
    sp.close()


def test_a_removed_target_does_not_pause_capture_and_status_names_it(tmp_path):
    db = make_erp(tmp_path)
    cfg_path = write_config(tmp_path, agent_extra="spool_max_events = 5\ndelivery = \"thread\"")
    sp = spool_of(cfg_path)
    sp.ensure_targets(["old"])              # a target of an earlier config, its cursor at 0
    sp.close()
    with RunningAgent(cfg_path) as a:
        insert(db, range(1, 31))
        wait_for(lambda: len(a.out()) == 30, 60, what="all 30 events past a spool limit of 5")
        wait_for(lambda: not a.agent.monitor.backpressure, 30, what="capture to run again (nothing pending)")
        insert(db, range(31, 41))            # and it keeps capturing
        wait_for(lambda: len(a.out()) == 40, 60, what="10 more events")

    st = cli("status", "--json", "-c", str(cfg_path))
    report = orjson.loads(st.stdout)
    assert report["stale_targets"] == ["old"] and list(report["targets"]) == ["f"]
    assert any("targets forget old" in r for r in report["reasons"])
    text = cli("status", "-c", str(cfg_path))
    assert "targets forget old" in text.stdout

    configured = cli("targets", "forget", "f", "-c", str(cfg_path))
    assert configured.returncode == 2 and "target f is in" in configured.stderr
    unknown = cli("targets", "forget", "nope", "-c", str(cfg_path))
    assert unknown.returncode == 1 and "no cursor for target nope" in unknown.stderr and "old" in unknown.stderr
    forgot = cli("targets", "forget", "old", "-c", str(cfg_path))
    assert forgot.returncode == 0, forgot.stderr
    assert orjson.loads(cli("status", "--json", "-c", str(cfg_path)).stdout)["stale_targets"] == []


# -------------------------------------------------------------------- 2: two rules, one type, one table

def test_two_rules_with_one_type_on_one_table_are_refused(tmp_path):
    raw = {"agent": {"name": "a", "state_dir": "s"},
           "source": {"kind": "trigger", "dsn": "sqlite:///x.db", "tables": ["main.customers", "main.orders"]},
           "events": [{"type": "customer.changed", "table": "main.customers", "on": ["insert"]},
                      {"type": "customer.changed", "table": "main.orders"},
                      {"type": "customer.changed", "table": "main.customers", "on": ["update"]}],
           "targets": [{"name": "f", "kind": "file", "path": "o.jsonl"}]}
    with pytest.raises(ConfigError) as e:
        config_mod.parse(raw, file="agent.toml", base=tmp_path)
    msg = str(e.value)
    assert msg.startswith("agent.toml: events[2].type: ") and "events[0]" in msg and "main.customers" in msg
    raw["events"].pop()                      # one type on two tables is fine: the positions differ
    assert len(config_mod.parse(raw, file="agent.toml", base=tmp_path).events) == 2


# ---------------------------------------------------------------- 3: dlq retry next to a running agent

def test_dlq_retry_while_running_does_not_cut_a_line_the_agent_is_writing(tmp_path, monkeypatch):
    """The worker is half-way through writing a batch to the file when `dlq retry` runs. Opening the file
    from the command would cut the unterminated line (the torn-tail rule), and the rest of it would then
    land as garbage: the retry must go through the agent's own worker, after its batch."""
    from adapters.file import FileTarget
    db = make_erp(tmp_path)
    cfg_path = write_config(tmp_path, agent_extra='delivery = "thread"')
    sp = spool_of(cfg_path)
    sp.ensure_targets(["f"])
    sp.append([ev(0)], [], None)
    first = sp.fetch(0, 1)[0]
    sp.advance("f", first.seq, 0, [(first, "HTTP 400: refused for the test")])
    sp.close()

    writing, gate = threading.Event(), threading.Event()

    def slow_send_lines(self, data):      # a slow disk: half a batch, a pause, the rest
        if self.fd is None:
            self.open()
        os.write(self.fd, data[:len(data) // 2])
        writing.set()
        gate.wait(60)
        os.write(self.fd, data[len(data) // 2:])
        os.fsync(self.fd)

    # the worker writes JSON lines joined from the spool (send_lines); send, used by `dlq retry`, calls it too
    monkeypatch.setattr(FileTarget, "send_lines", slow_send_lines)
    with RunningAgent(cfg_path) as a:
        insert(db, [1])
        assert writing.wait(30)
        retry = subprocess.Popen([sys.executable, "-m", "agent.cli", "dlq", "retry", "-c", str(cfg_path)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            retry.wait(8)                  # the unfixed command is done by now; the fixed one waits
        except subprocess.TimeoutExpired:
            pass
        gate.set()
        out, err = retry.communicate(timeout=60)
        assert retry.returncode == 0, out + err
        wait_for(lambda: len(a.out()) == 2, 30, what="the row event and the retried dead letter")
    got = read_events(tmp_path / "out" / "f.jsonl", final=True)      # every line whole JSON
    assert [e["id"] for e in got][1] == "id-0" and got[0]["subject"] == "1" and len(got) == 2
    assert "the agent (pid" in out and "delivered event id-0" in out   # sent by the agent's worker
    sp = spool_of(cfg_path)
    assert sp.dead_letters() == [] and sp.counters("f").delivered == 2
    sp.close()


# ------------------------------------------------------------------------------ 4: the disk fills up

def _health(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()


def test_a_full_state_dir_stops_capture_with_the_reason_and_resumes_by_itself(tmp_path):
    db = make_erp(tmp_path)
    port = free_port()
    cfg_path = write_config(tmp_path, agent_extra='delivery = "thread"', health=f'listen = "127.0.0.1:{port}"')
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(state)],
                             capture_output=True, check=False).returncode == 0
    filler = state / "filler"
    try:
        with RunningAgent(cfg_path) as a:
            insert(db, range(1, 11))
            wait_for(lambda: len(a.out()) == 10, 60, what="the first 10 events")
            assert _health(port)["status"] == "ok"
            checkpoint = a.agent.spool.checkpoint()
            if mounted:                   # a real full filesystem
                with open(filler, "wb", buffering=0) as f:
                    try:
                        while True:
                            f.write(b"\0" * 4096)
                    except OSError:
                        pass
            else:                         # no tmpfs here: SQLite's page limit stands in for the disk
                pages = a.agent.spool.db.execute("PRAGMA page_count").fetchone()[0]
                a.agent.spool.db.execute(f"PRAGMA max_page_count = {pages + 1}")
            # incompressible: more than the WAL file's room, which the agent's checkpoints free for reuse
            # (agent/spool_checkpoints.py), so that the spool must grow on the full filesystem
            insert(db, range(11, 211), pad=8000, random_pad=True)
            report = wait_for(lambda: (h := _health(port))["status"] == "failing" and h, 60,
                              what="health failing while the spool cannot be written")
            reason = " ".join(report["reasons"])
            assert "capture stopped" in reason and ("database or disk is full" in reason or "No space" in reason)
            assert "free space" in reason and str(state) in reason
            time.sleep(1.5)               # still stopped: nothing confirmed, nothing delivered past the 10
            assert len(a.out()) == 10 and a.agent.spool.checkpoint() == checkpoint
            if mounted:
                filler.unlink()
            else:
                a.agent.spool.db.execute("PRAGMA max_page_count = 1073741823")
            wait_for(lambda: len(a.out()) == 210, 90, what="capture to resume and deliver the rest")
            wait_for(lambda: _health(port)["status"] == "ok", 30, what="health ok again")
        got = read_events(tmp_path / "out" / "f.jsonl", final=True)
        ids = [e["id"] for e in got]
        assert len(ids) == len(set(ids)) == 210                    # every event once, by id
        assert sorted(int(e["subject"]) for e in got) == list(range(1, 211))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(state)], check=False)


# ----------------------------------------------------------------- 5: a bug is a bug, with a traceback

def test_log_lines_carry_the_traceback_in_text_and_json():
    def line(json_lines: bool) -> str:
        buf = io.StringIO()
        handler = logging.StreamHandler(buf)
        handler.setFormatter(logs._RedactingFormatter(json_lines))
        log = logging.getLogger("test_holes.fmt")
        log.addHandler(handler)
        log.propagate = False
        try:
            try:
                int(1 / 0)
            except ZeroDivisionError as e:
                log.error("boom", exc_info=e)
        finally:
            log.removeHandler(handler)
        return buf.getvalue()

    text = line(False)
    assert "boom" in text and "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
    rec = orjson.loads(line(True))
    assert rec["msg"] == "boom" and "Traceback" in rec["exc"] and "1 / 0" in rec["exc"]


def test_a_bug_in_mapping_stops_capture_instead_of_dead_lettering(tmp_path, monkeypatch):
    from agent import fastpath
    from agent.mapping import EventMapper
    db = make_erp(tmp_path)
    port = free_port()
    cfg_path = write_config(tmp_path, agent_extra='delivery = "thread"', health=f'listen = "127.0.0.1:{port}"')

    def broken(self, rule, ch, changed_cols):
        return 1 / 0

    monkeypatch.setattr(EventMapper, "_event", broken)
    monkeypatch.setattr(fastpath, "render_event", lambda *a: 1 / 0)     # the compiled path's twin
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs._RedactingFormatter(False))
    logging.getLogger().addHandler(handler)
    try:
        with RunningAgent(cfg_path) as a:
            insert(db, [1, 2, 3])
            report = wait_for(lambda: (h := _health(port))["status"] == "failing" and h, 60, what="health failing")
            assert any("capture stopped" in r and "ZeroDivisionError" in r for r in report["reasons"])
            assert report["dead_letters"] == 0
            time.sleep(1)
            assert a.agent.spool.count_dead_letters() == 0 and a.agent.spool.last_seq() == 0
    finally:
        logging.getLogger().removeHandler(handler)
    assert "Traceback (most recent call last)" in buf.getvalue() and "ZeroDivisionError" in buf.getvalue()
    monkeypatch.undo()                       # the bug is fixed: a restart reads the changes again
    with RunningAgent(cfg_path) as a:
        wait_for(lambda: len(a.out()) == 3, 60, what="the 3 changes, read again after the restart")
    assert sorted(e["subject"] for e in read_events(tmp_path / "out" / "f.jsonl", final=True)) == ["1", "2", "3"]


# ------------------------------------------------------------------------------------------ 6: replay

def test_a_rewind_wins_over_the_batch_a_worker_has_in_flight(tmp_path):
    worker, command = Spool(tmp_path), Spool(tmp_path)
    worker.ensure_targets(["f"])
    worker.append([ev(i) for i in range(50)], [], None)
    cursor = worker.counters("f").cursor               # the worker starts a batch...
    batch = worker.fetch(cursor, 50)
    command.rewind("f", 0)                              # ...replay rewinds meanwhile...
    worker.advance("f", batch[-1].seq, len(batch), [])  # ...and the batch is confirmed afterwards
    assert worker.counters("f").cursor == 0 and worker.pending("f") == 50
    worker.advance("f", batch[-1].seq, len(batch), [])  # the next batch, read after the rewind, moves it
    assert worker.counters("f").cursor == batch[-1].seq
    command.rewind("f", 10 ** 6)                        # never forward: that would skip undelivered events
    assert worker.counters("f").cursor == batch[-1].seq


def test_replay_resends_what_the_spool_holds_to_a_running_agent_and_refuses_what_it_lost(tmp_path):
    db = make_erp(tmp_path)
    cfg_path = write_config(tmp_path, targets=("f", "g"))
    out = tmp_path / "out" / "f.jsonl"
    with AgentProcess(cfg_path, tmp_path / "agent.log") as agent:
        wait_for(lambda: "connected, resuming" in agent.log(), 60, what="the source to connect")
        insert(db, range(1, 6))
        wait_for(lambda: len(read_events(out)) == 5, 60, what="5 events")

        def confirmed() -> bool:        # the file has the lines a moment before the cursor moves past them
            st = cli("status", "--json", "-c", str(cfg_path))
            return st.returncode == 0 and orjson.loads(st.stdout)["targets"]["f"]["pending"] == 0
        wait_for(confirmed, 60, what="f's cursor past the 5 events")
        first = read_events(out)
        r = cli("replay", "-c", str(cfg_path), "--target", "f", "--since", "1h")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "re-sending 5 event(s)" in r.stdout and f"position {first[0]['position']}" in r.stdout
        assert "running agent (pid" in r.stdout
        wait_for(lambda: len(read_events(out)) == 10, 60, what="the 5 events again")
        assert [e["id"] for e in read_events(out)[5:]] == [e["id"] for e in first]
        wait_for(confirmed, 60, what="f's cursor past the re-sent events")
        r = cli("replay", "-c", str(cfg_path), "--target", "f", "--from", first[2]["position"])
        assert r.returncode == 0 and "re-sending 3 event(s)" in r.stdout, r.stdout + r.stderr
        wait_for(lambda: len(read_events(out)) == 13, 60, what="3 events again")
        assert read_events(out)[10:] == first[2:]
        insert(db, range(6, 8))                          # capture and delivery go on as usual
        wait_for(lambda: len(read_events(out)) == 15, 60, what="new events after the replay")
        assert agent.stop() == 0
    assert len(read_events(tmp_path / "out" / "g.jsonl", final=True)) == 7      # the other target: once each

    bad = cli("replay", "-c", str(cfg_path), "--target", "f", "--from", "no-such-position")
    assert bad.returncode == 1 and "not in the spool" in bad.stderr
    assert cli("replay", "-c", str(cfg_path), "--target", "f", "--since", "yesterday").returncode == 2
    assert cli("replay", "-c", str(cfg_path), "--target", "f", "--since", "2026-01-01T00:00:00").returncode == 2
    assert cli("replay", "-c", str(cfg_path), "--target", "nope", "--since", "1h").returncode == 2
    later = cli("replay", "-c", str(cfg_path), "--target", "f", "--since", "2099-01-01T00:00:00Z")
    assert later.returncode == 0 and "nothing to re-send" in later.stdout

    sp = spool_of(cfg_path)                              # retention passes: the oldest events are pruned
    sp.ensure_targets(["f", "g"])
    sp.prune(0, limit=3)
    sp.close()
    lost = cli("replay", "-c", str(cfg_path), "--target", "f", "--since", "1h")
    assert lost.returncode == 1 and "no longer holds" in lost.stderr and "spool_retention_seconds" in lost.stderr
    gone = cli("replay", "-c", str(cfg_path), "--target", "f", "--from", first[0]["position"])
    assert gone.returncode == 1 and "not in the spool" in gone.stderr
    held = cli("replay", "-c", str(cfg_path), "--target", "f", "--from", first[3]["position"])
    assert held.returncode == 0 and "re-sending 4 event(s)" in held.stdout, held.stdout + held.stderr
