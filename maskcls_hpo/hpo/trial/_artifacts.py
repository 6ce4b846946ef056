"""Trial artifacts and the study note that optuna-dashboard shows.

Each finished trial gets four files, uploaded with Optuna's artifact API
(:func:`optuna.artifacts.upload_artifact`) into a :class:`optuna.artifacts.FileSystemArtifactStore` whose
folder comes from the storage URL (:func:`maskcls_hpo.hpo.store.artifact_dir`), so `dashboard` (same URL
resolution) finds them:

- ``confusion_matrix.png``: the best epoch's 18 x 18 validation confusion matrix (rows true, columns
  predicted; colour = share of the row, text = count), classes labelled like ``0 wear/M/<30``;
- ``per_class_f1.csv``: one row per class (18 rows): class, label, mask, gender, age, f1, support, predicted;
- ``config.yaml``: the trial's full training config (what `export` would write, without the metadata);
- ``val_predictions.csv``: the best epoch's prediction for every val image (path, person id, epoch, true and
  predicted class, class or per-head probabilities: :func:`maskcls_hpo.metrics.write_val_predictions`), a copy
  of the file the run wrote beside its checkpoints (``<checkpoints>/<study>/trial_<n>/val_predictions.csv``).
  :func:`load_val_predictions` reads it back from either place.

COMPLETE trials take the numbers from the :class:`~maskcls_hpo.train.TrainResult`; PRUNED trials from the
`metrics.json` their run left in the checkpoint folder (written after every epoch). Uploading never fails a
trial: an error is logged as a warning and the trial goes on.

The study note (markdown, optuna-dashboard's ``save_note``) names the sweep file, the dataset size and the
data fingerprint, so whoever opens the dashboard sees what the numbers are about.

Optuna keeps each artifact's record in a trial system attr named ``artifacts:<artifact id>`` (so
``trials_dataframe()`` has one ``system_attrs_artifacts:<uuid>`` column per artifact); the trial's user attr
``artifacts`` maps each file name to its artifact id (column ``user_attrs_artifacts``), so a notebook finds
``confusion_matrix.png`` by name (:func:`optuna.artifacts.download_artifact` with that id).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from numpy.typing import ArrayLike, NDArray
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.exceptions import ExperimentalWarning

from maskcls_hpo._util import check_path_name, path_under
from maskcls_hpo.config import save_config
from maskcls_hpo.errors import ExportError
from maskcls_hpo.hpo._optuna import storage_of, trial_id_of
from maskcls_hpo.hpo.attrs import OBJECTIVE_NAME, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.signals import deferred_interrupts
from maskcls_hpo.hpo.store import artifact_dir, mask_password
from maskcls_hpo.labels import GENDER_SHORT, MASK_NAMES, NUM_CLASSES, age_band_names, class_labels, decode_label
from maskcls_hpo.metrics import VAL_PREDICTIONS_FILE, read_val_predictions

if TYPE_CHECKING:
    import pandas as pd
    from optuna.artifacts import FileSystemArtifactStore

    from maskcls_hpo.train import TrainResult

log = logging.getLogger(__name__)

CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_CSV = "per_class_f1.csv"
CONFIG_YAML = "config.yaml"
VAL_PREDICTIONS_CSV = VAL_PREDICTIONS_FILE
ARTIFACT_FILES = (CONFUSION_PNG, PER_CLASS_CSV, CONFIG_YAML, VAL_PREDICTIONS_CSV)
MIMETYPES = {
    CONFUSION_PNG: "image/png",
    PER_CLASS_CSV: "text/csv",
    CONFIG_YAML: "application/yaml",  # RFC 9512
    VAL_PREDICTIONS_CSV: "text/csv",
}
CSV_COLUMNS = ("class", "label", "mask", "gender", "age", "f1", "support", "predicted")


def _parts(y: int, ages: Sequence[str]) -> tuple[str, str, str]:
    """(mask, gender, age band) names of class `y`."""
    mask, gender, band = decode_label(y)
    return MASK_NAMES[mask], GENDER_SHORT[gender], ages[band]


def open_artifact_store(
    storage_url: str, root: str | Path | None = None, create: bool = True
) -> tuple[FileSystemArtifactStore, Path]:
    """Optuna's ``FileSystemArtifactStore`` on :func:`maskcls_hpo.hpo.store.artifact_dir` of `storage_url`.

    Args:
        create: make the folder when it is missing (the store itself never does).

    Returns:
        (store, folder Path).
    """

    folder = artifact_dir(storage_url, root)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=folder), folder


def _check_confusion(confusion: ArrayLike) -> NDArray[np.int64]:
    matrix = np.asarray(confusion, dtype=np.int64)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"confusion matrix must be {NUM_CLASSES}x{NUM_CLASSES}, got shape {matrix.shape}")
    return matrix


def write_confusion_png(
    confusion: ArrayLike, path: str | Path, age_bins: Sequence[int] = (30, 60), title: str = "", dpi: int = 100
) -> Path:
    """Draw an 18 x 18 confusion matrix as a PNG (matplotlib, no pyplot state; safe in any thread).

    Args:
        confusion: (18, 18) ints, rows = true class, columns = predicted class (scikit-learn's layout).
        title: printed above the matrix (e.g. the trial number and its macro F1).

    Colour is the share of the true class (row-normalised, 0..1) so rare classes stay visible; each
    non-zero cell shows its count.

    Raises:
        ValueError: the matrix is not 18 x 18.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib (0.7 s)

    matrix = _check_confusion(confusion)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    labels = class_labels(age_bins)
    fig = Figure(figsize=(8.6, 7.6), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, j in zip(*np.nonzero(matrix), strict=True):
        ax.text(
            j,
            i,
            str(matrix[i, j]),
            ha="center",
            va="center",
            fontsize=6.5,
            color="white" if share[i, j] > 0.6 else "black",
        )
    ax.set_xticks(range(NUM_CLASSES), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), labels, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def write_per_class_f1_csv(
    per_class_f1: Sequence[float | None],
    path: str | Path,
    age_bins: Sequence[int] = (30, 60),
    confusion: ArrayLike | None = None,
) -> Path:
    """Write per-class F1 as CSV, one row per class (18 rows after the header).

    Columns: class (0..17), label (``0 wear/M/<30``), mask, gender, age (the three parts' names), f1
    (0..1, empty when not finite), support (true images of the class, from `confusion` rows) and predicted
    (images predicted as the class, from `confusion` columns); support/predicted are empty without
    `confusion`.

    Raises:
        ValueError: not 18 values, or a confusion matrix that is not 18 x 18.
    """
    scores = [float(v) if v is not None else float("nan") for v in per_class_f1]
    if len(scores) != NUM_CLASSES:
        raise ValueError(f"per-class F1 must have {NUM_CLASSES} values, got {len(scores)}")
    matrix = _check_confusion(confusion) if confusion is not None else None
    labels = class_labels(age_bins)
    ages = age_band_names(age_bins)
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for y in range(NUM_CLASSES):
            f1 = scores[y]
            writer.writerow(
                [
                    y,
                    labels[y],
                    *_parts(y, ages),
                    f"{f1:.6f}" if np.isfinite(f1) else "",
                    int(matrix[y].sum()) if matrix is not None else "",
                    int(matrix[:, y].sum()) if matrix is not None else "",
                ]
            )
    return path


def write_config_yaml(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a trial's training config (a plain mapping, `TrainConfig.to_dict()`) as YAML."""

    return save_config(dict(config), path)


def upload_trial_artifacts(
    trial: optuna.Trial | optuna.trial.FrozenTrial,
    artifact_store: FileSystemArtifactStore,
    *,
    config: Mapping[str, Any] | None,
    confusion: ArrayLike | None = None,
    per_class_f1: Sequence[float | None] | None = None,
    title: str = "",
    storage: optuna.storages.BaseStorage | None = None,
    val_predictions: str | Path | None = None,
) -> list[str]:
    """Write the trial's artifacts into a temporary folder and upload each with Optuna's artifact API.

    Whatever is available is uploaded: the PNG needs an 18 x 18 `confusion`, the CSV 18 `per_class_f1`
    values, the YAML a `config`, ``val_predictions.csv`` an existing `val_predictions` file (the run's
    `val_predictions.csv`, uploaded under that name). `storage` is needed only for a FrozenTrial.

    Afterwards the trial's user attr ``artifacts`` is ``{file name: artifact id}`` of what was uploaded.

    Returns:
        The uploaded file names (a subset of :data:`ARTIFACT_FILES`, in that order).

    Raises:
        Whatever writing or uploading raises (callers that must not fail use :class:`TrialArtifactUploader`).
    """

    age_bins = tuple((config or {}).get("age_bins") or (30, 60))
    has_confusion = confusion is not None and np.asarray(confusion).size == NUM_CLASSES**2
    f1_values = per_class_f1 if per_class_f1 is not None and len(per_class_f1) == NUM_CLASSES else None
    uploaded: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="maskcls_artifacts_") as tmp:
        files: list[Path] = []
        if confusion is not None and has_confusion:
            files.append(write_confusion_png(confusion, Path(tmp) / CONFUSION_PNG, age_bins, title))
        if f1_values is not None:
            files.append(
                write_per_class_f1_csv(
                    f1_values, Path(tmp) / PER_CLASS_CSV, age_bins, confusion if has_confusion else None
                )
            )
        if config:
            files.append(write_config_yaml(config, Path(tmp) / CONFIG_YAML))
        if val_predictions is not None and Path(val_predictions).is_file():
            files.append(Path(shutil.copyfile(val_predictions, Path(tmp) / VAL_PREDICTIONS_CSV)))
        for file in files:
            uploaded[file.name] = upload_artifact(
                artifact_store=artifact_store,
                file_path=str(file),
                study_or_trial=trial,
                storage=storage,
                mimetype=MIMETYPES[file.name],
            )
    if uploaded:
        if isinstance(trial, optuna.Trial):
            trial.set_user_attr(TrialAttrs.ARTIFACTS, uploaded)
        elif storage is not None and trial.state == optuna.trial.TrialState.RUNNING:  # a finished one is frozen
            storage.set_trial_user_attr(trial_id_of(trial), TrialAttrs.ARTIFACTS, uploaded)
    return list(uploaded)


class TrialArtifactUploader:
    """Uploads each finished trial's artifacts; never lets an upload error fail a trial.

    Use it as `make_objective(..., after_trial=uploader)` (COMPLETE trials, numbers from the TrainResult)
    and wrap the objective with :meth:`wrap` so PRUNED trials get artifacts from the `metrics.json` of
    their checkpoint folder.

    Args:
        storage_url: the resolved storage URL; the artifact folder is ``artifact_dir(storage_url, root)``.
    """

    def __init__(self, storage_url: str, root: str | Path | None = None) -> None:
        self.folder = artifact_dir(storage_url, root)
        self._store: FileSystemArtifactStore | None = None

    @property
    def store(self) -> FileSystemArtifactStore:
        """The ``FileSystemArtifactStore`` (its folder is made on first use)."""
        if self._store is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._store = FileSystemArtifactStore(base_path=self.folder)
        return self._store

    def upload(
        self,
        trial: optuna.Trial,
        confusion: ArrayLike | None,
        per_class_f1: Sequence[float | None] | None,
        best_epoch: int | None,
        best_f1: float | None,
        val_predictions: str | Path | None = None,
    ) -> list[str]:
        """Upload one trial's files; returns the file names, or [] after logging a warning on any error.

        A stop signal during the upload is deferred (the trial is stored first, then the worker stops).
        """
        try:
            config = trial.user_attrs.get(TrialAttrs.CONFIG)
            title = f"trial {trial.number}"
            if best_epoch:
                title += f", epoch {int(best_epoch)}"
            if best_f1 is not None and np.isfinite(float(best_f1)):
                title += f": val macro F1 {float(best_f1):.4f}"
            with deferred_interrupts():
                return upload_trial_artifacts(
                    trial,
                    self.store,
                    config=config,
                    confusion=confusion,
                    per_class_f1=per_class_f1,
                    title=title,
                    val_predictions=val_predictions,
                )
        except Exception as err:  # noqa: BLE001 - an artifact must never fail a trial
            log.warning(
                "trial %d: artifacts not uploaded to %s: %s",
                trial.number,
                self.folder,
                mask_password(f"{type(err).__name__}: {err}"),
            )
            return []

    def __call__(self, trial: optuna.Trial, result: TrainResult) -> None:
        """`after_trial` hook: `result` is the trial's :class:`~maskcls_hpo.train.TrainResult`."""
        self.upload(
            trial,
            result.confusion,
            result.per_class_f1,
            result.best_epoch,
            result.best_f1,
            getattr(result, "val_predictions", None),
        )

    def upload_from_metrics(self, trial: optuna.Trial, metrics_json: Path) -> list[str]:
        """Upload from a run's `metrics.json` (best_confusion, best_per_class_f1) and the `val_predictions.csv`
        beside it; [] when both are missing."""
        try:
            metrics = json.loads(Path(metrics_json).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
        return self.upload(
            trial,
            metrics.get("best_confusion"),
            metrics.get("best_per_class_f1"),
            metrics.get("best_epoch"),
            metrics.get("best_f1"),
            Path(metrics_json).parent / VAL_PREDICTIONS_CSV,
        )

    def wrap(
        self, objective: Callable[[optuna.Trial], float], checkpoint_root: Path
    ) -> Callable[[optuna.Trial], float]:
        """The same objective, but a pruned trial first uploads what its checkpoint folder holds."""

        def objective_with_artifacts(trial: optuna.Trial) -> float:
            try:
                return objective(trial)
            except optuna.TrialPruned:
                self.upload_from_metrics(trial, checkpoint_dir(checkpoint_root, trial.number) / "metrics.json")
                raise

        return objective_with_artifacts


def load_val_predictions(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    checkpoints: str | Path | None = None,
    storage_url: str | None = None,
    artifact_root: str | Path | None = None,
) -> pd.DataFrame | None:
    """A trial's best-epoch validation predictions as a DataFrame (:func:`maskcls_hpo.metrics.read_val_predictions`),
    or None when neither copy can be read.

    Looked for first beside the trial's checkpoints, ``<checkpoints>/<study>/trial_<n>/val_predictions.csv``
    (when `checkpoints` is given), then as the trial's ``val_predictions.csv`` artifact in the artifact store
    of `storage_url` (:func:`maskcls_hpo.hpo.store.artifact_dir`; when `storage_url` is given).
    """

    candidates: list[Callable[[], pd.DataFrame | None]] = []
    if checkpoints is not None:
        name = check_path_name(study.study_name, "--study", ExportError)
        local = checkpoint_dir(path_under(checkpoints, name, error=ExportError), trial.number)
        local = local / VAL_PREDICTIONS_CSV
        candidates.append(lambda: read_val_predictions(local) if local.is_file() else None)
    if storage_url is not None:

        def from_artifact() -> pd.DataFrame | None:

            folder = artifact_dir(storage_url, artifact_root)
            if not folder.is_dir():
                return None
            metas = [
                m for m in get_all_artifact_meta(trial, storage=storage_of(study)) if m.filename == VAL_PREDICTIONS_CSV
            ]
            if not metas:
                return None
            store, _ = open_artifact_store(storage_url, artifact_root, create=False)
            with store.open_reader(metas[-1].artifact_id) as fh:
                return read_val_predictions(fh)

        candidates.append(from_artifact)
    for read in candidates:
        try:
            frame = read()
        except (OSError, ValueError) as err:
            log.warning("trial %d: validation predictions not read: %s", trial.number, mask_password(err))
            continue
        if frame is not None:
            return frame
    return None


def _md_code(text: object) -> str:
    """Inline markdown code span (backticks in the text are dropped)."""
    return "`" + mask_password(str(text)).replace("`", "") + "`"


def study_note(
    study_name: str, sweep_file: str | Path, n_trials: int | None = None, study_attrs: Mapping[str, Any] | None = None
) -> str:
    """The study's markdown note: sweep file, trial budget, dataset size and data fingerprint.

    `study_attrs` is what `launch` stores on the study: ``{"data_fingerprint": str, "dataset": {"data_dir",
    "persons", "images"}}``; missing entries are left out.
    """
    attrs = dict(study_attrs or {})
    lines = [
        f"## Study {_md_code(study_name)}",
        "",
        f"- sweep file: {_md_code(Path(sweep_file).name)} ({_md_code(sweep_file)})",
    ]
    if n_trials:
        lines.append(f"- trial budget: {int(n_trials)} finished trials (COMPLETE + PRUNED)")
    dataset = attrs.get("dataset") or {}
    if dataset:
        size = ", ".join(f"{int(dataset[k]):,} {k}" for k in ("persons", "images") if k in dataset)
        where = f" in {_md_code(dataset['data_dir'])}" if dataset.get("data_dir") else ""
        lines.append(f"- dataset: {size}{where}")
    if attrs.get("data_fingerprint"):
        lines.append(f"- data fingerprint: {_md_code(attrs['data_fingerprint'])}")
    lines += [
        "",
        "Each finished trial carries artifacts: "
        + ", ".join(_md_code(f) for f in ARTIFACT_FILES)
        + ". The objective is the best epoch's validation macro F1 over the 18 classes; the user attrs "
        + f"{_md_code(TrialAttrs.VAL_F1_CI_LOW)} and {_md_code(TrialAttrs.VAL_F1_CI_HIGH)} give its 95% interval "
        + "from a bootstrap over the validation persons (1000 resamples).",
    ]
    return "\n".join(lines) + "\n"


def save_study_note(study: optuna.Study, body: str) -> bool:
    """Store `body` as the study's note (optuna-dashboard) unless it is already the note.

    Also names the objective :data:`OBJECTIVE_NAME` (``Study.set_metric_names``) when the study has no name
    for it yet, so the dashboard's charts say "val_macro_f1" instead of "Objective 0" and
    ``trials_dataframe()`` has the column ``value_val_macro_f1``; a study that already names its objective
    (e.g. "val macro F1", made before the name changed) keeps its name.

    Returns:
        True when a new note version was written. Errors are logged as a warning (False), never raised.
    """
    try:
        from optuna_dashboard import get_note, save_note  # lazy: optuna-dashboard (3 s)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            if study.metric_names is None:
                study.set_metric_names([OBJECTIVE_NAME])
        if get_note(study) == body:
            return False
        save_note(study, body)
        return True
    except Exception as err:  # noqa: BLE001 - a note must never stop a launch
        log.warning("study '%s': note not saved: %s", study.study_name, mask_password(f"{type(err).__name__}: {err}"))
        return False
