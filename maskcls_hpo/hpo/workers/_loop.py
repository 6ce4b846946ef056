"""The worker loop: trials of one study until it holds exactly N finished trials.

Run in a process of its own by the supervisor (``python -m maskcls_hpo.hpo.workers SETTINGS.json``, the
settings serialised whole), by `maskcls-hpo worker`, or called directly (:func:`run_worker`).

Ownership: a worker runs a trial only after its atomic claim (hpo/store/_claim.py): a queued trial is taken
with ``claim_waiting_trial`` (not Optuna's pop, which lets two SQLite processes take one trial), a created
one is claimed at once; a trial handed back to the queue drops its claim.

Budget (problem C1 in docs/architecture.md): the study holds `n_trials` *finished* trials (COMPLETE + PRUNED)
in total, across all workers and all launches. A worker only starts a trial while `finished + running <
n_trials`; after `study.ask()` it claims a slot: its trial counts only if at most `n_trials` slot-holding
trials (RUNNING, COMPLETE, PRUNED) have a number <= its own, so when two workers race for the last slot the
lower trial number wins and the other trial goes back to WAITING (no FAIL record is added); a new trial also
goes back while an older one is WAITING (a failed trial's copy runs before new ones). FAIL trials free
their slot; a worker stops after `max_consecutive_failures` failed trials in a row, saying why.

Faults (docs/architecture.md, "Faults"): heartbeat on; before each trial the worker fails stale trials, which
re-queues them (``RetryHeartbeatStaleTrialCallback``); a re-run resumes from the original trial's last
checkpoint. A trial's exception never kills the worker. Ctrl-C / SIGTERM: the running trial is marked FAIL
(reason "interrupted"), a copy is queued to resume later, and the worker exits: no trial is left RUNNING.
Transient database errors (e.g. a PostgreSQL restart) are retried with backoff by every storage call,
the heartbeat's included (:func:`maskcls_hpo.hpo.store.retry_db`); for one grace period after such an outage
the worker fails no other trial as stale. A trial that another process failed as stale while it still ran
here (its heartbeat was late) ends with a warning; the worker goes on with the next trial.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo._util import DISK_FULL, disk_full_reason
from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo._optuna import (
    AskError,
    ask_tracked,
    heartbeat,
    rdb_of,
    storage_of,
    study_id_of,
    tell_quietly,
    trial_id_of,
)
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.signals import Interrupted, deferred_interrupts, stop_requested, stop_signals
from maskcls_hpo.hpo.store import (
    Claim,
    StudyCounts,
    check_writable,
    claim_trial,
    claim_waiting_trial,
    count_trials,
    fail_stale_trials,
    fail_trial,
    mask_password,
    new_claim,
    open_storage,
    release_trial,
    retry_db,
    seconds_since_db_error,
)
from maskcls_hpo.hpo.trial import (
    ConfirmPlan,
    LedgerWriter,
    Promotion,
    Rungs,
    Sweep,
    TrialArtifactUploader,
    TrialTracker,
    check_mlflow,
    epoch_room,
    epochs_to_come,
    find_promotions,
    load_plan,
    load_sweep,
    make_objective,
    promote,
    promotion_rungs,
    requeue_failed,
    sizing_trials,
)
from maskcls_hpo.hpo.workers._options import RunOptions, WorkerSettings
from maskcls_hpo.hpo.workers._preflight import check_device_here, check_join, check_run_folders
from maskcls_hpo.hpo.workers._slurm import slurm_task_of_env
from maskcls_hpo.hpo.workers._watchdog import TrialWatchdog

log = logging.getLogger(__name__)

Objective = Callable[[optuna.Trial], float]


class Outcome(enum.Enum):
    """How one turn of the worker loop ended."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    STALE = "stale"
    """Another process failed the trial as stale while it ran here (its heartbeat was late); its copy is queued."""
    INTERRUPTED = "interrupted"
    """A stop signal: the trial was failed and a copy queued to resume."""
    RETURNED = "returned"
    """The trial lost the race for the last slots (or an older trial waits): back to WAITING, nothing recorded."""


