"""One training run on the CPU: learning, validation, best epoch, lr schedule, resume, typed errors, CLI.

Datasets come from the session fixtures `demo_data_60` / `demo_data_20` (conftest.py, training section).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import weakref
from dataclasses import asdict

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import maskcls_hpo.train as train_module
from maskcls_hpo.cli import app
from maskcls_hpo.config import ConfigError, TrainConfig, config_from_mapping, save_config
from maskcls_hpo.data import load_train, split_by_person
from maskcls_hpo.metrics import bootstrap_macro_f1, evaluate_predictions, prediction_columns, read_val_predictions
from maskcls_hpo.models import build_model
from maskcls_hpo.train import (
    NonFiniteLossError,
    OutOfMemoryError,
    TrainingError,
    load_checkpoint,
    train,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # NOTE on a 2-core machine shared with other processes, OpenMP threads spin-waiting for each other make a
    # CPU epoch 10-30x slower; one thread is fast here and keeps the float results reproducible.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small_config(data_dir, cache_dir, **changes) -> TrainConfig:
    """test_efficientnet on 32x24 images, batch 8, Adam lr 3e-3, no scheduler, CPU, seed 0."""
    base = dict(
        model="test_efficientnet",
        image_size=(32, 24),
        batch_size=8,
        epochs=2,
        lr=3e-3,
        scheduler="none",
        device="cpu",
        seed=0,
        data_dir=str(data_dir),
        cache_dir=str(cache_dir),
        val_ratio=0.25,
    )
    return TrainConfig(**(base | changes))


def constant_predictor_f1(confusion: list[list[int]]) -> float:
    """Macro F1 of always predicting the most frequent true class of a confusion matrix's val set."""
    counts = np.asarray(confusion).sum(axis=1)
    y_true = np.repeat(np.arange(18), counts)
    return evaluate_predictions(y_true, np.full(len(y_true), counts.argmax()))["f1"]


# --- learning -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["single", "multi"])
def test_three_epochs_beat_a_constant_predictor_clearly(head, demo_data_60, train_cache_dir, tmp_path):
    cfg = small_config(
        demo_data_60, train_cache_dir, head=head, image_size=(48, 36), batch_size=16, epochs=3, val_ratio=0.2
    )
    result = train(cfg, out_dir=tmp_path)

    # 60 persons, 20 % held out -> 12 persons = 84 images, not a multiple of the batch size 16
    assert result.val_images == 84 and result.val_images % cfg.batch_size != 0
    assert sum(map(sum, result.confusion)) == 84  # every val image was scored
    baseline = constant_predictor_f1(result.confusion)
    assert baseline < 0.02  # one class of 18 scores at most 2 n / (n + 84) / 18
    assert result.best_f1 > max(4 * baseline, baseline + 0.05), (result.best_f1, baseline)
    assert result.best_f1 == max(h.val_f1 for h in result.history)
    assert result.device == "cpu" and result.seed == 0 and result.peak_memory_bytes > 0


