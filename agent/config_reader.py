"""The generic reader under agent/config.py: one TOML table at a time, with the key path for messages, unknown
keys refused, `${NAME}` expanded, literal secrets refused, numbers bounded; and a target kind's options
dataclass read by its annotations (agent/options.py: Secret, ConfigPath, Url, Dsn, option(...) metadata).

Every error is a ConfigError naming the file, the key path and the problem."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import secrets
from .config_checks import valid_host
from .errors import ConfigError
from .options import ConfigPath, Dsn, OptionError, Secret, Url

ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SQLITE_INT_MIN, SQLITE_INT_MAX = -2**63, 2**63 - 1   # counts and sizes end up in the spool (SQLite integers)
HTTP_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")   # an HTTP header name (RFC 9110 token)


# ---------------------------------------------------------------- parsing helpers


class _Reader:
    """Reads one TOML table, tracking the key path for messages and refusing unknown keys."""

    def __init__(self, file: str, path: str, table: Any, allowed: set[str]):
        self.file, self.path = file, path
        if not isinstance(table, dict):
            raise ConfigError(file, path, f"must be a table, got {_tname(table)}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(file, self.key(unknown[0]),
                              f"unknown key (allowed here: {', '.join(sorted(allowed))})")
        self.table = table

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def fail(self, k: str | None, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(k) if k else self.path, problem)

    def has(self, k: str) -> bool:
        return k in self.table

    def get(self, k: str, typ: type | tuple, default: Any = dataclasses.MISSING, *, env: bool = True) -> Any:
        if k not in self.table:
            if default is dataclasses.MISSING:
                raise self.fail(k, "required key is missing")
            return default
        v = self.table[k]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ) or (typ in (int, float) and isinstance(v, bool)):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise self.fail(k, f"must be {_article(want)}, got {_tname(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(k, f"must be a finite number, got {v}")
        if type(v) is int and not SQLITE_INT_MIN <= v <= SQLITE_INT_MAX:
            raise self.fail(k, f"is out of range: integers must be between {SQLITE_INT_MIN} and {SQLITE_INT_MAX}")
        if isinstance(v, str) and env:
            v = self.expand(k, v)
        return v

    def expand(self, k: str, v: str) -> str:
        def sub(m: re.Match) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise self.fail(k, f"environment variable {name} is not set (referenced as ${{{name}}})")
            return os.environ[name]
        v = ENV_RE.sub(sub, v)
        if "\x00" in v:                                # no file name, URL or identifier holds one
            raise self.fail(k, "contains a NUL character")
        return v

    def file_path(self, k: str, base: Path, default: Any = dataclasses.MISSING) -> Path:
        """A path key: relative to the config file's folder, resolved."""
        return _resolve(self, k, base, self.get(k, str, default))

    def str_list(self, k: str, default: Any = dataclasses.MISSING, *, nonempty: bool = False) -> tuple[str, ...]:
        """A list of strings (required unless a default tuple is given)."""
        v = self.get(k, list, default)
        if v is default and k not in self.table:
            return tuple(v)
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise self.fail(k, f"item {i + 1} must be a string, got {_tname(item)}")
        if nonempty and not v:
            raise self.fail(k, "must not be empty")
        return tuple(self.expand(k, s) for s in v)

    def opt_str_list(self, k: str, *, nonempty: bool = False) -> tuple[str, ...] | None:
        """A list of strings, or None when the key is absent."""
        return self.str_list(k, nonempty=nonempty) if k in self.table else None

    def positive(self, k: str, typ: type, default: Any, *, zero_ok: bool = False) -> Any:
        v = self.get(k, typ, default)
        if v is not None and (v < 0 or (v == 0 and not zero_ok)):
            raise self.fail(k, f"must be {'zero or more' if zero_ok else 'greater than zero'}, got {v}")
        return v


