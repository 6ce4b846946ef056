"""The Optuna RDB storage every verb opens: schema check (C5), heartbeat, retries, SQLite WAL, PostgreSQL pool.

:func:`open_storage` checks the schema version before anything is written, turns on Optuna's heartbeat with
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, tunes SQLite for several local processes (WAL, busy
timeout) and PostgreSQL for dropped connections (`pool_pre_ping`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from sqlalchemy.engine import make_url

from maskcls_hpo._util import full_folder
from maskcls_hpo.errors import LaunchError, StorageError, StorageSchemaError
from maskcls_hpo.hpo._optuna import RETRIED_METHODS, alembic_dir
from maskcls_hpo.hpo.store._retry import _retry_budget, retry_db
from maskcls_hpo.hpo.store._secrets import display_url, first_line, mask_password

if TYPE_CHECKING:

    class RetryingRDBStorage(optuna.storages.RDBStorage):
        """The class :func:`_retrying_storage_class` builds on first use, as the type checker sees it."""

        _maskcls_retry_seconds: float | None


ENV_HEARTBEAT_INTERVAL = "MASKCLS_HPO_HEARTBEAT_INTERVAL"


ENV_GRACE_PERIOD = "MASKCLS_HPO_GRACE_PERIOD"


SQLITE_BUSY_TIMEOUT_S = 60.0


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


CONNECTIONS_PER_PROCESS = 2
"""PostgreSQL connections one process (a worker, `launch`, `status`) holds at most: main thread + heartbeat."""


def application_name() -> str:
    """``maskcls-hpo HOST:PID``: the PostgreSQL `application_name` of this process's connections (63 bytes max)."""
    return f"maskcls-hpo {socket.gethostname()}:{os.getpid()}"[:63]


def engine_kwargs(url: str) -> dict[str, Any]:
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
    path = sqlite_file(url)
    if path is not None and not path.is_file():
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
        raise cannot_open(url, err) from None
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


def cannot_open(url: str, err: BaseException) -> StorageError:
    """``cannot open storage URL: <driver's first line>``, saying why when an SQLite file's folder is the cause.

    SQLite says "disk I/O error" or "unable to open database file" where its folder is full (the WAL and
    shared-memory files cannot grow); the message then names the folder and its free space.
    """
    text = f"cannot open storage {display_url(url)!r}: {mask_password(first_line(err))}"
    path = sqlite_file(url)
    if path is not None:
        full = full_folder([path.resolve().parent])
        if full is not None:
            text += f"; {full}: free space there, then try again"
        elif not sqlite_writable(path):
            return read_only_error(path)
    return StorageError(text)


def read_only_error(path: Path) -> StorageError:
    """The one line for a write on an SQLite file that cannot be written, naming it and its folder."""
    return StorageError(
        f"storage {path} is read-only (it or its folder {path.resolve().parent} cannot be written): status, "
        "export, report and dashboard read it; to run trials, copy it to a writable folder and pass that --storage"
    )


