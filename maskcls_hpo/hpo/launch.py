"""`launch` as a Python function: check everything once, build the data cache once, prepare the study, run workers.

Order (each step refuses with one clear line, a :class:`~maskcls_hpo.errors.MaskclsError`, before any
trial starts and before anything is stored):

1. :func:`plan_sweep`: the options (:class:`~maskcls_hpo.hpo.workers.RunOptions`), the sweep file (syntax,
   missing objects, config keys) and the storage URL; then the backend's own checks (Slurm: commands,
   partition, GPUs, SQLite on one node) and a PostgreSQL server's ``max_connections`` against the workers'
   needs (:func:`~maskcls_hpo.hpo.store.check_connection_budget`);
2. :func:`prepare_sweep`: open the storage (schema check) and, for an existing study, compare the search space
   with the stored one (problem C3 in docs/architecture.md) before the slow data step; start local workers on
   standby (they import torch meanwhile); check the dataset (every problem by path: C9) and the pretrained
   weights (offline: C8), build the decoded-image cache once; create or resume the study, store its budget,
   enqueue the sweep's known-good settings;
3. run the workers through the backend's :class:`~maskcls_hpo.hpo.workers.WorkerPool` and follow them
   (:func:`~maskcls_hpo.hpo.workers.follow`) until the study holds `n_trials` finished trials (C1).

Step 2 logs a warning when the sweep's sampler or pruner wastes the budget (``budget_warnings``: random
start-up trials that leave fewer than half of `n_trials` to TPE, a pruner warm-up that prunes at epoch 1).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from sqlalchemy.engine import make_url

from maskcls_hpo._util import DISK_FULL, check_whole_number, full_folder
from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo._optuna import study_id_of
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.store import StudyCounts, best_of, check_connection_budget, count_trials, display_url, open_storage
from maskcls_hpo.hpo.trial import (
    Sweep,
    budget_line,
    budget_warnings,
    check_mlflow,
    epoch_room,
    load_sweep,
    lr_range_line,
    measure_lr_range,
    save_study_note,
    sizing_trials,
    study_note,
)
from maskcls_hpo.hpo.workers import (
    MAX_TRIALS,
    MAX_WORKERS,
    Backend,
    Followed,
    LocalBackend,
    Progress,
    ProgressReader,
    RunOptions,
    SweepEvents,
    WorkerPool,
    WorkerSettings,
    check_free_space,
    check_run_folders,
    follow,
    prepare_data,
    run_options,
)

if TYPE_CHECKING:
    from maskcls_hpo.config import TrainConfig

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
        backend: the backend's name (``local``, ``slurm``); job_id: the Slurm array job (None locally or before
            submitting);
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
    budget_epochs = (study_attrs or {}).get(StudyAttrs.BUDGET_EPOCHS)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sweep.make_sampler(0, sizing_trials(n_trials, budget_epochs, sweep.base_config.epochs)),
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
        study.enqueue_trial(params, user_attrs={TrialAttrs.KNOWN_GOOD: True}, skip_if_exists=True)
    for line in budget_warnings(sweep, int(n_trials)):
        log.warning("%s", line)
    return study


@dataclass
class SweepPlan:
    """A checked launch before anything is opened: the sweep, its budget, the workers' settings.

    Attributes:
        sweep: the loaded sweep file. n_trials: the budget (finished trials).
        settings: what every worker gets (the study name, the resolved storage URL, the options).
        config: the sweep's base config with the options' overrides (checked).
        storage_shown: the storage URL (password masked) and where it came from, for messages.
    """

    sweep: Sweep
    n_trials: int
    settings: WorkerSettings
    config: TrainConfig
    storage_shown: str

    @property
    def study_name(self) -> str:
        """The study's name (``--study``, else the sweep file's stem)."""
        return self.settings.study_name


DEFAULT_TRIALS = 20
"""`launch`'s trial budget when neither ``--n-trials`` nor ``--budget-epochs`` is given."""


