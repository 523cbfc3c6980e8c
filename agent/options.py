"""The vocabulary a target kind uses to declare its options; `agent.config` reads any such declaration.

A target kind's options are a frozen dataclass whose fields are annotated with these types:

    str, int, float, bool          the TOML value of that type (an int is accepted for a float)
    tuple[str, ...]                an array of strings
    dict[str, tuple[str, ...]]     a table of non-empty string arrays
    dict[str, str]                 a table of strings (`option(secret_keys=...)`: values of matching keys
                                   are secrets, as HTTP's Authorization header)
    Secret                         a secret: written as "${ENV}" (optionally "Bearer ${ENV}"), never as
                                   the value itself; the value is registered for redaction
    ConfigPath                     a path, relative to the config file's folder, resolved
    Url                            a URL with a valid host and port and one of `option(schemes=...)`; a
                                   password in it must be a ${ENV} reference (`userinfo=False`: none at all)
    Dsn                            a database URL (SQLAlchemy form; no host needed, as sqlite:///f.db); a
                                   password in it must be a ${ENV} reference; the kind validates the rest
    X | None                       optional (default None)

Every string may reference environment variables as ${NAME}. Constraints and help go in the field's metadata
through `option(...)`. Checks between fields go in `__post_init__`, raising `OptionError(key, problem)`; the
reader turns every problem into a ConfigError naming file, key and problem.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NewType

Secret = NewType("Secret", str)
ConfigPath = NewType("ConfigPath", Path)
Url = NewType("Url", str)
Dsn = NewType("Dsn", str)


class OptionError(ValueError):
    """Raised by an options class's `__post_init__`: `key` is the option's name (or dotted path below it)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def option(default: Any = dataclasses.MISSING, *, help: str = "", minimum: float | None = None,
           above: float | None = None, maximum: float | None = None, choices: tuple[str | int, ...] | None = None,
           schemes: tuple[str, ...] | None = None, secret_keys: str | None = None,
           nonempty: bool = False, http_headers: bool = False, writes: bool = False,
           userinfo: bool = True, internal: bool = False) -> Any:
    """A dataclass field with the constraints the config reader enforces:
    minimum / maximum (inclusive), above (exclusive: `above=0` means greater than zero), choices (allowed
    string values), schemes (allowed URL schemes), secret_keys (a regex: dict values of matching keys are
    secrets), nonempty (arrays and tables), help (one line, for documentation and messages),
    http_headers (a dict[str, str] of HTTP headers: names are HTTP tokens, values hold no control characters),
    writes (a ConfigPath the target writes: it may not be the config file, lie in state_dir, or be the file
    another target writes), userinfo (False: a Url may not carry user:password@, as for HTTP, where a header
    is the place for credentials), internal (not a key of the file: the kind's finish() fills it in from the
    rest of the config, as the sql target's state_dir)."""
    meta = {"help": help, "minimum": minimum, "above": above, "maximum": maximum, "choices": choices,
            "schemes": schemes, "secret_keys": secret_keys, "nonempty": nonempty, "http_headers": http_headers,
            "writes": writes, "userinfo": userinfo, "internal": internal}
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
