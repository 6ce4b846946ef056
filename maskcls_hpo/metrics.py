"""Validation metrics with scikit-learn: macro F1 over the 18 classes, accuracy, per-task F1, confusion.

Also: a bootstrap over persons for a 95% interval of a macro F1 and a paired one for the difference of two
models on the same images (:func:`bootstrap_macro_f1`, :func:`paired_bootstrap_difference`), and the file of
a run's per-image validation predictions (:func:`write_val_predictions`, :func:`read_val_predictions`).

Macro F1 is the competition's score: the unweighted mean of the 18 per-class F1 scores, where a class that
is neither present nor predicted scores 0 (`sklearn.metrics.f1_score(average="macro", labels=range(18),
zero_division=0)`), so a model that never predicts a class pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from maskcls_hpo._util import atomic_path
from maskcls_hpo.labels import NUM_CLASSES, TASK_SIZES, decode_label, encode_label

if TYPE_CHECKING:  # torch is needed only by callers that hold tensors; `status` reads predictions without it
    import pandas as pd
    import torch

__all__ = [
    "NUM_CLASSES",
    "TASK_CLASSES",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "BootstrapInterval",
    "PredictionScores",
    "evaluate_predictions",
    "combine_multi",
    "predict_labels",
    "person_bootstrap_weights",
    "bootstrap_macro_f1",
    "paired_bootstrap_difference",
    "paired_round_differences",
    "corrected_fold_interval",
    "macro_f1_from_counts",
    "VAL_PREDICTIONS_FILE",
    "prediction_columns",
    "write_val_predictions",
    "read_val_predictions",
]

TASK_CLASSES = TASK_SIZES  # classes per task (labels.TASK_SIZES)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> float:
    from sklearn.metrics import f1_score  # lazy: sklearn; `status` and `export` load this module (4 s)

    return float(f1_score(y_true, y_pred, average="macro", labels=list(range(n)), zero_division=0))


class PredictionScores(TypedDict):
    """What :func:`evaluate_predictions` returns (plain Python types; the keys are described there)."""

    f1: float
    accuracy: float
    task_f1: dict[str, float]
    per_class_f1: list[float]
    confusion: list[list[int]]
    n: int


def evaluate_predictions(y_true: ArrayLike, y_pred: ArrayLike) -> PredictionScores:
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
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score  # lazy: sklearn

    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(true) == 0 or len(true) != len(pred):
        raise ValueError(f"need equally long, non-empty label arrays, got {len(true)} and {len(pred)}")
    labels = list(range(NUM_CLASSES))
    tasks_true, tasks_pred = decode_label(true), decode_label(pred)
    task_f1 = {
        name: _macro_f1(t, p, n) for (name, n), t, p in zip(TASK_CLASSES.items(), tasks_true, tasks_pred, strict=True)
    }
    per_class = f1_score(true, pred, average=None, labels=labels, zero_division=0)
    return {
        "f1": _macro_f1(true, pred, NUM_CLASSES),
        "accuracy": float(accuracy_score(true, pred)),
        "task_f1": task_f1,
        "per_class_f1": [float(v) for v in per_class],
        "confusion": confusion_matrix(true, pred, labels=labels).astype(int).tolist(),
        "n": len(true),
    }


def combine_multi(mask_logits: torch.Tensor, gender_logits: torch.Tensor, age_logits: torch.Tensor) -> torch.Tensor:
    """18-class prediction of a multi head: `labels.encode_label` of the three argmaxes.

    Args:
        mask_logits: `(B, 3)`, any float dtype.
        gender_logits: `(B, 2)`, any float dtype.
        age_logits: `(B, 3)`, any float dtype.

    Returns:
        `(B,) int64` class ids in 0..17.
    """
    return encode_label(mask_logits.argmax(dim=1), gender_logits.argmax(dim=1), age_logits.argmax(dim=1))


def predict_labels(outputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """18-class ids `(B,) int64` from a model's outputs: argmax of `(B, 18)` logits or :func:`combine_multi`."""
    if isinstance(outputs, dict):
        return combine_multi(outputs["mask"], outputs["gender"], outputs["age"])
    return outputs.argmax(dim=1)


# --- uncertainty: bootstrap over persons ----------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 1000
"""Resamples of every person bootstrap unless told otherwise."""

BOOTSTRAP_SEED = 0
"""Seed of every person bootstrap unless told otherwise (the same seed = the same resampled persons)."""


