"""The ranking export and finalize use: the confirmed ranking once a confirm study finished, else the single split."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from maskcls_hpo.hpo.select._reference import Ranking, apply_known_good_default, compare_known_good
from maskcls_hpo.hpo.select._summary import find_confirm_study, summarize_confirm
from maskcls_hpo.hpo.store import ranked_complete_trials, trial_by_number

MAX_TOP = 1000
"""The most trials one ``--top`` ranks (export, finalize, predict, report; confirm has its own bound of 1000)."""


def selection_ranking(
    source: optuna.Study,
    single_split: bool = False,
    limit: int | None = None,
    *,
    known_good: bool = False,
    storage_url: str | None = None,
    checkpoints: str | Path | None = None,
) -> Ranking:
    """Rank the COMPLETE trials of `source`: by a finished linked confirm study, else by the single split.

    Args:
        single_split: ignore any confirm study.
        limit: at most this many trials (the best; see ``export.ranked_complete_trials``).
        known_good: compare the winner with the known-good trial (paired person bootstrap on the same persons,
            :func:`~maskcls_hpo.hpo.select.compare_known_good`) and put the known-good first when the winner does
            not beat it beyond noise; `storage_url` / `checkpoints` locate the predictions.
    """
    ranking = _ranking(source, single_split, limit)
    if not known_good:
        return ranking

    comparison = compare_known_good(source, ranking, storage_url, checkpoints)
    return apply_known_good_default(source, ranking, comparison)


def _ranking(source: optuna.Study, single_split: bool, limit: int | None) -> Ranking:
    if single_split:
        return Ranking("single validation split", ranked_complete_trials(source, limit=limit))
    linked = find_confirm_study(source)
    if linked is None:
        return Ranking("single validation split", ranked_complete_trials(source, limit=limit))
    summary = summarize_confirm(linked)
    if not summary.finished or summary.winner is None:
        c = summary.counts
        return Ranking(
            f"single validation split (confirm study '{linked.study_name}' is not finished: {c.finished} of "
            f"{summary.n_trials} runs; run `maskcls-hpo confirm` again to finish it)",
            ranked_complete_trials(source, limit=limit),
        )
    confirmed = []
    for r in summary.rows:
        t = trial_by_number(source, r.source_trial) if r.complete else None
        if t is not None and t.state == TrialState.COMPLETE:
            confirmed.append(t)
    numbers = {t.number for t in confirmed}
    wanted = None if limit is None else limit + len(numbers)
    rest = [t for t in ranked_complete_trials(source, limit=wanted) if t.number not in numbers]
    trials = confirmed + rest
    label = f"{summary.label} (study '{linked.study_name}')"
    return Ranking(label, trials if limit is None else trials[:limit], summary)
