"""Trial counts by state with one SQL statement (what `--n-trials` counts, cheap for thousands of trials)."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.trial import TrialState

from maskcls_hpo.hpo._optuna import rdb_models, rdb_of

__all__ = ["FINISHED", "SLOT_STATES", "StudyCounts", "count_trials"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""The states `--n-trials` counts."""

SLOT_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
"""The states that hold a slot of the budget (see ``hpo.worker``)."""


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


def count_trials(storage: optuna.storages.BaseStorage, study_id: int, max_number: int | None = None) -> StudyCounts:
    """Count a study's trials by state with one SQL ``GROUP BY``.

    Args:
        storage: the study's storage (an ``RDBStorage``, possibly behind Optuna's cache).
        study_id: the study's database id.
        max_number: count only trials whose number is <= this (the slot claim).
    """
    models = rdb_models()
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


def trial_ids(storage: optuna.storages.BaseStorage, study_id: int, states: tuple[TrialState, ...]) -> list[int]:
    """Database ids of a study's trials in `states`, by trial number, with one SQL statement.

    Args:
        storage: the study's storage (an ``RDBStorage``, possibly behind Optuna's cache).
        study_id: the study's database id.
        states: the trial states to list.
    """
    models = rdb_models()
    query = (
        sqlalchemy.select(models.TrialModel.trial_id)
        .where(models.TrialModel.study_id == study_id, models.TrialModel.state.in_(states))
        .order_by(models.TrialModel.number)
    )
    with rdb_of(storage).engine.connect() as con:
        return [tid for (tid,) in con.execute(query)]


def top_complete_trial_ids(
    storage: optuna.storages.BaseStorage, study_id: int, limit: int | None, maximize: bool = True
) -> list[int]:
    """Database ids of the best COMPLETE trials with a finite value, best first, with one SQL statement.

    The order is :func:`maskcls_hpo.hpo.export.ranked_complete_trials`'s: value (descending when `maximize`),
    ties by the lower trial number. Only the first objective (Optuna's ``objective`` 0) is read; PRUNED
    trials are never candidates even where Optuna stored a value on them.

    Args:
        storage: the study's storage (an ``RDBStorage``, possibly behind Optuna's cache).
        study_id: the study's database id.
        limit: at most this many ids; None: all of them.
        maximize: the study's direction.
    """
    models = rdb_models()
    value = models.TrialValueModel.value
    query = (
        sqlalchemy.select(models.TrialModel.trial_id)
        .join(models.TrialValueModel, models.TrialValueModel.trial_id == models.TrialModel.trial_id)
        .where(
            models.TrialModel.study_id == study_id,
            models.TrialModel.state == TrialState.COMPLETE,
            models.TrialValueModel.objective == 0,
            models.TrialValueModel.value_type == models.TrialValueModel.TrialValueType.FINITE,
            value.is_not(None),
        )
        .order_by(value.desc() if maximize else value.asc(), models.TrialModel.number.asc())
    )
    if limit is not None:
        query = query.limit(limit)
    with rdb_of(storage).engine.connect() as con:
        return [tid for (tid,) in con.execute(query)]
