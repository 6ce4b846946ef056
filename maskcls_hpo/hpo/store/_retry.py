"""Transient database errors (a PostgreSQL restart, a network blip, a busy SQLite file), retried with backoff."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy

from maskcls_hpo.errors import StorageError
from maskcls_hpo.hpo.store._secrets import first_line, mask_password

log = logging.getLogger(__name__)

_T = TypeVar("_T")


ENV_DB_RETRY_SECONDS = "MASKCLS_HPO_DB_RETRY_SECONDS"


DB_RETRY_SECONDS = 600.0


# PostgreSQL SQLSTATEs worth retrying: connection exceptions (class 08), the server shutting down or
# starting up (57P01..57P03), serialization failures and deadlocks (40001, 40P01).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "40001", "40P01")


_TRANSIENT_FATAL = (
    "starting up",
    "shutting down",
    "in recovery",
    "administrator command",
    "too many clients",
    "not yet accepting",
    "remaining connection slots",
)


_last_db_error = -math.inf  # time.monotonic() of the last transient error this process saw


_retry_state = threading.local()


def is_transient_db_error(err: BaseException) -> bool:
    """True when `err` (or an exception it was raised from) is a database fault that may go away by itself.

    Transient: a connection refused, reset or closed (a PostgreSQL restart, a network blip), the server
    starting up or shutting down, a serialization failure or deadlock, a busy/locked SQLite file. Not
    transient: a wrong database name or password, a missing table, bad SQL, a constraint violation.
    Optuna wraps driver errors in ``StorageInternalError``; the whole `__cause__`/`__context__` chain is
    searched.
    """
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlalchemy.exc.DisconnectionError):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sqlite3.OperationalError):
            text = str(e).lower()
            return "locked" in text or "busy" in text
        module = type(e).__module__ or ""
        if module.startswith("psycopg"):
            name = type(e).__name__
            if name in ("InterfaceError",):
                return True
            sqlstate = getattr(e, "sqlstate", None)
            if sqlstate is None:
                # A failed connection attempt: refused / reset / timed out is transient; a FATAL reply from the
                # server (no such database or role, bad password, pg_hba) is not, unless it is starting up or
                # shutting down.
                text = str(e).lower()
                if "fatal:" in text:
                    return any(w in text for w in _TRANSIENT_FATAL)
                return name in ("OperationalError", "ConnectionTimeout") or "closed" in text
            return sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        e = e.__cause__ or e.__context__
    return False


def seconds_since_db_error() -> float:
    """Seconds since this process last saw a transient database error (`inf` if never)."""
    return time.monotonic() - _last_db_error


def _retry_budget(seconds: float | None) -> float:
    if seconds is not None:
        return float(seconds)
    raw = os.environ.get(ENV_DB_RETRY_SECONDS)
    try:
        return float(raw) if raw else DB_RETRY_SECONDS
    except ValueError:
        raise StorageError(f"environment variable {ENV_DB_RETRY_SECONDS}={raw!r} is not a number of seconds") from None


def retry_db(fn: Callable[[], _T], what: str, seconds: float | None = None, max_delay: float = 10.0) -> _T:
    """Call `fn()`; on a transient database error (:func:`is_transient_db_error`) wait and call it again.

    Waits 0.5, 1, 2, 4, ... seconds (at most `max_delay`) for up to `seconds` in total (default: env
    `MASKCLS_HPO_DB_RETRY_SECONDS`, else 600 s), logging one masked warning per retry, so a PostgreSQL
    restart or a short network outage does not kill a worker or fail its trial. A call made while another
    `retry_db` of the same thread is running is not retried again (the outer call owns the budget).

    Raises:
        Exception: what `fn` raised: the last error when the budget is spent, and any non-transient error at
            once.
    """
    global _last_db_error
    if getattr(_retry_state, "active", False):
        return fn()
    budget = _retry_budget(seconds)
    start = time.monotonic()
    delay = 0.5
    failures = 0
    _retry_state.active = True
    try:
        while True:
            try:
                result = fn()
            except Exception as err:
                if not is_transient_db_error(err):
                    raise
                _last_db_error = time.monotonic()
                waited = time.monotonic() - start
                if waited + delay > budget:
                    log.error(
                        "database still unreachable after %.0f s while %s; giving up: %s",
                        waited,
                        what,
                        mask_password(first_line(err)),
                    )
                    raise
                failures += 1
                log.warning(
                    "database error while %s (retry %d in %.1f s): %s",
                    what,
                    failures,
                    delay,
                    mask_password(first_line(err)),
                )
                time.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            if failures:
                _last_db_error = time.monotonic()
                log.warning("database reachable again after %.1f s (%s)", time.monotonic() - start, what)
            return result
    finally:
        _retry_state.active = False
