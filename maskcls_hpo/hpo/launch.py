"""`launch` as a Python function: check everything once, build the data cache once, prepare the study, run workers.

Order (each step refuses with one clear line, a :class:`~maskcls_hpo.errors.MaskclsError`, before any
trial starts):

1. load the sweep file (syntax, missing objects, config keys);
2. open the storage (schema check) and, for an existing study, compare the search space with the stored one
   (problem C3 in docs/ARCHITECTURE.md) before the slow data step;
3. check the dataset (every problem by path: C9) and the pretrained weights (offline: C8), and build the
   decoded-image cache once, shared by every worker process;
4. create or resume the study, store its budget, enqueue the sweep's known-good settings;
5. run K workers through a backend (:class:`~maskcls_hpo.hpo.workers.WorkerBackend`): local processes
   (:class:`~maskcls_hpo.hpo.workers.LocalWorkers`) or one Slurm array job
   (:class:`~maskcls_hpo.hpo.workers.SlurmWorkers`), and follow them until the study holds `n_trials` finished
   trials (C1), calling `on_progress` with a :class:`Progress` snapshot.

Steps 1-4 are :func:`prepare_sweep`, step 5 is :func:`run_workers`; :func:`run_sweep` does both. With the
Slurm backend the cluster is checked (commands, partition, GPUs, SQLite on one node) before step 2, and a
PostgreSQL server's ``max_connections`` against the workers' needs
(:func:`~maskcls_hpo.hpo.store.check_connection_budget`) before step 2 as well, so a refused launch
submits nothing and changes nothing stored.

Step 4 logs a warning when the sweep's sampler or pruner wastes the budget (``sweep.budget_warnings``: random
start-up trials that leave fewer than half of `n_trials` to TPE, a pruner warm-up that prunes at epoch 1).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo._optuna import study_id_of
from maskcls_hpo.hpo.attrs import StudyAttrs
from maskcls_hpo.hpo.signals import Interrupted, stop_requested, stop_signals
from maskcls_hpo.hpo.store import (
    HeartbeatSettings,
    StudyCounts,
    best_of,
    check_connection_budget,
    count_trials,
    display_url,
    open_storage,
    resolve_storage,
)
from maskcls_hpo.hpo.trial import Sweep, budget_warnings, check_mlflow, load_sweep, save_study_note, study_note
from maskcls_hpo.hpo.workers import (
    LocalWorkers,
    Progress,
    ProgressReader,
    SlurmOptions,
    SlurmWorkers,
    WorkerBackend,
    WorkerSettings,
    check_cluster,
    prepare_data,
)

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        study_name: the study; storage: its storage URL with the password masked.
        n_trials: the budget; counts: trials by state at the end.
        reached: the study holds `n_trials` finished trials.
        best_value / best_trial: the best COMPLETE trial's value and number (None without one).
        seconds: wall time of the workers (0 when none ran).
        worker_exit_codes: by worker index (negative: killed by that signal); empty when no worker ran.
        interrupted: stopped by Ctrl-C / SIGTERM (running trials were failed and queued to resume).
        message: one line saying how it ended (why, when the budget was not reached).
        log_dir: folder of the worker logs.
        backend: "local" or "slurm"; job_id: the Slurm array job (None locally or before submitting);
        script: the sbatch script written (Slurm); task_states: Slurm task index -> last state seen.
    """

    study_name: str
    storage: str
    n_trials: int
    counts: StudyCounts
    reached: bool
    best_value: float | None = None
    best_trial: int | None = None
    seconds: float = 0.0
    worker_exit_codes: list[int] = field(default_factory=list)
    interrupted: bool = False
    message: str = ""
    log_dir: Path | None = None
    backend: str = "local"
    job_id: str | None = None
    script: Path | None = None
    task_states: dict[int, str] = field(default_factory=dict)


