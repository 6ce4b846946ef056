"""How trials run, whoever starts them: one options object (:class:`RunOptions`) and what one worker reads.

`launch`, `confirm`, `finalize` and the `worker` verb (and their Python functions) build one
:class:`RunOptions` (``RunOptions.from_flags(...)``: the flags as the CLI and notebooks spell them) and pass it
whole. A worker process gets it inside its :class:`WorkerSettings`, serialised as JSON
(``<logs>/<study>/worker-<i>.json``) and loaded by ``python -m maskcls_hpo.hpo.workers FILE``. Adding a worker
option means adding one field to :class:`RunOptions` (and its flag to :data:`FLAGS`): every verb that runs
trials then has it.

Every value is checked here, before anything is stored or trained: bounds, finiteness, empty paths, files where
folders belong, device names. A bad value is one :class:`~maskcls_hpo.errors.LaunchError` line naming the flag.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url

from maskcls_hpo._util import check_path_name, path_under
from maskcls_hpo.errors import LaunchError, MaskclsError
from maskcls_hpo.hpo.store import HeartbeatSettings, ResolvedStorage, artifact_dir, resolve_storage, storage_folder

DEFAULT_MAX_CONSECUTIVE_FAILURES = 5
EXIT_HUNG = 4
"""Exit code of a worker process whose trial hung (``hpo/workers/_watchdog.py``); the supervisor starts a new one."""
DEFAULT_WATCHDOG_S = 600.0
"""Minimum seconds without a finished epoch before a trial counts as hung (:attr:`Watchdog.seconds`)."""
DEFAULT_WATCHDOG_FIRST_EPOCH_S = 3600.0
"""Seconds a trial may take until its first epoch ends (:attr:`Watchdog.first_epoch`)."""
MAX_TRIALS = 10_000_000
"""The largest budget (`--n-trials`) a study takes."""
MAX_SECONDS = 10 * 365 * 24 * 3600.0
"""The largest duration an option takes (ten years, in seconds): a larger one is a typo, not a plan."""

_DEVICE = re.compile(r"^(auto|cpu|cuda)$")
MAX_WORKERS = 4096
"""The most worker processes (``--workers``) one launch or confirm starts."""
MAX_WORKER_INDEX = 10_000_000
"""The largest ``--worker-index`` (it offsets the sampler's seed, which NumPy keeps in 32 bits)."""

FLAGS: dict[str, str] = {
    "storage": "--storage",
    "password_file": "--password-file",
    "heartbeat_interval": "--heartbeat-interval",
    "grace_period": "--grace-period",
    "data_dir": "--data-dir",
    "overrides": "overrides",
    "timeout": "--timeout",
    "checkpoints": "--checkpoints",
    "logs": "logs",
    "mlflow": "--mlflow",
    "watchdog": "--watchdog",
    "max_consecutive_failures": "--max-consecutive-failures",
    "poll_interval": "poll_interval",
    "device": "--device",
}
"""Each :meth:`RunOptions.from_flags` keyword and the flag it is given as (messages name the flag)."""


def _seconds(value: float | None, flag: str, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > MAX_SECONDS:
        low = "above 0" if positive else "at least 0"
        raise ValueError(f"{flag} must be a number of seconds {low} and at most {MAX_SECONDS:.0f}, got {value:g}")
    return value


def _folder(value: str | os.PathLike[str] | None, flag: str) -> Path | None:
    if value is None:
        return None
    if str(value).strip() == "":
        raise ValueError(f"{flag} is empty; give a folder")
    path = Path(value).expanduser()
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {path}: {parent} is a file, not a folder; give a folder")
            break
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; give a folder")
    return path


class Watchdog(BaseModel):
    """When a trial counts as hung (``hpo/workers/_watchdog.py``), in seconds.

    A trial with no epoch finished for ``max(seconds, factor x its slowest epoch so far)`` (the first epoch:
    ``max(seconds, first_epoch)``) is failed with reason ``hung``, re-queued once, and its worker process exits
    with :data:`EXIT_HUNG` to be replaced. `seconds` 0 turns the watchdog off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seconds: float = DEFAULT_WATCHDOG_S
    factor: float = Field(default=5.0, ge=1, le=1000)
    first_epoch: float = DEFAULT_WATCHDOG_FIRST_EPOCH_S

    @field_validator("seconds", "first_epoch")
    @classmethod
    def _duration(cls, value: float, info: ValidationInfo) -> float:
        flag = "--watchdog" if info.field_name == "seconds" else "watchdog first_epoch"
        checked = _seconds(value, flag)
        assert checked is not None
        return checked

    @property
    def on(self) -> bool:
        """False when `seconds` is 0 (the watchdog is off)."""
        return self.seconds > 0


class RunOptions(BaseModel):
    """How trials run, whoever starts them (`launch`, `confirm`, `finalize`, `worker`): one field per shared option.

    Attributes:
        storage: ``--storage``: a URL or an SQLite path; None: env ``MASKCLS_HPO_STORAGE``, else env
            ``OPTUNA_STORAGE``, else ``sqlite:///storage/maskcls_hpo.db``
            (:func:`maskcls_hpo.hpo.store.resolve_storage`).
        password_file: ``--password-file``: file holding the PostgreSQL password (read by each process; never
            copied into a settings file).
        heartbeat: ``--heartbeat-interval`` / ``--grace-period`` (seconds; env, else 30 / 120).
        data_dir: ``--data-dir``: overrides the configs' ``data_dir``.
        overrides: further config keys applied on top of the sweep's (or the stored) configs.
        device: ``--device``: ``auto`` (CUDA when visible), ``cpu`` or ``cuda`` (a GPU is picked with ``--gpus``,
            i.e. CUDA_VISIBLE_DEVICES); None: the config's. ``cuda`` where no GPU is visible is refused by the
            local backend before anything is stored, and by a worker before it claims a trial.
        timeout: ``--timeout``: seconds after which workers start no new trial (None: no limit).
        checkpoints: ``--checkpoints``: checkpoint root shared by all workers (``<root>/<study>/trial_<n>/``);
            None: ``checkpoints/`` beside an SQLite file, else ``storage/checkpoints``.
        logs: folder of worker logs (``<logs>/<study>/worker-<i>.log``); None: ``logs/`` likewise.
        mlflow: ``--mlflow``: MLflow tracking URI, each trial an MLflow run (None: no MLflow; TensorBoard
            scalars are written in any case).
        watchdog: ``--watchdog``: see :class:`Watchdog`.
        max_consecutive_failures: ``--max-consecutive-failures``: a worker stops after this many FAIL trials in a
            row.
        poll_interval: seconds between looks at the study (a worker waiting for the last slots, a launcher
            following its workers).

    Raises:
        LaunchError: from :meth:`from_flags`, one line naming the flag and what to give instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    storage: str | None = Field(default=None, repr=False)  # NOTE may hold a password: never in a repr
    password_file: Path | None = None
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings.from_env)
    data_dir: Path | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    device: str | None = None
    timeout: float | None = None
    checkpoints: Path | None = None
    logs: Path | None = None
    mlflow: str | None = None
    watchdog: Watchdog = Field(default_factory=Watchdog)
    max_consecutive_failures: int = Field(default=DEFAULT_MAX_CONSECUTIVE_FAILURES, ge=1, le=1_000_000)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)

    @field_validator("heartbeat", mode="before")
    @classmethod
    def _heartbeat(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return HeartbeatSettings(**value)
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        return _seconds(value, "--timeout")

    @field_validator("checkpoints", "logs", "data_dir", mode="before")
    @classmethod
    def _folder_text(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip() == "":  # NOTE Path("") is "."
            raise ValueError(f"{_flag(info)} is empty; give a folder")
        return value

    @field_validator("checkpoints", "logs", "data_dir")
    @classmethod
    def _folders(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _folder(value, _flag(info))

    @field_validator("password_file", mode="before")
    @classmethod
    def _password_file(cls, value: Any) -> Any:
        if value is not None and str(value).strip() == "":
            raise ValueError("--password-file is empty; give the file that holds the password")
        return value

    @field_validator("storage", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("storage", "mlflow")
    @classmethod
    def _not_blank(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value.strip() == "":
            raise ValueError(f"{_flag(info)} is empty; leave it out for the default")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(r"cuda:\d+", value):
            raise ValueError(
                f"--device {value}: pick the GPU with --gpus {value[5:]} (CUDA_VISIBLE_DEVICES) and give --device cuda"
            )
        if value is not None and not _DEVICE.match(value):
            raise ValueError(f"--device {value!r} is not a device; use auto, cpu or cuda")
        return value

    @field_serializer("heartbeat")
    def _dump_heartbeat(self, value: HeartbeatSettings) -> dict[str, int]:
        return {"interval": value.interval, "grace_period": value.grace_period, "max_retry": value.max_retry}

    @classmethod
    def from_flags(cls, **flags: Any) -> RunOptions:
        """Flat keywords as the CLI and notebooks spell them (None: not given) -> one checked object.

        Keywords: the keys of :data:`FLAGS` (``storage=``, ``password_file=``, ``heartbeat_interval=``,
        ``grace_period=``, ``data_dir=``, ``overrides=``, ``timeout=``, ``checkpoints=``, ``logs=``, ``mlflow=``,
        ``watchdog=`` (seconds), ``max_consecutive_failures=``, ``poll_interval=``, ``device=``).

        Raises:
            TypeError: an unknown keyword (a typo in a notebook).
            LaunchError: a bad value, one line naming the flag (``--timeout must be ...``).
        """
        unknown = sorted(set(flags) - set(FLAGS))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(FLAGS)}")
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            heartbeat = HeartbeatSettings.from_env(
                given.pop("heartbeat_interval", None), given.pop("grace_period", None)
            )
        except MaskclsError as err:
            raise LaunchError(str(err)) from None
        if "watchdog" in given and not isinstance(given["watchdog"], Watchdog):
            given["watchdog"] = {"seconds": given["watchdog"]}  # checked by _validated: one line naming --watchdog
        return _validated(cls, {**given, "heartbeat": heartbeat})

    def config_overrides(self) -> dict[str, Any]:
        """The config keys these options set: `overrides`, then ``data_dir`` and ``device`` when given."""
        out = dict(self.overrides)
        if self.data_dir is not None:
            out["data_dir"] = str(self.data_dir)
        if self.device is not None:
            out["device"] = self.device
        return out

    def resolve_storage(self, *, must_exist: bool = False) -> ResolvedStorage:
        """`storage` (or env / the default) as a full URL, with the password from `password_file` when needed.

        Raises:
            StorageError: see :func:`maskcls_hpo.hpo.store.resolve_storage`.
        """
        pw = str(self.password_file) if self.password_file is not None else None
        return resolve_storage(self.storage, must_exist=must_exist, password_file=pw)


def _flag(info: ValidationInfo) -> str:
    """The command-line flag of the field a :class:`RunOptions` validator checks (``--checkpoints``, ...)."""
    assert info.field_name is not None  # pydantic names the field for every field validator
    return FLAGS[info.field_name]


def _validated(cls: type[RunOptions], values: dict[str, Any]) -> RunOptions:
    """``cls(**values)``, a pydantic error turned into one LaunchError line naming the flag."""
    try:
        return cls(**values)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = str(first.get("ctx", {}).get("error") or first["msg"])
        flag = FLAGS.get(field, field)
        if flag and not message.startswith(flag):
            message = f"{flag}: {message}"
        raise LaunchError(f"{message}; nothing was started") from None


_SETTINGS_FLAGS = {"worker_index": "--worker-index", "n_trials": "--n-trials", "budget_epochs": "--budget-epochs"}

MAX_BUDGET_EPOCHS = 1_000_000_000
"""Largest ``--budget-epochs`` (epochs of all trials together)."""


class WorkerSettings(BaseModel):
    """What one worker process runs with: the study, its budget and the :class:`RunOptions`, serialised whole.

    Attributes:
        kind: "sweep" (trials sampled from the sweep file) or "confirm" (the queued fold runs of a confirm
            study: the configs come from the source study, no sweep file).
        study_name: the study. storage_url: the resolved storage URL; in a settings file written for a worker
            process the password is left out (it comes from ``options.password_file``, or env ``PGPASSWORD``).
        sweep_path: the sweep file (required for kind "sweep").
        n_trials: target of finished (COMPLETE + PRUNED) trials in the study (None: the study's stored target).
        budget_epochs: the most epochs all trials together may train (``--budget-epochs``; None: the study's
            stored one, if any): a trial starts only when its epochs fit (:func:`~maskcls_hpo.hpo.trial.epoch_room`).
        worker_index: offsets the sampler seed (``SEED + worker_index``).
        worker_index_env: an environment variable that, when set in the worker process, gives the worker index
            instead (``SLURM_ARRAY_TASK_ID`` for the tasks of a Slurm array: one settings file for all of them).
        check_data: before any trial, compare the data's fingerprint with the one the study was launched on;
            launch's own workers skip it (launch has just checked the data).
        options: how trials run (:class:`RunOptions`).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sweep", "confirm"] = "sweep"
    study_name: str
    storage_url: str
    sweep_path: Path | None = None
    n_trials: int | None = None
    budget_epochs: int | None = None
    worker_index: int = Field(default=0, ge=0, le=MAX_WORKER_INDEX)
    worker_index_env: str | None = None
    check_data: bool = True
    options: RunOptions = Field(default_factory=RunOptions)

    @model_validator(mode="before")
    @classmethod
    def _written_by_this_version(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "storage_url" in data and "options" not in data and "heartbeat" in data:
            raise ValueError("this settings file was written by another maskcls-hpo version; launch again")
        return data

    @field_validator("study_name")
    @classmethod
    def _study_name(cls, value: str) -> str:
        return check_path_name(value, "--study")  # it names the study's log, checkpoint and TensorBoard folders

    @field_validator("n_trials", "budget_epochs")
    @classmethod
    def _budget(cls, value: int | None, info: ValidationInfo) -> int | None:
        high = {"n_trials": MAX_TRIALS, "budget_epochs": MAX_BUDGET_EPOCHS}[str(info.field_name)]
        if value is not None and not 1 <= value <= high:
            flag = _SETTINGS_FLAGS[str(info.field_name)]
            raise ValueError(f"{flag} must be between 1 and {high}, got {value}")
        return value

    @model_validator(mode="after")
    def _sweep_needs_file(self) -> WorkerSettings:
        if self.kind == "sweep" and self.sweep_path is None:
            raise ValueError("a sweep worker needs sweep_path (the sweep file)")
        return self

    @classmethod
    def for_study(
        cls,
        study_name: str,
        options: RunOptions,
        *,
        storage_url: str | None = None,
        **fields: Any,
    ) -> WorkerSettings:
        """Settings for a study, the storage URL resolved from `options` unless given (already resolved).

        Raises:
            StorageError: the storage cannot be resolved. LaunchError: a bad field (one line).
        """
        url = storage_url if storage_url is not None else options.resolve_storage().url
        # NOTE the resolved URL travels as `storage_url` (its password is taken out before a file is written);
        # the raw --storage text, which may hold the password too, stays behind
        bare = options.model_copy(update={"storage": None})
        try:
            return cls(study_name=study_name, storage_url=url, options=bare, **fields)
        except ValidationError as err:
            first = err.errors()[0]
            message = str(first.get("ctx", {}).get("error") or first["msg"])
            if not message.startswith("--"):
                field = ".".join(map(str, first["loc"]))
                message = f"{_SETTINGS_FLAGS.get(field, field)}: {message}"
            raise LaunchError(f"{message}; nothing was started") from None

    @property
    def overrides(self) -> dict[str, Any]:
        """The config keys applied on top of every trial's config (:meth:`RunOptions.config_overrides`)."""
        return self.options.config_overrides()

    @property
    def checkpoint_root(self) -> Path:
        """``options.checkpoints``, or the storage's default checkpoint folder."""
        root = self.options.checkpoints
        return Path(root) if root is not None else storage_folder(self.storage_url, "checkpoints")

    @property
    def log_dir(self) -> Path:
        """``<logs>/<study>``: where the supervisor writes this study's worker logs and settings files."""
        root = self.options.logs
        base = Path(root) if root is not None else storage_folder(self.storage_url, "logs")
        return path_under(base, self.study_name, error=LaunchError)

    @property
    def tensorboard_dir(self) -> Path:
        """``<tensorboard>/<study>``: the trials' TensorBoard folders (``tensorboard/`` beside an SQLite file,
        else ``storage/tensorboard``; :func:`maskcls_hpo.hpo.store.storage_folder`)."""
        return path_under(storage_folder(self.storage_url, "tensorboard"), self.study_name, error=LaunchError)

    @property
    def study_checkpoints(self) -> Path:
        """``<checkpoints>/<study>``: the study's trial folders (``trial_<number>/``)."""
        return path_under(self.checkpoint_root, self.study_name, error=LaunchError)

    @property
    def run_folders(self) -> list[Path]:
        """Every folder a trial writes to: checkpoints, logs, TensorBoard, artifacts and, for SQLite, the
        database's own folder (where a full disk is looked for: ``maskcls_hpo._util.disk_full_reason``)."""
        folders = [self.checkpoint_root, self.log_dir, self.tensorboard_dir, artifact_dir(self.storage_url)]
        parsed = make_url(self.storage_url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:  # first: named when it ties for least space
            folders.insert(0, Path(parsed.database).resolve().parent)
        return folders

    def for_this_process(self, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """A copy with `worker_index` taken from env `worker_index_env` when that is set (else `self`).

        Raises:
            LaunchError: the variable holds no whole number.
        """
        env = os.environ if environ is None else environ
        raw = env.get(self.worker_index_env) if self.worker_index_env else None
        if raw is None or raw == "":
            return self
        try:
            index = int(raw)
        except ValueError:
            raise LaunchError(f"environment variable {self.worker_index_env}={raw!r} is not a worker index") from None
        return self.model_copy(update={"worker_index": index})

    def resolved_storage_url(self) -> str:
        """`storage_url` with the password filled in from ``options.password_file`` when the URL has none."""
        pw = self.options.password_file
        return resolve_storage(self.storage_url, password_file=str(pw) if pw is not None else None).url

    def without_password(self) -> tuple[WorkerSettings, str | None]:
        """A copy whose URL carries no password, and that password (None when the URL had none).

        Both places a URL can hold a password are emptied: the user part (``user:pw@``) and the query string
        (``?password=pw``). The supervisor writes the copy to the worker's settings file and passes the
        password, when it came inside the URL, as ``PGPASSWORD`` (libpq reads it); with a password file the
        worker reads the file itself and no password travels at all.
        """
        url = make_url(self.storage_url)
        password = url.password if isinstance(url.password, str) else None
        query = dict(url.query)
        in_query = query.pop("password", None)
        if password is None and isinstance(in_query, str):
            password = in_query
        if password is None and in_query is None:
            return self.model_copy(update={"options": self.options.model_copy(update={"storage": None})}), None
        # NOTE URL.set(password=None) keeps the password (set() skips None); build the URL anew
        bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, query)
        text = bare.render_as_string(hide_password=False)
        update = {"storage_url": text, "options": self.options.model_copy(update={"storage": None})}
        return self.model_copy(update=update), (None if self.options.password_file else password)
