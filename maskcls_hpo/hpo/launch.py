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

Step 4 logs a warning when the sweep's sampler or pruner wastes the budget (``sweep.budget_warnings``: random
start-up trials that leave fewer than half of `n_trials` to TPE, a pruner warm-up that prunes at epoch 1).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo._optuna import finished_since, study_id_of
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.settings import WorkerSettings
from maskcls_hpo.hpo.signals import Interrupted, stop_signals
from maskcls_hpo.hpo.storage import HeartbeatSettings, display_url, open_storage, resolve_storage
from maskcls_hpo.hpo.supervisor import LocalWorkers
from maskcls_hpo.hpo.sweep import Sweep, budget_warnings, load_sweep
from maskcls_hpo.hpo.tracking import check_mlflow
from maskcls_hpo.hpo.trials import StudyCounts, count_trials
from maskcls_hpo.results.artifacts import save_study_note, study_note

__all__ = [
    "Progress",
    "RunningTrial",
    "FinishedTrial",
    "ProgressReader",
    "SweepResult",
    "run_sweep",
    "prepare_data",
    "prepare_study",
]


@dataclass
class RunningTrial:
    """One RUNNING trial in a :class:`Progress` snapshot.

    Attributes:
        number: the trial number.
        epoch: last reported epoch (1-based; 0 before the first report).
        epochs: epochs the trial trains (its config user attr, else the sweep's); None when unknown.
        value: val macro F1 of the last reported epoch (None before the first).
        values: every reported epoch -> val macro F1 (the trial's intermediate values).
        elapsed: seconds since the trial started (None when the storage has no start time).
        eta: seconds until its last epoch at the pace of its epochs so far (None before the first epoch);
            a pruner may end it earlier.
    """

    number: int
    epoch: int
    epochs: int | None
    value: float | None
    values: dict[int, float]
    elapsed: float | None
    eta: float | None


@dataclass
class FinishedTrial:
    """A trial that finished (COMPLETE, PRUNED or FAIL) since the previous :class:`Progress` snapshot.

    Attributes:
        number, state: the trial and its end state (``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``).
        value: its value (val macro F1; None unless COMPLETE). epoch: last reported epoch (0: none).
        epochs: epochs it was meant to train (None when unknown). values: epoch -> val macro F1.
        reason: its `reason` user attr ("" when none). seconds: start to end (None when unknown).
    """

    number: int
    state: str
    value: float | None
    epoch: int
    epochs: int | None
    values: dict[int, float]
    reason: str
    seconds: float | None


log = logging.getLogger("maskcls_hpo.hpo.launch")


