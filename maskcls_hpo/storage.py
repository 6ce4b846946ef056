"""Storage URL resolution, password masking, schema check and the Optuna RDB storage every verb opens.

One function, :func:`resolve_storage_url`, turns what a user typed (or nothing) into a SQLAlchemy URL, so
`launch`, `worker`, `status`, `export`, `dashboard` and `report` all open the same study (case C7).
:func:`open_storage` checks the schema version before anything is written (C5), turns on Optuna's
heartbeat with :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, tunes SQLite for several local
processes (WAL, busy timeout) and PostgreSQL for dropped connections (`pool_pre_ping`). Passwords never
leave this module unmasked (C6): every message goes through :func:`mask_password`.
"""

from __future__ import annotations

import os
import re
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "DEFAULT_STORAGE",
    "StorageError",
    "StorageSchemaError",
    "HeartbeatSettings",
    "resolve_storage_url",
    "mask_password",
    "display_url",
    "engine_kwargs",
    "check_schema",
    "open_storage",
    "artifact_dir",
    "rdb_of",
]

DEFAULT_STORAGE = "sqlite:///storage/maskcls_hpo.db"
ENV_STORAGE = "MASKCLS_HPO_STORAGE"
ENV_PASSWORD_FILE = "MASKCLS_HPO_PASSWORD_FILE"
ENV_HEARTBEAT_INTERVAL = "MASKCLS_HPO_HEARTBEAT_INTERVAL"
ENV_GRACE_PERIOD = "MASKCLS_HPO_GRACE_PERIOD"
SQLITE_BUSY_TIMEOUT_S = 60.0

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
_KNOWN_SECRETS: set[str] = set()


class StorageError(RuntimeError):
    """A storage URL that cannot be used; the message names the URL with its password masked."""


class StorageSchemaError(StorageError):
    """The database was made by another Optuna schema version; nothing was migrated."""


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
        """Explicit values win, then the environment, then the defaults."""

        def pick(value: int | None, env: str, default: int) -> int:
            if value is not None:
                return int(value)
            raw = os.environ.get(env)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise StorageError(f"environment variable {env}={raw!r} is not a whole number of seconds") from None

        return cls(
            interval=pick(interval, ENV_HEARTBEAT_INTERVAL, cls.interval),
            grace_period=pick(grace_period, ENV_GRACE_PERIOD, cls.grace_period),
        )


def _remember_secret(password: str | None) -> None:
    if password:
        _KNOWN_SECRETS.add(password)


def mask_password(text: object) -> str:
    """Return `str(text)` with every URL password (and every password this process has seen) as `***`.

    Works on URLs (`postgresql+psycopg://u:pw@h/db` -> `postgresql+psycopg://u:***@h/db`) and on free text
    such as exception messages that quote a URL.
    """
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + "***" + m.group("tail"), str(text))
    for secret in _KNOWN_SECRETS:
        out = out.replace(secret, "***")
    return out


def display_url(url: str | URL) -> str:
    """The URL as it may be printed: password replaced by `***`."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return mask_password(url)


def _read_password_file(path: str) -> str:
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise StorageError(f"cannot read the password file {p}: {err.strerror}") from None


def resolve_storage_url(
    value: str | os.PathLike[str] | None = None,
    *,
    must_exist: bool = False,
    password_file: str | None = None,
) -> str:
    """Turn `--storage` (or nothing) into a full SQLAlchemy URL.

    Order: `value`, else env `MASKCLS_HPO_STORAGE`, else ``sqlite:///storage/maskcls_hpo.db``. A value
    without `://` is a path to an SQLite file. `postgres://` and `postgresql://` become
    `postgresql+psycopg://`. A PostgreSQL URL without a password takes one from `password_file` (or env
    `MASKCLS_HPO_PASSWORD_FILE`); otherwise libpq itself reads `PGPASSWORD` / `~/.pgpass`, so the password
    need not be on the command line (where `ps` would show it).

    Args:
        must_exist: for SQLite, refuse a database file that does not exist (readers such as `status`,
            `export`, `dashboard` must never create an empty database).

    Raises:
        StorageError: unparsable URL, unsupported dialect, missing SQLite file when `must_exist`.
    """
    raw = os.fspath(value) if value is not None else os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE
    raw = raw.strip()
    if "://" not in raw:
        raw = "sqlite:///" + raw
    try:
        url = make_url(raw)
    except ArgumentError:
        raise StorageError(
            f"cannot parse storage URL {mask_password(raw)!r}: use sqlite:///PATH, a path to an SQLite file, "
            "or postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    _remember_secret(url.password if isinstance(url.password, str) else None)
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
                f"storage {display_url(url)!r} is an in-memory database: workers could not share it; "
                "give a file, e.g. sqlite:///storage/maskcls_hpo.db"
            )
        path = Path(db)
        if must_exist and not path.is_file():
            raise StorageError(
                f"no study database at {path} (from --storage {display_url(url)!r}); "
                "run `maskcls-hpo launch SWEEP` first or pass the right --storage"
            )
    elif backend != "mysql":
        raise StorageError(
            f"unsupported storage {display_url(url)!r}: use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    return url.render_as_string(hide_password=False)


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy `create_engine` keyword arguments for several worker processes on one storage.

    SQLite: a busy timeout of 60 s (`sqlite3.connect(timeout=...)`); WAL is set on the file by
    :func:`_enable_wal`. PostgreSQL: `pool_pre_ping` (a dropped connection, e.g. after a server restart,
    is replaced instead of failing the trial), a small pool per worker, and a 10 s connect timeout.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if backend == "postgresql":
        return {
            "pool_pre_ping": True,
            "pool_size": 2,
            "max_overflow": 4,
            "pool_recycle": 300,
            "connect_args": {"connect_timeout": 10},
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
    """Refuse a database whose Optuna schema differs from the installed Optuna's (case C5).

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
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
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


def _alembic_head() -> str:
    """The schema revision the installed Optuna writes (head of its bundled alembic scripts)."""
    from alembic.script import ScriptDirectory
    from optuna.storages import _rdb

    script = ScriptDirectory(str(Path(_rdb.__file__).parent / "alembic"))
    head = script.get_current_head()
    assert head is not None
    return head


def _short(err: BaseException) -> str:
    """First line of a driver error, without SQLAlchemy's background link."""
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def open_storage(
    url: str,
    heartbeat: HeartbeatSettings | None = None,
    *,
    create: bool = True,
):
    """Open Optuna's :class:`~optuna.storages.RDBStorage` on `url` (already resolved).

    Heartbeat is always on (`heartbeat` or :meth:`HeartbeatSettings.from_env`) with
    ``RetryHeartbeatStaleTrialCallback(max_retry, inherit_intermediate_values=True)``: a killed worker's
    trial becomes FAIL and a copy with the same params is queued (WAITING).

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
            return optuna.storages.RDBStorage(
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


def rdb_of(storage: object):
    """The :class:`RDBStorage` behind a study's storage (Optuna wraps it in a private caching layer)."""
    return getattr(storage, "_backend", storage)


def artifact_dir(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the study artifacts (Optuna ``FileSystemArtifactStore``) for a storage URL.

    SQLite: `<database folder>/artifacts`; otherwise `root` or `storage/artifacts`. Every worker and the
    dashboard must see the same folder (on several machines: a shared mount).
    """
    if root is not None:
        return Path(root)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(parsed.database or ".").resolve().parent / "artifacts"
    return Path("storage/artifacts")
