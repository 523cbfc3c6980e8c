"""Where a `kind = "debezium"` source's dsn points, per connector, and the Debezium properties built from
the whole config. Pure (no JVM, no connection): config validation imports `parse_dsn` from here.

postgres: a libpq URL or key=value string (as `kind = "postgres"`); mysql: a mysql:// URL (as `kind =
"mysql"`); sqlserver / oracle / db2: a URL `scheme://user:password@host:port/database` with the scheme
sqlserver (or mssql), oracle, db2. The password must come from ${ENV} (the config refuses a literal one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "sqlserver": 1433, "oracle": 1521, "db2": 50000}
SCHEMES = {"sqlserver": ("sqlserver", "mssql"), "oracle": ("oracle",), "db2": ("db2",)}
CONNECTOR_CLASSES = {
    "postgres": "io.debezium.connector.postgresql.PostgresConnector",
    "mysql": "io.debezium.connector.mysql.MySqlConnector",
    "sqlserver": "io.debezium.connector.sqlserver.SqlServerConnector",
    "oracle": "io.debezium.connector.oracle.OracleConnector",
    "db2": "io.debezium.connector.db2.Db2Connector",
}
# agent snapshot mode -> Debezium snapshot.mode
SNAPSHOT_MODES = {"initial": "initial", "never": "no_data", "when_needed": "when_needed"}
HEARTBEAT_MS = 2000            # a heartbeat record at least this often: checkpoints (and acknowledgements) while
                               # idle; postgres: every heartbeat_seconds, with a WAL message (below)
HEARTBEAT_MESSAGE = "cdc-agent-heartbeat"      # the native source's prefix (agent/sources/postgres/common.py)


@dataclass(frozen=True)
class DbzDsn:
    host: str
    port: int
    user: str
    password: str
    database: str


def parse_dsn(connector: str, dsn: str, fail: Callable[[str, str], Exception]) -> DbzDsn:
    """The dsn's parts; `fail(key, problem)` makes the config error raised for a bad one."""
    if connector == "postgres":
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict
        try:
            p = conninfo_to_dict(dsn)
        except Error:
            raise fail("dsn", "is not a valid PostgreSQL connection string") from None
        host = str(p.get("host") or "127.0.0.1").split(",")[0]
        port = int(str(p.get("port") or 5432).split(",")[0])
        return DbzDsn(host, port, str(p.get("user") or "postgres"), str(p.get("password") or ""),
                      str(p.get("dbname") or p.get("user") or "postgres"))
    if connector == "mysql":
        from ..mysql.common import parse_dsn as parse_mysql
        m = parse_mysql(dsn, "agent.toml")
        return DbzDsn(m.host, m.port, m.user, m.password, m.database or "")
    try:
        u = urlsplit(dsn)
        url_port = u.port
    except ValueError:
        raise fail("dsn", "is not a URL (scheme://user:password@host:port/database)") from None
    if u.scheme not in SCHEMES[connector]:
        raise fail("dsn", f"must start with {SCHEMES[connector][0]}:// for connector {connector!r}, "
                          f"got {(u.scheme or '(none)')!r}")
    if not u.hostname:
        raise fail("dsn", "has no host")
    database = unquote(u.path.lstrip("/"))
    if not database:
        raise fail("dsn", "names no database (scheme://user:password@host:port/database)")
    return DbzDsn(u.hostname, url_port or DEFAULT_PORTS[connector], unquote(u.username or ""),
                  unquote(u.password or ""), database)


def engine_name(agent_name: str) -> str:
    """The engine's `name`: the namespace of its offsets (the offsets file's keys start with it)."""
    return f"cdc-agent-{agent_name}"


def topic_prefix(agent_name: str) -> str:
    return agent_name.replace("-", "_")


def properties(cfg: Any, offsets_file: str, history_file: str) -> dict[str, str]:
    """The embedded connector's configuration. The user's `properties` come last: they override ours."""
    s = cfg.source
    d = parse_dsn(s.connector, s.dsn, lambda k, p: ValueError(f"source.{k} {p}"))
    p: dict[str, str] = {
        "name": engine_name(cfg.agent.name),
        "connector.class": CONNECTOR_CLASSES[s.connector],
        "topic.prefix": topic_prefix(cfg.agent.name),
        "database.hostname": d.host, "database.port": str(d.port),
        "database.user": d.user, "database.password": d.password,
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": offsets_file,
        "offset.flush.interval.ms": "0",            # flush on every acknowledgement: it follows the spool
        "snapshot.mode": SNAPSHOT_MODES[s.snapshot],
        "provide.transaction.metadata": "true",     # BEGIN / END records: the agent's transaction boundaries
        "heartbeat.interval.ms": str(HEARTBEAT_MS),
        "errors.max.retries": "0",                  # a lost connection ends the engine: the agent reconnects
        "tombstones.on.delete": "false",
        "include.schema.changes": "false",
        # the types travel with every record (the converter's schema), the values in these forms
        "key.converter.schemas.enable": "false", "value.converter.schemas.enable": "true",
        "decimal.handling.mode": "string", "interval.handling.mode": "string",
        "binary.handling.mode": "base64", "time.precision.mode": "adaptive_time_microseconds",
        "bigint.unsigned.handling.mode": "precise",
        "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
        "schema.history.internal.file.filename": history_file,
    }
    p["table.include.list"] = ",".join(_regex(t) for t in s.tables)
    if s.connector == "postgres":
        p.update({"database.dbname": d.database, "plugin.name": "pgoutput", "slot.name": s.slot,
                  "publication.name": s.publication, "publication.autocreate.mode": "disabled"})
        if s.heartbeat_seconds:
            # as the native source does: a WAL message now and then, so that an idle database's slot advances
            # (the heartbeat's acknowledgement moves the slot's flush LSN past it)
            p["heartbeat.interval.ms"] = str(int(s.heartbeat_seconds * 1000))
            p["heartbeat.action.query"] = (f"SELECT pg_logical_emit_message(false, '{HEARTBEAT_MESSAGE}', "
                                           f"now()::text)")
    elif s.connector == "mysql":
        p.update({"database.server.id": str(s.server_id),
                  # TIME(n) / DATETIME(n): the schema then says n (values.py writes six digits when n > 0)
                  "datatype.propagate.source.type": ".+\\.TIME,.+\\.DATETIME",
                  "database.include.list": ",".join(sorted({_regex(t.split(".")[0]) for t in s.tables}))})
    elif s.connector == "sqlserver":
        p["database.names"] = d.database
    else:
        p["database.dbname"] = d.database
    p.update(dict(s.properties))
    return p


def _regex(name: str) -> str:
    """Debezium's include lists are regular expressions: a table name matches only itself."""
    return "".join("\\" + c if c in ".$^*+?()[]{}|\\" else c for c in name)
