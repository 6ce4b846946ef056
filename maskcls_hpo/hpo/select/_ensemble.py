"""Ensemble selection among the confirmed configs on confirm's out-of-fold predictions.

Greedy forward selection with replacement (Caruana, Niculescu-Mizil, Crew & Ksikes, "Ensemble Selection from
Libraries of Models", ICML 2004): start from the empty mixture and add, `rounds` times, the config whose
addition gives the best macro F1 of the averaged class probabilities (a config may be added again: its weight
grows); keep the best mixture seen along the way. The configs' out-of-fold (OOF) predictions come from the
confirm study (:mod:`maskcls_hpo.hpo.select._oof`).

Choosing a mixture on the same predictions it is scored on flatters it, so the gain is *cross-fitted*: for
each fold f the mixture is chosen on the other folds' OOF predictions and scored on fold f; the joined
predictions are compared with the winner's own OOF predictions (its seed ensemble) by the paired person
bootstrap (:func:`maskcls_hpo.metrics.paired_bootstrap_difference`). `finalize` uses the mixture (chosen on
all folds) only when the interval's lower end is above 0, and says which it used and why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from maskcls_hpo.hpo._optuna import storage_of
from maskcls_hpo.hpo.select._oof import FOLD_COLUMN, class_probabilities, oof_predictions
from maskcls_hpo.hpo.select._reference import url_of
from maskcls_hpo.labels import NUM_CLASSES
from maskcls_hpo.metrics import BootstrapInterval, macro_f1_from_counts, paired_bootstrap_difference

if TYPE_CHECKING:
    import pandas as pd

    from maskcls_hpo.hpo.select._reference import Ranking

ROUNDS = 20
"""Greedy rounds (additions with replacement) of ensemble selection."""


def _macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    pred = probs.argmax(axis=1)
    counts = np.zeros((3, NUM_CLASSES), dtype=np.int64)
    hit = pred == y_true
    np.add.at(counts[0], y_true[hit], 1)
    np.add.at(counts[1], pred[~hit], 1)
    np.add.at(counts[2], y_true[~hit], 1)
    return float(macro_f1_from_counts(counts))


def greedy_selection(probs: np.ndarray, y_true: np.ndarray, rounds: int = ROUNDS) -> np.ndarray:
    """Caruana et al. (2004) forward selection with replacement: how often each model is in the best mixture.

    Args:
        probs: `(M, N, 18)` float class probabilities of M models on the same N images.
        y_true: `(N,)` true class ids.
        rounds: additions to try; the best mixture seen is returned (ties: the earlier, smaller one).

    Returns:
        `(M,)` int64 counts (weights = counts / counts.sum()); at least one is positive.
    """
    m = probs.shape[0]
    counts = np.zeros(m, dtype=np.int64)
    total = np.zeros(probs.shape[1:], dtype=np.float64)
    best_counts, best_score = counts.copy(), -np.inf
    for _ in range(max(1, rounds)):
        scores = [_macro_f1(y_true, total + probs[i]) for i in range(m)]
        pick = int(np.argmax(scores))  # the first of equal scores: the better-ranked config
        counts[pick] += 1
        total += probs[pick]
        if scores[pick] > best_score:
            best_counts, best_score = counts.copy(), scores[pick]
    return best_counts


def mixture(probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`(N, 18)`: the count-weighted mean of `(M, N, 18)` probabilities."""
    return np.tensordot(counts / counts.sum(), probs, axes=(0, 0))


