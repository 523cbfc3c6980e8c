"""Types of the compiled extension agent/_fastmy.c (see agent/fastmy.py)."""

from collections.abc import Callable
from typing import Any

def init(f32_cache: dict[bytes, float], f32_converter: Callable[[bytes], float], json_text: Callable[[str], Any],
         raw_json: type, /) -> None: ...
def plan(names: tuple[str, ...], kinds: bytes, args: tuple[int, ...], fns: tuple[Callable[..., Any], ...],
         /) -> object: ...
def decode_rows(plan: object, plan2: object | None, buf: bytes | bytearray | memoryview, pos: int, end: int,
                /) -> tuple[list[Any], int]: ...