def prepare_study(
    sweep: Sweep,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    n_trials: int,
    study_attrs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create or resume the study once, before any worker starts.

    Checks the sweep's search space against the stored one (C3), stores the trial budget and metadata as
    study user attrs, and enqueues the sweep's KNOWN_GOOD settings (skip_if_exists). Logs a warning for each
    of :func:`~maskcls_hpo.hpo.trial.budget_warnings` (the sampler's start-up sized to `n_trials`).

    Raises:
        SweepError: the search space differs from the stored one (nothing is changed in that case).
    """
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sweep.make_sampler(0, n_trials),
        pruner=sweep.make_pruner(),
        load_if_exists=True,
    )
    sweep.check_study_compatible(study)
    study.set_user_attr(StudyAttrs.N_TRIALS, int(n_trials))
    study.set_user_attr(StudyAttrs.SWEEP, str(sweep.path))
    for key, value in (study_attrs or {}).items():
        study.set_user_attr(key, value)
    save_study_note(study, study_note(study_name, sweep.path, n_trials, study_attrs))
    for params in sweep.known_good:
        study.enqueue_trial(params, skip_if_exists=True)
    for line in budget_warnings(sweep, int(n_trials)):
        log.warning("%s", line)
    return study


@dataclass
class PreparedSweep:
    """A study made ready by :func:`prepare_sweep`: what :func:`run_workers` needs to run and follow workers.

    Attributes:
        sweep: the loaded sweep; study: the created or resumed study; storage: its open storage.
        settings: the worker settings every worker gets (password inside `storage_url` when it was given).
        result: the result so far (counts before any worker ran, best value, log folder).
        epochs: the sweep's epochs per trial (for the live view's ETA).
        storage_shown: the storage URL (password masked) and where it came from, for messages.
        started: ``time.monotonic()`` when this launch's workers were started on standby (None: not yet);
            the live view's elapsed time counts from it.
    """

    sweep: Sweep
    study: optuna.Study
    storage: Any
    settings: WorkerSettings
    result: SweepResult
    epochs: int | None = None
    storage_shown: str = ""
    started: float | None = None

    @property
    def n_trials(self) -> int:
        """The budget: finished trials the study should hold."""
        return self.result.n_trials

    def counts(self) -> StudyCounts:
        """Trials by state now (one SQL statement)."""
        return count_trials(self.storage, study_id_of(self.study))


def _settings(
    loaded: Sweep,
    url: str,
    name: str,
    n_trials: int,
    extra: dict[str, Any],
    heartbeat: HeartbeatSettings,
    timeout: float | None,
    checkpoints: str | Path | None,
    logs: str | Path | None,
    poll_interval: float,
    password_file: str | Path | None,
    mlflow: str | None,
    watchdog: float | None = None,
) -> WorkerSettings:
    return WorkerSettings(
        sweep_path=loaded.path,
        storage_url=url,
        study_name=name,
        n_trials=n_trials,
        overrides=extra,
        heartbeat=heartbeat,
        timeout=timeout,
        checkpoints=Path(checkpoints) if checkpoints is not None else None,
        logs=Path(logs) if logs is not None else None,
        poll_interval=poll_interval,
        password_file=str(password_file) if password_file is not None else None,
        mlflow_uri=mlflow,
        check_data=False,  # launch checks the data and builds the cache itself (prepare_data)
        **({"watchdog": watchdog} if watchdog is not None else {}),
    )


def prepare_sweep(
    sweep: str | Path | Sweep,
    n_trials: int,
    *,
    storage: str | Path | None = None,
    study_name: str | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    timeout: float | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    checkpoints: str | Path | None = None,
    logs: str | Path | None = None,
    password_file: str | Path | None = None,
    mlflow: str | None = None,
    watchdog: float | None = None,
    poll_interval: float = 1.0,
    on_message: Callable[[str], None] | None = None,
    before_storage: Callable[[WorkerSettings], None] | None = None,
    before_data: Callable[[WorkerSettings, StudyCounts], None] | None = None,
) -> PreparedSweep:
    """Steps 1-4 of `launch` (module docstring): check everything once, build the cache, create/resume the study.

    Args: as :func:`run_sweep`; `workers` is only used for the connection check (PostgreSQL: 2 connections per
    worker, :func:`~maskcls_hpo.hpo.store.check_connection_budget`). `before_storage(settings)` runs after
    the sweep file is loaded and before the storage is opened or anything is written (the Slurm backend checks
    the cluster there). `before_data(settings, counts)` runs once the storage and the search space checked out
    and before the data check (`counts`: the study's trials, all zero for a new study); nothing is written
    yet (`run_sweep` starts its standby workers there).

    Raises:
        MaskclsError: as :func:`run_sweep`, before any worker starts.
    """
    say = on_message or (lambda _line: None)
    loaded = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    name = study_name or loaded.name
    extra = dict(overrides or {})
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    resolved = resolve_storage(storage, password_file=str(password_file) if password_file is not None else None)
    url = resolved.url
    loaded.build_config({}, extra)  # config keys checked before anything is opened
    heartbeat = HeartbeatSettings.from_env(heartbeat_interval, grace_period)
    settings = _settings(
        loaded,
        url,
        name,
        n_trials,
        extra,
        heartbeat,
        timeout,
        checkpoints,
        logs,
        poll_interval,
        password_file,
        mlflow,
        watchdog,
    )
    if before_storage is not None:
        before_storage(settings)
    if workers > 0:
        check_connection_budget(url, workers)
    config = loaded.build_config({}, extra)
    # The search space is compared before the (slow) data preparation, so a changed sweep refuses at once. A
    # new SQLite file is created only after the data checked out (a refused launch leaves nothing behind).
    new_sqlite = make_url(url).get_backend_name() == "sqlite" and not Path(make_url(url).database or "").is_file()
    rdb = None if new_sqlite else open_storage(url, heartbeat)
    counts_before = StudyCounts()
    if rdb is not None:
        existing = set(optuna.get_all_study_names(rdb))  # summaries would load every trial
        if name in existing:
            found = optuna.load_study(study_name=name, storage=rdb)
            loaded.check_study_compatible(found)
            counts_before = count_trials(rdb, study_id_of(found))
    if mlflow:
        check_mlflow(mlflow, name)
    if before_data is not None:
        before_data(settings, counts_before)
    say(f"checking data in {config.data_dir} and building the image cache ...")
    meta = prepare_data(config)
    if rdb is None:
        rdb = open_storage(url, heartbeat)
    study = prepare_study(loaded, rdb, name, n_trials, study_attrs=meta)
    counts = count_trials(rdb, study_id_of(study))
    result = SweepResult(
        name, display_url(url), n_trials, counts, counts.finished >= n_trials, log_dir=settings.log_dir
    )
    result.best_value, result.best_trial = best_of(study)
    return PreparedSweep(loaded, study, rdb, settings, result, epochs=config.epochs, storage_shown=resolved.shown)


def run_workers(
    prepared: PreparedSweep,
    backend: WorkerBackend,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    confirm_cancel: Callable[[str], bool] | None = None,
    poll_interval: float = 1.0,
) -> SweepResult:
    """Step 5 of `launch`: start the backend's workers and follow them until they end.

    Ctrl-C / SIGTERM: local workers are stopped (each fails and re-queues its running trial); a Slurm array is
    cancelled when ``SlurmOptions.cancel_on_exit`` is True, or None and `confirm_cancel(question)` says yes;
    otherwise it keeps running and the result says how to cancel it.

    Returns:
        the prepared SweepResult, completed (counts, exit codes, message).
    """
    result = prepared.result
    result.backend = backend.kind
    rdb, study, n_trials = prepared.storage, prepared.study, prepared.n_trials
    started = prepared.started if prepared.started is not None else time.monotonic()
    reader = ProgressReader(rdb, study, n_trials, default_epochs=prepared.epochs, started=started)

    def poll(phase: str | None = None) -> bool:
        """Show a snapshot; True when the study holds its budget and no trial runs."""
        try:
            snap = reader.snapshot(workers=backend.alive() if phase is None else 0, phase=phase)
        except sqlalchemy.exc.SQLAlchemyError:
            return False
        snap.tasks = backend.states()
        snap.job = getattr(backend, "job_id", None)
        if on_progress is not None:
            on_progress(snap)
        return snap.counts.finished >= n_trials and snap.counts.running == 0

    try:
        with stop_signals():
            backend.start()
            result.job_id = getattr(backend, "job_id", None)
            result.script = getattr(backend, "script_path", None)
            result.worker_exit_codes = backend.wait(on_poll=poll, poll_interval=poll_interval)
    except (KeyboardInterrupt, Interrupted) as err:
        result.interrupted = True
        if backend.kind == "local":
            # NOTE SIGTERM, not SIGINT: a launch started in the background has SIGINT ignored, and its workers
            # inherit that; every worker turns SIGTERM into a clean stop of its running trial.
            result.worker_exit_codes = [c if c is not None else -9 for c in backend.stop()]
        else:
            cancel = getattr(getattr(backend, "options", None), "cancel_on_exit", False)
            # Ctrl-C (SIGINT) may ask; SIGTERM (a scheduler or `kill` stopping the launcher) never does
            by_ctrl_c = isinstance(err, KeyboardInterrupt) or stop_requested() == f"signal {int(signal.SIGINT)}"
            if cancel is None:
                question = f"cancel Slurm job {result.job_id} (its running trials are failed and re-queued)?"
                cancel = bool(confirm_cancel(question)) if confirm_cancel is not None and by_ctrl_c else False
            if result.job_id is None:
                result.message = "nothing was submitted"
            elif cancel:
                backend.stop()
                result.message = f"cancelled Slurm job {result.job_id}"
            else:
                result.message = f"Slurm job {result.job_id} keeps running (cancel it with: scancel {result.job_id})"
    finally:
        backend.close()
    result.seconds = time.monotonic() - started
    result.counts = count_trials(rdb, study_id_of(study))
    result.reached = result.counts.finished >= n_trials
    result.best_value, result.best_trial = best_of(study)
    result.task_states = {i: t.state for i, t in getattr(backend, "tasks", {}).items()}
    poll("interrupted" if result.interrupted else "done")
    c = result.counts
    log_dir = prepared.settings.log_dir
    if result.interrupted:
        result.message = f"interrupted: {c.finished} finished, {c.running} still running" + (
            f"; {result.message}" if result.message else ""
        )
    elif result.reached:
        where = "worker logs"
        if backend.kind == "slurm":
            states = ", ".join(f"{state} {n}" for state, n in (backend.states() or {}).items())
            where = f"Slurm job {result.job_id} tasks {states}; task outputs"
        result.message = (
            f"{c.finished} finished ({c.complete} complete, {c.pruned} pruned), {c.failed} failed "
            f"in {result.seconds:,.0f} s; {where} in {log_dir}"
        )
    else:
        bad = [i for i, code in enumerate(result.worker_exit_codes) if code != 0]
        result.message = (
            f"the study did not reach {n_trials} finished trials ({c.finished} finished, {c.failed} failed); "
            f"{backend.last_lines(bad)}"
        )
    return result


def run_sweep(
    sweep: str | Path | Sweep,
    n_trials: int,
    *,
    storage: str | Path | None = None,
    study_name: str | None = None,
    workers: int = 1,
    gpus: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    timeout: float | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    checkpoints: str | Path | None = None,
    logs: str | Path | None = None,
    password_file: str | Path | None = None,
    mlflow: str | None = None,
    watchdog: float | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    poll_interval: float = 1.0,
    backend: str = "local",
    slurm: SlurmOptions | None = None,
    confirm_cancel: Callable[[str], bool] | None = None,
) -> SweepResult:
    """Run a sweep as `maskcls-hpo launch` does: prepare once, then `workers` workers until `n_trials` finished.

    Args:
        sweep: a sweep file (e.g. ``"sweeps/smoke.py"``) or a loaded :class:`~maskcls_hpo.hpo.trial.Sweep`.
        n_trials: finished (COMPLETE + PRUNED) trials the study should hold, across all workers and launches.
        storage: URL or SQLite path (default: env ``MASKCLS_HPO_STORAGE``, else env ``OPTUNA_STORAGE``, else
            ``sqlite:///storage/maskcls_hpo.db``).
        study_name: default the sweep file's stem.
        workers: worker processes (local) or array tasks (Slurm); 0 prepares the study only (workers join with
            `maskcls-hpo worker`).
        gpus: GPU ids assigned round-robin (``CUDA_VISIBLE_DEVICES``), local backend only.
        data_dir: overrides the sweep's ``data_dir``; overrides: further config keys.
        timeout: seconds after which workers start no new trial.
        heartbeat_interval, grace_period: seconds (defaults: env, else 30 / 120).
        checkpoints, logs: folders (default beside the SQLite file, else under ``storage/``).
        password_file: PostgreSQL password file (the password never goes onto a command line).
        mlflow: MLflow tracking URI (e.g. ``sqlite:///mlflow.db``): each trial becomes an MLflow run
            (:mod:`maskcls_hpo.hpo.trial`; needs ``maskcls-hpo[mlflow]``). TensorBoard scalars are
            written in any case (``tensorboard/<study>/`` beside an SQLite file) when tensorboard is installed.
        watchdog: minimum seconds without a finished epoch before a trial counts as hung (default 600; 0
            turns it off; see ``WorkerSettings.watchdog`` and hpo/workers/_watchdog.py).
        on_progress: called with a :class:`Progress` about every `poll_interval` seconds and once at the end.
        on_message: called with each one-line status message (e.g. ``print``).
        backend: ``"local"`` (processes here) or ``"slurm"`` (one array job; options in `slurm`, whose
            ``workers`` is set from `workers`).
        slurm: the Slurm array's resources, ``detach`` (submit and return) and ``dry_run`` (write the script
            and settings file only: nothing prepared, nothing submitted).
        confirm_cancel: asked on Ctrl-C whether to cancel the Slurm array (when ``cancel_on_exit`` is None).

    Returns:
        SweepResult (``reached`` False, with ``message`` saying why, when the workers stopped early).

    Raises:
        MaskclsError: before any trial: SweepError, StorageError, DataError, ConfigError,
            PretrainedWeightsError (one line each; a refused launch changes nothing stored and creates no
            SQLite file), LaunchError (a worker process could not start; a Slurm cluster that
            cannot run the array; more workers than the PostgreSQL server's max_connections allows).

    Example::

        import maskcls_hpo as m
        result = m.run_sweep("sweeps/smoke.py", 4, storage="storage/nb.db", data_dir="storage/demo")
        print(result.counts.finished, result.best_value)
    """
    say = on_message or (lambda _line: None)
    if backend not in ("local", "slurm"):
        raise LaunchError(f"--backend {backend!r} is not known; use local or slurm")
    options = None
    if backend == "slurm":
        options = SlurmOptions(**{**(slurm.__dict__ if slurm else {}), "workers": workers})
        if gpus:
            raise LaunchError("--gpus is for local workers; with --backend slurm use --gpus-per-worker")
    elif slurm is not None and (slurm.detach or slurm.dry_run):
        raise LaunchError("--detach and --dry-run need --backend slurm")
    common = dict(
        storage=storage,
        study_name=study_name,
        workers=workers,
        data_dir=data_dir,
        overrides=overrides,
        timeout=timeout,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        checkpoints=checkpoints,
        logs=logs,
        password_file=password_file,
        mlflow=mlflow,
        watchdog=watchdog,
        poll_interval=poll_interval,
        on_message=on_message,
    )

    def check_slurm(settings: WorkerSettings) -> None:
        assert options is not None
        for note in check_cluster(options, settings.storage_url):
            say(note)
        if options.dry_run:
            raise _DryRun(settings)

    standby: list[LocalWorkers] = []
    standby_started: list[float] = []

    def start_standby(settings: WorkerSettings, counts: StudyCounts) -> None:
        """Start the local workers now (they import torch while the data is checked) and show the first frame."""
        if counts.finished >= n_trials:
            return  # nothing to do: no worker is needed
        pool = LocalWorkers(settings, workers, gpus=gpus)
        standby.append(pool)
        pool.standby()
        standby_started.append(time.monotonic())
        if on_progress is not None:
            first = Progress(settings.study_name, n_trials, counts, None, [], 0.0, workers=workers, phase="starting")
            on_progress(first)

    local_early = options is None and workers > 0
    try:
        prepared = prepare_sweep(
            sweep,
            n_trials,
            before_storage=check_slurm if options else None,
            before_data=start_standby if local_early else None,
            **common,
        )
    except _DryRun as dry:
        assert options is not None
        script, _ = SlurmWorkers(dry.settings, options).write_files()
        result = SweepResult(
            dry.settings.study_name,
            display_url(dry.settings.storage_url),
            n_trials,
            StudyCounts(),
            False,
            log_dir=dry.settings.log_dir,
            backend="slurm",
            script=script,
        )
        result.message = (
            f"wrote {script} (nothing submitted, study not prepared); to run it: "
            f"maskcls-hpo launch {Path(dry.settings.sweep_path)} --workers 0 --n-trials {n_trials} (same --storage), "
            f"then sbatch {script}"
        )
        return result
    except BaseException:
        # a refused launch (or Ctrl-C during the checks): the standby workers go; they created nothing
        _discard(standby)
        raise
    result = prepared.result
    result.backend = backend
    name = prepared.settings.study_name
    where = f"Slurm array of {workers} task(s)" if options else f"{workers} worker(s)"
    shown = prepared.storage_shown or result.storage
    say(f"study '{name}' on {shown}: {result.counts.finished} finished of {n_trials}; {where}")
    if result.reached:
        _discard(standby)
        result.message = f"nothing to do: the study already holds {result.counts.finished} finished trials"
        return result
    if workers == 0:
        result.message = (
            f"study '{name}' is ready; start workers with: maskcls-hpo worker {prepared.sweep.path} --study {name} "
            "(storage from --storage, else env MASKCLS_HPO_STORAGE or OPTUNA_STORAGE)"
        )
        return result
    if options is None:
        if standby:
            prepared.started = standby_started[0]
        return run_workers(
            prepared,
            standby[0] if standby else LocalWorkers(prepared.settings, workers, gpus=gpus),
            on_progress=on_progress,
            poll_interval=poll_interval,
        )
    slurm_workers = SlurmWorkers(prepared.settings, options)
    if options.detach:
        result.job_id = slurm_workers.start()
        result.script = slurm_workers.script_path
        result.message = (
            f"submitted Slurm array job {result.job_id} ({workers} tasks; script {result.script}); follow it with "
            f"`maskcls-hpo status --study {name}` or `squeue -j {result.job_id}`; cancel with `scancel {result.job_id}`"
        )
        return result
    return run_workers(
        prepared,
        slurm_workers,
        on_progress=on_progress,
        confirm_cancel=confirm_cancel,
        poll_interval=max(poll_interval, 2.0),
    )


def _discard(pools: list[LocalWorkers]) -> None:
    """Stop standby workers that will not be needed (they have written nothing) and release their pipes."""
    for pool in pools:
        try:
            pool.stop(term_timeout=10.0)
        finally:
            pool.close()


class _DryRun(Exception):
    """Raised inside :func:`prepare_sweep` to stop after the checks of a `--dry-run` (carries the settings)."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__("dry run")
        self.settings = settings