class StopReason(enum.Enum):
    """Why a worker stopped."""

    BUDGET = "budget"
    TIMEOUT = "timeout"
    FAILURES = "failures"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class TrialEnd:
    """One turn of the loop: its outcome, the trial number (None when none was made) and, for FAIL, the reason."""

    outcome: Outcome
    number: int | None = None
    reason: str = ""


@dataclass
class WorkerReport:
    """What a worker did: trial counts by end state and why it stopped.

    Attributes:
        complete, pruned, failed: trials this worker ended in each state.
        stop: why it stopped; detail: that as one line (``study holds 8 finished trials (target 8)``).
        consecutive_failures: FAIL trials in a row at the end; last_failure: the reason of the last one.
    """

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    stop: StopReason = StopReason.INTERRUPTED
    detail: str = "interrupted"
    consecutive_failures: int = 0
    last_failure: str = ""
    interrupted: bool = False
    worker_index: int = 0

    def record(self, end: TrialEnd) -> None:
        """Count one turn's outcome (a FAIL extends the run of failures, COMPLETE and PRUNED end it)."""
        if end.outcome is Outcome.COMPLETE:
            self.complete, self.consecutive_failures = self.complete + 1, 0
        elif end.outcome is Outcome.PRUNED:
            self.pruned, self.consecutive_failures = self.pruned + 1, 0
        elif end.outcome is Outcome.FAIL:
            self.failed, self.consecutive_failures = self.failed + 1, self.consecutive_failures + 1
            self.last_failure = end.reason or "?"
        elif end.outcome is Outcome.INTERRUPTED:
            self.interrupted = True

    def stopped(self, stop: StopReason, detail: str) -> None:
        """Record why the worker stopped."""
        self.stop, self.detail = stop, detail

    def summary_line(self) -> str:
        """``worker 0: 3 complete, 1 pruned, 0 failed; study holds 8 finished trials (target 8)``."""
        return (
            f"worker {self.worker_index}: {self.complete} complete, {self.pruned} pruned, {self.failed} failed; "
            f"{self.detail}"
        )

    @property
    def stop_reason(self) -> str:
        """Why the worker stopped, as one line (what its summary prints)."""
        return self.detail

    @property
    def ok(self) -> bool:
        """False when the worker stopped at the cap on failed trials in a row."""
        return self.stop is not StopReason.FAILURES

    @property
    def exit_code(self) -> int:
        """Process exit code: 130 interrupted, 3 failure cap, else 0 (4, EXIT_HUNG, comes from the watchdog)."""
        return {StopReason.INTERRUPTED: 130, StopReason.FAILURES: 3}.get(self.stop, 0)


@dataclass
class _Worker:
    """What the loop works with, opened once by :func:`_open`."""

    settings: WorkerSettings
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    n_trials: int
    objective: Objective
    watchdog: TrialWatchdog | None
    label: str
    slurm: tuple[str, int | None, int] | None
    started: float
    rungs: Rungs | None = None
    """The pruner's rungs when pruned trials may be promoted from their checkpoints (hpo/trial/_promotion.py)."""
    budget_epochs: int | None = None
    """The study's epoch budget (``--budget-epochs``), None without one."""
    default_epochs: int = 1
    """Planned epochs of a trial whose config is not stored yet: the sweep's base config's."""

    def counts(self) -> StudyCounts:
        """The study's trials by state (retried on transient database errors: a read)."""
        return retry_db(lambda: count_trials(self.storage, study_id_of(self.study)), "counting trials")


