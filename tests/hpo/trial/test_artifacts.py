"""Trial artifacts (confusion-matrix PNG, per-class F1 CSV, config YAML, val predictions CSV) and the study note."""

from __future__ import annotations

import csv
import io
import json
import logging
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from PIL import Image

from maskcls_hpo.hpo.attrs import OBJECTIVE_NAME, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.trial import (
    ARTIFACT_FILES,
    TrialArtifactUploader,
    open_artifact_store,
    save_study_note,
    study_note,
    upload_trial_artifacts,
    write_confusion_png,
    write_per_class_f1_csv,
)
from maskcls_hpo.labels import class_labels
from maskcls_hpo.metrics import evaluate_predictions, read_val_predictions, write_val_predictions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hand_confusion() -> np.ndarray:
    """Class y has y + 1 right predictions; one image of class 0 is predicted as class 5."""
    m = np.diag(np.arange(1, 19))
    m[0, 5] = 1
    return m


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_class_labels():
    labels = class_labels()
    assert len(labels) == 18
    assert labels[0] == "0 wear/M/<30"
    assert labels[4] == "4 wear/F/30-59"
    assert labels[8] == "8 incorrect/M/>=60"
    assert labels[17] == "17 not wear/F/>=60"
    assert class_labels((25, 55))[1] == "1 wear/M/25-54"


def test_per_class_csv_has_18_rows_with_support_and_predictions(tmp_path):
    f1 = [i / 17 for i in range(18)]
    path = write_per_class_f1_csv(f1, tmp_path / "f1.csv", confusion=hand_confusion())
    rows = read_csv(path.read_text())
    assert len(rows) == 18
    assert list(rows[0]) == ["class", "label", "mask", "gender", "age", "f1", "support", "predicted"]
    assert rows[0] == {
        "class": "0",
        "label": "0 wear/M/<30",
        "mask": "wear",
        "gender": "M",
        "age": "<30",
        "f1": "0.000000",
        "support": "2",
        "predicted": "1",
    }  # 1 right + 1 predicted as 5
    assert rows[5]["support"] == "6" and rows[5]["predicted"] == "7"
    assert rows[17]["label"] == "17 not wear/F/>=60" and rows[17]["f1"] == "1.000000"
    with pytest.raises(ValueError, match="18 values"):
        write_per_class_f1_csv(f1[:17], tmp_path / "bad.csv")


def test_confusion_png(tmp_path):
    path = write_confusion_png(hand_confusion(), tmp_path / "cm.png", title="trial 3")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        assert im.size == (860, 760)  # 8.6 x 7.6 inches at 100 dpi
    with pytest.raises(ValueError, match="18x18"):
        write_confusion_png(np.eye(17), tmp_path / "bad.png")


@pytest.fixture
def sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'db' / 'study.db'}"
    (tmp_path / "db").mkdir()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="art", storage=url, direction="maximize"), url


def write_predictions(path):
    """A 2-image val_predictions.csv (persons 000001 and 000002, classes 0 and 1, both right)."""
    return write_val_predictions(
        path,
        image_paths=["/d/a.jpg", "/d/b.jpg"],
        person_ids=["000001", "000002"],
        epoch=2,
        y_true=[0, 1],
        y_pred=[0, 1],
        probabilities=np.eye(18)[[0, 1]],
        head="single",
    )


def fake_result(f1: list[float], val_predictions=None):
    return SimpleNamespace(
        confusion=hand_confusion().tolist(),
        per_class_f1=f1,
        best_epoch=2,
        best_f1=float(np.mean(f1)),
        val_predictions=val_predictions,
    )


def read_artifact(store, meta) -> bytes:
    with store.open_reader(meta.artifact_id) as fh:
        return fh.read()


