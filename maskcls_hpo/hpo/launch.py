"""`launch` as a Python function: check everything once, build the data cache once, prepare the study, run workers.

Order (each step refuses with one clear line, a :class:`~maskcls_hpo.errors.MaskclsError`, before any
trial starts):

1. load the sweep file (syntax, missing objects, config keys);
2. open the storage (schema check) and, for an existing study, compare the search space with the stored one
   (problem C3 in docs/ARCHITECTURE.md) before the slow data step;
3. check the dataset (every problem by path: C9) and the pretrained weights (offline: C8), and build the
   decoded-image cache once, shared by every worker process;
4. create or resume the study, store its budget, enqueue the sweep's known-good settings;
5. start K local worker processes (:class:`~maskcls_hpo.hpo.supervisor.LocalWorkers`) and wait until the
   study holds `n_trials` finished trials (C1), calling `on_progress` with a :class:`Progress` snapshot.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from maskcls_hpo.hpo._optuna import study_id_of
from maskcls_hpo.hpo.attrs import StudyAttrs
from maskcls_hpo.hpo.settings import WorkerSettings
from maskcls_hpo.hpo.signals import Interrupted, stop_signals
from maskcls_hpo.hpo.storage import HeartbeatSettings, display_url, open_storage, resolve_storage_url
from maskcls_hpo.hpo.supervisor import LocalWorkers
from maskcls_hpo.hpo.sweep import Sweep, load_sweep
from maskcls_hpo.hpo.trials import StudyCounts, count_trials
from maskcls_hpo.results.artifacts import save_study_note, study_note

__all__ = ["Progress", "SweepResult", "run_sweep", "prepare_data", "prepare_study"]


@dataclass
class Progress:
    """A snapshot of a running sweep, for live views.

    Attributes:
        study_name, n_trials: the study and its budget (finished trials).
        counts: trials by state.
        best: best COMPLETE value so far (val macro F1), None before the first.
        running: ``(trial number, last reported epoch)`` of each RUNNING trial.
        elapsed: seconds since the workers started.
    """

    study_name: str
    n_trials: int
    counts: StudyCounts
    best: float | None
    running: list[tuple[int, int]]
    elapsed: float


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


def prepare_data(config: Any) -> dict[str, Any]:
    """Check the dataset (every image verified) and the pretrained weights, build the cache once.

    Runs in the launching process before any worker starts, so a bad dataset or missing weights is one
    message instead of a failure in every trial, and every worker finds the cache ready.

    Args:
        config: the sweep's base :class:`~maskcls_hpo.config.TrainConfig` (with overrides).

    Returns:
        ``{"data_fingerprint": the cache fingerprint, "dataset": {"data_dir", "persons", "images"}}``

    Raises:
        DataError: every problem by path. PretrainedWeightsError: naming the model and the ways to get weights.
    """
    from maskcls_hpo.cache import build_cache
    from maskcls_hpo.data import load_train
    from maskcls_hpo.models import build_model, check_pretrained_available, resolve_preprocessing

    check_pretrained_available(config)
    samples = load_train(config.data_dir, age_bins=config.age_bins, corrections=config.corrections)
    backbone = build_model(config.model_copy(update={"pretrained": False}))
    image_size, _, _ = resolve_preprocessing(config, backbone)
    del backbone
    cache = build_cache(
        samples["path"].tolist(),
        size=image_size,
        cache_dir=config.cache_dir,
        progress=True,
        interpolation=config.interpolation,
    )
    return {
        StudyAttrs.FINGERPRINT: cache.fingerprint,
        StudyAttrs.DATASET: {
            "data_dir": str(Path(config.data_dir).resolve()),
            "persons": int(samples["person_id"].nunique()),
            "images": int(len(samples)),
        },
    }


def prepare_study(
    sweep: Sweep,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    n_trials: int,
    study_attrs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create or resume the study once, before any worker starts.

    Checks the sweep's search space against the stored one (C3), stores the trial budget and metadata as
    study user attrs, and enqueues the sweep's KNOWN_GOOD settings (skip_if_exists).

    Raises:
        SweepError: the search space differs from the stored one (nothing is changed in that case).
    """
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sweep.make_sampler(0),
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
    return study


def best_of(study: optuna.Study) -> tuple[float | None, int | None]:
    """(best COMPLETE value, its trial number), or (None, None) before the first COMPLETE trial."""
    try:
        best = study.best_trial
    except ValueError:
        return None, None
    return float(best.value), best.number


