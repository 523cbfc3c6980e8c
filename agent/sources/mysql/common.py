"""What the MySQL/MariaDB stream and admin parts share: the DSN, ordinary query connections, driver errors,
and the checkpoint format."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from ...errors import ConfigError, SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact
from ..mysqlwire import tls_context

PURGED_HELP = ("the binlog the agent needs is no longer on the server (purged while the agent was stopped, "
               "or the server was reset). Changes between the agent's checkpoint and the oldest binlog are lost "
               "to capture. To go on: set source.snapshot = \"when_needed\" (the agent then streams from the "
               "current position and snapshots every table again, instead of stopping); or re-snapshot the "
               "captured tables for the consumers if they need them, then reset the agent's checkpoint so that it "
               "starts from the server's current position (when `cdc-agent status` shows nothing pending, stop "
               "the agent and remove state_dir/spool.db). Keep binlogs longer than the agent may be down "
               "(binlog_expire_logs_seconds)")


# ---------------------------------------------------------------- DSN


@dataclass(frozen=True)
class MysqlDsn:
    host: str
    port: int
    user: str
    password: str
    database: str | None
    unix_socket: str | None = None
    ssl_mode: str = "preferred"
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    connect_timeout: float = 10.0


_SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")


def parse_dsn(dsn: str, file: str = "agent.toml") -> MysqlDsn:
    """mysql://user:password@host:port/db?ssl_mode=required&ssl_ca=/path&unix_socket=/path&connect_timeout=10"""
    try:
        u = urlsplit(dsn)
        port = u.port
    except ValueError as e:
        raise ConfigError(file, "source.dsn", f"not a valid URL: {redact(str(e))}") from None
    if u.scheme not in ("mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql"):
        raise ConfigError(file, "source.dsn", 'must be a URL like "mysql://user:${PASSWORD}@host:3306/db"')
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    unknown = set(q) - {"ssl_mode", "ssl_ca", "ssl_cert", "ssl_key", "unix_socket", "connect_timeout", "charset"}
    if unknown:
        raise ConfigError(file, "source.dsn", f"unknown URL parameter {sorted(unknown)[0]!r} (allowed: ssl_mode, "
                                              f"ssl_ca, ssl_cert, ssl_key, unix_socket, connect_timeout)")
    ssl_mode = q.get("ssl_mode", "preferred").lower()
    if ssl_mode not in _SSL_MODES:
        raise ConfigError(file, "source.dsn", f"ssl_mode must be one of {', '.join(_SSL_MODES)}, got {ssl_mode!r}")
    if not u.username:
        raise ConfigError(file, "source.dsn", "names no user (mysql://USER:${PASSWORD}@host:port/db)")
    try:
        timeout = float(q.get("connect_timeout", 10))
    except ValueError:
        raise ConfigError(file, "source.dsn", "connect_timeout must be a number of seconds") from None
    return MysqlDsn(host=u.hostname or "127.0.0.1", port=port or 3306, user=unquote(u.username),
                    password=unquote(u.password or ""), database=unquote(u.path.lstrip("/")) or None,
                    unix_socket=q.get("unix_socket"), ssl_mode=ssl_mode, ssl_ca=q.get("ssl_ca"),
                    ssl_cert=q.get("ssl_cert"), ssl_key=q.get("ssl_key"), connect_timeout=timeout)


def _ssl_context(d: MysqlDsn):
    if d.ssl_mode == "disabled":
        return None
    return tls_context(d.ssl_mode, d.ssl_ca, d.ssl_cert, d.ssl_key)


def server_address(d: MysqlDsn) -> str:
    return d.unix_socket or f"{d.host}:{d.port}"


def control_connection(d: MysqlDsn, **extra):
    """A PyMySQL connection for ordinary queries (`extra`: more PyMySQL arguments). Driver errors become
    SourceUnavailable / SourceFatal."""
    import pymysql
    kw = dict(user=d.user, password=d.password, charset="utf8mb4", autocommit=True,
              connect_timeout=d.connect_timeout, read_timeout=60, write_timeout=60, **extra)
    if d.unix_socket:
        kw["unix_socket"] = d.unix_socket
    else:
        kw.update(host=d.host, port=d.port)
    ctx = _ssl_context(d)
    if ctx is not None:
        kw["ssl"] = ctx
    else:
        kw["ssl_disabled"] = True      # (else PyMySQL tries TLS of its own, with a context it builds each time)
    try:
        try:
            return pymysql.connect(**kw)
        except pymysql.err.OperationalError as e:
            if d.ssl_mode == "preferred" and e.args and e.args[0] == 2026 and "ssl" in kw:
                kw.pop("ssl")                      # "preferred": the server offers no TLS, go on without
                kw["ssl_disabled"] = True
                return pymysql.connect(**kw)
            raise
    except pymysql.MySQLError as e:
        raise driver_error(e, d) from None