def test_uploader_lists_png_csv_yaml_on_the_trial(sqlite_study, tmp_path):
    study, url = sqlite_study
    config = {"model": "test_efficientnet", "lr": 0.003, "age_bins": [30, 60], "image_size": [48, 36]}
    trial = study.ask()
    trial.set_user_attr(TrialAttrs.CONFIG, config)
    uploader = TrialArtifactUploader(url)
    f1 = [0.5] * 18
    uploader(trial, fake_result(f1, write_predictions(tmp_path / "val_predictions.csv")))
    study.tell(trial, 0.5)

    frozen = study.trials[0]
    metas = {m.filename: m for m in get_all_artifact_meta(frozen, storage=study._storage)}
    assert sorted(metas) == sorted(ARTIFACT_FILES)
    assert metas["confusion_matrix.png"].mimetype == "image/png"
    assert metas["per_class_f1.csv"].mimetype == "text/csv"
    assert metas["config.yaml"].mimetype == "application/yaml"
    assert metas["val_predictions.csv"].mimetype == "text/csv"
    store, folder = open_artifact_store(url, create=False)
    assert folder == uploader.folder == (study_dir := folder.parent) / "artifacts" and study_dir.name == "db"
    rows = read_csv(read_artifact(store, metas["per_class_f1.csv"]).decode())
    assert len(rows) == 18 and [r["f1"] for r in rows] == ["0.500000"] * 18
    assert yaml.safe_load(read_artifact(store, metas["config.yaml"])) == config
    assert read_artifact(store, metas["confusion_matrix.png"])[:8] == PNG_MAGIC
    frame = read_val_predictions(io.BytesIO(read_artifact(store, metas["val_predictions.csv"])))
    assert frame["person_id"].tolist() == ["000001", "000002"] and frame["pred_class"].tolist() == [0, 1]


def test_an_upload_error_never_fails_the_trial(sqlite_study, tmp_path, caplog):
    study, _ = sqlite_study
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the artifact folder should be")
    uploader = TrialArtifactUploader("sqlite:///unused.db", root=blocker)
    trial = study.ask()
    trial.set_user_attr(TrialAttrs.CONFIG, {"model": "m"})
    with caplog.at_level(logging.WARNING, logger="maskcls_hpo.hpo.trial._artifacts"):
        assert uploader.upload(trial, hand_confusion(), [0.1] * 18, 1, 0.1) == []
    assert f"trial {trial.number}: artifacts not uploaded to {blocker}" in caplog.text
    study.tell(trial, 0.1)
    assert study.trials[0].state == TrialState.COMPLETE


def test_pruned_trial_uploads_from_its_metrics_json(sqlite_study, tmp_path):
    study, url = sqlite_study
    root = tmp_path / "ckpt"
    uploader = TrialArtifactUploader(url)

    def objective(trial):
        trial.set_user_attr(TrialAttrs.CONFIG, {"model": "m", "age_bins": [30, 60]})
        folder = checkpoint_dir(root, trial.number)
        folder.mkdir(parents=True)
        if trial.number == 0:  # the first run left metrics.json after epoch 1; the second left nothing
            (folder / "metrics.json").write_text(
                json.dumps(
                    {
                        "best_epoch": 1,
                        "best_f1": 0.2,
                        "best_confusion": hand_confusion().tolist(),
                        "best_per_class_f1": [0.2] * 18,
                    }
                )
            )
            write_predictions(folder / "val_predictions.csv")
        raise optuna.TrialPruned("pruned at epoch 1")

    wrapped = uploader.wrap(objective, root)
    study.optimize(wrapped, n_trials=2)
    first, second = study.trials
    assert first.state == second.state == TrialState.PRUNED
    assert sorted(m.filename for m in get_all_artifact_meta(first, storage=study._storage)) == sorted(ARTIFACT_FILES)
    assert [m.filename for m in get_all_artifact_meta(second, storage=study._storage)] == ["config.yaml"]


def test_study_note_and_objective_name(sqlite_study):
    from optuna_dashboard import get_note

    study, _ = sqlite_study
    attrs = {"data_fingerprint": "ab12cd", "dataset": {"data_dir": "/data/demo", "persons": 300, "images": 2100}}
    body = study_note("smoke", "sweeps/smoke.py", 8, attrs)
    assert "- sweep file: `smoke.py` (`sweeps/smoke.py`)" in body
    assert "- dataset: 300 persons, 2,100 images in `/data/demo`" in body
    assert "- data fingerprint: `ab12cd`" in body
    assert "- trial budget: 8 finished trials" in body
    assert save_study_note(study, body) is True
    assert save_study_note(study, body) is False  # unchanged: no new note version
    assert get_note(study) == body
    assert optuna.load_study(study_name="art", storage=study._storage).metric_names == [OBJECTIVE_NAME]


