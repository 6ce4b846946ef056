"""Is the best trial really better than the runner-up? A paired person bootstrap on the shared validation split.

Trials of one study are validated on the same persons (the split depends only on the data, `val_ratio` and
`seed`, which sweeps keep fixed), so the best and the runner-up COMPLETE trial can be compared image by image:
:func:`maskcls_hpo.metrics.paired_bootstrap_difference` resamples val persons with replacement and scores both
trials' best-epoch predictions on the same drawn persons. When the 95% interval of the difference (best -
runner-up) contains 0, the validation set cannot tell the two apart: the runner-up is "within noise".

The predictions come from each trial's ``val_predictions.csv`` (beside its checkpoints, else its artifact;
:func:`maskcls_hpo.hpo.trial.load_val_predictions`). `status` and `export` print
:attr:`RunnerUpComparison.message`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from maskcls_hpo.hpo.store import ranked_complete_trials, storage_folder
from maskcls_hpo.hpo.trial import load_val_predictions
from maskcls_hpo.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, BootstrapInterval, paired_bootstrap_difference

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RunnerUpComparison:
    """The best COMPLETE trial against the runner-up.

    Attributes:
        best, runner_up: trial numbers (rank 1 and rank 2 by value).
        difference: paired-bootstrap interval of val macro F1 (best - runner-up), or None when they could not
            be compared (`reason` says why: predictions missing, different validation images).
    """

    best: int
    runner_up: int
    difference: BootstrapInterval | None
    reason: str = ""

    @property
    def within_noise(self) -> bool | None:
        """True when the 95% interval of the difference contains 0; None when not compared."""
        return None if self.difference is None else self.difference.contains(0.0)

    @property
    def message(self) -> str:
        """One line, e.g. "runner-up #7 is within noise of #3: difference 0.005, 95% interval [-0.055, +0.063]
        (paired bootstrap over 140 val persons, 1000 resamples)"."""
        d = self.difference
        if d is None:
            return f"runner-up #{self.runner_up} not compared with #{self.best}: {self.reason}"
        how = f"(paired bootstrap over {d.persons} val persons, {d.resamples} resamples)"
        figures = f"difference {d.estimate:.3f}, 95% interval [{d.low:+.3f}, {d.high:+.3f}] {how}"
        if self.within_noise:
            return f"runner-up #{self.runner_up} is within noise of #{self.best}: {figures}"
        return f"best #{self.best} beats runner-up #{self.runner_up} beyond noise: {figures}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML: best, runner_up, within_noise, difference {estimate, low, high, sd, ...},
        reason, message."""
        return {
            "best": self.best,
            "runner_up": self.runner_up,
            "within_noise": self.within_noise,
            "difference": None if self.difference is None else dict(self.difference.__dict__),
            "reason": self.reason,
            "message": self.message,
        }


def compare_trials(
    a: pd.DataFrame, b: pd.DataFrame, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[BootstrapInterval | None, str]:
    """Paired bootstrap of macro F1(a) - macro F1(b) from two predictions DataFrames
    (:func:`maskcls_hpo.metrics.read_val_predictions`), matched by image path.

    Returns:
        (interval, "") or (None, why they cannot be compared: other images, other true classes).
    """
    if set(a["path"]) != set(b["path"]) or len(a) != len(b):
        return None, (
            f"they were validated on different images ({len(a)} and {len(b)} val images); the split changes with "
            f"val_ratio, seed or the data"
        )
    merged = a[["path", "person_id", "true_class", "pred_class"]].merge(
        b[["path", "true_class", "pred_class"]], on="path", suffixes=("_a", "_b")
    )
    if (merged["true_class_a"] != merged["true_class_b"]).any():
        return None, "the same val images carry different true classes (other age_bins or corrections?)"
    interval = paired_bootstrap_difference(
        merged["true_class_a"], merged["pred_class_a"], merged["pred_class_b"], merged["person_id"], resamples, seed
    )
    return interval, ""


def compare_runner_up(
    study: optuna.Study,
    storage_url: str | None = None,
    checkpoints: str | Path | None = None,
    artifact_root: str | Path | None = None,
) -> RunnerUpComparison | None:
    """Compare the best COMPLETE trial with the runner-up on the shared validation persons.

    Args:
        study: the study; storage_url: its resolved URL (locates the artifact store and, without
            `checkpoints`, the default checkpoint folder ``storage_folder(url, "checkpoints")``).
        checkpoints: the checkpoint root the workers used (``<checkpoints>/<study>/trial_<n>/``).

    Returns:
        None when the study has fewer than 2 COMPLETE trials, else a :class:`RunnerUpComparison` (with
        `difference` None and a `reason` when a trial's predictions are missing).
    """
    ranked = ranked_complete_trials(study, limit=2)  # one ranked SQL query; loads these two trials only
    if len(ranked) < 2:
        return None
    best, runner_up = ranked[0], ranked[1]
    if checkpoints is None and storage_url is not None:
        checkpoints = storage_folder(storage_url, "checkpoints")
    frames = [load_val_predictions(study, t, checkpoints, storage_url, artifact_root) for t in (best, runner_up)]
    missing = [t.number for t, f in zip((best, runner_up), frames, strict=True) if f is None]
    best_frame, runner_up_frame = frames
    if best_frame is None or runner_up_frame is None:
        which = " and ".join(f"#{n}" for n in missing)
        return RunnerUpComparison(
            best.number, runner_up.number, None, f"no validation predictions of {which} (val_predictions.csv)"
        )
    interval, reason = compare_trials(best_frame, runner_up_frame)
    return RunnerUpComparison(best.number, runner_up.number, interval, reason)
