"""hpo/trial/_objective.py: what a trial reports, when the pruner is asked, and the user attrs a finished trial carries.

Real training runs (test_resnet on the session's tiny demo set, CPU) in-process, one study in SQLite.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from maskcls_hpo.hpo.attrs import TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.trial import load_sweep, make_objective
from maskcls_hpo.metrics import bootstrap_macro_f1, read_val_predictions

# A pruner that would prune every trial at every epoch it is asked about, and records those epochs.
ALWAYS_PRUNE = """

class AlwaysPrune(optuna.pruners.BasePruner):
    asked = []

    def prune(self, study, trial):
        AlwaysPrune.asked.append((trial.number, trial.last_step))
        return True
"""


def run_trials(tmp_path, sweep_path, n_trials=1):
    sweep = load_sweep(sweep_path)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize", pruner=sweep.make_pruner()
    )
    root = tmp_path / "checkpoints" / study.study_name
    study.optimize(make_objective(sweep, root), n_trials=n_trials, catch=())
    return study, root, sweep


def test_pruner_is_not_asked_after_the_last_epoch(tmp_path, tiny_sweep):
    path = tiny_sweep(epochs=2, pruner="AlwaysPrune()", extra=ALWAYS_PRUNE)
    study, _, sweep = run_trials(tmp_path, path)
    (trial,) = study.trials
    asked = sweep.make_pruner().inner.asked  # the sweep's pruner, inside the known-good wrapper
    # asked after epoch 1, where it pruned
    assert asked == [(0, 1)] and trial.state == TrialState.PRUNED
    assert trial.user_attrs[TrialAttrs.REASON].startswith("pruned at epoch 1 (val macro F1")


def test_a_trial_that_trains_all_its_epochs_is_complete_even_if_the_pruner_would_prune(tmp_path, tiny_sweep):
    # a pruner that prunes from epoch 2 on, in a 2-epoch sweep: epoch 2 is the last, so it is never asked there
    extra = (
        ALWAYS_PRUNE
        + "\n\nclass FromEpoch2(AlwaysPrune):\n    def prune(self, study, trial):\n"
        + ("        return super().prune(study, trial) and trial.last_step >= 2\n")
    )
    study, root, sweep = run_trials(tmp_path, tiny_sweep(epochs=2, pruner="FromEpoch2()", extra=extra))
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE and TrialAttrs.REASON not in trial.user_attrs
    assert sweep.make_pruner().inner.asked == [(0, 1)]  # epoch 1 only
    assert sorted(trial.intermediate_values) == [1, 2]  # both epochs reported (what `report` draws)

    # the value's 95% person-bootstrap interval, recomputable from the trial's val_predictions.csv
    frame = read_val_predictions(checkpoint_dir(root, trial.number) / "val_predictions.csv")
    ci = bootstrap_macro_f1(frame["true_class"], frame["pred_class"], frame["person_id"])
    a = trial.user_attrs
    assert a[TrialAttrs.BOOTSTRAP_RESAMPLES] == 1000 and a[TrialAttrs.VAL_PERSONS] == frame["person_id"].nunique()
    assert a[TrialAttrs.VAL_F1_CI_LOW] == pytest.approx(ci.low, abs=1e-5)
    assert a[TrialAttrs.VAL_F1_CI_HIGH] == pytest.approx(ci.high, abs=1e-5)
    assert a[TrialAttrs.VAL_F1_BOOTSTRAP_SD] == pytest.approx(ci.sd, abs=1e-5)
    assert a[TrialAttrs.VAL_F1_CI_LOW] <= trial.value <= a[TrialAttrs.VAL_F1_CI_HIGH]
    assert ci.estimate == pytest.approx(trial.value)
