"""The sweep service end to end on SQLite: cases C1 (what --n-trials counts), C2 (OOM), C4 (export -> train)."""

import json
import re
import subprocess
import sys

import optuna
import pytest
import yaml
from helpers.studies import ALWAYS_FAILING_SUGGEST
from optuna.trial import TrialState

from maskcls_hpo.config import load_config
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.select import export_trials
from maskcls_hpo.hpo.store import count_trials, open_storage, resolve_storage_url
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

ALWAYS_PRUNE = """
class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True
"""

# A backbone that behaves like a GPU running out of memory at batch size 32 (problem C2), registered with timm.
OOM_MODEL = """
import torch
from timm.models import register_model

class OomAt32(torch.nn.Module):
    num_features = 8
    def __init__(self, **kwargs):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
    def forward(self, x):
        if x.shape[0] == 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if x.shape[0] == 13:
            raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'str'")
        return self.conv(x).mean((2, 3))

@register_model
def oom_at_32(pretrained=False, **kwargs):
    return OomAt32(**kwargs)

BASE_CONFIG["model"] = "oom_at_32"
"""


def start(tmp_path, sweep_path, n_trials, max_failures=5):
    url = resolve_storage_url(str(tmp_path / "study.db"))
    sweep = load_sweep(sweep_path)
    prepare_study(sweep, open_storage(url), "t", n_trials)
    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="t",
        n_trials=n_trials,
        options=RunOptions(checkpoints=tmp_path / "ckpt", poll_interval=0.1, max_consecutive_failures=max_failures),
    )
    report = run_worker(settings, sweep)
    return report, optuna.load_study(study_name="t", storage=open_storage(url))


