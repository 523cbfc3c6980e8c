"""The captured tables' real columns, read from the database's catalog, as JSON Schema value forms.

Each database type maps to the JSON form the agent emits for it (CONTRACT §3, docs/values.md): integers as
JSON integers with the type's range, numeric as a string with a pattern, timestamps as strings with a
pattern (RFC 3339 needs four-digit years; the expanded years and infinities of docs/values.md do not fit
`format: date-time`), json as any value, arrays as arrays of the element's form. Nullable columns add null.
Read once per `catalog` / `check` / `run` start; nothing here runs while capturing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from .errors import CdcError, SourceUnavailable

# ---------------------------------------------------------------- value forms (shared by both engines)

_FRAC6 = r"(\.[0-9]{6})?"
_YEAR = r"[+-]?[0-9]{4,}"
_INF = r"|-?infinity"
NUMERIC = {"type": "string", "pattern": r"^(-?[0-9]+(\.[0-9]+)?|NaN|-?Infinity)$"}
FLOAT = {"anyOf": [{"type": "number"}, {"enum": ["-Infinity", "Infinity", "NaN"]}]}
BASE64 = {"type": "string", "contentEncoding": "base64", "pattern": r"^[A-Za-z0-9+/]*={0,2}$"}
ANY_JSON: dict = {}
UUID = {"type": "string", "pattern": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}
PG_DATE = {"type": "string", "pattern": rf"^({_YEAR}-[0-9]{{2}}-[0-9]{{2}}{_INF})$"}
PG_TIME = {"type": "string", "pattern": rf"^[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}{_FRAC6}$"}
PG_TIMETZ = {"type": "string",
             "pattern": rf"^[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}{_FRAC6}[+-][0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}})?$"}
PG_TIMESTAMP = {"type": "string",
                "pattern": rf"^({_YEAR}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}{_FRAC6}{_INF})$"}
TIMESTAMPTZ = {"type": "string",
               "pattern": rf"^({_YEAR}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}\.[0-9]{{6}}Z{_INF})$"}
INTERVAL = {"type": "string", "pattern": r"^P(-?[0-9]+Y)?(-?[0-9]+M)?(-?[0-9]+W)?(-?[0-9]+D)?"
                                         r"(T(-?[0-9]+H)?(-?[0-9]+M)?(-?[0-9]+(\.[0-9]+)?S)?)?$"}
BITS = {"type": "string", "pattern": "^[01]*$"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
NUMBER = {"type": "number"}


def integer(lo: int, hi: int) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    form: dict[str, Any]      # the JSON Schema of a non-null value
    nullable: bool
    db_type: str              # as the database names it, for descriptions


@dataclass(frozen=True, slots=True)
class TableShape:
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]      # primary key columns, in key order

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def with_null(form: dict) -> dict:
    """The form plus JSON null, written so that two runs give the same schema text."""
    if "enum" in form and len(form) == 1:
        return {"enum": list(form["enum"]) + [None]}
    t = form.get("type")
    if isinstance(t, str) and "anyOf" not in form:
        return {**form, "type": [t, "null"]}
    if not form:
        return {}                         # any JSON value already includes null
    if set(form) == {"anyOf"}:
        return {"anyOf": list(form["anyOf"]) + [{"type": "null"}]}
    return {"anyOf": [form, {"type": "null"}]}


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


Query = Callable[[str], list[tuple]]


# ---------------------------------------------------------------- PostgreSQL

_PG_FORMS: dict[str, dict] = {
    "int2": integer(-2**15, 2**15 - 1), "int4": integer(-2**31, 2**31 - 1), "int8": integer(-2**63, 2**63 - 1),
    "oid": integer(0, 2**32 - 1), "xid": integer(0, 2**32 - 1), "cid": integer(0, 2**32 - 1),
    "xid8": integer(0, 2**64 - 1), "numeric": NUMERIC, "float4": FLOAT, "float8": FLOAT, "bool": BOOLEAN,
    "date": PG_DATE, "time": PG_TIME, "timetz": PG_TIMETZ, "timestamp": PG_TIMESTAMP, "timestamptz": TIMESTAMPTZ,
    "interval": INTERVAL, "bytea": BASE64, "json": ANY_JSON, "jsonb": ANY_JSON, "uuid": UUID, "bit": BITS,
    "varbit": BITS,
}


def pg_table(query: Query, table: str) -> TableShape:
    schema, name = table.split(".", 1)
    rel = _literal(f'"{schema.replace(chr(34), chr(34) * 2)}"."{name.replace(chr(34), chr(34) * 2)}"')
    exists = query(f"SELECT to_regclass({rel}) IS NOT NULL")
    if not exists or not exists[0][0]:
        raise CdcError(f"table {table} does not exist in the source database")
    cols = query(f"SELECT a.attname, NOT a.attnotnull, a.atttypid::int, format_type(a.atttypid, a.atttypmod) "
                 f"FROM pg_attribute a WHERE a.attrelid = {rel}::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                 f"AND a.attgenerated = '' ORDER BY a.attnum")   # STORED generated columns are not in the log
    key = query(f"SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
                f"JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                f"WHERE i.indrelid = {rel}::regclass AND i.indisprimary ORDER BY k.n")
    types: dict[int, dict] = {}
    out = tuple(Column(c, _pg_form(query, oid, types), bool(nullable), fmt) for c, nullable, oid, fmt in cols)
    return TableShape(table, out, tuple(r[0] for r in key))


def _pg_form(query: Query, oid: int, cache: dict[int, dict], depth: int = 0) -> dict:
    if oid in cache:
        return cache[oid]
    rows = query(f"SELECT typname, typtype, typcategory, typelem::int, typbasetype::int, "
                 f"(SELECT nspname FROM pg_namespace WHERE oid = typnamespace) FROM pg_type WHERE oid = {int(oid)}")
    if not rows or depth > 8:
        return STRING
    typname, typtype, category, elem, base, nsp = rows[0]
    if typtype == "d":
        form = _pg_form(query, base, cache, depth + 1)
    elif typtype == "e":
        labels = [r[0] for r in query(f"SELECT enumlabel FROM pg_enum WHERE enumtypid = {int(oid)} "
                                      "ORDER BY enumsortorder")]
        form = {"enum": labels}
    elif category == "A" and elem:
        element = with_null(_pg_form(query, elem, cache, depth + 1))
        # several dimensions nest arrays of the same element form
        form = {"type": "array", "items": {"anyOf": [element, {"type": "array"}]}}
    elif nsp == "pg_catalog" and typname in _PG_FORMS:
        form = _PG_FORMS[typname]
    else:
        form = STRING                      # PostgreSQL's text form (inet, money, ranges, composites, ...)
    cache[oid] = form
    return form


# ---------------------------------------------------------------- MySQL / MariaDB

_MY_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}
_MY_DATE = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
_MY_TIME = {"type": "string", "pattern": rf"^-?[0-9]{{2,3}}:[0-9]{{2}}:[0-9]{{2}}{_FRAC6}$"}


def _my_datetime(fsp: int) -> dict:
    frac = r"\.[0-9]{6}" if fsp else ""
    return {"type": "string", "pattern": rf"^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}{frac}$"}


_MY_TIMESTAMP = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"}


def _my_members(column_type: str) -> list[str]:
    inner = column_type[column_type.index("(") + 1: column_type.rindex(")")]
    return [m.replace("''", "'").replace("\\\\", "\\") for m in re.findall(r"'((?:[^']|'')*)'", inner)]


def my_form(data_type: str, column_type: str, scale: int | None, fsp: int | None, logical: str | None) -> dict:
    dt, ct = data_type.lower(), column_type.lower()
    if logical == "json" or dt == "json":
        return ANY_JSON
    if logical in ("uuid", "inet4", "inet6") or dt in ("uuid", "inet4", "inet6"):
        return UUID if (logical or dt) == "uuid" else STRING
    if dt in _MY_INT_BITS:
        bits = _MY_INT_BITS[dt]
        return integer(0, 2**bits - 1) if "unsigned" in ct else integer(-2**(bits - 1), 2**(bits - 1) - 1)
    if dt == "decimal":
        frac = rf"\.[0-9]{{{scale}}}" if scale else ""
        return {"type": "string", "pattern": rf"^-?[0-9]+{frac}$"}
    if dt in ("float", "double", "real"):
        return NUMBER
    if dt == "bit":
        width = re.search(r"\((\d+)\)", ct) if "(" in ct else None
        n = int(width.group(1)) if width else 1
        return integer(0, 2**n - 1)
    if dt == "year":
        return integer(0, 2155)
    if dt == "date":
        return _MY_DATE
    if dt == "datetime":
        return _my_datetime(fsp or 0)
    if dt == "timestamp":
        return _MY_TIMESTAMP
    if dt == "time":
        return _MY_TIME
    if dt == "enum":
        return {"enum": _my_members(column_type) + ([""] if "" not in _my_members(column_type) else [])}
    if dt in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point",
              "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"):
        return BASE64
    return STRING                           # char, varchar, text types, set (members comma-joined)


def my_table(query: Query, table: str) -> TableShape:
    schema, name = table.split(".", 1)
    where = f"TABLE_SCHEMA = {_literal(schema)} AND TABLE_NAME = {_literal(name)}"
    cols = query("SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_SCALE, DATETIME_PRECISION "
                 f"FROM information_schema.COLUMNS WHERE {where} ORDER BY ORDINAL_POSITION")
    if not cols:
        raise CdcError(f"table {table} does not exist in the source database")
    json_cols: set[str] = set()
    try:
        checks = query("SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE "
                       f"CONSTRAINT_SCHEMA = {_literal(schema)} AND TABLE_NAME = {_literal(name)} "
                       "AND CHECK_CLAUSE LIKE '%json_valid(%'")
        for (clause,) in checks:
            json_cols.update(c.replace("``", "`") for c in re.findall(r"json_valid\(`((?:[^`]|``)+)`\)", str(clause)))
    except Exception as e:                  # MySQL before 8.0.16 has no CHECK_CONSTRAINTS: no json_valid hints
        if "check_constraints" not in str(e).lower():
            raise
    key = query("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE "
                f"{where} AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION")
    out = []
    for cname, dt, ct, nullable, scale, fsp in cols:
        dt, ct = _text(dt), _text(ct)
        logical = "json" if cname in json_cols else None
        out.append(Column(cname, my_form(dt, ct, scale, fsp, logical), nullable == "YES", ct))
    return TableShape(table, tuple(out), tuple(r[0] for r in key))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


# ---------------------------------------------------------------- SQLite (trigger capture)


def sqlite_form(declared: str) -> dict:
    """SQLite's type affinity rules (https://sqlite.org/datatype3.html §3.1) decide what a value usually is."""
    d = declared.upper()
    # the trigger source's SQLite converters first (agent/sources/trigger/sqlite.py), then affinity
    if "DEC" in d or "NUMERIC" in d:
        return {"type": "string"}                         # exact digits, quantized to the declared scale
    if "BOOL" in d:
        return {"type": ["boolean", "integer", "string"]}  # 0/1 become booleans; other stored values pass
    if "DATETIME" in d or "TIMESTAMP" in d:
        return STRING
    if "JSON" in d:
        return ANY_JSON
    if "INT" in d:
        return {"type": "integer"}
    if any(w in d for w in ("CHAR", "CLOB", "TEXT")):
        return STRING
    if "BLOB" in d or not d:
        return BASE64 if d else ANY_JSON
    if any(w in d for w in ("REAL", "FLOA", "DOUB")):
        return NUMBER
    return {"type": ["integer", "number", "string"]}     # NUMERIC affinity: a number, or text that is not one


