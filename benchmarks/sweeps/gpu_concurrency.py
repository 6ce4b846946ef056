"""GPU check sweep for trial throughput with 1 vs 4 workers on one GPU: every trial does the same work.

EfficientNet-B0 (random init) at 256x192, batch 64, 3 epochs, no pruner; only the learning rate varies,
which does not change the amount of computation.
"""

import optuna

SEED = 0

BASE_CONFIG = {
    "model": "efficientnet_b0",
    "pretrained": False,
    "image_size": [256, 192],
    "batch_size": 64,
    "epochs": 3,
    "optimizer": "adam",
    "scheduler": "step",
    "step_size": 2,
    "val_ratio": 0.25,
    "device": "auto",
    "amp": True,
    "channels_last": True,
}


def suggest(trial: optuna.Trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True)}


def make_pruner(config) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()
