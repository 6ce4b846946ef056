"""The compute ledger (hpo/trial/_ledger.py, hpo/select/_ledger.py): sums equal the epochs the trials trained.

A study in SQLite driven through Optuna's ask/report/tell and the project's own fail-and-requeue
(``store.fail_trial``: Optuna's retry callback copies the failed trial, intermediate values included), so the
stored values are what workers leave; the figures are counted by hand.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.select import format_ledger, record_final_model, study_ledger
from maskcls_hpo.hpo.store import HeartbeatSettings, fail_trial, open_storage, resolve_storage_url
from maskcls_hpo.hpo.trial import LedgerWriter, stage_ledger

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")  # ask/tell by hand


def _epochs(trial, epochs, images=100, first=1, planned=3):
    trial.set_user_attr(TrialAttrs.CONFIG, {"epochs": planned, "device": "cpu"})
    trial.set_user_attr(TrialAttrs.TRAIN_IMAGES, images)
    seconds = list(trial.user_attrs.get(TrialAttrs.EPOCH_SECONDS, []))[: first - 1]
    for epoch in range(first, first + epochs):
        trial.report(0.1 * epoch, epoch)
        seconds.append(2.0)
    trial.set_user_attr(TrialAttrs.EPOCH_SECONDS, seconds)


def test_ledger_sums_equal_the_trials_epochs_with_pruned_and_resumed_trials(tmp_path):
    url = resolve_storage_url(str(tmp_path / "s.db"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, HeartbeatSettings(interval=60, grace_period=120))
    study = optuna.create_study(study_name="led", storage=storage, direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    done = study.ask(dist)  # #0: 3 epochs, COMPLETE
    _epochs(done, 3)
    study.tell(done, 0.3)
    pruned = study.ask(dist)  # #1: pruned after epoch 1 of 3: 2 epochs saved
    _epochs(pruned, 1)
    study.tell(pruned, state=TrialState.PRUNED)
    killed = study.ask(dist)  # #2: 2 epochs, then its worker died; its copy #3 resumes after epoch 2
    _epochs(killed, 2)
    assert fail_trial(study, killed._trial_id, "stale")
    copy = study.ask()
    assert copy.number == 3 and len(study.trials[3].intermediate_values) == 2  # the copy inherits 2 values
    copy.set_user_attr(TrialAttrs.RESUMED_AT_EPOCH, 2)
    _epochs(copy, 1, first=3)
    study.tell(copy, 0.3)
    trials = study.get_trials()
    ledger = stage_ledger(trials)
    assert ledger["epochs"] == 3 + 1 + 2 + 1 and ledger["trials"] == 4
    assert ledger["image_epochs"] == 700 and ledger["seconds"] == 14.0 and ledger["seconds_by_device"] == {"cpu": 14.0}
    assert ledger["pruned"] == {"trials": 1, "epochs_saved": 2, "image_epochs_saved": 200}
    # the worker's writer stores it; a second write within 10 s is skipped
    writer = LedgerWriter()
    assert writer.maybe_write(study) and not writer.maybe_write(study)
    assert study.user_attrs[StudyAttrs.LEDGER] == ledger
    # finalize's models (one retrained replaces its entry) and the stages together
    record_final_model(study, "trial_00000-seed_42", 3, 300, 5.0, "cpu")
    record_final_model(study, "trial_00000-seed_42", 3, 300, 6.0, "cpu")
    full = study_ledger(study)
    assert full["total"] == {"epochs": 10, "image_epochs": 1000, "seconds": 20.0}
    assert full["pruning_saved"] == {"trials": 1, "epochs": 2, "image_epochs": 200}
    lines = format_ledger(full)
    assert lines[0] == "compute ledger:" and "pruning saved 2 epochs (200 image-epochs) over 1 pruned" in lines[-1]
