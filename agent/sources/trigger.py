"""Source kind `trigger`: capture through triggers that write a changelog table, for databases where the
agent may not read the transaction log (no replication grants) or cannot (SQLite, SQL Server here).

`setup` installs, per captured table, AFTER INSERT / UPDATE / DELETE triggers writing the old and new row
images as JSON into the changelog (`migrations/trigger/<dialect>/`, versioned). The source reads the
changelog and deletes rows only after the pipeline confirmed that the spool holds them.

Never missing a change (a transaction that took a lower changelog id may commit after a higher id was read):
- PostgreSQL: every row records its transaction (txid_current()). The reader takes snapshots
  (txid_current_snapshot()) and reads, window by window, exactly the rows whose transaction is visible in
  the window's upper snapshot and not in its lower one (as PgQ does). Every committed transaction becomes
  visible in exactly one window, so none is skipped and none read twice; windows follow commit order.
  The window bounds travel in the checkpoint, so a replay after a crash re-reads the same windows and gives
  the same positions (and event ids).
- MySQL / MariaDB, SQLite, SQL Server: the changelog itself is the queue of what is not yet spooled (rows
  are deleted only after the spool holds them). Rows are emitted in id order; a missing id (taken by a
  transaction not yet committed, or rolled back) holds back the rows after it for at most
  `max_wait_seconds` after they were first seen. A row that commits later than that is still read (it is
  still in the table) and emitted, late: its position is lower than ones already emitted. The timeout
  trades global position order for latency; it never loses a change. See docs/trigger-capture.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

from ..changes import CheckItem, RowChange, SourceBatch, SourceStatus
from ..config import Config
from ..errors import ConfigError, SourceError, SourceFatal, SourceUnavailable
from ..binlog import _b64, format_timestamp
from ..pgvalues import bytea_to_base64, frac6, interval_text_to_iso
from ..secrets import redact
from ..shipped import shipped

log = logging.getLogger("cdc_agent.trigger")

MIGRATIONS = shipped("migrations/trigger")
DIALECTS = ("postgresql", "mysql", "sqlite", "mssql")
OPS = {"I": "insert", "U": "update", "D": "delete"}
PG_EMPTY_SNAPSHOT = "1:1:"          # nothing is visible in it: the lower bound of the very first window


# ================================================================== connections


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


def _friendly(e: Exception) -> str:
    msg = str(getattr(e, "orig", None) or e).strip().splitlines()
    return redact(msg[0] if msg else type(e).__name__)


_MISSING_RE = re.compile(r"(?i)no such table|does not exist|doesn't exist|invalid object name|undefined table|"
                         r"unknown column|no such column|undefined column|invalid column")


class Db:
    """The few operations capture needs, over a SQLAlchemy connection or a pyodbc one, in autocommit mode
    (transactions are explicit BEGIN / COMMIT). SQL uses :name binds."""

    def __init__(self, target: Target, what: str = "database"):
        self.target, self.dialect = target, target.dialect
        self._sa = self._odbc = None
        try:
            if target.odbc is not None:
                import pyodbc
                self._odbc = pyodbc.connect(target.odbc, autocommit=True, timeout=10)
            else:
                if target.dialect == "sqlite" and target.sqlite_path not in (":memory:", ""):
                    if not Path(target.sqlite_path).exists():
                        raise SourceFatal(f"SQLite database {target.sqlite_path} does not exist")
                from sqlalchemy import create_engine
                from sqlalchemy.pool import NullPool
                args: dict[str, Any] = {}
                if target.dialect == "sqlite":
                    args = {"timeout": 30}
                elif target.dialect == "postgresql":
                    args = {"connect_timeout": 10}
                elif target.dialect == "mysql" and "pymysql" in target.url:
                    args = {"connect_timeout": 10}
                engine = create_engine(target.url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                                       connect_args=args)
                self._engine = engine
                self._sa = engine.connect()
                if target.dialect == "sqlite":
                    self._sa.exec_driver_sql("PRAGMA busy_timeout = 30000")
        except SourceError:
            raise
        except ImportError as e:
            raise SourceFatal(f"cannot connect to the {what}: {e}") from None
        except Exception as e:
            msg = _friendly(e)
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
        self.script({"mssql": "BEGIN TRANSACTION", "sqlite": "BEGIN IMMEDIATE"}.get(self.dialect, "BEGIN"))

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


# ================================================================== names and rendering


def quote(dialect: str, ident: str) -> str:
    if dialect == "mysql":
        return "`" + ident.replace("`", "``") + "`"
    if dialect == "mssql":
        return "[" + ident.replace("]", "]]") + "]"
    return '"' + ident.replace('"', '""') + '"'


def literal(dialect: str, s: str) -> str:
    s = s.replace("'", "''")
    if dialect == "mysql":
        s = s.replace("\\", "\\\\")
    return ("N'" if dialect == "mssql" else "'") + s + "'"


def _short(name: str, limit: int) -> str:
    """An identifier within the engine's length limit, kept unique by a hash of the full name."""
    if len(name) <= limit:
        return name
    h = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return name[: limit - 9] + "_" + h


@dataclass
class Column:
    name: str
    type: str                 # lower-case base type name as the catalog gives it
    elem: str | None = None   # PostgreSQL arrays: the element type
    scale: int | None = None  # SQLite: the declared scale of DECIMAL(p,s)


@dataclass
class TableInfo:
    name: str                 # "schema.table" as in the config
    columns: list[Column]
    key: tuple[str, ...]


@dataclass
class Names:
    dialect: str
    schema: str
    cl: str

    @property
    def limit(self) -> int:
        return {"postgresql": 63, "mysql": 64, "mssql": 128}.get(self.dialect, 200)

    def q(self, *parts: str) -> str:
        return ".".join(quote(self.dialect, p) for p in parts)

    @property
    def qcl(self) -> str:
        return self.q(self.schema, self.cl)

    @property
    def version_table(self) -> str:
        return _short(self.cl + "_version", self.limit)

    @property
    def qversion(self) -> str:
        return self.q(self.schema, self.version_table)

    @property
    def origin_table(self) -> str:
        return _short(self.cl + "_origin", self.limit)

    @property
    def fn(self) -> str:
        return _short(self.cl + "_capture", self.limit)

    def trigger(self, table: str, suffix: str = "") -> str:
        return _short(f"{self.cl}_{table.split('.', 1)[1]}" + (f"_{suffix}" if suffix else ""), self.limit)

    def common(self, seed: int | None = None) -> dict[str, str]:
        d = {"schema": self.schema, "cl": self.cl, "qcl": self.qcl, "qversion": self.qversion,
             "cl_lit": literal(self.dialect, self.cl), "origin": quote(self.dialect, self.origin_table),
             "qorigin": self.q(self.schema, self.origin_table), "qfn": self.q(self.schema, self.fn)}
        if seed is not None:
            d["seed"] = str(seed)
        return d


_PH_RE = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, values: dict[str, str]) -> list[str]:
    """Fill {{placeholders}} and split into statements (a line holding only ';' separates them); leading
    comment lines of each statement are dropped (they document the files, not the catalog)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template placeholder {m.group(1)} has no value")
        return values[m.group(1)]
    text = _PH_RE.sub(sub, template)
    out = []
    for chunk in re.split(r"(?m)^\s*;\s*$", text):
        lines = chunk.strip("\n").splitlines()
        while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
            lines.pop(0)
        stmt = "\n".join(lines).strip()
        if stmt:
            out.append(stmt)
    return out


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, template text), ascending."""
    out = []
    for f in sorted((MIGRATIONS / dialect).glob("[0-9][0-9][0-9]_*.sql")):
        out.append((int(f.name[:3]), f.stem[4:], f.read_text(encoding="utf-8")))
    return out