def run_worker(
    settings: WorkerSettings, sweep: Sweep | None = None, objective: Objective | None = None
) -> WorkerReport:
    """Run trials of one study until it holds `n_trials` finished trials (or timeout / failure cap).

    Args:
        settings: the study, storage, budget and run options.
        sweep: the loaded sweep file (default: loaded from `settings.sweep_path`; for ``kind="confirm"``
            the study's :class:`~maskcls_hpo.hpo.trial.ConfirmPlan`).
        objective: `objective(trial) -> float` run instead of the sweep's training objective (which is
            `make_objective` + artifact upload); the loop around it (budget, slot claim, heartbeat, retries,
            end states) is unchanged. Used by the storage benchmark (a no-training objective) and the GPU
            check (a wrapper that records GPU memory between trials).

    Returns:
        WorkerReport with this worker's counts and why it stopped.

    Raises:
        StorageError, SweepError, LaunchError, DataError: before any trial and before anything is created,
            when the storage, the study, the sweep or the data cannot be used (:func:`check_join`).
    """
    worker = _open(settings, sweep, objective)
    report = WorkerReport(worker_index=worker.settings.worker_index)
    ledger = LedgerWriter()  # the study's compute ledger as its user attr `ledger` (at most every 10 s, at stop)
    where = ""
    if worker.slurm is not None:
        job, task, restarts = worker.slurm
        where = f"; slurm job {job}" + (f"_{task}" if task is not None else "") + f", restart {restarts}"
    log.info(
        "worker %s joins study '%s' (target %d finished trials%s)",
        worker.label,
        settings.study_name,
        worker.n_trials,
        where,
    )
    with stop_signals(), contextlib.suppress(Interrupted, KeyboardInterrupt):
        while (stop := _stop_reason(worker, report)) is None:
            counts = _counts_after_stale(worker)
            if counts.finished >= worker.n_trials:
                stop = StopReason.BUDGET, f"study holds {counts.finished} finished trials (target {worker.n_trials})"
                break
            if counts.finished + counts.running >= worker.n_trials:
                time.sleep(settings.options.poll_interval)  # the last slots are taken; a running trial may fail
                continue
            trials = _trials(worker)
            promotions = _promotions(worker, trials)
            room = _epochs_left(worker, trials)
            if room is not None and room < _next_need(worker, trials, promotions):
                if counts.running == 0:
                    stop = StopReason.BUDGET, _epochs_spent_line(worker, room)
                    break
                time.sleep(settings.options.poll_interval)  # a running trial may be pruned and free its epochs
                continue
            _promote(worker, promotions, room)
            if trials and _budget_taken(worker):  # reading the trials took a while: the last slots may be gone now
                continue
            report.record(_run_next(worker))
            ledger.maybe_write(worker.study)
        report.stopped(*stop)
    ledger.write(worker.study)
    log.info("worker %s stops: %s", worker.label, report.stop_reason)
    return report


def _open(settings: WorkerSettings, sweep: Sweep | None, objective: Objective | None) -> _Worker:
    """Check, then open everything the loop needs (raises as :func:`run_worker` documents)."""
    settings = settings.for_this_process()
    if sweep is None and settings.kind == "sweep":
        assert settings.sweep_path is not None  # WorkerSettings requires it for kind "sweep"
        sweep = load_sweep(settings.sweep_path)
    url = settings.resolved_storage_url()
    check_writable(url)  # a read-only SQLite file: one line before the (reading) checks below
    check_device_here(settings.options.device)
    check_run_folders(settings)
    # launch's checks before anything is created: database, schema, study, search space, data
    check_join(sweep, url, settings.study_name, settings.overrides, check_data=settings.check_data)
    storage = open_storage(url, settings.options.heartbeat)
    runs: Sweep | ConfirmPlan
    if sweep is None:  # a confirm study: its fold runs and configs are stored in the study and its source
        runs = retry_db(lambda: load_plan(storage, settings.study_name), "loading the confirm plan")
        runs.predictions_root = settings.study_checkpoints  # the race's person pairing reads the runs' predictions
    else:
        runs = sweep
    study = retry_db(lambda: _load_study(storage, runs, settings), "loading the study")
    n_trials = settings.n_trials or study.user_attrs.get(StudyAttrs.N_TRIALS)
    if not n_trials:
        raise LaunchError(f"study '{settings.study_name}' has no trial budget: pass --n-trials")
    label = f"{socket.gethostname()}:{os.getpid()}/{settings.worker_index}"
    dog = settings.options.watchdog
    watchdog = TrialWatchdog(study, dog.seconds, dog.factor, dog.first_epoch) if dog.on else None
    if objective is None:
        objective = _training_objective(settings, url, runs, label, watchdog)
    if isinstance(runs, ConfirmPlan):
        objective = requeue_failed(objective)  # a failed fold run is queued again: each run once, exact budget
    slurm = slurm_task_of_env()
    rungs = promotion_rungs(study.pruner) if isinstance(runs, Sweep) and runs.promotion else None
    worker = _Worker(
        settings, storage, study, int(n_trials), objective, watchdog, label, slurm, time.monotonic(), rungs
    )
    if isinstance(runs, Sweep):
        worker.budget_epochs = settings.budget_epochs or study.user_attrs.get(StudyAttrs.BUDGET_EPOCHS)
        worker.default_epochs = runs.base_config.epochs
    return worker


