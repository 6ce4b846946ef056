"""Names of the attributes that studies and trials carry, in one place (readers and writers agree).

Trial user attrs are what a person reads in the dashboard, `status`, `export` and `report`; study user attrs
hold the sweep's budget and what the study was launched on. Plain strings, so that Optuna's own tools
(`optuna trials`, `trials_dataframe()`) show the same names.
"""

from __future__ import annotations

from pathlib import Path

from maskcls_hpo._util import check_path_name, path_under
from maskcls_hpo.errors import ExportError

__all__ = [
    "TrialAttrs",
    "StudyAttrs",
    "OBJECTIVE_NAME",
    "OBJECTIVE_LABEL",
    "checkpoint_dir",
    "checkpoint_of",
    "slurm_label",
    "PRUNED_REASON",
    "ConfirmAttrs",
    "KIND_CONFIRM",
    "PARAM_SOURCE",
    "PARAM_FOLD",
    "PARAM_SEED",
]

OBJECTIVE_NAME = "val_macro_f1"
"""``study.metric_names`` of the objective for new studies (optuna-dashboard's axis titles; the column
``value_val_macro_f1`` of ``trials_dataframe()``). Studies made before keep theirs ("val macro F1")."""

OBJECTIVE_LABEL = "val macro F1"
"""How the objective is written in prose and tables (`status`, the report)."""


class StudyAttrs:
    """Names of the study user attrs written by `launch` (see ``hpo.launch.prepare_study``)."""

    N_TRIALS = "n_trials"
    BUDGET_EPOCHS = "budget_epochs"
    """The study's epoch budget (``launch --budget-epochs``; None: none): hpo.trial.epoch_room."""
    SWEEP = "sweep_file"
    FINGERPRINT = "data_fingerprint"
    DATASET = "dataset"
    LEDGER = "ledger"
    """The compute ledger (epochs, image-epochs, seconds by stage; what pruning saved): hpo.select._ledger."""
    FINALIZE_LEDGER = "ledger_finalize"
    """What `finalize` trained (epochs, image-epochs, seconds), written by finalize on the source study."""
    LR_RANGE = "lr_range"
    """The learning-rate range test's result (``LrRange.to_dict()`` + model, image size, batch size): the
    range the sampler draws ``lr`` from (``LR_RANGE_TEST = True`` in the sweep file, or `maskcls-hpo lr-range`)."""


class TrialAttrs:
    """Names of the user attrs a trial carries (strings, so the dashboard and `status` agree)."""

    CONFIG = "config"
    REASON = "reason"
    KNOWN_GOOD = "known_good"
    """True on a trial enqueued from the sweep file's KNOWN_GOOD (never pruned, always confirmed)."""
    TRAIN_IMAGES = "train_images"
    """Training images of one epoch (image-epochs of the compute ledger = epochs x this)."""
    ACCURACY = "accuracy"
    TASK_F1 = "task_f1"
    BEST_EPOCH = "best_epoch"
    EPOCH_SECONDS = "epoch_seconds"
    IMAGES_PER_SECOND = "images_per_second"
    DEVICE = "device"
    PEAK_MEMORY = "peak_memory_bytes"
    SEED = "seed"
    RESUMED_FROM = "resumed_from"
    RESUMED_AT_EPOCH = "resumed_at_epoch"
    """The checkpoint epoch a resumed trial started after (its epochs up to it were trained before)."""
    PROMOTED_FROM = "promoted_from"
    """The number of the pruned trial this trial continues from its checkpoint (hpo/trial/_promotion.py)."""
    WORKER = "worker"
    # 95% interval of the best epoch's val macro F1 from a bootstrap over val persons (metrics.bootstrap_macro_f1)
    VAL_F1_CI_LOW = "val_f1_ci_low"
    VAL_F1_CI_HIGH = "val_f1_ci_high"
    VAL_F1_BOOTSTRAP_SD = "val_f1_bootstrap_sd"
    BOOTSTRAP_RESAMPLES = "bootstrap_resamples"
    VAL_PERSONS = "val_persons"
    ARTIFACTS = "artifacts"  # {file name: artifact id} of the uploaded artifacts (hpo/trial/_artifacts.py)
    RACE_STOPPED = "race_stopped"
    """A confirm run the race did not train (PRUNED at once): its config's stop, ``RaceStop.to_attr()``."""
    SLURM_JOB_ID = "slurm_job_id"
    """The Slurm job the trial ran in: the array job's id for an array task (what ``squeue`` shows before ``_``)."""
    SLURM_TASK_ID = "slurm_task_id"
    """The array task index (``SLURM_ARRAY_TASK_ID``) the trial ran in; absent outside an array."""


PRUNED_REASON = "pruned at epoch"
"""Start of the `reason` of a trial the pruner stopped (``pruned at epoch E (val macro F1 ...)``), as the objective
writes it; every other PRUNED reason (``oom``, ``non-finite ...``) says something else."""


def slurm_label(user_attrs: dict) -> str | None:
    """``"12_1"`` (job_task, as ``squeue`` names an array task), ``"12"`` outside an array, None outside Slurm."""
    job = user_attrs.get(TrialAttrs.SLURM_JOB_ID)
    if job is None:
        return None
    task = user_attrs.get(TrialAttrs.SLURM_TASK_ID)
    return f"{job}_{task}" if task is not None else str(job)


def checkpoint_dir(root: Path, trial_number: int) -> Path:
    """Folder of one trial's checkpoints: `<root>/trial_<number>` (root = `<checkpoints>/<study>`)."""
    return Path(root) / f"trial_{trial_number:05d}"


def checkpoint_of(checkpoints: Path, study_name: str, trial_number: int) -> Path:
    """`best.pt` of a trial: ``<checkpoints>/<study>/trial_<number>/best.pt`` (used by export/predict)."""
    check_path_name(study_name, "--study", ExportError)
    return checkpoint_dir(path_under(checkpoints, study_name, error=ExportError), trial_number) / "best.pt"


# --- confirm studies (maskcls_hpo.hpo.select) --------------------------------------------------

PARAM_SOURCE = "source_trial"
PARAM_FOLD = "fold"
PARAM_SEED = "seed_index"
KIND_CONFIRM = "confirm"


class ConfirmAttrs:
    """Study user attrs of a confirm study (besides ``n_trials``, ``data_fingerprint``, ``dataset``)."""

    KIND = "kind"  # "confirm"
    SOURCE = "confirm_of"  # the source study's name
    TOP = "top"
    FOLDS = "folds"
    SEEDS = "seeds"
    SOURCE_TRIALS = "source_trials"  # trial numbers in the source study, best first (single-split ranking)
    SOURCE_VALUES = "source_values"  # their single-split val macro F1, same order
    SPLIT_SEED = "split_seed"  # seed of the fold assignment
    KNOWN_GOOD = "known_good_trials"  # known-good source trials confirmed besides the top K (not counted in TOP)
    RACE = "race"  # True: runs queued round by round, configs worse than the leader stopped (hpo/trial/_race.py)
    RACE_PAIRING = "race_pairing"  # "persons" or "folds": how the race pairs a config with the leader (absent: folds)
    PROTECTED = "protected_trials"  # source trial numbers the race never stops (the known-good)
