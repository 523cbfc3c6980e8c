"""What differs between the databases trigger capture supports, behind one interface.

The generic modules (db, catalog, install, reader, changelog) ask the `Dialect` of the dsn; each
database is one module (`postgresql.py`, `mysql.py`, `sqlite.py`, `mssql.py`) defining a subclass and
an instance `DIALECT`. A new database is one more such module and its migrations in migrations/trigger/.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...changes import CheckItem

if TYPE_CHECKING:
    from .catalog import Names
    from .changelog import ChangelogReader
    from .db import Db
    from .dsn import Target

DIALECTS = ("postgresql", "mysql", "sqlite", "mssql")


@dataclass
class Column:
    name: str
    type: str                 # lower-case base type name as the catalog gives it
    elem: str | None = None   # PostgreSQL arrays: the element type
    scale: int | None = None  # SQLite: the declared scale of DECIMAL(p,s)
    text_form: bool = False   # PostgreSQL: the trigger also writes the column's text (composites, hstore)


@dataclass
class TableInfo:
    name: str                 # "schema.table" as in the config
    columns: list[Column]
    key: tuple[str, ...]


def dialect_named(name: str) -> Dialect:
    """The Dialect for a dsn's dialect name (parse_dsn only gives names in DIALECTS)."""
    if name not in DIALECTS:
        raise ValueError(f"no trigger-capture dialect {name!r}")
    return importlib.import_module(f"{__package__}.{name}").DIALECT