def _training_objective(
    settings: WorkerSettings, url: str, sweep: Sweep | ConfirmPlan, label: str, watchdog: TrialWatchdog | None
) -> Objective:
    """The sweep's training objective, with tracking and the dashboard artifacts of every finished trial."""
    mlflow = settings.options.mlflow
    if mlflow:
        check_mlflow(mlflow, settings.study_name)
    uploader = TrialArtifactUploader(url)
    checkpoint_root = settings.study_checkpoints
    objective = make_objective(
        sweep,
        checkpoint_root=checkpoint_root,
        overrides=settings.overrides,
        worker=label,
        after_trial=uploader,
        tracker=TrialTracker(settings.study_name, settings.tensorboard_dir, mlflow),
        epoch_done=watchdog.epoch_done if watchdog is not None else None,
    )
    # Every finished trial (COMPLETE, and PRUNED from its metrics.json) gets artifacts for the dashboard.
    return uploader.wrap(objective, checkpoint_root)


def _load_study(
    storage: optuna.storages.BaseStorage, sweep: Sweep | ConfirmPlan, settings: WorkerSettings
) -> optuna.Study:
    """The study with this worker's sampler, sized to `n_trials` (None: the study's stored budget)."""
    n_trials, budget_epochs = settings.n_trials, settings.budget_epochs
    with contextlib.suppress(KeyError):  # a missing study is reported by load_study below
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(settings.study_name))
        n_trials = n_trials or attrs.get(StudyAttrs.N_TRIALS)
        budget_epochs = budget_epochs or attrs.get(StudyAttrs.BUDGET_EPOCHS)
    if isinstance(sweep, Sweep):
        n_trials = sizing_trials(n_trials, budget_epochs, sweep.base_config.epochs)
    return optuna.load_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=sweep.make_sampler(settings.worker_index, n_trials),
        pruner=sweep.make_pruner(),
    )


def _stop_reason(worker: _Worker, report: WorkerReport) -> tuple[StopReason, str] | None:
    """Why the worker stops before its next trial (a stop signal, the failure cap, the timeout), or None."""
    options = worker.settings.options
    if stop_requested() or report.interrupted:
        return StopReason.INTERRUPTED, "interrupted"
    if report.last_failure.startswith(DISK_FULL):  # every next trial would fail alike: stop, say where
        return StopReason.FAILURES, f"stopped: {report.last_failure}; free space there, then launch again"
    if report.consecutive_failures >= options.max_consecutive_failures:
        return StopReason.FAILURES, (
            f"stopped after {report.consecutive_failures} failed trials in a row "
            f"(last reason: {report.last_failure}); fix the cause, then launch again"
        )
    if options.timeout is not None and time.monotonic() - worker.started > options.timeout:
        return StopReason.TIMEOUT, f"timeout of {options.timeout:.0f} s reached"
    return None


