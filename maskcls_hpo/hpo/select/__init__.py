"""Choose, confirm and ship the winner: confirm studies, the ranking, export, finalize and the noise check.

One of the two use cases (the other is :mod:`maskcls_hpo.hpo.launch`); neither imports the other.
"""

from maskcls_hpo.hpo.select._confirm import ConfirmResult, confirm, prepare_confirm, run_confirm
from maskcls_hpo.hpo.select._ensemble import EnsembleChoice, choose_ensemble, greedy_selection, select_from_oof
from maskcls_hpo.hpo.select._export import (
    PATH_KEYS,
    absolute_config_paths,
    export_best,
    export_trials,
    launch_dir_of,
    study_checkpoints,
    trial_record,
)
from maskcls_hpo.hpo.select._finalize import FinalizeResult, FinalModel, final_configs, finalize, finalize_study
from maskcls_hpo.hpo.select._ledger import STAGES, format_ledger, record_final_model, study_ledger
from maskcls_hpo.hpo.select._noise import RunnerUpComparison, compare_runner_up, compare_trials
from maskcls_hpo.hpo.select._race import RaceReport, check_race, race_lines, race_report
from maskcls_hpo.hpo.select._ranking import MAX_TOP, Ranking, selection_ranking
from maskcls_hpo.hpo.select._reference import KnownGoodComparison, apply_known_good_default, compare_known_good
from maskcls_hpo.hpo.select._summary import (
    ConfirmRow,
    ConfirmSummary,
    find_confirm_study,
    format_summary,
    summarize_confirm,
)

__all__ = [
    "MAX_TOP",
    "absolute_config_paths",
    "apply_known_good_default",
    "choose_ensemble",
    "compare_known_good",
    "compare_runner_up",
    "compare_trials",
    "confirm",
    "ConfirmResult",
    "ConfirmRow",
    "ConfirmSummary",
    "EnsembleChoice",
    "export_best",
    "export_trials",
    "final_configs",
    "finalize",
    "finalize_study",
    "FinalizeResult",
    "FinalModel",
    "find_confirm_study",
    "format_ledger",
    "greedy_selection",
    "format_summary",
    "KnownGoodComparison",
    "launch_dir_of",
    "PATH_KEYS",
    "prepare_confirm",
    "race_lines",
    "race_report",
    "RaceReport",
    "check_race",
    "Ranking",
    "record_final_model",
    "run_confirm",
    "RunnerUpComparison",
    "select_from_oof",
    "selection_ranking",
    "STAGES",
    "study_checkpoints",
    "study_ledger",
    "summarize_confirm",
    "trial_record",
]
