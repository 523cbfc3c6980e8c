"""No echo (CONTRACT §4): the `sql` target marks its writes so that a cdc-agent capturing the target database
skips them. The marker text is `cdc-agent/<agent name>` of the writing agent; sources skip every change whose
marker starts with `cdc-agent/`.

Per database, on every connection the target opens (and, for SQLite, inside every transaction):
- PostgreSQL: a replication origin named by the marker for the session (`pg_replication_origin_create` if
  missing, `pg_replication_origin_session_setup`): pgoutput sends an Origin message before each of its
  transactions. An origin serves one session at a time: when another session holds it (a second sql target
  of the same agent into the same database), the session takes `<marker>/<target>` instead (still
  `cdc-agent/...`). And `cdc.origin` (session setting) for trigger capture there (migrations/trigger/postgresql).
- MariaDB: `SET SESSION skip_replication = 1` (its binlog events carry LOG_EVENT_SKIP_REPLICATION_F) and
  `@cdc_origin` for trigger capture (migrations/trigger/mysql). MySQL has no skip_replication: only
  `@cdc_origin` (trigger capture); a MySQL binlog capture of the target would see these writes.
- SQL Server: `sp_set_session_context N'cdc.origin'` (migrations/trigger/mssql).
- SQLite: no session state: the one-row origin table of trigger capture (`<changelog>_origin`,
  migrations/trigger/sqlite/002_origin.sql) gets the marker at the start of each transaction and loses it
  before COMMIT, when that table exists.
"""

from __future__ import annotations

import logging

from agent.errors import TargetUnavailable

log = logging.getLogger(__name__)

PREFIX = "cdc-agent/"
PG_FUNCTIONS = ("pg_replication_origin_oid(text)", "pg_replication_origin_create(text)",
                "pg_replication_origin_session_setup(text)")


def marker_of(agent: str) -> str:
    return PREFIX + agent


class MarkingError(TargetUnavailable):
    """The session could not be marked (privilege missing): the target does not write unmarked."""


def pg_grant_fix(user: str) -> str:
    return (f"GRANT EXECUTE ON FUNCTION {', '.join(PG_FUNCTIONS)} TO {user} (or make {user} a superuser); "
            "or mark_writes = false when no cdc-agent captures this database")


class Marking:
    """Marks the sessions of one engine. `suffix` names the second origin a PostgreSQL session falls back to."""

    def __init__(self, dialect: str, marker: str, suffix: str, changelog_table: str = "cdc_changelog"):
        self.dialect, self.marker, self.suffix = dialect, marker, suffix
        self.origin_table = _sqlite_origin_table(changelog_table)
        self.pg_origin: str | None = None          # the origin the last PostgreSQL session took

    # ------------------------------------------------------------ per connection

    def on_connect(self, dbapi_conn) -> None:
        if self.dialect == "postgresql":
            self._pg(dbapi_conn)
        elif self.dialect in ("mysql", "mariadb"):
            with dbapi_conn.cursor() as c:
                c.execute("SELECT VERSION()")
                if "mariadb" in str(c.fetchone()[0]).lower():
                    c.execute("SET SESSION skip_replication = 1")
                c.execute("SET @cdc_origin = %s", (self.marker,))
        elif self.dialect == "mssql":
            c = dbapi_conn.cursor()
            c.execute("EXEC sp_set_session_context N'cdc.origin', ?", self.marker)
            c.close()
            dbapi_conn.commit()

    def _pg(self, dbapi_conn) -> None:
        import psycopg
        user = "the target's user"
        try:
            with dbapi_conn.cursor() as c:
                c.execute("SELECT current_user")
                user = c.fetchone()[0]
                for name in (self.marker, f"{self.marker}/{self.suffix}"):
                    c.execute("SELECT pg_replication_origin_oid(%s)", (name,))
                    if c.fetchone()[0] is None:
                        c.execute("SELECT pg_replication_origin_create(%s)", (name,))
                    dbapi_conn.commit()
                    try:
                        c.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
                    except psycopg.errors.ObjectInUse:      # another session holds it: take the second name
                        dbapi_conn.rollback()
                        continue
                    self.pg_origin = name
                    break
                else:
                    raise MarkingError(f"replica database: replication origins {self.marker} and "
                                       f"{self.marker}/{self.suffix} are both in use by other sessions (two "
                                       "agents with the same name writing into this database?)")
                c.execute("SELECT set_config('cdc.origin', %s, false)", (self.marker,))
            dbapi_conn.commit()
        except psycopg.errors.InsufficientPrivilege as e:
            dbapi_conn.rollback()
            raise MarkingError(f"replica database: cannot mark this target's writes with a replication origin "
                               f"({str(e).splitlines()[0]}): {pg_grant_fix(user)}") from None

    # ------------------------------------------------------------ per transaction (SQLite)

    def begin(self, conn) -> bool:
        """Inside the batch's transaction, before its first write. True when a marker row went in (end() must
        take it out before COMMIT)."""
        if self.dialect != "sqlite":
            return False
        q = '"' + self.origin_table.replace('"', '""') + '"'
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (self.origin_table,)).first() is None:
            return False                       # no trigger capture in this database: nothing reads a marker
        conn.exec_driver_sql(f"DELETE FROM {q}")
        conn.exec_driver_sql(f"INSERT INTO {q} (origin) VALUES (?)", (self.marker,))
        return True

    def end(self, conn) -> None:
        q = '"' + self.origin_table.replace('"', '""') + '"'
        conn.exec_driver_sql(f"DELETE FROM {q}")


