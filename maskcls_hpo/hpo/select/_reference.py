"""The winner against the known-good on the same persons; the known-good by default when nothing beat it.

The known-good trials of a sweep (its ``KNOWN_GOOD``, :mod:`maskcls_hpo.hpo.trial._reference`) are the
reference: the sweep earns its compute only when its winner beats them beyond noise. With a finished confirm
study the two are compared on their out-of-fold predictions over the same folds
(:mod:`maskcls_hpo.hpo.select._oof`: every train person once), else on the shared validation split; both by the
paired person bootstrap (:func:`maskcls_hpo.hpo.select.compare_trials`,
:func:`maskcls_hpo.metrics.paired_bootstrap_difference`). When the interval's lower end is not above 0,
`export` and `finalize` take the known-good (:func:`apply_known_good_default`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from maskcls_hpo.hpo._optuna import rdb_of, storage_of
from maskcls_hpo.hpo.select._noise import compare_trials
from maskcls_hpo.hpo.select._oof import oof_predictions
from maskcls_hpo.hpo.select._summary import ConfirmSummary
from maskcls_hpo.hpo.store import storage_folder, trial_by_number
from maskcls_hpo.hpo.trial import known_good_trials, load_val_predictions
from maskcls_hpo.metrics import BootstrapInterval

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class KnownGoodComparison:
    """The ranking's winner against the best known-good trial.

    Attributes:
        winner, known_good: source-study trial numbers (equal when the known-good is the winner).
        difference: paired person-bootstrap interval of macro F1 (winner - known-good), None when not
            compared (`reason` says why). basis: on what it was compared (``the same 3 folds (...)``).
    """

    winner: int
    known_good: int
    difference: BootstrapInterval | None
    basis: str
    reason: str = ""

    @property
    def beaten(self) -> bool | None:
        """True when the winner beats the known-good beyond noise (the interval's lower end above 0); False
        when it does not or is the known-good; None when they could not be compared."""
        if self.winner == self.known_good:
            return False
        return None if self.difference is None else self.difference.low > 0.0

    @property
    def message(self) -> str:
        """One line: "winner vs known-good on the same folds: +0.012 [-0.008, +0.031] ..." and the verdict."""
        if self.winner == self.known_good:
            return (
                f"the winner is the known-good trial #{self.known_good} ({self.basis}): the search found nothing "
                "better than the known-good"
            )
        d = self.difference
        if d is None:
            return f"winner #{self.winner} not compared with the known-good #{self.known_good}: {self.reason}"
        figures = f"winner vs known-good on {self.basis}: {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        if self.beaten:
            return f"{figures}: winner #{self.winner} beats the known-good #{self.known_good} beyond noise"
        return (
            f"{figures}: the search found nothing better than the known-good #{self.known_good} within noise "
            f"(winner #{self.winner}); export and finalize use the known-good"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data: winner, known_good, beaten, basis, difference {estimate, low, high, ...}, reason, message."""
        return {
            "winner": self.winner,
            "known_good": self.known_good,
            "beaten": self.beaten,
            "basis": self.basis,
            "difference": None if self.difference is None else dict(self.difference.__dict__),
            "reason": self.reason,
            "message": self.message,
        }


@dataclass
class Ranking:
    """The ranking that `export` and `finalize` pick configs by.

    Attributes:
        label: ``confirmed on 5 folds (study S-confirm)`` or ``single validation split``, plus why a confirm
            study was not used when there is one.
        trials: source-study trials, best first (confirmed configs first in their confirmed order, then the
            remaining COMPLETE trials by their single-split value).
        confirm: the confirm summary used (None for the single-split ranking).
        reference: the winner against the known-good (None without a known-good trial, or when not asked); when
            the winner does not beat it beyond noise the known-good is first in `trials` and `label` says why.
    """

    label: str
    trials: list[FrozenTrial]
    confirm: ConfirmSummary | None = None
    reference: KnownGoodComparison | None = None

    @property
    def confirmed(self) -> bool:
        """True when the ranking comes from a confirm study."""
        return self.confirm is not None


def url_of(study: optuna.Study, storage_url: str | None) -> str | None:
    """`storage_url`, else the URL of the study's RDB storage (None for in-memory studies)."""
    if storage_url is not None:
        return storage_url

    try:
        return rdb_of(storage_of(study)).engine.url.render_as_string(hide_password=False)
    except (TypeError, AttributeError):
        return None


def compare_known_good(
    study: optuna.Study,
    ranking: Ranking,
    storage_url: str | None = None,
    checkpoints: str | Path | None = None,
) -> KnownGoodComparison | None:
    """The ranking's first trial against the best known-good COMPLETE trial of `study`.

    Confirmed ranking: on the confirm study's out-of-fold predictions of both (the known-good is confirmed
    with the top K); else on the single validation split. None when the study has no COMPLETE known-good
    trial or the ranking is empty.
    """
    known = known_good_trials(study)
    if not known or not ranking.trials:
        return None
    winner = ranking.trials[0]
    url = url_of(study, storage_url)
    if checkpoints is None and url is not None:
        checkpoints = storage_folder(url, "checkpoints")
    if ranking.confirm is not None:
        rows = {r.source_trial: r for r in ranking.confirm.rows if r.complete}
        confirmed = [t for t in known if t.number in rows]
        if confirmed:
            best = max(confirmed, key=lambda t: rows[t.number].mean)
            basis = f"the same {ranking.confirm.folds} folds (out-of-fold predictions, confirm study)"
            frames = _oof_frames(study, ranking.confirm.study_name, (winner.number, best.number), url, checkpoints)
            return _compared(winner.number, best.number, frames, basis)
    best = max(known, key=lambda t: float(t.value or 0.0))
    basis = "the same validation persons (single split)"
    single = tuple(load_val_predictions(study, t, checkpoints, url) for t in (winner, best))
    return _compared(winner.number, best.number, (single, "no validation predictions (val_predictions.csv)"), basis)


def _oof_frames(
    study: optuna.Study, confirm_name: str, numbers: tuple[int, int], url: str | None, checkpoints: str | Path | None
) -> tuple[tuple[pd.DataFrame | None, ...], str]:

    linked = optuna.load_study(study_name=confirm_name, storage=storage_of(study))
    found = [oof_predictions(linked, n, url, checkpoints) for n in numbers]
    return tuple(f for f, _ in found), next((why for f, why in found if f is None), "")


def _compared(
    winner: int, known_good: int, found: tuple[tuple[pd.DataFrame | None, ...], str], basis: str
) -> KnownGoodComparison:
    (a, b), why = found
    if winner == known_good:
        return KnownGoodComparison(winner, known_good, None, basis)
    if a is None or b is None:
        return KnownGoodComparison(winner, known_good, None, basis, why)
    interval, reason = compare_trials(a, b)
    return KnownGoodComparison(winner, known_good, interval, basis, reason)


def apply_known_good_default(study: optuna.Study, ranking: Ranking, comparison: KnownGoodComparison | None) -> Ranking:
    """`ranking` with the known-good first when the winner does not beat it beyond noise (else `ranking`).

    The label says why: ``...; known-good trial 0 first: the search found nothing better within noise``.
    """

    if comparison is None or comparison.beaten is not False or comparison.winner == comparison.known_good:
        return Ranking(ranking.label, ranking.trials, ranking.confirm, comparison)
    known = trial_by_number(study, comparison.known_good)
    if known is None:
        return Ranking(ranking.label, ranking.trials, ranking.confirm, comparison)
    rest = [t for t in ranking.trials if t.number != known.number]
    label = (
        f"{ranking.label}; known-good trial {known.number} first: the search found nothing better than it within "
        f"noise (winner #{comparison.winner}: {_figures(comparison)})"
    )
    return Ranking(label, [known, *rest][: max(len(ranking.trials), 1)], ranking.confirm, comparison)


def _figures(c: KnownGoodComparison) -> str:
    d = c.difference
    return "not compared" if d is None else f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] on {c.basis}"
