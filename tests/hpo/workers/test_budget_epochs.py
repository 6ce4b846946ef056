"""`--budget-epochs`: the study trains at most that many epochs in all, and the sampler is sized to it."""

import subprocess
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.launch import default_trials, prepare_study
from maskcls_hpo.hpo.store import open_storage, resolve_storage_url
from maskcls_hpo.hpo.trial import budget_line, epoch_room, load_sweep, sizing_trials, stage_ledger
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker
from maskcls_hpo.results.status import print_status


def _trial(number, state, reported, epochs=4, resumed_at=None):
    attrs = {TrialAttrs.CONFIG: {"epochs": epochs}}
    if resumed_at is not None:
        attrs[TrialAttrs.RESUMED_AT_EPOCH] = resumed_at
    t = create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"lr": 0.01},
        distributions={"lr": FloatDistribution(1e-3, 1e-1, log=True)},
        user_attrs=attrs,
        intermediate_values={e: 0.1 * e for e in range(1, reported + 1)},
    )
    t.number = number
    return t


def _work(path, url, sweep, tmp_path):
    """One worker on study "t" until it stops; its report."""
    options = RunOptions(checkpoints=tmp_path / "ckpt", poll_interval=0.05)
    return run_worker(WorkerSettings(sweep_path=path, storage_url=url, study_name="t", options=options), sweep)


def test_epoch_room_is_the_budget_less_trained_and_held_epochs():
    trials = [
        _trial(0, TrialState.COMPLETE, 4),  # trained 4
        _trial(1, TrialState.PRUNED, 2),  # trained 2
        _trial(2, TrialState.RUNNING, 1),  # trained 1, holds 3 more
        _trial(3, TrialState.WAITING, 2),  # a queued copy: trained nothing yet
        _trial(4, TrialState.RUNNING, 3, resumed_at=2),  # a resumed copy: trained 1 itself, holds 1 more
    ]
    assert epoch_room(trials, 20, 4) == 20 - 4 - 2 - (1 + 3) - (1 + 1)  # 8
    # trial 4's own room when lower numbers go first: trial 2's held epochs count, its own do not
    assert epoch_room(trials, 20, 4, below=4) == 20 - 4 - 2 - (1 + 3)  # 10
    # a RUNNING trial whose config is not stored yet holds the sweep's epochs
    bare = _trial(5, TrialState.RUNNING, 0)
    bare.user_attrs.pop(TrialAttrs.CONFIG)
    assert epoch_room([bare], 20, 6) == 14


def test_the_sampler_start_up_is_sized_to_the_trials_the_epochs_buy(tmp_path, tiny_sweep):
    assert sizing_trials(20, None, 8) == 20
    assert sizing_trials(20, 64, 8) == 8  # 64 epochs buy at least 8 full trials
    assert sizing_trials(None, 100, 8) == 12 and sizing_trials(None, None, 8) is None
    assert default_trials(None) == 20 and default_trials(64) == 64
    sha = "optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2)"
    sweep = load_sweep(tiny_sweep(epochs=8, pruner=sha))
    line = budget_line(sweep, 64, 64)
    assert line.startswith("budget: 64 epochs (8 a trial), at most 64 trials; sampler TPESampler")
    # TPE's start-up for 8 trials is max(2, min(10, 8 // 4)) = 2
    assert "2 random start-up trials (sized to 8 trials = 64 / 8 epochs)" in line
    assert "pruner SuccessiveHalvingPruner, rungs at epoch 2, 4 (eta 2), promotion from checkpoints on" in line


def test_a_worker_stops_when_no_trial_fits_in_the_epochs_left(tmp_path, tiny_sweep):
    path = tiny_sweep(epochs=2)
    url = resolve_storage_url(str(tmp_path / "study.db"))
    sweep = load_sweep(path)
    prepare_study(sweep, open_storage(url), "t", 50, study_attrs={StudyAttrs.BUDGET_EPOCHS: 5})
    report = _work(path, url, sweep, tmp_path)
    study = optuna.load_study(study_name="t", storage=open_storage(url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert stage_ledger(study.trials)["epochs"] == 4
    assert report.stop_reason == "study trained 4 of its 5 epochs; no trial fits in the 1 left"
    console = Console(record=True, width=200)
    print_status(study, console)
    assert "study 't': 2 finished of 50; 4 of 5 epochs" in console.export_text()


@pytest.mark.slow
def test_launch_with_two_workers_never_trains_past_the_epoch_budget(tmp_path, tiny_sweep):
    path = tiny_sweep(epochs=2)
    db = tmp_path / "study.db"
    args = ["launch", str(path), "--budget-epochs", "5", "--workers", "2", "--storage", str(db)]
    done = subprocess.run([sys.executable, "-m", "maskcls_hpo", *args], capture_output=True, text=True, cwd=tmp_path)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, out[-2000:]
    assert "budget: 5 epochs (2 a trial), at most 5 trials" in out
    study = optuna.load_study(study_name="tiny", storage=resolve_storage_url(db))
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    assert stage_ledger(study.trials)["epochs"] == 4
    assert "2 finished (2 complete, 0 pruned), 0 failed, 4 of 5 epochs" in out
    # the same command again: no trial fits, nothing starts
    again = subprocess.run([sys.executable, "-m", "maskcls_hpo", *args], capture_output=True, text=True, cwd=tmp_path)
    out = " ".join((again.stdout + again.stderr).split())
    assert again.returncode == 0 and "nothing to do: the study already holds 2 finished trials, 4 of 5 epochs" in out


@pytest.mark.timeout(300)
def test_a_queued_trial_that_does_not_fit_stops_the_worker_instead_of_spinning(tmp_path, tiny_sweep):
    """The queue goes first: when its oldest trial does not fit, a smaller copy behind it cannot run either."""
    path = tiny_sweep(epochs=2)
    url = resolve_storage_url(str(tmp_path / "study.db"))
    sweep = load_sweep(path)
    study = prepare_study(sweep, open_storage(url), "t", 50, study_attrs={StudyAttrs.BUDGET_EPOCHS: 5})
    space = sweep.search_space()
    params = {"batch_size": 16, "lr": 0.005}

    def add(state, reported):
        study.add_trial(
            create_trial(
                state=state,
                value=0.5 if state == TrialState.COMPLETE else None,
                params=params,
                distributions={k: space[k] for k in params},
                user_attrs={TrialAttrs.CONFIG: {"epochs": 2}},
                intermediate_values={e: 0.1 for e in range(1, reported + 1)},
            )
        )

    add(TrialState.COMPLETE, 2)
    add(TrialState.COMPLETE, 2)  # 4 of 5 epochs trained
    study.enqueue_trial(params)  # needs 2: does not fit
    add(TrialState.WAITING, 1)  # a copy that needs 1 would fit, but waits behind it
    report = _work(path, url, sweep, tmp_path)
    assert report.stop_reason == "study trained 4 of its 5 epochs; no trial fits in the 1 left"
    assert [t.state for t in study.get_trials()][2:] == [TrialState.WAITING, TrialState.WAITING]
