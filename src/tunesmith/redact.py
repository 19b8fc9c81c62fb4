"""Secrets in URLs: every place that writes or prints a storage URL shows it through redact_url, and
every error text that may quote one (SQLAlchemy's, psycopg2's) goes through scrub."""
from __future__ import annotations

import re
from urllib.parse import unquote

HIDDEN = "***"
# Query values that are secrets (psycopg2 accepts ?password=...); names are matched case-insensitively.
_SECRET_QUERY = re.compile(r"([?&](?:password|passwd|pwd|sslpassword|pass|[\w.-]*(?:secret|token|apikey|api_key))=)"
                           r"([^&#]*)", re.IGNORECASE)


def _split(url: str) -> tuple[str, str | None, str | None, str] | None:
    """(scheme://, user, password, rest after '@') or None without a userinfo part.

    The userinfo ends at the LAST '@': a password with an unescaped '@' or '/' is still hidden whole
    (SQLAlchemy would cut it at the first '@' and put the tail into the host name)."""
    m = re.match(r"([A-Za-z][\w+.-]*://)(.*)", url, re.DOTALL)
    if not m:
        return None
    scheme, rest = m.groups()
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo, after = rest[:at], rest[at + 1:]
    user, sep, password = userinfo.partition(":")
    return scheme, user, password if sep else None, after


def redact_url(url: str | None) -> str | None:
    """`scheme://user:***@host/db?...`: the password and secret query values hidden, the rest kept."""
    if not url:
        return url
    parts = _split(url)
    if parts is not None:
        scheme, user, password, after = parts
        url = f"{scheme}{user}{':' + HIDDEN if password is not None else ''}@{after}"
    return _SECRET_QUERY.sub(lambda m: m.group(1) + HIDDEN, url)


def secrets_of(url: str | None) -> list[str]:
    """The secret strings a URL holds, as written and %-decoded, longest first."""
    if not url:
        return []
    found = []
    parts = _split(url)
    if parts is not None and parts[2]:
        found.append(parts[2])
    found += [m.group(2) for m in _SECRET_QUERY.finditer(url) if m.group(2)]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, *urls: str | None) -> str:
    """`text` with each URL shown redacted and any of their secrets replaced by ***."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        for s in secrets_of(url):
            text = text.replace(s, HIDDEN)
    return text
