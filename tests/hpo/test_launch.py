"""hpo/launch.py: run_sweep, the Python API behind `maskcls-hpo launch`, without the CLI."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import optuna
import pytest

import maskcls_hpo as m
from maskcls_hpo import data
from maskcls_hpo.errors import DataError, MaskclsError, SweepError
from maskcls_hpo.hpo import launch, workers
from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.store import open_storage
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.hpo.workers import LocalWorkers, SweepEvents
from maskcls_hpo.hpo.workers import _local as local_workers


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
        events=SweepEvents(on_progress=snapshots.append, on_message=messages.append),
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


def _record_pools(monkeypatch) -> list[LocalWorkers]:
    """Every LocalWorkers that run_sweep makes, kept for the test to look at."""
    pools: list[LocalWorkers] = []

    class Recording(LocalWorkers):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(local_workers, "LocalWorkers", Recording)  # what LocalBackend makes
    return pools


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_workers_start_before_the_data_check_and_take_trials_once_the_study_is_ready(tmp_path, tiny_sweep, monkeypatch):
    sweep = tiny_sweep(epochs=1)
    db = tmp_path / "early.db"
    pools = _record_pools(monkeypatch)
    events: list[tuple] = []
    check_data = launch.prepare_data

    def prepare_data(config):
        pool = pools[0]
        # the worker processes run (importing torch) while the data is checked; nothing is stored yet
        events.append(("data check", [p.process.pid for p in pool.procs], [p.returncode for p in pool.procs]))
        events.append(("stored before the check", db.exists(), (tmp_path / "logs").exists()))
        meta = check_data(config)
        events.append(("data checked", datetime.datetime.now()))
        return meta

    monkeypatch.setattr(launch, "prepare_data", prepare_data)
    result = m.run_sweep(
        sweep,
        3,
        storage=db,
        workers=2,
        poll_interval=0.2,
        events=SweepEvents(on_progress=lambda p: events.append(("frame", p.phase))),
    )
    assert events[0] == ("frame", "starting")  # the first frame comes before the data check
    assert events[1][0] == "data check" and len(events[1][1]) == 2 and events[1][2] == [None, None]
    assert events[2] == ("stored before the check", False, False)
    # the budget stays exact (C1): 3 finished trials from 2 workers, no more
    assert result.reached and result.counts.finished == 3 and result.worker_exit_codes == [0, 0]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3 and {t.state for t in finished} <= {optuna.trial.TrialState.COMPLETE}
    # the trials ran in the processes started before the data check, each after the check had finished
    pids = {int(t.user_attrs[TrialAttrs.WORKER].split(":")[1].split("/")[0]) for t in finished}
    assert pids <= set(events[1][1])
    checked = events[3][1]
    assert events[3][0] == "data checked" and all(t.datetime_start > checked for t in finished)
    # launch's workers do not check the data again
    settings = json.loads((tmp_path / "logs" / "tiny" / "worker-0.json").read_text())
    assert settings["check_data"] is False and settings["worker_index"] == 0
    assert [line for line in events if line[0] == "frame"][-1] == ("frame", "done")


def test_a_refused_data_check_stops_the_started_workers_and_creates_nothing(
    tmp_path, tiny_sweep, tiny_demo, monkeypatch
):
    sweep = tiny_sweep(epochs=1)
    copy = tmp_path / "data"
    shutil.copytree(tiny_demo, copy)
    broken = sorted((copy / "train" / "images").glob("*/mask1.*"))[0]
    broken.write_bytes(b"not an image at all")
    pools = _record_pools(monkeypatch)
    frames = []
    before = _tree(tmp_path)
    with pytest.raises(DataError) as info:
        m.run_sweep(
            sweep, 2, storage=tmp_path / "x.db", workers=2, data_dir=copy, events=SweepEvents(on_progress=frames.append)
        )
    assert str(broken) in str(info.value) and "unreadable image" in str(info.value)
    assert [f.phase for f in frames] == ["starting"]  # the workers had been started ...
    assert len(pools) == 1 and len(pools[0].procs) == 2
    assert all(p.returncode is not None for p in pools[0].procs)  # ... and none is left running
    # no SQLite file, no logs or settings files, no checkpoints, no cache folder: nothing at all
    assert _tree(tmp_path) == before


def test_images_are_decoded_as_a_check_only_when_the_cache_is_built(tmp_path, tiny_sweep, monkeypatch):
    sweep = load_sweep(tiny_sweep(epochs=1))
    decoded: list[str] = []
    verify = data.verify_image
    monkeypatch.setattr(data, "verify_image", lambda path: decoded.append(str(path)) or verify(path))
    config = sweep.build_config({})
    meta = workers.prepare_data(config)  # no cache yet: every image is decoded as a check, then cached
    assert len(decoded) == 24 * 7 and meta["dataset"]["images"] == 24 * 7
    decoded.clear()
    again = workers.prepare_data(config)  # the same files are cached: the cache proves they decode
    assert decoded == [] and again == meta
    url = f"sqlite:///{tmp_path / 'join.db'}"
    launch.prepare_study(sweep, open_storage(url), "tiny", 2, study_attrs=meta)
    workers.check_join(sweep, url, "tiny", check_data=True)  # a joining worker compares fingerprints only
    assert decoded == []
