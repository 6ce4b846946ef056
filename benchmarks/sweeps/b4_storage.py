"""Storage benchmark sweep (B4): one float parameter, a random sampler, no pruner. The benchmark runs a
no-training objective (10 intermediate reports, then a value), so only the loop and the storage are timed."""

import optuna

SEED = 0

BASE_CONFIG = {"model": "test_efficientnet", "epochs": 10}


def suggest(trial: optuna.Trial) -> dict:
    trial.suggest_float("x", -10.0, 10.0)
    return {}


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(config) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()
