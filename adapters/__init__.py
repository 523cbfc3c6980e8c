"""Target adapters: one module per target kind, found by its name (`kind = "http"` is `adapters/http.py`).

How to add a target kind (say `redis`): write `adapters/redis.py` and `tests/test_redis_target.py`; nothing
else changes (config.py knows no kind by name). The module holds, in this order:

    @dataclass(frozen=True)
    class RedisOptions:                       # the keys of its [[targets]] table besides the common ones
        url: Url = option(schemes=("redis", "rediss"), help="...")
        stream: str = option(help="...")
        maxlen: int | None = option(None, above=0)
        password: Secret | None = None        # written "${ENV}" in the file, redacted everywhere

    class RedisTarget:                        # implements agent.interfaces.Target
        def __init__(self, settings: TargetSettings): ...   # settings.options is a RedisOptions
        def open(self) -> str | None:
            import redis                      # the client library is imported HERE, never at module top:
            ...                               # parsing a config must work without it installed
        def send(self, events): ...           # raise TargetUnavailable / TargetRejected (agent/errors.py)
        def close(self): ...

    KIND = TargetKind(options=RedisOptions, target=RedisTarget, batch_size=100)

- Options use the field types of `agent.options` (str, int, float, bool, tuple[str, ...], dict[str, str], Dsn,
  Secret, ConfigPath, Url, `X | None`) and constraints through `option(...)`; the generic reader in
  agent/config.py reads them, names file, key and problem in every error, and refuses unknown keys.
  Checks between fields go in `__post_init__`, raising `agent.options.OptionError(key, problem)`.
- Common to every kind, read by config.py into `TargetSettings` and not declared again: name, kind,
  events, format, batch_size (the kind's default: `TargetKind.batch_size`), retry_initial_seconds,
  retry_max_seconds, circuit_failures, circuit_open_seconds (the worker's RetryPolicy).
- `open()` may return the source position the target already durably applied (a target that stores its
  own position, like `sql`): the worker then skips spooled events at or before it. Return None otherwise.
- Any exception that is not a TargetError (or OSError) is taken for a bug: the worker logs its traceback
  and stops with state "stopped" and the reason in health. Translate the client library's errors.
- Optional: `finish(cfg, settings, base)` cross-checks the options against the whole config (OptionError);
  `admin(cfg, settings)` gives `check()`, `setup_sql()`, `setup()` for `cdc-agent check` / `setup`;
  `admin=preflight(check)` for a kind that only checks (file, http: what can be known before sending).
- A module without `KIND` (or whose name starts with "_") is a helper, not a kind.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

from agent.interfaces import Target

if TYPE_CHECKING:
    from agent.config import TargetSettings


@dataclass(frozen=True)
class TargetKind:
    """What a target module declares as `KIND`."""

    options: type                                    # the options dataclass, read by agent.config
    target: Callable[[TargetSettings], Target]       # builds the target (usually the class itself)
    batch_size: int = 100                            # default `batch_size` for this kind
    binary_mode: bool = False                        # has a CloudEvents protocol binding: format "cloudevents-binary"
    # optional: checks against the whole config, returning the (completed) options; OptionError on a problem
    finish: Callable[[Any, TargetSettings, Any], Any] | None = None
    # optional: what `check` / `setup` do for a target of this kind (same methods as a CaptureAdmin)
    admin: Callable[[Any, TargetSettings], Any] | None = None


def kinds() -> list[str]:
    """The target kinds built: the modules that declare `KIND` (helpers shared by several kinds, like
    envelope.py, declare none)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and hasattr(importlib.import_module(f"{__name__}.{m.name}"), "KIND"))


def target_kind(kind: Any) -> TargetKind:
    """The declaration of `kind`. LookupError (with a message for a person) when there is none. Imports that
    kind's module only (importing every adapter, for `kinds()`, cost each agent process ~0.1 s CPU at start)."""
    spec = None
    if isinstance(kind, str) and re.fullmatch(r"[a-z][a-z0-9_]*", kind) \
            and kind in {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}:
        spec = getattr(importlib.import_module(f"{__name__}.{kind}"), "KIND", None)
    if spec is None:            # no such module, or a helper shared by several kinds (it declares no KIND)
        raise LookupError(f"must be one of {', '.join(kinds())}, got {kind!r}")
    if not isinstance(spec, TargetKind) or not is_dataclass(spec.options):
        raise TypeError(f"adapters/{kind}.py must declare KIND = TargetKind(options=<dataclass>, target=...)")
    return spec


def preflight(check: Callable[[TargetSettings], list]) -> Callable[[Any, TargetSettings], Any]:
    """A `TargetKind.admin` for a kind that creates nothing at setup, only checks: `check(settings)` gives
    the `cdc-agent check` lines (agent.changes.CheckItem) of what can be known before sending, sending
    nothing; what can change later (permissions, a receiver that is down) is a check failure or warning."""
    class _Preflight:
        def __init__(self, cfg: Any, settings: TargetSettings):
            self.settings = settings

        def check(self) -> list:
            return check(self.settings)

        def setup_sql(self) -> list[str]:
            return []

        def setup(self) -> list[str]:
            return []

    return _Preflight


def build_target(settings: TargetSettings) -> Target:
    return target_kind(settings.kind).target(settings)