@dataclass
class EnsembleChoice:
    """What ensemble selection found.

    Attributes:
        winner: the single config the mixture is compared with (source trial number).
        members: {source trial: count} of the mixture chosen on all folds.
        gain: paired person-bootstrap interval of OOF macro F1 (cross-fitted mixture - winner's seed ensemble);
            None when not compared (`reason`).
        folds: folds the gain was cross-fitted over.
    """

    winner: int
    members: dict[int, int] = field(default_factory=dict)
    gain: BootstrapInterval | None = None
    folds: int = 0
    reason: str = ""

    @property
    def used(self) -> bool:
        """The mixture is used: it holds another config than the winner and the gain's lower end is above 0."""
        return self.gain is not None and self.gain.low > 0.0 and set(self.members) != {self.winner}

    @property
    def message(self) -> str:
        """One line: the mixture, its out-of-fold gain with its interval, and which `finalize` uses and why."""
        if self.gain is None:
            return f"ensemble selection not done: {self.reason}; using the winner #{self.winner} alone"
        mix = ", ".join(f"#{n} x{c}" for n, c in self.members.items())
        d = self.gain
        figures = (
            f"ensemble selection (Caruana et al. 2004) on confirm's out-of-fold predictions: mixture {{{mix}}} vs "
            f"winner #{self.winner}'s seed ensemble {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] (cross-fitted "
            f"over {self.folds} folds, paired bootstrap over {d.persons} persons)"
        )
        if self.used:
            return f"{figures}: the interval lies above 0, using the mixture"
        if set(self.members) == {self.winner}:
            return f"{figures}: the mixture is the winner alone, using the winner"
        return f"{figures}: the interval does not lie above 0, using the winner #{self.winner} alone"

    def as_dict(self) -> dict[str, Any]:
        """Plain data: winner, members, used, folds, gain {estimate, low, high, ...}, reason, message."""
        return {
            "winner": self.winner,
            "members": {str(k): v for k, v in self.members.items()},
            "used": self.used,
            "folds": self.folds,
            "gain": None if self.gain is None else dict(self.gain.__dict__),
            "reason": self.reason,
            "message": self.message,
        }


def select_from_oof(frames: dict[int, pd.DataFrame], winner: int, rounds: int = ROUNDS) -> EnsembleChoice:
    """Ensemble selection on the OOF predictions `frames` ({source trial: frame of
    ``oof_predictions`` of hpo/select/_oof.py}, best-ranked first) against `winner`'s.

    Raises:
        ValueError: `winner` not in `frames`.
    """

    if winner not in frames:
        raise ValueError(f"winner #{winner} has no out-of-fold predictions")
    numbers = list(frames)
    paths = [set(f["path"]) for f in frames.values()]
    if any(p != paths[0] for p in paths):
        return EnsembleChoice(winner, reason="the configs' out-of-fold predictions cover different images")
    ordered = [f.sort_values("path", ignore_index=True) for f in frames.values()]
    base = ordered[0]
    probs = np.stack([class_probabilities(f) for f in ordered])
    y_true = base["true_class"].to_numpy(dtype=np.int64)
    folds = base[FOLD_COLUMN].to_numpy()
    crossed = np.zeros(probs.shape[1:], dtype=np.float64)
    for f in np.unique(folds):
        held = folds == f
        counts = greedy_selection(probs[:, ~held], y_true[~held], rounds) if (~held).any() else None
        crossed[held] = mixture(probs[:, held], counts if counts is not None else np.eye(len(numbers))[0])
    chosen = greedy_selection(probs, y_true, rounds)
    members = {numbers[i]: int(c) for i, c in enumerate(chosen) if c > 0}
    own = probs[numbers.index(winner)]
    gain = paired_bootstrap_difference(y_true, crossed.argmax(axis=1), own.argmax(axis=1), base["person_id"].to_numpy())
    return EnsembleChoice(winner, dict(Counter(members).most_common()), gain, int(len(np.unique(folds))))


def choose_ensemble(study: optuna.Study, ranking: Ranking, storage_url: str | None = None) -> EnsembleChoice | None:
    """Ensemble selection among the confirmed configs of `ranking` against its first trial (the winner, or the
    known-good when nothing beat it): None without a confirmed ranking of at least 2 complete configs.
    """

    if ranking.confirm is None or not ranking.trials:
        return None
    rows = [r for r in ranking.confirm.rows if r.complete]
    winner = ranking.trials[0].number
    if len(rows) < 2 or winner not in {r.source_trial for r in rows}:
        return None
    linked = optuna.load_study(study_name=ranking.confirm.study_name, storage=storage_of(study))
    frames = {}
    for r in rows:
        frame, why = oof_predictions(linked, r.source_trial, url_of(study, storage_url))
        if frame is None:
            return EnsembleChoice(winner, reason=why)
        frames[r.source_trial] = frame
    order = [winner, *(n for n in frames if n != winner)]  # the winner first: it wins ties
    return select_from_oof({n: frames[n] for n in order}, winner)