def default_trials(budget_epochs: int | None) -> int:
    """The trial budget when ``--n-trials`` is not given: :data:`DEFAULT_TRIALS`, or with ``--budget-epochs`` as
    many trials as it has epochs (every finished trial trains at least one, so the epochs bind first)."""
    # at least 1: a bad --budget-epochs is refused by its own check (WorkerSettings), naming it
    return DEFAULT_TRIALS if budget_epochs is None else max(1, min(budget_epochs, MAX_TRIALS))


def plan_sweep(
    sweep: str | Path | Sweep,
    n_trials: int,
    options: RunOptions,
    study_name: str | None = None,
    budget_epochs: int | None = None,
) -> SweepPlan:
    """Step 1 of `launch`: load the sweep, build its base config with the options, resolve the storage.

    Nothing is opened or created.

    Raises:
        LaunchError: `n_trials` below 1. SweepError: the sweep file does not load. ConfigError: a bad config key
            or override. StorageError: the storage cannot be resolved.
    """
    if not 1 <= n_trials <= MAX_TRIALS:
        raise LaunchError(f"--n-trials must be between 1 and {MAX_TRIALS}, got {n_trials}")
    loaded = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    config = loaded.build_config({}, options.config_overrides())  # config keys checked before anything is opened
    resolved = options.resolve_storage()
    settings = WorkerSettings.for_study(
        study_name or loaded.name,
        options,
        storage_url=resolved.url,
        sweep_path=loaded.path,
        n_trials=n_trials,
        budget_epochs=budget_epochs,
        check_data=False,  # launch checks the data and builds the cache itself (prepare_data)
    )
    check_run_folders(settings)
    return SweepPlan(loaded, n_trials, settings, config, resolved.shown)


@dataclass
class PreparedSweep:
    """A study made ready by :func:`prepare_sweep`: what the workers need to run and the launcher to follow them.

    Attributes:
        plan: the checked launch. study: the created or resumed study; storage: its open RDB storage.
        result: the result so far (counts before any worker ran, best value, log folder).
        standby: local workers started on standby while the data was checked (None: none started early).
        started: ``time.monotonic()`` when they were started (the live view's elapsed time counts from it).
    """

    plan: SweepPlan
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    result: SweepResult
    standby: WorkerPool | None = None
    started: float | None = None

    def discard_standby(self) -> None:
        """Stop standby workers that will not be needed (they have written nothing)."""
        _discard(self.standby)
        self.standby = None


def prepare_sweep(
    plan: SweepPlan, *, workers: int, backend: Backend, events: SweepEvents | None = None
) -> PreparedSweep:
    """Step 2 of `launch` (module docstring): storage, search space, data, cache, study.

    A backend that starts early (local processes) gets its `workers` started on standby once the storage and
    the search space checked out and before the data check; a refused check stops them, and they have created
    nothing.

    Raises:
        MaskclsError: as :func:`run_sweep`, before any worker starts a trial.
    """
    events = events or SweepEvents()
    url, name, n_trials = plan.settings.storage_url, plan.study_name, plan.n_trials
    if workers > 0:
        check_connection_budget(url, workers)
    # The search space is compared before the (slow) data preparation, so a changed sweep refuses at once. A
    # new SQLite file is created only after the data checked out (a refused launch leaves nothing behind).
    rdb, counts_before = _existing_study(plan)
    if plan.settings.options.mlflow:
        check_mlflow(plan.settings.options.mlflow, name)
    standby, started = None, None
    if workers > 0 and counts_before.finished < n_trials:
        standby = backend.standby(plan.settings, workers)
        if standby is not None:
            started = time.monotonic()
            events.show(Progress(name, n_trials, counts_before, None, [], 0.0, workers=workers, phase="starting"))
    try:
        events.say(f"checking data in {plan.config.data_dir} and building the image cache ...")
        meta = prepare_data(plan.config)
        meta.update(_lr_range_test(plan, counts_before, events))
        meta[StudyAttrs.BUDGET_EPOCHS] = plan.settings.budget_epochs  # None: this launch sets no epoch budget
        events.say(budget_line(plan.sweep, n_trials, plan.settings.budget_epochs))
        rdb = rdb if rdb is not None else open_storage(url, plan.settings.options.heartbeat)
        study = prepare_study(plan.sweep, rdb, name, n_trials, study_attrs=meta)
    except BaseException:
        _discard(standby)  # a refused launch (or Ctrl-C during the checks): they created nothing
        raise
    counts = count_trials(rdb, study_id_of(study))
    result = SweepResult(name, display_url(url), n_trials, counts, _reached(plan, study, counts))
    result.log_dir, result.backend = plan.settings.log_dir, backend.name
    result.best_value, result.best_trial = best_of(study)
    return PreparedSweep(plan, study, rdb, result, standby, started)


