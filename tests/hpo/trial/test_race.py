"""The confirm race's rule (hpo/trial/_race.py): who leads, who is stopped after 4 pairs, who is never stopped."""

from __future__ import annotations

import pytest

from maskcls_hpo.hpo.trial._race import RaceStop, paired_less_p, race_stops

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
