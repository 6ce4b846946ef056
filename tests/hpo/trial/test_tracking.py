"""Experiment tracking (hpo/trial/_tracking.py): TensorBoard scalars and hparams per trial, an MLflow run per trial."""

from __future__ import annotations

import optuna
import pytest

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.store import open_storage, resolve_storage_url
from maskcls_hpo.hpo.trial import SCALARS, check_mlflow, load_sweep, trial_log_dir
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

# Two trials with known params (queued), so that the logged params can be checked by hand.
QUEUED = """
KNOWN_GOOD = [{"batch_size": 16, "lr": 0.002}, {"batch_size": 32, "lr": 0.005}]
"""


@pytest.fixture
def tracked_sweep(tmp_path, tiny_sweep):
    """Two 2-epoch trials run by a real worker with TensorBoard and an MLflow sqlite store; (study, settings)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sweep_path = tiny_sweep(epochs=2, extra=QUEUED)
    url = resolve_storage_url(str(tmp_path / "study.db"))
    sweep = load_sweep(sweep_path)
    prepare_study(sweep, open_storage(url), "t", 2)
    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="t",
        n_trials=2,
        options=RunOptions(
            checkpoints=tmp_path / "ckpt", poll_interval=0.1, mlflow=f"sqlite:///{tmp_path / 'mlflow.db'}"
        ),
    )
    report = run_worker(settings, sweep)
    assert (report.complete, report.failed) == (2, 0)
    return optuna.load_study(study_name="t", storage=open_storage(url)), settings


@pytest.mark.slow
def test_a_sweep_writes_tensorboard_scalars_and_an_mlflow_run_per_trial(tracked_sweep):
    """One real 2-trial sweep (2 epochs each) read back with tensorboard's EventAccumulator and MLflow's client."""
    study, settings = tracked_sweep
    check_tensorboard(study, settings)
    check_mlflow_runs(study, settings)


def check_tensorboard(study, settings):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert settings.tensorboard_dir == settings.checkpoint_root.parent / "tensorboard" / "t"  # beside study.db
    assert sorted(p.name for p in settings.tensorboard_dir.iterdir()) == ["trial_00000", "trial_00001"]
    for trial in study.trials:
        acc = EventAccumulator(str(trial_log_dir(settings.tensorboard_dir, trial.number))).Reload()
        scalars = acc.Tags()["scalars"]
        assert set(SCALARS) | {"best/val_macro_f1"} <= set(scalars)
        for tag in SCALARS:
            assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
        f1 = {e.step: e.value for e in acc.Scalars("val/macro_f1")}
        assert f1 == pytest.approx(trial.intermediate_values, abs=1e-6)  # what the trial reported to Optuna
        assert acc.Scalars("best/val_macro_f1")[0].value == pytest.approx(trial.value, abs=1e-6)
        lr = [e.value for e in acc.Scalars("lr")]
        assert lr[0] == pytest.approx(trial.params["lr"], rel=1e-6)  # the first epoch runs at the sampled lr
        assert all(e.value > 0 for e in acc.Scalars("train/loss"))
        hp = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["lr"].number_value == pytest.approx(trial.params["lr"])
        assert start.hparams["batch_size"].number_value == trial.params["batch_size"]
    assert [t.params for t in study.trials] == [{"batch_size": 16, "lr": 0.002}, {"batch_size": 32, "lr": 0.005}]


def check_mlflow_runs(study, settings):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.options.mlflow)
    experiment = client.get_experiment_by_name("t")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["trial_0", "trial_1"]
    for trial in study.trials:
        run = runs[f"trial_{trial.number}"]
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        assert run.data.tags["state"] == "COMPLETE" and run.data.tags["optuna.trial"] == str(trial.number)
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_macro_f1")
        assert {m.step: m.value for m in history} == pytest.approx(trial.intermediate_values, abs=1e-9)
        assert run.data.metrics["best_val_macro_f1"] == pytest.approx(trial.value)
        assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(run.data.metrics)


def test_bad_mlflow_uri_is_one_line(tmp_path):
    with pytest.raises(LaunchError, match=r"^--mlflow nosuch://x: cannot open the MLflow tracking store") as err:
        check_mlflow("nosuch://x", "t")
    assert "\n" not in str(err.value)
    assert check_mlflow(f"sqlite:///{tmp_path / 'ok.db'}", "t") == check_mlflow(f"sqlite:///{tmp_path / 'ok.db'}", "t")


def test_a_broken_tracking_backend_never_fails_a_trial(tmp_path, caplog):
    from maskcls_hpo.hpo.trial import TrialTracker
    from maskcls_hpo.train import EpochResult

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    tracker = TrialTracker("t", tensorboard_dir=blocker / "tb", mlflow_uri=f"sqlite:///{blocker}/sub/mlflow.db")
    r = EpochResult(1, 0.5, 0.6, 0.25, 0.5, {"mask": 0.1, "gender": 0.2, "age": 0.3}, 0.01, 1.0, 100.0, True)
    objective = tracker.wrap(lambda trial: (tracker.epoch(trial.number, trial.params, r), 0.25)[1])
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert study.trials[0].value == 0.25
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert any("no TensorBoard scalars" in w for w in warnings) and any("no MLflow run" in w for w in warnings)
