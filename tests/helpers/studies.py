"""Sweep-file sources and study builders the fixtures of tests/conftest.py and tests/hpo/select/conftest.py (and
some tests) write their studies from."""

from __future__ import annotations

from pathlib import Path

# Appended to a tiny sweep: every real trial fails with a TypeError in suggest() (a bug in user code, C1's
# consecutive-failure cap); the dry run's recording trial (number -1) passes, so the sweep file loads.
ALWAYS_FAILING_SUGGEST = """
def suggest(trial):
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    if trial.number >= 0:  # real trials only (the dry run's recording trial has number -1)
        return {"lr": lr + "0.1"}
    return {"lr": lr}
"""

# The sweep of the fixture `tiny_sweep` (tests/conftest.py); EPOCHS, DATA_DIR, CACHE_DIR and PRUNER are replaced.
TINY_SWEEP = """
import optuna

BASE_CONFIG = {
    "model": "test_resnet", "pretrained": False, "image_size": [32, 24], "epochs": EPOCHS,
    "val_ratio": 0.25, "augment": False, "data_dir": "DATA_DIR", "cache_dir": "CACHE_DIR", "device": "cpu",
}

def suggest(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }

def make_pruner(config):
    return PRUNER
"""

# The study name of the session fixture `swept_study` (tests/conftest.py).
SMOKE_STUDY = "smoke-dashboard"

# The sweep of the session fixture `confirm_source` (tests/hpo/select/conftest.py): 1 epoch, two known-good
# configurations; DATA_DIR and CACHE_DIR are replaced by the fixture.
CONFIRM_SWEEP = """
import optuna

BASE_CONFIG = {
    "model": "test_resnet", "pretrained": False, "image_size": [32, 24], "epochs": 1, "val_ratio": 0.25,
    "augment": False, "data_dir": "DATA_DIR", "cache_dir": "CACHE_DIR", "device": "cpu",
}
KNOWN_GOOD = [{"batch_size": 16, "lr": 0.003}, {"batch_size": 32, "lr": 0.008}]

def suggest(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }

def make_pruner(config):
    return optuna.pruners.NopPruner()
"""


def sqlite_copy(db: Path, folder: Path) -> Path:
    """A consistent copy of SQLite file `db` as `folder/study.db` (sqlite3's backup API: WAL pages included)."""
    import contextlib
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "study.db"
    # NOTE closing(): sqlite3's own context manager commits but leaves the file open (a tmpfs could not be remounted)
    with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def one_trial_study(db: Path, sweep: Path, name: str = "smoke") -> None:
    """An SQLite study `name` of `sweep`'s space at `db` holding one COMPLETE trial (value 0.5), as `launch` leaves
    it (a data fingerprint of zeros)."""
    from maskcls_hpo.hpo.launch import prepare_study
    from maskcls_hpo.hpo.store import open_storage
    from maskcls_hpo.hpo.trial import load_sweep

    loaded = load_sweep(sweep)
    study = prepare_study(loaded, open_storage(f"sqlite:///{db}"), name, 2)
    study.set_user_attr("data_fingerprint", "0" * 64)
    trial = study.ask()
    loaded.suggest(trial)
    trial.set_user_attr("config", loaded.build_config(trial.params).to_dict())
    study.tell(trial, 0.5)
