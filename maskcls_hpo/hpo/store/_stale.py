"""Stale trials: RUNNING trials whose worker is gone, failed with a `reason` and re-queued to resume.

Optuna's own ``fail_stale_trials`` only looks at trials that have a heartbeat row; a worker killed between
``study.ask()`` and its heartbeat's first write leaves a RUNNING trial without one, which Optuna never fails,
and the study waits at its last slot forever. Here a RUNNING trial is stale when

- it started (``datetime_start``, stamped in UTC by the asking process's clock) longer ago than the grace
  period, and
- it has no heartbeat row, or its heartbeat row is older than the grace period (by the database's clock,
  which stamps heartbeats). The start time counts too because a trial that went back to WAITING (a lost
  slot claim) and was started again keeps its old heartbeat row.

Each stale trial gets ``reason`` (``stale: ...``), becomes FAIL, and a copy with the same params and
intermediate values is queued (WAITING) by the storage's ``RetryHeartbeatStaleTrialCallback``; the copy
resumes from the original's last checkpoint. Used by the worker loop (before every trial) and by `status`.
See "Faults" in docs/architecture.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo._optuna import rdb_models, rdb_of, storage_of, study_id_of
from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.store._claim import CLAIM_KEY, finish_running
from maskcls_hpo.hpo.store._queries import db_now
from maskcls_hpo.hpo.store._retry import retry_db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaleTrial:
    """One stale trial: database id, number, and why it is stale (seconds are wall-clock)."""

    trial_id: int
    number: int
    reason: str


def find_stale_trials(study: optuna.Study, grace_period: float) -> list[StaleTrial]:
    """RUNNING trials of `study` whose worker is gone (see the module docstring), oldest first.

    Args:
        grace_period: seconds without a heartbeat (or, without any heartbeat row, since the trial started).

    Returns:
        one :class:`StaleTrial` per stale trial; nothing is changed.
    """
    models = rdb_models()
    engine = rdb_of(storage_of(study)).engine
    query = (
        sqlalchemy.select(
            models.TrialModel.trial_id,
            models.TrialModel.number,
            models.TrialModel._datetime_start_utc,  # the column (Optuna 5 stores naive UTC)
            models.TrialHeartbeatModel.heartbeat,
        )
        .outerjoin(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
        .where(models.TrialModel.study_id == study_id_of(study))
        .where(models.TrialModel.state == TrialState.RUNNING)
        .order_by(models.TrialModel.number)
    )
    now = db_now(engine)
    utc_now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # datetime_start: the asker's clock, UTC
    with engine.connect() as con:
        rows = list(con.execute(query))
    out = []
    for trial_id, number, started, beat in rows:
        started_age = (utc_now - started.replace(tzinfo=None)).total_seconds() if started is not None else None
        if started_age is not None and started_age <= grace_period:
            continue
        if beat is not None:
            age = (now - beat.replace(tzinfo=None)).total_seconds()
            if age > grace_period:
                out.append(StaleTrial(trial_id, number, f"stale: no heartbeat for {age:.0f} s (worker died?)"))
        elif started_age is not None:
            age = started_age
            if age > grace_period:
                out.append(
                    StaleTrial(
                        trial_id,
                        number,
                        f"stale: started {age:.0f} s ago and never sent a heartbeat (worker died before training)",
                    )
                )
    return out


def requeue(study: optuna.Study, frozen: FrozenTrial) -> None:
    """Queue a copy of the failed trial `frozen` (same params, intermediate values, retry history).

    Runs the storage's heartbeat-stale callback (``RetryHeartbeatStaleTrialCallback``, which stops after its
    `max_retry`). The copy inherits neither the failed trial's ``reason`` nor its claim.
    """
    callback = rdb_of(storage_of(study)).get_heartbeat_stale_trial_callback()
    if callback is None:
        return
    frozen = copy.deepcopy(frozen)
    frozen.user_attrs.pop(TrialAttrs.REASON, None)
    frozen.system_attrs.pop(CLAIM_KEY, None)  # the copy is claimed afresh by the worker that takes it
    callback(study, frozen)


def fail_trial(study: optuna.Study, trial_id: int, reason: str, *, queue_copy: bool = True) -> bool:
    """Mark the RUNNING trial `trial_id` FAIL with `reason` and (when `queue_copy`) queue a copy to resume it.

    Safe from any thread and against other processes doing the same: the state changes with a compare-and-set
    (:func:`~maskcls_hpo.hpo.store.finish_running`), so only the process whose change succeeds queues the copy,
    and a trial told COMPLETE by its owner a moment before is never failed.

    Returns:
        True when this call failed the trial; False when it was no longer RUNNING.
    """
    storage = storage_of(study)
    try:
        storage.set_trial_user_attr(trial_id, TrialAttrs.REASON, reason)
        # compare-and-set (hpo/store/_claim.py): a trial its owner told a moment ago is left as it is
        if not retry_db(lambda: finish_running(storage, trial_id, TrialState.FAIL), "failing a trial"):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another process finished or failed it first
    if queue_copy:
        requeue(study, storage.get_trial(trial_id))
    return True


def fail_stale_trials(study: optuna.Study, grace_period: float) -> list[int]:
    """Fail every stale trial of `study` with its `reason` and queue a copy of each (see the module docstring).

    Not retried as a whole by the caller: each storage statement retries itself, so a repeat after "FAIL
    written, copy not queued yet" cannot drop the copy.

    Returns:
        the numbers of the trials this call failed.
    """
    failed = []
    for s in find_stale_trials(study, grace_period):
        if fail_trial(study, s.trial_id, s.reason):
            log.warning("trial %d failed and re-queued: %s", s.number, s.reason)
            failed.append(s.number)
    return failed
