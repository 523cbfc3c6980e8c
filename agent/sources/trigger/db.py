"""One connection to the captured database, over SQLAlchemy or pyodbc, and the driver-neutral helpers."""

from __future__ import annotations

import re
from typing import Any

from ...errors import SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact
from .dialect import dialect_named
from .dsn import Target


def friendly(e: Exception) -> str:
    """The first line of a driver error, secrets removed."""
    msg = str(getattr(e, "orig", None) or e).strip().splitlines()
    return redact(msg[0] if msg else type(e).__name__)


# a changelog query failing like this means capture is not installed (or out of date), not an outage
MISSING_RE = re.compile(r"(?i)no such table|does not exist|doesn't exist|invalid object name|undefined table|"
                        r"unknown column|no such column|undefined column|invalid column")


def text_of(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def text_or_none(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return text_of(v)


def truthy(v: Any) -> bool:
    """A boolean from any driver (the PostgreSQL ODBC driver returns booleans as '0' / '1')."""
    if isinstance(v, str):
        return v.strip().lower() in ("1", "t", "true", "y", "yes")
    return bool(v)


class Db:
    """The few operations capture needs, over a SQLAlchemy connection or a pyodbc one, in autocommit mode
    (transactions are explicit BEGIN / COMMIT). SQL uses :name binds."""

    def __init__(self, target: Target, what: str = "database"):
        self.target, self.dialect = target, target.dialect
        self.sql = dialect_named(target.dialect)
        self._sa: Any = None
        self._odbc: Any = None
        try:
            if target.odbc is not None:
                import pyodbc
                self._odbc = pyodbc.connect(target.odbc, autocommit=True, timeout=10)
            else:
                assert target.url is not None, "parse_dsn gives a URL or an ODBC string"
                self.sql.before_connect(target)
                from sqlalchemy import create_engine
                from sqlalchemy.pool import NullPool
                engine = create_engine(target.url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                                       connect_args=self.sql.connect_args(target))
                self._engine = engine
                self._sa = engine.connect()
                self.sql.after_connect(self)
        except SourceError:
            raise
        except ImportError as e:
            raise SourceFatal(f"cannot connect to the {what}: {e}") from None
        except Exception as e:
            msg = friendly(e)
            if re.search(r"IM002|can't open lib|file not found|no default driver", msg, re.I):
                raise SourceFatal(f"cannot connect to the {what}: {msg} (is the ODBC driver named in "
                                  f"DRIVER={{...}} installed? `odbcinst -q -d` lists the installed ones)") from None
            raise SourceUnavailable(f"cannot connect to the {what}: {msg}") from None

    # -------------------------------------------------------------- statements

    def query(self, sql: str, params: dict | None = None) -> list[tuple]:
        if self._sa is not None:
            from sqlalchemy import text
            res = self._sa.execute(text(sql), params or {})
            return [tuple(r) for r in res.fetchall()] if res.returns_rows else []
        cur = self._odbc.cursor()
        try:
            q, args = _qmark(sql, params)
            cur.execute(q, args) if args else cur.execute(q)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def query_text(self, sql: str) -> list[tuple]:
        """A query with no binds, exactly as written (it holds a user's SQL, whose ':' are not binds)."""
        if self._sa is not None:
            from sqlalchemy import text
            res = self._sa.execute(text(sql.replace(":", "\\:")))
            return [tuple(r) for r in res.fetchall()] if res.returns_rows else []
        cur = self._odbc.cursor()
        try:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def execute(self, sql: str, params: dict | None = None) -> int:
        if self._sa is not None:
            from sqlalchemy import text
            return self._sa.execute(text(sql), params or {}).rowcount
        cur = self._odbc.cursor()
        try:
            q, args = _qmark(sql, params)
            cur.execute(q, args) if args else cur.execute(q)
            return cur.rowcount
        finally:
            cur.close()

    def script(self, sql: str) -> None:
        """One statement exactly as written (DDL with bodies): no bind parsing."""
        if self._sa is not None:
            self._sa.exec_driver_sql(sql)
        else:
            cur = self._odbc.cursor()
            try:
                cur.execute(sql)
            finally:
                cur.close()

    def begin(self) -> None:
        self.script(self.sql.begin_sql)

    def commit(self) -> None:
        self.script("COMMIT")

    def rollback(self) -> None:
        try:
            self.script("ROLLBACK")
        except Exception:
            pass

    def close(self) -> None:
        try:
            if self._sa is not None:
                self._sa.close()
                self._engine.dispose()
            if self._odbc is not None:
                self._odbc.close()
        except Exception:
            pass


_BIND_RE = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def _qmark(sql: str, params: dict | None) -> tuple[str, list]:
    if not params:
        return sql, []
    args: list = []

    def sub(m: re.Match) -> str:
        args.append(params[m.group(1)])
        return "?"
    return _BIND_RE.sub(sub, sql), args
