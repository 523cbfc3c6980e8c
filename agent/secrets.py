"""Keeps secrets out of logs, errors and the health endpoint.

Config parsing registers every secret it resolves (DSN passwords, header values, signing secrets);
`redact` replaces them, and any password inside a DSN-looking string, with "***". Log handlers and
every error text that leaves the process pass through `redact`.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# postgresql://user:PASSWORD@host, mysql+pymysql://user:PASSWORD@host
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<post>@)")
# libpq key=value and ODBC: password=..., PWD=...
_KV_PASSWORD = re.compile(r"(?i)(?P<pre>\b(?:password|pwd)\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\{[^}]*\}|[^\s;]*)")


def register(value: str | None) -> None:
    """Remember a secret so that `redact` removes it wherever it shows up."""
    if value and len(value) >= 3:
        with _lock:
            _secrets.add(value)


def registered() -> list[str]:
    """The registered secrets, for handing to a child process (which must redact the same values)."""
    with _lock:
        return sorted(_secrets)


def redact(text: str) -> str:
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m["pre"] + ("***" if m["pw"] else "") + m["post"], text)
    text = _KV_PASSWORD.sub(lambda m: m["pre"] + "***", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


def dsn_password(dsn: str) -> str | None:
    """The password written in a DSN (URL or key=value form), or None."""
    m = _URL_PASSWORD.search(dsn)
    if m and m["pw"]:
        return m["pw"]
    m = _KV_PASSWORD.search(dsn)
    if m and m["pw"]:
        pw = m["pw"]
        if len(pw) >= 2 and (pw[0], pw[-1]) in (("'", "'"), ("{", "}")):   # libpq quotes, ODBC braces
            pw = pw[1:-1]
        return pw
    return None


def signing_key(secret: str) -> bytes:
    """The HMAC key for a webhook signing secret: "whsec_<base64>" (Standard Webhooks) is decoded, anything
    else is taken as UTF-8. Config validation and the HTTP target both call this, so they cannot disagree."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("starts with whsec_ but what follows is not base64") from None
    return secret.encode()
