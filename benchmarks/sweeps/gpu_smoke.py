"""GPU check sweep: the smoke model with AMP + channels_last, and one trial at a batch size that cannot fit.

Trials are enqueued in order: #0 a normal trial, #1 batch 4096 (the whole training split in one batch; the
GPU check caps the process's GPU memory so that this runs out of memory and must end PRUNED with reason
"oom"), #2 a normal trial again, which must run on the same worker after the OOM. No pruner: the normal
trials run every epoch.
"""

import optuna

SEED = 0

BASE_CONFIG = {
    "model": "test_efficientnet",
    "pretrained": False,
    "image_size": [128, 96],
    "epochs": 3,
    "optimizer": "adam",
    "scheduler": "step",
    "step_size": 2,
    "val_ratio": 0.25,
    "device": "auto",
    "amp": True,
    "channels_last": True,
}

KNOWN_GOOD = [
    {"batch_size": 32, "lr": 3e-3},
    {"batch_size": 4096, "lr": 3e-3},
    {"batch_size": 16, "lr": 3e-3},
]


def suggest(trial: optuna.Trial) -> dict:
    return {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 4096]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }


def make_pruner(config) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()
