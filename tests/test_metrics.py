"""Validation metrics: values checked by hand on tiny label arrays."""

from __future__ import annotations

import pytest
import torch

from maskcls_hpo.data import decode_label
from maskcls_hpo.metrics import combine_multi, evaluate_predictions, predict_labels


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