def cli(*args, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "maskcls_hpo", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


@pytest.mark.slow
def test_c1_three_workers_stop_at_exactly_n_finished(tmp_path, tiny_sweep):
    sweep = tiny_sweep(epochs=1, pruner="optuna.pruners.MedianPruner(n_startup_trials=1)")
    db = tmp_path / "study.db"
    args = [
        "launch",
        str(sweep),
        "--n-trials",
        "8",
        "--workers",
        "3",
        "--storage",
        str(db),
        "--checkpoints",
        str(tmp_path / "ckpt"),
    ]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    storage = open_storage(resolve_storage_url(str(db)))
    study = optuna.load_study(study_name="tiny", storage=storage)
    c = count_trials(storage, study._study_id)
    assert c.finished == 8 and c.running == 0 and c.failed == 0
    n_before = len(study.trials)
    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 0
    assert "nothing to do" in second.stderr + second.stdout
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == n_before  # no trial added
    # the three workers each ran some of the trials
    assert len({t.user_attrs.get("worker") for t in study.trials if t.state.is_finished()}) >= 2


def test_c1_all_pruned_still_stops(tmp_path, tiny_sweep):
    sweep = tiny_sweep(epochs=2, pruner="AlwaysPrune()", extra=ALWAYS_PRUNE)
    report, study = start(tmp_path, sweep, n_trials=3)
    assert (report.complete, report.pruned, report.failed) == (0, 3, 0)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(
        t.user_attrs["reason"] == "pruned at epoch 1" or t.user_attrs["reason"].startswith("pruned at epoch 1 ")
        for t in study.trials
    )
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # pruned after the first report


def test_c1_all_failing_stops_with_reason(tmp_path, tiny_sweep):
    report, study = start(tmp_path, tiny_sweep(extra=ALWAYS_FAILING_SUGGEST), n_trials=4, max_failures=3)
    assert report.failed == 3 and report.complete == 0
    assert "stopped after 3 failed trials in a row" in report.stop_reason
    assert "TypeError" in report.stop_reason
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert study.trials[0].user_attrs["reason"].startswith("TypeError: unsupported operand")


def test_c2_oom_trial_is_pruned_and_worker_goes_on(tmp_path, tiny_sweep):
    queued = """
KNOWN_GOOD = [{"batch_size": 32, "lr": 1e-3}, {"batch_size": 16, "lr": 1e-3}]
"""
    report, study = start(tmp_path, tiny_sweep(extra=OOM_MODEL + queued), n_trials=2)
    oom, ok = study.trials
    assert oom.params["batch_size"] == 32 and oom.state == TrialState.PRUNED
    assert oom.user_attrs["reason"] == "oom"
    assert ok.params["batch_size"] == 16 and ok.state == TrialState.COMPLETE  # same worker, next trial
    assert (report.complete, report.pruned, report.failed) == (1, 1, 0)


def test_diverged_trial_is_pruned_with_its_reason_never_complete(tmp_path, tiny_sweep):
    """1 epoch at lr 1e3: the only epoch is also the last one; a diverged run must not become the best."""
    extra = """
def suggest(trial):
    return {"lr": trial.suggest_categorical("lr", [1000.0]),
            "batch_size": trial.suggest_categorical("batch_size", [16])}
"""
    report, study = start(tmp_path, tiny_sweep(epochs=1, extra=extra), n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    reason = trial.user_attrs["reason"]
    assert re.fullmatch(r"(non-finite|diverged:) .*at epoch 1( step \d+)?", reason), reason
    assert list(trial.intermediate_values) == []  # the diverged epoch's F1 was never reported
    assert (report.complete, report.pruned, report.failed) == (0, 1, 0)
    with pytest.raises(ValueError):
        study.best_trial  # noqa: B018 - no COMPLETE trial: nothing to export


def test_grid_sampler_over_numpy_values_runs_and_stores_python_numbers(tmp_path, tiny_sweep):
    extra = """
import numpy as np

def suggest(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [16, 32]),
            "lr": trial.suggest_float("lr", 1e-3, 1e-2)}

def make_sampler(seed):
    return optuna.samplers.GridSampler({"batch_size": np.array([16, 32]), "lr": np.array([2e-3])}, seed=seed)
"""
    report, study = start(tmp_path, tiny_sweep(epochs=1, extra=extra), n_trials=2)
    assert (report.complete + report.pruned, report.failed) == (2, 0)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["batch_size"] for t in study.trials) == [16, 32]
    assert all(type(t.params["batch_size"]) is int for t in study.trials)
    assert all(type(t.user_attrs["config"]["batch_size"]) is int for t in study.trials)


def test_real_bug_in_model_code_fails_loudly(tmp_path, tiny_sweep):
    # batch size 13 makes the test backbone raise a TypeError: a bug, not an OOM
    extra = (
        OOM_MODEL
        + """
def suggest(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [13])}
"""
    )
    report, study = start(tmp_path, tiny_sweep(extra=extra), n_trials=1, max_failures=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["reason"].startswith("TypeError: unsupported operand")
    assert "2 failed trials in a row" in report.stop_reason


def test_objective_records_epochs_and_export_retrains(tmp_path, tiny_sweep):
    queued = '\nKNOWN_GOOD = [{"batch_size": 16, "lr": 5e-3}]\n'
    report, study = start(tmp_path, tiny_sweep(epochs=3, extra=queued), n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # one report per epoch, step = epoch
    assert trial.value == pytest.approx(max(trial.intermediate_values.values()))  # best epoch's val macro F1
    attrs = trial.user_attrs
    assert attrs["best_epoch"] in (1, 2, 3) and trial.intermediate_values[attrs["best_epoch"]] == trial.value
    assert len(attrs["epoch_seconds"]) == 3 and attrs["images_per_second"] > 0
    assert attrs["device"] == "cpu" and attrs["peak_memory_bytes"] > 0
    assert set(attrs["task_f1"]) == {"mask", "gender", "age"} and 0 <= attrs["accuracy"] <= 1
    assert (tmp_path / "ckpt" / "t" / "trial_00000" / "best.pt").is_file()

    (path,) = export_trials(study, tmp_path / "best.yaml")
    doc = yaml.safe_load(path.read_text())
    assert doc["config"]["batch_size"] == 16 and doc["config"]["lr"] == pytest.approx(5e-3)
    # `train --config` takes the exported file unchanged; the same seed on the CPU retrains to the same F1
    out = tmp_path / "retrain"
    result = cli("train", "--config", str(path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == load_config(path).to_dict()
    assert metrics["best_f1"] == pytest.approx(trial.value, abs=0.02)


def _signal_worker(tmp_path, tiny_sweep, during_upload: bool):
    """Run a worker whose second trial sends this process SIGTERM, in or out of a deferred section."""
    import os
    import signal

    from maskcls_hpo.hpo.signals import deferred_interrupts

    sweep_path = tiny_sweep()
    url = resolve_storage_url(str(tmp_path / "sig.db"))
    sweep = load_sweep(sweep_path)
    prepare_study(sweep, open_storage(url), "sig", 5)

    def objective(trial):
        sweep.suggest(trial)
        trial.report(0.25, 1)
        if trial.number == 1:
            if during_upload:  # like the artifact upload after training: the trial must still be stored
                with deferred_interrupts():
                    os.kill(os.getpid(), signal.SIGTERM)
            else:  # mid-training
                os.kill(os.getpid(), signal.SIGTERM)
        return 0.5

    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="sig",
        n_trials=5,
        options=RunOptions(checkpoints=tmp_path / "ckpt", poll_interval=0.1),
    )
    report = run_worker(settings, sweep, objective=objective)
    return report, optuna.load_study(study_name="sig", storage=open_storage(url)).trials


def test_stop_signal_after_training_keeps_the_trial_and_stops(tmp_path, tiny_sweep):
    report, trials = _signal_worker(tmp_path, tiny_sweep, during_upload=True)
    assert report.stop_reason == "interrupted"
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]  # no further trial started


def test_stop_signal_mid_trial_requeues_it(tmp_path, tiny_sweep):
    report, trials = _signal_worker(tmp_path, tiny_sweep, during_upload=False)
    assert report.stop_reason == "interrupted"
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["reason"] == "interrupted (worker stopped)"
    assert trials[2].params == trials[1].params and trials[2].intermediate_values == {1: 0.25}
