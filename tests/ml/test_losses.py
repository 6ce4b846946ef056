"""Each loss against a value computed by hand on a 3-sample batch.

The 18-class logits are built so that the softmax is easy to write down: a row with `ln 3` at one index and
0 elsewhere gives probability 3/20 there and 1/20 at the 17 other classes; an all-zero row gives 1/18.
"""

from __future__ import annotations

import math

import pytest
import torch

from maskcls_hpo.config import TrainConfig
from maskcls_hpo.losses import build_loss

LN3 = math.log(3.0)


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.zeros(3, 18, dtype=torch.float64)
    logits[0, 0] = LN3  # label 0: p_true = 3/20
    logits[1, 0] = LN3  # label 1: p_true = 1/20 (the mass went to class 0)
    labels = torch.tensor([0, 1, 5])  # row 2 is all zero: p_true = 1/18
    return logits, labels


def loss_of(kind: str, logits, labels, **extra) -> float:
    return float(build_loss(TrainConfig(loss=kind, **extra))(logits, labels))


def test_cross_entropy_by_hand(batch):
    expected = (math.log(20 / 3) + math.log(20) + math.log(18)) / 3
    assert loss_of("cross_entropy", *batch) == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_by_hand(batch):
    eps = 0.1
    # per sample: (1 - eps) * (-ln p_true) + eps * mean over the 18 classes of (-ln p_k)
    mean_nll_rows01 = (math.log(20 / 3) + 17 * math.log(20)) / 18
    s0 = (1 - eps) * math.log(20 / 3) + eps * mean_nll_rows01
    s1 = (1 - eps) * math.log(20) + eps * mean_nll_rows01
    s2 = math.log(18)  # uniform row: every class has -ln p = ln 18
    expected = (s0 + s1 + s2) / 3
    assert loss_of("label_smoothing", *batch, label_smoothing=eps) == pytest.approx(expected, rel=1e-6)


def test_focal_by_hand(batch):
    # -(1 - p)^2 ln p for p = 3/20, 1/20, 1/18
    expected = ((17 / 20) ** 2 * math.log(20 / 3) + (19 / 20) ** 2 * math.log(20) + (17 / 18) ** 2 * math.log(18)) / 3
    assert loss_of("focal", *batch, focal_gamma=2.0) == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy(batch):
    assert loss_of("focal", *batch, focal_gamma=0.0) == pytest.approx(loss_of("cross_entropy", *batch), rel=1e-9)


def test_soft_f1_by_hand(batch):
    # soft counts from the probabilities: TP_c = sum y p, FP_c = sum (1 - y) p, FN_c = sum y (1 - p)
    f1_class0 = (2 * 3 / 20) / (2 * 3 / 20 + (3 / 20 + 1 / 18) + 17 / 20)
    f1_class1 = (2 * 1 / 20) / (2 * 1 / 20 + (1 / 20 + 1 / 18) + 19 / 20)
    f1_class5 = (2 * 1 / 18) / (2 * 1 / 18 + (1 / 20 + 1 / 20) + 17 / 18)
    expected = 1 - (f1_class0 + f1_class1 + f1_class5) / 18  # the 15 other classes have TP = 0
    assert loss_of("f1", *batch) == pytest.approx(expected, rel=1e-6)


def test_soft_f1_of_confident_correct_predictions():
    # 3 samples of 3 distinct classes, predicted with near-certainty: those 3 classes score F1 ~ 1, the 15
    # classes absent from the batch score 0, so the loss is 1 - 3/18.
    logits = torch.full((3, 18), -50.0)
    labels = torch.tensor([2, 7, 11])
    logits[torch.arange(3), labels] = 50.0
    assert loss_of("f1", logits, labels) == pytest.approx(1 - 3 / 18, abs=1e-6)


def test_multi_output_loss_by_hand():
    # labels 0 = (mask 0, gender 0, age 0), 10 = (1, 1, 1), 17 = (2, 1, 2)
    labels = torch.tensor([0, 10, 17])
    mask = torch.tensor([[math.log(2), 0, 0], [0, math.log(2), 0], [0, 0, 0]], dtype=torch.float64)
    gender = torch.tensor([[LN3, 0], [LN3, 0], [0, 0]], dtype=torch.float64)
    age = torch.zeros(3, 3, dtype=torch.float64)
    outputs = {"mask": mask, "gender": gender, "age": age}
    ce_mask = (math.log(2) + math.log(2) + math.log(3)) / 3  # p_true = 2/4, 2/4, 1/3
    ce_gender = (math.log(4 / 3) + math.log(4) + math.log(2)) / 3  # p_true = 3/4, 1/4, 1/2
    ce_age = math.log(3)
    loss = build_loss(TrainConfig(head="multi", loss="cross_entropy", age_loss_weight=0.5))(outputs, labels)
    assert float(loss) == pytest.approx(ce_mask + ce_gender + 0.5 * ce_age, rel=1e-6)


@pytest.mark.parametrize("kind", ["cross_entropy", "label_smoothing", "focal", "f1"])
def test_every_loss_gives_gradients_for_both_heads(kind):
    torch.manual_seed(0)
    labels = torch.tensor([0, 10, 17, 5])
    single = torch.randn(4, 18, requires_grad=True)
    build_loss(TrainConfig(loss=kind))(single, labels).backward()
    assert single.grad is not None and torch.isfinite(single.grad).all() and single.grad.abs().sum() > 0
    multi = {k: torch.randn(4, n, requires_grad=True) for k, n in (("mask", 3), ("gender", 2), ("age", 3))}
    build_loss(TrainConfig(loss=kind, head="multi"))(multi, labels).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in multi.values())