class Dialect:
    """Defaults are the common SQL; a database overrides what it does differently."""

    name = ""
    name_limit = 200                # longest identifier the engine takes
    begin_sql = "BEGIN"
    transactional_ddl = True        # setup and teardown run in one transaction
    generic_trigger = False         # one trigger body for every table: nothing per column to compare
    pairs_updates_by_key = False    # statement triggers pair old and new rows by primary key
    created_select = "created"      # the changelog's `created` as the gap reader selects it
    txid_select = "NULL"            # the changelog's transaction id, where a trigger can know it

    # -------------------------------------------------------------- connecting

    def before_connect(self, target: Target) -> None:
        """Refuse a target that cannot work before trying (SourceFatal)."""

    def connect_args(self, target: Target) -> dict[str, Any]:
        return {}

    def after_connect(self, db: Db) -> None:
        """Session settings on a fresh SQLAlchemy connection."""

    # -------------------------------------------------------------- names and literals

    def quote(self, ident: str) -> str:
        return '"' + ident.replace('"', '""') + '"'

    def literal(self, s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    def now_sql(self) -> str:
        """The current UTC time, as the version table's applied_at."""
        raise NotImplementedError

    # -------------------------------------------------------------- catalog

    def load_table(self, db: Db, table: str) -> TableInfo | None:
        """Columns (in order, with base types) and primary key of one table; None if it does not exist."""
        raise NotImplementedError

    def table_exists(self, db: Db, schema: str, name: str) -> bool:
        return bool(db.query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t",
                             {"s": schema, "t": name}))

    def installed_triggers(self, db: Db, names: Names) -> dict[tuple[str, str], str]:
        """(table "schema.table", trigger name) -> definition text, for every trigger this capture installed
        (found by name and by what it writes to), including ones on tables no longer in the config."""
        raise NotImplementedError

    def server_version(self, db: Db) -> str:
        from .db import text_of
        return text_of(db.query("SELECT VERSION()")[0][0])

    # -------------------------------------------------------------- rendering triggers

    def json_object(self, alias: str, cols: list[Column]) -> str:
        """The expression a trigger uses to write row `alias` as one JSON object."""
        raise NotImplementedError

    def table_values(self, names: Names, info: TableInfo) -> dict[str, str]:
        """The dialect's placeholders of table.vNNN.sql, beyond the common ones."""
        return {}

    def trigger_names(self, names: Names, table: str) -> list[str]:
        return [names.trigger(table, s) for s in "iud"]

    def template_suffix(self, names: Names) -> str:
        """Which per-table template: `table.vNNN<suffix>.sql` where one exists (PostgreSQL's row triggers)."""
        return ""

    def trigger_body(self, stmt: str) -> str:
        """The part of a CREATE TRIGGER statement that the catalog keeps as the trigger's action."""
        return stmt

    def replace_triggers(self, db: Db, names: Names, info: TableInfo, rendered: list[str],
                         current: dict[str, str | None]) -> list[str]:
        """Statements that install `rendered` where `current` (name -> definition or None) is."""
        drops = [self.drop_trigger_sql(names, info.name, n) for n, body in current.items() if body]
        return drops + rendered

    def drop_trigger_sql(self, names: Names, table: str, trigger: str) -> str:
        return f"DROP TRIGGER IF EXISTS {names.q(table.split('.', 1)[0], trigger)}"

    def recover_failed_setup(self, db: Db) -> None:
        """After a failed setup that did not run in a transaction: undo what holds locks."""

    # -------------------------------------------------------------- check

    def privileges(self, db: Db, names: Names, tables: tuple[str, ...], target: Target,
                   installed: int) -> list[CheckItem]:
        return []

    def server_checks(self, db: Db) -> list[CheckItem]:
        """Server settings that change what capture gives (shown after the tables)."""
        return []

    # -------------------------------------------------------------- values

    def converter(self, col: Column) -> Callable[[Any], Any] | None:
        """From the changelog's JSON value of `col` to the contract's form; None: it is that already."""
        return None

    def text_converter(self, col: Column) -> Callable[[str], Any] | None:
        """For a column the trigger also writes as its text (Column.text_form): that text -> the contract form."""
        return None

    def probe_sql(self, names: Names, info: TableInfo) -> str | None:
        """A read-only statement that evaluates the trigger's row image on the table (None: nothing to prove)."""
        return None

    def uncaptured(self, col: Column) -> bool:
        """The trigger cannot write this column's value (the change says it is unavailable)."""
        return False

    # -------------------------------------------------------------- reading the changelog

    def changelog(self, names: Names, max_wait: float) -> ChangelogReader:
        """How the changelog is read and confirmed: by default gap tracking over its ids."""
        from .changelog import GapReader
        return GapReader(self, names, max_wait)

    def gap_select(self, names: Names, version: int, n: int) -> str:
        """The first `n` changelog rows in id order: id, txid, tbl, op, before, after, origin, created."""
        return f"SELECT {self.gap_columns(version)} FROM {names.qcl} ORDER BY id LIMIT {int(n)}"

    def gap_columns(self, version: int) -> str:
        origin = "origin" if version >= 2 else "NULL"
        return (f"id, {self.txid_select}, tbl, op, {self.quote('before')}, {self.quote('after')}, {origin}, "
                f"{self.created_select}")

    def keep_ids(self, db: Db, names: Names, ids: list[int]) -> list[int]:
        """Of the confirmed changelog ids, the ones to delete (the engine may need to keep one)."""
        return ids

    # -------------------------------------------------------------- snapshots (snapshot.py)

    def watermark_sql(self, names: Names) -> str:
        """Writes the snapshot watermark `:mark` into the changelog as an op 'W' row (its own transaction)."""
        return f"INSERT INTO {names.qcl} (tbl, op, created) VALUES (:mark, 'W', {self.now_sql()})"

    def watermark_check(self, db: Db, names: Names, installed: int) -> CheckItem:
        return CheckItem("snapshot watermarks", True, f"rows the agent INSERTs into {names.schema}.{names.cl} "
                         "(op 'W'; INSERT on it, which the privileges above include)")

    def snapshot_session(self, db: Db) -> None:
        """Settings of the snapshot's connection, so its row images are the trigger's."""

    def snapshot_image(self, alias: str, info: TableInfo) -> tuple[str, str | None]:
        """What a chunk selects per row: the row image exactly as the trigger writes it, and the text forms
        of some columns (None: no such column)."""
        return self.json_object(alias, info.columns), None

    def snapshot_key(self, ref: str, col: Column) -> str:
        """A key column as the chunk selects it (its value comes back in the next chunk's condition)."""
        return ref

    def key_literal(self, v: Any) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return "X'" + bytes(v).hex() + "'"
        return self.literal(str(v))

    def chunk_sql(self, qtable: str, alias: str, select: str, keys: list[str], after: list[str] | None,
                  where: str | None, limit: int) -> str:
        """One keyset chunk: `keys` are the key columns as `alias.column`, `after` the last key as literals."""
        conds = []
        if after is not None:
            conds.append(f"({', '.join(keys)}) > ({', '.join(after)})")
        if where:
            conds.append(f"({where})")
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        return f"SELECT {select} FROM {qtable} AS {alias}{cond} ORDER BY {', '.join(keys)} LIMIT {int(limit)}"

    def estimate_rows(self, db: Db, table: str) -> int | None:
        """The table's row count from the statistics (snapshot progress); None when unknown."""
        return None
