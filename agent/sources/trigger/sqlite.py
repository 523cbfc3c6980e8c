"""SQLite: three row triggers per table writing json_object(); the changelog read with gap tracking
(changelog.py), keeping its highest row so that rowids never go back."""

from __future__ import annotations

import datetime as _dt
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...myvalues import _b64
from ...changes import CheckItem
from ...errors import SourceFatal
from .catalog import split_table
from .db import Db, text_of
from .dialect import Column, Dialect, TableInfo
from .values import json_text

if TYPE_CHECKING:
    from .catalog import Names
    from .dsn import Target

_TS_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d")


def _column_expr(ref: str) -> str:
    """SQLite's json_object() refuses BLOBs and prints REALs with 15 digits; wrap both so the reader gets
    the exact value (any column may hold any type in SQLite)."""
    return (f"CASE typeof({ref}) WHEN 'blob' THEN json_object('$b', hex({ref})) "
            f"WHEN 'real' THEN json_object('$r', printf('%!.17g', {ref})) ELSE {ref} END")


def _generic(v: Any) -> Any:
    if type(v) is dict and len(v) == 1:
        if "$b" in v:
            return _b64(bytes.fromhex(v["$b"]))
        if "$r" in v:
            return float(v["$r"])
    return v


def _decimal(scale: int | None) -> Callable[[Any], Any]:
    def num(v: Any) -> Any:
        v = _generic(v)
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


class SqliteDialect(Dialect):
    name = "sqlite"
    begin_sql = "BEGIN IMMEDIATE"

    def before_connect(self, target: Target) -> None:
        path = target.sqlite_path or ""          # a sqlite URL always has one (":memory:" at least)
        if path not in (":memory:", "") and not Path(path).exists():
            raise SourceFatal(f"SQLite database {path} does not exist")

    def connect_args(self, target: Target) -> dict[str, Any]:
        return {"timeout": 30}

    def after_connect(self, db: Db) -> None:
        db.script("PRAGMA busy_timeout = 30000")

    def now_sql(self) -> str:
        return self.literal(_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    # -------------------------------------------------------------- catalog

    def load_table(self, db: Db, table: str) -> TableInfo | None:
        schema, name = split_table(table)
        rows = db.query(f"PRAGMA {self.quote(schema)}.table_info({self.quote(name)})")
        if not rows:
            return None
        cols = []
        for r in rows:
            decl = (r[2] or "").lower()
            m = re.search(r"\(\s*\d+\s*,\s*(\d+)\s*\)", decl)
            cols.append(Column(r[1], decl, scale=int(m.group(1)) if m else None))
        key = tuple(r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5]))
        return TableInfo(table, cols, key)

    def table_exists(self, db: Db, schema: str, name: str) -> bool:
        return bool(db.query(f"SELECT 1 FROM {self.quote(schema)}.sqlite_master WHERE type = 'table' AND name = :t",
                             {"t": name}))

    def installed_triggers(self, db: Db, names: Names) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for name, t, sql in db.query(
                f"SELECT name, tbl_name, sql FROM {self.quote(names.schema)}.sqlite_master "
                f"WHERE type = 'trigger' AND name LIKE :p ESCAPE '\\'",
                {"p": names.cl.replace("_", "\\_") + "\\_%"}):
            if names.cl in (sql or ""):
                out[(f"{names.schema}.{t}", name)] = sql
        return out

    def server_version(self, db: Db) -> str:
        return text_of(db.query("SELECT sqlite_version()")[0][0])

    # -------------------------------------------------------------- rendering

    def json_object(self, alias: str, cols: list[Column]) -> str:
        # json_object() takes at most 127 arguments per call (SQLITE_MAX_FUNCTION_ARG default): chain with json_patch
        chunks = [cols[i:i + 60] for i in range(0, len(cols), 60)] or [[]]
        objs = ["json_object(" + ", ".join(f"{self.literal(c.name)}, "
                                           f"{_column_expr(f'{alias}.{self.quote(c.name)}')}" for c in ch) + ")"
                for ch in chunks]
        expr = objs[0]
        for o in objs[1:]:
            expr = f"json_patch({expr}, {o})"
        return expr

    def table_values(self, names: Names, info: TableInfo) -> dict[str, str]:
        v = {f"qtrigger_{s}": self.quote(names.trigger(info.name, s)) for s in "iud"}
        v["new_json"] = self.json_object("NEW", info.columns)
        v["old_json"] = self.json_object("OLD", info.columns)
        return v

    # -------------------------------------------------------------- check

    def privileges(self, db: Db, names: Names, tables: tuple[str, ...], target: Target,
                   installed: int) -> list[CheckItem]:
        p = target.sqlite_path
        assert p is not None                     # a sqlite URL always has one (":memory:" at least)
        ok = p in (":memory:", "") or os.access(p, os.W_OK)
        return [CheckItem("privileges", ok, "database file is writable" if ok else f"{p} is read-only",
                          f"the agent's OS user must be able to write {p} (and its folder, for the WAL)")]

    def server_checks(self, db: Db) -> list[CheckItem]:
        mode = text_of(db.query("PRAGMA journal_mode")[0][0]).lower()
        return [CheckItem("journal mode", mode == "wal", f"journal_mode = {mode}",
                          "PRAGMA journal_mode = WAL; (readers and the writer then do not block each "
                          "other; the agent's reads and deletes otherwise wait for the ERP's writes)",
                          warning=True)]

    # -------------------------------------------------------------- values and the changelog

    def converter(self, col: Column) -> Callable[[Any], Any] | None:
        t = col.type
        if "dec" in t or "numeric" in t:
            return _decimal(col.scale)
        if "bool" in t:
            return lambda v: bool(v) if type(v) is int else _generic(v)
        if "datetime" in t or "timestamp" in t:
            return lambda v: v.replace(" ", "T", 1) if type(v) is str and _TS_RE.match(v) else _generic(v)
        if "json" in t:
            return lambda v: json_text(v) if type(v) is str else _generic(v)
        return _generic

    def keep_ids(self, db: Db, names: Names, ids: list[int]) -> list[int]:
        # the rowid is max + 1: keep the highest row (blanked into a marker) so that ids never go back
        top = db.query(f"SELECT MAX(id) FROM {names.qcl}")[0][0]
        if top in ids:
            ids = [i for i in ids if i != top]
            db.execute(f"UPDATE {names.qcl} SET op = 'S', tbl = '', before = NULL, after = NULL "
                       f"WHERE id = {int(top)} AND op <> 'S'")
        return ids


    # -------------------------------------------------------------- snapshots

    def watermark_sql(self, names: Names) -> str:
        return (f"INSERT INTO {names.qcl} (tbl, op, created) "
                "VALUES (:mark, 'W', (julianday('now') - 2440587.5) * 86400.0)")

    def estimate_rows(self, db: Db, table: str) -> int | None:
        # no statistics to ask; counting is one short read (SQLite has no locks a reader could hold)
        return int(db.query(f"SELECT COUNT(*) FROM {'.'.join(self.quote(p) for p in split_table(table))}")[0][0])


DIALECT = SqliteDialect()
