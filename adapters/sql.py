"""SQL replica target (CONTRACT §7 `sql`): row events into tables of another database, exactly once in effect.

- Inserts, updates and snapshot rows (`read`) are upserts by key with the dialect's own statement
  (PostgreSQL/SQLite `ON CONFLICT`, MySQL/MariaDB `ON DUPLICATE KEY UPDATE`, SQL Server `MERGE`); deletes
  delete. Consecutive changes of one table and kind go in one multi-row statement or executemany.
- One transaction per batch, and in it the position of the batch's last event is written to
  `cdc_agent_offsets` (agent, target → position). `open()` returns that position, so the worker skips what
  the replica already holds whatever the spool cursor says: a crash between commit and cursor advance
  applies nothing twice, and a change is never skipped.
- The target needs events carrying whole rows: the `row.<schema>.<table>` events of a table no rule names,
  or one rule without `fields`, `changed`, `values` and with all three ops (checked when the config loads).
- A value the replica cannot hold (too long, out of range, NOT NULL): the batch is rolled back and refused
  (TargetRejected); the worker splits it until the one event is alone and dead-letters it with the
  database's message; the rest is applied. A database that is down is TargetUnavailable.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from adapters import TargetKind
from agent.errors import TargetRejected, TargetUnavailable
from agent.interfaces import DeliveryResult, Rejection, SpooledEvent
from agent.options import Dsn, OptionError, option
from agent.secrets import redact

if TYPE_CHECKING:
    from adapters._sqlreplica import Replica
    from agent.config import Config, TargetSettings
    from agent.spool import Spool

DIALECT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                   "postgresql+psycopg": "postgresql+psycopg", "mysql": "mysql+pymysql",
                   "mariadb": "mysql+pymysql", "mysql+pymysql": "mysql+pymysql", "mariadb+pymysql": "mysql+pymysql",
                   "sqlite": "sqlite", "mssql": "mssql+pyodbc", "mssql+pyodbc": "mssql+pyodbc"}
log = logging.getLogger(__name__)
_EVERY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


@dataclass(frozen=True)
class SqlOptions:
    url: Dsn = option(help="SQLAlchemy URL of the replica database; a password as ${ENV}")
    tables: dict[str, str] = option({}, help="source table = replica table; default every source table, same name")
    columns: dict[str, str] = option({}, help='"schema.table.column" = replica column name (renames)')
    reconcile_every: str | None = option(None, help='run `reconcile` (no repair) this often: "90s", "30m", "1h"')
    offsets_agent: str = option("", help="the agent name under which the position is stored; default [agent] name")
    owns: dict[str, tuple[str, ...]] = option({}, help='"schema.table" = [source columns this source is '
                                                       'authoritative for]: only they and the key are written')
    deletes: str | None = option(None, choices=("apply", "ignore"),
                                 help='"apply" | "ignore" source deletes; default apply, ignore on tables in owns')
    mark_writes: bool = option(True, help="mark the writes so that a cdc-agent capturing the target database "
                                          "skips them (no echo); false for a chain of agents")
    trigger_changelog: str = option("cdc_changelog", help="changelog_table of trigger capture on a SQLite target "
                                                          "database: its origin table carries the marker")
    # filled in by finish(), not keys of the file
    marker: str = option("", internal=True)
    state_dir: str = option("", internal=True)

    def __post_init__(self):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
        try:
            u = make_url(self.url)
        except (ArgumentError, ValueError):
            raise OptionError("url", f"is not a SQLAlchemy URL (like postgresql+psycopg://user:${{PW}}@host/db, "
                                     f"mysql+pymysql://..., sqlite:///replica.db, mssql+pyodbc://...), got "
                                     f"{redact(self.url)!r}") from None
        if u.drivername not in DIALECT_DRIVERS:
            raise OptionError("url", f"database {u.drivername!r} is not supported (postgresql+psycopg, "
                                     "mysql+pymysql, sqlite, mssql+pyodbc are)")
        if u.get_backend_name() != "sqlite" and not u.host and "odbc_connect" not in u.query:
            raise OptionError("url", f"has no host: {redact(self.url)!r}")
        if self.reconcile_every is not None:
            every_seconds(self.reconcile_every)
        for k in self.columns:
            if k.count(".") != 2:
                raise OptionError(f"columns.{k}", 'must be written "schema.table.column"')
        for t, cols in self.owns.items():
            if len(set(cols)) != len(cols):
                raise OptionError(f"owns.{t}", f"names a column twice: {list(cols)}")

    def deletes_for(self, table: str) -> str:
        """What a source delete does to `table`: the option, else apply (a replica) / ignore (an owns table:
        deleting a customer in the ERP need not delete the CRM's contact)."""
        return self.deletes or ("ignore" if table in self.owns else "apply")


def every_seconds(text: str) -> float:
    m = _EVERY_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise OptionError("reconcile_every", f'must be a duration like "90s", "30m", "1h", "1d", got {text!r}')
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def finish(cfg: Config, settings: TargetSettings, base: Path) -> SqlOptions:
    """Checks against the whole config; completes `tables` (default: every source table) and `offsets_agent`,
    and resolves a relative SQLite path against the config file's folder."""
    from sqlalchemy.engine import make_url
    o: SqlOptions = settings.options
    u = make_url(o.url)
    url = o.url
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" \
            and not Path(u.database).is_absolute():
        url = Dsn(u.set(database=str((base / u.database).resolve())).render_as_string(hide_password=False))
    # default: every captured table, same name; MySQL/MariaDB and SQLite replicas take the bare table name in
    # the URL's database (their "schema" would be another database / an attached file)
    bare = u.get_backend_name() in ("mysql", "sqlite")
    tables = dict(o.tables) if o.tables else {t: (t.rpartition(".")[2] if bare else t) for t in cfg.source.tables}
    for src, dst in tables.items():
        if src not in cfg.source.tables:
            raise OptionError(f"tables.{src}", f"is not captured: add it to source.tables "
                                               f"({', '.join(cfg.source.tables)})")
        if not dst or dst.count(".") > 1:
            raise OptionError(f"tables.{src}", f'the replica table must be "schema.table" or "table", got {dst!r}')
        _check_full_rows(cfg, settings, src)
    for k in o.columns:
        if k.rsplit(".", 1)[0] not in tables:
            raise OptionError(f"columns.{k}", f"names table {k.rsplit('.', 1)[0]}, which is not in tables")
    for k in o.owns:
        if k not in tables:
            raise OptionError(f"owns.{k}", f"is not one of this target's tables ({', '.join(tables)})")
    from adapters._sqlmark import marker_of
    return dataclasses.replace(o, url=url, tables=tables, offsets_agent=o.offsets_agent or cfg.agent.name,
                               marker=marker_of(cfg.agent.name), state_dir=str(cfg.agent.state_dir))


def _check_full_rows(cfg: Config, settings: TargetSettings, table: str) -> None:
    """A replica needs every change of a table with its whole row: refuse rules that drop columns or changes."""
    rules = [r for r in cfg.events if r.table == table]
    if not rules:
        if not settings.wants(f"row.{table}"):
            raise OptionError(f"tables.{table}", f"this target's events patterns do not take row.{table}, the "
                                                 "events of this table")
        return
    wanted = [r for r in rules if settings.wants(r.type)]
    if len(wanted) != 1:
        raise OptionError(f"tables.{table}", f"needs exactly one event type of {table} among its events, got "
                                             f"{len(wanted)} ({', '.join(r.type for r in wanted) or 'none'})")
    r = wanted[0]
    if r.fields is not None or r.changed is not None or r.values or set(r.on) != {"insert", "update", "delete"}:
        raise OptionError(f"tables.{table}", f"rule {r.type} does not carry whole rows: a sql target needs events "
                                             "without fields, changed or values, on insert, update and delete (or "
                                             "no rule on the table: its row events)")


# ---------------------------------------------------------------- the target


class SqlTarget:
    def __init__(self, settings: TargetSettings):
        self.name = settings.name
        self.options: SqlOptions = settings.options
        self.engine = None
        self.replica: Replica | None = None  # built in open()
        self.marking = marking_for(self.options, self.name)
        self.spool: Spool | None = None      # the agent's state, for conflicts (opened when there are some)
        self.copy_failed = False

    def open(self) -> str | None:
        from adapters._sqlreplica import Replica, db_error
        if self.engine is None:
            self.engine = make_engine(self.options.url, self.marking)
        try:
            self.replica = replica = Replica(self.engine, self.options, marking=self.marking)
            position = replica.open_position(self.options.offsets_agent, self.name)
            if replica.owns:
                self._after_commit(Counter())       # what a crash left in the target's cdc_agent_conflicts
            return position
        except Exception as e:
            err = db_error(e)
            if err is None:
                raise
            raise TargetUnavailable(err) from None

    def _copy_conflicts(self, unowned: Counter) -> None:
        """The conflicts recorded in the target database into the agent's state, then out of the target (a
        crash in between copies them again next time: the state ignores a second copy)."""
        from agent import conflicts
        from agent.errors import SpoolError
        from agent.spool import Spool
        replica = self.replica
        assert replica is not None
        rows = replica.take_journal(self.options.offsets_agent, self.name)
        if not self.options.state_dir:
            raise SpoolError("no state_dir to record conflicts in (a target built without its config)")
        if self.spool is None:
            self.spool = Spool(Path(self.options.state_dir))
        conflicts.record(self.spool, self.name, rows, unowned)
        if rows:
            replica.clear_journal(self.options.offsets_agent, self.name, rows)

    def send(self, events: list[SpooledEvent]) -> DeliveryResult:
        from adapters._sqlreplica import DataProblem, db_error
        if self.replica is None:
            self.open()
        replica = self.replica
        assert replica is not None          # open() built it, or raised
        changes, rejected = [], []
        for ev in events:
            try:
                changes.extend(replica.changes_of(_data(ev), ev.id, ev.subject))
            except (ValueError, KeyError, TypeError) as e:
                rejected.append(Rejection(ev.seq, f"cannot apply event {ev.id}: {e}"))
        position = max((e.position for e in events), default="")
        try:
            outcome = replica.apply(changes, self.options.offsets_agent, self.name, position)
        except DataProblem as e:
            raise TargetRejected(redact(str(e))) from None
        except Exception as e:
            err = db_error(e)
            if err is None:
                raise
            replica.forget_connection()
            raise TargetUnavailable(err) from None
        if outcome.conflicts or outcome.unowned or self.copy_failed:
            self._after_commit(outcome.unowned)
        return DeliveryResult(rejected=rejected)

    def _after_commit(self, unowned: Counter) -> None:
        """The batch is committed: its conflicts are safe in the target database. Copying them into the agent's
        state is retried at the next batch with conflicts, or the next open(), if it fails now."""
        from adapters._sqlreplica import db_error
        from agent.errors import SpoolError
        self.copy_failed = True
        try:
            self._copy_conflicts(unowned)
            self.copy_failed = False
        except SpoolError as e:
            log.warning("target %s: conflicts stay in the target's cdc_agent_conflicts for now: %s", self.name,
                        redact(str(e)))
        except Exception as e:
            err = db_error(e)
            if err is None:
                raise
            log.warning("target %s: conflicts stay in the target's cdc_agent_conflicts for now: %s", self.name, err)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        self.replica = None


def _data(ev: SpooledEvent) -> tuple[str, dict]:
    """(source table, data) of an event: the table is the last part of the CloudEvent's `source`."""
    try:
        d = orjson.loads(ev.body)
    except orjson.JSONDecodeError:      # a json value orjson cannot hold (1e400): keep its text (agent/rawjson.py)
        from agent.rawjson import loads_exact
        d = loads_exact(ev.body)
    return d["source"].rpartition("/")[2], d["data"]


def marking_for(options: SqlOptions, suffix: str):
    """The session marking of a writing engine (adapters/_sqlmark.py), or None with mark_writes = false."""
    if not options.mark_writes or not options.marker:
        return None
    from sqlalchemy.engine import make_url

    from adapters._sqlmark import Marking
    dialect = make_url(options.url).get_backend_name()
    return Marking(dialect, options.marker, suffix, options.trigger_changelog)


def make_engine(url: str, marking=None):
    """An engine on the replica; `marking` (a Marking) marks every session it opens (no echo)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    u = make_url(url)
    u = u.set(drivername=DIALECT_DRIVERS[u.drivername])
    kw: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_backend_name() == "postgresql":
        kw["connect_args"] = {"connect_timeout": 10}
    elif u.get_backend_name() == "mysql":
        kw["connect_args"] = {"connect_timeout": 10, "charset": "utf8mb4"}
    elif u.get_backend_name() == "sqlite":
        kw["connect_args"] = {"timeout": 30}
    engine = create_engine(u, **kw)
    if u.get_backend_name() == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None            # SQLAlchemy's BEGIN below, not pysqlite's own
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=FULL")

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif u.get_backend_name() == "mysql":
        @event.listens_for(engine, "connect")
        def _mysql_connect(dbapi_conn, _record):
            with dbapi_conn.cursor() as c:       # refuse, rather than truncate, a value the column cannot hold
                c.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), time_zone = '+00:00'")
    if marking is not None:
        event.listen(engine, "connect", lambda dbapi_conn, _record: marking.on_connect(dbapi_conn))
    return engine


def _admin(cfg: Config, settings: TargetSettings):
    from adapters._sqladmin import SqlAdmin
    return SqlAdmin(cfg, settings)


# a batch is one transaction with multi-row statements: larger batches amortise the commit
KIND = TargetKind(options=SqlOptions, target=SqlTarget, batch_size=1000, finish=finish, admin=_admin)
