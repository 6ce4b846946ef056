"""Storage URL resolution, password masking, schema check and the Optuna RDB storage every verb opens.

One function, :func:`resolve_storage_url`, turns what a user typed (or nothing) into a SQLAlchemy URL, so
`launch`, `worker`, `status`, `export`, `dashboard` and `report` all open the same study (problem C7).
:func:`open_storage` checks the schema version before anything is written (C5), turns on Optuna's
heartbeat with :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, tunes SQLite for several local
processes (WAL, busy timeout) and PostgreSQL for dropped connections (`pool_pre_ping`). Passwords never
leave this module unmasked (C6): every message goes through :func:`mask_password`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import socket
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from maskcls_hpo.errors import StorageError, StorageSchemaError

__all__ = [
    "open_study",
    "DEFAULT_STORAGE",
    "StorageError",
    "StorageSchemaError",
    "HeartbeatSettings",
    "resolve_storage_url",
    "resolve_storage",
    "ResolvedStorage",
    "storage_source",
    "mask_password",
    "display_url",
    "engine_kwargs",
    "application_name",
    "CONNECTIONS_PER_PROCESS",
    "check_connection_budget",
    "check_schema",
    "open_storage",
    "artifact_dir",
    "storage_folder",
    "is_transient_db_error",
    "retry_db",
    "seconds_since_db_error",
    "to_native",
]

DEFAULT_STORAGE = "sqlite:///storage/maskcls_hpo.db"
ENV_STORAGE = "MASKCLS_HPO_STORAGE"
ENV_OPTUNA_STORAGE = "OPTUNA_STORAGE"  # Optuna's own CLI reads it (`optuna trials` without --storage)
ENV_PASSWORD_FILE = "MASKCLS_HPO_PASSWORD_FILE"
ENV_HEARTBEAT_INTERVAL = "MASKCLS_HPO_HEARTBEAT_INTERVAL"
ENV_GRACE_PERIOD = "MASKCLS_HPO_GRACE_PERIOD"
ENV_DB_RETRY_SECONDS = "MASKCLS_HPO_DB_RETRY_SECONDS"
SQLITE_BUSY_TIMEOUT_S = 60.0
DB_RETRY_SECONDS = 600.0

log = logging.getLogger("maskcls_hpo.hpo.storage")

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
# `?password=...` / `&sslpassword=...` in a URL's query string, and libpq's `password=...` conninfo keyword
_KEY_PASSWORD = re.compile(
    r"(?P<head>(?:^|[?&;\s'\"(,])(?:ssl)?pass(?:word|wd)?\s*=\s*)(?P<pw>[^&\s'\",)]*)", re.IGNORECASE
)
_QUERY_PASSWORD_KEYS = ("password", "sslpassword")
_KNOWN_SECRETS: set[str] = set()


@dataclass(frozen=True)
class HeartbeatSettings:
    """Optuna heartbeat for database storage, in seconds.

    A RUNNING trial whose last heartbeat is older than `grace_period` is failed by the next worker (or
    `status`) that looks, and re-queued with the same params by ``RetryHeartbeatStaleTrialCallback``.
    Defaults: `interval` 30 s, `grace_period` 120 s; env `MASKCLS_HPO_HEARTBEAT_INTERVAL` /
    `MASKCLS_HPO_GRACE_PERIOD`.

    Raises:
        StorageError: interval < 1 or grace_period <= interval.
    """

    interval: int = 30
    grace_period: int = 120
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise StorageError(f"--heartbeat-interval must be at least 1 second, got {self.interval}")
        if self.grace_period <= self.interval:
            raise StorageError(
                f"--grace-period ({self.grace_period} s) must be larger than --heartbeat-interval "
                f"({self.interval} s); use about 4x the interval"
            )

    @classmethod
    def from_env(cls, interval: int | None = None, grace_period: int | None = None) -> HeartbeatSettings:
        """Explicit values win, then the environment, then the defaults.

        A grace period given without an interval, and not above the default interval, gets an interval of a
        quarter of it (e.g. `--grace-period 8` alone -> interval 2 s), since the grace must exceed the interval.
        """

        def pick(value: int | None, env: str) -> int | None:
            if value is not None:
                return int(value)
            raw = os.environ.get(env)
            if raw is None or raw == "":
                return None
            try:
                return int(raw)
            except ValueError:
                raise StorageError(f"environment variable {env}={raw!r} is not a whole number of seconds") from None

        picked_interval = pick(interval, ENV_HEARTBEAT_INTERVAL)
        picked_grace = pick(grace_period, ENV_GRACE_PERIOD)
        if picked_interval is None and picked_grace is not None and picked_grace <= cls.interval:
            picked_interval = max(1, picked_grace // 4)
        return cls(
            interval=cls.interval if picked_interval is None else picked_interval,
            grace_period=cls.grace_period if picked_grace is None else picked_grace,
        )


def to_native(value: object) -> object:
    """`value` with numpy scalars and arrays (also inside dicts, lists and tuples) turned into Python ones.

    Optuna stores trial and study attrs as JSON; ``np.int64(32)`` would not serialise.
    """
    if isinstance(value, dict):
        return {to_native(k): to_native(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_native(v) for v in value)
    if type(value).__module__ == "numpy":
        tolist = getattr(value, "tolist", None)  # ndarray -> nested lists; np.generic -> Python scalar
        if tolist is not None:
            return tolist()
    return value


def _remember_secret(password: str | None) -> None:
    if password:
        _KNOWN_SECRETS.add(password)


def mask_password(text: object) -> str:
    """Return `str(text)` with every URL password (and every password this process has seen) as `***`.

    Works on URLs (`postgresql+psycopg://u:pw@h/db` -> `postgresql+psycopg://u:***@h/db`), on passwords in
    a URL's query string (`?password=pw`, `&sslpassword=pw`, also URL-encoded: the raw text is replaced) and
    libpq's `password=pw` keyword, and on free text such as exception messages that quote a URL.
    """
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + "***" + m.group("tail"), str(text))
    out = _KEY_PASSWORD.sub(lambda m: m.group("head") + ("***" if m.group("pw") else ""), out)
    for secret in _KNOWN_SECRETS:
        out = out.replace(secret, "***")
    return out


def display_url(url: str | URL) -> str:
    """The URL as it may be printed: every password (user part or query string) replaced by `***`."""
    if isinstance(url, URL):
        return mask_password(url.render_as_string(hide_password=True))
    return mask_password(url)


def _read_password_file(path: str) -> str:
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise StorageError(f"cannot read the password file {p}: {err.strerror}") from None


def storage_source(value: str | os.PathLike[str] | None = None, given_as: str = "--storage") -> tuple[str, str]:
    """Which storage a verb uses and where that came from, before any parsing.

    Order: `value` (the option), env ``MASKCLS_HPO_STORAGE``, env ``OPTUNA_STORAGE`` (the variable Optuna's
    own CLI reads), else :data:`DEFAULT_STORAGE`. An empty variable counts as unset.

    Args:
        given_as: how `value` was given, for messages: ``--storage`` (the CLI) or ``storage=`` (the API).

    Returns:
        (raw value, source): source is `given_as`, ``env MASKCLS_HPO_STORAGE``, ``env OPTUNA_STORAGE`` or
        ``default``.
    """
    if value is not None:
        return os.fspath(value), given_as
    for env in (ENV_STORAGE, ENV_OPTUNA_STORAGE):
        raw = os.environ.get(env, "").strip()
        if raw:
            return raw, f"env {env}"
    return DEFAULT_STORAGE, "default"


@dataclass(frozen=True)
class ResolvedStorage:
    """A resolved storage: the full SQLAlchemy `url` (password included: print :attr:`shown`) and its `source`.

    `source` is one of ``--storage`` (or the API's ``storage=``), ``env MASKCLS_HPO_STORAGE``,
    ``env OPTUNA_STORAGE``, ``default``.
    """

    url: str
    source: str

    @property
    def shown(self) -> str:
        """The URL, password masked, and where it came from: ``sqlite:///x.db (from env OPTUNA_STORAGE)``."""
        return f"{display_url(self.url)} ({describe_source(self.source)})"


def describe_source(source: str) -> str:
    """``from --storage``, ``from env OPTUNA_STORAGE``, ... or ``default`` (the words messages use)."""
    return "default" if source == "default" else f"from {source}"


def resolve_storage(
    value: str | os.PathLike[str] | None = None,
    *,
    must_exist: bool = False,
    password_file: str | None = None,
    given_as: str = "--storage",
) -> ResolvedStorage:
    """Turn `--storage` (or nothing) into a full SQLAlchemy URL and say where it came from.

    Order: `value`, else env `MASKCLS_HPO_STORAGE`, else env `OPTUNA_STORAGE`, else
    ``sqlite:///storage/maskcls_hpo.db`` (:func:`storage_source`). A value without `://` is a path to an
    SQLite file. `postgres://` and `postgresql://` become `postgresql+psycopg://`. A PostgreSQL URL without a
    password takes one from `password_file` (or env `MASKCLS_HPO_PASSWORD_FILE`); otherwise libpq itself
    reads `PGPASSWORD` / `~/.pgpass`, so the password need not be on the command line (where `ps` would
    show it). Every error names the source (``from env OPTUNA_STORAGE``, ...).

    Args:
        must_exist: for SQLite, refuse a database file that does not exist (readers such as `status`,
            `export`, `dashboard` must never create an empty database).
        given_as: the name of `value` in messages (``--storage`` for the CLI, ``storage=`` for the API).

    Raises:
        StorageError: unparsable URL, unsupported dialect, missing SQLite file when `must_exist`.
    """
    raw, source = storage_source(value, given_as)
    where = describe_source(source)
    raw = raw.strip()
    if "://" not in raw:
        raw = "sqlite:///" + raw
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as err:
        why = "the port must be a number" if isinstance(err, ValueError) and "int()" in str(err) else "unparsable"
        raise StorageError(
            f"cannot parse storage URL {mask_password(raw)!r} ({where}; {why}): use sqlite:///PATH, a path to an "
            "SQLite file, or postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    _remember_secret(url.password if isinstance(url.password, str) else None)
    for key in _QUERY_PASSWORD_KEYS:
        value = url.query.get(key)
        _remember_secret(value if isinstance(value, str) else None)
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
        if url.password is None:
            pw_file = password_file or os.environ.get(ENV_PASSWORD_FILE)
            if pw_file:
                password = _read_password_file(pw_file)
                _remember_secret(password)
                url = url.set(password=password)
    elif backend == "sqlite":
        db = url.database or ""
        if db in ("", ":memory:"):
            raise StorageError(
                f"storage {display_url(url)!r} ({where}) is an in-memory database: workers could not share it; "
                "give a file, e.g. sqlite:///storage/maskcls_hpo.db"
            )
        path = Path(db)
        if path.is_dir():
            found = sorted(str(f) for pattern in ("*.db", "*.sqlite", "*.sqlite3") for f in path.glob(pattern))
            hint = f"the database files in it: {', '.join(found)}" if found else "e.g. sqlite:///storage/maskcls_hpo.db"
            raise StorageError(
                f"storage {path} ({where} {display_url(url)!r}) is a folder, not an SQLite database file; "
                f"pass the file, {hint}"
            )
        if must_exist and not path.is_file():
            raise StorageError(
                f"no study database at {path} ({where} {display_url(url)!r}); "
                "run `maskcls-hpo launch SWEEP` first or pass the right --storage"
            )
    else:  # NOTE MySQL would need a driver the project does not install; the design names SQLite and PostgreSQL
        raise StorageError(
            f"unsupported storage {display_url(url)!r} ({where}): use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return ResolvedStorage(url=url.render_as_string(hide_password=False), source=source)


def resolve_storage_url(
    value: str | os.PathLike[str] | None = None,
    *,
    must_exist: bool = False,
    password_file: str | None = None,
    given_as: str = "--storage",
) -> str:
    """:func:`resolve_storage` without the source: the full SQLAlchemy URL (str, password included).

    Raises:
        StorageError: see :func:`resolve_storage`.
    """
    return resolve_storage(value, must_exist=must_exist, password_file=password_file, given_as=given_as).url


CONNECTIONS_PER_PROCESS = 2
"""PostgreSQL connections one process (a worker, `launch`, `status`) holds at most: main thread + heartbeat."""


def application_name() -> str:
    """``maskcls-hpo HOST:PID``: the PostgreSQL `application_name` of this process's connections (63 bytes max)."""
    return f"maskcls-hpo {socket.gethostname()}:{os.getpid()}"[:63]


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy `create_engine` keyword arguments for several worker processes on one storage.

    SQLite: a busy timeout of 60 s (`sqlite3.connect(timeout=...)`); WAL is set on the file by
    :func:`_enable_wal`. PostgreSQL: `pool_pre_ping` (a dropped connection, e.g. after a server restart,
    is replaced instead of failing the trial), a pool of at most :data:`CONNECTIONS_PER_PROCESS` (2: the main
    thread and the heartbeat thread; no overflow, so a process never holds more: README "Running on several
    machines"), a 10 s connect timeout, TCP keepalives (libpq `keepalives_*`) so that a connection to a
    machine that vanished errors out in about a minute instead of hanging, and an `application_name` naming
    the process (``maskcls-hpo HOST:PID``, seen in ``pg_stat_activity``).
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if backend == "postgresql":
        return {
            "pool_pre_ping": True,
            "pool_size": CONNECTIONS_PER_PROCESS,
            "max_overflow": 0,
            "pool_timeout": 120,
            "pool_recycle": 300,
            "connect_args": {
                "connect_timeout": 10,
                "application_name": application_name(),
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        }
    return {"pool_pre_ping": True}


def _enable_wal(url: str) -> None:
    """Put an SQLite database file in WAL mode (persistent in the file) so readers never block writers."""
    path = Path(make_url(url).database or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def check_schema(url: str) -> None:
    """Refuse a database whose Optuna schema differs from the installed Optuna's (problem C5).

    Reads the `alembic_version` table without creating or changing anything. A fresh (empty) database
    passes.

    Raises:
        StorageSchemaError: naming both versions and the command that upgrades the schema.
        StorageError: the database cannot be reached (message masked).
    """
    import optuna

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return  # no database yet: nothing to compare (and connecting would create an empty file)
    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    except (ImportError, sqlalchemy.exc.ArgumentError) as err:
        raise StorageError(f"cannot open storage {display_url(url)!r}: {mask_password(err)}") from None
    try:
        with engine.connect() as con:
            insp = sqlalchemy.inspect(con)
            if not insp.has_table("alembic_version"):
                return
            found = con.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
            made_by = None
            if insp.has_table("version_info"):
                made_by = con.execute(sqlalchemy.text("SELECT library_version FROM version_info")).scalar()
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise StorageError(f"cannot open storage {display_url(url)!r}: {mask_password(_short(err))}") from None
    finally:
        engine.dispose()
    head = _alembic_head()
    if found != head:
        by = f" (made by Optuna {made_by})" if made_by else ""
        raise StorageSchemaError(
            f"storage {display_url(url)!r} has Optuna schema {found}{by}, but the installed Optuna "
            f"{optuna.__version__} uses schema {head}. Nothing was changed. Back up the database, then run: "
            f"optuna storage upgrade --storage '{display_url(url)}'"
        )


def check_connection_budget(url: str, workers: int, launcher: int = CONNECTIONS_PER_PROCESS) -> dict[str, int] | None:
    """Refuse a launch whose workers would need more PostgreSQL connections than the server allows.

    Each worker process holds at most :data:`CONNECTIONS_PER_PROCESS` connections (2), the launching process
    `launcher` more. The server's room: ``max_connections``, less ``superuser_reserved_connections`` unless
    the role is a superuser, less the client connections open now (other than this check's own). Reads
    settings only; creates and changes nothing. SQLite: nothing to check (None).

    Returns:
        ``{"max_connections", "reserved", "in_use", "needed", "max_workers"}`` for PostgreSQL.

    Raises:
        LaunchError: naming the number of workers, the connections they need and the server's max_connections.
        StorageError: the server cannot be reached (masked URL).
    """
    from maskcls_hpo.errors import LaunchError

    if make_url(url).get_backend_name() != "postgresql":
        return None
    kwargs = engine_kwargs(url)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with engine.connect() as con:
            max_connections = int(con.execute(sqlalchemy.text("SHOW max_connections")).scalar())
            reserved = int(con.execute(sqlalchemy.text("SHOW superuser_reserved_connections")).scalar())
            superuser = con.execute(sqlalchemy.text("SHOW is_superuser")).scalar() == "on"
            in_use = int(
                con.execute(
                    sqlalchemy.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        "AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            )
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise StorageError(f"cannot open storage {display_url(url)!r}: {mask_password(_short(err))}") from None
    finally:
        engine.dispose()
    room = max_connections - (0 if superuser else reserved) - in_use - launcher
    needed = workers * CONNECTIONS_PER_PROCESS
    max_workers = max(0, room // CONNECTIONS_PER_PROCESS)
    if needed > room:
        held = f"{reserved} reserved for superusers, " if not superuser else ""
        raise LaunchError(
            f"{workers} workers need {needed} PostgreSQL connections ({CONNECTIONS_PER_PROCESS} each: main + "
            f"heartbeat), but the server at {display_url(url)} has max_connections={max_connections} "
            f"({held}{in_use} in use now, {launcher} for this launch): at most {max_workers} workers fit; "
            "use fewer --workers or raise max_connections on the server; nothing was started"
        )
    return {
        "max_connections": max_connections,
        "reserved": 0 if superuser else reserved,
        "in_use": in_use,
        "needed": needed,
        "max_workers": max_workers,
    }


def _alembic_head() -> str:
    """The schema revision the installed Optuna writes (head of its bundled alembic scripts)."""
    from alembic.script import ScriptDirectory

    from maskcls_hpo.hpo._optuna import alembic_dir

    script = ScriptDirectory(str(alembic_dir()))
    head = script.get_current_head()
    assert head is not None
    return head


def _short(err: BaseException) -> str:
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


# --- transient database errors ----------------------------------------------------------------------

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


def retry_db(fn, what: str, seconds: float | None = None, max_delay: float = 10.0):
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
                        mask_password(_short(err)),
                    )
                    raise
                failures += 1
                log.warning(
                    "database error while %s (retry %d in %.1f s): %s",
                    what,
                    failures,
                    delay,
                    mask_password(_short(err)),
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


# RDBStorage methods that talk to the database (the public API plus the private ones Optuna's cache layer
# and the heartbeat call).
@functools.lru_cache(maxsize=1)
def _retrying_storage_class():
    """An RDBStorage subclass whose database calls go through :func:`retry_db` (built on first use)."""
    import optuna

    base = optuna.storages.RDBStorage

    def wrap(name: str):
        method = getattr(base, name)

        @functools.wraps(method)
        def retried(self, *args, **kwargs):
            return retry_db(
                lambda: method(self, *args, **kwargs), f"calling {name.strip('_')}", self._maskcls_retry_seconds
            )

        return retried

    def native_value(name: str):
        method = namespace[name]

        @functools.wraps(method)
        def converted(self, *args, **kwargs):
            # NOTE Optuna stores attrs with json.dumps: numpy scalars (a GridSampler over numpy ints writes its
            # grid as a system attr) would raise "Object of type int64 is not JSON serializable" half-way
            # through creating a trial
            args = tuple(to_native(a) for a in args)
            kwargs = {k: to_native(v) for k, v in kwargs.items()}
            return method(self, *args, **kwargs)

        return converted

    def set_trial_param(self, trial_id, param_name, param_value_internal, distribution):
        if isinstance(distribution, optuna.distributions.CategoricalDistribution) and any(
            type(c).__module__ == "numpy" for c in distribution.choices
        ):
            distribution = optuna.distributions.CategoricalDistribution(to_native(tuple(distribution.choices)))
        return namespace["_set_trial_param_retried"](
            self, trial_id, param_name, float(to_native(param_value_internal)), distribution
        )

    def record_heartbeat(self, trial_id: int) -> None:
        # Retried at the heartbeat's own pace, so the heartbeat resumes within one interval of the
        # database coming back (Optuna's heartbeat thread would otherwise die on the first error).
        retry_db(
            lambda: base.record_heartbeat(self, trial_id),
            f"recording the heartbeat of trial id {trial_id}",
            self._maskcls_retry_seconds,
            max_delay=float(self.heartbeat_interval or 10),
        )

    from maskcls_hpo.hpo._optuna import RETRIED_METHODS

    namespace = {name: wrap(name) for name in RETRIED_METHODS if hasattr(base, name)}
    for name in ("set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr", "set_study_system_attr"):
        namespace[name] = native_value(name)
    namespace["_set_trial_param_retried"] = namespace["set_trial_param"]
    namespace["set_trial_param"] = set_trial_param
    namespace["record_heartbeat"] = record_heartbeat
    namespace["_maskcls_retry_seconds"] = None
    namespace["__doc__"] = "Optuna's RDBStorage with transient database errors retried (maskcls-hpo)."
    namespace["__module__"] = __name__
    namespace["__qualname__"] = "RetryingRDBStorage"
    return type("RetryingRDBStorage", (base,), namespace)


def __getattr__(name: str):
    # `maskcls_hpo.hpo.storage.RetryingRDBStorage` is built on first use (Optuna is a heavy import); this makes
    # the name resolvable, so a storage can be pickled (e.g. to a multiprocessing child) and loaded again.
    if name == "RetryingRDBStorage":
        return _retrying_storage_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_storage(
    url: str,
    heartbeat: HeartbeatSettings | None = None,
    *,
    create: bool = True,
    retry_seconds: float | None = None,
):
    """Open Optuna's :class:`~optuna.storages.RDBStorage` on `url` (already resolved).

    Heartbeat is always on (`heartbeat` or :meth:`HeartbeatSettings.from_env`) with
    ``RetryHeartbeatStaleTrialCallback(max_retry, inherit_intermediate_values=True)``: a killed worker's
    trial becomes FAIL and a copy with the same params is queued (WAITING). Every database call of the
    returned storage (including the heartbeat's) retries transient errors (:func:`retry_db`) for
    `retry_seconds` (default env `MASKCLS_HPO_DB_RETRY_SECONDS`, else 600 s); opening it does not: a URL
    that does not work fails at once.

    Args:
        create: False for readers; then a database without Optuna's tables is refused.

    Raises:
        StorageSchemaError, StorageError: see :func:`check_schema`; connection failures name the masked URL.
    """
    import optuna
    from optuna.exceptions import ExperimentalWarning

    heartbeat = heartbeat or HeartbeatSettings.from_env()
    check_schema(url)
    backend = make_url(url).get_backend_name()
    try:
        if backend == "sqlite":
            _enable_wal(url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            storage = _retrying_storage_class()(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=heartbeat.interval,
                grace_period=heartbeat.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=heartbeat.max_retry, inherit_intermediate_values=True
                ),
                skip_table_creation=not create,
            )
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error) as err:
        raise StorageError(f"cannot open storage {display_url(url)!r}: {mask_password(_short(err))}") from None
    except optuna.exceptions.StorageInternalError as err:  # e.g. a file without Optuna's tables (create=False)
        raise StorageError(
            f"{display_url(url)} is not an Optuna study database ({mask_password(_short(err.__cause__ or err))}); "
            "pass the --storage that `launch` used"
        ) from None
    storage._maskcls_retry_seconds = _retry_budget(retry_seconds)
    return storage


def storage_folder(url: str, name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder `name` (artifacts, checkpoints, logs) that belongs to a storage.

    SQLite: `<database folder>/<name>`, so two studies of the same name in different database files never
    share checkpoints; otherwise `root` or `storage/<name>` (on several machines: a shared mount).
    """
    if root is not None:
        return Path(root)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(parsed.database or ".").resolve().parent / name
    return Path("storage") / name


def artifact_dir(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the study artifacts (Optuna ``FileSystemArtifactStore``): :func:`storage_folder` "artifacts".

    Every worker and the dashboard must see the same folder.
    """
    return storage_folder(url, "artifacts", root)


def open_study(storage: str | Path | None = None, study_name: str | None = None, password_file: str | None = None):
    """Open an existing study for reading (``optuna.Study``).

    Args:
        storage: URL or SQLite path (default: env ``MASKCLS_HPO_STORAGE``, else env ``OPTUNA_STORAGE``, else
            ``sqlite:///storage/maskcls_hpo.db``).
        study_name: the study; None: the only study in the storage (a linked confirm study does not count).

    Raises:
        StorageError: no such database (nothing is created), no such study, or several studies and no name;
            each message names the storage and where it came from (``from env OPTUNA_STORAGE``, ...).
    """
    import optuna

    resolved = resolve_storage(storage, must_exist=True, password_file=password_file)
    rdb = open_storage(resolved.url, create=False)
    try:
        names = optuna.get_all_study_names(rdb)  # summaries would load every trial of every study
    except Exception as err:  # noqa: BLE001 - a database without Optuna's tables
        raise StorageError(f"cannot read studies from {resolved.shown}: {mask_password(err)}") from None
    if study_name is None:
        candidates = names
        if len(names) > 1:  # a linked confirm study (`S-confirm`) is not a candidate for the default
            from maskcls_hpo.hpo.confirm import KIND_CONFIRM, ConfirmAttrs

            linked = {
                s.study_name for s in rdb.get_all_studies() if s.user_attrs.get(ConfirmAttrs.KIND) == KIND_CONFIRM
            }
            candidates = [n for n in names if n not in linked]
        if len(candidates) != 1:
            listed = ", ".join(names) if names else "none"
            raise StorageError(f"storage {resolved.shown} holds {len(names)} studies ({listed}); pass --study NAME")
        study_name = candidates[0]
    if study_name not in names:
        raise StorageError(f"no study '{study_name}' in {resolved.shown} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=rdb)
