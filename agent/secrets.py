"""Keeps secrets out of logs, errors and the health endpoint.

Config parsing registers every secret it resolves (DSN passwords, header values, signing secrets, and with
`register_url` the password and query values of every configured URL); `redact` replaces them, any password
inside a URL-looking or key=value string, with "***". Log handlers and every error text that leaves the
process pass through `redact`.

Redaction is linear in the text: the registered secrets are one compiled alternation (escaped, longest
first, rebuilt when a secret is added), and the two patterns below are anchored on a literal ("://",
"password"/"pwd") with no quantifier that can rescan what an earlier attempt scanned. Overlapping secrets
and secrets inside other secrets are hidden as the union of every place any of them occurs.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
MIN_SECRET = 3            # shorter values would redact half of every text

# ://user:PASSWORD@ in postgresql://, mysql+pymysql://, https:// ...: anchored on "://" (a scheme pattern
# in front would rescan every run of letters: quadratic); the password stops at the first "@" or space,
# and never runs into the next URL, so no two attempts scan the same characters
_URL_PASSWORD = re.compile(r"(?P<pre>://[^:/@\s]*:)(?P<pw>(?:(?!://)[^@\s])*)(?P<post>@)")
# libpq key=value and ODBC: password=..., PWD=...; an unclosed quote or brace runs to the end (redacting
# too much rather than rescanning from every later "password=")
_KV_PASSWORD = re.compile(r"(?i)(?P<pre>\b(?:password|pwd)\s*=\s*)"
                          r"(?P<pw>'(?:[^'\\]|\\.)*'?|\{[^}]*\}?|[^\s;]*)")
# query parameters whose value is a credential whatever the config wrote
_SECRET_PARAM = re.compile(r"(?i)token|key|secret|sig|pass|auth|code|credential|session")


class Redactor:
    """A set of secrets and the text filter that hides them. The module keeps one for the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._any: re.Pattern[str] | None = None      # finds the first occurrence quickly
        self._each: re.Pattern[str] | None = None     # every start position, the longest secret there

    def register(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET:
            return
        with self._lock:
            if value in self._secrets:
                return
            self._secrets.add(value)
            alt = "|".join(re.escape(s) for s in sorted(self._secrets, key=lambda s: (-len(s), s)))
            self._any, self._each = re.compile(alt), re.compile(f"(?=({alt}))")

    def register_url(self, url: str | None, env_keys: frozenset[str] = frozenset()) -> None:
        """A configured URL: its password (or a user name standing alone, as token@host), and the query values
        that are secrets: those written as ${ENV} in the config (`env_keys`) or under a name that says so
        (token, key, secret, signature, password, auth, code...), both as written and percent-decoded, since a
        receiver may echo either form. Other query values (`format=json`) stay readable in messages."""
        if not url:
            return
        try:
            p = urlsplit(url)
            user, password = p.username, p.password
            query = parse_qsl(p.query, keep_blank_values=True)
            raw_query = [part.partition("=") for part in p.query.split("&")]
        except ValueError:        # unparsable (bad port, brackets): config validation reports it
            return
        # a user name standing alone (https://TOKEN@host) is how some services pass a token
        for v in (password,) if password else (user,):
            if v:
                self.register(v)
                self.register(unquote(v))
        for k, v in query:
            if k in env_keys or _SECRET_PARAM.search(k):
                self.register(v)
        for k, _, v in raw_query:
            if unquote(k) in env_keys or _SECRET_PARAM.search(unquote(k)):
                self.register(v)

    def registered(self) -> list[str]:
        with self._lock:
            return sorted(self._secrets)

    def redact(self, text: str) -> str:
        if not text:
            return text
        text = self._mask_secrets(text)
        text = _URL_PASSWORD.sub(_mask_url_password, text)
        return _KV_PASSWORD.sub(_mask_kv_password, text)

    def _mask_secrets(self, text: str) -> str:
        any_, each = self._any, self._each      # one consistent pair (replaced together under the lock)
        if any_ is None:
            return text
        first = any_.search(text)
        if first is None:
            return text
        assert each is not None                  # set together with _any
        out: list[str] = []
        done = 0                # text[:done] is in out
        cover_start = cover_end = -1
        for m in each.finditer(text, first.start()):
            s, e = m.start(), m.end(1)
            if s <= cover_end:              # overlaps or touches the current run of secrets
                cover_end = max(cover_end, e)
                continue
            if cover_end >= 0:
                out.append(text[done:cover_start])
                out.append(MASK)
                done = cover_end
            cover_start, cover_end = s, e
        out.append(text[done:cover_start])
        out.append(MASK)
        out.append(text[cover_end:])
        return "".join(out)


def _mask_url_password(m: re.Match[str]) -> str:
    pre: str = m["pre"]
    post: str = m["post"]
    return pre + (MASK if m["pw"] else "") + post


def _mask_kv_password(m: re.Match[str]) -> str:
    pre: str = m["pre"]
    return pre + MASK


_default = Redactor()


def register(value: str | None) -> None:
    """Remember a secret so that `redact` removes it wherever it shows up."""
    _default.register(value)


def register_url(url: str | None, env_keys: frozenset[str] = frozenset()) -> None:
    """Remember the secrets of a configured URL (userinfo password, secret query values), see Redactor."""
    _default.register_url(url, env_keys)


def registered() -> list[str]:
    """The registered secrets, for handing to a child process (which must redact the same values)."""
    return _default.registered()


def redact(text: str) -> str:
    return _default.redact(text)


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
    else is taken as UTF-8. Config validation and the HTTP target both call this, so they cannot disagree.
    Unpadded base64 is accepted, as the Standard Webhooks libraries accept it (they pad before decoding)."""
    if secret.startswith("whsec_"):
        b64 = secret[6:].rstrip("=")
        try:
            key = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("starts with whsec_ but what follows is not base64") from None
        if not key:
            raise ValueError("starts with whsec_ but the key after it is empty")
        return key
    return secret.encode()