@dataclass
class Progress:
    """A snapshot of a running sweep, for live views (:mod:`maskcls_hpo.hpo.progress`).

    Attributes:
        study_name, n_trials: the study and its budget (finished trials).
        counts: trials by state.
        best: best COMPLETE value so far (val macro F1), None before the first; best_trial: its number.
        running: each RUNNING trial (:class:`RunningTrial`), by trial number.
        elapsed: seconds since the workers started.
        workers: worker processes of this launch still alive.
        phase: ``"starting"`` (workers alive, none has started a trial yet: they are importing torch),
            ``"running"``, ``"interrupted"`` (the final snapshot after Ctrl-C / SIGTERM: workers stopped)
            or ``"done"`` (the final snapshot after the workers exited).
        finished: trials that finished since the previous snapshot (:class:`FinishedTrial`, by end time).
        eta: seconds until the budget is reached at this launch's pace so far (None before this launch
            finished a trial).
    """

    study_name: str
    n_trials: int
    counts: StudyCounts
    best: float | None
    running: list[RunningTrial]
    elapsed: float
    best_trial: int | None = None
    workers: int = 0
    phase: str = "running"
    finished: list[FinishedTrial] = field(default_factory=list)
    eta: float | None = None

    @property
    def final(self) -> bool:
        """True for the last snapshot of a launch (no trial of it runs any more)."""
        return self.phase in ("interrupted", "done")


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
        ``{"data_fingerprint": the cache fingerprint, "dataset": {"data_dir", "persons", "images",
        "launch_dir"}}`` (`data_dir` absolute; `launch_dir` the current folder, against which `export` makes the
        trials' relative paths absolute).

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
            "launch_dir": str(Path.cwd()),
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
    study user attrs, and enqueues the sweep's KNOWN_GOOD settings (skip_if_exists). Logs a warning for each
    of :func:`~maskcls_hpo.hpo.sweep.budget_warnings` (the sampler's start-up sized to `n_trials`).

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


def best_of(study: optuna.Study) -> tuple[float | None, int | None]:
    """(best COMPLETE value, its trial number), or (None, None) before the first COMPLETE trial."""
    try:
        best = study.best_trial
    except ValueError:
        return None, None
    return float(best.value), best.number


class ProgressReader:
    """Builds :class:`Progress` snapshots of one study with a few cheap reads per call.

    Per call: one ``GROUP BY`` count (:func:`~maskcls_hpo.hpo.trials.count_trials`), the RUNNING trials only
    (``get_trials(states=(RUNNING,))``), the best trial, and the ids of trials that finished in the last
    minute (one SQL query over the study's trial rows), of which only those not seen before are read whole. It never
    loads every trial of the study, so it stays cheap for studies with thousands of trials.

    Args:
        storage: the study's storage; study: the study.
        n_trials: the budget; default_epochs: epochs of a trial whose config attr is not stored yet.
        started: ``time.monotonic()`` when the workers started (snapshots' `elapsed` counts from it).
    """

    # trials that finished up to this long before the previous snapshot are looked for again (slow commits,
    # workers on other machines with a slightly different clock); the numbers already reported are skipped
    WINDOW = datetime.timedelta(seconds=60)

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        study: optuna.Study,
        n_trials: int,
        default_epochs: int | None = None,
        started: float | None = None,
    ):
        self.storage, self.study, self.n_trials, self.default_epochs = storage, study, n_trials, default_epochs
        self.started = time.monotonic() if started is None else started
        self._since = datetime.datetime.now().astimezone()
        self._reported: set[int] = set()
        self._start_finished = count_trials(storage, study_id_of(study)).finished
        self._trial_started = False
        self._polled = False

    def _epochs(self, t: FrozenTrial) -> int | None:
        config = t.user_attrs.get(TrialAttrs.CONFIG)
        if isinstance(config, dict) and isinstance(config.get("epochs"), int):
            return int(config["epochs"])
        return self.default_epochs

    def _running(self, now: datetime.datetime) -> list[RunningTrial]:
        now = now.replace(tzinfo=None)  # FrozenTrial times are naive local
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            values = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
            epoch = max(values, default=0)
            epochs = self._epochs(t)
            elapsed = (now - t.datetime_start).total_seconds() if t.datetime_start is not None else None
            seconds = t.user_attrs.get(TrialAttrs.EPOCH_SECONDS) or []
            pace = sum(seconds) / len(seconds) if seconds else (elapsed / epoch if epoch and elapsed else None)
            eta = pace * max(epochs - epoch, 0) if pace is not None and epochs is not None else None
            out.append(RunningTrial(t.number, epoch, epochs, values.get(epoch), values, elapsed, eta))
        return sorted(out, key=lambda r: r.number)

    def _finished(self, now: datetime.datetime) -> list[FinishedTrial]:
        since = self._since - (self.WINDOW if self._polled else datetime.timedelta(0))
        self._polled = True
        rows = [
            (trial_id, number)
            for trial_id, number in finished_since(self.storage, study_id_of(self.study), since)
            if number not in self._reported
        ]
        self._since = now
        out = []
        for trial_id, number in rows:
            t = self.storage.get_trial(trial_id)
            self._reported.add(number)
            values = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_start is not None and t.datetime_complete is not None
                else None
            )
            out.append(
                FinishedTrial(
                    number,
                    t.state.name,
                    float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else None,
                    max(values, default=0),
                    self._epochs(t),
                    values,
                    str(t.user_attrs.get(TrialAttrs.REASON, "")),
                    seconds,
                )
            )
        return out

    def snapshot(self, workers: int = 0, phase: str | None = None) -> Progress:
        """The study now. `workers`: this launch's live worker processes; `phase`: "interrupted" or "done"
        for the final snapshot (no trial is listed as running then), else derived ("starting" / "running").
        """
        now = datetime.datetime.now().astimezone()
        counts = count_trials(self.storage, study_id_of(self.study))
        running = self._running(now) if phase is None else []
        finished = self._finished(now)
        self._trial_started = self._trial_started or bool(running) or bool(finished)
        if phase is None:
            phase = "starting" if workers and not self._trial_started else "running"
        best, best_number = best_of(self.study)
        elapsed = time.monotonic() - self.started
        done_here = counts.finished - self._start_finished
        eta = None
        if done_here > 0 and elapsed > 0 and phase == "running":
            eta = max(self.n_trials - counts.finished, 0) * elapsed / done_here
        return Progress(
            self.study.study_name,
            self.n_trials,
            counts,
            best,
            running,
            elapsed,
            best_trial=best_number,
            workers=workers,
            phase=phase,
            finished=finished,
            eta=eta,
        )


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
    on_progress: Callable[[Progress], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    poll_interval: float = 1.0,
) -> SweepResult:
    """Run a sweep as `maskcls-hpo launch` does: prepare once, then `workers` processes until `n_trials` finished.

    Args:
        sweep: a sweep file (e.g. ``"sweeps/smoke.py"``) or a loaded :class:`~maskcls_hpo.hpo.sweep.Sweep`.
        n_trials: finished (COMPLETE + PRUNED) trials the study should hold, across all workers and launches.
        storage: URL or SQLite path (default: env ``MASKCLS_HPO_STORAGE``, else env ``OPTUNA_STORAGE``, else
            ``sqlite:///storage/maskcls_hpo.db``).
        study_name: default the sweep file's stem.
        workers: local worker processes; 0 prepares the study only (workers join with `maskcls-hpo worker`).
        gpus: GPU ids assigned round-robin (``CUDA_VISIBLE_DEVICES``).
        data_dir: overrides the sweep's ``data_dir``; overrides: further config keys.
        timeout: seconds after which workers start no new trial.
        heartbeat_interval, grace_period: seconds (defaults: env, else 30 / 120).
        checkpoints, logs: folders (default beside the SQLite file, else under ``storage/``).
        password_file: PostgreSQL password file (the password never goes onto a command line).
        mlflow: MLflow tracking URI (e.g. ``sqlite:///mlflow.db``): each trial becomes an MLflow run
            (:mod:`maskcls_hpo.hpo.tracking`; needs ``maskcls-hpo[mlflow]``). TensorBoard scalars are
            written in any case (``tensorboard/<study>/`` beside an SQLite file) when tensorboard is installed.
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
    resolved = resolve_storage(storage, password_file=str(password_file) if password_file is not None else None)
    url = resolved.url
    config = loaded.build_config({}, extra)
    heartbeat = HeartbeatSettings.from_env(heartbeat_interval, grace_period)
    rdb = open_storage(url, heartbeat)
    # The search space is compared before the (slow) data preparation, so a changed sweep refuses at once.
    existing = set(optuna.get_all_study_names(rdb))  # summaries would load every trial
    if name in existing:
        loaded.check_study_compatible(optuna.load_study(study_name=name, storage=rdb))
    if mlflow:
        check_mlflow(mlflow, name)
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
        mlflow_uri=mlflow,
    )
    counts = count_trials(rdb, study_id_of(study))
    result = SweepResult(
        name, display_url(url), n_trials, counts, counts.finished >= n_trials, log_dir=settings.log_dir
    )
    result.best_value, result.best_trial = best_of(study)
    say(f"study '{name}' on {resolved.shown}: {counts.finished} finished of {n_trials}; {workers} worker(s)")
    if result.reached:
        result.message = f"nothing to do: the study already holds {counts.finished} finished trials"
        return result
    if workers == 0:
        result.message = (
            f"study '{name}' is ready; start workers with: maskcls-hpo worker {loaded.path} --study {name} "
            "(storage from --storage, else env MASKCLS_HPO_STORAGE or OPTUNA_STORAGE)"
        )
        return result
    started = time.monotonic()

    pool = LocalWorkers(settings, workers, gpus=gpus)
    reader = ProgressReader(rdb, study, n_trials, default_epochs=config.epochs, started=started)

    def poll(phase: str | None = None) -> None:
        if on_progress is None:
            return
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            on_progress(reader.snapshot(workers=pool.alive() if phase is None else 0, phase=phase))

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
    poll("interrupted" if result.interrupted else "done")
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
