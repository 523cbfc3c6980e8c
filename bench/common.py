"""Shared pieces of the benchmark scripts: a throwaway PostgreSQL, workloads, the agent as a process,
and figures printed as JSON lines plus a short table. Run from the repository root:
`python -m bench.<scenario>` (see bench/README.md)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.plugins.pg import PG_BIN, PgCluster  # noqa: E402  (the same throwaway cluster the tests use)

MIXED_DDL = """
CREATE TABLE bench_items (
  id bigint PRIMARY KEY, customer_id int NOT NULL, sku text NOT NULL, qty int, price numeric(12,2),
  discount real, active boolean, created timestamptz, ship_date date, note varchar(100), attrs jsonb, ref uuid);
"""


def bench_cluster(**settings) -> PgCluster:
    """fsync on: figures quoted from a cluster that does not fsync would flatter the database side."""
    base = {"fsync": "on", "full_page_writes": "on", "shared_buffers": "256MB", "max_wal_size": "4GB",
            "checkpoint_timeout": "30min"}
    base.update(settings)
    return PgCluster(**base).start()


def write_mixed_changes(db, total: int, txn_rows: int = 10_000) -> dict:
    """`total` changes over the 12-column table: 60% inserts, 30% updates, 10% deletes, in transactions
    of `txn_rows` rows, generated server-side so the writer is not what is measured."""
    ins, upd = int(total * 0.6), int(total * 0.3)
    dele = total - ins - upd
    t0 = time.perf_counter()
    with db.connect() as conn:
        for lo in range(0, ins, txn_rows):
            hi = min(ins, lo + txn_rows)
            conn.execute(f"""INSERT INTO bench_items SELECT g, g % 5000, 'SKU-' || g, g % 17, (g % 100000) / 100.0,
                (g % 7) / 10.0, g % 2 = 0, '2026-11-23 10:00:00+00'::timestamptz + g * interval '1 second',
                date '2026-01-01' + (g % 365), 'note ' || g,
                jsonb_build_object('g', g, 'tags', jsonb_build_array('a', 'b')),
                md5(g::text)::uuid FROM generate_series({lo + 1}, {hi}) g""")
        for lo in range(0, upd, txn_rows):
            hi = min(upd, lo + txn_rows)
            conn.execute(f"UPDATE bench_items SET qty = qty + 1, price = price + 1, note = 'updated' "
                         f"WHERE id BETWEEN {lo + 1} AND {hi}")
        for lo in range(0, dele, txn_rows):
            hi = min(dele, lo + txn_rows)
            conn.execute(f"DELETE FROM bench_items WHERE id BETWEEN {ins - hi + 1} AND {ins - lo}")
    return {"inserts": ins, "updates": upd, "deletes": dele, "write_seconds": round(time.perf_counter() - t0, 2)}


def agent_config(path: Path, dsn: str, tables: list[str], targets: str = "", health: str = "off",
                 extra_agent: str = "", extra_source: str = "", name: str = "bench") -> Path:
    """The agent's name also names its slot and publication, which are per cluster: two agents on one
    bench cluster need two names."""
    targets = targets or '[[targets]]\nname = "file"\nkind = "file"\npath = "out/events.jsonl"\n'
    path.write_text(f"""[agent]
name = "{name}"
state_dir = "state"
{extra_agent}
[source]
kind = "postgres"
dsn = "{dsn}"
tables = {json.dumps(tables)}
{extra_source}
{targets}
[health]
listen = "{health}"
""")
    return path


def setup_capture(config: Path) -> None:
    """`cdc-agent setup`, as a DBA would before the first run: the slot exists before anything is written."""
    subprocess.run([sys.executable, "-m", "agent.cli", "setup", "-c", str(config)], cwd=ROOT, check=True,
                   capture_output=True)


class AgentRun:
    """`cdc-agent run` as a process, with its peak RSS (VmHWM) and CPU time read from /proc."""

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentRun:
        compile_agent()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(self.config)],
                                     cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def peak_rss_mb(self) -> float:
        return proc_tree_peak_rss_mb(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(p) for p in proc_tree(self.proc.pid))

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def compile_agent() -> None:
    """The agent's bytecode, compiled as an install compiles it (pip writes the .pyc files of a wheel): run
    from this tree under PYTHONDONTWRITEBYTECODE=1 (set where these benches ran), every start compiled the
    ~60 agent modules it imports again, ~0.1 s of CPU and ~0.1 s before its source streamed (docs/performance.md,
    "Start-up"). py_compile writes whatever that variable says; unchanged modules are skipped."""
    import compileall
    for package in ("agent", "adapters"):
        compileall.compile_dir(ROOT / package, quiet=1)


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (the agent may run delivery in a child process)."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for c in children:
        out.extend(proc_tree(int(c)))
    return out


def proc_tree_peak_rss_mb(pid: int) -> float:
    total = 0
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def proc_cpu_seconds(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process: system time is what its writes, fsyncs and SQLite
    commits cost in the kernel, user time what its own code costs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wait_lines(path: Path, n: int, timeout: float, proc=None, first: list[float] | None = None) -> float:
    """Wait until the file holds n lines; returns the time it happened (perf_counter: the look, 50 ms apart,
    that first saw the file at the size where it holds them). A look is a stat(); the lines appended are
    counted only once the file stopped growing between two looks (the run is over, or paused), so the
    benchmark does not read the output while the agent writes it: counting each look's new bytes read ~1 GB
    during a 1M-row MariaDB drain, ~0.8 µs of CPU per row on the two cores the agent's processes need
    (docs/performance.md, "MariaDB drain: fifth pass"). `first`, if given, gets the time the first line was
    seen (within the 50 ms between looks)."""
    deadline = time.perf_counter() + timeout
    seen, offset = 0, 0
    size_seen, since = -1, 0.0        # the file's size at the last look, and the look that first saw it
    while True:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if size != size_seen:
            size_seen, since = size, time.perf_counter()
            if first is not None and not first and size and _has_line(path):
                first.append(since)
        elif size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                for buf in iter(lambda: f.read(1 << 20), b""):
                    seen += buf.count(b"\n")
                    offset += len(buf)
        if seen >= n:
            if first is not None and not first:
                first.append(since)
            return since
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{path} did not reach {n} lines in {timeout}s (has {seen})")
        time.sleep(0.05)


def _has_line(path: Path) -> bool:
    """Whether the file's first 64 kB hold a line end (its first line is whole)."""
    try:
        with open(path, "rb") as f:
            return b"\n" in f.read(1 << 16)
    except FileNotFoundError:
        return False