def sqlite_table(query: Query, table: str) -> TableShape:
    _, name = table.split(".", 1)
    rows = query(f"SELECT name, type, \"notnull\", pk FROM pragma_table_info({_literal(name)})")
    if not rows:
        raise CdcError(f"table {table} does not exist in the source database")
    cols = tuple(Column(n, sqlite_form(t or ""), not nn and not pk, t or "") for n, t, nn, pk in rows)
    key = tuple(n for n, _, _, pk in sorted(rows, key=lambda r: r[3]) if pk)
    return TableShape(table, cols, key)


# ---------------------------------------------------------------- connecting, per source kind


def read_tables(cfg, tables: list[str]) -> dict[str, TableShape]:
    """The shapes of `tables` as the configured source's database describes them now."""
    kind = cfg.source.database_kind
    if kind == "postgres":
        import psycopg

        from .sources.postgres.common import conninfo
        try:
            with psycopg.connect(conninfo(cfg), autocommit=True) as conn:
                def q(sql):
                    return conn.execute(sql).fetchall()
                return {t: pg_table(q, t) for t in tables}
        except psycopg.OperationalError as e:
            raise SourceUnavailable(f"cannot read the source tables' columns: {str(e).strip()}") from None
        except psycopg.Error as e:
            raise CdcError(f"cannot read the source tables' columns: {str(e).strip()}") from None
    if kind == "mysql":
        from .sources.mysql.common import control_connection, parse_dsn
        conn = control_connection(parse_dsn(cfg.source.dsn, str(cfg.path)))
        try:
            def q(sql):
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return list(cur.fetchall())
            return {t: my_table(q, t) for t in tables}
        finally:
            conn.close()
    from .sources.trigger.db import Db
    from .sources.trigger.dsn import parse_dsn as trigger_dsn
    target = trigger_dsn(cfg.source.dsn, str(cfg.path))
    db = Db(target, "source database")
    try:
        reader = {"postgresql": pg_table, "mysql": my_table, "sqlite": sqlite_table}.get(target.dialect)
        if reader is None:
            raise CdcError(f"the catalog cannot read column types from a {target.dialect} database yet")
        return {t: reader(db.query, t) for t in tables}
    finally:
        db.close()
