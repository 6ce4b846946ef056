"""The worker loop: trials of one study until it holds exactly N finished trials.

Run in a process of its own by the supervisor (``python -m maskcls_hpo.hpo.worker SETTINGS.json``, the
settings serialised whole), by `maskcls-hpo worker`, or called directly (:func:`run_worker`).

Budget (problem C1 in docs/ARCHITECTURE.md): the study holds `n_trials` *finished* trials (COMPLETE + PRUNED)
in total, across all workers and all launches. A worker only starts a trial while `finished + running <
n_trials`; after `study.ask()` it claims a slot: its trial counts only if at most `n_trials` slot-holding
trials (RUNNING, COMPLETE, PRUNED) have a number <= its own, so when two workers race for the last slot the
lower trial number wins and the other trial goes back to WAITING (no FAIL record is added); a new trial also
goes back while an older one is WAITING (a failed trial's copy runs before new ones). FAIL trials free
their slot; a worker stops after `max_consecutive_failures` failed trials in a row, saying why.

Faults (docs/ARCHITECTURE.md, "Faults"): heartbeat on; before each trial the worker fails stale trials, which
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
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

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
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.signals import Interrupted, deferred_interrupts, stop_requested, stop_signals
from maskcls_hpo.hpo.store import (
    count_trials,
    fail_stale_trials,
    fail_trial,
    mask_password,
    open_storage,
    retry_db,
    seconds_since_db_error,
)
from maskcls_hpo.hpo.trial import Sweep, TrialArtifactUploader, TrialTracker, check_mlflow, load_sweep, make_objective
from maskcls_hpo.hpo.workers._options import WorkerSettings
from maskcls_hpo.hpo.workers._preflight import check_join
from maskcls_hpo.hpo.workers._slurm import slurm_task_of_env
from maskcls_hpo.hpo.workers._watchdog import TrialWatchdog

log = logging.getLogger(__name__)


@dataclass
class WorkerReport:
    """What a worker did: trial counts by end state and why it stopped."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    stop_reason: str = ""

    @property
    def ok(self) -> bool:
        """False when the worker stopped at the cap on failed trials in a row."""
        return not self.stop_reason.startswith("stopped after")

    @property
    def exit_code(self) -> int:
        """Process exit code: 130 interrupted, 3 failure cap, else 0 (4, EXIT_HUNG, comes from the watchdog)."""
        if self.stop_reason == "interrupted":
            return 130
        return 0 if self.ok else 3


def _retry_db(fn: Callable[[], Any], what: str) -> Any:
    """Call `fn`, retrying transient database errors (:func:`maskcls_hpo.hpo.store.retry_db`).

    Only for read-only steps and steps that reach the engine directly (`count_trials`); the storage's own
    calls (`study.ask`, `study.tell`, `trial.report`, `fail_stale_trials`, the heartbeat) retry each
    statement themselves, so no half-done step (a trial created, a stale trial failed but not re-queued) is
    repeated from its start.
    """
    return retry_db(fn, what)


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


# _run_one's result for a trial that another process declared stale (and re-queued) while this worker ran it.
STALE = "stale"


def _load_study(
    storage: optuna.storages.RDBStorage, sweep: Sweep, study_name: str, worker_index: int, n_trials: int | None
) -> optuna.Study:
    """The study with this worker's sampler, sized to `n_trials` (None: the study's stored budget)."""
    if n_trials is None:
        with contextlib.suppress(KeyError):  # a missing study is reported by load_study below
            n_trials = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(StudyAttrs.N_TRIALS)
    return optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=sweep.make_sampler(worker_index, n_trials),
        pruner=sweep.make_pruner(),
    )


