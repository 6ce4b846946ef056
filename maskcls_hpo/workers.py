"""The worker loop and `launch`: K worker processes on one study, stopping at exactly N finished trials.

Budget (case C1): the study holds `n_trials` *finished* trials (COMPLETE + PRUNED) in total, across all
workers and all launches. A worker only starts a trial while `finished + running < n_trials`; after
`study.ask()` it claims a slot: its trial counts only if at most `n_trials` slot-holding trials (RUNNING,
COMPLETE, PRUNED) have a number <= its own, so when two workers race for the last slot the lower trial
number wins and the other trial goes back to WAITING (no FAIL record is added). FAIL trials free their
slot; a worker stops after `max_consecutive_failures` failed trials in a row, saying why.

Faults (DESIGN.md section 6): heartbeat on; before each trial the worker fails stale trials, which
re-queues them (``RetryHeartbeatStaleTrialCallback``); a re-run resumes from the original trial's last
checkpoint. A trial's exception never kills the worker. Ctrl-C / SIGTERM: the running trial is marked FAIL
(reason "interrupted"), a copy is queued to resume later, and the worker exits: no trial is left RUNNING.
Transient database errors (e.g. a PostgreSQL restart) are retried with backoff by every storage call,
the heartbeat's included (:func:`maskcls_hpo.storage.retry_db`); for one grace period after such an outage
the worker fails no other trial as stale. A trial that another process failed as stale while it still ran
here (its heartbeat was late) ends with a warning; the worker goes on with the next trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

try:  # what Study.tell and Study.optimize call (see _tell)
    from optuna.study._tell import _tell_with_warning
except ImportError:  # pragma: no cover
    _tell_with_warning = None

from maskcls_hpo.artifacts import TrialArtifactUploader, save_study_note, study_note
from maskcls_hpo.objective import TrialAttrs, checkpoint_dir, make_objective
from maskcls_hpo.signals import Interrupted, deferred_interrupts, stop_requested, stop_signals
from maskcls_hpo.storage import (
    HeartbeatSettings,
    display_url,
    mask_password,
    open_storage,
    rdb_of,
    retry_db,
    seconds_since_db_error,
)
from maskcls_hpo.sweep import Sweep, load_sweep

__all__ = [
    "WorkerSettings",
    "WorkerReport",
    "StudyCounts",
    "count_trials",
    "run_worker",
    "prepare_study",
    "launch",
    "LaunchError",
]

log = logging.getLogger("maskcls_hpo.worker")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLOT_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
STUDY_ATTR_N_TRIALS = "n_trials"
STUDY_ATTR_SWEEP = "sweep_file"
STUDY_ATTR_FINGERPRINT = "data_fingerprint"
STUDY_ATTR_DATASET = "dataset"


class LaunchError(RuntimeError):
    """`launch` cannot start (a worker process failed to start, or all workers died)."""


@dataclass
class StudyCounts:
    """Trials of a study by state (counts)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """COMPLETE + PRUNED: what `--n-trials` counts."""
        return self.complete + self.pruned


def count_trials(storage: optuna.storages.RDBStorage, study_id: int, max_number: int | None = None) -> StudyCounts:
    """Count a study's trials by state with one SQL `GROUP BY` (cheap even for thousands of trials).

    Args:
        max_number: count only trials whose number is <= this (the slot claim).
    """
    from optuna.storages._rdb import models

    query = (
        sqlalchemy.select(models.TrialModel.state, sqlalchemy.func.count())
        .where(models.TrialModel.study_id == study_id)
        .group_by(models.TrialModel.state)
    )
    if max_number is not None:
        query = query.where(models.TrialModel.number <= max_number)
    counts = StudyCounts()
    with rdb_of(storage).engine.connect() as con:
        for state, n in con.execute(query):
            state = TrialState[state] if isinstance(state, str) else TrialState(state)
            name = {TrialState.FAIL: "failed"}.get(state, state.name.lower())
            setattr(counts, name, getattr(counts, name) + n)
    return counts


