"""The capture's object names and what the catalog says about them (tables, installed version, triggers)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .db import Db
from .dialect import Dialect, TableInfo, dialect_named
from .dsn import parse_dsn

if TYPE_CHECKING:
    from ...config import Config


def short(name: str, limit: int) -> str:
    """An identifier within the engine's length limit, kept unique by a hash of the full name."""
    if len(name) <= limit:
        return name
    h = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return name[: limit - 9] + "_" + h


def split_table(table: str) -> tuple[str, str]:
    s, t = table.split(".", 1)
    return s, t


@dataclass
class Names:
    """The changelog `cl` in `schema` and the objects named after it, quoted for `dialect`."""

    dialect: str
    schema: str
    cl: str
    row_triggers: bool = False      # PostgreSQL: row triggers instead of statement triggers (trigger_level)
    sql: Dialect = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sql = dialect_named(self.dialect)

    @property
    def limit(self) -> int:
        return self.sql.name_limit

    def q(self, *parts: str) -> str:
        return ".".join(self.sql.quote(p) for p in parts)

    @property
    def qcl(self) -> str:
        return self.q(self.schema, self.cl)

    @property
    def version_table(self) -> str:
        return short(self.cl + "_version", self.limit)

    @property
    def qversion(self) -> str:
        return self.q(self.schema, self.version_table)

    @property
    def origin_table(self) -> str:
        return short(self.cl + "_origin", self.limit)

    @property
    def fn(self) -> str:
        return short(self.cl + "_capture", self.limit)

    @property
    def qwm(self) -> str:
        return self.q(self.schema, self.wm)

    @property
    def wm(self) -> str:
        """PostgreSQL: the function that writes snapshot watermarks (version 005)."""
        return short(self.cl + "_watermark", self.limit)

    def trigger(self, table: str, suffix: str = "") -> str:
        return short(f"{self.cl}_{table.split('.', 1)[1]}" + (f"_{suffix}" if suffix else ""), self.limit)

    @property
    def fn_plain(self) -> str:
        """PostgreSQL (version 004): the capture function without the SET clause."""
        return short(self.cl + "_capture_plain", self.limit)

    def common(self, seed: int | None = None) -> dict[str, str]:
        d = {"schema": self.schema, "cl": self.cl, "qcl": self.qcl, "qversion": self.qversion,
             "cl_lit": self.sql.literal(self.cl), "origin": self.sql.quote(self.origin_table),
             "qorigin": self.q(self.schema, self.origin_table), "qfn": self.q(self.schema, self.fn)}
        d["qwm"] = self.qwm
        if seed is not None:
            d["seed"] = str(seed)
        d["qfn_plain"] = self.q(self.schema, self.fn_plain)
        return d


def load_table(db: Db, table: str) -> TableInfo | None:
    """Columns (in order, with base types) and primary key of one table; None if it does not exist."""
    return db.sql.load_table(db, table)


def installed_version(db: Db, names: Names) -> int:
    """The highest version recorded in the version table; 0 when capture is not installed."""
    if not db.sql.table_exists(db, names.schema, names.version_table):
        return 0
    rows = db.query(f"SELECT MAX(version) FROM {names.qversion}")
    return int(rows[0][0] or 0) if rows else 0


def installed_triggers(db: Db, names: Names) -> dict[tuple[str, str], str]:
    """(table "schema.table", trigger name) -> definition text, for every trigger this capture installed."""
    return db.sql.installed_triggers(db, names)


class ConfiguredCapture:
    """What the source and the admin both take from the config: the dsn's target and dialect, and the
    changelog's names (in the schema of the first captured table)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.file = str(cfg.path)
        self.target = parse_dsn(cfg.source.dsn, self.file)
        self.dialect = self.target.dialect
        self.sql = dialect_named(self.dialect)
        self.names = Names(self.dialect, split_table(cfg.source.tables[0])[0], cfg.source.changelog_table,
                           cfg.source.trigger_level == "row")