@dataclass(frozen=True)
class BootstrapInterval:
    """A 95% percentile-bootstrap interval of a macro F1 (or of a difference of two macro F1s).

    Attributes:
        estimate: the figure on all images (macro F1, or the difference a - b), float.
        low, high: the 2.5th and 97.5th percentiles of the resampled figures (``numpy.percentile``, linear).
        sd: standard deviation of the resampled figures (ddof=1): the bootstrap standard error.
        resamples: how many resamples; persons: distinct persons resampled; seed: the generator's seed.
    """

    estimate: float
    low: float
    high: float
    sd: float
    resamples: int
    persons: int
    seed: int

    def contains(self, value: float = 0.0) -> bool:
        """True when `value` lies in [low, high] (for a difference: the two are within noise)."""
        return self.low <= value <= self.high


def person_bootstrap_weights(
    n_persons: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> NDArray[np.int64]:
    """How often each person is drawn in each resample: `(resamples, n_persons) int64`, each row sums to n_persons.

    Resample b draws `n_persons` persons with replacement, uniformly
    (``numpy.random.default_rng(seed).integers(0, n_persons, size=(resamples, n_persons))``, row b = draw b);
    a person drawn k times brings all their images k times.
    """
    if n_persons < 1 or resamples < 1:
        raise ValueError(f"need at least one person and one resample, got {n_persons} and {resamples}")
    draws = np.random.default_rng(seed).integers(0, n_persons, size=(resamples, n_persons))
    offsets = (np.arange(resamples, dtype=np.int64) * n_persons)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n_persons).reshape(resamples, n_persons)


def _person_counts(y_true: np.ndarray, y_pred: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Per person, per class: (true positives, false positives, false negatives): `(P, 3, 18) int64`."""
    n = NUM_CLASSES
    counts = np.zeros((person.max() + 1, 3, n), dtype=np.int64)
    hit = y_true == y_pred
    np.add.at(counts, (person[hit], 0, y_true[hit]), 1)
    np.add.at(counts, (person[~hit], 1, y_pred[~hit]), 1)
    np.add.at(counts, (person[~hit], 2, y_true[~hit]), 1)
    return counts


def macro_f1_from_counts(counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Macro F1 over the 18 classes from `(..., 3, 18)` counts (tp, fp, fn); returns `(...)` float64.

    Per class `F1 = 2 tp / (2 tp + fp + fn)`, 0 when the class is neither present nor predicted: the same
    figure as ``f1_score(average="macro", labels=range(18), zero_division=0)``.
    """
    tp, fp, fn = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    denom = 2 * tp + fp + fn
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)
    return f1.mean(axis=-1)


def _check_inputs(
    y_true: ArrayLike, preds: list[ArrayLike], persons: ArrayLike
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]], NDArray[np.int64]]:
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    predicted = [np.asarray(p, dtype=np.int64).reshape(-1) for p in preds]
    person = np.asarray(persons).reshape(-1)
    if len(true) == 0 or any(len(p) != len(true) for p in predicted) or len(person) != len(true):
        lengths = [len(true), *(len(p) for p in predicted), len(person)]
        raise ValueError(f"need equally long, non-empty label and person arrays, got lengths {lengths}")
    for name, arr in (("y_true", true), *((f"y_pred[{i}]", p) for i, p in enumerate(predicted))):
        if arr.min() < 0 or arr.max() >= NUM_CLASSES:
            raise ValueError(f"{name} must hold class ids in 0..{NUM_CLASSES - 1}, got {arr.min()}..{arr.max()}")
    _, person_index = np.unique(person, return_inverse=True)
    return true, predicted, person_index.astype(np.int64).reshape(-1)


def _interval(estimate: float, resampled: NDArray[np.float64], persons: int, seed: int) -> BootstrapInterval:
    low, high = np.percentile(resampled, [2.5, 97.5])
    sd = float(resampled.std(ddof=1)) if len(resampled) > 1 else 0.0
    return BootstrapInterval(float(estimate), float(low), float(high), sd, int(len(resampled)), int(persons), seed)