def _counts_after_stale(worker: _Worker) -> StudyCounts:
    """Fail stale trials (their worker died; each is re-queued to resume), then count the study's trials.

    Not right after this process saw the database go away: the other workers could not write their heartbeats
    either, and their trials would look stale when they are not. Not retried as a whole: a repeat after "FAIL
    written, copy not queued yet" would never queue the copy; each statement inside retries by itself. Trials
    without a heartbeat row count too (a worker killed between ask() and the first heartbeat: hpo/store/_stale.py).
    """
    grace = worker.settings.options.heartbeat.grace_period
    if seconds_since_db_error() > grace:
        fail_stale_trials(worker.study, grace)
    return worker.counts()


def _budget_taken(worker: _Worker) -> bool:
    """Every slot of the trial budget is held (finished + running): a trial asked for now would go back to the
    queue unrun (:func:`_claim_slot`), so none is asked for."""
    counts = worker.counts()
    return counts.finished + counts.running >= worker.n_trials


def _trials(worker: _Worker) -> list[FrozenTrial]:
    """Every trial of the study, read when promotion or an epoch budget needs them ([] otherwise)."""
    if worker.rungs is None and worker.budget_epochs is None:
        return []
    return retry_db(lambda: worker.study.get_trials(deepcopy=False), "reading trials")


def _epochs_left(worker: _Worker, trials: list[FrozenTrial], below: int | None = None) -> int | None:
    """The epochs of the study's budget no trial has trained or holds (:func:`~maskcls_hpo.hpo.trial.epoch_room`);
    None without an epoch budget."""
    if worker.budget_epochs is None:
        return None
    return epoch_room(trials, worker.budget_epochs, worker.default_epochs, below=below)


def _epochs_spent_line(worker: _Worker, room: int) -> str:
    """Why a worker stops at the epoch budget."""
    budget = worker.budget_epochs
    return f"study trained {budget - room if budget else 0} of its {budget} epochs; no trial fits in the {room} left"


def _next_need(worker: _Worker, trials: list[FrozenTrial], promotions: list[Promotion]) -> int:
    """The epochs the next trial this worker can start needs: the oldest queued trial's (the queue goes first, and
    no new trial starts while an older one waits: :func:`_claim_slot`), else the fewest of a new trial's and a
    promotable trial's rest."""
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if waiting:
        return epochs_to_come(min(waiting, key=lambda t: t.number), worker.default_epochs)
    return min([worker.default_epochs, *(p.epochs_to_come(worker.default_epochs) for p in promotions)])


def _promotions(worker: _Worker, trials: list[FrozenTrial]) -> list[Promotion]:
    """The pruned trials that may be promoted now ([] when this worker does not promote)."""
    if worker.rungs is None:
        return []
    return find_promotions(trials, worker.rungs, worker.settings.study_checkpoints)


def _promote(worker: _Worker, promotions: list[Promotion], room: int | None) -> None:
    """Queue the copy of the first of `promotions` whose rest fits in `room` epochs (None: no epoch budget), if
    any (asynchronous successive halving, hpo/trial/_promotion.py); the next trial this or another worker takes
    is that copy."""
    for found in promotions:
        if room is not None and found.epochs_to_come(worker.default_epochs) > room:
            continue
        if promote(worker.study, found, worker.label) is not None:  # not retried whole: its steps retry themselves
            return


