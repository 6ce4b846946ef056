"""Study queries with one SQL statement each: counts by state (what `--n-trials` counts), ranked trials, the clock.

Cheap for studies of thousands of trials: nothing here loads every trial of a study when the storage is SQL.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo._optuna import rdb_models, rdb_of, storage_of, study_id_of

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


def flagged_trial_ids(
    storage: optuna.storages.BaseStorage, study_id: int, key: str, states: tuple[TrialState, ...]
) -> list[int]:
    """Database ids of a study's trials in `states` whose user attr `key` is ``true``, by trial number, with one
    SQL statement (e.g. the known-good trials: ``TrialAttrs.KNOWN_GOOD``)."""
    models = rdb_models()
    attr = models.TrialUserAttributeModel
    query = (
        sqlalchemy.select(models.TrialModel.trial_id)
        .join(attr, attr.trial_id == models.TrialModel.trial_id)
        .where(
            models.TrialModel.study_id == study_id,
            models.TrialModel.state.in_(states),
            attr.key == key,
            attr.value_json == "true",
        )
        .order_by(models.TrialModel.number)
    )
    with rdb_of(storage).engine.connect() as con:
        return [tid for (tid,) in con.execute(query)]


def top_complete_trial_ids(
    storage: optuna.storages.BaseStorage, study_id: int, limit: int | None, maximize: bool = True
) -> list[int]:
    """Database ids of the best COMPLETE trials with a finite value, best first, with one SQL statement.

    The order is :func:`maskcls_hpo.hpo.store.ranked_complete_trials`'s: value (descending when `maximize`),
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


def pruned_at_steps(storage: optuna.storages.BaseStorage, study_id: int) -> dict[int, int]:
    """{last reported step (epoch): PRUNED trials that stopped there}, with one SQL statement.

    PRUNED trials without any reported value (out of memory before epoch 1, a confirm race's skipped runs) are
    not counted: a pruner never judged them.
    """
    models = rdb_models()
    values = models.TrialIntermediateValueModel
    last = (
        sqlalchemy.select(sqlalchemy.func.max(values.step).label("step"))
        .join(models.TrialModel, models.TrialModel.trial_id == values.trial_id)
        .where(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.PRUNED)
        .group_by(values.trial_id)
        .subquery()
    )
    query = sqlalchemy.select(last.c.step, sqlalchemy.func.count()).group_by(last.c.step)
    with rdb_of(storage).engine.connect() as con:
        return {int(step): int(n) for step, n in con.execute(query)}


def first_rung_warning(storage: optuna.storages.BaseStorage, study_id: int, finished: int) -> str | None:
    """The warning `status` and the live view show when more than half of the finished trials were pruned at the
    first rung (the earliest epoch any trial was pruned at); None otherwise.

    A first rung that stops most trials says the search space is mostly dead (often the lr range: try
    ``maskcls-hpo lr-range SWEEP`` or ``LR_RANGE_TEST = True``) or that the first epochs rank configs badly.
    """
    steps = pruned_at_steps(storage, study_id)
    if not steps or finished <= 0:
        return None
    rung = min(steps)
    if 2 * steps[rung] <= finished:
        return None
    return (
        f"warning: {steps[rung]} of {finished} finished trials were pruned at the first rung (epoch {rung}): "
        "much of the search space is dead or the first epochs rank configs badly; measure the lr range with "
        "`maskcls-hpo lr-range SWEEP` (or LR_RANGE_TEST = True in the sweep file)"
    )


def state_summary(trials: list[FrozenTrial]) -> str:
    """`3 pruned, 1 failed` style count of trial states (states with 0 trials omitted)."""
    names = [
        ("complete", TrialState.COMPLETE),
        ("pruned", TrialState.PRUNED),
        ("failed", TrialState.FAIL),
        ("running", TrialState.RUNNING),
        ("waiting", TrialState.WAITING),
    ]
    parts = [f"{sum(t.state == s for t in trials)} {n}" for n, s in names if any(t.state == s for t in trials)]
    return ", ".join(parts) or "no trials"


def uses_sql(study: optuna.Study) -> bool:
    """The study lives in an SQL database (``RDBStorage``, possibly behind Optuna's cache)."""
    return isinstance(rdb_of(storage_of(study)), optuna.storages.RDBStorage)


def ranked_complete_trials(study: optuna.Study, limit: int | None = None) -> list[FrozenTrial]:
    """COMPLETE trials with a finite value, best first (ties: lower trial number first).

    Args:
        limit: at most this many (the best ones). With an SQL storage and a `limit`, one ranked SQL query
            finds them and only those trials are loaded (``hpo.trials.top_complete_trial_ids``); otherwise
            every COMPLETE trial is loaded and sorted.
    """
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    if limit is not None and uses_sql(study):
        storage = storage_of(study)
        ids = top_complete_trial_ids(storage, study_id_of(study), limit, maximize=maximize)
        return [storage.get_trial(tid) for tid in ids]
    done = [
        (value, t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (value := t.value) is not None and math.isfinite(value)
    ]
    sign = -1.0 if maximize else 1.0
    ranked = [t for _, t in sorted(done, key=lambda pair: (sign * pair[0], pair[1].number))]
    return ranked if limit is None else ranked[:limit]


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial | None:
    """The study's trial with this number (loaded alone), or None."""
    storage = storage_of(study)
    try:
        tid = storage.get_trial_id_from_study_id_trial_number(study_id_of(study), number)
    except KeyError:
        return None
    return storage.get_trial(tid)


def state_counts_text(study: optuna.Study) -> str:
    """`3 pruned, 1 failed` style count of trial states, counted in SQL where the storage is a database."""
    if not uses_sql(study):
        return state_summary(study.get_trials(deepcopy=False))
    c = count_trials(storage_of(study), study_id_of(study))
    parts = [
        f"{n} {name}"
        for name, n in (
            ("complete", c.complete),
            ("pruned", c.pruned),
            ("failed", c.failed),
            ("running", c.running),
            ("waiting", c.waiting),
        )
        if n
    ]
    return ", ".join(parts) or "no trials"


def best_of(study: optuna.Study) -> tuple[float | None, int | None]:
    """(best COMPLETE value, its trial number), or (None, None) before the first COMPLETE trial."""
    try:
        best = study.best_trial
    except ValueError:
        return None, None
    assert best.value is not None  # the best trial is COMPLETE: it has a value
    return float(best.value), best.number


def db_now(engine: sqlalchemy.engine.Engine) -> dt.datetime:
    """The database's clock as a naive datetime (what Optuna's heartbeat rows are stamped with)."""
    with engine.connect() as con:
        value = con.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)
