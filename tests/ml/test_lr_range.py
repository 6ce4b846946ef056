"""The learning-rate range test (maskcls_hpo/lr_range.py) on a toy objective whose usable range is planted.

Gradient descent on ``h/2 |w|^2`` (with a little gradient noise) converges for lr < 2/h and diverges above:
the planted top of the range is 2/h. Below about 0.01/h the loss barely moves in 200 steps. The test must
find the top within a factor 2 above 2/h (the smoothed loss lags the raw loss by a few steps) and the bottom
near 0.01/h, for curvatures 10, 100 and 1000 (so the answer moves with the planted range).
"""

from __future__ import annotations

import numpy as np
import pytest

from maskcls_hpo.lr_range import range_test, smooth, usable_range


def _quadratic(h: float):
    rng = np.random.default_rng(0)
    w = np.ones(10)

    def step(lr: float) -> float:
        nonlocal w
        loss = 0.5 * h * float(w @ w)
        w = w - lr * (h * w + rng.normal(0.0, 0.1 * np.sqrt(h), 10))
        return loss

    return step


@pytest.mark.parametrize("h", [10.0, 100.0, 1000.0])
def test_range_test_finds_the_planted_range_of_a_quadratic(h):
    found = range_test(_quadratic(h), steps=200, start_lr=1e-6, end_lr=1.0)
    assert found.diverged and len(found.lrs) < 200  # stopped once the loss blew up
    assert 2.0 / h <= found.high <= 2 * 2.0 / h
    assert 0.005 / h <= found.low <= 0.02 / h
    assert found.lrs[0] == pytest.approx(1e-6) and found.lrs[1] == pytest.approx(1e-6 * 1e6 ** (1 / 199))


def test_smooth_and_range_by_hand():
    # EMA with bias correction, beta 0.5: a1 = x1; a2 = (0.25*4 + 0.5*2) / 0.75 = 2.667 ... by hand
    assert smooth(np.array([4.0, 2.0]), beta=0.5).tolist() == pytest.approx([4.0, 8 / 3])
    lrs = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    # falls from 10 to 2 (fall 8): 10% of it is reached at 9.2 or below -> 1e-3; minimum at 1e-1
    assert usable_range(lrs, np.array([10.0, 9.0, 5.0, 2.0, 30.0])) == (1e-3, 1e-1)
    with pytest.raises(ValueError, match="never fell"):
        usable_range(lrs, np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