def test_upload_skips_what_is_missing(sqlite_study):
    study, url = sqlite_study
    store, _ = open_artifact_store(url)
    trial = study.ask()
    names = upload_trial_artifacts(trial, store, config={"model": "m"}, confusion=[], per_class_f1=[])
    assert names == ["config.yaml"]


# --- the real smoke sweep (session fixture `swept_study`) -----------------------------------------------


def test_finished_trials_of_a_smoke_sweep_carry_their_artifacts(swept_study):
    study = optuna.load_study(study_name=swept_study.study, storage=swept_study.url)
    store, folder = open_artifact_store(swept_study.url, create=False)
    assert folder == swept_study.db.parent / "artifacts"
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    for t in finished:
        metas = {m.filename: m for m in get_all_artifact_meta(t, storage=study._storage)}
        assert sorted(metas) == sorted(ARTIFACT_FILES), (t.number, t.state)
        rows = read_csv(read_artifact(store, metas["per_class_f1.csv"]).decode())
        assert len(rows) == 18
        assert yaml.safe_load(read_artifact(store, metas["config.yaml"])) == t.user_attrs[TrialAttrs.CONFIG]
        if t.state != TrialState.COMPLETE:
            continue
        f1 = np.array([float(r["f1"]) for r in rows])
        support = np.array([int(r["support"]) for r in rows])
        predicted = np.array([int(r["predicted"]) for r in rows])
        # Macro F1 is the mean of the 18 per-class F1 (classes without support count as 0).
        assert f1.mean() == pytest.approx(t.value, abs=1e-6)
        # 6 val persons x 7 images; per class, right = F1 * (support + predicted) / 2; accuracy = right / all.
        assert support.sum() == predicted.sum() == 42
        right = np.rint(f1 * (support + predicted) / 2).sum()
        assert right / 42 == pytest.approx(t.user_attrs[TrialAttrs.ACCURACY], abs=1e-9)
        # the best epoch's predictions of every val image, and the value's person-bootstrap interval around it
        frame = read_val_predictions(io.BytesIO(read_artifact(store, metas["val_predictions.csv"])))
        assert len(frame) == 42 and frame["person_id"].nunique() == 6
        assert evaluate_predictions(frame["true_class"], frame["pred_class"])["f1"] == pytest.approx(t.value)
        a = t.user_attrs
        assert a[TrialAttrs.VAL_F1_CI_LOW] <= t.value <= a[TrialAttrs.VAL_F1_CI_HIGH]
        assert a[TrialAttrs.BOOTSTRAP_RESAMPLES] == 1000 and a[TrialAttrs.VAL_PERSONS] == 6


# --- Optuna's names: the objective `val_macro_f1`, artifacts by file name ----------------------------------


def test_smoke_sweep_names_its_objective_and_artifacts_for_trials_dataframe(swept_study):
    study = optuna.load_study(study_name=swept_study.study, storage=swept_study.url)
    assert study.metric_names == ["val_macro_f1"]
    frame = study.trials_dataframe()
    assert "value_val_macro_f1" in frame.columns and "value_val macro F1" not in frame.columns
    assert sorted(frame["value_val_macro_f1"].dropna()) == sorted(t.value for t in study.trials if t.value is not None)
    # Optuna's own artifact columns are named by id; the user attr `artifacts` names them by file
    by_file = frame["user_attrs_artifacts"].dropna().tolist()
    assert len(by_file) == 3 and all(sorted(d) == sorted(ARTIFACT_FILES) for d in by_file)
    t = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    ids = {m.artifact_id: m.filename for m in get_all_artifact_meta(t, storage=study._storage)}
    assert {ids[i]: i for i in ids} == t.user_attrs[TrialAttrs.ARTIFACTS]


def test_an_existing_study_keeps_its_objective_name(sqlite_study):
    study, _ = sqlite_study
    study.set_metric_names(["val macro F1"])  # as studies made before the rename were named
    assert save_study_note(study, "note") is True
    assert optuna.load_study(study_name=study.study_name, storage=study._storage).metric_names == ["val macro F1"]
