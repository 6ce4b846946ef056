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
