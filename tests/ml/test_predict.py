"""predict.py and the `train --full-data` / `predict` / `score` verbs: from the best trial to a submission.

One real training run (the exported best trial, retrained on every person, 3 epochs of test_efficientnet at
48x36 on a 40-person demo set); every other test uses checkpoints of untrained models built here, which
exercise the same loading, preprocessing and ensembling code in no time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from maskcls_hpo.cache import decode_image
from maskcls_hpo.cli import app
from maskcls_hpo.config import TrainConfig, load_config
from maskcls_hpo.data import DataError
from maskcls_hpo.demo import write_demo_dataset
from maskcls_hpo.hpo.attrs import TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.select import export_trials, study_checkpoints
from maskcls_hpo.models import build_model
from maskcls_hpo.predict import (
    PredictError,
    joint_from_tasks,
    load_model,
    predict,
    score,
    tasks_from_joint,
    write_submission,
)
from maskcls_hpo.train import CHECKPOINT_FORMAT, load_checkpoint
from maskcls_hpo.transforms import normalize

SIZE = [48, 36]  # [height, width] of the models; the demo images are 36x48 (W x H)


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, persons=40, size=(36, 48), seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def fake_checkpoint(path: Path, head: str, seed: int, size=SIZE, model: str = "test_resnet") -> Path:
    """A checkpoint in train.py's format holding an untrained model (random weights drawn with `seed`)."""
    config = TrainConfig(model=model, head=head, image_size=tuple(size))
    torch.manual_seed(seed)
    net = build_model(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": 1,
            "model": net.state_dict(),
            "config": config.to_dict(),
            "preprocessing": {"image_size": list(size), "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fakes")
    return {
        "single_a": fake_checkpoint(root / "single_a.pt", "single", 0),
        "single_b": fake_checkpoint(root / "single_b.pt", "single", 1),
        "multi_a": fake_checkpoint(root / "multi_a.pt", "multi", 2),
        "multi_b": fake_checkpoint(root / "multi_b.pt", "multi", 3, size=[40, 30]),  # other input size
    }


def best_config(demo: Path, cache_dir: Path) -> TrainConfig:
    return TrainConfig(
        model="test_efficientnet",
        head="multi",
        image_size=tuple(SIZE),
        epochs=8,
        batch_size=16,
        lr=1e-2,
        dropout=0.1,
        scheduler="cosine",
        augment=False,
        val_ratio=0.25,
        seed=7,
        device="cpu",
        data_dir=str(demo),
        cache_dir=str(cache_dir),
    )


@pytest.fixture(scope="module")
def pipeline(demo, cache_dir, tmp_path_factory):
    """A study (2 COMPLETE trials, 1 PRUNED with a higher value) -> export -> `train --full-data --epochs 3`."""
    work = tmp_path_factory.mktemp("pipeline")
    url = f"sqlite:///{work / 'study.db'}"
    study = optuna.create_study(study_name="sub", storage=url, direction="maximize")
    good = best_config(demo, cache_dir)
    worse = good.model_copy(update={"lr": 1e-3, "head": "single"})
    for value, state, config in ((0.7, "COMPLETE", good), (0.5, "COMPLETE", worse), (0.9, "PRUNED", worse)):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                value=value if state == "COMPLETE" else None,
                intermediate_values={1: value},
                user_attrs={TrialAttrs.CONFIG: config.to_dict()},
            )
        )
    exported = export_trials(study, work / "best.yaml")[0]
    run = work / "runs" / "best"
    result = cli("train", "--config", exported, "--full-data", "--epochs", 3, "--out", run)
    assert result.exit_code == 0, result.output
    return {"study": study, "url": url, "work": work, "exported": exported, "run": run}


# --- export -> train -> predict -----------------------------------------------------------------------


