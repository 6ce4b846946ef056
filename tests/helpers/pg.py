"""PostgreSQL for the tests: a fresh database per test on the machine's server; private servers to restart.

The machine's server is reached at env `MASKCLS_HPO_TEST_PG` (an admin URL such as
`postgresql://postgres@127.0.0.1:5432/postgres`), else at 127.0.0.1:5432 as user `postgres` (trust auth; see
README "The two commands"; `scripts/test-env.sh` starts it). Databases are created and dropped with psycopg.

PostgreSQL refuses to run as root and the tests run as root, so :class:`PrivateServer` runs `initdb` and
`pg_ctl` through `runuser -u postgres` in a folder owned by `postgres` (directly when not root). It is for
the test that stops and starts a server while workers run; nothing else should stop the machine's server.

The second half holds what the fault tests share: a tiny demo dataset (session fixture `tiny_demo`), sweep
files derived from `sweeps/smoke.py` (:func:`write_sweep`), the `maskcls-hpo` command as a subprocess
(:func:`cli`, :func:`cli_background`), and readers of the stored trials and worker logs.

tests/conftest.py loads this module as a plugin (``pytest_plugins``), so its fixtures reach every test; test modules
import its functions: ``from helpers.pg import cli, write_sweep``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from helpers import REPO_ROOT
from helpers.processes import sigint_as_in_a_terminal

__all__ = [
    "DEFAULT_ADMIN_URL",
    "admin_url",
    "pg_bindir",
    "free_port",
    "create_database",
    "drop_database",
    "ensure_role",
    "PrivateServer",
    "pg_admin_url",
    "pg_database",
    "private_pg",
    "wait_for",
    "tiny_demo",
    "write_sweep",
    "cli",
    "cli_background",
    "load_trials",
    "worker_logs",
    "worker_pid",
]

ENV_TEST_PG = "MASKCLS_HPO_TEST_PG"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The admin URL of the test server (env `MASKCLS_HPO_TEST_PG`, else the machine's server)."""
    return os.environ.get(ENV_TEST_PG) or DEFAULT_ADMIN_URL


def _conninfo(url: str, dbname: str | None = None) -> str:
    """libpq conninfo for a SQLAlchemy-style URL (`postgresql+psycopg://...` or `postgresql://...`)."""
    u = make_url(url)
    parts = {
        "host": u.host or "127.0.0.1",
        "port": str(u.port or 5432),
        "user": u.username or "postgres",
        "dbname": dbname or u.database or "postgres",
        "connect_timeout": "5",
    }
    if u.password:
        parts["password"] = str(u.password)
    return psycopg.conninfo.make_conninfo(**parts)


def database_url(admin: str, dbname: str, user: str | None = None, password: str | None = None) -> str:
    """A `postgresql+psycopg://` URL of database `dbname` on the admin URL's server."""
    u = make_url(admin).set(drivername="postgresql+psycopg", database=dbname)
    if user is not None:
        u = u.set(username=user, password=password)
    return u.render_as_string(hide_password=False)


def create_database(admin: str, owner: str | None = None) -> str:
    """Create a fresh database `maskcls_test_<hex>` and return its name."""
    name = f"maskcls_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(admin), autocommit=True) as con:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            query = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))
        con.execute(query)
    return name


def drop_database(admin: str, name: str) -> None:
    """Drop database `name`, closing its connections (`WITH (FORCE)`, PostgreSQL 13+)."""
    with psycopg.connect(_conninfo(admin), autocommit=True) as con:
        con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def ensure_role(admin: str, name: str, password: str) -> None:
    """Create login role `name` with `password` (or reset the password of an existing one)."""
    with psycopg.connect(_conninfo(admin), autocommit=True) as con:
        exists = con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        con.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))


def pg_bindir() -> Path:
    """Folder of the PostgreSQL server binaries (`initdb`, `pg_ctl`): the newest /usr/lib/postgresql/<v>/bin,
    else `pg_config --bindir`, else wherever `initdb` is on PATH.

    Raises:
        FileNotFoundError: no server binaries on this machine (install the `postgresql` package).
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").is_file():
            return Path(out)
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent
    raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl); install the `postgresql` package")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    """A throwaway PostgreSQL server on 127.0.0.1:`port` with trust auth, data in a temporary folder.

    As root, every server command runs as the `postgres` user (`runuser -u postgres --`), and the folder is
    made with :func:`tempfile.mkdtemp` in /tmp and owned by `postgres` (a pytest tmp_path under
    /tmp/pytest-of-root is not reachable for that user).
    """

    def __init__(self, settings: dict[str, object] | None = None) -> None:
        self.settings = dict(settings or {})  # server settings (`-c name=value`), e.g. {"max_connections": 20}
        self.bindir = pg_bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="maskcls-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> str:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.is_file() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}\n{log}")
        return done.stdout

    def init(self) -> PrivateServer:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        opts += "".join(f" -c {k}={v}" for k, v in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        try:
            with psycopg.connect(_conninfo(self.admin_url), autocommit=True):
                return True
        except psycopg.OperationalError:
            return False

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _check_server(url: str) -> None:
    try:
        with psycopg.connect(_conninfo(url), autocommit=True) as con:
            con.execute("SELECT 1")
    except psycopg.OperationalError as err:
        pytest.fail(
            f"no PostgreSQL server at {make_url(url).render_as_string(hide_password=True)}: "
            f"{str(err).strip().splitlines()[0]}. Start the machine's server (scripts/test-env.sh does; `make test` "
            f"runs it) or set {ENV_TEST_PG} to an admin URL; or deselect: -m 'not postgres'.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The admin URL of the test server, checked once per session (fails with what to do, never skips)."""
    url = admin_url()
    _check_server(url)
    return url


