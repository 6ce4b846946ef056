"""B2's replay of the product's promotion (benchmarks/b2_promotion.py) on curves small enough to follow by hand."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from b2_promotion import replay_sha_promotion  # noqa: E402


def test_a_paused_config_that_ranks_into_the_top_later_continues_its_curve():
    # 4 configs x 4 epochs; the pruner's one rung is epoch 2 (min_resource 2, eta 2)
    curves = [[0.5, 0.6, 0.7, 0.8], [0.1, 0.4, 0.8, 0.9], [0.0, 0.1, 0.1, 0.1], [0.0, 0.05, 0.1, 0.1]]
    res = replay_sha_promotion(curves, [0, 1, 2, 3], min_resource=2, eta=2)
    # config 0 is alone at the rung and goes on (4 epochs); 1, 2, 3 are stopped at epoch 2 (2 epochs each);
    # then config 1 is 2nd of 4 at the rung, in the top 2: promoted, it trains epochs 3-4 and reaches 0.9
    assert res["trace"] == [(4, 0.8), (6, 0.8), (8, 0.8), (10, 0.8), (12, 0.9)]
    assert res["promotions"] == 1 and res["pruned"] == [2, 3] and res["epochs"] == 12


def test_with_bootstrap_count_1_the_first_config_waits_at_the_rung_until_it_ranks_in_the_top_half():
    # the shipped pruner (hpo.trial.asha_pruner): a config alone at the rung is paused, not let through
    curves = [[0.5, 0.6, 0.7, 0.8], [0.1, 0.4, 0.8, 0.9], [0.0, 0.1, 0.1, 0.1], [0.0, 0.05, 0.1, 0.1]]
    res = replay_sha_promotion(curves, [0, 1, 2, 3], min_resource=2, eta=2, bootstrap_count=1)
    # 0 paused at epoch 2 (2); 1 paused, 0.4 < 0.6 (4); 0 is the top 1 of 2: promoted, epochs 3-4 (6, 0.8);
    # 2 and 3 paused (8, 10); 1 is now 2nd of 4, in the top 2: promoted, epochs 3-4 (12, 0.9)
    assert res["trace"] == [(2, None), (4, None), (6, 0.8), (8, 0.8), (10, 0.8), (12, 0.9)]
    assert res["promotions"] == 2 and res["pruned"] == [2, 3] and res["epochs"] == 12
