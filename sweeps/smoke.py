"""Smoke sweep: a tiny timm model on small images; a trial takes seconds on a CPU.

Used by `make demo`, the tests and the benchmarks. The same search space as the real sweeps, scaled down.
"""

import optuna

from maskcls_hpo.hpo.trial import asha_pruner, mask_classifier_space, startup_trials

SEED = 0

BASE_CONFIG = {
    "model": "test_efficientnet",
    "pretrained": False,
    "image_size": [48, 36],
    "epochs": 4,
    "optimizer": "adam",
    "step_size": 2,
    "gamma": 0.5,
    "val_ratio": 0.25,
    "data_dir": "storage/demo",
    "device": "auto",
}

# What hand-tuning found first: enqueued as the study's first trial.
KNOWN_GOOD = [
    {"batch_size": 32, "lr": 3e-3, "dropout": 0.2, "scheduler": "step", "loss": "cross_entropy", "head": "single"},
]


def suggest(trial: optuna.Trial) -> dict:
    """Config overrides for one trial (keys of TrainConfig): the shared space, sized for this sweep."""
    return mask_classifier_space(
        trial,
        epochs=BASE_CONFIG["epochs"],
        batch_sizes=[16, 32],
        lr=(1e-3, 3e-2),
        dropout=(0.0, 0.5),
        dropout_step=None,
        t_max_min=2,
        age_loss_weight=(0.5, 2.0),
    )


def make_sampler(seed: int, n_trials: int | None) -> optuna.samplers.BaseSampler:
    # random start-up sized to the budget: max(2, min(10, n_trials // 4)), 3 of a 12-trial sweep
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(n_trials))


def make_pruner(config) -> optuna.pruners.BasePruner:
    # Chosen by benchmarks/b2_pruning.py (docs/performance.md, B2): with promotion from checkpoints, of the pruners
    # with at most 10% false prunes of the top-decile configs on every curve set it reached the target F1 soonest.
    # Asynchronous successive halving: rungs at epoch 4, 8, ... (half the epochs of a trial under 8 epochs:
    # epochs 1-3 rank configs poorly), eta 2; a trial alone at a rung waits there until it ranks in the top half.
    return asha_pruner(config.epochs)
