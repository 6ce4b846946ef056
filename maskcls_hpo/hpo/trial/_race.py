"""Confirm as a race: stop a confirm config once it is worse than the leader with 95% confidence.

A confirm study (:mod:`maskcls_hpo.hpo.select`) re-trains K configs on F folds x R seeds. With ``race`` on, its
runs are queued round by round (round = one (fold, seed index); every config's run of round 1, then round 2,
...), and before a run starts its worker asks :func:`stopped_configs`: a config that is stopped gets its run
recorded PRUNED at once (no training; user attrs ``reason = "race"`` and ``race_stopped``), so the study still
holds exactly K*F*R finished trials and every guarantee of the worker loop holds.

The rule (:func:`race_stops`), applied to the COMPLETE runs at that moment:

- the *leader* is the config with the best mean val macro F1 over its COMPLETE runs among the configs not
  stopped with at least ``min_pairs`` of them;
- a config that is not the leader, not protected (the known-good configs always run to the end), and has at
  least ``min_pairs`` runs paired with the leader's (same fold, same seed index) is stopped when the one-sided
  paired t test (``scipy.stats.ttest_rel``, ``alternative="less"``) of config minus leader gives p < alpha;
- a stopped config stays stopped (its PRUNED runs carry the attr).

Why the paired t test and not Wilcoxon's signed-rank test: with n pairs the smallest one-sided p-value of the
exact signed-rank test is 2**-n, 0.0625 for 4 pairs, so it can never stop a config at 4 pairs (which is why
Optuna's ``WilcoxonPruner`` waits for more); the t test can, and a fold's val macro F1 is a mean over
hundreds of persons, close enough to normal for 4-10 pairs. The test is not corrected for folds sharing
training persons (the summary's runner-up interval is): the race only stops configs clearly behind, and the
replay benchmark (``benchmarks/b10_confirm_race.py``) measures how often it stops the true winner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from maskcls_hpo.hpo.attrs import PARAM_FOLD, PARAM_SEED, PARAM_SOURCE, TrialAttrs

RACE_MIN_PAIRS = 4
"""Paired results a config needs before the race may stop it (the issue: at least 4)."""

RACE_ALPHA = 0.05
"""One-sided level of the race's paired test: stop when config < leader with 95% confidence."""

RACE_REASON = "race"
"""The ``reason`` user attr of a run the race did not train."""

RunKey = tuple[int, int]
"""(fold, seed index): the round of a run; a config's runs and the leader's are paired on it."""


@dataclass(frozen=True)
class RaceStop:
    """Why the race stopped a config.

    Attributes:
        source_trial: the stopped config (trial number in the source study); leader: the leader's.
        pairs: paired results (rounds both have); mean_diff: mean of config minus leader over them (val macro
            F1, in [-1, 1]); p_value: the one-sided paired t test's p-value.
    """

    source_trial: int
    leader: int
    pairs: int
    mean_diff: float
    p_value: float

    def to_attr(self) -> dict[str, Any]:
        """A JSON-able dict (the ``race_stopped`` user attr)."""
        return asdict(self)

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> RaceStop:
        """Inverse of :meth:`to_attr`."""
        return cls(
            int(data["source_trial"]),
            int(data["leader"]),
            int(data["pairs"]),
            float(data["mean_diff"]),
            float(data["p_value"]),
        )

    def describe(self) -> str:
        """One line: ``stopped after 4 pairs: 0.0712 behind trial 3 (one-sided paired t test p=0.012)``."""
        return (
            f"stopped after {self.pairs} pairs: {-self.mean_diff:.4f} behind trial {self.leader} "
            f"(one-sided paired t test p={self.p_value:.3g})"
        )


def paired_less_p(config: np.ndarray, leader: np.ndarray) -> float:
    """One-sided p-value that `config` is below `leader` on average, paired (``scipy.stats.ttest_rel``).

    Args:
        config, leader: `(n,)` float, n >= 2, paired values (same round).

    Returns:
        p in [0, 1]. Differences without spread give 0.0 when all are below zero, else 1.0 (the t statistic is
        not defined there).
    """
    from scipy import stats  # lazy: scipy

    diff = np.asarray(config, dtype=float) - np.asarray(leader, dtype=float)
    if np.allclose(diff, diff[0]):
        return 0.0 if diff[0] < 0 else 1.0
    return float(stats.ttest_rel(config, leader, alternative="less").pvalue)


def race_stops(
    results: Mapping[int, Mapping[RunKey, float]],
    protected: Iterable[int] = (),
    stopped: Mapping[int, RaceStop] | None = None,
    min_pairs: int = RACE_MIN_PAIRS,
    alpha: float = RACE_ALPHA,
) -> dict[int, RaceStop]:
    """The configs the race stops, given every config's results so far.

    Args:
        results: {config: {(fold, seed index): val macro F1}} of the COMPLETE runs.
        protected: configs that always run to the end (the known-good); never stopped, may lead.
        stopped: configs stopped before (kept; they can not lead).
        min_pairs: paired results needed before a config may be stopped (>= 2).
        alpha: one-sided level of the paired t test (0.05: worse than the leader with 95% confidence).

    Returns:
        {config: RaceStop} of every stopped config, the earlier ones included.
    """
    out = dict(stopped or {})
    keep = set(protected)
    candidates = {n: r for n, r in results.items() if n not in out and len(r) >= min_pairs}
    if not candidates:
        return out
    leader = max(candidates, key=lambda n: (float(np.mean(list(candidates[n].values()))), -n))
    lead = results[leader]
    for n, r in results.items():
        if n == leader or n in out or n in keep:
            continue
        common = sorted(set(r) & set(lead))
        if len(common) < min_pairs:
            continue
        mine = np.array([r[k] for k in common], dtype=float)
        theirs = np.array([lead[k] for k in common], dtype=float)
        p = paired_less_p(mine, theirs)
        if p < alpha and float(np.mean(mine - theirs)) < 0:
            out[n] = RaceStop(n, leader, len(common), float(np.mean(mine - theirs)), p)
    return out


def race_state(
    trials: Iterable[optuna.trial.FrozenTrial],
) -> tuple[dict[int, dict[RunKey, float]], dict[int, RaceStop]]:
    """The COMPLETE results ``{config: {(fold, seed index): value}}`` and the stops recorded so far (the
    ``race_stopped`` attr of PRUNED runs) of a confirm study's trials."""
    results: dict[int, dict[RunKey, float]] = {}
    stopped: dict[int, RaceStop] = {}
    for t in trials:
        try:
            key = int(t.params[PARAM_SOURCE]), int(t.params[PARAM_FOLD]), int(t.params[PARAM_SEED])
        except (KeyError, TypeError, ValueError):
            continue
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            results.setdefault(key[0], {})[(key[1], key[2])] = float(t.value)
        elif t.state == TrialState.PRUNED and isinstance(t.user_attrs.get(TrialAttrs.RACE_STOPPED), dict):
            stopped.setdefault(key[0], RaceStop.from_attr(t.user_attrs[TrialAttrs.RACE_STOPPED]))
    return results, stopped


def stopped_configs(study: optuna.Study, protected: Iterable[int] = ()) -> dict[int, RaceStop]:
    """The configs of confirm study `study` the race has stopped, now (see the module docstring)."""
    results, stopped = race_state(study.get_trials(deepcopy=False))
    return race_stops(results, protected, stopped)
