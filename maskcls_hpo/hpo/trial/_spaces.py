"""The search space the shipped sweeps share, as one function sweep files can call.

`mask_classifier_space` asks for what hand-tuners of the mask task vary: batch size, learning rate (log
scale), head dropout, the scheduler with CosineAnnealingLR's `T_max` (only under cosine), the loss type and
the age-loss weight (only with the multi-output head). Sweep files stay free to write their own `suggest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LOSSES = ("cross_entropy", "label_smoothing", "focal", "f1")


def mask_classifier_space(
    trial: Any,
    *,
    epochs: int,
    batch_sizes: Sequence[int] = (16, 32, 64),
    lr: tuple[float, float] = (1e-5, 3e-3),
    dropout: tuple[float, float] = (0.0, 0.7),
    dropout_step: float | None = 0.1,
    t_max_min: int = 2,
    age_loss_weight: tuple[float, float] = (0.5, 3.0),
) -> dict[str, Any]:
    """Suggest one point of the shared space; returns TrainConfig overrides.

    Parameter names equal the TrainConfig keys they set: `batch_size` (categorical), `lr` (float, log),
    `dropout` (float, `dropout_step` grid or continuous when None), `scheduler` (step | cosine),
    `t_max` (int epochs in [t_max_min, epochs], cosine only), `loss` (one of LOSSES), `head`
    (single | multi), `age_loss_weight` (float, multi only).

    Args:
        trial: an :class:`optuna.Trial` (or anything with the `suggest_*` methods).
        epochs: the sweep's epochs, the upper end of `t_max`.
    """
    params = {
        "batch_size": trial.suggest_categorical("batch_size", list(batch_sizes)),
        "lr": trial.suggest_float("lr", lr[0], lr[1], log=True),
        "dropout": trial.suggest_float("dropout", dropout[0], dropout[1], step=dropout_step),
        "scheduler": trial.suggest_categorical("scheduler", ["step", "cosine"]),
        "loss": trial.suggest_categorical("loss", list(LOSSES)),
        "head": trial.suggest_categorical("head", ["single", "multi"]),
    }
    if params["scheduler"] == "cosine":
        params["t_max"] = trial.suggest_int("t_max", t_max_min, epochs)
    if params["head"] == "multi":
        params["age_loss_weight"] = trial.suggest_float("age_loss_weight", *age_loss_weight)
    return params
