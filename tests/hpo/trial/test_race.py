"""The confirm race's rule (hpo/trial/_race.py): who leads, who is stopped after 4 pairs, who is never stopped."""

from __future__ import annotations

import numpy as np
import pytest

from maskcls_hpo.hpo.trial._race import PAIR_PERSONS, RaceStop, paired_less_p, person_bootstrap_test, race_stops

ROUNDS = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]


def _results(values: list[float]) -> dict[tuple[int, int], float]:
    return dict(zip(ROUNDS, values, strict=False))


LEADER = [0.80, 0.82, 0.79, 0.81, 0.80]
WORSE = [0.60, 0.63, 0.58, 0.62, 0.61]  # 0.2 behind on every fold
CLOSE = [0.79, 0.83, 0.80, 0.80, 0.79]  # within noise of the leader


def test_a_clearly_worse_config_is_stopped_after_4_pairs_not_before():
    three = race_stops({3: _results(LEADER[:3]), 7: _results(WORSE[:3])})
    assert three == {}  # 3 pairs: too few to stop anything
    four = race_stops({3: _results(LEADER[:4]), 7: _results(WORSE[:4])})
    assert set(four) == {7}
    stop = four[7]
    # differences -0.20, -0.19, -0.21, -0.19: mean -0.1975, sd 0.00957, t = -41.3 on 3 df
    assert (stop.leader, stop.pairs) == (3, 4)
    assert stop.mean_diff == pytest.approx(-0.1975)
    assert stop.p_value < 1e-4


def test_a_config_within_noise_and_a_protected_one_run_on():
    stops = race_stops({3: _results(LEADER), 5: _results(CLOSE), 7: _results(WORSE)}, protected=[7])
    assert stops == {}


def test_the_leader_is_the_best_mean_and_a_stop_is_kept():
    earlier = {9: RaceStop(9, 3, 4, -0.1, 0.01)}
    stops = race_stops({3: _results(WORSE), 7: _results(LEADER), 9: _results([0.99] * 5)}, stopped=earlier)
    assert stops[9] == earlier[9]  # stopped before: kept, and it can not lead (else 9 would lead with 0.99)
    assert stops[3].leader == 7


def test_paired_p_value_by_hand():
    # one-sided paired t test of (a - b) < 0; differences -0.02, -0.01, -0.03, 0.0: mean -0.015, sd 0.01291,
    # t = -0.015 / (0.01291 / 2) = -2.324, 3 df: one-sided p = 0.0514 (not below 0.05)
    assert paired_less_p([0.78, 0.80, 0.77, 0.81], [0.80, 0.81, 0.80, 0.81]) == pytest.approx(0.0514, abs=5e-4)
    assert paired_less_p([0.5, 0.5, 0.5, 0.5], [0.6, 0.6, 0.6, 0.6]) == 0.0  # constant differences below zero
    assert paired_less_p([0.7, 0.7, 0.7, 0.7], [0.6, 0.6, 0.6, 0.6]) == 1.0


def _predictions(correct: list[int], persons: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A round's val predictions: `persons` persons x 7 images, classes 0-6; right on the persons in `correct`."""
    rng = np.random.default_rng(seed)
    true = np.tile(np.arange(7), persons)
    person = np.repeat([f"p{i}" for i in range(persons)], 7)
    pred = true.copy()
    wrong = ~np.isin(np.repeat(np.arange(persons), 7), correct)
    pred[wrong] = (true[wrong] + 1 + rng.integers(0, 5, wrong.sum())) % 7
    return true, pred, person


def test_person_pairing_stops_a_clearly_worse_config_after_one_round_and_keeps_the_known_good():
    everyone, half = list(range(40)), list(range(20))
    leader, worse, close = _predictions(everyone), _predictions(half), _predictions(list(range(39)))
    # macro F1 over the 18 classes: all right 7/18 = 0.389; right on half the persons about 0.19
    rounds = {3: {(0, 0): leader}, 5: {(0, 0): close}, 7: {(0, 0): worse}, 9: {(0, 0): worse}}
    values = {n: {(0, 0): 0.39 if n == 3 else 0.38 if n == 5 else 0.19} for n in rounds}
    stops = race_stops(values, protected=[9], min_pairs=1, test=person_bootstrap_test(rounds), pairing=PAIR_PERSONS)
    assert set(stops) == {7}  # 9 is as bad but protected (the known-good); 5 is one person behind: within noise
    stop = stops[7]
    assert (stop.leader, stop.pairs, stop.pairing) == (3, 1, PAIR_PERSONS)
    assert stop.mean_diff < -0.15 and stop.p_value == pytest.approx(1 / 1001)  # no resample had 7 ahead
    assert stop.describe().startswith("stopped after 1 round(s): ") and "person-paired bootstrap" in stop.describe()
    assert RaceStop.from_attr(stop.to_attr()) == stop


def test_person_pairing_tests_no_round_without_predictions_of_both_runs():
    rounds = {3: {(0, 0): _predictions(list(range(40)))}, 7: {}}  # 7's predictions could not be read
    values = {3: {(0, 0): 0.39}, 7: {(0, 0): 0.19}}
    assert race_stops(values, min_pairs=1, test=person_bootstrap_test(rounds), pairing=PAIR_PERSONS) == {}
    assert RaceStop.from_attr({**RaceStop(7, 3, 4, -0.1, 0.01).to_attr()} | {"pairing": "folds"}).pairing == "folds"
    old = {"source_trial": 7, "leader": 3, "pairs": 4, "mean_diff": -0.1, "p_value": 0.01}  # before pairings
    assert RaceStop.from_attr(old).pairing == "folds"