def bootstrap_macro_f1(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    persons: ArrayLike,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> BootstrapInterval:
    """95% interval of the macro F1 from a bootstrap over persons (percentile bootstrap, Efron 1979).

    The images of one person are not independent (the same face 7 times), so the unit resampled is the
    person: each resample draws as many persons as there are, with replacement
    (:func:`person_bootstrap_weights`), and scores all images of the drawn persons, a person drawn twice
    counting twice. Resamples are computed from per-person counts of true/false positives and false
    negatives (:func:`macro_f1_from_counts`), which gives the same figure as scikit-learn's ``f1_score``
    on the resampled images.

    Args:
        y_true, y_pred: `(N,)` integer class ids in 0..17.
        persons: `(N,)` person ids (any hashable dtype: strings such as "000001", ints).
        resamples: number of resamples (default :data:`BOOTSTRAP_RESAMPLES` = 1000).
        seed: seed of ``numpy.random.default_rng`` (default :data:`BOOTSTRAP_SEED`).

    Returns:
        :class:`BootstrapInterval` with `estimate` = ``f1_score(y_true, y_pred)`` on all images.

    Raises:
        ValueError: empty or unequal inputs, class ids outside 0..17, resamples < 1.
    """
    true, (pred,), person = _check_inputs(y_true, [y_pred], persons)
    counts = _person_counts(true, pred, person)
    weights = person_bootstrap_weights(len(counts), resamples, seed)
    resampled = macro_f1_from_counts(np.tensordot(weights, counts, axes=(1, 0)))
    return _interval(_macro_f1(true, pred, NUM_CLASSES), resampled, len(counts), seed)


def paired_bootstrap_difference(
    y_true: ArrayLike,
    y_pred_a: ArrayLike,
    y_pred_b: ArrayLike,
    persons: ArrayLike,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> BootstrapInterval:
    """95% interval of macro F1(a) - macro F1(b) of two models scored on the same images, paired by person.

    Each resample draws persons with replacement (:func:`person_bootstrap_weights`) and scores BOTH models on
    the same drawn persons, so what the two share (hard and easy faces) cancels in the difference. When the
    interval contains 0 the validation set cannot tell the two apart (:meth:`BootstrapInterval.contains`).

    Args:
        y_true: `(N,)` true class ids; y_pred_a, y_pred_b: `(N,)` the two models' class ids on the same images
            in the same order; persons: `(N,)` person ids.
        resamples, seed: as in :func:`bootstrap_macro_f1`.

    Returns:
        :class:`BootstrapInterval` of the difference a - b; `estimate` = F1(a) - F1(b) on all images.

    Raises:
        ValueError: as :func:`bootstrap_macro_f1`.
    """
    true, (pred_a, pred_b), person = _check_inputs(y_true, [y_pred_a, y_pred_b], persons)
    counts_a = _person_counts(true, pred_a, person)
    counts_b = _person_counts(true, pred_b, person)
    weights = person_bootstrap_weights(len(counts_a), resamples, seed)
    diff = macro_f1_from_counts(np.tensordot(weights, counts_a, axes=(1, 0))) - macro_f1_from_counts(
        np.tensordot(weights, counts_b, axes=(1, 0))
    )
    estimate = _macro_f1(true, pred_a, NUM_CLASSES) - _macro_f1(true, pred_b, NUM_CLASSES)
    return _interval(estimate, diff, len(counts_a), seed)


def paired_round_differences(
    rounds: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, NDArray[np.float64]]:
    """Mean over rounds of macro F1(a) - macro F1(b), and its person bootstrap, stratified by round.

    A round is one validation set scored by both models (in a confirm: one fold and seed index, both configs
    trained on it). Each resample draws, in every round independently, that round's persons with replacement
    (:func:`person_bootstrap_weights`, seed ``seed + round index``), scores both models on the same drawn
    persons (paired, as :func:`paired_bootstrap_difference`) and averages the rounds' differences. It measures
    how much the validation persons move the mean difference, not how much re-training would (two runs of one
    config differ by their seed too).

    Args:
        rounds: per round ``(y_true, y_pred_a, y_pred_b, persons)``, each `(N_k,)`: true class ids, the two
            models' class ids on the same images in the same order, person ids.
        resamples, seed: as in :func:`bootstrap_macro_f1`.

    Returns:
        (estimate, resampled): the mean over rounds of the per-round difference on all images (float), and the
        `(resamples,)` float64 resampled means.

    Raises:
        ValueError: no rounds, or a round as :func:`bootstrap_macro_f1` refuses it.
    """
    if not rounds:
        raise ValueError("need at least one round")
    estimate, resampled = 0.0, np.zeros(resamples, dtype=np.float64)
    for k, (y_true, y_pred_a, y_pred_b, persons) in enumerate(rounds):
        true, (pred_a, pred_b), person = _check_inputs(y_true, [y_pred_a, y_pred_b], persons)
        counts_a = _person_counts(true, pred_a, person)
        counts_b = _person_counts(true, pred_b, person)
        weights = person_bootstrap_weights(len(counts_a), resamples, seed + k)
        resampled += macro_f1_from_counts(np.tensordot(weights, counts_a, axes=(1, 0))) - macro_f1_from_counts(
            np.tensordot(weights, counts_b, axes=(1, 0))
        )
        estimate += _macro_f1(true, pred_a, NUM_CLASSES) - _macro_f1(true, pred_b, NUM_CLASSES)
    return estimate / len(rounds), resampled / len(rounds)


def corrected_fold_interval(differences: ArrayLike, folds: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Interval of the mean of paired per-fold differences, corrected for folds that share training persons.

    The K fold scores of a K-fold cross-validation are not independent (any two training sets share
    (K-2)/(K-1) of the persons), so the plain t-interval ``t * s / sqrt(J)`` is too narrow. The corrected
    resampled t-test of Nadeau & Bengio ("Inference for the Generalization Error", Machine Learning 52, 2003;
    as used for k-fold CV by Bouckaert & Frank, PAKDD 2004) widens the variance of the mean to
    ``(1/J + n_test/n_train) * s**2``, with ``n_test/n_train = 1/(K-1)`` for K folds.

    Args:
        differences: `(J,)` float, score(a) - score(b) per fold (J = K folds, or fewer when some are missing;
            a fold scored with several seeds contributes its mean over the seeds).
        folds: K, the number of folds the persons were split into (>= 2).
        confidence: two-sided coverage, e.g. 0.95.

    Returns:
        (mean, low, high) of the difference.

    Raises:
        ValueError: fewer than 2 differences, a non-finite one, `folds` < 2 or `confidence` outside (0, 1).
    """
    from scipy import stats  # lazy: scipy

    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size < 2 or not np.isfinite(d).all():
        raise ValueError(f"need at least 2 finite per-fold differences, got {d.tolist()}")
    if folds < 2 or not 0.0 < confidence < 1.0:
        raise ValueError(f"folds must be >= 2 and confidence in (0, 1), got folds={folds}, confidence={confidence}")
    mean = float(d.mean())
    se = float(d.std(ddof=1) * np.sqrt(1.0 / d.size + 1.0 / (folds - 1)))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, d.size - 1)) * se
    return mean, mean - half, mean + half


# --- per-image validation predictions ------------------------------------------------------------------

VAL_PREDICTIONS_FILE = "val_predictions.csv"
"""File name of a run's best-epoch validation predictions (beside its checkpoints, and as a trial artifact)."""

_ID_COLUMNS = ("path", "person_id", "epoch", "true_class", "pred_class")


def prediction_columns(head: str) -> list[str]:
    """Probability columns of a predictions file: `p00`..`p17` (single head), or per head for `multi`:
    `p_mask0..2`, `p_gender0..1`, `p_age0..2` (the order of ``labels.TASK_SIZES``)."""
    if head == "multi":
        return [f"p_{task}{i}" for task, n in TASK_SIZES.items() for i in range(n)]
    return [f"p{c:02d}" for c in range(NUM_CLASSES)]


def write_val_predictions(
    path: str | Path,
    *,
    image_paths: Sequence[str | Path],
    person_ids: Sequence[str],
    epoch: int,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    probabilities: ArrayLike,
    head: str,
) -> Path:
    """Write one epoch's validation predictions as CSV, one row per val image (written to a temp file, renamed).

    Columns, in order: `path` (str, the image file), `person_id` (str, e.g. "000001"), `epoch` (int, 1-based),
    `true_class`, `pred_class` (ints 0..17, ``labels.encode_label`` scheme), then the probabilities
    (:func:`prediction_columns`, floats with 6 decimals): softmax of the 18 logits for the single head (each row
    sums to 1), softmax of each head's logits for the multi head (each head's columns sum to 1;
    `pred_class` = ``encode_label`` of the three argmaxes).

    Args:
        image_paths, person_ids: `(N,)` strings; y_true, y_pred: `(N,)` ints; epoch: the epoch scored.
        probabilities: `(N, 18)` floats (single) or `(N, 8)` floats (multi: mask 3, gender 2, age 3).
        head: "single" or "multi".

    Raises:
        ValueError: lengths or the probability width do not fit.
    """
    import pandas as pd  # lazy: pandas (0.4 s); `status` and `export` load this module

    columns = prediction_columns(head)
    probs = np.asarray(probabilities, dtype=np.float64)
    true, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    n = len(true)
    if probs.shape != (n, len(columns)) or not (len(image_paths) == len(person_ids) == len(pred) == n):
        raise ValueError(f"predictions of {n} images need {n} paths, persons, labels and ({n}, {len(columns)}) probs")
    frame = pd.DataFrame(
        {
            "path": [str(p) for p in image_paths],
            "person_id": [str(p) for p in person_ids],
            "epoch": int(epoch),
            "true_class": true,
            "pred_class": pred,
        }
    )
    frame = pd.concat([frame, pd.DataFrame(probs, columns=columns)], axis=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    return path


def read_val_predictions(path: str | Path | IO[bytes]) -> pd.DataFrame:
    """Read a file written by :func:`write_val_predictions` into a pandas DataFrame (person ids stay strings).

    `path` may also be an open binary file (an artifact store's reader).

    Raises:
        OSError: the file cannot be read; ValueError: it lacks the columns path, person_id, epoch, true_class,
            pred_class.
    """
    import pandas as pd  # lazy: pandas (0.4 s); `status` and `export` load this module

    frame = pd.read_csv(path, dtype={"path": str, "person_id": str})
    missing = [c for c in _ID_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a validation predictions file (missing columns {', '.join(missing)})")
    return frame