@pytest.fixture
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server: yields its `postgresql+psycopg://` URL; dropped after."""
    name = create_database(pg_admin_url)
    try:
        yield database_url(pg_admin_url, name)
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    """A private, running PostgreSQL server (`.admin_url`, `.stop()`, `.start()`); removed after the test."""
    server = PrivateServer().init()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate()` until it returns a truthy value (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- sweeps as real processes ---------------------------------------------------------------------

REPO = REPO_ROOT
SMOKE = REPO / "sweeps" / "smoke.py"


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A demo dataset of 24 persons (168 train images) at 36x48 pixels, written once per session."""
    from maskcls_hpo.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("tiny_demo")
    write_demo_dataset(out, persons=24, size=(36, 48), progress=False)
    return out


SLOW_MODEL = """

import time as _time

import timm as _timm
from timm.models import register_model as _register_model


@_register_model
def slow_test_efficientnet(pretrained=False, **kwargs):  # the test's model: test_efficientnet, slower
    model = _timm.create_model("test_efficientnet", pretrained=False, **kwargs)
    forward = model.forward

    def slow_forward(x):
        if model.training:
            _time.sleep(BATCH_SLEEP)
        return forward(x)

    model.forward = slow_forward
    return model


BASE_CONFIG["model"] = "slow_test_efficientnet"
"""


def write_sweep(
    folder: Path, name: str, data_dir: Path, epochs: int = 2, prune: bool = True, batch_sleep: float = 0.0
) -> Path:
    """`sweeps/smoke.py` with `epochs` epochs on `data_dir`, saved as `<folder>/<name>.py` (study `name`).

    `prune=False` replaces the Hyperband pruner with Optuna's `NopPruner`, so every trial runs all its epochs
    (a trial then lasts long enough to be killed in the middle). `epochs` must be >= 2 (smoke's `t_max`).
    `batch_sleep` > 0 makes every training batch that many seconds slower (a test_efficientnet whose forward
    sleeps), so a test that must catch a trial in its middle epochs has a window of seconds, not a fraction of
    one, on a fast machine as on a busy one.
    """
    text = SMOKE.read_text(encoding="utf-8")
    for old, new in (
        ('"epochs": 4', f'"epochs": {int(epochs)}'),
        ('"data_dir": "storage/demo"', f'"data_dir": {str(data_dir)!r}'),
    ):
        assert old in text, f"sweeps/smoke.py no longer contains {old!r}; update tests/helpers/pg.py:write_sweep"
        text = text.replace(old, new)
    if not prune:
        text += "\n\ndef make_pruner(config):  # the test's override\n    return optuna.pruners.NopPruner()\n"
    if batch_sleep > 0:
        text += SLOW_MODEL.replace("BATCH_SLEEP", repr(float(batch_sleep)))
    path = Path(folder) / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    return path


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKCLS_HPO_")}
    # wide log lines (rich wraps at 80 columns when not writing to a terminal); one thread per process
    env.update({"COLUMNS": "400", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m maskcls_hpo ARGS` in `cwd`; returns the finished process (stdout/stderr as text)."""
    return subprocess.run(
        [sys.executable, "-m", "maskcls_hpo", *args],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_background(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """Start `python -m maskcls_hpo ARGS` in `cwd` with stdout+stderr to `log` (default `cwd/<verb>.out`)."""
    log = Path(log or Path(cwd) / f"{args[0]}.out")
    fh = open(log, "wb")  # noqa: SIM115 - the child holds it; closed with the Popen's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskcls_hpo", *args],
        cwd=cwd,
        env=_env(env),
        stdout=fh,
        stderr=subprocess.STDOUT,
        preexec_fn=sigint_as_in_a_terminal,  # tests press Ctrl-C on it
    )
    proc.log_path = log  # type: ignore[attr-defined]
    fh.close()
    return proc


def load_trials(url: str, study: str):
    """All trials of `study` (FrozenTrial, by number) read with plain Optuna, no heartbeat.

    Raises LookupError while the study does not exist yet: NOTE Optuna's RDBStorage is opened only after a plain
    SQL look, because on a database whose tables `launch` is creating at that moment it stamps `alembic_version`
    itself and one of the two fails (PostgreSQL: duplicate key in pg_type_typname_nsp_index).
    """
    import optuna
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            query = sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :name")
            found = con.execute(query, {"name": study}).first() is not None
    except sqlalchemy.exc.SQLAlchemyError:  # no tables yet
        found = False
    finally:
        engine.dispose()
    if not found:
        raise LookupError(f"no study {study!r} yet")

    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        s = optuna.load_study(study_name=study, storage=storage)
        return sorted(s.get_trials(deepcopy=False), key=lambda t: t.number)
    finally:
        storage.engine.dispose()


def worker_logs(cwd: Path, study: str) -> dict[str, str]:
    """The `worker-<i>.log` files `launch` wrote for `study`, by file name: `logs/<study>/` beside an SQLite
    database in `cwd`, or `storage/logs/<study>/` under `cwd` for PostgreSQL."""
    cwd = Path(cwd)
    for folder in (cwd / "logs" / study, cwd / "storage" / "logs" / study):
        if folder.is_dir():
            return {p.name: p.read_text(errors="replace") for p in sorted(folder.glob("worker-*.log"))}
    return {}


def worker_pid(trial) -> int:
    """The process id in a trial's `worker` user attr (`host:pid/index`)."""
    m = re.fullmatch(r".*:(\d+)/\d+", str(trial.user_attrs.get("worker", "")))
    assert m, f"trial {trial.number} has no worker attr: {trial.user_attrs.get('worker')!r}"
    return int(m.group(1))
