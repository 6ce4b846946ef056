"""hpo/launch.py: run_sweep, the Python API behind `maskcls-hpo launch`, without the CLI."""

from __future__ import annotations

import optuna
import pytest

import maskcls_hpo as m
from maskcls_hpo.errors import MaskclsError, SweepError


def test_run_sweep_reaches_exactly_four_finished_trials(tmp_path, tiny_sweep):
    sweep = tiny_sweep(epochs=1)
    db = tmp_path / "nb.db"
    messages: list[str] = []
    snapshots = []
    result = m.run_sweep(
        sweep,
        4,
        storage=db,
        workers=2,
        on_message=messages.append,
        on_progress=snapshots.append,
        poll_interval=0.2,
    )
    assert result.reached and not result.interrupted
    assert result.counts.finished == 4 and result.counts.running == 0
    assert result.worker_exit_codes == [0, 0]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 4
    assert result.best_value == pytest.approx(max(t.value for t in finished if t.value is not None))
    assert snapshots[-1].counts.finished == 4
    assert any("checking data" in line for line in messages)
    # a second call adds none
    again = m.run_sweep(sweep, 4, storage=db, workers=2)
    assert again.worker_exit_codes == [] and "already holds 4 finished trials" in again.message
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").trials) == len(study.trials)


def test_run_sweep_raises_one_maskcls_error_for_a_missing_sweep(tmp_path):
    with pytest.raises(SweepError) as info:
        m.run_sweep(tmp_path / "nosuch.py", 4, storage=tmp_path / "x.db")
    assert isinstance(info.value, MaskclsError)
    assert "nosuch.py" in str(info.value)
    assert not (tmp_path / "x.db").exists()


def test_the_api_documents_itself():
    doc = m.run_sweep.__doc__
    assert "n_trials" in doc and "Raises:" in doc and "Returns:" in doc
    assert set(m.__all__) >= {"TrainConfig", "train", "run_sweep", "export_best", "predict", "score", "MaskclsError"}
