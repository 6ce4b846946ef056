"""Learning-rate range test: a few hundred steps with an exponentially rising lr; the usable range from the loss.

Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017), section 3.3: train for a short while
with the learning rate rising from a very small to a large value and watch the loss; the lr where it starts
to fall and the lr where it stops falling (or turns ragged, or rises) bound the range worth using.

Here: step k of n uses ``lr_k = start_lr * (end_lr / start_lr) ** (k / (n - 1))``; the loss of every step is
smoothed with an exponential moving average with bias correction (``beta = 0.98``, as the learning-rate finder
of fastai does); the test stops early once the smoothed loss exceeds ``diverge`` times its minimum, or a loss
is not finite. From the smoothed curve S (:func:`usable_range`):

- ``high`` = the lr at the minimum of S (where the loss stops falling);
- ``low`` = the first lr where S has fallen by 10% of its whole fall (from S at the first step to the
  minimum): below it, training barely moves in a few hundred steps.

:func:`range_test` runs any ``step(lr) -> loss``; :func:`lr_range_test` runs it on a
:class:`~maskcls_hpo.config.TrainConfig`'s model, data and optimizer (the config's own lr is ignored). No
Optuna here; `maskcls-hpo lr-range` and `launch` (``LR_RANGE_TEST = True``) use it through ``hpo``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LrRange", "range_test", "usable_range", "lr_range_test", "DEFAULT_STEPS"]

DEFAULT_STEPS = 200
"""Steps of the test (Smith: a few epochs; a few hundred steps is enough to see the curve)."""


@dataclass
class LrRange:
    """What a range test found.

    Attributes:
        low, high: the usable range (learning rates, same unit as the optimizer's lr).
        lrs, losses, smoothed: `(k,)` float per step run (k <= steps: the test stops once the loss diverges).
        steps: steps asked for; diverged: the test stopped early on divergence.
    """

    low: float
    high: float
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    steps: int = 0
    diverged: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the curves rounded; what the study attrs and the report keep)."""
        return {
            "low": self.low,
            "high": self.high,
            "steps": self.steps,
            "steps_run": len(self.lrs),
            "diverged": self.diverged,
            "lrs": [float(f"{v:.4g}") for v in self.lrs],
            "smoothed": [round(v, 5) for v in self.smoothed],
        }


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average, bias-corrected: ``a_k = beta a_{k-1} + (1 - beta) x_k``, ``a_k / (1 - beta^k)``."""
    out = np.empty(len(losses), dtype=float)
    avg = 0.0
    for k, x in enumerate(losses, start=1):
        avg = beta * avg + (1.0 - beta) * float(x)
        out[k - 1] = avg / (1.0 - beta**k)
    return out


def usable_range(lrs: np.ndarray, smoothed: np.ndarray, fall: float = 0.1) -> tuple[float, float]:
    """(low, high) from a smoothed loss curve (see the module docstring).

    Args:
        lrs, smoothed: `(k,)` float, k >= 2, the lr and the smoothed loss of every step (rising lrs).
        fall: the share of the whole fall at which `low` is read.

    Raises:
        ValueError: fewer than 2 steps, or a loss that never falls (no usable range: raise the end lr or the
            steps, or check the data).
    """
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    if len(lrs) < 2 or len(lrs) != len(smoothed):
        raise ValueError(f"need at least 2 steps of lr and loss, got {len(lrs)} and {len(smoothed)}")
    best = int(np.argmin(smoothed))
    drop = smoothed[0] - smoothed[best]
    if best == 0 or drop <= 0:
        raise ValueError("the loss never fell during the range test: no usable learning-rate range")
    low_index = int(np.argmax(smoothed[: best + 1] <= smoothed[0] - fall * drop))
    return float(lrs[low_index]), float(lrs[best])


def range_test(
    step: Callable[[float], float],
    steps: int = DEFAULT_STEPS,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    diverge: float = 4.0,
) -> LrRange:
    """Run `step(lr) -> loss` `steps` times with an exponentially rising lr; the usable range of its loss.

    Args:
        step: one training step at learning rate `lr`; returns its loss (a float).
        steps: >= 10; start_lr < end_lr, both > 0.
        diverge: stop once the smoothed loss exceeds `diverge` x its minimum so far.

    Raises:
        ValueError: bad arguments, or a loss that never fell (see :func:`usable_range`).
    """
    if steps < 10 or not 0 < start_lr < end_lr:
        raise ValueError(f"steps must be >= 10 and 0 < start_lr < end_lr, got {steps}, {start_lr}, {end_lr}")
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    losses: list[float] = []
    diverged = False
    for lr in lrs:
        loss = float(step(float(lr)))
        if not math.isfinite(loss):
            diverged = True
            break
        losses.append(loss)
        s = smooth(np.array(losses))
        if len(s) > 1 and s[-1] > diverge * float(s.min()):
            diverged = True
            break
    run = lrs[: len(losses)]
    smoothed = smooth(np.array(losses))
    low, high = usable_range(run, smoothed)
    return LrRange(low, high, [float(v) for v in run], losses, [float(v) for v in smoothed], steps, diverged)


def lr_range_test(config: Any, steps: int = DEFAULT_STEPS, start_lr: float = 1e-6, end_lr: float = 1.0) -> LrRange:
    """The range test on `config`'s model, training data, batch size, loss and optimizer (its lr ignored).

    Trains a fresh model (seeded by ``config.seed``) on the training split of ``config.data_dir`` for up to
    `steps` batches, the loader cycling epochs; no checkpoint and no validation.

    Args:
        config: a :class:`~maskcls_hpo.config.TrainConfig`.

    Raises:
        ValueError: the loss never fell; DataError / ConfigError: as :func:`maskcls_hpo.train.train`.
    """
    import torch  # lazy: torch

    from maskcls_hpo.train import _autocast, _prepare_batch, _setup  # lazy: torch, timm

    run = _setup(config, out_dir=None, resume_from=None, progress=False)
    run.model.train()
    batches = _cycle(run.train_loader)

    def step(lr: float) -> float:
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        x = _prepare_batch(run, images, train=True)
        with _autocast(run):
            loss = run.loss_fn(run.model(x), labels)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        return float(loss.detach())

    with torch.enable_grad():
        return range_test(step, steps, start_lr, end_lr)


def _cycle(loader: Any) -> Any:
    """The loader's batches, epoch after epoch (``set_epoch`` reshuffles)."""
    epoch = 1
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1