def driver_error(e: Exception, d: MysqlDsn) -> SourceError:
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    msg = redact(str(e.args[1] if len(e.args) > 1 else e))
    if code in (1045, 1044, 1142, 1227, 1370, 1698, 1251):          # access denied, privileges, auth plugin
        return SourceFatal(f"MySQL {server_address(d)} refused the agent's user {d.user!r}: ({code}) {msg}")
    return SourceUnavailable(f"MySQL {server_address(d)}: {msg}" + (f" ({code})" if code else ""))


def run_query(conn, sql: str, args=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def master_status(conn) -> list[tuple]:
    """SHOW MASTER STATUS, or its MySQL 8.2+ name SHOW BINARY LOG STATUS (8.4 dropped the old one)."""
    import pymysql
    try:
        return run_query(conn, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:
        return run_query(conn, "SHOW BINARY LOG STATUS")


def replica_hosts(conn) -> list[tuple]:
    """SHOW SLAVE HOSTS, or SHOW REPLICAS (MySQL 8.0.22+; 8.4 dropped the old name). (server_id, host) rows."""
    import pymysql
    try:
        return [(r[0], r[1]) for r in run_query(conn, "SHOW SLAVE HOSTS")]
    except pymysql.err.ProgrammingError:
        return [(r[0], r[1]) for r in run_query(conn, "SHOW REPLICAS")]


def global_var(conn, name: str):
    rows = run_query(conn, "SHOW GLOBAL VARIABLES LIKE %s", (name,))
    return rows[0][1] if rows else None


# ---------------------------------------------------------------- checkpoints


def parse_checkpoint(s: str) -> dict[str, str]:
    """'gtid=...;file=...;pos=...' -> dict. Raises SourceFatal for anything else."""
    out = {}
    for part in s.split(";"):
        k, sep, v = part.partition("=")
        if not sep or k not in ("gtid", "file", "pos") or k in out:
            raise SourceFatal(f"the spooled checkpoint {s!r} is not a MySQL binlog checkpoint (was the source "
                              f"kind or server changed? reset the agent's state to start over)")
        out[k] = v
    if "file" not in out or "pos" not in out or not out["pos"].isdigit():
        raise SourceFatal(f"the spooled checkpoint {s!r} lacks a binlog file and position; reset the agent's state")
    return out


def format_checkpoint(gtids: dict[int, str] | None, file: str, pos: int) -> str:
    if gtids is None:
        return f"file={file};pos={pos}"
    state = ",".join(gtids[d] for d in sorted(gtids))
    return f"gtid={state};file={file};pos={pos}"


def gtid_state(s: str) -> dict[int, str]:
    out = {}
    for g in filter(None, (x.strip() for x in s.split(","))):
        parts = g.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SourceFatal(f"bad MariaDB GTID {g!r} in the checkpoint; reset the agent's state")
        out[int(parts[0])] = g
    return out


@functools.lru_cache(maxsize=16)        # called per transaction; the file changes once per binlog rotation
def file_number(name: str) -> int:
    m = re.search(r"\.(\d+)$", name)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- the snapshot signal table


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def signal_table(cfg) -> tuple[str, str]:
    """(database, table) of the snapshot signal table (docs/snapshots.md): source.signal_table, in the database
    it names, else the DSN's database, else the database of the first captured table."""
    db, _, name = cfg.source.signal_table.rpartition(".")
    if not db:
        db = parse_dsn(cfg.source.dsn, str(cfg.path)).database or cfg.source.tables[0].split(".", 1)[0]
    return db, name


def signal_ident(cfg) -> str:
    db, name = signal_table(cfg)
    return f"{quote(db)}.{quote(name)}"


def signal_create_sql(cfg) -> str:
    # one row per agent (several agents may share a table); each watermark updates it: the binlog carries
    # the mark in the row's after image
    return (f"CREATE TABLE IF NOT EXISTS {signal_ident(cfg)} (agent varchar(64) NOT NULL PRIMARY KEY, "
            f"mark varchar(255) NOT NULL, written timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) "
            f"ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE=InnoDB COMMENT 'cdc-agent snapshot watermarks'")


def signal_drop_sql(cfg) -> str:
    return f"DROP TABLE IF EXISTS {signal_ident(cfg)}"