def _resolve(r: _Reader, k: str, base: Path, written: str) -> Path:
    if not written:
        raise r.fail(k, "must not be empty")
    try:
        return (base / written).resolve()
    except (OSError, ValueError, RuntimeError) as e:      # RuntimeError: a symlink loop
        raise r.fail(k, f"cannot be resolved as a path: {e}") from None


def _tname(v: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def _article(name: str) -> str:
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "list": "an array",
            "dict": "a table"}.get(name, name.replace("str", "a string").replace("dict", "a table"))


def _refuse_literal_secret(r: _Reader, k: str, raw: str, what: str) -> None:
    """A secret must be a ${NAME} reference, never written in the file itself."""
    pw = secrets.dsn_password(raw) if what == "password" else raw
    # allowed: "${TOKEN}" or an auth scheme word before it, as in "Bearer ${CRM_TOKEN}"
    if pw and not (ENV_RE.search(pw) and re.fullmatch(r"[A-Za-z-]*\s*", ENV_RE.sub("", pw))):
        raise r.fail(k, f"contains a {what} written in the file; put it in an environment variable and "
                        f"write ${{NAME}} instead (secrets never go in agent.toml)")


def _at_most(r: _Reader, k: str, v: Any, maximum: float) -> Any:
    if v is not None and v > maximum:
        raise r.fail(k, f"must be at most {maximum:g}, got {v}")
    return v


# ---------------------------------------------------------------- a target kind's options, read by annotation


