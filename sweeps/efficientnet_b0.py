"""EfficientNet-B0 (timm `efficientnet_b0`) sweep at the photos' full size (512x384), on a GPU.

Starts from the hand-tuned setting: Adam, StepLR, batch 64, dropout 0.5 at full image size.
"""

import optuna

SEED = 2021

BASE_CONFIG = {
    "model": "efficientnet_b0",
    "pretrained": True,
    "image_size": [512, 384],
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
    {"batch_size": 64, "lr": 1e-3, "dropout": 0.5, "scheduler": "step", "loss": "cross_entropy", "head": "single"},
]


def suggest(trial: optuna.Trial) -> dict:
    params = {
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
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
