"""Passwords never leave the process unmasked (problem C6): URL, query-string and libpq-keyword passwords.

Every message that may quote a storage URL or a driver error goes through :func:`mask_password`.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")


# `?password=...` / `&sslpassword=...` in a URL's query string, and libpq's `password=...` conninfo keyword
_KEY_PASSWORD = re.compile(
    r"(?P<head>(?:^|[?&;\s'\"(,])(?:ssl)?pass(?:word|wd)?\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|'.*|[^&\s'\",)]*)",
    re.IGNORECASE,
)


_QUERY_PASSWORD_KEYS = ("password", "sslpassword")


_KNOWN_SECRETS: set[str] = set()


def _remember_secret(password: str | None) -> None:
    """Remember `password` as written, URL-encoded (three ways) and as SQLAlchemy writes it in a URL."""
    if password:
        in_url = URL.create("x", username="u", password=password, host="h").render_as_string(hide_password=False)
        written = in_url[len("x://u:") : -len("@h")]
        _KNOWN_SECRETS.update({password, quote(password, safe=""), quote_plus(password), quote(password), written})


def mask_password(text: object) -> str:
    """Return `str(text)` with every URL password (and every password this process has seen) as `***`.

    Works on URLs (`postgresql+psycopg://u:pw@h/db` -> `postgresql+psycopg://u:***@h/db`), on passwords in
    a URL's query string (`?password=pw`, `&sslpassword=pw`, also URL-encoded: the raw text is replaced),
    libpq's `password=pw` keyword (also quoted: `password='p w'`), and on free text such as exception messages
    that quote a URL.
    A password seen before is masked as written and URL-encoded (``S3 cr3t``, ``S3%20cr3t``, ``S3+cr3t``).
    """
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + "***" + m.group("tail"), str(text))
    out = _KEY_PASSWORD.sub(lambda m: m.group("head") + ("***" if m.group("pw") else ""), out)
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):  # the longest first: no half-masked form
        out = out.replace(secret, "***")
    return out


def display_url(url: str | URL) -> str:
    """The URL as it may be printed: every password (user part or query string) replaced by `***`."""
    if isinstance(url, URL):
        return mask_password(url.render_as_string(hide_password=True))
    return mask_password(url)


def first_line(err: BaseException) -> str:
    """First line of a driver error, without SQLAlchemy's background link.

    Optuna's ``StorageInternalError`` ("An exception is raised during the commit ...") says nothing; the
    error it was raised from is used instead.
    """
    seen: set[int] = set()
    while err.__cause__ is not None and id(err) not in seen and type(err).__name__ == "StorageInternalError":
        seen.add(id(err))
        err = err.__cause__
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