def _lr_range_test(plan: SweepPlan, counts_before: StudyCounts, events: SweepEvents) -> dict[str, Any]:
    """With ``LR_RANGE_TEST = True``, for a study without trials and without a stored range: run the range test on
    the base config, draw ``lr`` from its range; the study attr to store ({} when no test ran)."""
    sweep = plan.sweep
    if not sweep.lr_range_test or sweep.lr_range is not None:
        return {}
    if counts_before != StudyCounts():
        events.say("LR_RANGE_TEST: the study already has trials; its lr range is kept (use a new --study)")
        return {}
    events.say(f"learning-rate range test on {plan.config.model} (Smith 2017) ...")
    attr = measure_lr_range(plan.config)
    sweep.lr_range = (float(attr["low"]), float(attr["high"]))
    events.say(f"{lr_range_line(attr)}: the sampler draws lr from it")
    return {StudyAttrs.LR_RANGE: attr}


def lr_range(
    sweep: str | Path | Sweep, steps: int = 200, options: RunOptions | None = None, **flags: Any
) -> dict[str, Any]:
    """`maskcls-hpo lr-range SWEEP`: the learning-rate range test on the sweep's base config (+ `options`).

    Nothing is stored; `launch` runs the same test and stores it when the sweep file sets ``LR_RANGE_TEST = True``.

    Returns:
        The ``lr_range`` dict of :func:`~maskcls_hpo.hpo.trial.measure_lr_range` (``low``, ``high``, the
        curve) plus ``sweep_low`` / ``sweep_high``: the lr range the sweep file states (None without one).

    Raises:
        SweepError, ConfigError: the sweep or an override; LaunchError: `steps` < 10 or no usable range;
        DataError: the data.
    """
    loaded = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    opts = run_options(options, flags)
    config = loaded.build_config({}, opts.config_overrides())
    prepare_data(config)
    attr = measure_lr_range(config, steps)
    dist = loaded.search_space().get("lr")
    attr["sweep_low"] = getattr(dist, "low", None)
    attr["sweep_high"] = getattr(dist, "high", None)
    return attr


def _existing_study(plan: SweepPlan) -> tuple[optuna.storages.RDBStorage | None, StudyCounts]:
    """The open storage (None for a new SQLite file: not created yet) and the study's counts (all 0 if new).

    Raises:
        SweepError: the study exists and its search space differs (C3).
    """
    url = plan.settings.storage_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None, StudyCounts()
    rdb = open_storage(url, plan.settings.options.heartbeat)
    if plan.study_name not in set(optuna.get_all_study_names(rdb)):  # summaries would load every trial
        return rdb, StudyCounts()
    found = optuna.load_study(study_name=plan.study_name, storage=rdb)
    plan.sweep.check_study_compatible(found)
    return rdb, count_trials(rdb, study_id_of(found))


