"""Ensemble selection (hpo/select/_ensemble.py) on planted out-of-fold predictions, figures checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maskcls_hpo.hpo.select._ensemble import greedy_selection, select_from_oof
from maskcls_hpo.metrics import prediction_columns


def _frame(true, probs, folds=4):
    """An OOF frame: one image per person, persons dealt to `folds` folds in turn."""
    n = len(true)
    frame = pd.DataFrame(
        {
            "path": [f"/d/{i:04d}.jpg" for i in range(n)],
            "person_id": [f"{i:06d}" for i in range(n)],
            "fold": np.arange(n) % folds,
            "true_class": true,
            "pred_class": probs.argmax(axis=1),
        }
    )
    frame[prediction_columns("single")] = probs
    return frame


def _probs(true, right, p_right, wrong_class=17):
    """Probability p_right on the true class where `right`, else 1 - p_right on `wrong_class` (the rest on the
    true class)."""
    probs = np.zeros((len(true), 18))
    for i, (t, r) in enumerate(zip(true, right, strict=True)):
        if r:
            probs[i, t], probs[i, wrong_class] = p_right, 1 - p_right
        else:
            probs[i, t], probs[i, wrong_class] = 1 - p_right, p_right
    return probs


def test_a_mixture_of_two_complementary_configs_is_used():
    # 80 persons, classes 0 and 1 alternating. #3 is sure and right on the first half (0.9) and narrowly
    # wrong on the second (0.45 true vs 0.55 on class 17); #5 the other way round. Each alone: right on half the
    # images; their mean puts 0.675 on the true class everywhere: right on all.
    true = np.array([i % 2 for i in range(80)])
    first = np.arange(80) < 40
    a = np.where(first[:, None], _probs(true, first, 0.9), _probs(true, first, 0.55))
    b = np.where(first[:, None], _probs(true, ~first, 0.55), _probs(true, ~first, 0.9))
    assert (a.argmax(1) == true).mean() == 0.5 and (((a + b) / 2).argmax(1) == true).all()
    counts = greedy_selection(np.stack([a, b]), true)
    assert counts.tolist() == [1, 1]
    choice = select_from_oof({3: _frame(true, a), 5: _frame(true, b)}, winner=3)
    assert choice.members == {3: 1, 5: 1} and choice.folds == 4
    # cross-fitted: each fold's mixture is chosen on the other 3 folds, which hold both halves: right on all
    # (macro F1 2/18 = 0.111 over 18 classes... with class 17 predicted on the wrong half for #3 alone)
    assert choice.gain.estimate > 0 and choice.gain.low > 0 and choice.used
    assert choice.message.endswith("the interval lies above 0, using the mixture")
    assert "mixture {#3 x1, #5 x1} vs winner #3's seed ensemble" in choice.message


def test_no_mixture_when_the_winner_alone_is_best():
    # #3 is right on every image (0.9); #5 wrong on every image: the greedy pick is #3 alone, gain 0 exactly
    true = np.array([i % 2 for i in range(40)])
    a = _probs(true, np.ones(40, bool), 0.9)
    b = _probs(true, np.zeros(40, bool), 0.9)
    choice = select_from_oof({3: _frame(true, a), 5: _frame(true, b)}, winner=3)
    assert choice.members == {3: 1}  # the best mixture seen: #3 alone (later additions only tie it)
    assert (choice.gain.estimate, choice.gain.low, choice.gain.high) == (0.0, 0.0, 0.0)
    assert not choice.used
    assert choice.message.endswith("the mixture is the winner alone, using the winner")


def test_a_mixture_within_noise_is_not_used():
    # #5 adds one image of one person: chosen on all folds, but the cross-fitted gain's interval reaches 0
    true = np.array([i % 2 for i in range(40)])
    right_a = np.ones(40, bool)
    right_a[0] = False
    a = _probs(true, right_a, 0.6)
    b = _probs(true, np.ones(40, bool), 0.45)  # right everywhere but unsure (the rest on class 17: 0.55 > 0.45)
    b[0, true[0]], b[0, 17] = 0.9, 0.1
    choice = select_from_oof({3: _frame(true, a), 5: _frame(true, b)}, winner=3)
    assert choice.gain is not None and choice.gain.low <= 0.0 and not choice.used
    assert "using the winner" in choice.message


def test_other_images_are_not_compared():
    true = np.array([0, 1])
    a = _probs(true, np.ones(2, bool), 0.9)
    other = _frame(true, a)
    other["path"] = ["/x/1.jpg", "/x/2.jpg"]
    choice = select_from_oof({3: _frame(true, a), 5: other}, winner=3)
    assert choice.gain is None and not choice.used
    assert choice.message == (
        "ensemble selection not done: the configs' out-of-fold predictions cover different images; using the "
        "winner #3 alone"
    )
    with pytest.raises(ValueError, match="winner #4 has no out-of-fold predictions"):
        select_from_oof({3: _frame(true, a)}, winner=4)
