"""The settings one worker process runs with: one object, defaults in one place, serialised whole.

`launch` (and :func:`maskcls_hpo.run_sweep`) build one :class:`WorkerSettings` for the sweep, and the
supervisor writes a copy per worker process as JSON (``<logs>/worker-<i>.json``) that the process loads
(``python -m maskcls_hpo.hpo.worker FILE``). Adding a worker option means adding one field here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator
from sqlalchemy.engine import URL, make_url

from maskcls_hpo.hpo.store import HeartbeatSettings, resolve_storage_url, storage_folder

DEFAULT_MAX_CONSECUTIVE_FAILURES = 5
EXIT_HUNG = 4
"""Exit code of a worker process whose trial hung (``hpo/workers/_watchdog.py``); the supervisor starts a new one."""
DEFAULT_WATCHDOG_S = 600.0
"""Minimum seconds without a finished epoch before a trial counts as hung (``WorkerSettings.watchdog``)."""
DEFAULT_WATCHDOG_FIRST_EPOCH_S = 3600.0
"""Seconds a trial may take until its first epoch ends (``WorkerSettings.watchdog_first_epoch``)."""


class WorkerSettings(BaseModel):
    """What one worker needs.

    Attributes:
        kind: "sweep" (trials sampled from the sweep file) or "confirm" (the queued fold runs of a confirm
            study, :mod:`maskcls_hpo.hpo.select`: the configs come from the source study, no sweep file).
        sweep_path: the sweep file (required for kind "sweep").
        storage_url: the storage URL; in a settings file written for a worker process the password is
            left out (it comes from `password_file`, or env ``PGPASSWORD`` set by the supervisor).
        study_name: the study.
        n_trials: target of finished (COMPLETE + PRUNED) trials in the study (None: the study's stored target).
        overrides: config keys applied on top of the sweep (e.g. ``data_dir``, ``device``).
        heartbeat: heartbeat interval and grace period (seconds).
        timeout: seconds after which the worker starts no new trial (None: no limit).
        max_consecutive_failures: stop after this many FAIL trials in a row.
        worker_index: offsets the sampler seed (``SEED + worker_index``).
        worker_index_env: name of an environment variable that, when set in the worker process, gives the
            worker index instead (``SLURM_ARRAY_TASK_ID`` for the tasks of a Slurm array: one settings file
            for all of them).
        checkpoints: root folder of checkpoints (``<checkpoints>/<study>/trial_<n>/``); None: ``checkpoints/``
            beside an SQLite file, else ``storage/checkpoints`` (:func:`maskcls_hpo.hpo.store.storage_folder`).
        logs: folder of worker logs (``<logs>/<study>/worker-<i>.log``); None: ``logs/`` likewise.
        poll_interval: seconds between looks at the study while waiting for running trials.
        password_file: file holding the PostgreSQL password (read by each worker; never copied).
        mlflow_uri: MLflow tracking URI: each trial is logged as an MLflow run (None: no MLflow); see
            :mod:`maskcls_hpo.hpo.trial`. TensorBoard scalars go to :attr:`tensorboard_dir` always.
        check_data: before any trial, compare the data's fingerprint with the one the study was launched on
            (``hpo.launch.check_join``); launch's own workers skip it (launch has just checked the data).
        watchdog: seconds; a trial with no epoch finished for ``max(watchdog, watchdog_factor x its slowest
            epoch so far)`` (the first epoch: ``max(watchdog, watchdog_first_epoch)``) is hung: failed with
            reason ``hung``, re-queued once, and the worker process exits with code 4 to be replaced. 0 turns
            the watchdog off.
        watchdog_factor: see `watchdog`.
        watchdog_first_epoch: seconds allowed before the first epoch of a trial ends (model build, data
            loading, the first epoch itself).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["sweep", "confirm"] = "sweep"
    sweep_path: Path | None = None
    storage_url: str
    study_name: str
    n_trials: int | None = Field(default=None, ge=1)
    overrides: dict[str, Any] = Field(default_factory=dict)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings.from_env)
    timeout: float | None = Field(default=None, ge=0)
    max_consecutive_failures: int = Field(default=DEFAULT_MAX_CONSECUTIVE_FAILURES, ge=1)
    worker_index: int = 0
    worker_index_env: str | None = None
    checkpoints: Path | None = None
    logs: Path | None = None
    poll_interval: float = Field(default=1.0, gt=0)
    password_file: str | None = None
    mlflow_uri: str | None = None
    check_data: bool = True
    watchdog: float = Field(default=DEFAULT_WATCHDOG_S, ge=0)
    watchdog_factor: float = Field(default=5.0, ge=1)
    watchdog_first_epoch: float = Field(default=DEFAULT_WATCHDOG_FIRST_EPOCH_S, ge=0)

    @field_validator("heartbeat", mode="before")
    @classmethod
    def _heartbeat(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return HeartbeatSettings(**value)
        return value

    @model_validator(mode="after")
    def _sweep_needs_file(self) -> WorkerSettings:
        if self.kind == "sweep" and self.sweep_path is None:
            raise ValueError("a sweep worker needs sweep_path (the sweep file)")
        return self

    @field_serializer("heartbeat")
    def _dump_heartbeat(self, value: HeartbeatSettings) -> dict[str, int]:
        return {"interval": value.interval, "grace_period": value.grace_period, "max_retry": value.max_retry}

    @property
    def checkpoint_root(self) -> Path:
        """`checkpoints`, or the storage's default checkpoint folder."""
        return (
            Path(self.checkpoints) if self.checkpoints is not None else storage_folder(self.storage_url, "checkpoints")
        )

    @property
    def log_dir(self) -> Path:
        """``<logs>/<study>``: where the supervisor writes this study's worker logs and settings files."""
        root = Path(self.logs) if self.logs is not None else storage_folder(self.storage_url, "logs")
        return root / self.study_name

    @property
    def tensorboard_dir(self) -> Path:
        """``<tensorboard>/<study>``: the trials' TensorBoard folders (``tensorboard/`` beside an SQLite file,
        else ``storage/tensorboard``; :func:`maskcls_hpo.hpo.store.storage_folder`)."""
        return storage_folder(self.storage_url, "tensorboard") / self.study_name

    def for_this_process(self, environ: dict[str, str] | None = None) -> WorkerSettings:
        """A copy with `worker_index` taken from env `worker_index_env` when that is set (else `self`).

        Raises:
            LaunchError: the variable holds no whole number.
        """
        import os

        from maskcls_hpo.errors import LaunchError

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
        """`storage_url` with the password filled in from `password_file` when the URL has none."""
        return resolve_storage_url(self.storage_url, password_file=self.password_file)

    def without_password(self) -> tuple[WorkerSettings, str | None]:
        """A copy whose URL carries no password, and that password (None when the URL had none).

        Both places a URL can hold a password are emptied: the user part (``user:pw@``) and the query string
        (``?password=pw``). The supervisor writes the copy to the worker's settings file and passes the
        password, when it came inside the URL, as ``PGPASSWORD`` (libpq reads it); with a `password_file` the
        worker reads the file itself and no password travels at all.
        """
        url = make_url(self.storage_url)
        password = url.password if isinstance(url.password, str) else None
        query = dict(url.query)
        in_query = query.pop("password", None)
        if password is None and isinstance(in_query, str):
            password = in_query
        if password is None and in_query is None:
            return self, None
        # NOTE URL.set(password=None) keeps the password (set() skips None); build the URL anew
        bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, query)
        bare = bare.render_as_string(hide_password=False)
        return self.model_copy(update={"storage_url": bare}), (None if self.password_file else password)