def run_measured(cmd: list[str], timeout: float = 3600, check: bool = True, **popen_kw) -> dict:
    """Run a command to its end: wall seconds, and from its rusage (os.wait4: the process and the children it
    waited for) CPU seconds (user + system) and peak RSS. Killed on timeout or on an exception here (Ctrl-C);
    with `check`, a non-zero exit raises with the tail of its stderr."""
    import threading
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stderr=popen_kw.pop("stderr", err), **popen_kw)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if check and p.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{cmd[0]} exited with {p.returncode}:\n{tail}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": p.returncode}


def pg_recvlogical_drain(cluster: PgCluster, dbname: str, slot: str, publication: str, endpos: str) -> float:
    """Seconds pg_recvlogical takes to stream the slot up to `endpos` (pgoutput, output discarded)."""
    cmd = [str(PG_BIN / "pg_recvlogical"), "-d", cluster.dsn(dbname), "-S", slot, "--start", "-E", endpos,
           "-o", "proto_version=1", "-o", f"publication_names={publication}", "-f", "/dev/null",
           "--no-loop", "-s", "1"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - t0


class Profiler:
    """py-spy sampling the agent's process tree (capture and delivery processes) while a scenario runs;
    `top()` sums the samples of each function where it was on top of the stack (self time)."""

    def __init__(self, pid: int, out: Path, rate: int = 200, capture_only: bool = False):
        self.out = out
        exe = Path(sys.executable).parent / "py-spy"
        # capture_only: the capture process alone, with native frames (what C code and SQLite cost inside it)
        scope = ["--native"] if capture_only else ["--subprocesses", "--nonblocking"]
        self.proc = subprocess.Popen([str(exe if exe.exists() else "py-spy"), "record", "--pid", str(pid),
                                      *scope,
                                      *(["--idle", "--threads"] if os.environ.get("BENCH_PROFILE_IDLE") else []),
                                      "--rate", str(rate), "--format", "raw",
                                      "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.send_signal(2)      # SIGINT: py-spy writes what it sampled and exits
        self.proc.wait(60)

    def top(self, n: int = 15) -> list[tuple[str, float]]:
        self_samples: dict[str, int] = {}
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.rsplit(";", 1)[-1]
            self_samples[leaf] = self_samples.get(leaf, 0) + int(count)
            total += int(count)
        ranked = sorted(self_samples.items(), key=lambda kv: -kv[1])[:n]
        return [(name, round(100 * c / max(1, total), 1)) for name, c in ranked]


def spool_bytes(state_dir: Path) -> int:
    """Bytes the spool takes on disk (the database file and its WAL), read after the agent stopped."""
    return sum(f.stat().st_size for f in Path(state_dir).glob("spool.db*") if f.is_file())


def emit(figures: dict) -> None:
    print(json.dumps(figures), flush=True)


def table(rows: list[tuple], headers: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    for r in (headers, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


def tmpdir(prefix: str, keep: bool = False) -> Path:
    """A work directory for one bench run, removed when the bench exits (a 1M-change run leaves a GB of
    outputs and spool) unless `keep` or CDC_BENCH_KEEP=1 asks to keep it for a look."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if keep or os.environ.get("CDC_BENCH_KEEP") == "1":
        atexit.register(lambda: print(f"work directory kept: {work}", file=sys.stderr))
    else:
        atexit.register(shutil.rmtree, work, True)
    return work
