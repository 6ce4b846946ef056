"""maskcls_hpo.checkpoint: what the files hold and how a run resumes into a new folder."""

from __future__ import annotations

import pytest
import torch

import maskcls_hpo.train as train_module
from maskcls_hpo.checkpoint import CHECKPOINT_FORMAT, MODEL_FILE_KEYS, load_checkpoint, save_checkpoint
from maskcls_hpo.config import TrainConfig
from maskcls_hpo.errors import TrainingError
from maskcls_hpo.metrics import read_val_predictions
from maskcls_hpo.train import train


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/ml/test_train.py: fast and reproducible on 2 shared cores
    yield
    torch.set_num_threads(old)


def tiny_config(data_dir, cache_dir, **changes) -> TrainConfig:
    base = dict(
        model="test_efficientnet",
        image_size=(32, 24),
        batch_size=8,
        epochs=1,
        lr=3e-3,
        scheduler="none",
        device="cpu",
        seed=0,
        data_dir=str(data_dir),
        cache_dir=str(cache_dir),
        val_ratio=0.25,
    )
    return TrainConfig(**(base | changes))


def test_a_saved_checkpoint_loads_back_and_leaves_no_temp(tmp_path):
    ckpt = {"format": CHECKPOINT_FORMAT, "epoch": 3, "model": {"w": torch.arange(4.0)}}
    save_checkpoint(ckpt, tmp_path / "last.pt")
    back = load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 3 and back["model"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_file_of_another_format_is_refused_by_name(tmp_path):
    torch.save({"format": "something-else/1"}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="is not a maskcls-hpo checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_into_a_new_folder_carries_the_best_epoch_over(demo_data_20, train_cache_dir, tmp_path, monkeypatch):
    """A re-queued trial resumes from the old folder's last.pt into a new folder: when the best epoch was one
    of the old folder's, its best.pt and val_predictions.csv come along and model.pt is that epoch's."""
    first = train(tiny_config(demo_data_20, train_cache_dir, epochs=1), out_dir=tmp_path / "old")
    assert first.best_epoch == 1
    real = train_module.evaluate_predictions
    monkeypatch.setattr(train_module, "evaluate_predictions", lambda t, p: real(t, p) | {"f1": 0.0})  # no new best

    second = train(
        tiny_config(demo_data_20, train_cache_dir, epochs=2),
        out_dir=tmp_path / "new",
        resume_from=tmp_path / "old" / "last.pt",
    )

    new = tmp_path / "new"
    assert second.best_epoch == 1 and second.best_f1 == first.best_f1
    assert [h.is_best for h in second.history] == [True, False]
    assert load_checkpoint(new / "best.pt")["epoch"] == 1 and load_checkpoint(new / "last.pt")["epoch"] == 2
    model_file = load_checkpoint(new / "model.pt")
    assert tuple(model_file) == MODEL_FILE_KEYS and model_file["epoch"] == 1
    assert set(read_val_predictions(new / "val_predictions.csv")["epoch"]) == {1}
    assert sorted(p.name for p in new.iterdir()) == [
        "best.pt",
        "last.pt",
        "metrics.json",
        "model.pt",
        "val_predictions.csv",
    ]