def newest_version(dialect: str) -> int:
    m = migrations(dialect)
    return m[-1][0] if m else 0


def table_template(dialect: str, version: int) -> str:
    best = None
    for f in sorted((MIGRATIONS / dialect).glob("table.v[0-9][0-9][0-9].sql")):
        v = int(f.name[7:10])
        if v <= version:
            best = f
    if best is None:
        raise SourceFatal(f"no trigger template for {dialect} version {version}")
    return best.read_text(encoding="utf-8")


def _file(dialect: str, name: str) -> str:
    return (MIGRATIONS / dialect / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------ per-column JSON expressions


_MY_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point",
              "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}


def _mysql_expr(ref: str, col: Column) -> str:
    """How a MySQL/MariaDB trigger puts one column in JSON_OBJECT so the reader can give its exact value:
    decimals as text (no double rounding), binary as hex, TIMESTAMP as epoch seconds (independent of the
    writer's session time zone), date/time types as text."""
    t = col.type
    if t in ("decimal", "numeric"):
        return f"CAST({ref} AS CHAR)"
    if t in _MY_BINARY:
        return f"HEX({ref})"
    if t == "timestamp":
        return f"CAST(UNIX_TIMESTAMP({ref}) AS CHAR)"
    if t in ("datetime", "date", "time"):
        return f"CAST({ref} AS CHAR)"
    if t == "bit":
        return f"({ref} + 0)"
    if t == "double" or t == "real":
        # MariaDB's JSON_OBJECT prints doubles with 15 significant digits: pass 17 through text
        return f"CAST({ref} AS CHAR)"
    if t == "float":
        return f"CAST({ref} AS DOUBLE)"
    return ref


def _sqlite_expr(ref: str) -> str:
    """SQLite's json_object() refuses BLOBs and prints REALs with 15 digits; wrap both so the reader gets
    the exact value (any column may hold any type in SQLite)."""
    return (f"CASE typeof({ref}) WHEN 'blob' THEN json_object('$b', hex({ref})) "
            f"WHEN 'real' THEN json_object('$r', printf('%!.17g', {ref})) ELSE {ref} END")


_MS_SKIP = {"text", "ntext", "image"}           # not readable in inserted/deleted of AFTER triggers


def _mssql_expr(ref: str, col: Column) -> str | None:
    t = col.type
    if t in _MS_SKIP:
        return None
    if t in ("decimal", "numeric", "money", "smallmoney"):
        return f"CONVERT(varchar(64), {ref})"
    if t in ("geometry", "geography"):
        return f"{ref}.STAsBinary()"
    if t in ("hierarchyid", "sql_variant"):
        return f"CONVERT(nvarchar(4000), {ref})"
    if t == "xml":
        return f"CONVERT(nvarchar(max), {ref})"
    if t in ("datetime", "smalldatetime"):
        return f"CONVERT(datetime2(3), {ref})"
    return ref


def _json_object(dialect: str, alias: str, cols: list[Column]) -> str:
    if dialect == "mysql":
        parts = [f"{literal(dialect, c.name)}, {_mysql_expr(f'{alias}.{quote(dialect, c.name)}', c)}" for c in cols]
        return "JSON_OBJECT(" + ", ".join(parts) + ")"
    if dialect == "sqlite":
        # json_object() takes at most 127 arguments per call (SQLITE_MAX_FUNCTION_ARG default): chain with json_patch
        chunks = [cols[i:i + 60] for i in range(0, len(cols), 60)] or [[]]
        objs = ["json_object(" + ", ".join(f"{literal(dialect, c.name)}, "
                                           f"{_sqlite_expr(f'{alias}.{quote(dialect, c.name)}')}" for c in ch) + ")"
                for ch in chunks]
        expr = objs[0]
        for o in objs[1:]:
            expr = f"json_patch({expr}, {o})"
        return expr
    if dialect == "mssql":
        parts = []
        for c in cols:
            e = _mssql_expr(f"{alias}.{quote(dialect, c.name)}", c)
            if e is not None:
                parts.append(f"{e} AS {quote(dialect, c.name)}")
        return ("SELECT " + ", ".join(parts) + " FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES")
    raise ValueError(dialect)


def table_values(names: Names, info: TableInfo) -> dict[str, str]:
    d = names.dialect
    schema, tname = info.name.split(".", 1)
    v = dict(names.common())
    v.update({"table": info.name, "table_lit": literal(d, info.name), "qtable": names.q(schema, tname),
              "qtable_name": quote(d, tname)})
    if d == "postgresql":
        v["trigger"] = quote(d, names.fn)          # one trigger per table, named like the function it calls
    if d in ("mysql", "sqlite"):
        for s in "iud":
            n = names.trigger(info.name, s)
            v[f"qtrigger_{s}"] = names.q(schema, n) if d == "mysql" else quote(d, n)
        v["new_json"] = _json_object(d, "NEW", info.columns)
        v["old_json"] = _json_object(d, "OLD", info.columns)
    if d == "mssql":
        v["qtrigger"] = names.q(schema, names.trigger(info.name))
        v["new_json"] = _json_object(d, "i", info.columns)
        v["old_json"] = _json_object(d, "d", info.columns)
        k = info.key or tuple(c.name for c in info.columns)
        v["key_join"] = " AND ".join(f"i.{quote(d, c)} = d.{quote(d, c)}" for c in k)
        v["d_key_null"] = f"d.{quote(d, k[0])} IS NULL"
        v["i_key_null"] = f"i.{quote(d, k[0])} IS NULL"
    return v


def trigger_names(names: Names, table: str) -> list[str]:
    d = names.dialect
    if d == "postgresql":
        return [names.fn]
    if d == "mssql":
        return [names.trigger(table)]
    return [names.trigger(table, s) for s in "iud"]


# ================================================================== catalog


def _split(table: str) -> tuple[str, str]:
    s, t = table.split(".", 1)
    return s, t


def _is_mariadb(db: Db) -> bool:
    return "mariadb" in _s(db.query("SELECT VERSION()")[0][0]).lower()


def load_table(db: Db, table: str) -> TableInfo | None:
    """Columns (in order, with base types) and primary key of one table; None if it does not exist."""
    schema, name = _split(table)
    d = db.dialect
    if d == "postgresql":
        rows = db.query(
            "SELECT a.attname, "
            "  CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END, "
            "  CASE WHEN t.typtype = 'd' THEN bet.typname ELSE et.typname END, a.attnum "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_type bt ON bt.oid = t.typbasetype "
            "LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' "
            "LEFT JOIN pg_type bet ON bet.oid = bt.typelem AND bt.typcategory = 'A' "
            "WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p') ORDER BY a.attnum",
            {"s": schema, "t": name})
        if not rows:
            return None
        cols = [Column(_s(r[0]), _s(r[1]), None if r[2] is None else _s(r[2])) for r in rows]
        pk = db.query("SELECT i.indkey::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                      "JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = :s AND c.relname = :t AND i.indisprimary", {"s": schema, "t": name})
        by_num = {int(r[3]): _s(r[0]) for r in rows}
        key = tuple(by_num[int(k)] for k in _s(pk[0][0]).split() if int(k) in by_num) if pk else ()
        return TableInfo(table, cols, key)
    if d == "mysql":
        rows = db.query(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_KEY, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION", {"s": schema, "t": name})
        if not rows:
            return None
        keyrows = db.query(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = :s "
            "AND TABLE_NAME = :t AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION", {"s": schema, "t": name})
        json_cols = set()
        if _is_mariadb(db):        # MariaDB: JSON is LONGTEXT with CHECK (json_valid(col)); MySQL has a json type
            for (cname, clause) in db.query(
                    "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                    "WHERE CONSTRAINT_SCHEMA = :s AND TABLE_NAME = :t", {"s": schema, "t": name}):
                m = re.search(r"json_valid\(`?([^`)]+)`?\)", str(clause), re.I)
                if m:
                    json_cols.add(m.group(1))
        cols = [Column(_s(r[0]), "json" if _s(r[0]) in json_cols else _s(r[1]).lower()) for r in rows]
        return TableInfo(table, cols, tuple(_s(r[0]) for r in keyrows))
    if d == "sqlite":
        rows = db.query(f"PRAGMA {quote(d, schema)}.table_info({quote(d, name)})")
        if not rows:
            return None
        cols = []
        for r in rows:
            decl = (r[2] or "").lower()
            m = re.search(r"\(\s*\d+\s*,\s*(\d+)\s*\)", decl)
            cols.append(Column(r[1], decl, scale=int(m.group(1)) if m else None))
        key = tuple(r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5]))
        return TableInfo(table, cols, key)
    if d == "mssql":
        rows = db.query(
            "SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = :s "
            "AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION", {"s": schema, "t": name})
        if not rows:
            return None
        keyrows = db.query(
            "SELECT k.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS c "
            "JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE k ON k.CONSTRAINT_NAME = c.CONSTRAINT_NAME "
            "AND k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME "
            "WHERE c.CONSTRAINT_TYPE = 'PRIMARY KEY' AND c.TABLE_SCHEMA = :s AND c.TABLE_NAME = :t "
            "ORDER BY k.ORDINAL_POSITION", {"s": schema, "t": name})
        return TableInfo(table, [Column(r[0], r[1].lower()) for r in rows], tuple(r[0] for r in keyrows))
    raise ValueError(d)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def installed_version(db: Db, names: Names) -> int:
    """The highest version recorded in the version table; 0 when capture is not installed."""
    if not _table_exists(db, names.schema, names.version_table):
        return 0
    rows = db.query(f"SELECT MAX(version) FROM {names.qversion}")
    return int(rows[0][0] or 0) if rows else 0


def _table_exists(db: Db, schema: str, name: str) -> bool:
    d = db.dialect
    if d == "postgresql":
        sql = ("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE n.nspname = :s AND c.relname = :t")
    elif d == "sqlite":
        return bool(db.query(f"SELECT 1 FROM {quote(d, schema)}.sqlite_master WHERE type = 'table' AND name = :t",
                             {"t": name}))
    else:
        sql = "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t"
    return bool(db.query(sql, {"s": schema, "t": name}))


def installed_triggers(db: Db, names: Names) -> dict[tuple[str, str], str]:
    """(table "schema.table", trigger name) -> definition text, for every trigger this capture installed
    (found by name and by what it writes to), including ones on tables no longer in the config."""
    d = db.dialect
    out: dict[tuple[str, str], str] = {}
    if d == "postgresql":
        for s, t, name, ddl in db.query(
                "SELECT n.nspname, c.relname, tg.tgname, pg_get_triggerdef(tg.oid) FROM pg_trigger tg "
                "JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace "
                "WHERE NOT tg.tgisinternal AND p.proname = :fn AND pn.nspname = :s",
                {"fn": names.fn, "s": names.schema}):
            out[(f"{s}.{t}", name)] = ddl
    elif d == "mysql":
        for s, t, name, body in db.query(
                "SELECT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_STATEMENT "
                "FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE :p",
                {"p": names.cl.replace("_", "\\_") + "\\_%"}):
            if names.qcl in _s(body):        # ours: it writes to this schema's changelog, not another's
                out[(f"{_s(s)}.{_s(t)}", _s(name))] = _s(body)
    elif d == "sqlite":
        for name, t, sql in db.query(
                f"SELECT name, tbl_name, sql FROM {quote(d, names.schema)}.sqlite_master "
                f"WHERE type = 'trigger' AND name LIKE :p ESCAPE '\\'",
                {"p": names.cl.replace("_", "\\_") + "\\_%"}):
            if names.cl in (sql or ""):
                out[(f"{names.schema}.{t}", name)] = sql
    elif d == "mssql":
        for s, t, name, body in db.query(
                "SELECT OBJECT_SCHEMA_NAME(tr.parent_id), OBJECT_NAME(tr.parent_id), tr.name, m.definition "
                "FROM sys.triggers tr JOIN sys.sql_modules m ON m.object_id = tr.object_id "
                "WHERE tr.name LIKE :p", {"p": names.cl.replace("_", "[_]") + "[_]%"}):
            if names.qcl in (body or ""):
                out[(f"{s}.{t}", name)] = body
    return out


def _norm_sql(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def _trigger_body(dialect: str, stmt: str) -> str:
    """The part of a CREATE TRIGGER statement that the catalog keeps as the trigger's action."""
    if dialect == "mysql":
        m = re.search(r"(?is)\bFOR\s+EACH\s+ROW\s+(.*)$", stmt)
        return m.group(1) if m else stmt
    return stmt


# ================================================================== admin


def _catalog_read(fn: Callable, *args: Any) -> Any:
    """Run a catalog-reading step; a driver error becomes SourceUnavailable (the agent retries), an error
    of ours passes unchanged."""
    try:
        return fn(*args)
    except SourceError:
        raise
    except Exception as e:
        raise SourceUnavailable(f"cannot read the catalog: {_friendly(e)}") from None


def _seed() -> int:
    return int(time.time() * 1_000_000)


class TriggerAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.file = str(cfg.path)
        self.target = parse_dsn(cfg.source.dsn, self.file)
        self.dialect = self.target.dialect
        self.names = Names(self.dialect, _split(cfg.source.tables[0])[0], cfg.source.changelog_table)

    def _connect(self) -> Db:
        return Db(self.target)

    # -------------------------------------------------------------- planning

    def plan(self, db: Db, upto: int | None = None) -> tuple[list[tuple[str, str, int | None]], int, int]:
        """What `setup` would run: (statement, what it does, version it records), installed and target
        version. A catalog error becomes SourceUnavailable, so `run` retries instead of stopping."""
        return _catalog_read(self._plan, db, upto)

    def _plan(self, db: Db, upto: int | None = None) -> tuple[list[tuple[str, str, int | None]], int, int]:
        names, d = self.names, self.dialect
        have = installed_version(db, names)
        newest = newest_version(d)
        goal = newest if upto is None else min(upto, newest)
        stmts: list[tuple[str, str, int | None]] = []
        seed = _seed()
        after = max(have, goal)
        for v, vname, tmpl in migrations(d):
            if have < v <= goal:
                parts = render(tmpl, names.common(seed))
                for i, s in enumerate(parts):
                    stmts.append((s, f"version {v:03d} {vname}", v if i == len(parts) - 1 else None))
                stmts.append((self._record_sql(v, vname), f"version {v:03d} {vname}", None))
        if after == 0:
            return stmts, have, after
        installed = installed_triggers(db, names) if have else {}
        mariadb = d == "mysql" and _is_mariadb(db)
        tmpl = table_template(d, after)
        for table in self.cfg.source.tables:
            info = load_table(db, table)
            if info is None:
                raise SourceFatal(f"table {table} does not exist (source.tables in {self.file})")
            rendered = render(tmpl, table_values(names, info))
            wanted = trigger_names(names, table)
            current = {n: installed.get((table, n)) for n in wanted}
            if all(current.values()) and (d == "postgresql" or after == have and self._same(rendered, current)):
                continue
            stmts.extend(self._replace_triggers(db, info, rendered, current, mariadb))
        stale = [(t, n) for (t, n) in installed if t not in self.cfg.source.tables]
        for t, n in stale:
            stmts.append((self._drop_trigger_sql(t, n), f"drop trigger on {t} (no longer captured)", None))
        return stmts, have, after

    def _same(self, rendered: list[str], current: dict[str, str | None]) -> bool:
        bodies = sorted(_norm_sql(_trigger_body(self.dialect, s)) for s in rendered)
        have = sorted(_norm_sql(_trigger_body(self.dialect, b or "")) for b in current.values())
        return bodies == have

    def _replace_triggers(self, db: Db, info: TableInfo, rendered: list[str], current: dict[str, str | None],
                          mariadb: bool) -> list[tuple[str, str, int | None]]:
        d, t = self.dialect, info.name
        what = f"triggers on {t}" if not any(current.values()) else f"triggers on {t} (re-created)"
        out: list[tuple[str, str, int | None]] = []
        if d == "postgresql":
            return [(s, what, None) for s in rendered]
        if d == "mssql":                  # CREATE OR ALTER replaces in place
            return [(s, what, None) for s in rendered]
        if d == "mysql" and mariadb and any(current.values()):
            # CREATE OR REPLACE swaps a trigger atomically: no write slips through uncaptured
            return [(re.sub(r"(?i)^CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", s), what, None) for s in rendered]
        drops = [self._drop_trigger_sql(t, n) for n, body in current.items() if body]
        if d == "mysql" and drops:
            # MySQL has no CREATE OR REPLACE TRIGGER: hold the table's write lock while swapping
            qt = self.names.q(*_split(t))
            out.append((f"LOCK TABLES {qt} WRITE, {self.names.qcl} WRITE", what, None))
            out += [(s, what, None) for s in drops + rendered]
            out.append(("UNLOCK TABLES", what, None))
            return out
        return [(s, what, None) for s in drops + rendered]       # sqlite: inside the setup transaction

    def _drop_trigger_sql(self, table: str, trigger: str) -> str:
        d = self.dialect
        schema, name = _split(table)
        if d == "postgresql":
            return f"DROP TRIGGER IF EXISTS {quote(d, trigger)} ON {self.names.q(schema, name)}"
        if d == "sqlite":
            return f"DROP TRIGGER IF EXISTS {quote(d, schema)}.{quote(d, trigger)}"
        return f"DROP TRIGGER IF EXISTS {self.names.q(schema, trigger)}"

    def _record_sql(self, v: int, name: str) -> str:
        now = _dt.datetime.now(_dt.timezone.utc)
        if self.dialect == "postgresql":
            ts = "now()"
        elif self.dialect == "sqlite":
            ts = literal("sqlite", now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        elif self.dialect == "mysql":
            ts = "UTC_TIMESTAMP(6)"
        else:
            ts = "SYSUTCDATETIME()"
        return (f"INSERT INTO {self.names.qversion} (version, name, applied_at) "
                f"VALUES ({v}, {literal(self.dialect, name)}, {ts})")

    def _transactional(self) -> bool:
        return self.dialect in ("postgresql", "sqlite", "mssql")

    # -------------------------------------------------------------- CaptureAdmin

    def setup_sql(self) -> list[str]:
        db = self._connect()
        try:
            stmts, have, after = self.plan(db)
        finally:
            db.close()
        return [s for s, _, _ in stmts]

    def setup(self, upto: int | None = None) -> list[str]:
        db = self._connect()
        try:
            stmts, have, after = self.plan(db, upto)
            if not stmts:
                return [f"trigger capture is up to date (version {have:03d}, {len(self.cfg.source.tables)} "
                        f"table(s)); nothing to do"]
            done: list[str] = []
            tx = self._transactional()
            if tx:
                db.begin()
            try:
                for sql, what, _ in stmts:
                    db.script(sql)
                    if not done or done[-1] != what:
                        done.append(what)
                if tx:
                    db.commit()
            except Exception as e:
                if tx:
                    db.rollback()
                else:
                    try:
                        db.script("UNLOCK TABLES")
                    except Exception:
                        pass
                raise SourceFatal(f"setup failed at {what}: {_friendly(e)}") from None
            lines = [f"applied: {w}" for w in done]
            if after != have:
                lines.append(f"trigger capture at version {after:03d} (was "
                             f"{'not installed' if not have else f'{have:03d}'})")
            return lines
        finally:
            db.close()

    def teardown_sql(self) -> list[str]:
        db = self._connect()
        try:
            return self._teardown_plan(db)
        finally:
            db.close()

    def _teardown_plan(self, db: Db) -> list[str]:
        return _catalog_read(self._teardown_stmts, db)

    def _teardown_stmts(self, db: Db) -> list[str]:
        names, d = self.names, self.dialect
        stmts = []
        for (table, trig) in installed_triggers(db, names):
            stmts.append(self._drop_trigger_sql(table, trig))
        have = installed_version(db, names) or _table_exists(db, names.schema, names.cl)
        if have:
            stmts += render(_file(d, "teardown.sql"), names.common())
        return stmts

    def teardown(self) -> list[str]:
        db = self._connect()
        try:
            stmts = self._teardown_plan(db)
            if not stmts:
                return ["nothing to remove: no capture triggers or changelog found"]
            tx = self._transactional()
            if tx:
                db.begin()
            try:
                for s in stmts:
                    db.script(s)
                if tx:
                    db.commit()
            except Exception as e:
                if tx:
                    db.rollback()
                raise SourceFatal(f"teardown failed: {_friendly(e)}") from None
            ntrig = sum(1 for s in stmts if s.upper().startswith("DROP TRIGGER"))
            return [f"removed {ntrig} trigger(s), the changelog {self.names.cl} and its version table"]
        finally:
            db.close()

    def check(self) -> list[CheckItem]:
        items: list[CheckItem] = []
        try:
            db = self._connect()
        except SourceError as e:
            items.append(CheckItem("connect", False, redact(str(e)),
                                   "check source.dsn: host, port, database, user; the password comes from "
                                   "the environment variable named in the dsn"))
            return items
        try:
            self._checks(db, items)
        except Exception as e:
            items.append(CheckItem("catalog", False, f"cannot read the catalog: {_friendly(e)}",
                                   "the agent's user needs to read the catalog of the captured tables"))
        finally:
            db.close()
        return items

    def _checks(self, db: Db, items: list[CheckItem]) -> None:
        names, d = self.names, self.dialect
        version = self._server_version(db)
        items.append(CheckItem("connect", True, f"{d} {version}".strip()))
        have, newest = installed_version(db, names), newest_version(d)
        if have == 0:
            items.append(CheckItem("changelog", False, f"{names.schema}.{names.cl} is not installed",
                                   "run `cdc-agent setup` (or review it first: `cdc-agent setup --dry-run`)"))
        elif have < newest:
            items.append(CheckItem("changelog", False, f"installed version {have:03d}, this agent brings {newest:03d}",
                                   "run `cdc-agent setup` to upgrade (the agent also does it at start when "
                                   "it has the privileges)", warning=True))
        else:
            items.append(CheckItem("changelog", True, f"{names.schema}.{names.cl} version {have:03d} (newest)"))
        self._privileges(db, items, have)
        installed = installed_triggers(db, names) if have else {}
        tmpl = table_template(d, max(have, 1))
        for table in self.cfg.source.tables:
            info = load_table(db, table)
            if info is None:
                items.append(CheckItem(f"table {table}", False, "does not exist",
                                       f"create it, or remove it from source.tables in {self.file}"))
                continue
            if not info.key:
                rule_keys = any(r.key for r in self.cfg.events if r.table == table)
                items.append(CheckItem(f"table {table}", False, "has no primary key: events have no stable key"
                                       + ("" if d != "mssql" else " and updates cannot be paired"),
                                       f"ALTER TABLE {table} ADD PRIMARY KEY (...)",
                                       warning=rule_keys and d != "mssql"))
            wanted = trigger_names(names, table)
            current = {n: installed.get((table, n)) for n in wanted}
            if not all(current.values()):
                items.append(CheckItem(f"triggers {table}", False, "not installed", "run `cdc-agent setup`"))
            elif d != "postgresql" and not self._same(render(tmpl, table_values(names, info)), current):
                items.append(CheckItem(f"triggers {table}", False,
                                       "installed, but written for other columns or an older version: changes "
                                       "to new columns are not captured", "run `cdc-agent setup` (it re-creates "
                                       "them)"))
            else:
                items.append(CheckItem(f"table {table}", True, f"primary key ({', '.join(info.key)}), triggers "
                                                               f"installed" if info.key else "triggers installed"))
        if d == "postgresql":
            on = _s(db.query("SELECT current_setting('track_commit_timestamp')")[0][0]) == "on"
            items.append(CheckItem("commit time", on, "track_commit_timestamp = on: events carry the commit time"
                                   if on else "track_commit_timestamp = off: events carry the time of the change "
                                   "inside its transaction, not its commit time",
                                   "ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL",
                                   warning=True))
        if d == "sqlite":
            mode = _s(db.query("PRAGMA journal_mode")[0][0]).lower()
            items.append(CheckItem("journal mode", mode == "wal", f"journal_mode = {mode}",
                                   "PRAGMA journal_mode = WAL; (readers and the writer then do not block each "
                                   "other; the agent's reads and deletes otherwise wait for the ERP's writes)",
                                   warning=True))

    def _server_version(self, db: Db) -> str:
        try:
            if self.dialect == "sqlite":
                return _s(db.query("SELECT sqlite_version()")[0][0])
            if self.dialect == "mssql":
                return _s(db.query("SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(64))")[0][0])
            if self.dialect == "postgresql":
                return _s(db.query("SHOW server_version")[0][0])
            return _s(db.query("SELECT VERSION()")[0][0])
        except Exception:
            return ""

    def _privileges(self, db: Db, items: list[CheckItem], have: int) -> None:
        d, names = self.dialect, self.names
        missing: list[str] = []
        if d == "postgresql":
            for table in self.cfg.source.tables:
                s, t = _split(table)
                r = db.query("SELECT has_table_privilege(c.oid, 'TRIGGER') FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t", {"s": s, "t": t})
                if r and not _truthy(r[0][0]):
                    missing.append(f"TRIGGER on {table}")
            if not have:
                r = db.query("SELECT has_schema_privilege(:s, 'CREATE')", {"s": names.schema})
                if r and not _truthy(r[0][0]):
                    missing.append(f"CREATE on schema {names.schema}")
            else:
                r = db.query("SELECT has_table_privilege(:t, 'SELECT,DELETE')",
                             {"t": f"{quote(d, names.schema)}.{quote(d, names.cl)}"})
                if r and not _truthy(r[0][0]):
                    missing.append(f"SELECT, DELETE on {names.schema}.{names.cl}")
            fix = "\n".join(f"GRANT {m.replace(' on schema ', ' ON SCHEMA ').replace(' on ', ' ON ')} "
                            f"TO <agent user>;" for m in missing)
            items.append(CheckItem("privileges", not missing, "TRIGGER on the tables, CREATE in the schema "
                                   "(or own them)" if not missing else "missing: " + ", ".join(missing),
                                   fix + "\n(or run `cdc-agent setup` once as the tables' owner)" if missing else ""))
        elif d == "mysql":
            grants = " ".join(_s(r[0]) for r in db.query("SHOW GRANTS")).upper()
            allp = "ALL PRIVILEGES" in grants
            for p in ("TRIGGER", "CREATE", "SELECT", "INSERT", "DELETE"):
                if not allp and p not in grants:
                    missing.append(p)
            items.append(CheckItem("privileges", not missing,
                                   "TRIGGER, CREATE, SELECT, INSERT, DELETE" if not missing else
                                   "missing (in SHOW GRANTS): " + ", ".join(missing),
                                   f"GRANT {', '.join(missing)} ON {names.schema}.* TO <agent user>;" if missing else ""))
            logbin = db.query("SELECT @@log_bin, @@log_bin_trust_function_creators")[0]
            if int(logbin[0] or 0) and not int(logbin[1] or 0) and not allp and "SUPER" not in grants:
                items.append(CheckItem("trigger creation with binary logging", False,
                                       "log_bin is on and log_bin_trust_function_creators is off: creating "
                                       "triggers needs SUPER", "SET GLOBAL log_bin_trust_function_creators = 1; "
                                       "(or run `cdc-agent setup` as a user with SUPER)"))
        elif d == "sqlite":
            p = self.target.sqlite_path
            import os
            ok = p in (":memory:", "") or os.access(p, os.W_OK)
            items.append(CheckItem("privileges", ok, "database file is writable" if ok else f"{p} is read-only",
                                   f"the agent's OS user must be able to write {p} (and its folder, for the WAL)"))


# ================================================================== values


class _RawNum(str):
    """A JSON number with a fraction or exponent, kept as its exact text until the column type says
    whether it is an exact numeric (stays text) or a float."""


def _loads(text: str | bytes | None) -> Any:
    if text is None:
        return None
    return json.loads(text, parse_float=_RawNum)


def _unraw(v: Any) -> Any:
    t = type(v)
    if t is _RawNum:
        return float(v)
    if t is dict:
        return {k: _unraw(x) for k, x in v.items()}
    if t is list:
        return [_unraw(x) for x in v]
    return v


_UTC = _dt.timezone.utc


_TS_UTC_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:\+00(?::?00)?|Z)$")


def _utc_z(s: str) -> str:
    """An ISO timestamp with an offset -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ'; unparseable (infinity, BC) as is."""
    m = _TS_UTC_RE.match(s)
    if m:                      # already UTC (the usual server setting): no date arithmetic
        return f"{m.group(1)}.{(m.group(2) or '').ljust(6, '0')}Z"
    try:
        # 7 fractional digits (SQL Server) are more than Python parses
        s2 = re.sub(r"(\.\d{6})\d+", r"\1", s)
        dt = _dt.datetime.fromisoformat(s2)
    except ValueError:
        return s
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return dt.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _float(v: Any) -> Any:
    return v if type(v) is str else float(v)         # "NaN" / "Infinity" / "-Infinity" stay strings


def _numeric(v: Any) -> Any:
    return str(v)


def _arr(fn: Callable) -> Callable:
    def conv(v: Any) -> Any:
        if type(v) is list:
            return [None if x is None else conv(x) for x in v]
        return fn(v)
    return conv


_PG_CONV: dict[str, Callable] = {
    "numeric": _numeric, "float4": _float, "float8": _float, "timestamptz": lambda v: _utc_z(v),
    "timestamp": frac6, "time": frac6, "interval": interval_text_to_iso,
    "bytea": lambda v: bytea_to_base64(v.encode()),
    "json": _unraw, "jsonb": _unraw,
}
_PG_PLAIN = {"int2", "int4", "int8", "oid", "bool", "text", "varchar", "bpchar", "char", "name", "date", "uuid",
             "inet", "cidr", "macaddr", "macaddr8", "money", "bit", "varbit", "xml", "citext", "timetz"}


def _pg_converter(c: Column) -> Callable | None:
    if c.elem:
        fn = _PG_CONV.get(c.elem)
        return _arr(fn) if fn else (None if c.elem in _PG_PLAIN else _unraw)
    fn = _PG_CONV.get(c.type)
    if fn:
        return fn
    return None if c.type in _PG_PLAIN else _unraw


def _my_timestamp(v: str) -> str:
    if v in ("0", "0.000000") or v.startswith("0."):
        return "0000-00-00T00:00:00.000000Z"
    d = Decimal(v)
    sec = int(d)
    return format_timestamp(sec, int((d - sec) * 1_000_000))


def _my_json(v: Any) -> Any:
    if type(v) is str:
        try:
            return _unraw(_loads(v))
        except ValueError:
            return v
    return _unraw(v)


def _my_converter(c: Column) -> Callable | None:
    from ..binlog import _float32
    t = c.type
    if t in _MY_BINARY:
        return lambda v: _b64(bytes.fromhex(v))
    if t == "float":
        return lambda v: _float32(float(v))
    if t in ("double", "real"):
        return lambda v: float(v)
    if t == "datetime":
        return lambda v: frac6(v.replace(" ", "T", 1))
    if t == "time":
        return frac6
    if t == "timestamp":
        return _my_timestamp
    if t == "json":
        return _my_json
    return None


def _lite_generic(v: Any) -> Any:
    if type(v) is dict and len(v) == 1:
        if "$b" in v:
            return _b64(bytes.fromhex(v["$b"]))
        if "$r" in v:
            return float(v["$r"])
    return v


_LITE_TS_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d")


def _lite_converter(c: Column) -> Callable:
    t = c.type
    if "dec" in t or "numeric" in t:
        scale = c.scale

        def num(v: Any) -> Any:
            v = _lite_generic(v)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return v
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                return v
            d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
            if scale is not None:
                try:
                    d = d.quantize(Decimal(1).scaleb(-scale))
                except InvalidOperation:
                    pass
            return str(d)
        return num
    if "bool" in t:
        return lambda v: bool(v) if type(v) is int else _lite_generic(v)
    if "datetime" in t or "timestamp" in t:
        return lambda v: v.replace(" ", "T", 1) if type(v) is str and _LITE_TS_RE.match(v) else _lite_generic(v)
    if "json" in t:
        return lambda v: _my_json(v) if type(v) is str else _lite_generic(v)
    return _lite_generic


def _ms_converter(c: Column) -> Callable | None:
    from ..binlog import _float32
    t = c.type
    if t == "real":
        return lambda v: _float32(float(v))
    if t == "float":
        return lambda v: float(v)
    if t in ("datetime2", "datetime", "smalldatetime"):
        return lambda v: frac6(re.sub(r"(\.\d{6})\d+", r"\1", v))
    if t == "time":
        return lambda v: frac6(re.sub(r"(\.\d{6})\d+", r"\1", v))
    if t == "datetimeoffset":
        return _utc_z
    if t in ("geometry", "geography"):
        return None          # STAsBinary() is varbinary: FOR JSON writes it as base64 already
    return None


def converters(dialect: str, info: TableInfo) -> list[tuple[str, Callable]]:
    make = {"postgresql": _pg_converter, "mysql": _my_converter, "sqlite": _lite_converter,
            "mssql": _ms_converter}[dialect]
    out = []
    for c in info.columns:
        fn = make(c)
        if fn is not None:
            out.append((c.name, fn))
    return out


# ================================================================== source


@dataclass
class _Table:
    info: TableInfo
    convs: list[tuple[str, Callable]]
    names: frozenset = field(default_factory=frozenset)
    unavailable: tuple[str, ...] = ()



class TriggerSource:
    """Reads the changelog (see the module docstring for the no-missed-change argument)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.file = str(cfg.path)
        self.target = parse_dsn(cfg.source.dsn, self.file)
        self.dialect = self.target.dialect
        self.names = Names(self.dialect, _split(cfg.source.tables[0])[0], cfg.source.changelog_table)
        self.tables = set(cfg.source.tables)
        self.origin = f"cdc-agent/{cfg.agent.name}"       # the agent's own writes carry this marker
        self.poll = cfg.source.poll_interval_seconds
        self.max_wait = cfg.source.max_wait_seconds
        self.db: Db | None = None
        self._tables: dict[str, _Table] = {}
        self._gone: set[str] = set()        # captured tables the catalog no longer has
        self._due = threading.Event()
        self._scheduler = None
        self._more = True
        self._version = 0
        self._status = SourceStatus()
        self._commit_ts = False
        # postgres windows
        self._win_t = 0
        self._base = PG_EMPTY_SNAPSHOT       # upper snapshot of the last finished window
        self._lo: str | None = None          # open window: (lo, hi], last id read
        self._hi: str | None = None
        self._last = 0
        # gap tracking
        self._hw: int | None = None
        self._replay_upto = 0
        self._first_seen: dict[int, float] = {}
        self._pending: list[tuple[str, list[int]]] = []     # (checkpoint, changelog ids to delete at confirm)
        self._markers: set[int] = set()
        self.skipped_own = 0        # changes written by this agent's own sessions (origin marker), not emitted
        self.late = 0               # gap tracking: rows that committed after their gap had timed out
        self.gap_waits = 0          # gap tracking: reads that held rows back behind a missing id

    # -------------------------------------------------------------- lifecycle

    def start(self, checkpoint: str | None) -> None:
        self.db = Db(self.target, "source database")
        try:
            self._version = installed_version(self.db, self.names)
            if self.dialect == "postgresql":
                self._commit_ts = _s(self.db.query("SELECT current_setting('track_commit_timestamp')")[0][0]) == "on"
        except Exception as e:
            self.close()
            raise self._error(e)
        if self._version == 0:
            self.close()
            raise SourceFatal(f"trigger capture is not installed in {self.dialect} database (no "
                              f"{self.names.schema}.{self.names.cl}): run `cdc-agent setup -c {self.file}`")
        self._restore(checkpoint)
        if checkpoint and self.dialect == "postgresql":
            # the spool holds everything up to the checkpoint, but the agent may have died before deleting
            # it; windows already passed are never read again, so delete now or those rows stay forever
            try:
                self._confirm_pg(checkpoint)
            except Exception as e:
                self.close()
                raise self._error(e)
        self._pending.clear()
        self._more = True
        self._due.set()
        from apscheduler.schedulers.background import BackgroundScheduler
        self._scheduler = BackgroundScheduler(daemon=True)
        self._scheduler.add_job(self._due.set, "interval", seconds=self.poll, id="poll",
                                max_instances=1, coalesce=True)
        self._scheduler.start()
        self._status.connected = True
        self._status.error = None

    def _restore(self, checkpoint: str | None) -> None:
        if self.dialect == "postgresql":
            self._win_t, self._base, self._lo, self._hi, self._last = 0, PG_EMPTY_SNAPSHOT, None, None, 0
            if checkpoint:
                p = checkpoint.split("/")
                try:
                    if p[0] == "c" and len(p) == 3:
                        self._win_t, self._base = int(p[1]), p[2]
                    elif p[0] == "o" and len(p) == 5:
                        self._win_t, self._last, self._lo, self._hi = int(p[1]), int(p[2]), p[3], p[4]
                        self._base = self._lo
                    else:
                        raise ValueError
                except ValueError:
                    raise SourceFatal(f"checkpoint {checkpoint!r} is not a trigger-capture checkpoint for "
                                      "PostgreSQL (was the source kind changed? reset the agent's state_dir)")
        else:
            self._hw = None
            if checkpoint:
                p = checkpoint.split("/")
                if p[0] != "g" or len(p) != 2 or not p[1].isdigit():
                    raise SourceFatal(f"checkpoint {checkpoint!r} is not a trigger-capture checkpoint for "
                                      f"{self.dialect} (was the source kind changed? reset the agent's state_dir)")
                self._hw = int(p[1])
            self._replay_upto = self._hw or 0
            self._first_seen.clear()

    def close(self) -> None:
        if self._scheduler is not None:
            try:
                self._scheduler.shutdown(wait=False)
            except Exception:
                pass
            self._scheduler = None
        if self.db is not None:
            self.db.close()
            self.db = None
        self._status.connected = False

    def status(self) -> SourceStatus:
        return self._status

    def _error(self, e: Exception) -> SourceError:
        if isinstance(e, SourceError):
            return e
        msg = _friendly(e)
        if _MISSING_RE.search(msg):
            return SourceFatal(f"changelog query failed: {msg} (trigger capture not installed or out of date? "
                               f"run `cdc-agent setup -c {self.file}`)")
        self._status.connected = False
        self._status.error = msg
        return SourceUnavailable(f"{self.dialect} source: {msg}")

    # -------------------------------------------------------------- reading

    def read(self, max_changes: int, max_wait: float) -> SourceBatch:
        if self.db is None:
            raise SourceUnavailable("source is not started")
        if not self._more:
            if not self._due.wait(max_wait):
                return SourceBatch()
        self._due.clear()
        try:
            if self.dialect == "postgresql":
                return self._read_pg(max_changes)
            return self._read_gaps(max_changes)
        except Exception as e:
            raise self._error(e) from None

    def confirm(self, checkpoint: str) -> None:
        if self.db is None:
            return
        try:
            if self.dialect == "postgresql":
                self._confirm_pg(checkpoint)
            else:
                self._confirm_gaps(checkpoint)
        except Exception as e:
            raise self._error(e) from None

    # -------------------------------------------------------------- table shapes

    def _table(self, name: str, row_keys: Any = None) -> _Table | None:
        """The table's columns, types and key, from the catalog; read again when a row shows a column the
        cached shape does not have (the table was altered)."""
        t = self._tables.get(name)
        if t is not None and (row_keys is None or row_keys <= t.names):
            return t
        if t is None and name in self._gone:
            return None
        info = load_table(self.db, name)
        if info is None:
            self._gone.add(name)          # dropped: look no more (until a restart), not once per row
            log.warning("changelog rows for %s: the table no longer exists; its columns are passed on "
                        "without type conversion", name)
            return None
        t = _Table(info, converters(self.dialect, info), frozenset(c.name for c in info.columns),
                   tuple(c.name for c in info.columns if self.dialect == "mssql" and c.type in _MS_SKIP))
        if row_keys is not None and not row_keys <= t.names:
            t.names = t.names | frozenset(row_keys)     # a column the catalog no longer has: do not look again per row
        self._tables[name] = t
        return t

    def _change(self, tbl: str, op: str, before: str | None, after: str | None, position: str,
                commit_ts: float, txid: str | None) -> RowChange | None:
        b, a = _loads(before), _loads(after)
        t = self._table(tbl, (a or b or {}).keys())      # a keys view compares like a set, without building one
        if t is None:
            conv, key, unavailable = [], (), ()
        else:
            conv, key, unavailable = t.convs, t.info.key, t.unavailable
        for img in (b, a):
            if img:
                for col, fn in conv:
                    v = img.get(col)
                    if v is not None:
                        try:
                            img[col] = fn(v)
                        except (ValueError, TypeError, KeyError, ArithmeticError) as e:
                            # a bug or a value form we do not know: stop at this row (it stays in the
                            # changelog) with where and what, rather than retry as if the database were down
                            raise SourceFatal(f"changelog row {position} of {tbl}: cannot convert column {col} "
                                              f"value {str(v)[:80]!r}: {e}") from None
        return RowChange(table=tbl, op=OPS[op.strip()], before=b, after=a, position=position,
                         commit_time=_ts_text(commit_ts), commit_ts=commit_ts, txid=txid,
                         key_columns=key, unavailable=unavailable)

    # -------------------------------------------------------------- PostgreSQL: snapshot windows

    def _pg_select(self) -> str:
        cts = ("EXTRACT(EPOCH FROM pg_xact_commit_timestamp(((txid % 4294967296)::text)::xid))::float8"
               if self._commit_ts else "NULL::float8")
        origin = "origin" if self._version >= 2 else "NULL::text"
        return (f"SELECT id, txid, tbl, op, before::text, after::text, {origin}, "
                f"EXTRACT(EPOCH FROM created)::float8, {cts} FROM {self.names.qcl} ")

    def _read_pg(self, n: int) -> SourceBatch:
        db, cl = self.db, self.names.qcl
        if self._hi is None:
            # open the next window: (base, now]. Only when it holds something, so an idle database
            # does not advance windows (and positions) for nothing.
            snap, has = db.query(
                "WITH s AS (SELECT txid_current_snapshot() AS snap) "
                f"SELECT snap::text, EXISTS (SELECT 1 FROM {cl} WHERE "
                "  txid >= txid_snapshot_xmin(CAST(:base AS txid_snapshot)) AND txid < txid_snapshot_xmax(snap) "
                "  AND txid_visible_in_snapshot(txid, snap) "
                "  AND NOT txid_visible_in_snapshot(txid, CAST(:base AS txid_snapshot))) FROM s",
                {"base": self._base})[0]
            if not _truthy(has):
                self._more = False
                self._status.lag_seconds = 0.0
                return SourceBatch()
            self._lo, self._hi, self._last = self._base, _s(snap), 0
            self._win_t += 1
        rows = db.query(
            self._pg_select() +
            "WHERE txid >= txid_snapshot_xmin(CAST(:lo AS txid_snapshot)) "
            "  AND txid < txid_snapshot_xmax(CAST(:hi AS txid_snapshot)) "
            "  AND txid_visible_in_snapshot(txid, CAST(:hi AS txid_snapshot)) "
            "  AND NOT txid_visible_in_snapshot(txid, CAST(:lo AS txid_snapshot)) "
            "  AND id > :last ORDER BY id LIMIT :n",
            {"lo": self._lo, "hi": self._hi, "last": self._last, "n": n})
        changes = []
        wt = self._win_t
        for rid, txid, tbl, op, before, after, origin, created, cts in rows:
            self._last = rid
            if origin is not None and origin == self.origin:
                self.skipped_own += 1
                continue
            if tbl not in self.tables:
                continue
            ch = self._change(tbl, op, before, after, f"{wt:016x}:{rid:016x}",
                              cts if cts is not None else created, str(txid))
            if ch is not None:
                changes.append(ch)
        if len(rows) < n:
            # the window is exhausted: its upper snapshot is the next window's lower bound
            self._base, self._lo, self._hi = self._hi, None, None
            checkpoint = f"c/{wt}/{self._base}"
            self._more = True             # look for the next window at once
        else:
            checkpoint = f"o/{wt}/{self._last}/{self._lo}/{self._hi}"
            self._more = True
        self._track(changes, more=len(rows) == n)
        return SourceBatch(changes, checkpoint)

    def _confirm_pg(self, checkpoint: str) -> None:
        p = checkpoint.split("/")
        cl = self.names.qcl
        if p[0] == "c":
            self.db.execute(f"DELETE FROM {cl} WHERE txid < txid_snapshot_xmax(CAST(:b AS txid_snapshot)) "
                            "AND txid_visible_in_snapshot(txid, CAST(:b AS txid_snapshot))", {"b": p[2]})
        else:
            last, lo, hi = int(p[2]), p[3], p[4]
            self.db.execute(
                f"DELETE FROM {cl} WHERE txid < txid_snapshot_xmax(CAST(:hi AS txid_snapshot)) AND ("
                "  txid_visible_in_snapshot(txid, CAST(:lo AS txid_snapshot)) OR "
                "  (id <= :last AND txid_visible_in_snapshot(txid, CAST(:hi AS txid_snapshot))))",
                {"lo": lo, "hi": hi, "last": last})

    # -------------------------------------------------------------- other engines: gap tracking

    def _gap_select(self, n: int) -> str:
        origin = "origin" if self._version >= 2 else "NULL"
        if self.dialect == "mysql":
            # session_id marks the writing session, not its transaction: MySQL gives a trigger no
            # transaction id, so changes carry no txid there
            created = "CAST(created AS CHAR)"
            txid = "NULL"
        elif self.dialect == "mssql":
            created = "CONVERT(varchar(40), created, 126)"
            txid = "txid"
        else:
            created, txid = "created", "NULL"
        cols = f"id, {txid}, tbl, op, {'`before`' if self.dialect == 'mysql' else quote(self.dialect, 'before')}, " \
               f"{'`after`' if self.dialect == 'mysql' else quote(self.dialect, 'after')}, {origin}, {created}"
        if self.dialect == "mssql":
            return f"SELECT TOP ({int(n)}) {cols} FROM {self.names.qcl} ORDER BY id"
        return f"SELECT {cols} FROM {self.names.qcl} ORDER BY id LIMIT {int(n)}"

    def _read_gaps(self, n: int) -> SourceBatch:
        rows = self.db.query(self._gap_select(n))
        now = time.monotonic()
        hw = self._hw
        changes: list[RowChange] = []
        ids: list[int] = []
        held = False
        for rid, txid, tbl, op, before, after, origin, created in rows:
            rid = int(rid)
            op = _s(op)
            if op == "S" and hw is not None and rid <= hw:
                self._markers.add(rid)      # a marker already passed: deleted with the next confirm
                continue
            if hw is not None and rid <= hw:
                # below the high-water mark: spooled before a restart and not yet deleted (a replay, same
                # position, the spool drops it), or a transaction that committed after its gap timed out
                if rid > self._replay_upto:
                    self.late += 1
                    log.warning("changelog id %d committed more than %.0fs after later changes: delivered "
                                "now, after them (its position is lower)", rid, self.max_wait)
            elif hw is not None and rid != hw + 1:
                since = self._first_seen.setdefault(rid, now)
                if now - since < self.max_wait:
                    held = True
                    self.gap_waits += 1
                    break              # hold the rows after the gap: it may still be filled
                log.info("changelog ids %d..%d never appeared within %.0fs (rolled back, or a transaction "
                         "still open); going on", hw + 1, rid - 1, self.max_wait)
                hw = rid
            else:
                hw = rid
            ids.append(rid)
            if op == "S":          # a marker (the start, or SQLite's kept highest id): anchors the ids only
                continue
            if origin is not None and _s(origin) == self.origin:
                self.skipped_own += 1
                continue
            tbl = _s(tbl)
            if tbl not in self.tables:
                continue
            ts = _created_epoch(self.dialect, created)
            ch = self._change(tbl, op, _text(before), _text(after), f"{rid:020d}", ts,
                              None if txid is None else str(txid))
            if ch is not None:
                changes.append(ch)
        if hw is not None:
            for k in [k for k in self._first_seen if k <= hw]:
                del self._first_seen[k]
        self._more = len(rows) == n and not held
        if not ids:
            self._status.lag_seconds = 0.0 if not held else self._status.lag_seconds
            return SourceBatch()
        self._hw = hw
        checkpoint = f"g/{hw}"
        self._pending.append((checkpoint, ids))
        self._track(changes, more=self._more or held)
        return SourceBatch(changes, checkpoint)

    def _confirm_gaps(self, checkpoint: str) -> None:
        ids: list[int] = []
        while self._pending:
            cp, batch_ids = self._pending.pop(0)
            ids.extend(batch_ids)
            if cp == checkpoint and not any(c == checkpoint for c, _ in self._pending):
                break
        if self._markers:
            ids.extend(self._markers)
            self._markers.clear()
        if not ids:
            return
        if self.dialect == "sqlite":
            # the rowid is max + 1: keep the highest row (blanked into a marker) so that ids never go back
            top = self.db.query(f"SELECT MAX(id) FROM {self.names.qcl}")[0][0]
            if top in ids:
                ids = [i for i in ids if i != top]
                self.db.execute(f"UPDATE {self.names.qcl} SET op = 'S', tbl = '', before = NULL, after = NULL "
                                f"WHERE id = {int(top)} AND op <> 'S'")
            if not ids:
                return
        ids.sort()
        # contiguous runs as ranges: one short statement per run, not one bind per row
        runs: list[tuple[int, int]] = []
        for i in ids:
            if runs and i == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
        for k in range(0, len(runs), 200):
            cond = " OR ".join(f"id = {a}" if a == b else f"id BETWEEN {a} AND {b}" for a, b in runs[k:k + 200])
            self.db.execute(f"DELETE FROM {self.names.qcl} WHERE {cond}")

    # -------------------------------------------------------------- status

    def _track(self, changes: list[RowChange], more: bool) -> None:
        if changes:
            self._status.position = changes[-1].position
            self._status.lag_seconds = max(0.0, time.time() - changes[-1].commit_ts) if more else 0.0
        elif not more:
            self._status.lag_seconds = 0.0


def _truthy(v: Any) -> bool:
    """A boolean from any driver (the PostgreSQL ODBC driver returns booleans as '0' / '1')."""
    if isinstance(v, str):
        return v.strip().lower() in ("1", "t", "true", "y", "yes")
    return bool(v)


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return _s(v)


def _created_epoch(dialect: str, v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, _dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=_UTC)).timestamp()
    s = _s(v).replace(" ", "T")
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    dt = _dt.datetime.fromisoformat(s)
    return (dt if dt.tzinfo else dt.replace(tzinfo=_UTC)).timestamp()


def _ts_text(epoch: float) -> str:
    sec = int(epoch // 1)
    us = int(round((epoch - sec) * 1_000_000))
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return format_timestamp(sec, us)
