"""Trigger-capture DSNs: which SQL dialect a dsn points at and how to connect to it.

Imports nothing of the agent but errors and secrets, so `agent.config` can validate a dsn at load time
without importing the source (which is built from a Config).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from ...errors import ConfigError
from ...secrets import redact


@dataclass(frozen=True)
class Target:
    """Where the dsn points: the SQL dialect, and how to connect (a SQLAlchemy URL or an ODBC string)."""

    dialect: str
    url: str | None = None           # SQLAlchemy URL
    odbc: str | None = None          # ODBC connection string, used through pyodbc directly
    sqlite_path: str | None = None


def parse_dsn(dsn: str, file: str = "agent.toml") -> Target:
    """Map a trigger dsn to a dialect and a connection method. ODBC strings ("DRIVER={...};...") go to the
    matching SQLAlchemy dialect where it has one for pyodbc (SQL Server, MySQL/MariaDB), else to pyodbc
    directly (PostgreSQL: SQLAlchemy has no postgresql+pyodbc dialect)."""
    s = dsn.strip()
    low = s.lower()
    if re.search(r"(?i)\bdriver\s*=", s) and "://" not in s:
        m = re.search(r"(?i)\bdriver\s*=\s*(\{[^}]*\}|[^;]*)", s)
        drv = (m.group(1) if m else "").strip("{}").lower()
        if "postgres" in drv or "psql" in drv:
            return Target("postgresql", odbc=s)
        if "mariadb" in drv or "mysql" in drv:
            return Target("mysql", url="mysql+pyodbc:///?odbc_connect=" + urllib.parse.quote_plus(s))
        if "sql server" in drv or "freetds" in drv or "mssql" in drv:
            return Target("mssql", url="mssql+pyodbc:///?odbc_connect=" + urllib.parse.quote_plus(s))
        if "sqlite" in drv:
            return Target("sqlite", odbc=s)
        raise ConfigError(file, "source.dsn", f"ODBC driver {drv!r} is not supported for trigger capture "
                                               "(PostgreSQL, MariaDB/MySQL, SQL Server drivers are)")
    scheme = low.split("://", 1)[0] if "://" in low else ""
    rest = s.split("://", 1)[1] if "://" in s else ""
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        path = path.split("?", 1)[0]
        return Target("sqlite", url=s, sqlite_path=path or ":memory:")
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        return Target("postgresql", url="postgresql+psycopg://" + rest if scheme != "postgresql+psycopg2" else s)
    if scheme in ("mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql"):
        return Target("mysql", url="mysql+pymysql://" + rest)
    if scheme == "mysql+pyodbc":
        return Target("mysql", url=s)
    if scheme == "mssql+pyodbc" or scheme == "mssql":
        return Target("mssql", url="mssql+pyodbc://" + rest)
    raise ConfigError(file, "source.dsn", "trigger capture needs a SQLAlchemy URL (postgresql+psycopg://, "
                                           "mysql+pymysql://, sqlite:///, mssql+pyodbc://) or an ODBC "
                                           f"connection string (DRIVER={{...}};...), got {redact(dsn)!r}")
