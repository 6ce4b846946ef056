"""The learning-rate range test for a sweep: run it on a config, store it as a study attr, say it in one line.

The test itself is :mod:`maskcls_hpo.lr_range` (no Optuna); here it becomes the study user attr ``lr_range``
(:attr:`~maskcls_hpo.hpo.attrs.StudyAttrs.LR_RANGE`) that :meth:`~maskcls_hpo.hpo.trial.Sweep.adopt_lr_range`
reads, and the line `launch`, `lr-range`, `status` and `report` print.
"""

from __future__ import annotations

from typing import Any

from maskcls_hpo.config import TrainConfig
from maskcls_hpo.errors import LaunchError
from maskcls_hpo.lr_range import DEFAULT_STEPS


def measure_lr_range(config: TrainConfig, steps: int = DEFAULT_STEPS) -> dict[str, Any]:
    """Run the learning-rate range test (:func:`maskcls_hpo.lr_range.lr_range_test`) on `config`.

    Returns:
        The ``lr_range`` study attr: ``LrRange.to_dict()`` (``low``, ``high``, ``steps``, ``steps_run``,
        ``diverged``, the lrs and the smoothed loss) plus ``model``, ``image_size`` and ``batch_size``: the
        range holds for that backbone, image size and batch size.

    Raises:
        LaunchError: `steps` below 10, or the loss never fell (no usable range).
        DataError, ConfigError: as training does.
    """
    from maskcls_hpo.lr_range import lr_range_test  # lazy: torch, timm

    if steps < 10:
        raise LaunchError(f"--steps must be 10 or more, got {steps}")
    try:
        found = lr_range_test(config, steps=steps)
    except ValueError as err:
        raise LaunchError(
            f"learning-rate range test on {config.model}: {err}; check the data, or set the lr range by hand"
        ) from None
    size = list(config.image_size) if config.image_size is not None else None
    return {**found.to_dict(), "model": config.model, "image_size": size, "batch_size": config.batch_size}


def lr_range_line(attr: Any) -> str | None:
    """``lr range 1.05e-04 .. 3.11e-02 (range test: test_efficientnet 48x36, batch 32, 154 of 200 steps)``;
    None when `attr` is not a stored range test."""
    if not isinstance(attr, dict) or "low" not in attr or "high" not in attr:
        return None
    size = attr.get("image_size")
    where = f"{attr.get('model')}" + (f" {size[0]}x{size[1]}" if isinstance(size, list) and len(size) == 2 else "")
    return (
        f"lr range {float(attr['low']):.3g} .. {float(attr['high']):.3g} (range test: {where}, batch "
        f"{attr.get('batch_size')}, {attr.get('steps_run')} of {attr.get('steps')} steps)"
    )