def test_metrics_json_and_checkpoints_hold_what_a_user_reads(demo_data_20, train_cache_dir, tmp_path):
    result = train(small_config(demo_data_20, train_cache_dir, epochs=2), out_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for entry in metrics["epochs"]:
        assert {
            "train_loss",
            "val_loss",
            "val_f1",
            "val_accuracy",
            "task_f1",
            "lr",
            "seconds",
            "images_per_second",
            "is_best",
        } <= set(entry)
        assert entry["seconds"] > 0 and entry["images_per_second"] > 0
    assert metrics["best_epoch"] == result.best_epoch and metrics["best_f1"] == pytest.approx(result.best_f1)
    assert metrics["device"] == "cpu" and metrics["peak_memory_bytes"] > 0 and metrics["seed"] == 0
    assert metrics["train_images"] == 105 and metrics["val_images"] == 35  # 15 and 5 persons of 7 images
    assert len(metrics["best_confusion"]) == 18 and len(metrics["best_per_class_f1"]) == 18
    last = torch.load(tmp_path / "last.pt", weights_only=True)  # plain containers and tensors only
    assert last["epoch"] == 2 and last["config"]["model"] == "test_efficientnet" and len(last["history"]) == 2
    assert {"model", "optimizer", "scheduler", "rng"} <= set(last)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch
    model_file = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "optimizer" not in model_file and model_file["preprocessing"]["image_size"] == [32, 24]
    for key, tensor in best["model"].items():
        torch.testing.assert_close(model_file["model"][key], tensor)


# --- validation and the best epoch ----------------------------------------------------------------------


def test_validation_scores_every_image_and_best_epoch_is_chosen_on_macro_f1(
    demo_data_20, train_cache_dir, tmp_path, monkeypatch
):
    cfg = small_config(demo_data_20, train_cache_dir, epochs=3, batch_size=8)
    samples = load_train(cfg.data_dir, verify=False)
    _, val_idx = split_by_person(samples, cfg.val_ratio, cfg.seed)
    val_labels = samples["label"].to_numpy()[val_idx]
    assert len(val_labels) == 35 and 35 % cfg.batch_size == 3  # the last val batch holds 3 images

    # the real scores, with macro F1 and accuracy replaced so that they disagree on the best epoch
    scripted = iter([(0.30, 0.90), (0.50, 0.60), (0.40, 0.95)])
    seen: list[np.ndarray] = []
    real = train_module.evaluate_predictions

    def scripted_scores(y_true, y_pred):
        seen.append(np.asarray(y_true))
        f1, accuracy = next(scripted)
        return real(y_true, y_pred) | {"f1": f1, "accuracy": accuracy}

    monkeypatch.setattr(train_module, "evaluate_predictions", scripted_scores)
    result = train(cfg, out_dir=tmp_path)

    assert len(seen) == 3
    for y_true in seen:
        np.testing.assert_array_equal(y_true, val_labels)
    assert result.best_epoch == 2 and result.best_f1 == 0.50 and result.best_accuracy == 0.60
    assert [h.is_best for h in result.history] == [True, True, False]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    assert set(read_val_predictions(tmp_path / "val_predictions.csv")["epoch"]) == {2}  # the best epoch's


@pytest.mark.parametrize("head", ["single", "multi"])
def test_val_predictions_file_and_person_bootstrap_interval(head, demo_data_20, train_cache_dir, tmp_path):
    cfg = small_config(demo_data_20, train_cache_dir, epochs=1, head=head)
    result = train(cfg, out_dir=tmp_path)
    samples = load_train(cfg.data_dir, verify=False)
    _, val_idx = split_by_person(samples, cfg.val_ratio, cfg.seed)
    frame = read_val_predictions(tmp_path / "val_predictions.csv")
    assert result.val_predictions == tmp_path / "val_predictions.csv"
    # one row per val image, in val order, with the image's person and true class
    assert frame["path"].tolist() == samples["path"].iloc[val_idx].tolist()
    assert frame["person_id"].tolist() == samples["person_id"].iloc[val_idx].tolist()
    assert frame["person_id"].str.len().eq(6).all()  # ids keep their leading zeros ("000123")
    assert frame["true_class"].tolist() == samples["label"].iloc[val_idx].tolist()
    assert set(frame["epoch"]) == {1} and frame["person_id"].nunique() == 5
    probs = frame[prediction_columns(head)].to_numpy()
    if head == "single":
        assert probs.shape == (35, 18)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert (probs.argmax(axis=1) == frame["pred_class"]).all()
    else:
        assert probs.shape == (35, 8)  # mask 3, gender 2, age 3
        for block in (probs[:, :3], probs[:, 3:5], probs[:, 5:]):
            np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-4)
        expected = probs[:, :3].argmax(1) * 6 + probs[:, 3:5].argmax(1) * 3 + probs[:, 5:].argmax(1)
        assert (expected == frame["pred_class"]).all()
    # the file holds what the run scored: its macro F1 is the best val macro F1
    assert evaluate_predictions(frame["true_class"], frame["pred_class"])["f1"] == pytest.approx(result.best_f1)
    ci = result.val_f1_interval
    assert ci["resamples"] == 1000 and ci["persons"] == 5 and ci["seed"] == 0
    assert ci["estimate"] == pytest.approx(result.best_f1)
    assert ci["low"] <= result.best_f1 <= ci["high"] and ci["sd"] > 0
    again = bootstrap_macro_f1(frame["true_class"], frame["pred_class"], frame["person_id"])
    assert (again.low, again.high) == pytest.approx((ci["low"], ci["high"]))
    assert json.loads((tmp_path / "metrics.json").read_text())["best_f1_interval"] == pytest.approx(ci)


