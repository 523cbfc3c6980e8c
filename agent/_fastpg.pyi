"""Type stub of the optional C extension agent/_fastpg.c (see agent/fastpath.py)."""

from collections.abc import Callable, Sequence
from typing import Any

def decode_tuple(buf: bytes, pos: int, converters: Sequence[Callable[[bytes], Any]],
                 kinds: bytes = b"") -> tuple[list[Any], int]: ...
def init(decode_error: type, unchanged: object, loads: Callable[[bytes], Any] = ...,
         raw_json: type = ..., /) -> None: ...
