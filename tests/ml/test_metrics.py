"""Validation metrics: values checked by hand on tiny label arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from maskcls_hpo.data import decode_label
from maskcls_hpo.metrics import (
    _person_counts,
    bootstrap_macro_f1,
    combine_multi,
    corrected_fold_interval,
    evaluate_predictions,
    macro_f1_from_counts,
    paired_bootstrap_difference,
    paired_round_differences,
    person_bootstrap_weights,
    predict_labels,
)


def test_macro_f1_accuracy_and_confusion_by_hand():
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 1]
    m = evaluate_predictions(y_true, y_pred)
    # class 0: TP 1, FP 0, FN 1 -> F1 2/3; class 1: TP 2, FP 1, FN 0 -> F1 4/5; 16 classes never seen -> 0
    assert m["f1"] == pytest.approx((2 / 3 + 4 / 5) / 18)
    assert m["per_class_f1"][:3] == pytest.approx([2 / 3, 4 / 5, 0.0])
    assert len(m["per_class_f1"]) == 18
    assert m["accuracy"] == pytest.approx(0.75)
    assert len(m["confusion"]) == 18 and all(len(row) == 18 for row in m["confusion"])
    assert m["confusion"][0][0] == 1 and m["confusion"][0][1] == 1 and m["confusion"][1][1] == 2
    assert sum(map(sum, m["confusion"])) == 4
    assert m["n"] == 4


def test_task_f1_by_hand():
    m = evaluate_predictions([0, 0, 1, 1], [0, 1, 1, 1])
    # every label has mask 0 and gender 0: one class perfect, the other(s) absent -> 1/3 and 1/2
    assert m["task_f1"]["mask"] == pytest.approx(1 / 3)
    assert m["task_f1"]["gender"] == pytest.approx(1 / 2)
    # age bands are the labels themselves here: (2/3 + 4/5 + 0) / 3
    assert m["task_f1"]["age"] == pytest.approx((2 / 3 + 4 / 5) / 3)


def test_constant_predictor_scores_one_class_only():
    # 10 images of class 4 and 5 of class 9, all predicted 4: F1(class 4) = 2*10 / (2*10 + 5) = 0.8
    m = evaluate_predictions([4] * 10 + [9] * 5, [4] * 15)
    assert m["f1"] == pytest.approx(0.8 / 18)
    assert m["accuracy"] == pytest.approx(10 / 15)


def test_inputs_can_be_tensors_and_lengths_must_match():
    m = evaluate_predictions(torch.tensor([3, 3]), torch.tensor([3, 3]))
    assert m["f1"] == pytest.approx(1 / 18) and m["accuracy"] == 1.0
    with pytest.raises(ValueError, match="equally long"):
        evaluate_predictions([1, 2], [1])


def test_combine_multi_is_mask6_gender3_age():
    mask = torch.tensor([[0.0, 0.1, 5.0]])  # argmax 2
    gender = torch.tensor([[0.0, 1.0]])  # argmax 1
    age = torch.tensor([[2.0, 1.0, 0.0]])  # argmax 0
    assert combine_multi(mask, gender, age).tolist() == [2 * 6 + 1 * 3 + 0]


def test_combine_multi_inverts_decode_label_for_every_class():
    y = torch.arange(18)
    mask, gender, age = decode_label(y)
    eye = torch.eye(3)
    logits = (eye[mask], torch.eye(2)[gender], eye[age])
    assert combine_multi(*logits).tolist() == list(range(18))
    assert predict_labels({"mask": logits[0], "gender": logits[1], "age": logits[2]}).tolist() == list(range(18))
    assert predict_labels(torch.eye(18)).tolist() == list(range(18))


# --- bootstrap over persons ---------------------------------------------------------------------------


def test_person_bootstrap_of_two_persons_by_hand():
    # person A: one image of class 0, right; person B: one image of class 1, right. A resample of 2 persons is
    # AA or BB (each 1/4: one class right -> macro F1 1/18) or AB/BA (1/2: two classes right -> 2/18).
    ci = bootstrap_macro_f1([0, 1], [0, 1], ["A", "B"], resamples=1000, seed=0)
    assert ci.estimate == pytest.approx(2 / 18)
    assert ci.low == pytest.approx(1 / 18) and ci.high == pytest.approx(2 / 18)
    # two values 1/18 apart, each with probability 1/2: standard deviation 1/36
    assert ci.sd == pytest.approx(1 / 36, abs=0.001)
    assert (ci.resamples, ci.persons, ci.seed) == (1000, 2, 0)


def test_person_bootstrap_resamples_whole_persons_as_sklearn_scores_them():
    rng = np.random.default_rng(3)
    persons = np.repeat([f"{i:06d}" for i in range(12)], 7)  # 12 persons of 7 images
    y_true = rng.integers(0, 18, len(persons))
    y_pred = np.where(rng.random(len(persons)) < 0.6, y_true, rng.integers(0, 18, len(persons)))
    weights = person_bootstrap_weights(12, resamples=5, seed=7)
    draws = np.random.default_rng(7).integers(0, 12, size=(5, 12))  # the documented draws
    np.testing.assert_array_equal(weights, [np.bincount(d, minlength=12) for d in draws])
    ids, index = np.unique(persons, return_inverse=True)
    per_person = _person_counts(y_true, y_pred, index)
    for b in range(5):  # resample b by hand: the images of every drawn person, once per draw
        rows = np.concatenate([np.flatnonzero(persons == ids[p]) for p in draws[b]])
        by_hand = f1_score(y_true[rows], y_pred[rows], average="macro", labels=range(18), zero_division=0)
        assert macro_f1_from_counts(np.tensordot(weights[b], per_person, 1)) == pytest.approx(by_hand)
    ci = bootstrap_macro_f1(y_true, y_pred, persons, resamples=200, seed=7)
    assert ci.low < ci.estimate < ci.high


def test_paired_bootstrap_difference_by_hand():
    # A: class-0 image, B: class-1 image. Model a is right on both; model b is right on A and says 0 for B.
    # AA: a 1/18, b 1/18 -> 0;  BB: a 1/18, b 0 -> 1/18;  AB: a 2/18, b (class 0: 2/3) / 18 -> (4/3)/18.
    d = paired_bootstrap_difference([0, 1], [0, 1], [0, 0], ["A", "B"], resamples=1000, seed=0)
    assert d.estimate == pytest.approx((2 - 2 / 3) / 18)
    assert d.low == pytest.approx(0.0) and d.high == pytest.approx((4 / 3) / 18)
    assert d.contains(0.0)  # AA (1 in 4 resamples) cannot tell the two apart
    same = paired_bootstrap_difference([0, 1, 2], [0, 1, 1], [0, 1, 1], ["A", "B", "C"])
    assert (same.estimate, same.low, same.high, same.sd) == (0.0, 0.0, 0.0, 0.0)


def test_paired_round_differences_average_the_rounds_and_resample_within_each():
    # round 1 as in the test above: difference (2 - 2/3) / 18 on all images, resamples 0, 1/18 or (4/3)/18;
    # round 2: a and b identical, difference 0 in every resample -> the mean halves round 1's
    one = ([0, 1], [0, 1], [0, 0], ["A", "B"])
    same = ([0, 1, 2], [0, 1, 1], [0, 1, 1], ["A", "B", "C"])
    estimate, resampled = paired_round_differences([one, same], resamples=400, seed=0)
    assert estimate == pytest.approx((2 - 2 / 3) / 18 / 2)
    assert resampled.shape == (400,)
    assert set(np.round(resampled * 36, 6)) <= {0.0, 1.0, round(4 / 3, 6)}  # round 1's three outcomes, halved
    alone, only = paired_round_differences([one], resamples=400, seed=0)
    assert alone == pytest.approx((2 - 2 / 3) / 18) and np.allclose(only, 2 * resampled)  # same draws of round 1
    with pytest.raises(ValueError, match="at least one round"):
        paired_round_differences([])


def test_corrected_fold_interval_by_hand():
    # 3 folds, differences 0.01, 0.02, 0.03: mean 0.02, s = 0.01; the variance of the mean is widened from
    # s^2 / 3 to (1/3 + 1/(3-1)) s^2 (Nadeau & Bengio); t(0.975, 2 dof) = 4.302653
    mean, low, high = corrected_fold_interval([0.01, 0.02, 0.03], folds=3)
    half = 4.302653 * 0.01 * (1 / 3 + 1 / 2) ** 0.5  # 0.039278
    assert mean == pytest.approx(0.02) and (low, high) == pytest.approx((0.02 - half, 0.02 + half), abs=1e-6)
    plain_half = 4.302653 * 0.01 / 3**0.5  # the uncorrected t-interval is narrower by sqrt(2.5)
    assert (high - low) / (2 * plain_half) == pytest.approx(2.5**0.5, rel=1e-6)
    # 2 folds: t(0.975, 1 dof) = 12.706205, factor sqrt(1/2 + 1)
    _, low2, high2 = corrected_fold_interval([0.02, 0.04], folds=2)
    half2 = 12.706205 * (0.02 / 2**0.5) * (1 / 2 + 1) ** 0.5  # s = 0.0141421 -> 0.220078
    assert (low2, high2) == pytest.approx((0.03 - half2, 0.03 + half2), abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 finite"):
        corrected_fold_interval([0.1], folds=2)
    with pytest.raises(ValueError, match="folds must be >= 2"):
        corrected_fold_interval([0.1, 0.2], folds=1)


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_macro_f1([0, 1], [0], ["A", "B"])
    with pytest.raises(ValueError, match="0..17"):
        bootstrap_macro_f1([0, 18], [0, 1], ["A", "B"])
