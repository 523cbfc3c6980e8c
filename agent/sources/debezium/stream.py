"""Source kind `debezium`, the stream part: a Debezium connector embedded (engine.py) whose records become
the capture core's items (records.py), so rules, mapper, spool, targets, health and dashboard work as
with the native sources.

Checkpoint: the JSON list of Debezium's [partition, offset] pairs at the end of the last whole transaction
(engine.py says why a restart always resumes from the spool's copy). Debezium snapshots by itself
(snapshot.mode from `snapshot`); the agent's own chunked snapshots do not run for this kind.
"""

from __future__ import annotations

import hashlib
import logging
import time

from ...changes import Item, SourceStatus
from ...config import Config
from ...errors import SourceFatal, SourceUnavailable
from ...secrets import redact
from ...statefiles import private_state_dir
from .dsn import properties, topic_prefix
from .engine import EmbeddedEngine, ensure_available
from .records import RecordDecoder

log = logging.getLogger(__name__)

CAUGHT_UP_SECONDS = 5.0       # a heartbeat this recent with nothing queued: lag 0


class DebeziumSource:
    snapshots_itself = True   # the pipeline does not queue its own initial snapshot (Debezium's snapshot.mode)

    def __init__(self, cfg: Config):
        ensure_available()
        self.cfg = cfg
        self.dir = cfg.agent.state_dir / "debezium"
        self.offsets_file = self.dir / "offsets.dat"
        self.history_file = self.dir / "schema-history.dat"
        self._engine: EmbeddedEngine | None = None
        self._decoder: RecordDecoder | None = None
        self._error: str | None = None

    def start(self, checkpoint: str | None) -> None:
        self.close()
        if checkpoint is not None and not _is_offsets(checkpoint):
            raise SourceFatal(f"the spool's checkpoint {checkpoint[:60]!r} is not Debezium offsets: this state_dir "
                              f"was used by another source kind. Give this source its own state_dir (or remove the "
                              f"old one's spool once its events are delivered)")
        private_state_dir(self.dir)
        if checkpoint is None:
            # capture starts again from nothing: Debezium's own history of the table shapes goes with it
            self.history_file.unlink(missing_ok=True)
        s = self.cfg.source
        marker = "initial" if checkpoint is None else hashlib.sha256(checkpoint.encode()).hexdigest()[:16]
        self._decoder = RecordDecoder(s.connector, topic_prefix(self.cfg.agent.name), s.tables, marker,
                                      self._logical_types() if s.connector == "mysql" else None,
                                      self._partial_old() if s.connector == "postgres" else None)
        props = properties(self.cfg, str(self.offsets_file), str(self.history_file))
        engine = EmbeddedEngine(props, self._decoder, s.jvm_options, queue_limit=max(10_000, 2 * s.batch_size))
        engine.start(self.offsets_file, checkpoint)
        self._engine = engine
        self._error = None
        log.info("debezium source: %s connector embedded, resuming %s", s.connector,
                 "from the spool's checkpoint" if checkpoint else f"with snapshot.mode {props['snapshot.mode']}")

    def _partial_old(self) -> set[str]:
        """The captured PostgreSQL tables whose replica identity is not FULL (records.py says why)."""
        import psycopg

        from ..postgres.common import conninfo, translate
        try:
            with psycopg.connect(conninfo(self.cfg), autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT n.nspname || '.' || c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relreplident <> 'f' AND n.nspname || '.' || c.relname = ANY(%s)",
                    (list(self.cfg.source.tables),)).fetchall()
        except psycopg.Error as e:
            raise translate(e, "cannot read the tables' replica identity") from None
        return {r[0] for r in rows}

    def _logical_types(self) -> dict[tuple[str, str], dict[str, str]]:
        """MariaDB's JSON (LONGTEXT with a json_valid CHECK), UUID, INET4/6: Debezium sees the storage type;
        the catalog says what the native source makes of them (agent/myvalues.py)."""
        from ... import myvalues
        from ..mysql.common import control_connection, driver_error, parse_dsn, run_query
        d = parse_dsn(self.cfg.source.dsn, str(self.cfg.path))
        ctl = control_connection(d)
        try:
            if "mariadb" not in str(run_query(ctl, "SELECT VERSION()")[0][0]).lower():
                return {}
            return myvalues.load_logical_types(lambda sql: run_query(ctl, sql))
        except Exception as e:
            raise driver_error(e, d) from None
        finally:
            ctl.close()

    def poll(self, max_items: int, timeout: float) -> list[Item]:
        engine = self._engine
        if engine is None:
            raise SourceUnavailable("the Debezium engine is not running")
        items, failure = engine.take(max_items, timeout)
        if failure is not None:
            self._error = redact(failure)
            self.close()
            msg = f"the embedded Debezium {self.cfg.source.connector} connector stopped: {self._error}"
            if "configuration is not valid" in failure.lower() or "invalid value" in failure.lower():
                raise SourceFatal(msg)
            raise SourceUnavailable(msg)
        return items

    def keepalive(self) -> None:
        """Nothing to do: Debezium keeps its own connection alive while the engine waits for queue space."""

    def confirm(self, checkpoint: str) -> None:
        if self._engine is not None:
            self._engine.confirm(checkpoint)

    def status(self) -> SourceStatus:
        e, d = self._engine, self._decoder
        lag = None
        if e is not None and d is not None:
            if time.monotonic() - e.last_heartbeat < CAUGHT_UP_SECONDS and not e.queue:
                lag = 0.0
            elif d.last_commit_ts is not None:
                lag = max(0.0, round(time.time() - d.last_commit_ts, 3))
        return SourceStatus(connected=e is not None and e.running(), position=d.last_position if d else None,
                            lag_seconds=lag, error=self._error)

    def close(self) -> None:
        e, self._engine = self._engine, None
        if e is not None:
            e.close()


def _is_offsets(checkpoint: str) -> bool:
    """A checkpoint this source wrote: a JSON list of [partition, offset] pairs of objects."""
    import json
    try:
        pairs = json.loads(checkpoint)
    except ValueError:
        return False
    return isinstance(pairs, list) and bool(pairs) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], dict) and isinstance(p[1], dict) for p in pairs)
