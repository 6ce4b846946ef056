"""Training losses: cross entropy, label smoothing, focal, soft macro F1, and the multi-output sum.

`build_loss(config)` returns a module `loss(outputs, labels) -> scalar`, where `labels` are the 18-class ids
`(B,) int64` and `outputs` what :class:`maskcls_hpo.models.MaskClassifier` returns: `(B, 18)` logits for the
`single` head, or a dict of `mask (B, 3)`, `gender (B, 2)`, `age (B, 3)` logits for the `multi` head. Each
loss is a mean over the batch (F1: a mean over classes of batch-level counts) and is computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from maskcls_hpo.config import TrainConfig
from maskcls_hpo.labels import decode_label

__all__ = ["FocalLoss", "SoftF1Loss", "MultiTaskLoss", "SingleHeadLoss", "build_loss", "task_loss"]


class FocalLoss(nn.Module):
    """Focal loss, mean over the batch: `FL = -(1 - p_t) ** gamma * log(p_t)`.

    Source: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017, eq. 4
    (without the alpha class weight), with `p_t` the softmax probability of the true class; `gamma = 0`
    is cross entropy.

    Args:
        gamma: focusing parameter >= 0 (the paper's default 2).

    Forward: logits `(B, C) float`, target `(B,) int64` -> scalar.
    """

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target.view(-1, 1)).squeeze(1)
        return (-((1.0 - log_p.exp()) ** self.gamma) * log_p).mean()


class SoftF1Loss(nn.Module):
    """Soft macro F1 loss: `1 - mean_c 2 TP_c / (2 TP_c + FP_c + FN_c + eps)` over all C classes.

    The counts are computed over the batch from softmax probabilities `p` and one-hot targets `y` instead of
    hard predictions, which makes F1 differentiable: `TP_c = sum_i y_ic p_ic`, `FP_c = sum_i (1 - y_ic) p_ic`,
    `FN_c = sum_i y_ic (1 - p_ic)`. Source: the "soft F1" surrogate of Benedict et al., "sigmoidF1: A Smooth
    F1 Score Surrogate Loss for Multilabel Classification", arXiv:2108.10566 (2021), section 3, here with a
    softmax over the classes instead of per-label sigmoids (as in the competition baseline's `F1Loss`).
    A class absent from the batch has `TP = FN = 0`, so its F1 term is 0 and its loss term pushes its
    probability mass down.

    Args:
        eps: added to the denominator so that an all-zero class gives 0 instead of NaN.

    Forward: logits `(B, C) float`, target `(B,) int64` -> scalar in [0, 1].
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = float(eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(logits.float(), dim=1)
        onehot = F.one_hot(target, num_classes=logits.shape[1]).to(probs.dtype)
        tp = (onehot * probs).sum(dim=0)
        fp = ((1.0 - onehot) * probs).sum(dim=0)
        fn = (onehot * (1.0 - probs)).sum(dim=0)
        f1 = 2.0 * tp / (2.0 * tp + fp + fn + self.eps)
        return 1.0 - f1.mean()


def task_loss(kind: str, label_smoothing: float = 0.1, focal_gamma: float = 2.0) -> nn.Module:
    """One classification loss `(logits (B, C), target (B,) int64) -> scalar` by name.

    - "cross_entropy": `torch.nn.CrossEntropyLoss()`;
    - "label_smoothing": `torch.nn.CrossEntropyLoss(label_smoothing=eps)` (Szegedy et al., "Rethinking the
      Inception Architecture for Computer Vision", CVPR 2016, section 7): targets `(1 - eps) * onehot + eps / C`;
    - "focal": :class:`FocalLoss` (`focal_gamma`);
    - "f1": :class:`SoftF1Loss`.

    Raises:
        ValueError: an unknown kind (the accepted ones are named).
    """
    factories: dict[str, Callable[[], nn.Module]] = {
        "cross_entropy": nn.CrossEntropyLoss,
        "label_smoothing": lambda: nn.CrossEntropyLoss(label_smoothing=label_smoothing),
        "focal": lambda: FocalLoss(focal_gamma),
        "f1": SoftF1Loss,
    }
    if kind not in factories:
        raise ValueError(f"loss must be one of {sorted(factories)}, got {kind!r}")
    return factories[kind]()


class SingleHeadLoss(nn.Module):
    """The `single` head's loss: one task loss over the 18 classes (logits cast to float32)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs.float(), labels)


class MultiTaskLoss(nn.Module):
    """The `multi` head's loss: `L = L_mask + L_gender + age_weight * L_age`.

    The 18-class labels are split by `labels.decode_label` into mask, gender and age band; each task uses
    its own instance of the same loss kind.

    Forward: outputs `{"mask": (B, 3), "gender": (B, 2), "age": (B, 3)}` logits, labels `(B,) int64` ->
    scalar.
    """

    def __init__(self, make_loss: Callable[[], nn.Module], age_weight: float = 1.0):
        super().__init__()
        self.mask, self.gender, self.age = make_loss(), make_loss(), make_loss()
        self.age_weight = float(age_weight)

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        mask, gender, age = decode_label(labels)
        return (
            self.mask(outputs["mask"].float(), mask)
            + self.gender(outputs["gender"].float(), gender)
            + self.age_weight * self.age(outputs["age"].float(), age)
        )


def build_loss(config: TrainConfig) -> nn.Module:
    """The loss for `config.head` and `config.loss` (`label_smoothing`, `focal_gamma`, `age_loss_weight`).

    Returns:
        A module `loss(outputs, labels (B,) int64) -> scalar float32` (see the module docstring).
    """

    def make() -> nn.Module:
        return task_loss(config.loss, label_smoothing=config.label_smoothing, focal_gamma=config.focal_gamma)

    if config.head == "multi":
        return MultiTaskLoss(make, age_weight=config.age_loss_weight)
    return SingleHeadLoss(make())
