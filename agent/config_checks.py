"""Checks of agent.toml that look past one key: whether the file is one to read at all, hosts, a PostgreSQL
DSN, target event patterns against the event types the config makes, and the files targets write against
the config, the agent's state and each other. agent/config.py calls them; each raises ConfigError naming file,
key and problem."""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import secrets
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import AgentSettings, EventRule, SourceSettings, TargetSettings

MAX_CONFIG_BYTES = 1_000_000                 # a config is a few kB; more is the wrong file


def read_config_text(p: Path, file: str) -> str:
    """The file's text. Opened without blocking and checked to be a regular file before reading: a FIFO or a
    device would block or never end."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(file, None, "file not found") from None
    except (OSError, ValueError) as e:
        raise ConfigError(file, None, f"cannot read: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(file, None, "is not a regular file (a directory, FIFO or device cannot be a config)")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(file, None, f"is {st.st_size} bytes: a config is at most {MAX_CONFIG_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(file, None, f"is larger than {MAX_CONFIG_BYTES} bytes: a config is at most that")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(file, None, f"cannot read: {e}") from None
    finally:
        os.close(fd)


def valid_host(host: str) -> bool:
    """An IP address (IPv6 with or without brackets) or a DNS name: labels of letters, digits, "-" and "_"
    (container names have them), 1 to 63 each, the last not all digits ("999.1.1.1" is no address)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return True
    except ValueError:
        if bare != host:
            return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return (len(host) <= 253 and all(re.fullmatch(r"(?!-)[\w-]{1,63}(?<!-)", label) for label in labels)
            and not labels[-1].isdigit())


def check_postgres_dsn(r: Any, dsn: str) -> None:
    """libpq reads a DSN's ports only when it connects: a typo would fail every connection instead of here."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(dsn)
    except Error as e:
        raise r.fail("dsn", "is not a valid PostgreSQL connection string: "
                            f"{secrets.redact(' '.join(str(e).split()))}") from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise r.fail("dsn", f"has a port that is not a number from 1 to 65535: {port!r}")
    for host in str(params.get("host") or "").split(","):
        if host and host[0] not in "/@" and not valid_host(host):     # "/dir", "@name": Unix sockets
            raise r.fail("dsn", f"has a host that is neither an IP address nor a DNS name: {host!r}")


def produced_types(rules: tuple[EventRule, ...], tables: tuple[str, ...]) -> set[str]:
    """The event types a config's rules make: each rule's type, and row.<table> for a table no rule names
    (as agent/mapping.py does)."""
    return {r.type for r in rules} | {f"row.{t}" for t in tables if not any(r.table == t for r in rules)}


def check_target_events(file: str, targets: tuple[TargetSettings, ...], rules: tuple[EventRule, ...],
                         tables: tuple[str, ...]) -> None:
    """A pattern that matches no type the config makes is a typo: the target would silently get nothing."""
    types = sorted(produced_types(rules, tables))
    for i, t in enumerate(targets):
        for p in t.events:
            if not any(fnmatch.fnmatchcase(x, p) for x in types):
                why = "event types hold no spaces; " if any(c.isspace() for c in p) else ""
                shown = ", ".join(types[:8]) + (", ..." if len(types) > 8 else "")
                raise ConfigError(file, f"targets[{i}].events", f"pattern {p!r} matches no event type this config "
                                  f"produces ({why}the types are: {shown})")


def check_written_paths(file: str, targets: tuple[TargetSettings, ...], agent: AgentSettings,
                         source: SourceSettings) -> None:
    """Files targets write (options marked `writes`) must not overwrite the config, the agent's state, the
    source database, or each other."""
    try:
        own = {Path(file).resolve(): "the config file"}
    except (OSError, ValueError, RuntimeError):
        own = {}
    if source.dsn.startswith("sqlite:////"):
        own[Path(source.dsn[len("sqlite:///"):].partition("?")[0])] = "the source database"
    written: dict[Path, str] = {}
    for i, t in enumerate(targets):
        if not dataclasses.is_dataclass(t.options):
            continue
        for f in dataclasses.fields(t.options):
            path = getattr(t.options, f.name)
            if not f.metadata.get("writes") or not isinstance(path, Path):
                continue
            key = f"targets[{i}].{f.name}"
            if path in own:
                raise ConfigError(file, key, f"{path} is {own[path]}: the target would write into it")
            if path.is_relative_to(agent.state_dir):
                raise ConfigError(file, key, f"{path} is inside agent.state_dir ({agent.state_dir}), which holds the "
                                  "spool and the agent's state: write it elsewhere")
            if path in written:
                raise ConfigError(file, key, f"{path} is also written by {written[path]}: two targets cannot share "
                                  "a file")
            written[path] = f"targets[{i}] ({t.name})"