def check_writable(url: str) -> None:
    """Refuse an existing SQLite file that this process cannot write, before anything else is checked.

    Raises:
        StorageError: :func:`read_only_error`.
    """
    path = sqlite_file(url)
    if path is not None and path.is_file() and not sqlite_writable(path):
        raise read_only_error(path)


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (``sqlite:///PATH`` or the URI form ``sqlite:///file:PATH?...``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    db = parsed.database
    return Path(db[len("file:") :] if db.startswith("file:") else db)


def sqlite_writable(path: Path) -> bool:
    """Whether this process may write the SQLite file `path` and create its journal (WAL, -shm) beside it.

    ``os.access`` sees a read-only mount and an immutable file (``chattr +i``) even for root, who is otherwise
    never refused by permissions.
    """
    folder = path.resolve().parent
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def read_only_url(url: str) -> str:
    """`url` as a reader opens it: an SQLite file that cannot be written opened read-only as an immutable URI
    (``sqlite:///file:PATH?mode=ro&immutable=1&uri=true``: no WAL or -shm file is needed, nothing is written);
    any other URL unchanged.

    An immutable open does not see a write-ahead log left behind by a process that died while writing (a clean
    exit folds it into the file).
    """
    path = sqlite_file(url)
    if path is None or not path.is_file() or sqlite_writable(path) or "mode=ro" in url:
        return url
    return f"sqlite:///file:{path.resolve()}?mode=ro&immutable=1&uri=true"


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
    if make_url(url).get_backend_name() != "postgresql":
        return None
    kwargs = engine_kwargs(url)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with engine.connect() as con:
            max_connections = int(con.execute(sqlalchemy.text("SHOW max_connections")).scalar_one())
            reserved = int(con.execute(sqlalchemy.text("SHOW superuser_reserved_connections")).scalar_one())
            superuser = con.execute(sqlalchemy.text("SHOW is_superuser")).scalar_one() == "on"
            in_use = int(
                con.execute(
                    sqlalchemy.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        "AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise StorageError(f"cannot open storage {display_url(url)!r}: {mask_password(first_line(err))}") from None
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
    from alembic.script import ScriptDirectory  # lazy: alembic (0.3 s), only for a database that exists

    script = ScriptDirectory(str(alembic_dir()))
    head = script.get_current_head()
    assert head is not None
    return head


# RDBStorage methods that talk to the database (the public API plus the private ones Optuna's cache layer
# and the heartbeat call).
@functools.lru_cache(maxsize=1)
def _retrying_storage_class() -> type[RetryingRDBStorage]:
    """An RDBStorage subclass whose database calls go through :func:`retry_db` (built on first use)."""
    base = optuna.storages.RDBStorage

    def wrap(name: str) -> Callable[..., Any]:
        method = getattr(base, name)

        @functools.wraps(method)
        def retried(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
            return retry_db(
                lambda: method(self, *args, **kwargs), f"calling {name.strip('_')}", self._maskcls_retry_seconds
            )

        return retried

    def native_value(name: str) -> Callable[..., Any]:
        method = namespace[name]

        @functools.wraps(method)
        def converted(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
            # NOTE Optuna stores attrs with json.dumps: numpy scalars (a GridSampler over numpy ints writes its
            # grid as a system attr) would raise "Object of type int64 is not JSON serializable" half-way
            # through creating a trial
            args = tuple(to_native(a) for a in args)
            kwargs = {k: to_native(v) for k, v in kwargs.items()}
            return method(self, *args, **kwargs)

        return converted

    def set_trial_param(
        self: RetryingRDBStorage,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        if isinstance(distribution, optuna.distributions.CategoricalDistribution) and any(
            type(c).__module__ == "numpy" for c in distribution.choices
        ):
            choices = cast(
                tuple[optuna.distributions.CategoricalChoiceType, ...], to_native(tuple(distribution.choices))
            )
            distribution = optuna.distributions.CategoricalDistribution(choices)
        return namespace["_set_trial_param_retried"](
            self, trial_id, param_name, float(cast(float, to_native(param_value_internal))), distribution
        )

    def record_heartbeat(self: RetryingRDBStorage, trial_id: int) -> None:
        # Retried at the heartbeat's own pace, so the heartbeat resumes within one interval of the
        # database coming back (Optuna's heartbeat thread would otherwise die on the first error).
        retry_db(
            lambda: base.record_heartbeat(self, trial_id),
            f"recording the heartbeat of trial id {trial_id}",
            self._maskcls_retry_seconds,
            max_delay=float(self.heartbeat_interval or 10),
        )

    namespace: dict[str, Any] = {name: wrap(name) for name in RETRIED_METHODS if hasattr(base, name)}
    for name in ("set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr", "set_study_system_attr"):
        namespace[name] = native_value(name)
    namespace["_set_trial_param_retried"] = namespace["set_trial_param"]
    namespace["set_trial_param"] = set_trial_param
    namespace["record_heartbeat"] = record_heartbeat

    def set_trial_state_values(
        self: RetryingRDBStorage, trial_id: int, state: optuna.trial.TrialState, values: Any = None
    ) -> bool:
        return retry_db(
            lambda: _write_locked_state_change(self, trial_id, state, values),
            "calling set_trial_state_values",
            self._maskcls_retry_seconds,
        )

    namespace["set_trial_state_values"] = set_trial_state_values
    namespace["_maskcls_retry_seconds"] = None
    namespace["__doc__"] = "Optuna's RDBStorage with transient database errors retried (maskcls-hpo)."
    namespace["__module__"] = __name__
    namespace["__qualname__"] = "RetryingRDBStorage"
    return cast("type[RetryingRDBStorage]", type("RetryingRDBStorage", (base,), namespace))


def _write_locked_state_change(
    storage: optuna.storages.RDBStorage, trial_id: int, state: optuna.trial.TrialState, values: Any
) -> bool:
    """Optuna's ``set_trial_state_values``, on SQLite inside a transaction that holds the write lock from its start.

    Optuna reads the trial's state, checks it and writes the new one in one session, relying on
    ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3 begins the transaction only at the
    write. So a worker telling COMPLETE could overwrite the FAIL another process's stale check wrote a moment
    before (issue 25; the stale check itself uses a compare-and-set, hpo/store/_claim.py). A no-op write first
    (``UPDATE trials SET state = state``) takes SQLite's write lock in the same session (Optuna's scoped session
    is the thread's one), so the read that follows sees the latest state and nothing can change it before the
    commit. PostgreSQL honours ``FOR UPDATE``: the call is passed through.
    """
    base = optuna.storages.RDBStorage.set_trial_state_values
    if storage.engine.dialect.name != "sqlite":
        return base(storage, trial_id, state, values)
    session = storage.scoped_session()
    try:
        session.execute(
            sqlalchemy.text("UPDATE trials SET state = state WHERE trial_id = :trial_id"), {"trial_id": trial_id}
        )
    except BaseException:
        session.rollback()
        session.close()
        raise
    return base(storage, trial_id, state, values)  # commits (or rolls back) the session, the lock with it


def __getattr__(name: str) -> type[RetryingRDBStorage]:
    # `maskcls_hpo.hpo.store._rdb.RetryingRDBStorage` is built on first use (:func:`_retrying_storage_class`); this
    # makes the name resolvable, so a storage can be pickled (e.g. to a multiprocessing child) and loaded again.
    if name == "RetryingRDBStorage":
        return _retrying_storage_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_storage(
    url: str,
    heartbeat: HeartbeatSettings | None = None,
    *,
    create: bool = True,
    retry_seconds: float | None = None,
) -> optuna.storages.RDBStorage:
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
    heartbeat = heartbeat or HeartbeatSettings.from_env()
    try:
        with first_use_lock(url, create=create):
            check_schema(url)
            storage = _construct(url, heartbeat, create)
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error) as err:
        raise cannot_open(url, err) from None
    except optuna.exceptions.StorageInternalError as err:  # e.g. a file without Optuna's tables (create=False)
        raise StorageError(
            f"{display_url(url)} is not an Optuna study database ({mask_password(first_line(err.__cause__ or err))}); "
            "pass the --storage that `launch` used"
        ) from None
    storage._maskcls_retry_seconds = _retry_budget(retry_seconds)
    return storage


FIRST_USE_ATTEMPTS = 5
"""Times the storage is constructed when another process creates the same schema at that moment."""


def _construct(url: str, heartbeat: HeartbeatSettings, create: bool) -> RetryingRDBStorage:
    """Build the retrying RDBStorage (creating Optuna's tables when `create`), again when another process
    created the schema at the same moment (:func:`is_schema_race`): the second try finds the tables made."""
    for attempt in range(FIRST_USE_ATTEMPTS):
        try:
            if make_url(url).get_backend_name() == "sqlite" and "mode=ro" not in url:  # read-only: changes nothing
                _enable_wal(url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return _retrying_storage_class()(
                    url,
                    engine_kwargs=engine_kwargs(url),
                    heartbeat_interval=heartbeat.interval,
                    grace_period=heartbeat.grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=heartbeat.max_retry, inherit_intermediate_values=True
                    ),
                    skip_table_creation=not create,
                )
        except sqlalchemy.exc.SQLAlchemyError as err:
            if attempt + 1 == FIRST_USE_ATTEMPTS or not is_schema_race(err):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


_SCHEMA_RACE = (
    "already exists",  # SQLite "table ... already exists", PostgreSQL DuplicateTable / DuplicateObject
    "unique constraint",  # SQLite "UNIQUE constraint failed: alembic_version.version_num"
    "duplicate key",  # PostgreSQL UniqueViolation (pg_type of a table made twice, alembic_version, version_info)
)


def is_schema_race(err: BaseException) -> bool:
    """True when `err` says another process created Optuna's schema at the same moment (a table, its type, the
    alembic or version row already there): constructing the storage again joins that schema."""
    if not isinstance(
        err, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError | sqlalchemy.exc.OperationalError
    ):
        return False
    text = str(getattr(err, "orig", None) or err).lower()
    return any(marker in text for marker in _SCHEMA_RACE)


@contextlib.contextmanager
def first_use_lock(url: str, *, create: bool = True) -> Iterator[None]:
    """Hold a lock that processes opening the same storage share while one checks and creates the schema.

    Two launches on a new SQLite file, a launch and the dashboard, or two workers would otherwise race to create
    Optuna's tables (issue 25: "UNIQUE constraint failed: alembic_version.version_num", "table ... already
    exists"); with it the first creates the schema and the others wait, then find it made and join.

    SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the file (left there: removing it would race;
    a folder where it cannot be made, e.g. a read-only one, is opened without it; a reader, `create` False,
    takes it only when it exists and adds no file, and is refused when the database file is missing: the lock
    file is made before the database, so a reader that finds the database waits for its creator). PostgreSQL:
    a session-level advisory lock (``pg_advisory_lock``) on a connection of its own. Other databases: no lock
    (the retry in :func:`_construct` still joins a schema made meanwhile).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    database = sqlite_file(url) or Path()  # the URI form of a read-only open (read_only_url) included
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not create and not database.is_file():
            # a reader creates nothing (connecting would make an empty file); callers resolve a missing path
            # first, so this is a file that vanished or a creator that has not begun yet
            raise StorageError(f"{display_url(url)}: no study database there (nothing was created)")
        if create:
            database.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(database.with_name(database.name + ".lock"), create=create):
            yield
    elif backend == "postgresql" and create and not _pg_schema_made(url):
        with _pg_advisory_lock(url):
            yield
    else:
        yield


@contextlib.contextmanager
def _file_lock(path: Path, create: bool) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on `path` (created when missing and `create`); none when it cannot be opened
    (a reader of a database whose creator never made the lock file adds no file)."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        yield  # e.g. a read-only folder: nothing can be created there, so nobody races to create a schema
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


FIRST_USE_LOCK_ID = 0x6D61736B636C73  # "maskcls": the advisory lock key of schema creation
"""PostgreSQL advisory lock key held while one process checks and creates the schema."""


def _pg_schema_made(url: str) -> bool:
    """Whether Optuna's schema is complete in the PostgreSQL database (``alembic_version`` holds its row, which
    Optuna writes last): then nobody creates it any more and no lock is taken (nor its extra connection, which
    would count against each worker's connection budget, docs/deploy/slurm.md). Closed before returning."""
    kwargs = engine_kwargs(url)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with engine.connect() as con:
            if not sqlalchemy.inspect(con).has_table("alembic_version"):
                return False
            return con.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).first() is not None
    finally:
        engine.dispose()


@contextlib.contextmanager
def _pg_advisory_lock(url: str) -> Iterator[None]:
    """``pg_advisory_lock(FIRST_USE_LOCK_ID)`` on a connection of its own for the block; released after (or when
    the connection closes). A server that cannot be reached raises here as opening the storage would."""
    kwargs = engine_kwargs(url)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": FIRST_USE_LOCK_ID})
            con.commit()
            try:
                yield
            finally:
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": FIRST_USE_LOCK_ID})
                con.commit()
    finally:
        engine.dispose()
