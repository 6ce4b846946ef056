"""B10's race replay over recorded fold x seed results and B2 fidelity's ranking measures, on data small enough
to follow by hand (benchmarks/b10_confirm_race.py, benchmarks/b2_fidelity.py)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from b2_fidelity import top_kept  # noqa: E402
from b10_confirm_race import recorded_setting  # noqa: E402

LEADER = [0.60, 0.62, 0.58, 0.61, 0.59, 0.63, 0.60, 0.62]
WORSE = [0.30, 0.33, 0.29, 0.31, 0.32, 0.30, 0.28, 0.31]
KNOWN_GOOD = [0.20, 0.22, 0.19, 0.21, 0.20, 0.23, 0.18, 0.22]


def _runs() -> dict:
    rows = []
    for config, values in ((3, LEADER), (5, WORSE), (0, KNOWN_GOOD)):
        for i, v in enumerate(values):  # 4 folds x 2 seeds, round i = (fold i // 2, seed i % 2)
            rows.append({"config": config, "fold": i // 2, "seed_index": i % 2, "value": v})
    return {"settings": {"configs": [3, 5, 0], "top": 2, "seeds": 2}, "runs": rows}


def test_the_recorded_race_stops_the_worse_config_after_4_rounds_and_keeps_the_known_good():
    row = recorded_setting(_runs(), top=2, seeds=2, replays=50, seed=0, known_good=True)
    # 8 rounds; after round 4 config 5 is 0.3 behind the leader in every pair (p << 0.05): stopped, 4 runs; the
    # known-good (config 0) is as far behind but protected: 8 runs. 8 + 4 + 8 = 20 of the full 24, in every order.
    assert row["rounds"] == 8 and row["folds"] == 4 and row["seeds"] == 2
    assert row["configs"] == [3, 5, 0] and row["full_winner"] == 3
    assert row["same_winner"] == 1.0 and row["winner_stopped"] == 0.0
    assert row["epochs_share"] == round(20 / 24, 3)
    assert row["mean_stopped"] == 1.0


def test_with_one_seed_the_race_has_4_rounds_and_saves_nothing():
    row = recorded_setting(_runs(), top=2, seeds=1, replays=10, seed=0, known_good=False)
    # seed index 0 only: rounds (0,0), (1,0), (2,0), (3,0); a config is stopped after round 4 at the earliest,
    # when every run is done; without the known-good only configs 3 and 5 race
    assert row["rounds"] == 4 and row["configs"] == [3, 5]
    assert row["epochs_share"] == 1.0


def test_top_kept_counts_the_best_final_configs_in_the_top_half_at_the_rung():
    final = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.05] * 2)  # 20 configs; best 8 by final
    # at the rung configs 0 and 1 look worst of all: 6 of the 8 best stay in the top 10
    rung = final.copy()
    rung[[0, 1]] = -1.0
    assert top_kept(final, final) == 8
    assert top_kept(rung, final) == 6