def test_export_train_predict_scores_above_chance(pipeline, demo, cache_dir):
    exported = yaml.safe_load(pipeline["exported"].read_text())
    assert exported["trial"] == 0 and exported["value"] == 0.7  # the best COMPLETE trial, not the pruned 0.9
    run = pipeline["run"]
    used = load_config(run / "config.yaml")  # train saved the config it used: the export + the two options
    assert used.full_data is True and used.epochs == 3 and used.head == "multi" and used.seed == 7
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt["config"]["full_data"] is True and ckpt["epoch"] == 3  # no validation: the last epoch is kept
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == 40 * 7 and metrics["val_images"] == 0  # all persons

    out = pipeline["work"] / "submission.csv"
    result = cli(
        "predict",
        "--checkpoint",
        run / "model.pt",
        "--data-dir",
        demo,
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--device",
        "cpu",
        "-q",
    )
    assert result.exit_code == 0, result.output
    info = pd.read_csv(demo / "eval" / "info.csv", dtype=str)
    sub = pd.read_csv(out, dtype={"ImageID": str})
    assert list(sub.columns) == ["ImageID", "ans"]
    assert sub["ImageID"].tolist() == info["ImageID"].tolist()  # one row per eval image, in info.csv order
    assert sub["ans"].dtype.kind == "i" and sub["ans"].between(0, 17).all()

    answers = pd.read_csv(demo / "eval" / "answers.csv", dtype={"ImageID": str}).set_index("ImageID")
    truth = answers.loc[sub["ImageID"], "ans"].to_numpy()
    accuracy = float((sub["ans"].to_numpy() == truth).mean())
    chance = float(answers["ans"].value_counts(normalize=True).max())  # always guessing the commonest class
    assert accuracy >= 2 * chance, (accuracy, chance)

    scored = cli("score", out, "--answers", demo / "eval" / "answers.csv")
    assert scored.exit_code == 0, scored.output
    assert f"accuracy  {accuracy:.4f}" in scored.stdout
    assert f"images    {len(info)}" in scored.stdout


def test_predict_top_k_trials_of_a_study(pipeline, demo, fakes, cache_dir):
    study, work = pipeline["study"], pipeline["work"]
    root = work / "checkpoints"
    for number, source in ((0, pipeline["run"] / "model.pt"), (1, fakes["single_a"]), (2, fakes["single_b"])):
        target = checkpoint_dir(root / "sub", number) / "best.pt"
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
    # trial 0 (0.7) then trial 1 (0.5); trial 2 was pruned with 0.9 and never counts
    assert study_checkpoints(study, 2, root) == [checkpoint_dir(root / "sub", n) / "best.pt" for n in (0, 1)]

    out = work / "top2.csv"
    result = cli(
        "predict",
        "--study",
        "sub",
        "--top",
        2,
        "--storage",
        pipeline["url"],
        "--checkpoints",
        root,
        "--data-dir",
        demo,
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--device",
        "cpu",
        "-q",
    )
    assert result.exit_code == 0, result.output
    expected = predict([pipeline["run"] / "model.pt", fakes["single_a"]], demo, cache_dir=cache_dir, device="cpu")
    assert expected.rule == "mixed"
    assert pd.read_csv(out)["ans"].tolist() == expected.labels.tolist()

    result = cli(
        "predict",
        "--study",
        "sub",
        "--top",
        3,
        "--storage",
        pipeline["url"],
        "--checkpoints",
        root,
        "--data-dir",
        demo,
        "--out",
        work / "top3.csv",
    )
    assert result.exit_code == 1
    assert "study 'sub' has 2 COMPLETE trial(s) with a value, --top asks for 3 (2 complete, 1 pruned)" in result.output
    assert not (work / "top3.csv").exists()

    with pytest.raises(PredictError, match=r"sub/trial_00000/best.pt: best.pt of trial 0 \(value 0.7000\)"):
        study_checkpoints(study, 1, work / "elsewhere")


# --- ensembles and test-time augmentation ---------------------------------------------------------------


