"""What the PostgreSQL stream and admin parts share: connection strings, error translation, quoting."""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...config import Config
from ...errors import SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact

HEARTBEAT_PREFIX = "cdc-agent-heartbeat"

# server errors that retrying cannot fix: a missing slot or publication, no privilege, authentication
# failed, no such database, wal_level or plugin wrong, unsupported, a command the server does not know
_FATAL = (pgerr.UndefinedObject, pgerr.InsufficientPrivilege, pgerr.InvalidAuthorizationSpecification,
          pgerr.InvalidPassword, pgerr.InvalidCatalogName, pgerr.ObjectNotInPrerequisiteState,
          pgerr.FeatureNotSupported, pgerr.SyntaxError)


def conninfo(cfg: Config, *, replication: bool = False, extra_options: str = "") -> str:
    """The configured DSN plus what the agent needs; settings the user wrote stay unless they must not."""
    dsn = cfg.source.dsn
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as e:
        raise SourceFatal(f"source.dsn is not a valid PostgreSQL connection string: {redact(str(e))}") from None
    extra: dict = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = 10
    if "application_name" not in params:
        extra["application_name"] = f"cdc-agent/{cfg.agent.name}"
    if "keepalives" not in params:             # notice a dead peer (network gone) within about a minute
        extra.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    opts = " ".join(x for x in (str(params.get("options", "")), extra_options) if x)
    if opts:
        extra["options"] = opts
    if replication:
        extra["replication"] = "database"
    return make_conninfo(dsn, **extra)


def translate(e: Exception, what: str) -> SourceError:
    """A driver exception -> SourceUnavailable (retry) or SourceFatal (needs a person), secrets removed."""
    diag = getattr(e, "diag", None)
    msg = getattr(diag, "message_primary", None)
    if not msg:
        lines = str(e).strip().splitlines()
        msg = lines[0] if lines else "no reason given"
    text = redact(f"{what}: {msg}")
    return SourceFatal(text) if isinstance(e, _FATAL) else SourceUnavailable(text)


def translate_result(sqlstate: str, msg: str, what: str) -> SourceError:
    """The same for an error the server sent as a result (the replication protocol), not as an exception."""
    try:
        cls: type = pgerr.lookup(sqlstate) if sqlstate else psycopg.Error
    except KeyError:
        cls = psycopg.Error
    text = redact(f"{what}: {msg.strip() or 'the server gave no reason'}")
    return SourceFatal(text) if issubclass(cls, _FATAL) else SourceUnavailable(text)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_ident(table: str) -> str:
    schema, _, name = table.partition(".")
    return f"{ident(schema)}.{ident(name)}"


def literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"
