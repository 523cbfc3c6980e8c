"""Source kind `postgres`: the replication stream (stream.py) and check / setup / teardown (admin.py)."""

from .admin import PostgresAdmin
from .common import HEARTBEAT_PREFIX
from .stream import PostgresSource

__all__ = ["HEARTBEAT_PREFIX", "PostgresAdmin", "PostgresSource"]
