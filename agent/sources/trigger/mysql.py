"""MySQL and MariaDB: three row triggers per table writing JSON_OBJECT(), swapped under a table lock (MySQL)
or with CREATE OR REPLACE (MariaDB); the changelog read with gap tracking (changelog.py)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...changes import CheckItem
from ...myvalues import _b64, float32_shortest, format_timestamp, json_text
from ...pgvalues import frac6
from ...rawjson import raw_json
from .catalog import split_table
from .db import Db, text_of
from .dialect import Column, Dialect, TableInfo

if TYPE_CHECKING:
    from .catalog import Names
    from .dsn import Target

_MY_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point",
              "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}


def _is_mariadb(db: Db) -> bool:
    return "mariadb" in text_of(db.query("SELECT VERSION()")[0][0]).lower()


_MY_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
_JSON_HEX_MARK = "\x00"      # a JSON column's text as hex after this mark (version 3); older triggers embedded it


def _utf8(expr: str) -> str:
    return f"CONVERT({expr} USING utf8mb4)"


def _column_expr(ref: str, col: Column) -> str:
    """How a MySQL/MariaDB trigger puts one column in JSON_OBJECT so the reader can give its exact value,
    whatever the writer's session: every string in one character set (JSON_OBJECT refuses arguments whose
    charsets it cannot combine, latin1 with cp1251 or utf8mb4 with utf16, and would fail the ERP's write),
    decimals as text (no double rounding), binary as hex, TIMESTAMP as epoch seconds (independent of the
    writer's time zone), date/time types, UUID, INET4, INET6 and JSON as their text, YEAR as a number
    (JSON_OBJECT writes YEAR 0000 as `0000`, which is not JSON)."""
    t = col.type
    if t in _MY_TEXT:
        return _utf8(ref)
    if t == "json":
        # JSON_OBJECT embeds a JSON column as JSON (trimmed, and its null indistinguishable from NULL);
        # its exact text travels as hex
        return _utf8(f"CONCAT(CHAR(0), HEX({ref}))")
    if t in ("decimal", "numeric"):
        return _utf8(f"CAST({ref} AS CHAR)")
    if t in _MY_BINARY:
        return _utf8(f"HEX({ref})")
    if t == "timestamp":
        # UNIX_TIMESTAMP of the zero TIMESTAMP is NULL when the column has fractional seconds
        return _utf8(f"CASE WHEN {ref} + 0 = 0 THEN '0' ELSE CAST(UNIX_TIMESTAMP({ref}) AS CHAR) END")
    if t in ("datetime", "date", "time", "uuid", "inet4", "inet6"):
        return _utf8(f"CAST({ref} AS CHAR)")
    if t in ("bit", "year"):
        return f"({ref} + 0)"
    if t == "double" or t == "real":
        # MariaDB's JSON_OBJECT prints doubles with 15 significant digits: pass 17 through text
        return _utf8(f"CAST({ref} AS CHAR)")
    if t == "float":
        return f"CAST({ref} AS DOUBLE)"
    return ref


def _json_column(span: str) -> Any:
    """A JSON column's value in the row image: the trigger writes its text as a string (version 3); older
    triggers let JSON_OBJECT embed it. Either way: RawJson of the text."""
    if span[:1] == '"':
        s = json.loads(span)
        if s[:1] == _JSON_HEX_MARK:
            return json_text(bytes.fromhex(s[1:]).decode("utf-8", "replace"))
        return json_text(s)
    r = raw_json(span)
    return r if r is not None else span


_json_column.from_span = True        # type: ignore[attr-defined]


def _year(v: Any) -> Any:
    return int(v) if type(v) is str else v        # an older trigger's `0000` reaches here as its text


def _timestamp(v: str) -> str:
    if v in ("0", "0.000000") or v.startswith("0."):
        return "0000-00-00T00:00:00.000000Z"
    d = Decimal(v)
    sec = int(d)
    return format_timestamp(sec, int((d - sec) * 1_000_000))


class MysqlDialect(Dialect):
    name = "mysql"
    name_limit = 64
    transactional_ddl = False       # DDL commits implicitly
    # session_id marks the writing session, not its transaction: MySQL gives a trigger no
    # transaction id, so changes carry no txid there
    created_select = "CAST(created AS CHAR)"

    def connect_args(self, target: Target) -> dict[str, Any]:
        return {"connect_timeout": 10} if "pymysql" in (target.url or "") else {}

    def quote(self, ident: str) -> str:
        return "`" + ident.replace("`", "``") + "`"

    def literal(self, s: str) -> str:
        return "'" + s.replace("'", "''").replace("\\", "\\\\") + "'"

    def now_sql(self) -> str:
        return "UTC_TIMESTAMP(6)"

    # -------------------------------------------------------------- catalog

    def load_table(self, db: Db, table: str) -> TableInfo | None:
        schema, name = split_table(table)
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
            for (_name, clause) in db.query(
                    "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                    "WHERE CONSTRAINT_SCHEMA = :s AND TABLE_NAME = :t", {"s": schema, "t": name}):
                m = re.search(r"json_valid\(`?([^`)]+)`?\)", str(clause), re.I)
                if m:
                    json_cols.add(m.group(1))
        cols = [Column(text_of(r[0]), "json" if text_of(r[0]) in json_cols else text_of(r[1]).lower()) for r in rows]
        return TableInfo(table, cols, tuple(text_of(r[0]) for r in keyrows))

    def installed_triggers(self, db: Db, names: Names) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for s, t, name, body in db.query(
                "SELECT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_STATEMENT "
                "FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE :p",
                {"p": names.cl.replace("_", "\\_") + "\\_%"}):
            if names.qcl in text_of(body):        # ours: it writes to this schema's changelog, not another's
                out[(f"{text_of(s)}.{text_of(t)}", text_of(name))] = text_of(body)
        return out

    # -------------------------------------------------------------- rendering

    def json_object(self, alias: str, cols: list[Column]) -> str:
        parts = [f"{self.literal(c.name)}, {_column_expr(f'{alias}.{self.quote(c.name)}', c)}" for c in cols]
        return "JSON_OBJECT(" + ", ".join(parts) + ")"

    def table_values(self, names: Names, info: TableInfo) -> dict[str, str]:
        schema = info.name.split(".", 1)[0]
        v = {f"qtrigger_{s}": names.q(schema, names.trigger(info.name, s)) for s in "iud"}
        v["new_json"] = self.json_object("NEW", info.columns)
        v["old_json"] = self.json_object("OLD", info.columns)
        return v

    def trigger_body(self, stmt: str) -> str:
        m = re.search(r"(?is)\bFOR\s+EACH\s+ROW\s+(.*)$", stmt)
        return m.group(1) if m else stmt

    def replace_triggers(self, db: Db, names: Names, info: TableInfo, rendered: list[str],
                         current: dict[str, str | None]) -> list[str]:
        if any(current.values()) and _is_mariadb(db):
            # CREATE OR REPLACE swaps a trigger atomically: no write slips through uncaptured
            return [re.sub(r"(?i)^CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", s) for s in rendered]
        drops = [self.drop_trigger_sql(names, info.name, n) for n, body in current.items() if body]
        if not drops:
            return rendered
        # MySQL has no CREATE OR REPLACE TRIGGER: hold the table's write lock while swapping
        qt = names.q(*split_table(info.name))
        return [f"LOCK TABLES {qt} WRITE, {names.qcl} WRITE", *drops, *rendered, "UNLOCK TABLES"]

    def recover_failed_setup(self, db: Db) -> None:
        try:
            db.script("UNLOCK TABLES")
        except Exception:
            pass

    # -------------------------------------------------------------- check

    def privileges(self, db: Db, names: Names, tables: tuple[str, ...], target: Target,
                   installed: int) -> list[CheckItem]:
        grants = " ".join(text_of(r[0]) for r in db.query("SHOW GRANTS")).upper()
        allp = "ALL PRIVILEGES" in grants
        missing = [p for p in ("TRIGGER", "CREATE", "SELECT", "INSERT", "DELETE") if not allp and p not in grants]
        items = [CheckItem("privileges", not missing,
                           "TRIGGER, CREATE, SELECT, INSERT, DELETE" if not missing else
                           "missing (in SHOW GRANTS): " + ", ".join(missing),
                           f"GRANT {', '.join(missing)} ON {names.schema}.* TO <agent user>;" if missing else "")]
        logbin = db.query("SELECT @@log_bin, @@log_bin_trust_function_creators")[0]
        if int(logbin[0] or 0) and not int(logbin[1] or 0) and not allp and "SUPER" not in grants:
            items.append(CheckItem("trigger creation with binary logging", False,
                                   "log_bin is on and log_bin_trust_function_creators is off: creating "
                                   "triggers needs SUPER", "SET GLOBAL log_bin_trust_function_creators = 1; "
                                   "(or run `cdc-agent setup` as a user with SUPER)"))
        return items

    # -------------------------------------------------------------- values

    def converter(self, col: Column) -> Callable[[Any], Any] | None:
        t = col.type
        if t in _MY_BINARY:
            return lambda v: _b64(bytes.fromhex(v))
        if t == "float":
            return lambda v: float32_shortest(float(v))
        if t in ("double", "real"):
            return lambda v: float(v)
        if t == "datetime":
            return lambda v: frac6(v.replace(" ", "T", 1))
        if t == "time":
            return frac6
        if t == "timestamp":
            return _timestamp
        if t == "json":
            return _json_column
        if t == "year":
            return _year
        return None

    def probe_sql(self, names: Names, info: TableInfo) -> str | None:
        # the trigger's row image as a SELECT on the table: it fails where the trigger would (an illegal
        # mix of collations is found when the statement is prepared), and reads at most one row
        return f"SELECT {self.json_object('t', info.columns)} FROM {names.q(*split_table(info.name))} AS t LIMIT 1"


    # -------------------------------------------------------------- snapshots

    def watermark_sql(self, names: Names) -> str:
        return (f"INSERT INTO {names.qcl} (session_id, tbl, op, created) "
                "VALUES (CONNECTION_ID(), :mark, 'W', UTC_TIMESTAMP(6))")

    def estimate_rows(self, db: Db, table: str) -> int | None:
        s, t = split_table(table)
        rows = db.query("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s "
                        "AND TABLE_NAME = :t", {"s": s, "t": t})
        return int(rows[0][0]) if rows and rows[0][0] is not None else None


DIALECT = MysqlDialect()
