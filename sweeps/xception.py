"""Xception (timm `legacy_xception`) sweep for the 18-class mask task, on a GPU.

Starts from the seed team's best hand-tuned setting (Adam, StepLR, batch 32, lr 1e-3, dropout 0.5), so the
sweep can only improve on it. Pretrained ImageNet weights are required: put them in the local Hugging Face
cache, or set "pretrained" to a weights file (see README, "Pretrained weights offline").
"""

import optuna

SEED = 2021

BASE_CONFIG = {
    "model": "legacy_xception",
    "pretrained": True,
    "image_size": None,  # the model's own input size (timm.data.resolve_data_config): 299x299
    "epochs": 12,
    "optimizer": "adam",
    "step_size": 4,
    "gamma": 0.5,
    "val_ratio": 0.2,
    "corrections": "known",
    "data_dir": "/opt/ml/input/data",
    "device": "cuda",
    "amp": True,
}

KNOWN_GOOD = [
    {"batch_size": 32, "lr": 1e-3, "dropout": 0.5, "scheduler": "step", "loss": "cross_entropy", "head": "single"},
]


def suggest(trial: optuna.Trial) -> dict:
    params = {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.7, step=0.1),
        "scheduler": trial.suggest_categorical("scheduler", ["step", "cosine"]),
        "loss": trial.suggest_categorical("loss", ["cross_entropy", "label_smoothing", "focal", "f1"]),
        "head": trial.suggest_categorical("head", ["single", "multi"]),
    }
    if params["scheduler"] == "cosine":
        params["t_max"] = trial.suggest_int("t_max", 4, BASE_CONFIG["epochs"])
    if params["head"] == "multi":
        params["age_loss_weight"] = trial.suggest_float("age_loss_weight", 0.5, 3.0)
    return params


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True)


def make_pruner(config) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=config.epochs, reduction_factor=3)
