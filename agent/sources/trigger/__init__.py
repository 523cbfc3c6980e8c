"""Source kind `trigger`: capture through triggers that write a changelog table, for databases where the
agent may not read the transaction log (no replication grants) or cannot (SQLite, SQL Server here).

`setup` installs, per captured table, AFTER INSERT / UPDATE / DELETE triggers writing the old and new row
images as JSON into the changelog (`migrations/trigger/<dialect>/`, versioned). The source reads the
changelog and deletes rows only after the pipeline confirmed that the spool holds them.

Modules: `dsn` (which database a dsn points at; imported by config), `db` (the connection), `dialect` (the
interface every database implements) with one module per database (`postgresql`, `mysql`, `sqlite`,
`mssql`), `catalog` (object names, installed version and triggers), `install` (TriggerAdmin: setup,
teardown, check), `changelog` (the reading strategy interface and gap tracking), `values` (JSON to contract
values), `reader` (TriggerSource).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:       # what type checkers see; at run time the names below load on first use
    from .catalog import Names, installed_triggers, installed_version, load_table
    from .db import Db
    from .dialect import DIALECTS, Column, TableInfo
    from .dsn import Target, parse_dsn
    from .install import (TriggerAdmin, migrations, newest_version, render, table_template, table_values,
                          trigger_names)
    from .reader import TriggerSource, converters

# Loaded on first use: agent.config imports `dsn` from here at start, and should not pay for the rest.
_EXPORTS = {
    "Target": "dsn", "parse_dsn": "dsn", "Db": "db", "DIALECTS": "dialect", "Column": "dialect",
    "TableInfo": "dialect", "Names": "catalog", "installed_triggers": "catalog", "installed_version": "catalog",
    "load_table": "catalog", "TriggerAdmin": "install", "migrations": "install", "newest_version": "install",
    "render": "install", "table_template": "install", "table_values": "install", "trigger_names": "install",
    "TriggerSource": "reader", "converters": "reader",
}
__all__ = ["DIALECTS", "Column", "Db", "Names", "TableInfo", "Target", "TriggerAdmin", "TriggerSource", "converters",
           "installed_triggers", "installed_version", "load_table", "migrations", "newest_version", "parse_dsn",
           "render", "table_template", "table_values", "trigger_names"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