def test_two_checkpoint_ensemble_is_the_mean_of_the_single_models(demo, fakes, cache_dir):
    kw = {"cache_dir": cache_dir, "device": "cpu", "batch_size": 16}
    a, b = predict([fakes["single_a"]], demo, **kw), predict([fakes["single_b"]], demo, **kw)
    both = predict([fakes["single_a"], fakes["single_b"]], demo, **kw)
    assert both.rule == "single" and both.probs.shape == (len(a.image_ids), 18)
    np.testing.assert_allclose(a.probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(both.probs, (a.probs + b.probs) / 2, atol=1e-6)
    assert both.labels.tolist() == ((a.probs + b.probs) / 2).argmax(axis=1).tolist()
    assert not np.allclose(a.probs, b.probs, atol=1e-3)  # two different models, so the mean is a real mix

    # multi heads: averaged head by head; the answer combines the three argmaxes (mask * 6 + gender * 3 + age)
    c, d = predict([fakes["multi_a"]], demo, **kw), predict([fakes["multi_b"]], demo, **kw)
    both = predict([fakes["multi_a"], fakes["multi_b"]], demo, **kw)
    assert both.rule == "multi"
    mean = {k: (c.task_probs[k] + d.task_probs[k]) / 2 for k in ("mask", "gender", "age")}
    for k in mean:
        np.testing.assert_allclose(both.task_probs[k], mean[k], atol=1e-6)
    combined = mean["mask"].argmax(1) * 6 + mean["gender"].argmax(1) * 3 + mean["age"].argmax(1)
    assert both.labels.tolist() == combined.tolist()

    # mixed: the single head's 18-class probabilities and the multi head's product p(m) p(g) p(a), averaged
    mixed = predict([fakes["single_a"], fakes["multi_b"]], demo, **kw)
    assert mixed.rule == "mixed"
    np.testing.assert_allclose(mixed.probs, (a.probs + joint_from_tasks(d.task_probs)) / 2, atol=1e-6)
    assert mixed.labels.tolist() == mixed.probs.argmax(axis=1).tolist()


def test_one_multi_head_model_predicts_its_combined_argmaxes(demo, fakes, cache_dir):
    loaded = load_model(fakes["multi_a"], "cpu")
    table = pd.read_csv(demo / "eval" / "info.csv", dtype=str)
    images = torch.from_numpy(np.stack([decode_image(demo / "eval" / "images" / i, SIZE) for i in table["ImageID"]]))
    with torch.inference_mode():
        out = loaded.model(normalize(images, loaded.mean, loaded.std))
    expected = out["mask"].argmax(1) * 6 + out["gender"].argmax(1) * 3 + out["age"].argmax(1)
    got = predict([fakes["multi_a"]], demo, cache_dir=cache_dir, device="cpu")
    assert got.labels.tolist() == expected.tolist()


def test_tta_averages_the_image_and_its_mirror(demo, fakes, cache_dir):
    loaded = load_model(fakes["single_a"], "cpu")
    assert loaded.image_size == (48, 36) and loaded.mean == (0.5, 0.4, 0.3)  # the checkpoint's preprocessing
    table = pd.read_csv(demo / "eval" / "info.csv", dtype=str)
    images = torch.from_numpy(np.stack([decode_image(demo / "eval" / "images" / i, SIZE) for i in table["ImageID"]]))
    x = normalize(images, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    with torch.inference_mode():
        plain = torch.softmax(loaded.model(x), dim=1).numpy()
        mirrored = torch.softmax(loaded.model(x.flip(dims=[3])), dim=1).numpy()  # width axis
    kw = {"cache_dir": cache_dir, "device": "cpu"}
    without, with_tta = predict([fakes["single_a"]], demo, **kw), predict([fakes["single_a"]], demo, tta=True, **kw)
    np.testing.assert_allclose(without.probs, plain, atol=1e-5)
    np.testing.assert_allclose(with_tta.probs, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(with_tta.probs - without.probs).max() > 1e-3  # the flip changes the numbers


def test_joint_and_task_probabilities_by_hand():
    tasks = {
        "mask": np.array([[0.0, 1.0, 0.0]]),
        "gender": np.array([[0.25, 0.75]]),
        "age": np.array([[0.0, 0.0, 1.0]]),
    }
    joint = joint_from_tasks(tasks)
    # incorrect mask (1), age band 2: male -> class 1*6 + 0*3 + 2 = 8 (0.25), female -> 1*6 + 1*3 + 2 = 11 (0.75)
    assert np.flatnonzero(joint[0]).tolist() == [8, 11] and joint[0, 8] == 0.25 and joint[0, 11] == 0.75
    back = tasks_from_joint(joint)
    for k in tasks:
        np.testing.assert_allclose(back[k], tasks[k])


# --- failures leave nothing behind --------------------------------------------------------------------


def test_missing_eval_image_is_named_and_nothing_is_written(demo, fakes, cache_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo / "eval", data / "eval")
    ids = pd.read_csv(data / "eval" / "info.csv", dtype=str)["ImageID"].tolist()
    (data / "eval" / "images" / ids[3]).unlink()
    (data / "eval" / "images" / ids[5]).write_bytes(b"not a jpeg")
    out = tmp_path / "submission.csv"
    result = cli(
        "predict",
        "--checkpoint",
        fakes["single_a"],
        "--data-dir",
        data,
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--device",
        "cpu",
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"{ids[3]}: eval image not found" in text
    assert f"{ids[5]}: unreadable image" in text
    assert "2 problem(s)" in text and "nothing written" in text and "Traceback" not in text
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*.tmp")) == []

    with pytest.raises(DataError, match=ids[3]):
        predict([fakes["single_a"]], data, out=out, cache_dir=cache_dir, device="cpu")
    assert not out.exists()


def test_a_failed_prediction_keeps_the_old_submission(demo, fakes, cache_dir, tmp_path):
    out = tmp_path / "submission.csv"
    out.write_text("ImageID,ans\nold.jpg,3\n")
    with pytest.raises(PredictError, match=r"nope\.pt' not found"):
        predict([fakes["single_a"], tmp_path / "nope.pt"], demo, out=out, cache_dir=cache_dir, device="cpu")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    result = cli("predict", "--checkpoint", tmp_path / "bad.pt", "--data-dir", demo, "--out", out)
    assert result.exit_code == 1 and "cannot read checkpoint" in result.output
    with pytest.raises(ValueError, match="labels must lie in 0..17"):
        write_submission(["a.jpg", "b.jpg"], [3, 18], out)
    assert out.read_text() == "ImageID,ans\nold.jpg,3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "submission.csv"]  # no temp file left


# --- score --------------------------------------------------------------------------------------------


def test_score_of_a_hand_made_submission(tmp_path):
    answers = tmp_path / "answers.csv"
    answers.write_text("ImageID,ans\na.jpg,0\nb.jpg,0\nc.jpg,1\nd.jpg,2\n")
    sub = tmp_path / "sub.csv"
    sub.write_text("ImageID,ans\nd.jpg,2\nc.jpg,1\nb.jpg,1\na.jpg,0\n")  # another row order; b is wrong
    got = score(sub, answers)
    assert got["accuracy"] == 0.75 and got["n"] == 4
    # per-class F1: class 0 P=1 R=1/2 -> 2/3; class 1 P=1/2 R=1 -> 2/3; class 2 -> 1; the other 15 classes 0
    assert got["f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 18)
    result = cli("score", sub, "--answers", answers)
    assert result.exit_code == 0, result.output
    assert "accuracy  0.7500" in result.stdout and "macro F1  0.1296" in result.stdout


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a.jpg,0\nb.jpg,0\nc.jpg,1\n", r"1 ImageID\(s\) of .*answers.csv missing \('d.jpg'\)"),
        ("a.jpg,0\nb.jpg,0\nc.jpg,1\nd.jpg,2\ne.jpg,4\n", r"1 row\(s\) not in .*answers.csv \('e.jpg'\)"),
        ("a.jpg,0\nb.jpg,0\nc.jpg,18\nd.jpg,2\n", r"sub.csv line 4: ans '18' for ImageID 'c.jpg' is not a class id"),
        ("a.jpg,0\na.jpg,0\nc.jpg,1\nd.jpg,2\n", r"ImageID 'a.jpg' appears more than once"),
    ],
)
def test_score_refuses_rows_that_do_not_match(tmp_path, rows, message):
    answers = tmp_path / "answers.csv"
    answers.write_text("ImageID,ans\na.jpg,0\nb.jpg,0\nc.jpg,1\nd.jpg,2\n")
    sub = tmp_path / "sub.csv"
    sub.write_text("ImageID,ans\n" + rows)
    with pytest.raises(PredictError, match=message):
        score(sub, answers)
    result = cli("score", sub, "--answers", answers)
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_score_needs_both_columns(tmp_path):
    (tmp_path / "sub.csv").write_text("ImageID\na.jpg\n")
    (tmp_path / "answers.csv").write_text("ImageID,ans\na.jpg,0\n")
    with pytest.raises(PredictError, match="missing column"):
        score(tmp_path / "sub.csv", tmp_path / "answers.csv")