def run_sweep(
    sweep: str | Path | Sweep,
    n_trials: int,
    *,
    workers: int = 1,
    study_name: str | None = None,
    options: RunOptions | None = None,
    backend: Backend | None = None,
    events: SweepEvents | None = None,
    budget_epochs: int | None = None,
    **flags: Any,
) -> SweepResult:
    """Run a sweep as `maskcls-hpo launch` does: prepare once, then `workers` workers until `n_trials` finished.

    Args:
        sweep: a sweep file (e.g. ``"sweeps/smoke.py"``) or a loaded :class:`~maskcls_hpo.hpo.trial.Sweep`.
        n_trials: finished (COMPLETE + PRUNED) trials the study should hold, across all workers and launches.
        workers: worker processes (local) or array tasks (Slurm); 0 prepares the study only (workers join with
            `maskcls-hpo worker`).
        study_name: default the sweep file's stem.
        options: how trials run (:class:`~maskcls_hpo.hpo.workers.RunOptions`: storage, heartbeat, data_dir,
            timeout, checkpoints, mlflow, watchdog, ...); or give them as `flags`
            (``storage="storage/nb.db", data_dir="storage/demo"``, :meth:`RunOptions.from_flags`), not both.
        backend: where the workers run: :class:`~maskcls_hpo.hpo.workers.LocalBackend` (default; ``gpus``) or
            :class:`~maskcls_hpo.hpo.workers.SlurmBackend` (one array job; ``detach``, ``dry_run``, ...).
        events: the live view's callbacks (:class:`~maskcls_hpo.hpo.workers.SweepEvents`: ``on_progress``,
            ``on_message``, ``ask``).
        budget_epochs: the most epochs all trials together may train (promoted trials' included; None: no
            epoch budget): a trial starts only when its epochs fit (:func:`~maskcls_hpo.hpo.trial.epoch_room`).

    Returns:
        SweepResult (``reached`` False, with ``message`` saying why, when the workers stopped early).

    Raises:
        TypeError: both `options` and `flags`, or an unknown flag.
        MaskclsError: before any trial: LaunchError (a bad option, a worker process that could not start, a
            Slurm cluster that cannot run the array, more workers than the PostgreSQL server's max_connections
            allows), SweepError, StorageError, DataError, ConfigError, PretrainedWeightsError (one line each; a
            refused launch changes nothing stored and creates no SQLite file).

    Example::

        import maskcls_hpo as m
        result = m.run_sweep("sweeps/smoke.py", 4, storage="storage/nb.db", data_dir="storage/demo")
        print(result.counts.finished, result.best_value)
    """
    check_whole_number(workers, "--workers", 0, MAX_WORKERS, LaunchError)
    backend = backend if backend is not None else LocalBackend()
    events = events or SweepEvents()
    plan = plan_sweep(sweep, n_trials, run_options(options, flags), study_name, budget_epochs)
    for note in backend.preflight(plan.settings, workers):
        events.say(note)
    if workers > 0 and not backend.dry_run:
        check_free_space(plan.settings)
    if backend.dry_run:
        return _dry_run(plan, backend, workers)
    prepared = prepare_sweep(plan, workers=workers, backend=backend, events=events)
    result, name = prepared.result, plan.study_name
    events.say(
        f"study '{name}' on {plan.storage_shown}: {result.counts.finished} finished of {n_trials}; "
        f"{backend.describe(workers)}"
    )
    if result.reached:
        return _nothing_to_do(prepared)
    if workers == 0:
        result.message = (
            f"study '{name}' is ready; start workers with: maskcls-hpo worker {plan.sweep.path} --study {name} "
            "(storage from --storage, else env MASKCLS_HPO_STORAGE or OPTUNA_STORAGE)"
        )
        return result
    pool = prepared.standby or backend.pool(plan.settings, workers)
    if backend.detach:
        return _detached(result, pool, name)
    reader = ProgressReader(
        prepared.storage, prepared.study, n_trials, default_epochs=plan.config.epochs, started=prepared.started
    )
    followed = follow(pool, reader, events, started=prepared.started, poll_interval=plan.settings.options.poll_interval)
    return _finish(prepared, pool, followed)


