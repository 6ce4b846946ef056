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
  least ``min_pairs`` runs paired with the leader's (same fold, same seed index) is stopped when its paired test
  gives a mean difference below zero with p < alpha. The test depends on the study's pairing
  (:data:`PAIR_PERSONS`, a new confirm's default, or :data:`PAIR_FOLDS`):

  - persons (:func:`person_bootstrap_test`, ``min_pairs`` 1): the runs' best-epoch val predictions of the
    rounds both ran, a person bootstrap of the mean over rounds of macro F1(config) - macro F1(leader),
    stratified by round; it can stop a config after its first round, and measures the val persons' noise only;
  - folds (:func:`fold_t_test`, ``min_pairs`` 4): the one-sided paired t test (``scipy.stats.ttest_rel``,
    ``alternative="less"``) of the rounds' values, config minus leader;
- a stopped config stays stopped (its PRUNED runs carry the attr).

Measured on recorded runs (docs/guide/winner.md, B10): paired over persons the race keeps the full confirm's
winner in 82-100% of the replays at 49-81% of its epochs, over folds in 95-100% at 72-100%.

Why a paired t test for the fold pairing and not Wilcoxon's signed-rank test: with n pairs the smallest
one-sided p-value of the exact signed-rank test is 2**-n, 0.0625 for 4 pairs, so it can never stop a config at 4
pairs (which is why
Optuna's ``WilcoxonPruner`` waits for more); the t test can, and a fold's val macro F1 is a mean over
hundreds of persons, close enough to normal for 4-10 pairs. The test is not corrected for folds sharing
training persons (the summary's runner-up interval is): the race only stops configs clearly behind, and the
replay benchmark (``benchmarks/b10_confirm_race.py``) measures how often it stops the true winner.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from maskcls_hpo.hpo.attrs import PARAM_FOLD, PARAM_SEED, PARAM_SOURCE, TrialAttrs, checkpoint_dir

RACE_MIN_PAIRS = 4
"""Paired results a config needs before the race may stop it (the issue: at least 4)."""

RACE_ALPHA = 0.05
"""One-sided level of the race's paired test: stop when config < leader with 95% confidence."""

RACE_REASON = "race"
"""The ``reason`` user attr of a run the race did not train."""

RunKey = tuple[int, int]
"""(fold, seed index): the round of a run; a config's runs and the leader's are paired on it."""

PAIR_FOLDS = "folds"
"""Race pairing: a config and the leader are paired over rounds (their runs' values on the same fold and seed
index), one-sided paired t test, at least :data:`RACE_MIN_PAIRS` rounds."""

PAIR_PERSONS = "persons"
"""Race pairing: over the validation persons of the rounds both ran (their runs' predictions of the same
persons), a person bootstrap stratified by round (:func:`maskcls_hpo.metrics.paired_round_differences`); from the
first round on (each round pairs dozens of persons)."""

RACE_RESAMPLES = 1000
"""Person-bootstrap resamples of the person-paired test."""

ValPredictions = tuple[Any, Any, Any]
"""One run's best-epoch validation predictions: ``(y_true, y_pred, persons)``, each `(N,)` (class ids 0-17,
class ids, person ids), in the order of its ``val_predictions.csv``."""

PairedTest = Callable[[int, int, Sequence[RunKey]], "tuple[float, float] | None"]
"""``(config, leader, rounds both ran) -> (mean difference config - leader, one-sided p that config is below)``, or
None when the pair can not be tested (then the config is not stopped)."""


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
    pairing: str = PAIR_FOLDS

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
            str(data.get("pairing", PAIR_FOLDS)),
        )

    def describe(self) -> str:
        """One line: ``stopped after 4 pairs: 0.0712 behind trial 3 (one-sided paired t test p=0.012)``, or with
        person pairing ``stopped after 2 rounds: 0.0712 behind trial 3 (person-paired bootstrap p=0.012)``."""
        if self.pairing == PAIR_PERSONS:
            return (
                f"stopped after {self.pairs} round(s): {-self.mean_diff:.4f} behind trial {self.leader} "
                f"(person-paired bootstrap p={self.p_value:.3g})"
            )
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


def fold_t_test(results: Mapping[int, Mapping[RunKey, float]]) -> PairedTest:
    """The :data:`PAIR_FOLDS` test over `results` ({config: {round: value}}): one-sided paired t test
    (:func:`paired_less_p`) of the config's values minus the leader's on the rounds both ran."""

    def test(config: int, leader: int, rounds: Sequence[RunKey]) -> tuple[float, float]:
        mine = np.array([results[config][k] for k in rounds], dtype=float)
        theirs = np.array([results[leader][k] for k in rounds], dtype=float)
        return float(np.mean(mine - theirs)), paired_less_p(mine, theirs)

    return test


def person_bootstrap_test(
    predictions: Mapping[int, Mapping[RunKey, ValPredictions]], resamples: int = RACE_RESAMPLES
) -> PairedTest:
    """The :data:`PAIR_PERSONS` test: the mean over the rounds both ran of macro F1(config) - macro F1(leader) on
    the round's validation persons, and its person bootstrap stratified by round
    (:func:`maskcls_hpo.metrics.paired_round_differences`); p = (1 + resamples with a difference >= 0) /
    (1 + resamples), the one-sided bootstrap p-value (Davison & Hinkley, "Bootstrap Methods and their
    Application", 1997, eq. 4.11).

    It measures the validation persons' noise, not the training seed's: the replays over recorded runs
    (docs/performance.md, B10) measure how often that stops the full confirm's winner. A round whose two runs'
    predictions are missing or cover other images is left out; with no round left the pair is not tested.

    Args:
        predictions: {config: {round: (y_true, y_pred, persons)}} of the COMPLETE runs whose predictions could be
            read.
        resamples: bootstrap resamples.
    """
    from maskcls_hpo.metrics import paired_round_differences  # lazy: the ML layer's numpy code

    def test(config: int, leader: int, rounds: Sequence[RunKey]) -> tuple[float, float] | None:
        mine, theirs = predictions.get(config, {}), predictions.get(leader, {})
        paired = []
        for k in rounds:
            if k in mine and k in theirs and _same_images(mine[k], theirs[k]):
                paired.append((mine[k][0], mine[k][1], theirs[k][1], mine[k][2]))
        if not paired:
            return None
        estimate, resampled = paired_round_differences(paired, resamples)
        return estimate, float((1 + np.sum(resampled >= 0)) / (1 + resamples))

    return test


def _same_images(a: ValPredictions, b: ValPredictions) -> bool:
    """Both runs scored the same images (same true classes and persons, in the same order)."""
    return len(a[0]) == len(b[0]) and bool(np.array_equal(a[0], b[0])) and bool(np.array_equal(a[2], b[2]))


def race_stops(
    results: Mapping[int, Mapping[RunKey, float]],
    protected: Iterable[int] = (),
    stopped: Mapping[int, RaceStop] | None = None,
    min_pairs: int = RACE_MIN_PAIRS,
    alpha: float = RACE_ALPHA,
    test: PairedTest | None = None,
    pairing: str = PAIR_FOLDS,
) -> dict[int, RaceStop]:
    """The configs the race stops, given every config's results so far.

    Args:
        results: {config: {(fold, seed index): val macro F1}} of the COMPLETE runs.
        protected: configs that always run to the end (the known-good); never stopped, may lead.
        stopped: configs stopped before (kept; they can not lead).
        min_pairs: rounds a config needs (and shares with the leader) before it may be stopped or lead (>= 2 for
            the t test; 1 with person pairing).
        alpha: one-sided level (0.05: worse than the leader with 95% confidence).
        test: the paired test (default :func:`fold_t_test` over `results`; :func:`person_bootstrap_test`).
        pairing: :data:`PAIR_FOLDS` or :data:`PAIR_PERSONS`, recorded in each :class:`RaceStop`.

    Returns:
        {config: RaceStop} of every stopped config, the earlier ones included.
    """
    out = dict(stopped or {})
    keep = set(protected)
    test = test or fold_t_test(results)
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
        tested = test(n, leader, common)
        if tested is None:
            continue
        mean_diff, p = tested
        if p < alpha and mean_diff < 0:
            out[n] = RaceStop(n, leader, len(common), mean_diff, p, pairing)
    return out


def run_key(params: dict[str, Any]) -> tuple[int, int, int] | None:
    """``(source_trial, fold, seed_index)`` of a confirm run's params; None when they are not a confirm run's."""
    try:
        return int(params[PARAM_SOURCE]), int(params[PARAM_FOLD]), int(params[PARAM_SEED])
    except (KeyError, TypeError, ValueError):
        return None


def race_state(
    trials: Iterable[optuna.trial.FrozenTrial],
) -> tuple[dict[int, dict[RunKey, float]], dict[int, RaceStop]]:
    """The COMPLETE results ``{config: {(fold, seed index): value}}`` and the stops recorded so far (the
    ``race_stopped`` attr of PRUNED runs) of a confirm study's trials."""
    results: dict[int, dict[RunKey, float]] = {}
    stopped: dict[int, RaceStop] = {}
    for t in trials:
        key = run_key(t.params)
        if key is None:
            continue
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            results.setdefault(key[0], {})[(key[1], key[2])] = float(t.value)
        elif t.state == TrialState.PRUNED and isinstance(t.user_attrs.get(TrialAttrs.RACE_STOPPED), dict):
            stopped.setdefault(key[0], RaceStop.from_attr(t.user_attrs[TrialAttrs.RACE_STOPPED]))
    return results, stopped


def stopped_configs(
    study: optuna.Study,
    protected: Iterable[int] = (),
    pairing: str = PAIR_FOLDS,
    predictions_root: Path | None = None,
) -> dict[int, RaceStop]:
    """The configs of confirm study `study` the race has stopped, now (see the module docstring).

    Args:
        pairing: :data:`PAIR_FOLDS` (t test over rounds, from 4 rounds) or :data:`PAIR_PERSONS` (person
            bootstrap over the rounds' val persons, from the first round; each COMPLETE run's
            ``<predictions_root>/trial_<n>/val_predictions.csv`` is read, a run whose file can not be read is
            left out of the test).
        predictions_root: the confirm study's checkpoint folder (``<checkpoints>/<study>``).
    """
    trials = study.get_trials(deepcopy=False)
    results, stopped = race_state(trials)
    if pairing != PAIR_PERSONS:
        return race_stops(results, protected, stopped)
    predictions = run_predictions(trials, predictions_root) if predictions_root is not None else {}
    return race_stops(results, protected, stopped, 1, RACE_ALPHA, person_bootstrap_test(predictions), PAIR_PERSONS)


def run_predictions(
    trials: Iterable[optuna.trial.FrozenTrial], predictions_root: Path
) -> dict[int, dict[RunKey, ValPredictions]]:
    """{config: {round: (y_true, y_pred, persons)}} of the COMPLETE confirm runs whose best-epoch
    ``val_predictions.csv`` (:func:`maskcls_hpo.metrics.write_val_predictions`) is in
    ``<predictions_root>/trial_<n>/``; a file that is missing or can not be read is left out."""
    from maskcls_hpo.metrics import VAL_PREDICTIONS_FILE  # lazy: the ML layer

    out: dict[int, dict[RunKey, ValPredictions]] = {}
    for t in trials:
        key = run_key(t.params) if t.state == TrialState.COMPLETE else None
        if key is None:
            continue
        path = checkpoint_dir(predictions_root, t.number) / VAL_PREDICTIONS_FILE
        try:
            preds = _read_predictions(str(path), path.stat().st_mtime_ns)
        except (OSError, ValueError):
            continue
        out.setdefault(key[0], {})[(key[1], key[2])] = preds
    return out


@functools.lru_cache(maxsize=1024)
def _read_predictions(path: str, mtime_ns: int) -> ValPredictions:
    """``(y_true, y_pred, persons)`` of one ``val_predictions.csv``, read once per file version (`mtime_ns` is
    part of the key): a worker asks the race before every run and would otherwise read every finished run's
    file again each time."""
    from maskcls_hpo.metrics import read_val_predictions  # lazy: pandas

    frame = read_val_predictions(path)
    return frame["true_class"].to_numpy(), frame["pred_class"].to_numpy(), frame["person_id"].to_numpy()