def _running_epochs(study: optuna.Study) -> list[tuple[int, int]]:
    return [(t.number, t.last_step or 0) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


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
    on_progress: Callable[[Progress], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    poll_interval: float = 1.0,
) -> SweepResult:
    """Run a sweep as `maskcls-hpo launch` does: prepare once, then `workers` processes until `n_trials` finished.

    Args:
        sweep: a sweep file (e.g. ``"sweeps/smoke.py"``) or a loaded :class:`~maskcls_hpo.hpo.sweep.Sweep`.
        n_trials: finished (COMPLETE + PRUNED) trials the study should hold, across all workers and launches.
        storage: URL or SQLite path (default: env ``MASKCLS_HPO_STORAGE``, else ``sqlite:///storage/maskcls_hpo.db``).
        study_name: default the sweep file's stem.
        workers: local worker processes; 0 prepares the study only (workers join with `maskcls-hpo worker`).
        gpus: GPU ids assigned round-robin (``CUDA_VISIBLE_DEVICES``).
        data_dir: overrides the sweep's ``data_dir``; overrides: further config keys.
        timeout: seconds after which workers start no new trial.
        heartbeat_interval, grace_period: seconds (defaults: env, else 30 / 120).
        checkpoints, logs: folders (default beside the SQLite file, else under ``storage/``).
        password_file: PostgreSQL password file (the password never goes onto a command line).
        on_progress: called with a :class:`Progress` about every `poll_interval` seconds and once at the end.
        on_message: called with each one-line status message (e.g. ``print``).

    Returns:
        SweepResult (``reached`` False, with ``message`` saying why, when the workers stopped early).

    Raises:
        MaskclsError: before any trial: SweepError, StorageError, DataError, ConfigError,
            PretrainedWeightsError (one line each, nothing stored changed by a refused launch except a
            new empty study database), LaunchError (a worker process could not start).

    Example::

        import maskcls_hpo as m
        result = m.run_sweep("sweeps/smoke.py", 4, storage="storage/nb.db", data_dir="storage/demo")
        print(result.counts.finished, result.best_value)
    """
    say = on_message or (lambda _line: None)
    loaded = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    name = study_name or loaded.name
    extra = dict(overrides or {})
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    url = resolve_storage_url(storage, password_file=str(password_file) if password_file is not None else None)
    config = loaded.build_config({}, extra)
    heartbeat = HeartbeatSettings.from_env(heartbeat_interval, grace_period)
    rdb = open_storage(url, heartbeat)
    # The search space is compared before the (slow) data preparation, so a changed sweep refuses at once.
    existing = {s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)}
    if name in existing:
        loaded.check_study_compatible(optuna.load_study(study_name=name, storage=rdb))
    say(f"checking data in {config.data_dir} and building the image cache ...")
    meta = prepare_data(config)
    study = prepare_study(loaded, rdb, name, n_trials, study_attrs=meta)
    settings = WorkerSettings(
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
    )
    counts = count_trials(rdb, study_id_of(study))
    result = SweepResult(
        name, display_url(url), n_trials, counts, counts.finished >= n_trials, log_dir=settings.log_dir
    )
    result.best_value, result.best_trial = best_of(study)
    say(f"study '{name}' on {display_url(url)}: {counts.finished} finished of {n_trials}; {workers} worker(s)")
    if result.reached:
        result.message = f"nothing to do: the study already holds {counts.finished} finished trials"
        return result
    if workers == 0:
        result.message = (
            f"study '{name}' is ready; start workers with: maskcls-hpo worker {loaded.path} --study {name} "
            "(storage from --storage, or env MASKCLS_HPO_STORAGE)"
        )
        return result
    started = time.monotonic()

    def poll() -> None:
        if on_progress is None:
            return
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            c = count_trials(rdb, study_id_of(study))
            best, _ = best_of(study)
            on_progress(Progress(name, n_trials, c, best, _running_epochs(study), time.monotonic() - started))

    pool = LocalWorkers(settings, workers, gpus=gpus)
    try:
        with stop_signals():
            pool.start()
            result.worker_exit_codes = pool.wait(on_poll=poll, poll_interval=poll_interval)
    except (KeyboardInterrupt, Interrupted):
        # NOTE SIGTERM, not SIGINT: a launch started in the background has SIGINT ignored, and its workers
        # inherit that; every worker turns SIGTERM into a clean stop of its running trial.
        result.worker_exit_codes = [c if c is not None else -9 for c in pool.stop()]
        result.interrupted = True
    finally:
        pool.close()
    result.seconds = time.monotonic() - started
    result.counts = count_trials(rdb, study_id_of(study))
    result.reached = result.counts.finished >= n_trials
    result.best_value, result.best_trial = best_of(study)
    poll()
    c = result.counts
    if result.interrupted:
        result.message = f"interrupted: {c.finished} finished, {c.running} still running"
    elif result.reached:
        result.message = (
            f"{c.finished} finished ({c.complete} complete, {c.pruned} pruned), {c.failed} failed "
            f"in {result.seconds:,.0f} s; worker logs in {settings.log_dir}"
        )
    else:
        bad = [i for i, code in enumerate(result.worker_exit_codes) if code != 0]
        result.message = (
            f"the study did not reach {n_trials} finished trials ({c.finished} finished, {c.failed} failed); "
            f"{pool.last_lines(bad)}"
        )
    return result