# --- learning-rate schedule -----------------------------------------------------------------------------


def test_cosine_lr_steps_per_epoch_whatever_the_batch_size(demo_data_20, train_cache_dir, tmp_path):
    lr, eta_min, epochs = 0.01, 0.001, 4
    expected = [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    for batch_size in (4, 32):  # 26 and 3 steps per epoch
        cfg = small_config(
            demo_data_20,
            train_cache_dir,
            scheduler="cosine",
            lr=lr,
            eta_min=eta_min,
            epochs=epochs,
            t_max=epochs,
            batch_size=batch_size,
        )
        result = train(cfg, out_dir=tmp_path / str(batch_size))
        lrs = [h.lr for h in result.history]
        assert lrs == pytest.approx(expected, rel=1e-9)
        assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
        # the step after the last epoch lands on eta_min (the lr a resumed run would start from)
        assert result.final_lr == pytest.approx(eta_min, rel=1e-9)
        assert json.loads((tmp_path / str(batch_size) / "metrics.json").read_text())["final_lr"] == pytest.approx(
            eta_min, rel=1e-9
        )


def test_cosine_lr_stays_at_eta_min_after_t_max(demo_data_20, train_cache_dir):
    """t_max 2 of 4 epochs (the shipped space draws t_max in [2, epochs]): no rise after t_max."""
    lr, eta_min = 0.0026, 1e-4
    cfg = small_config(
        demo_data_20, train_cache_dir, scheduler="cosine", lr=lr, eta_min=eta_min, epochs=4, t_max=2, batch_size=32
    )
    result = train(cfg)
    mid = eta_min + (lr - eta_min) / 2
    assert [h.lr for h in result.history] == pytest.approx([lr, mid, eta_min, eta_min], rel=1e-9)
    assert result.final_lr == pytest.approx(eta_min, rel=1e-9)


def test_step_lr_halves_every_step_size_epochs(demo_data_20, train_cache_dir):
    cfg = small_config(
        demo_data_20, train_cache_dir, scheduler="step", step_size=2, gamma=0.5, lr=0.004, epochs=3, batch_size=32
    )
    assert [h.lr for h in train(cfg).history] == pytest.approx([0.004, 0.004, 0.002])


# --- resume ---------------------------------------------------------------------------------------------


class StopAfterEpoch1(Exception):
    """Stands in for a worker killed right after epoch 1 (or `optuna.TrialPruned`)."""


def test_resume_from_last_checkpoint_gives_the_same_epoch_2(demo_data_20, train_cache_dir, tmp_path):
    # augmentation, dropout, a cosine schedule and shuffling all draw random numbers: all must be restored
    cfg = small_config(
        demo_data_20, train_cache_dir, epochs=2, scheduler="cosine", eta_min=1e-4, augment=True, dropout=0.5
    )
    full = train(cfg, out_dir=tmp_path / "full")

    def stop(r):
        if r.epoch == 1:
            raise StopAfterEpoch1

    with pytest.raises(StopAfterEpoch1):
        train(cfg, out_dir=tmp_path / "part", on_epoch=stop)
    # the exception came after epoch 1's checkpoint was written
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1

    called = []
    resumed = train(
        cfg, out_dir=tmp_path / "resumed", resume_from=tmp_path / "part" / "last.pt", on_epoch=called.append
    )
    assert [r.epoch for r in called] == [2]
    assert [h.epoch for h in resumed.history] == [1, 2]

    def numbers(r):
        return {k: v for k, v in asdict(r).items() if k not in ("seconds", "images_per_second")}

    assert numbers(resumed.history[1]) == numbers(full.history[1])
    assert numbers(resumed.history[0]) == numbers(full.history[0])
    assert resumed.best_epoch == full.best_epoch and resumed.best_f1 == full.best_f1
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_refuses_a_checkpoint_of_another_model(demo_data_20, train_cache_dir, tmp_path):
    cfg = small_config(demo_data_20, train_cache_dir, epochs=1)
    train(cfg, out_dir=tmp_path)
    other = cfg.model_copy(update={"head": "multi", "epochs": 2})
    with pytest.raises(TrainingError, match="head='single'"):
        train(other, resume_from=tmp_path / "last.pt")


# --- full data ------------------------------------------------------------------------------------------


def test_full_data_trains_on_everyone_without_validation(demo_data_20, train_cache_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="maskcls_hpo.train"):
        result = train(small_config(demo_data_20, train_cache_dir, full_data=True, epochs=2), out_dir=tmp_path)
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("(all persons, no validation)" in line for line in epoch_lines)
    assert not any("nan" in line or "(best)" in line for line in epoch_lines), epoch_lines  # no val figures
    assert result.train_images == 140 and result.val_images == 0
    assert all(math.isnan(h.val_f1) and math.isnan(h.val_accuracy) for h in result.history)
    assert result.best_epoch == 2 and load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN is written as null
    assert metrics["epochs"][0]["val_f1"] is None and metrics["best_epoch"] == 2


# --- typed errors ---------------------------------------------------------------------------------------


class _Wrapper(nn.Module):
    def __init__(self, inner: nn.Module, fail_at_batch: int | None = None, nan: bool = False):
        super().__init__()
        self.inner, self.fail_at_batch, self.nan = inner, fail_at_batch, nan

    def forward(self, x):
        if self.fail_at_batch is not None and x.shape[0] >= self.fail_at_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = self.inner(x)
        return out * float("nan") if self.nan else out


def test_cuda_out_of_memory_becomes_a_typed_error_and_frees_the_model(
    demo_data_20, train_cache_dir, tmp_path, monkeypatch
):
    built: list[weakref.ref] = []

    def build_oom_model(config):
        model = _Wrapper(build_model(config), fail_at_batch=16)
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(train_module, "build_model", build_oom_model)
    with pytest.raises(OutOfMemoryError) as info:
        train(small_config(demo_data_20, train_cache_dir, batch_size=16), out_dir=tmp_path)
    err = info.value
    assert isinstance(err, TrainingError) and err.reason == "oom"
    assert "batch_size 16" in str(err) and "smaller batch_size" in str(err)
    assert err.__context__ is None and err.__cause__ is None  # no reference back to the failed run
    gc.collect()
    assert built[0]() is None, "the model is still referenced after the OOM"

    # the same model with a batch size that fits trains normally
    result = train(small_config(demo_data_20, train_cache_dir, batch_size=8, epochs=1))
    assert len(result.history) == 1


def test_huge_learning_rate_stops_with_non_finite_loss(demo_data_20, train_cache_dir):
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 step \d+ .*lower the learning rate") as info:
        train(small_config(demo_data_20, train_cache_dir, lr=1e30, epochs=1))
    assert info.value.reason.startswith("non-finite loss at epoch 1 step")


def test_model_producing_nan_stops_at_the_first_step(demo_data_20, train_cache_dir, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", lambda config: _Wrapper(build_model(config), nan=True))
    with pytest.raises(NonFiniteLossError, match="epoch 1 step 1 ") as info:
        train(small_config(demo_data_20, train_cache_dir, epochs=1))
    assert info.value.reason == "non-finite loss at epoch 1 step 1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_config_error(demo_data_20, train_cache_dir):
    with pytest.raises(ConfigError, match="device: cuda"):
        train(small_config(demo_data_20, train_cache_dir, device="cuda"))


# --- the train command ----------------------------------------------------------------------------------


def test_print_config_writes_the_defaults_as_yaml():
    result = CliRunner().invoke(app, ["train", "--print-config"])
    assert result.exit_code == 0, result.output
    assert config_from_mapping(yaml.safe_load(result.stdout)) == TrainConfig()


def test_train_command_prints_epochs_and_best_epoch(demo_data_20, train_cache_dir, tmp_path):
    cfg_file = save_config(small_config("elsewhere", train_cache_dir, epochs=3), tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "--config", str(cfg_file), "--data-dir", str(demo_data_20), "--out", str(out), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "best epoch 1: val macro F1" in result.stdout
    assert {"last.pt", "best.pt", "model.pt", "metrics.json", "config.yaml"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text())["config"]["data_dir"] == str(demo_data_20)


def test_train_command_reports_bad_config_and_bad_data_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: test_resnet\n")
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 1
    assert "unknown key 'modle'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "nothing" in result.output and "Traceback" not in result.output


# --- issue 14: train --seed, train --resume RUN_DIR, data checked before anything is written ---------------


def test_seed_option_overrides_the_config(tmp_path):
    result = CliRunner().invoke(app, ["train", "--print-config", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["seed"] == 7


def test_resume_run_dir_continues_bit_exact(demo_data_20, train_cache_dir, tmp_path):
    """`train --resume RUN_DIR` takes RUN_DIR/config.yaml and last.pt and gives the uninterrupted run's numbers."""
    cfg = small_config(
        demo_data_20, train_cache_dir, epochs=2, scheduler="cosine", eta_min=1e-4, augment=True, dropout=0.5
    )
    full = train(cfg, out_dir=tmp_path / "full")

    def stop(r):
        if r.epoch == 1:
            raise StopAfterEpoch1

    part = tmp_path / "part"
    save_config(cfg, part / "config.yaml")  # what `train --out part` writes first
    with pytest.raises(StopAfterEpoch1):
        train(cfg, out_dir=part, on_epoch=stop)
    result = CliRunner().invoke(app, ["train", "--resume", str(part)])
    assert result.exit_code == 0, result.output
    assert f"resuming from {part / 'last.pt'}, epoch 2" in " ".join(result.output.split())
    history = json.loads((part / "metrics.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["val_f1"] for h in history] == [h.val_f1 for h in full.history]
    assert [h["train_loss"] for h in history] == [h.train_loss for h in full.history]
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(part / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # the run is finished now: resuming again says so instead of training nothing
    again = CliRunner().invoke(app, ["train", "--resume", str(part)])
    assert again.exit_code == 1 and "already finished epoch 2 of 2" in again.output
    # a different seed cannot continue this run
    other = CliRunner().invoke(app, ["train", "--resume", str(part), "--seed", "5", "--epochs", "3"])
    assert other.exit_code == 1 and "trained with seed 0, the config says 5" in other.output


def test_resume_without_last_pt_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}: no last.pt to resume from" in " ".join(result.output.split())


def test_bad_data_dir_writes_no_run_folder(tmp_path):
    out = tmp_path / "runs" / "x"
    result = CliRunner().invoke(app, ["train", "--data-dir", str(tmp_path / "data" / "demo"), "--out", str(out)])
    assert result.exit_code == 1
    assert "data/demo" in result.output and "nothing written" in result.output
    assert not out.exists() and not (tmp_path / "runs").exists()