def _run_next(worker: _Worker) -> TrialEnd:
    """Ask for a trial, claim its slot and run it under a heartbeat; tell its end state."""
    study = worker.study
    claim = new_claim(worker.label)
    try:
        trial = ask_tracked(
            study,
            pop=lambda: retry_db(lambda: claim_waiting_trial(storage_of(study), study_id_of(study), claim), "claiming"),
            created=lambda trial_id: _claim_created(worker, trial_id, claim),
        )
    except AskError as err:
        # e.g. the sampler raised: the trial exists as RUNNING; fail it (no copy: it would fail again)
        reason = mask_password(f"ask() failed: {err}")[:500]
        log.error("trial id %d: %s", err.trial_id, reason)
        with contextlib.suppress(Exception):
            fail_trial(study, err.trial_id, reason, queue_copy=False)
        return TrialEnd(Outcome.FAIL, None, reason)
    # The heartbeat starts before the claim, so a RUNNING trial has a heartbeat row within moments of its start
    # even on a starved machine; a row left by a claim that lost is harmless (a trial is stale only when both its
    # heartbeat and its start are older than the grace period: hpo/store/_stale.py).
    with heartbeat(trial, study):
        try:
            claimed = retry_db(lambda: _claim_slot(worker, trial), "claiming")
        except (KeyboardInterrupt, Interrupted):
            retry_db(lambda: release_trial(worker.storage, trial_id_of(trial)), "returning a trial to the queue")
            return TrialEnd(Outcome.INTERRUPTED, trial.number)
        if not claimed:
            retry_db(lambda: release_trial(worker.storage, trial_id_of(trial)), "returning a trial to the queue")
            time.sleep(worker.settings.options.poll_interval)
            return TrialEnd(Outcome.RETURNED, trial.number)
        log.info("trial %d claimed by worker %s (claim %s); it trains here", trial.number, worker.label, claim.token)
        if worker.slurm is not None:  # `status` shows where a running trial runs
            trial.set_user_attr(TrialAttrs.SLURM_JOB_ID, worker.slurm[0])
            if worker.slurm[1] is not None:
                trial.set_user_attr(TrialAttrs.SLURM_TASK_ID, worker.slurm[1])
        outcome, value = _train(worker, trial)
    return _tell(worker, trial, outcome, value)


def _claim_created(worker: _Worker, trial_id: int, claim: Claim) -> None:
    """Claim a trial this worker just created (RUNNING, known to no other process yet): the same claim row as a
    queued trial's, so every running trial has exactly one owner (hpo/store/_claim.py)."""
    if not retry_db(lambda: claim_trial(worker.storage, trial_id, claim, from_waiting=False), "claiming"):
        raise RuntimeError(f"trial id {trial_id} was claimed by another process right after this one created it")


def _claim_slot(worker: _Worker, trial: optuna.Trial) -> bool:
    """True when `trial` is within the budget (lower trial numbers win a race for the last slots).

    False too while an older trial is WAITING: ``study.ask`` may read the queue just before another process
    queues a failed trial's copy, and then creates a new trial; the new one goes back to the queue, so the copy
    (which resumes from its checkpoint) runs first.
    """
    c = count_trials(worker.storage, study_id_of(worker.study), max_number=trial.number)
    if not (c.waiting == 0 and c.running + c.finished <= worker.n_trials):
        return False
    if worker.budget_epochs is None:
        return True
    # the epoch budget, decided the same way: the trials numbered below this one go first
    trials = worker.study.get_trials(deepcopy=False)
    mine = next(t for t in trials if t.number == trial.number)
    room = _epochs_left(worker, trials, below=trial.number)
    return room is not None and epochs_to_come(mine, worker.default_epochs) <= room


def _train(worker: _Worker, trial: optuna.Trial) -> tuple[Outcome, float | None]:
    """Run the objective (watchdog on); the outcome before telling and the value when it completed."""
    study = worker.study
    if worker.watchdog is not None:
        worker.watchdog.start(trial)
    try:
        return Outcome.COMPLETE, worker.objective(trial)
    except optuna.TrialPruned as err:
        log.info("trial %d pruned: %s", trial.number, err)
        return Outcome.PRUNED, None
    except (KeyboardInterrupt, Interrupted):
        log.warning("trial %d interrupted; it is marked FAIL and queued to resume", trial.number)
        _fail_and_requeue(study, trial, "interrupted (worker stopped)")
        return Outcome.INTERRUPTED, None
    except Exception as err:
        if _finished_elsewhere(study, trial, err):
            log.warning("%s", _ended_elsewhere(worker, trial))
            return Outcome.STALE, None
        full = disk_full_reason(err, worker.settings.run_folders)  # reason "disk-full: FOLDER has N MiB free"
        text = full or mask_password(f"{type(err).__name__}: {err}")
        log.error("trial %d failed: %s", trial.number, text, exc_info=True)
        with contextlib.suppress(Exception):
            if full or TrialAttrs.REASON not in storage_of(study).get_trial(trial_id_of(trial)).user_attrs:
                trial.set_user_attr(TrialAttrs.REASON, text[:500])
        return Outcome.FAIL, None
    finally:
        if worker.watchdog is not None:
            worker.watchdog.stop()