@dataclass
class WorkerSettings:
    """What one worker process needs.

    Attributes:
        n_trials: target of finished trials in the study (None: the study's stored target).
        overrides: config keys applied on top of the sweep (data_dir, device).
        timeout: seconds after which the worker starts no new trial (None: no limit).
        max_consecutive_failures: stop after this many FAIL trials in a row.
        checkpoints: root folder of checkpoints (`<checkpoints>/<study>/trial_<n>/`).
        poll_interval: seconds between looks at the study while waiting for running trials.
    """

    sweep_path: Path
    storage_url: str
    study_name: str
    n_trials: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings.from_env)
    timeout: float | None = None
    max_consecutive_failures: int = 5
    worker_index: int = 0
    checkpoints: Path = Path("storage/checkpoints")
    poll_interval: float = 1.0


@dataclass
class WorkerReport:
    """What a worker did: trial counts by end state and why it stopped."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    stop_reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.stop_reason.startswith("stopped after")




def _retry_db(fn: Callable[[], Any], what: str) -> Any:
    """Call `fn`, retrying transient database errors (:func:`maskcls_hpo.storage.retry_db`).

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
        return rdb_of(study._storage).get_trial(trial._trial_id).state != TrialState.RUNNING
    except Exception:  # noqa: BLE001 - cannot tell; treat it as an ordinary failure
        return False


# _run_one's result for a trial that another process declared stale (and re-queued) while this worker ran it.
STALE = "stale"


def _load_study(storage: optuna.storages.RDBStorage, sweep: Sweep, study_name: str, worker_index: int) -> optuna.Study:
    return optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=sweep.make_sampler(worker_index),
        pruner=sweep.make_pruner(),
    )