def _options(r: _Reader, cls: type, base: Path) -> Any:
    """Read the options dataclass `cls` (agent/options.py vocabulary) from the table `r` reads."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue                        # filled by the kind's finish(), never read from the file
        if not r.has(f.name):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise r.fail(f.name, "required key is missing")
            continue
        values[f.name] = _option(r, f.name, hints[f.name], f.metadata, base)
    try:
        return cls(**values)
    except OptionError as e:
        raise r.fail(e.key, e.problem) from None


def _option(r: _Reader, k: str, typ: Any, meta: Any, base: Path) -> Any:
    if typing.get_origin(typ) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"option {k}: only `X | None` unions are supported, not {typ}")
        typ = inner[0]
    if typ is Secret:
        raw = r.get(k, str, env=False)
        _refuse_literal_secret(r, k, raw, "secret")
        return _register_secret(r.expand(k, raw))
    if typ is ConfigPath:
        return r.file_path(k, base)
    if typ is Dsn:
        raw = r.get(k, str, env=False)
        _refuse_literal_secret(r, k, raw, "password")
        dsn = r.expand(k, raw)
        secrets.register(secrets.dsn_password(dsn))
        return dsn
    if typ is Url:
        if not meta.get("schemes"):
            raise TypeError(f"option {k}: a Url needs option(schemes=(...)), the schemes it accepts")
        return _url(r, k, meta["schemes"], userinfo=meta.get("userinfo", True))
    origin = typing.get_origin(typ)
    if origin is tuple:
        return r.str_list(k, nonempty=bool(meta.get("nonempty")))
    if origin is dict:
        if typing.get_args(typ)[1:] and typing.get_origin(typing.get_args(typ)[1]) is tuple:
            return _list_table(r, k, meta)
        return _str_table(r, k, meta)
    if typ not in (str, int, float, bool):
        raise TypeError(f"option {k}: type {typ} is not one the config reader knows (see agent/options.py)")
    v = r.get(k, typ)
    choices = meta.get("choices")
    if choices and v not in choices:
        raise r.fail(k, f"must be one of {', '.join(map(str, choices))}, got {v!r}")
    if typ in (int, float):
        if meta.get("above") is not None and not v > meta["above"]:
            bound = "greater than zero" if meta["above"] == 0 else f"more than {meta['above']}"
            raise r.fail(k, f"must be {bound}, got {v}")
        if meta.get("minimum") is not None and v < meta["minimum"]:
            raise r.fail(k, f"must be at least {meta['minimum']}, got {v}")
        if meta.get("maximum") is not None and v > meta["maximum"]:
            raise r.fail(k, f"must be at most {meta['maximum']}, got {v}")
    return v


def _register_secret(value: str) -> str:
    secrets.register(value)
    secrets.register(value.split(" ", 1)[-1])      # "Bearer <token>": the token alone shows up too
    return value


def _str_table(r: _Reader, k: str, meta: Any) -> dict[str, str]:
    table = r.get(k, dict, env=False)
    if meta.get("nonempty") and not table:
        raise r.fail(k, "must not be empty")
    secret_re = re.compile(meta["secret_keys"]) if meta.get("secret_keys") else None
    out: dict[str, str] = {}
    for tk, tv in table.items():
        if not isinstance(tv, str):
            raise r.fail(f"{k}.{tk}", f"must be a string, got {_tname(tv)}")
        if meta.get("http_headers"):
            if not HTTP_TOKEN_RE.match(tk):
                raise r.fail(f"{k}.{tk}", "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~; "
                                          "no spaces or colons)")
        if secret_re is not None and secret_re.search(tk):
            _refuse_literal_secret(r, f"{k}.{tk}", tv, "secret")
            out[tk] = _register_secret(r.expand(f"{k}.{tk}", tv))
        else:
            out[tk] = r.expand(f"{k}.{tk}", tv)
        if meta.get("http_headers") and re.search(r"[\x00-\x08\x0a-\x1f\x7f]", out[tk]):
            raise r.fail(f"{k}.{tk}", "holds a control character (a line break would start another header)")
    return out


def _list_table(r: _Reader, k: str, meta: Any) -> dict[str, tuple[str, ...]]:
    """A table of string arrays (`owns = {"public.customers" = ["price_tier"]}`)."""
    table = r.get(k, dict, env=False)
    if meta.get("nonempty") and not table:
        raise r.fail(k, "must not be empty")
    out: dict[str, tuple[str, ...]] = {}
    for tk, tv in table.items():
        if not isinstance(tv, list) or not tv or not all(isinstance(x, str) and x for x in tv):
            raise r.fail(f"{k}.{tk}", f"must be a non-empty array of names, got {tv!r}")
        out[tk] = tuple(r.expand(f"{k}.{tk}", x) for x in tv)
    return out


def _url(r: _Reader, k: str, schemes: tuple[str, ...], *, userinfo: bool = True) -> str:
    raw = r.get(k, str, env=False)
    written = _split_url(r, k, raw)
    if written.password:
        _refuse_literal_secret(r, k, written.password, "secret")
    url = r.expand(k, raw)
    p = _split_url(r, k, url)
    env_keys = frozenset(qk for qk, qv in parse_qsl(written.query, keep_blank_values=True) if ENV_RE.search(qv))
    secrets.register_url(url, env_keys)
    allowed = " or ".join(f"{s}://" for s in schemes)
    if p.scheme not in schemes or not p.hostname:
        raise r.fail(k, f"must be {_article_for(allowed)} {allowed} URL with a host, got {secrets.redact(url)!r}")
    try:
        port = p.port
    except ValueError:
        if not (p.netloc.rpartition(":")[2] or "0").isdigit():
            raise r.fail(k, f"has a port that is not a number: {secrets.redact(url)!r}") from None
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise r.fail(k, f"has a port out of range (1-65535): {secrets.redact(url)!r}")
    if not valid_host(p.hostname):
        raise r.fail(k, f"has a host that is neither an IP address nor a DNS name: {p.hostname!r}")
    if not userinfo and (p.username or p.password):
        raise r.fail(k, "must not contain credentials (user:password@): send them in a header instead, e.g. "
                        'headers.Authorization = "Basic ${HOOK_AUTH}"')
    return url


def _split_url(r: _Reader, k: str, url: str):
    try:
        return urlsplit(url)
    except ValueError as e:                              # "Invalid IPv6 URL" and the like
        raise r.fail(k, f"is not a valid URL: {e}") from None


def _article_for(word: str) -> str:
    return "an" if word[:1] in "aeiouh" else "a"