def _tell(worker: _Worker, trial: optuna.Trial, outcome: Outcome, value: float | None) -> TrialEnd:
    """Store the end state of a trial that ran here; the turn's :class:`TrialEnd`."""
    study = worker.study
    state = {Outcome.COMPLETE: TrialState.COMPLETE, Outcome.PRUNED: TrialState.PRUNED}.get(outcome)
    if outcome is Outcome.FAIL:
        state = TrialState.FAIL
    if state is None:  # interrupted (failed and re-queued) or failed elsewhere: nothing to tell
        return TrialEnd(outcome, trial.number)
    try:
        with deferred_interrupts():
            if state == TrialState.COMPLETE:
                tell_quietly(study, trial, value)
            else:
                tell_quietly(study, trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another process ended the trial while it still ran here (e.g. failed it as stale: its heartbeat was late)
        log.warning("%s", _ended_elsewhere(worker, trial))
        return TrialEnd(Outcome.STALE, trial.number)
    except Exception as err:  # noqa: BLE001 - e.g. a value Optuna refuses, or the sampler's after_trial raised
        outcome = _tell_failed(study, trial, err)
    return TrialEnd(outcome, trial.number, _reason(study, trial) if outcome is Outcome.FAIL else "")


def _tell_failed(study: optuna.Study, trial: optuna.Trial, err: Exception) -> Outcome:
    """Telling raised: keep what Optuna stored, else mark the trial FAIL with the error as its reason.

    NOTE Optuna stores the end state even when the sampler's after_trial raises (a GridSampler whose grid is used
    up calls Study.stop, which refuses outside Study.optimize): keep what was stored.
    """
    stored = _stored_state(study, trial)
    if stored is not None and stored.is_finished():
        log.warning(
            "trial %d is stored as %s; telling it raised %s: %s",
            trial.number,
            stored.name,
            type(err).__name__,
            mask_password(err),
        )
        return {TrialState.COMPLETE: Outcome.COMPLETE, TrialState.PRUNED: Outcome.PRUNED}.get(stored, Outcome.FAIL)
    log.warning("trial %d: %s; marking it FAIL", trial.number, mask_password(err))
    with contextlib.suppress(Exception):
        trial.set_user_attr(TrialAttrs.REASON, mask_password(f"{type(err).__name__}: {err}")[:500])
    with contextlib.suppress(Exception):
        storage_of(study).set_trial_state_values(trial_id_of(trial), state=TrialState.FAIL)
    return Outcome.FAIL


def _reason(study: optuna.Study, trial: optuna.Trial) -> str:
    """The stored `reason` user attr of a trial ("?" when it cannot be read)."""
    try:
        return str(storage_of(study).get_trial(trial_id_of(trial)).user_attrs.get(TrialAttrs.REASON, "?"))
    except Exception:  # noqa: BLE001 - the database may be gone; the reason is for a message only
        return "?"


def _fail_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Mark a RUNNING trial FAIL with `reason` and queue a copy (same params) that resumes it later."""
    try:
        fail_trial(study, trial_id_of(trial), reason)
    except Exception as err:  # noqa: BLE001 - e.g. the database is gone for good; a stale check fails it later
        log.warning("could not mark trial %d failed: %s", trial.number, mask_password(err))


def _finished_elsewhere(study: optuna.Study, trial: optuna.Trial, err: BaseException | None = None) -> bool:
    """True when `trial` is no longer RUNNING in the storage (another process failed it as stale).

    Seen as ``UpdateFinishedTrialError`` anywhere in `err`'s chain, or by reading the trial's state.
    """
    seen: set[int] = set()
    e = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, optuna.exceptions.UpdateFinishedTrialError):
            return True
        e = e.__cause__ or e.__context__
    try:
        return rdb_of(storage_of(study)).get_trial(trial_id_of(trial)).state != TrialState.RUNNING
    except Exception:  # noqa: BLE001 - cannot tell; treat it as an ordinary failure
        return False


def _ended_elsewhere(worker: _Worker, trial: optuna.Trial) -> str:
    """One line on a trial that another process ended while it ran here: the state and reason it stored, and
    what its queued copy starts from (the checkpoint only when one was written)."""
    try:
        frozen = rdb_of(worker.storage).get_trial(trial_id_of(trial))
        state, reason = frozen.state.name, str(frozen.user_attrs.get(TrialAttrs.REASON, ""))
    except Exception:  # noqa: BLE001 - the database may be gone; the line is for a message only
        state, reason = "?", ""
    line = f"trial {trial.number} was marked {state} by another process while it ran here"
    if reason:
        line += f" (reason: {reason})"
    if reason.startswith("stale"):
        line += "; this worker's heartbeat was late by more than the grace period (machine overloaded?)"
    if state == TrialState.FAIL.name:
        last = checkpoint_dir(worker.settings.study_checkpoints, trial.number) / "last.pt"
        if last.is_file():
            line += f"; its queued copy resumes from {last}"
        else:
            line += "; its queued copy starts at epoch 1 (no checkpoint was written yet)"
    return line + "; this worker goes on"


def _stored_state(study: optuna.Study, trial: optuna.Trial) -> TrialState | None:
    try:
        return rdb_of(storage_of(study)).get_trial(trial_id_of(trial)).state
    except Exception:  # noqa: BLE001 - cannot tell
        return None


def join_worker(
    sweep_file: str | Path | None,
    options: RunOptions,
    *,
    study_name: str | None = None,
    confirm: bool = False,
    n_trials: int | None = None,
    worker_index: int | None = None,
) -> WorkerReport:
    """`maskcls-hpo worker`: join a study from another shell or machine and run trials until its budget is met.

    Args:
        sweep_file: the sweep file the study was launched with (None with `confirm`).
        options: how trials run (:class:`~maskcls_hpo.hpo.workers.RunOptions`).
        study_name: default the sweep file's stem; required with `confirm` (e.g. ``SWEEP-confirm``).
        confirm: join a confirm study (its runs need no sweep file).
        n_trials: target finished trials (default: the study's stored budget).
        worker_index: offsets the sampler seed (default: a random one, so that workers started alike on several
            machines sample different params).

    Raises:
        LaunchError: no sweep file (and not `confirm`), `confirm` without a study name, a bad `n_trials`.
        MaskclsError: as :func:`run_worker`.
    """
    if confirm and study_name is None:
        raise LaunchError("--confirm needs --study NAME (the confirm study, e.g. SWEEP-confirm)")
    if not confirm and sweep_file is None:
        raise LaunchError("pass the sweep file (or --confirm --study NAME to join a confirm study)")
    sweep, name = None, study_name
    if sweep_file is not None and not confirm:
        sweep = load_sweep(sweep_file)
        name = study_name or sweep.name
    assert name is not None  # a study name with --confirm, else the sweep's
    index = worker_index if worker_index is not None else 1000 + secrets.randbelow(1_000_000)
    settings = WorkerSettings.for_study(
        name,
        options,
        kind="confirm" if confirm else "sweep",
        sweep_path=sweep.path if sweep is not None else None,
        n_trials=n_trials,
        worker_index=index,
    )
    return run_worker(settings, sweep)