def _claim_slot(storage: optuna.storages.RDBStorage, study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """True when `trial` is within the budget (lower trial numbers win a race for the last slots)."""
    c = count_trials(storage, study._study_id, max_number=trial.number)
    return c.running + c.finished <= n_trials


def _fail_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Mark a RUNNING trial FAIL with `reason` and queue a copy (same params) that resumes it later."""
    with contextlib.suppress(Exception):
        trial.set_user_attr(TrialAttrs.REASON, reason)
    try:
        study.tell(trial, state=TrialState.FAIL)
    except Exception as err:  # already finished by someone else
        log.warning("could not mark trial %d failed: %s", trial.number, mask_password(err))
        return
    frozen = study._storage.get_trial(trial._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, frozen)


def run_worker(
    settings: WorkerSettings,
    sweep: Sweep | None = None,
    objective: Callable[[optuna.Trial], float] | None = None,
) -> WorkerReport:
    """Run trials of one study until it holds `n_trials` finished trials (or timeout / failure cap).

    Args:
        settings: the study, storage and budget.
        sweep: the loaded sweep file (default: loaded from `settings.sweep_path`).
        objective: `objective(trial) -> float` run instead of the sweep's training objective (which is
            `make_objective` + artifact upload); the loop around it (budget, slot claim, heartbeat, retries,
            end states) is unchanged. Used by the storage benchmark (a no-training objective) and the GPU
            check (a wrapper that records GPU memory between trials).

    Returns:
        WorkerReport with this worker's counts and `stop_reason`.

    Raises:
        StorageError, SweepError: before any trial, when the storage or sweep cannot be used.
    """
    sweep = sweep or load_sweep(settings.sweep_path)
    storage = open_storage(settings.storage_url, settings.heartbeat)
    study = _retry_db(
        lambda: _load_study(storage, sweep, settings.study_name, settings.worker_index), "loading the study"
    )
    n_trials = settings.n_trials or study.user_attrs.get(STUDY_ATTR_N_TRIALS)
    if not n_trials:
        raise LaunchError(f"study '{settings.study_name}' has no trial budget: pass --n-trials")
    worker_label = f"{socket.gethostname()}:{os.getpid()}/{settings.worker_index}"
    # Every finished trial (COMPLETE, and PRUNED from its metrics.json) gets artifacts for the dashboard.
    if objective is None:
        uploader = TrialArtifactUploader(settings.storage_url)
        checkpoint_root = Path(settings.checkpoints) / settings.study_name
        objective = uploader.wrap(
            make_objective(sweep, checkpoint_root=checkpoint_root, overrides=settings.overrides, worker=worker_label,
                           after_trial=uploader),
            checkpoint_root,
        )
    report = WorkerReport()
    consecutive_failures = 0
    started = time.monotonic()
    log.info("worker %s joins study '%s' (target %d finished trials)", worker_label, study.study_name, n_trials)
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
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    # not retried as a whole: a repeat after "FAIL written, copy not queued yet" would never
                    # queue the copy; each statement inside retries by itself
                    optuna.storages.fail_stale_trials(study)
            counts = _retry_db(lambda: count_trials(storage, study._study_id), "counting trials")
            if counts.finished >= n_trials:
                report.stop_reason = f"study holds {counts.finished} finished trials (target {n_trials})"
                break
            if counts.finished + counts.running >= n_trials:
                time.sleep(settings.poll_interval)  # the last slots are taken; a running trial may still fail
                continue
            with warnings.catch_warnings():
                # NOTE Optuna warns that heartbeats are meant for Study.optimize; this loop runs the same
                # heartbeat thread itself (see _run_one).
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                trial = study.ask()
            # NOTE no heartbeat is written here: a RUNNING trial without a heartbeat row is never stale (Optuna's
            # _get_stale_trial_ids skips it), rows are written only by the heartbeat thread of _run_one, which
            # starts after the claim, and a trial goes back to WAITING only before that. (An extra write here
            # cost ~8% of the loop's throughput with short trials: benchmarks/b4_storage.py.)
            try:
                claimed = _retry_db(lambda: _claim_slot(storage, study, trial, n_trials), "claiming")  # noqa: B023
            except (KeyboardInterrupt, Interrupted):
                storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)
                report.stop_reason = "interrupted"
                break
            if not claimed:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)
                time.sleep(settings.poll_interval)
                continue
            state = _run_one(study, trial, objective)
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
                    last = study._storage.get_trial(trial._trial_id).user_attrs.get(TrialAttrs.REASON, "?")
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


def _tell(
    study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None
) -> None:
    """`study.tell(trial, value, state)` without its return value.

    `Study.tell` reads the whole trial back from the database to return a copy of it (6 more statements per
    trial, about a sixth of a short trial's database work: benchmarks/b4_storage.py); `Study.optimize` calls
    the same internal function as here. Same checks, warnings and errors as `Study.tell`.
    """
    if _tell_with_warning is None:  # pragma: no cover - an Optuna without the internal function
        study.tell(trial, value, state=state)
        return
    _tell_with_warning(study=study, trial=trial, value_or_values=value, state=state)


def _run_one(
    study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]
) -> TrialState | str | None:
    """Run one trial under a heartbeat and tell its end state.

    Returns:
        the trial's end state; None when interrupted (trial re-queued); :data:`STALE` when another
        process failed the trial as stale while it ran here (its heartbeat was late): the worker logs a
        warning and goes on, since a copy of the trial is already queued.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread

    value: float | None = None
    state = TrialState.COMPLETE
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            value = objective(trial)
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
                "than the grace period?); its copy resumes from the checkpoint; this worker goes on", trial.number
            )
            return STALE
        state = TrialState.FAIL
        log.error("trial %d failed: %s", trial.number, mask_password(f"{type(err).__name__}: {err}"), exc_info=True)
        with contextlib.suppress(Exception):
            if TrialAttrs.REASON not in study._storage.get_trial(trial._trial_id).user_attrs:
                trial.set_user_attr(TrialAttrs.REASON, mask_password(f"{type(err).__name__}: {err}")[:500])
    try:
        with deferred_interrupts():
            if state == TrialState.COMPLETE:
                _tell(study, trial, value)
            else:
                _tell(study, trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # The trial was declared stale (its heartbeat was late) while it still ran; a copy is queued.
        log.warning("trial %d was already finished by another process (stale heartbeat?); going on", trial.number)
        return STALE
    except ValueError as err:  # e.g. a value Optuna refuses
        log.warning("trial %d: %s; marking it FAIL", trial.number, err)
        with contextlib.suppress(Exception):
            study.tell(trial, state=TrialState.FAIL)
        state = TrialState.FAIL
    return state


# --- launch ---------------------------------------------------------------------------------------


def prepare_study(
    sweep: Sweep,
    storage: optuna.storages.RDBStorage,
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
    study.set_user_attr(STUDY_ATTR_N_TRIALS, int(n_trials))
    study.set_user_attr(STUDY_ATTR_SWEEP, str(sweep.path))
    for key, value in (study_attrs or {}).items():
        study.set_user_attr(key, value)
    save_study_note(study, study_note(study_name, sweep.path, n_trials, study_attrs))
    for params in sweep.known_good:
        study.enqueue_trial(params, skip_if_exists=True)
    return study


def worker_command(sweep_path: Path, study_name: str, n_trials: int, index: int, data_dir: str | None,
                   timeout: float | None, heartbeat: HeartbeatSettings, checkpoints: Path) -> list[str]:
    """argv of one worker process (the storage URL travels in the environment, never on the command line)."""
    cmd = [sys.executable, "-m", "maskcls_hpo", "worker", str(sweep_path), "--study", study_name,
           "--n-trials", str(n_trials), "--worker-index", str(index),
           "--heartbeat-interval", str(heartbeat.interval), "--grace-period", str(heartbeat.grace_period),
           "--checkpoints", str(checkpoints)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    return cmd


def launch(
    sweep: Sweep,
    storage_url: str,
    study_name: str,
    n_trials: int,
    workers: int = 1,
    gpus: list[str] | None = None,
    data_dir: str | None = None,
    timeout: float | None = None,
    heartbeat: HeartbeatSettings | None = None,
    checkpoints: Path = Path("storage/checkpoints"),
    log_dir: Path | None = None,
    on_poll: Callable[[optuna.Study, StudyCounts], None] | None = None,
    poll_interval: float = 1.0,
) -> tuple[StudyCounts, list[int]]:
    """Start `workers` worker processes on a prepared study and wait for them.

    Each process gets `CUDA_VISIBLE_DEVICES` round-robin from `gpus` (several per GPU allowed) and the
    storage URL in its environment. Worker logs go to `<log_dir>/worker-<i>.log`. `on_poll(study, counts)`
    is called every `poll_interval` seconds (live progress). Ctrl-C is passed on to the workers, which
    close their trials cleanly.

    Returns:
        (final counts, the workers' exit codes).
    """
    heartbeat = heartbeat or HeartbeatSettings.from_env()
    log_dir = Path(log_dir or Path("storage/logs") / study_name)
    log_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url, heartbeat)
    study = optuna.load_study(study_name=study_name, storage=storage)
    procs: list[subprocess.Popen] = []
    logs = []
    env_base = {**os.environ, "MASKCLS_HPO_STORAGE": storage_url, "PYTHONUNBUFFERED": "1"}
    env_base.setdefault("COLUMNS", "200")  # log files: rich would wrap every line at 80 characters
    for i in range(workers):
        env = dict(env_base)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        elif "OMP_NUM_THREADS" not in os.environ:
            # NOTE K CPU-bound workers with torch's default (all cores each) oversubscribe the CPU; split it.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        fh = open(log_dir / f"worker-{i}.log", "ab")  # noqa: SIM115 - closed below
        logs.append(fh)
        cmd = worker_command(sweep.path, study_name, n_trials, i, data_dir, timeout, heartbeat, checkpoints)
        procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT))
    log.info("started %d workers on %s (logs in %s)", workers, display_url(storage_url), log_dir)
    try:
        with stop_signals():
            while any(p.poll() is None for p in procs):
                if on_poll is not None:
                    with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                        on_poll(study, count_trials(storage, study._study_id))
                time.sleep(poll_interval)
    except (KeyboardInterrupt, Interrupted):
        # NOTE SIGTERM, not SIGINT: a launch started in the background has SIGINT ignored, and its workers
        # inherit that; every worker turns SIGTERM into a clean stop of its running trial.
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait(timeout=30)
        raise
    finally:
        for fh in logs:
            fh.close()
    counts = count_trials(storage, study._study_id)
    if on_poll is not None:
        on_poll(study, counts)
    return counts, [p.returncode for p in procs]


def checkpoint_of(checkpoints: Path, study_name: str, trial_number: int) -> Path:
    """`best.pt` of a trial (used by export/predict)."""
    return checkpoint_dir(Path(checkpoints) / study_name, trial_number) / "best.pt"
