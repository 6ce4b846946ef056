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
