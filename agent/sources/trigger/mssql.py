"""SQL Server: one statement trigger per table writing FOR JSON rows of `inserted` / `deleted`, paired by
primary key; the changelog read with gap tracking (changelog.py). Not tested against a server here: the
generated DDL is (tests/test_trigger_source.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...binlog import _float32
from ...pgvalues import frac6
from .catalog import split_table
from .db import Db, text_of
from .dialect import Column, Dialect, TableInfo
from .values import cut_fraction, utc_z

if TYPE_CHECKING:
    from .catalog import Names

_MS_SKIP = {"text", "ntext", "image"}           # not readable in inserted/deleted of AFTER triggers


def _column_expr(ref: str, col: Column) -> str | None:
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


def _local_time(v: str) -> str:
    return frac6(cut_fraction(v))


class MssqlDialect(Dialect):
    name = "mssql"
    name_limit = 128
    begin_sql = "BEGIN TRANSACTION"
    pairs_updates_by_key = True
    created_select = "CONVERT(varchar(40), created, 126)"
    txid_select = "txid"

    def quote(self, ident: str) -> str:
        return "[" + ident.replace("]", "]]") + "]"

    def literal(self, s: str) -> str:
        return "N'" + s.replace("'", "''") + "'"

    def now_sql(self) -> str:
        return "SYSUTCDATETIME()"

    # -------------------------------------------------------------- catalog

    def load_table(self, db: Db, table: str) -> TableInfo | None:
        schema, name = split_table(table)
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

    def installed_triggers(self, db: Db, names: Names) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for s, t, name, body in db.query(
                "SELECT OBJECT_SCHEMA_NAME(tr.parent_id), OBJECT_NAME(tr.parent_id), tr.name, m.definition "
                "FROM sys.triggers tr JOIN sys.sql_modules m ON m.object_id = tr.object_id "
                "WHERE tr.name LIKE :p", {"p": names.cl.replace("_", "[_]") + "[_]%"}):
            if names.qcl in (body or ""):
                out[(f"{s}.{t}", name)] = body
        return out

    def server_version(self, db: Db) -> str:
        return text_of(db.query("SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(64))")[0][0])

    # -------------------------------------------------------------- rendering

    def json_object(self, alias: str, cols: list[Column]) -> str:
        parts = []
        for c in cols:
            e = _column_expr(f"{alias}.{self.quote(c.name)}", c)
            if e is not None:
                parts.append(f"{e} AS {self.quote(c.name)}")
        return "SELECT " + ", ".join(parts) + " FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES"

    def table_values(self, names: Names, info: TableInfo) -> dict[str, str]:
        k = info.key or tuple(c.name for c in info.columns)
        q = self.quote
        return {"qtrigger": names.q(info.name.split(".", 1)[0], names.trigger(info.name)),
                "new_json": self.json_object("i", info.columns), "old_json": self.json_object("d", info.columns),
                "key_join": " AND ".join(f"i.{q(c)} = d.{q(c)}" for c in k),
                "d_key_null": f"d.{q(k[0])} IS NULL", "i_key_null": f"i.{q(k[0])} IS NULL"}

    def trigger_names(self, names: Names, table: str) -> list[str]:
        return [names.trigger(table)]

    def replace_triggers(self, db: Db, names: Names, info: TableInfo, rendered: list[str],
                         current: dict[str, str | None]) -> list[str]:
        return rendered                  # CREATE OR ALTER replaces in place

    # -------------------------------------------------------------- values and the changelog

    def converter(self, col: Column) -> Callable[[Any], Any] | None:
        t = col.type
        if t == "real":
            return lambda v: _float32(float(v))
        if t == "float":
            return lambda v: float(v)
        if t in ("datetime2", "datetime", "smalldatetime", "time"):
            return _local_time
        if t == "datetimeoffset":
            return utc_z
        # geometry / geography: STAsBinary() is varbinary, which FOR JSON writes as base64 already
        return None

    def uncaptured(self, col: Column) -> bool:
        return col.type in _MS_SKIP

    def gap_select(self, names: Names, version: int, n: int) -> str:
        return f"SELECT TOP ({int(n)}) {self.gap_columns(version)} FROM {names.qcl} ORDER BY id"


    # -------------------------------------------------------------- snapshots

    def watermark_sql(self, names: Names) -> str:
        return (f"INSERT INTO {names.qcl} (txid, tbl, op, created) "
                "VALUES (CURRENT_TRANSACTION_ID(), :mark, 'W', SYSUTCDATETIME())")

    def snapshot_image(self, alias: str, info: TableInfo) -> tuple[str, str | None]:
        return f"({self.json_object(alias, info.columns)})", None

    def key_literal(self, v: Any) -> str:
        if isinstance(v, (bytes, bytearray, memoryview)):
            return "0x" + bytes(v).hex()
        return super().key_literal(v)

    def chunk_sql(self, qtable: str, alias: str, select: str, keys: list[str], after: list[str] | None,
                  where: str | None, limit: int) -> str:
        # no row-value comparison in T-SQL: (a, b) > (x, y) spelled out
        conds = []
        if after is not None:
            ors = []
            for i in range(len(keys)):
                eq = [f"{keys[j]} = {after[j]}" for j in range(i)]
                ors.append("(" + " AND ".join(eq + [f"{keys[i]} > {after[i]}"]) + ")")
            conds.append("(" + " OR ".join(ors) + ")")
        if where:
            conds.append(f"({where})")
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        return f"SELECT TOP ({int(limit)}) {select} FROM {qtable} AS {alias}{cond} ORDER BY {', '.join(keys)}"

    def estimate_rows(self, db: Db, table: str) -> int | None:
        rows = db.query("SELECT SUM(rows) FROM sys.partitions WHERE object_id = OBJECT_ID(:t) AND index_id IN (0, 1)",
                        {"t": ".".join(self.quote(p) for p in split_table(table))})
        return int(rows[0][0]) if rows and rows[0][0] is not None else None


DIALECT = MssqlDialect()
