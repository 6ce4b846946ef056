"""What one trial is: the sweep file and its search space, the confirm plan, the objective that adapts a
training run to an Optuna trial, and what a trial writes (TensorBoard / MLflow tracking, dashboard artifacts).

Imports only :mod:`maskcls_hpo.hpo.store` and the base modules below it. Sweep files import their helpers from
here (``from maskcls_hpo.hpo.trial import mask_classifier_space, startup_trials``).
"""

from maskcls_hpo.hpo.trial._artifacts import (
    ARTIFACT_FILES,
    CONFIG_YAML,
    CONFUSION_PNG,
    CSV_COLUMNS,
    MIMETYPES,
    PER_CLASS_CSV,
    VAL_PREDICTIONS_CSV,
    TrialArtifactUploader,
    load_val_predictions,
    open_artifact_store,
    save_study_note,
    study_note,
    upload_trial_artifacts,
    write_config_yaml,
    write_confusion_png,
    write_per_class_f1_csv,
)
from maskcls_hpo.hpo.trial._ledger import LedgerWriter, empty_stage, stage_ledger, trial_epochs
from maskcls_hpo.hpo.trial._objective import make_objective, resume_checkpoint
from maskcls_hpo.hpo.trial._plan import (
    ConfirmPlan,
    confirm_study_name,
    load_plan,
    missing_runs,
    requeue_failed,
    run_key,
    source_configs,
)
from maskcls_hpo.hpo.trial._reference import KnownGoodPruner, is_known_good, known_good_trials
from maskcls_hpo.hpo.trial._spaces import LOSSES, mask_classifier_space
from maskcls_hpo.hpo.trial._sweep import (
    OPTUNA_STARTUP_TRIALS,
    RecordingTrial,
    Sweep,
    budget_warnings,
    describe_distribution,
    load_sweep,
    median_pruner,
    startup_trials,
)
from maskcls_hpo.hpo.trial._tracking import (
    BEST_TAG,
    MLFLOW_METRICS,
    MLFLOW_STATUS,
    SCALARS,
    TrialRun,
    TrialTracker,
    check_mlflow,
    tensorboard_available,
    trial_log_dir,
)

__all__ = [
    "ARTIFACT_FILES",
    "BEST_TAG",
    "budget_warnings",
    "check_mlflow",
    "CONFIG_YAML",
    "confirm_study_name",
    "ConfirmPlan",
    "CONFUSION_PNG",
    "CSV_COLUMNS",
    "describe_distribution",
    "empty_stage",
    "is_known_good",
    "LedgerWriter",
    "KnownGoodPruner",
    "known_good_trials",
    "load_plan",
    "load_sweep",
    "load_val_predictions",
    "LOSSES",
    "make_objective",
    "mask_classifier_space",
    "median_pruner",
    "MIMETYPES",
    "missing_runs",
    "MLFLOW_METRICS",
    "MLFLOW_STATUS",
    "open_artifact_store",
    "OPTUNA_STARTUP_TRIALS",
    "PER_CLASS_CSV",
    "RecordingTrial",
    "requeue_failed",
    "resume_checkpoint",
    "run_key",
    "save_study_note",
    "SCALARS",
    "source_configs",
    "stage_ledger",
    "startup_trials",
    "trial_epochs",
    "study_note",
    "Sweep",
    "tensorboard_available",
    "trial_log_dir",
    "TrialArtifactUploader",
    "TrialRun",
    "TrialTracker",
    "upload_trial_artifacts",
    "VAL_PREDICTIONS_CSV",
    "write_config_yaml",
    "write_confusion_png",
    "write_per_class_f1_csv",
]
