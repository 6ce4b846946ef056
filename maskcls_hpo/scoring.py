"""`score`: a submission against an answers file, matched by ImageID (imports no torch or timm).

Both files are ``ImageID,ans`` CSVs (the demo datasets carry the true classes in `eval/answers.csv`);
accuracy and macro F1 over the 18 classes come from scikit-learn via
:func:`maskcls_hpo.metrics.evaluate_predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from maskcls_hpo.errors import PredictError
from maskcls_hpo.labels import NUM_CLASSES
from maskcls_hpo.metrics import PredictionScores, evaluate_predictions

__all__ = ["score", "SubmissionScores"]


class SubmissionScores(PredictionScores):
    """What :func:`score` returns: :class:`~maskcls_hpo.metrics.PredictionScores` plus the two files' paths."""

    submission: str
    answers: str


def _read_labels(path: Path, role: str) -> pd.DataFrame:
    if not path.is_file():
        raise PredictError(f"{path}: {role} file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - any unreadable csv is the same user error
        raise PredictError(f"{path}: cannot read the csv ({type(err).__name__}: {err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("ImageID", "ans") if c not in table.columns]
    if missing:
        raise PredictError(f"{path}: missing column(s) {', '.join(missing)}; a {role} needs the columns ImageID, ans")
    ids = table["ImageID"].str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise PredictError(f"{path}: ImageID {dup.iloc[0]!r} appears more than once ({len(dup)} duplicate row(s))")
    ans = pd.to_numeric(table["ans"].str.strip(), errors="coerce")
    bad = ~(ans.notna() & (ans == ans.round()) & (ans >= 0) & (ans < NUM_CLASSES))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PredictError(
            f"{path} line {i + 2}: ans {table['ans'].iloc[i]!r} for ImageID {ids.iloc[i]!r} is not a class id "
            f"0..{NUM_CLASSES - 1} ({int(bad.sum())} such row(s))"
        )
    return pd.DataFrame({"ImageID": ids, "ans": ans.astype(np.int64)})


def _some(ids: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:n])
    return shown + (", ..." if len(ids) > n else "")


def score(submission: str | Path, answers: str | Path) -> SubmissionScores:
    """Score a submission against the true classes, matched by ImageID (row order does not matter).

    Args:
        submission: CSV with columns ImageID, ans (as :func:`predict` writes).
        answers: CSV with columns ImageID, ans (the true class ids; `eval/answers.csv` of a demo dataset).

    Returns:
        `metrics.evaluate_predictions` (f1 = macro F1 over the labels 0..17 with `zero_division=0`,
        accuracy, task_f1, per_class_f1, confusion, n) plus `submission` and `answers` (paths as str).

    Raises:
        PredictError: a missing or unreadable file, missing columns, duplicate ImageIDs, an `ans` that is
            not an integer 0..17, or ImageIDs of the answers missing from the submission / submission rows
            not in the answers (counts and examples named).
    """
    submission, answers = Path(submission), Path(answers)
    sub, truth = _read_labels(submission, "submission"), _read_labels(answers, "answers")
    sub_ids, truth_ids = set(sub["ImageID"]), set(truth["ImageID"])
    missing = [i for i in truth["ImageID"] if i not in sub_ids]
    extra = [i for i in sub["ImageID"] if i not in truth_ids]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ImageID(s) of {answers} missing ({_some(missing)})")
        if extra:
            parts.append(f"{len(extra)} row(s) not in {answers} ({_some(extra)})")
        raise PredictError(
            f"{submission}: rows do not match the answers: "
            + "; ".join(parts)
            + "; predict the same eval set the answers belong to"
        )
    merged = truth.merge(sub, on="ImageID", suffixes=("_true", "_pred"), validate="one_to_one")
    result = evaluate_predictions(merged["ans_true"].to_numpy(), merged["ans_pred"].to_numpy())
    return SubmissionScores(**result, submission=str(submission), answers=str(answers))
