"""What must not leak from the engine: credentials in URLs, and the application's query texts.

A URL may carry ``user:password@`` (an admin endpoint or a health check behind Basic auth). The engine never
formats such a URL as it is: :func:`redact_url` replaces the user info with ``***`` wherever a URL meets a
log line, an error message, Redis or the ledger. :func:`url_secrets` names the parts to hand to a masker
(the operators register them with Airflow's), :func:`split_credentials` turns them into a Basic auth header
(urllib does not read them from the URL).

Query texts from ``pg_stat_activity`` belong to the application and may hold personal data or secrets:
:func:`query_text` is the one way to show one (shortened, delimited), and :func:`without_query_texts` drops
them from what leaves the machine (mails).
"""

from __future__ import annotations

import base64
import re
import urllib.parse

REDACTED = "***"
QUERY_TEXT_LIMIT = 200

# scheme://userinfo@ anywhere in a text; userinfo stops at the first '/', whitespace or quote, and the
# last '@' before the host wins (a password may itself contain '@' when unescaped).
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s'\"<>]*)@")

# a query text as query_text() shows it: between these two, which query_text() removes from the text itself
_OPEN, _CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧
_QUERY = re.compile(f"{_OPEN}[^{_CLOSE}]*{_CLOSE}")


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message holding URLs) with every URL's user info replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: the whole user info and the password, as written and unescaped."""
    match = _USERINFO.search(url)
    if match is None or not match["userinfo"]:
        return []
    userinfo = match["userinfo"]
    found = [userinfo, urllib.parse.unquote(userinfo)]
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        found += [password, urllib.parse.unquote(password)]
    return [s for i, s in enumerate(found) if s and s not in found[:i]]


def set_aside_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` with a literal user info replaced by ``***``, and that user info (None when there is none,
    or when it is a template, which holds no secret itself); :func:`restore_userinfo` undoes it."""
    match = _USERINFO.search(url)
    if match is None or not match["userinfo"] or match["userinfo"] == REDACTED or "{{" in match["userinfo"]:
        return url, None
    return redact_url(url), match["userinfo"]


def restore_userinfo(url: str, userinfo: str | None) -> str:
    """``url`` with the ``***`` that :func:`set_aside_userinfo` left put back to ``userinfo``."""
    if userinfo is None:
        return url
    return _USERINFO.sub(
        lambda m: f"{m['scheme']}{userinfo}@" if m["userinfo"] == REDACTED else m.group(0), url, count=1
    )


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its user info, and that user info as an HTTP Basic ``Authorization`` header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, {"Authorization": f"Basic {token}"}


def query_text(query: str | None, limit: int = QUERY_TEXT_LIMIT) -> str:
    """A query text from ``pg_stat_activity`` for a log line: one line, at most ``limit`` characters,
    delimited so that :func:`without_query_texts` can drop it again."""
    flat = " ".join((query or "").replace(_OPEN, "").replace(_CLOSE, "").split())
    if len(flat) > limit:
        flat = flat[: max(limit - 1, 0)] + "…"
    return f"{_OPEN}{flat}{_CLOSE}"


def without_query_texts(text: str) -> str:
    """``text`` with every :func:`query_text` left out (and URL user info redacted): for mails."""
    return redact_url(_QUERY.sub(f"{_OPEN}query text left out{_CLOSE}", text))