def _claim_slot(storage: optuna.storages.RDBStorage, study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """True when `trial` is within the budget (lower trial numbers win a race for the last slots).

    False too while an older trial is WAITING: ``study.ask`` may read the queue just before another process
    queues a failed trial's copy, and then creates a new trial; the new one goes back to the queue, so the copy
    (which resumes from its checkpoint) runs first.
    """
    c = count_trials(storage, study_id_of(study), max_number=trial.number)
    return c.waiting == 0 and c.running + c.finished <= n_trials


def _fail_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Mark a RUNNING trial FAIL with `reason` and queue a copy (same params) that resumes it later."""
    try:
        fail_trial(study, trial_id_of(trial), reason)
    except Exception as err:  # noqa: BLE001 - e.g. the database is gone for good; a stale check fails it later
        log.warning("could not mark trial %d failed: %s", trial.number, mask_password(err))


def run_worker(
    settings: WorkerSettings,
    sweep: Sweep | None = None,
    objective: Callable[[optuna.Trial], float] | None = None,
) -> WorkerReport:
    """Run trials of one study until it holds `n_trials` finished trials (or timeout / failure cap).

    Args:
        settings: the study, storage and budget.
        sweep: the loaded sweep file (default: loaded from `settings.sweep_path`; for ``kind="confirm"``
            the study's :class:`~maskcls_hpo.hpo.trial.ConfirmPlan`).
        objective: `objective(trial) -> float` run instead of the sweep's training objective (which is
            `make_objective` + artifact upload); the loop around it (budget, slot claim, heartbeat, retries,
            end states) is unchanged. Used by the storage benchmark (a no-training objective) and the GPU
            check (a wrapper that records GPU memory between trials).

    Returns:
        WorkerReport with this worker's counts and `stop_reason`.

    Raises:
        StorageError, SweepError, LaunchError, DataError: before any trial and before anything is created,
            when the storage, the study, the sweep or the data cannot be used (``hpo.launch.check_join``).
    """
    settings = settings.for_this_process()
    if sweep is None and settings.kind == "sweep":
        sweep = load_sweep(settings.sweep_path)
    url = settings.resolved_storage_url()
    # launch's checks before anything is created: database, schema, study, search space, data
    check_join(sweep, url, settings.study_name, settings.overrides, check_data=settings.check_data)
    storage = open_storage(url, settings.heartbeat)
    if sweep is None:  # a confirm study: its fold runs and configs are stored in the study and its source
        from maskcls_hpo.hpo.trial import load_plan

        sweep = _retry_db(lambda: load_plan(storage, settings.study_name), "loading the confirm plan")
    study = _retry_db(
        lambda: _load_study(storage, sweep, settings.study_name, settings.worker_index, settings.n_trials),
        "loading the study",
    )
    n_trials = settings.n_trials or study.user_attrs.get(StudyAttrs.N_TRIALS)
    if not n_trials:
        raise LaunchError(f"study '{settings.study_name}' has no trial budget: pass --n-trials")
    worker_label = f"{socket.gethostname()}:{os.getpid()}/{settings.worker_index}"
    slurm = slurm_task_of_env()
    watchdog = (
        TrialWatchdog(study, settings.watchdog, settings.watchdog_factor, settings.watchdog_first_epoch)
        if settings.watchdog > 0
        else None
    )
    # Every finished trial (COMPLETE, and PRUNED from its metrics.json) gets artifacts for the dashboard.
    if objective is None:
        if settings.mlflow_uri:
            check_mlflow(settings.mlflow_uri, settings.study_name)
        uploader = TrialArtifactUploader(url)
        checkpoint_root = settings.checkpoint_root / settings.study_name
        objective = uploader.wrap(
            make_objective(
                sweep,
                checkpoint_root=checkpoint_root,
                overrides=settings.overrides,
                worker=worker_label,
                after_trial=uploader,
                tracker=TrialTracker(settings.study_name, settings.tensorboard_dir, settings.mlflow_uri),
                epoch_done=watchdog.epoch_done if watchdog is not None else None,
            ),
            checkpoint_root,
        )
    if settings.kind == "confirm":
        from maskcls_hpo.hpo.trial import requeue_failed

        objective = requeue_failed(objective)  # a failed fold run is queued again: each run once, exact budget
    report = WorkerReport()
    consecutive_failures = 0
    started = time.monotonic()
    where = ""
    if slurm is not None:
        job, task, restarts = slurm
        where = f"; slurm job {job}" + (f"_{task}" if task is not None else "") + f", restart {restarts}"
    log.info(
        "worker %s joins study '%s' (target %d finished trials%s)", worker_label, study.study_name, n_trials, where
    )
    with stop_signals(), contextlib.suppress(Interrupted, KeyboardInterrupt):
        report.stop_reason = "interrupted"  # kept if a stop signal ends the loop between trials
        while True:
            if stop_requested():
                break
            if settings.timeout is not None and time.monotonic() - started > settings.timeout:
                report.stop_reason = f"timeout of {settings.timeout:.0f} s reached"
                break
            # Stale trials (their worker died): FAIL + a re-queued copy that resumes from the checkpoint. Not
            # right after this process saw the database go away: the other workers could not write their
            # heartbeats either, and their trials would look stale when they are not.
            if seconds_since_db_error() > settings.heartbeat.grace_period:
                # not retried as a whole: a repeat after "FAIL written, copy not queued yet" would never
                # queue the copy; each statement inside retries by itself. Trials without a heartbeat row
                # count too (a worker killed between ask() and the first heartbeat): hpo/store/_stale.py.
                fail_stale_trials(study, settings.heartbeat.grace_period)
            counts = _retry_db(lambda: count_trials(storage, study_id_of(study)), "counting trials")
            if counts.finished >= n_trials:
                report.stop_reason = f"study holds {counts.finished} finished trials (target {n_trials})"
                break
            if counts.finished + counts.running >= n_trials:
                time.sleep(settings.poll_interval)  # the last slots are taken; a running trial may still fail
                continue
            try:
                trial = ask_tracked(study)
            except AskError as err:
                # e.g. the sampler raised: the trial exists as RUNNING; fail it (no copy: it would fail again)
                reason = mask_password(f"ask() failed: {err}")[:500]
                log.error("trial id %d: %s", err.trial_id, reason)
                with contextlib.suppress(Exception):
                    fail_trial(study, err.trial_id, reason, queue_copy=False)
                report.failed += 1
                consecutive_failures += 1
                if consecutive_failures >= settings.max_consecutive_failures:
                    report.stop_reason = (
                        f"stopped after {consecutive_failures} failed trials in a row "
                        f"(last reason: {reason}); fix the cause, then launch again"
                    )
                    break
                continue
            # The heartbeat starts before the claim, so a RUNNING trial has a heartbeat row within moments of
            # its start even on a starved machine; a row left by a claim that lost is harmless (a trial is
            # stale only when both its heartbeat and its start are older than the grace period: hpo/store/_stale.py).
            beat = heartbeat(trial, study)
            beat.__enter__()
            try:
                claimed = _retry_db(lambda: _claim_slot(storage, study, trial, n_trials), "claiming")  # noqa: B023
            except (KeyboardInterrupt, Interrupted):
                beat.__exit__(None, None, None)
                storage.set_trial_state_values(trial_id_of(trial), state=TrialState.WAITING)
                report.stop_reason = "interrupted"
                break
            if not claimed:
                beat.__exit__(None, None, None)
                storage.set_trial_state_values(trial_id_of(trial), state=TrialState.WAITING)
                time.sleep(settings.poll_interval)
                continue
            if slurm is not None:  # `status` shows where a running trial runs
                trial.set_user_attr(TrialAttrs.SLURM_JOB_ID, slurm[0])
                if slurm[1] is not None:
                    trial.set_user_attr(TrialAttrs.SLURM_TASK_ID, slurm[1])
            state = _run_one(study, trial, objective, watchdog, beat)
            if state == STALE:
                continue  # not this worker's failure: the trial's copy is queued and resumes elsewhere
            if state == TrialState.COMPLETE:
                report.complete += 1
            elif state == TrialState.PRUNED:
                report.pruned += 1
            elif state == TrialState.FAIL:
                report.failed += 1
            if state == TrialState.FAIL:
                consecutive_failures += 1
                if consecutive_failures >= settings.max_consecutive_failures:
                    last = storage_of(study).get_trial(trial_id_of(trial)).user_attrs.get(TrialAttrs.REASON, "?")
                    report.stop_reason = (
                        f"stopped after {consecutive_failures} failed trials in a row "
                        f"(last reason: {last}); fix the cause, then launch again"
                    )
                    break
            else:
                consecutive_failures = 0
            if state is None:  # interrupted
                report.stop_reason = "interrupted"
                break
    log.info("worker %s stops: %s", worker_label, report.stop_reason)
    return report


def _run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], float],
    watchdog: TrialWatchdog | None = None,
    beat: Any = None,
) -> TrialState | str | None:
    """Run one trial under a heartbeat and tell its end state.

    Returns:
        the trial's end state; None when interrupted (trial re-queued); :data:`STALE` when another
        process failed the trial as stale while it ran here (its heartbeat was late): the worker logs a
        warning and goes on, since a copy of the trial is already queued.
    """
    value: float | None = None
    state = TrialState.COMPLETE
    if watchdog is not None:
        watchdog.start(trial)
    try:
        if beat is None:  # called without the loop's heartbeat
            beat = heartbeat(trial, study)
            beat.__enter__()
        try:
            value = objective(trial)
        finally:
            beat.__exit__(None, None, None)
    except optuna.TrialPruned as err:
        state = TrialState.PRUNED
        log.info("trial %d pruned: %s", trial.number, err)
    except (KeyboardInterrupt, Interrupted):
        log.warning("trial %d interrupted; it is marked FAIL and queued to resume", trial.number)
        _fail_and_requeue(study, trial, "interrupted (worker stopped)")
        return None
    except Exception as err:
        if _finished_elsewhere(study, trial, err):
            log.warning(
                "trial %d was failed as stale by another process while it ran here (heartbeat late by more "
                "than the grace period?); its copy resumes from the checkpoint; this worker goes on",
                trial.number,
            )
            return STALE
        state = TrialState.FAIL
        log.error("trial %d failed: %s", trial.number, mask_password(f"{type(err).__name__}: {err}"), exc_info=True)
        with contextlib.suppress(Exception):
            if TrialAttrs.REASON not in storage_of(study).get_trial(trial_id_of(trial)).user_attrs:
                trial.set_user_attr(TrialAttrs.REASON, mask_password(f"{type(err).__name__}: {err}")[:500])
    finally:
        if watchdog is not None:
            watchdog.stop()
    try:
        with deferred_interrupts():
            if state == TrialState.COMPLETE:
                tell_quietly(study, trial, value)
            else:
                tell_quietly(study, trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # The trial was declared stale (its heartbeat was late) while it still ran; a copy is queued.
        log.warning("trial %d was already finished by another process (stale heartbeat?); going on", trial.number)
        return STALE
    except Exception as err:  # noqa: BLE001 - e.g. a value Optuna refuses, or the sampler's after_trial raised
        # NOTE Optuna stores the end state even when the sampler's after_trial raises (a GridSampler whose grid
        # is used up calls Study.stop, which refuses outside Study.optimize): keep what was stored.
        stored = _stored_state(study, trial)
        if stored is not None and stored.is_finished():
            log.warning(
                "trial %d is stored as %s; telling it raised %s: %s",
                trial.number,
                stored.name,
                type(err).__name__,
                mask_password(err),
            )
            return stored
        log.warning("trial %d: %s; marking it FAIL", trial.number, mask_password(err))
        with contextlib.suppress(Exception):
            trial.set_user_attr(TrialAttrs.REASON, mask_password(f"{type(err).__name__}: {err}")[:500])
        with contextlib.suppress(Exception):
            storage_of(study).set_trial_state_values(trial_id_of(trial), state=TrialState.FAIL)
        state = TrialState.FAIL
    return state


def _stored_state(study: optuna.Study, trial: optuna.Trial) -> TrialState | None:
    try:
        return rdb_of(storage_of(study)).get_trial(trial_id_of(trial)).state
    except Exception:  # noqa: BLE001 - cannot tell
        return None
