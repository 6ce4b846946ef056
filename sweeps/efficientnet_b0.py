"""EfficientNet-B0 (timm `efficientnet_b0`) sweep at the photos' full size (512x384), on a GPU.

Starts from the hand-tuned setting: Adam, StepLR, batch 64, dropout 0.5 at full image size.
"""

import optuna

from maskcls_hpo.hpo.trial import asha_pruner, mask_classifier_space, startup_trials

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
    """Config overrides for one trial (keys of TrainConfig): the shared space, sized for this sweep."""
    return mask_classifier_space(trial, epochs=BASE_CONFIG["epochs"], batch_sizes=[32, 64, 128], t_max_min=4)


def make_sampler(seed: int, n_trials: int | None) -> optuna.samplers.BaseSampler:
    # random start-up sized to the budget: max(2, min(10, n_trials // 4)), 3 of a 12-trial sweep
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(n_trials), multivariate=True)


def make_pruner(config) -> optuna.pruners.BasePruner:
    # Chosen by benchmarks/b2_pruning.py (docs/performance.md, B2): with promotion from checkpoints, of the pruners
    # with at most 10% false prunes of the top-decile configs on every curve set it reached the target F1 soonest.
    # Asynchronous successive halving: rungs at epoch 4, 8, ... (half the epochs of a trial under 8 epochs:
    # epochs 1-3 rank configs poorly), eta 2; a trial alone at a rung waits there until it ranks in the top half.
    return asha_pruner(config.epochs)
