"""Credentials inside storage and tracking URLs: never printed, never logged.

A URL can carry a credential in its user-info part (`postgresql://bob:pw@host/db`,
`https://token@host`) or in its query string (`?password=pw`, which libpq and SQLAlchemy
accept, or `?token=...`). `redact` hides both; `scrub` hides them in any text, such as an error
message or a traceback that quotes a URL, and also hides the secret values themselves wherever
they appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

HIDDEN = "***"
SECRET_PARAMETER = re.compile(r"(pass(word)?|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|credentials?)$", re.I)
URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@]*@")
QUERY_PAIR = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")


def redact(url: str) -> str:
    """`url` without its user-info and with the values of secret query parameters replaced by ***."""
    url = USER_INFO.sub(rf"\1{HIDDEN}@", url)
    return QUERY_PAIR.sub(
        lambda pair: f"{pair[1]}{pair[2]}={HIDDEN}" if SECRET_PARAMETER.search(pair[2]) else pair[0], url
    )


def without_credentials(url: str) -> str:
    """`url` with no user-info and no secret query parameters: an address fit to print as a link."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        url = url.replace(parts.netloc, parts.netloc.rpartition("@")[2], 1)
    if parts.query:
        kept = [pair for pair in parts.query.split("&") if pair and not SECRET_PARAMETER.search(pair.split("=")[0])]
        url = url.replace(f"?{parts.query}", "?" + "&".join(kept) if kept else "", 1)
    return url


def secrets_of(url: str | None) -> list[str]:
    """The credentials `url` carries: its user-info's password (on http(s), a user name alone: often a token), and
    the values of its secret query parameters."""
    if not url or "://" not in url:
        return []
    parts = urlsplit(url)
    found = []
    try:
        password, username = parts.password, parts.username
    except ValueError:  # a port that is not a number: the user-info is still there to hide
        password, username = None, None
    if password:
        found.append(password)
    elif username and parts.scheme in ("http", "https"):
        found.append(username)
    found += [value for name, value in parse_qsl(parts.query) if SECRET_PARAMETER.search(name) and value]
    found += [unquote(secret) for secret in found]  # as typed, and as a library may quote it back
    return [secret for secret in found if len(secret) >= 3]  # shorter ones would blank ordinary words


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL in it redacted and every one of `secrets` replaced by ***."""
    text = URL.sub(lambda match: redact(match[0]), text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text
