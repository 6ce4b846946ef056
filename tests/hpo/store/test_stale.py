"""Stale trials (hpo/store/_stale.py): a RUNNING trial without a heartbeat row, an exception inside ask(), the reason.

No training: a no-op objective on the real SQLite storage, so each test takes about a second.
"""

from __future__ import annotations

import datetime as dt
import re

import optuna
import pytest
import sqlalchemy
from helpers import REPO_ROOT
from optuna.trial import TrialState

from maskcls_hpo.hpo._optuna import rdb_of, storage_of
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.store import HeartbeatSettings, count_trials, fail_stale_trials, find_stale_trials, open_storage
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker
from maskcls_hpo.results.status import study_status

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed"),
]

SMOKE = REPO_ROOT / "sweeps" / "smoke.py"
HEARTBEAT = HeartbeatSettings(interval=1, grace_period=20)  # live trials on busy cores never look stale


def _study(tmp_path, n_trials=3):
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    sweep = load_sweep(SMOKE)
    storage = open_storage(url, HEARTBEAT)
    study = prepare_study(sweep, storage, "s", n_trials)
    return url, sweep, study


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _orphan(study: optuna.Study, age_s: float) -> int:
    """A RUNNING trial as a worker killed right after ask() leaves it: no heartbeat row; started `age_s` ago."""
    trial = study.ask()
    engine = rdb_of(storage_of(study)).engine
    with engine.begin() as con:
        con.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :i"),
            {"t": _utcnow() - dt.timedelta(seconds=age_s), "i": trial._trial_id},
        )
    return trial.number


def _objective(sweep):
    def objective(trial):
        sweep.suggest(trial)
        trial.report(0.3, 1)
        return 0.3

    return objective


def test_running_trial_without_heartbeat_is_failed_by_start_time_and_requeued(tmp_path):
    url, sweep, study = _study(tmp_path, n_trials=3)
    young = _orphan(study, age_s=1)  # within the grace period: a worker may still be about to start it
    assert find_stale_trials(study, HEARTBEAT.grace_period) == []
    engine = rdb_of(storage_of(study)).engine
    with engine.begin() as con:
        con.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE number = :n"),
            {"t": _utcnow() - dt.timedelta(seconds=60), "n": young},
        )
    # `status` (no worker alive) fails it and queues a copy
    s = study_status(optuna.load_study(study_name="s", storage=open_storage(url, HEARTBEAT)))
    assert s["stale_failed"] == [young]
    assert s["counts"]["running"] == 0 and s["counts"]["failed"] == 1 and s["counts"]["waiting"] >= 1
    failed = study.trials[young]
    assert failed.state == TrialState.FAIL
    # 60 s back, plus the seconds this test took to get here on a loaded machine
    assert re.match(r"stale: started (6\d) s ago and never sent a heartbeat", failed.user_attrs["reason"])
    copy = next(t for t in study.trials if t.system_attrs.get("failed_trial") == young)
    assert copy.state == TrialState.WAITING and "reason" not in copy.user_attrs

    # a worker finishes the study at exactly the budget, the copy included
    settings = WorkerSettings(
        sweep_path=SMOKE,
        storage_url=url,
        study_name="s",
        options=RunOptions(heartbeat=HEARTBEAT, checkpoints=tmp_path / "c"),
    )
    report = run_worker(settings, sweep, objective=_objective(sweep))
    c = count_trials(storage_of(study), study._study_id)
    assert (c.finished, c.running, c.failed) == (3, 0, 1)
    assert report.complete == 3
    assert optuna.load_study(study_name="s", storage=url).trials[copy.number].state == TrialState.COMPLETE


def test_worker_fails_an_orphan_before_its_first_trial(tmp_path):
    """The budget's last slot held by a trial without a heartbeat: the worker frees it instead of waiting."""
    url, sweep, study = _study(tmp_path, n_trials=1)
    for _ in sweep.known_good:  # the queued KNOWN_GOOD trials: take them out of the way
        study.tell(study.ask(), 0.1)
    c = count_trials(storage_of(study), study._study_id)
    n_trials = c.finished + 1
    orphan = _orphan(study, age_s=30)
    settings = WorkerSettings(
        sweep_path=SMOKE,
        storage_url=url,
        study_name="s",
        n_trials=n_trials,
        options=RunOptions(heartbeat=HEARTBEAT, checkpoints=tmp_path / "c", timeout=60),
    )
    report = run_worker(settings, sweep, objective=_objective(sweep))
    assert report.stop_reason == f"study holds {n_trials} finished trials (target {n_trials})"
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert trials[orphan].state == TrialState.FAIL
    assert trials[orphan].user_attrs["reason"].startswith("stale: started")
    assert sum(t.state == TrialState.RUNNING for t in trials) == 0


def test_restarted_trial_with_an_old_heartbeat_row_is_not_stale(tmp_path):
    """A lost slot claim puts a trial back to WAITING with its heartbeat row; started again, it is alive."""
    url, sweep, study = _study(tmp_path)
    trial = study.ask()
    rdb = rdb_of(storage_of(study))
    rdb.record_heartbeat(trial._trial_id)
    with rdb.engine.begin() as con:
        con.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :i"),
            {"t": _utcnow() - dt.timedelta(seconds=3600), "i": trial._trial_id},
        )
    assert find_stale_trials(study, HEARTBEAT.grace_period) == []  # started just now


def test_stale_trial_with_old_heartbeat_carries_a_reason(tmp_path):
    url, sweep, study = _study(tmp_path)
    number = _orphan(study, age_s=3600)
    trial = study.trials[number]
    rdb = rdb_of(storage_of(study))
    rdb.record_heartbeat(trial._trial_id)
    assert fail_stale_trials(study, HEARTBEAT.grace_period) == []  # a fresh heartbeat: alive
    with rdb.engine.begin() as con:
        con.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :i"),
            {"t": _utcnow() - dt.timedelta(seconds=3600), "i": trial._trial_id},
        )
    assert fail_stale_trials(study, HEARTBEAT.grace_period) == [trial.number]
    reason = study.trials[trial.number].user_attrs["reason"]
    assert reason.startswith("stale: no heartbeat for ") and reason.endswith("(worker died?)")
    assert fail_stale_trials(study, HEARTBEAT.grace_period) == []  # once only: the copy is WAITING


def test_exception_inside_ask_leaves_no_running_trial(tmp_path):
    url, sweep, study = _study(tmp_path, n_trials=2)

    class BrokenSampler(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            raise RuntimeError("sampler exploded")

    sweep._make_sampler = lambda seed: BrokenSampler(seed=seed)
    settings = WorkerSettings(
        sweep_path=SMOKE,
        storage_url=url,
        study_name="s",
        options=RunOptions(heartbeat=HEARTBEAT, checkpoints=tmp_path / "c", max_consecutive_failures=2),
    )
    report = run_worker(settings, sweep, objective=_objective(sweep))
    assert report.failed == 2 and "stopped after 2 failed trials in a row" in report.stop_reason
    assert "sampler exploded" in report.stop_reason
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state for t in trials if t.state != TrialState.WAITING] == [TrialState.FAIL, TrialState.FAIL]
    assert trials[0].user_attrs["reason"] == "ask() failed: RuntimeError: sampler exploded"
