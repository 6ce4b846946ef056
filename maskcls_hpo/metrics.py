"""Validation metrics with scikit-learn: macro F1 over the 18 classes, accuracy, per-task F1, confusion.

Macro F1 is the competition's score: the unweighted mean of the 18 per-class F1 scores, where a class that
is neither present nor predicted scores 0 (`sklearn.metrics.f1_score(average="macro", labels=range(18),
zero_division=0)`), so a model that never predicts a class pays for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from maskcls_hpo.labels import NUM_CLASSES, TASK_SIZES, decode_label, encode_label

__all__ = ["NUM_CLASSES", "TASK_CLASSES", "evaluate_predictions", "combine_multi", "predict_labels"]

TASK_CLASSES = TASK_SIZES  # classes per task (labels.TASK_SIZES)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> float:
    return float(f1_score(y_true, y_pred, average="macro", labels=list(range(n)), zero_division=0))


def evaluate_predictions(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Score 18-class predictions.

    Args:
        y_true, y_pred: `(N,)` integer class ids in 0..17 (lists, NumPy or CPU torch arrays), N >= 1.

    Returns:
        A dict of plain Python types:
        `f1` (macro F1 over the 18 classes, float in [0, 1]), `accuracy` (float), `task_f1`
        (`{"mask", "gender", "age"}` -> macro F1 over that task's classes, labels split with
        `data.decode_label`), `per_class_f1` (18 floats, class order), `confusion` (18 x 18 list of ints,
        rows = true class, columns = predicted, `sklearn.metrics.confusion_matrix(labels=range(18))`),
        `n` (int, images scored).

    Raises:
        ValueError: empty input or different lengths.
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"need equally long, non-empty label arrays, got {len(y_true)} and {len(y_pred)}")
    labels = list(range(NUM_CLASSES))
    tasks_true, tasks_pred = decode_label(y_true), decode_label(y_pred)
    task_f1 = {
        name: _macro_f1(t, p, n) for (name, n), t, p in zip(TASK_CLASSES.items(), tasks_true, tasks_pred, strict=True)
    }
    per_class = f1_score(y_true, y_pred, average=None, labels=labels, zero_division=0)
    return {
        "f1": _macro_f1(y_true, y_pred, NUM_CLASSES),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "task_f1": task_f1,
        "per_class_f1": [float(v) for v in per_class],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        "n": int(len(y_true)),
    }


def combine_multi(mask_logits: torch.Tensor, gender_logits: torch.Tensor, age_logits: torch.Tensor) -> torch.Tensor:
    """18-class prediction of a multi head: `labels.encode_label` of the three argmaxes.

    Args:
        mask_logits `(B, 3)`, gender_logits `(B, 2)`, age_logits `(B, 3)`: any float dtype.

    Returns:
        `(B,) int64` class ids in 0..17.
    """
    return encode_label(mask_logits.argmax(dim=1), gender_logits.argmax(dim=1), age_logits.argmax(dim=1))


def predict_labels(outputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """18-class ids `(B,) int64` from a model's outputs: argmax of `(B, 18)` logits or :func:`combine_multi`."""
    if isinstance(outputs, dict):
        return combine_multi(outputs["mask"], outputs["gender"], outputs["age"])
    return outputs.argmax(dim=1)
