"""Out-of-fold predictions of the configs a confirm study re-trained.

Each run of a confirm study (source trial n, fold f, seed r) writes its best epoch's predictions of the
persons of fold f (``val_predictions.csv``, :func:`maskcls_hpo.metrics.write_val_predictions`). Joined over
the folds they cover every train person once: the config's out-of-fold (OOF) predictions. With R > 1 seeds
the probabilities of a fold's R runs are averaged (the config's seed ensemble) before the class is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import TrialState

from maskcls_hpo.hpo.store import storage_folder
from maskcls_hpo.hpo.trial import load_val_predictions, run_key
from maskcls_hpo.labels import NUM_CLASSES, TASK_SIZES
from maskcls_hpo.metrics import prediction_columns

if TYPE_CHECKING:
    import pandas as pd

FOLD_COLUMN = "fold"


def class_probabilities(frame: pd.DataFrame) -> np.ndarray:
    """`(N, 18)` float64 class probabilities of a predictions frame.

    Single head: the columns ``p00..p17``. Multi head: the product of the three heads' probabilities at
    the class :func:`maskcls_hpo.labels.encode_label` gives, the heads taken as
    independent.

    Raises:
        ValueError: neither set of probability columns is there.
    """
    single = prediction_columns("single")
    if all(c in frame.columns for c in single):
        return frame[single].to_numpy(dtype=np.float64)
    multi = prediction_columns("multi")
    if not all(c in frame.columns for c in multi):
        raise ValueError("predictions without probability columns (p00..p17, or p_mask0.. for a multi head)")
    n_mask, n_gender = TASK_SIZES["mask"], TASK_SIZES["gender"]
    p = frame[multi].to_numpy(dtype=np.float64)
    mask, gender, age = p[:, :n_mask], p[:, n_mask : n_mask + n_gender], p[:, n_mask + n_gender :]
    joint = mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]
    return joint.reshape(len(frame), NUM_CLASSES)


def oof_predictions(
    confirm_study: optuna.Study,
    source_trial: int,
    storage_url: str | None = None,
    checkpoints: str | Path | None = None,
) -> tuple[pd.DataFrame | None, str]:
    """Out-of-fold predictions of source trial `source_trial` in `confirm_study`.

    Returns:
        (frame, "") with columns path, person_id, fold, true_class, pred_class and p00..p17 (class
        probabilities, the mean over the fold's seeds), one row per train image of the folds with a COMPLETE
        run; or (None, why) when a COMPLETE run's predictions cannot be read or no run is COMPLETE.
    """
    import pandas as pd  # lazy: pandas

    if checkpoints is None and storage_url is not None:
        checkpoints = storage_folder(storage_url, "checkpoints")
    by_fold: dict[int, list[pd.DataFrame]] = {}
    for t in confirm_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = run_key(t.params)
        if key is None or key[0] != source_trial:
            continue
        frame = load_val_predictions(confirm_study, t, checkpoints, storage_url)
        if frame is None:
            return None, f"no validation predictions of confirm run #{t.number} (val_predictions.csv)"
        by_fold.setdefault(key[1], []).append(frame.sort_values("path", ignore_index=True))
    if not by_fold:
        return None, f"no COMPLETE confirm run of trial {source_trial}"
    parts = []
    for fold, frames in sorted(by_fold.items()):
        probs = np.mean([class_probabilities(f) for f in frames], axis=0)
        first = frames[0]
        part = first[["path", "person_id", "true_class"]].copy()
        part[FOLD_COLUMN] = fold
        part["pred_class"] = probs.argmax(axis=1)
        part[prediction_columns("single")] = probs
        parts.append(part)
    return pd.concat(parts, ignore_index=True).sort_values("path", ignore_index=True), ""