def _sqlite_origin_table(changelog_table: str) -> str:
    """The origin table trigger capture installs next to its changelog (named as agent/sources/trigger does)."""
    from agent.sources.trigger.catalog import Names
    return Names("sqlite", "main", changelog_table).origin_table


# ---------------------------------------------------------------- cdc-agent check


def check_marking(engine, options, label: str, config_path: str) -> list:
    """`check` lines: can this target's sessions carry the marker? Verified on the target, without marking."""
    from agent.changes import CheckItem
    what = f"{label}: no-echo mark"
    off = "or mark_writes = false when no cdc-agent captures this database"
    dialect = engine.dialect.name
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                user, superuser = conn.exec_driver_sql(
                    "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").one()
                lacking = [f for f in PG_FUNCTIONS if not superuser and not conn.exec_driver_sql(
                    "SELECT has_function_privilege(%s, 'EXECUTE')", (f,)).scalar()]
                if lacking:
                    return [CheckItem(what, False, f"{user} may not use replication origins ({', '.join(lacking)}): "
                                      "the target cannot mark its writes, and does not write unmarked",
                                      pg_grant_fix(user))]
                return [CheckItem(what, True, f"replication origin {options.marker} (pgoutput sends it as the "
                                  "Origin of these transactions) and cdc.origin for trigger capture")]
            if dialect in ("mysql", "mariadb"):
                version = str(conn.exec_driver_sql("SELECT VERSION()").scalar())
                if "mariadb" not in version.lower():
                    return [CheckItem(what, False, "MySQL has no skip_replication: a binlog capture of this database "
                                      "sees the target's writes; @cdc_origin marks them for trigger capture",
                                      f"capture this database with triggers, {off}", warning=True)]
                conn.exec_driver_sql("SET SESSION skip_replication = 1")
                return [CheckItem(what, True, "skip_replication (binlog events flagged) and @cdc_origin for "
                                  "trigger capture")]
            if dialect == "sqlite":
                table = _sqlite_origin_table(options.trigger_changelog)
                found = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                             (table,)).first() is not None
                return [CheckItem(what, True, f"trigger capture's origin table {table} carries the marker" if found
                                  else f"no trigger capture here ({table} does not exist): nothing reads a marker")]
            return [CheckItem(what, True, "sp_set_session_context N'cdc.origin' for trigger capture")]
    except Exception as e:
        from adapters._sqlreplica import db_error
        err = db_error(e)
        if err is None:
            raise
        return [CheckItem(what, False, f"cannot set the mark: {err}", off)]
