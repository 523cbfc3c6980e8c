"""Source kind `mysql`: the binlog stream (stream.py) and check / setup / teardown (admin.py)."""

from .admin import MysqlAdmin
from .common import MysqlDsn, format_checkpoint, parse_checkpoint, parse_dsn
from .stream import MysqlSource

__all__ = ["MysqlAdmin", "MysqlDsn", "MysqlSource", "format_checkpoint", "parse_checkpoint", "parse_dsn"]