def _dry_run(plan: SweepPlan, backend: Backend, workers: int) -> SweepResult:
    """`--dry-run`: the backend writes what it would submit; nothing is prepared or submitted."""
    script = backend.write_script(plan.settings, workers)
    result = SweepResult(plan.study_name, display_url(plan.settings.storage_url), plan.n_trials, StudyCounts(), False)
    result.log_dir, result.backend, result.script = plan.settings.log_dir, backend.name, script
    result.message = (
        f"wrote {script} (nothing submitted, study not prepared); to run it: maskcls-hpo launch {plan.sweep.path} "
        f"--workers 0 --n-trials {plan.n_trials} (same --storage), then sbatch {script}"
    )
    return result


def _detached(result: SweepResult, pool: WorkerPool, name: str) -> SweepResult:
    """`--detach`: submit the workers and return (follow them with `status`)."""
    pool.start()
    result.job_id, result.script = pool.job_id, pool.script_path
    result.message = (
        f"submitted Slurm array job {result.job_id} ({pool.n} tasks; script {result.script}); follow it with "
        f"`maskcls-hpo status --study {name}` or `squeue -j {result.job_id}`; cancel with `scancel {result.job_id}`"
    )
    return result


def _finish(prepared: PreparedSweep, pool: WorkerPool, followed: Followed) -> SweepResult:
    """The result once the workers ended: counts, best trial, exit codes and the one closing line."""
    result, study = prepared.result, prepared.study
    result.job_id, result.script, result.task_states = pool.job_id, pool.script_path, pool.task_states()
    result.seconds, result.interrupted = followed.seconds, followed.interrupted
    result.worker_exit_codes = followed.exit_codes
    result.counts = c = count_trials(prepared.storage, study_id_of(study))
    result.reached = _reached(prepared.plan, study, c)
    result.best_value, result.best_trial = best_of(study)
    if followed.interrupted:
        result.message = f"interrupted: {c.finished} finished, {c.running} still running" + (
            f"; {followed.message}" if followed.message else ""
        )
    elif result.reached:
        result.message = (
            f"{c.finished} finished ({c.complete} complete, {c.pruned} pruned), {c.failed} failed"
            f"{_epochs_line(prepared)} "
            f"in {result.seconds:,.0f} s; {pool.where()}"
        )
    else:
        bad = [i for i, code in enumerate(result.worker_exit_codes) if code != 0]
        why = pool.last_lines(bad)
        full = full_folder(prepared.plan.settings.run_folders) if DISK_FULL not in why else None
        result.message = (
            f"the study did not reach {result.n_trials} finished trials ({c.finished} finished, {c.failed} failed); "
            f"{f'{full}; free space there, then launch again' if full else why}"
        )
    return result


def _nothing_to_do(prepared: PreparedSweep) -> SweepResult:
    """The study already holds its budget: standby workers stop; the result says so."""
    prepared.discard_standby()
    result = prepared.result
    result.message = f"nothing to do: the study already holds {result.counts.finished} finished trials"
    result.message += _epochs_line(prepared)
    return result


def _epochs_line(prepared: PreparedSweep) -> str:
    """``", 60 of 64 epochs"``: what the study trained of its ``--budget-epochs`` (none running); "" without one."""
    budget = prepared.plan.settings.budget_epochs
    if budget is None:
        return ""
    return f", {budget - epoch_room(prepared.study.get_trials(deepcopy=False), budget, 1)} of {budget} epochs"


def _reached(plan: SweepPlan, study: optuna.Study, counts: StudyCounts) -> bool:
    """The study holds `n_trials` finished trials, or (with ``--budget-epochs``) no new trial fits in what is left
    of its epoch budget and none is running."""
    if counts.finished >= plan.n_trials:
        return True
    budget = plan.settings.budget_epochs
    if budget is None or counts.running:
        return False
    epochs = plan.sweep.base_config.epochs
    return epoch_room(study.get_trials(deepcopy=False), budget, epochs) < epochs


def _discard(pool: WorkerPool | None) -> None:
    """Stop standby workers that will not be needed (they have written nothing) and release their pipes."""
    if pool is None:
        return
    try:
        pool.stop()
    finally:
        pool.close()
