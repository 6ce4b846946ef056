"""Faults with real worker processes: killed workers, stale trials, many SQLite writers (docs/architecture.md,
"Faults").

- A worker killed with SIGKILL in the middle of a trial (PostgreSQL): the study still reaches its finished
  count, nothing stays RUNNING, the killed trial is re-queued with the same params and its re-run continues
  at the epoch after the last checkpoint, keeping the intermediate values.
- `status` with no worker alive finds the stale trial itself and re-queues it; a worker started later
  resumes it (SQLite).
- A worker whose trial another process failed as stale while it still ran logs a warning and goes on.
- SQLite with 4 workers and a reader polling every 0.2 s: never "database is locked", no FAIL trial.
- Which database errors are retried (transient) and which are not.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from helpers import REPO_ROOT
from helpers.pg import cli, cli_background, load_trials, wait_for, worker_logs, worker_pid, write_sweep
from optuna.trial import TrialState

from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.store import HeartbeatSettings, is_transient_db_error, open_storage
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

# Short heartbeats keep the tests fast; the grace period stays well above a heartbeat that is late because the
# 2 CPU cores are busy (a live trial must never look stale).
KILL_HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "8"]
SAFE_HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "15"]
RESUME_LINE = re.compile(r"trial (\d+) resumes from (\S+) \(epoch (\d+)\); training continues at epoch (\d+)")


def _study_stored(url: str, study: str) -> bool:
    """Whether `study` exists, asked with plain SQL.

    NOTE not through Optuna's RDBStorage: on a database whose tables `launch` is creating at that moment it
    stamps `alembic_version` itself and one of the two fails (PostgreSQL: duplicate key in
    pg_type_typname_nsp_index); by the time the study exists, `launch` has set the tables up.
    """
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            query = sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :name")
            return con.execute(query, {"name": study}).first() is not None
    except sqlalchemy.exc.SQLAlchemyError:  # no tables yet
        return False
    finally:
        engine.dispose()


def _running_with_epochs(url: str, study: str, min_epochs: int, max_epochs: int):
    """The first RUNNING trial that has reported between min_epochs and max_epochs epochs, else None."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return None
    if not _study_stored(url, study):
        return None
    try:
        trials = load_trials(url, study)
    except Exception:  # noqa: BLE001 - storage or study not created yet
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and min_epochs <= len(t.intermediate_values) <= max_epochs:
            if "worker" in t.user_attrs:
                return t
    return None


def _check_resumed(killed, copy, epochs: int, log_text: str, cwd: Path, study: str, root: Path) -> int:
    """Assert that `copy` re-ran `killed` from its last checkpoint; returns the checkpoint's epoch.

    Checkpoints are under the default `--checkpoints` root: `checkpoints/` beside an SQLite database, else
    `storage/checkpoints` relative to the workers' `cwd`.
    """
    assert killed.state == TrialState.FAIL
    assert copy.system_attrs["failed_trial"] == killed.number
    assert copy.state == TrialState.COMPLETE
    assert copy.params == killed.params
    last_pt = (root / study / f"trial_{killed.number:05d}" / "last.pt").resolve()
    assert (cwd / copy.user_attrs["resumed_from"]).resolve() == last_pt
    lines = [m for m in RESUME_LINE.finditer(log_text) if int(m.group(1)) == copy.number]
    assert len(lines) == 1, log_text[-3000:]
    path, ckpt_epoch, next_epoch = lines[0].group(2), int(lines[0].group(3)), int(lines[0].group(4))
    assert (cwd / path).resolve() == last_pt
    assert next_epoch == ckpt_epoch + 1
    reported = sorted(killed.intermediate_values)
    k = len(reported)
    assert reported == list(range(1, k + 1)) and k >= 1
    # the checkpoint is written before the epoch is reported: it holds the last reported epoch or one more
    assert ckpt_epoch in (k, k + 1) and ckpt_epoch < epochs
    # the re-run's values: every epoch once; the killed run's values kept as they were
    assert sorted(copy.intermediate_values) == list(range(1, epochs + 1))
    for step in reported:
        assert copy.intermediate_values[step] == killed.intermediate_values[step]
    # only epochs ckpt_epoch+1..epochs were trained again: a run from scratch would have added `epochs` times
    assert len(copy.user_attrs["epoch_seconds"]) == epochs
    return ckpt_epoch


@pytest.mark.postgres
def test_sigkill_mid_trial_is_retried_and_resumes(pg_database, tiny_demo, tmp_path):
    epochs = 6
    sweep = write_sweep(tmp_path, "killed", tiny_demo, epochs=epochs, prune=False, batch_sleep=0.25)
    launch = cli_background(
        ["launch", str(sweep), "--n-trials", "3", "--workers", "2", "--storage", pg_database, *KILL_HEARTBEAT],
        cwd=tmp_path,
    )
    try:
        victim = wait_for(
            lambda: _running_with_epochs(pg_database, "killed", 2, epochs - 2),
            timeout=400,
            what="a trial in the middle of its epochs",
        )
        os.kill(worker_pid(victim), signal.SIGKILL)
        code = launch.wait(timeout=500)
    finally:
        if launch.poll() is None:
            launch.kill()
    out = launch.log_path.read_text(errors="replace")
    assert code == 0, out[-3000:]

    trials = load_trials(pg_database, "killed")
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) + len(by_state[TrialState.PRUNED]) == 3
    assert not by_state[TrialState.RUNNING]
    assert [t.number for t in by_state[TrialState.FAIL]] == [victim.number]  # only the killed one failed
    killed = by_state[TrialState.FAIL][0]
    copy = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    logs = worker_logs(tmp_path, "killed")
    _check_resumed(
        killed, copy, epochs, "\n".join(logs.values()), tmp_path, "killed", tmp_path / "storage" / "checkpoints"
    )
    # the surviving worker did all the rest and stopped at the budget
    assert sum("stops: study holds 3 finished trials" in text for text in logs.values()) == 1


def test_status_fails_stale_trial_without_any_worker(tiny_demo, tmp_path):
    epochs = 4
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sweep = write_sweep(tmp_path, "orphan", tiny_demo, epochs=epochs, prune=False, batch_sleep=0.25)
    launch = cli_background(["launch", str(sweep), "--n-trials", "1", "--storage", url, *KILL_HEARTBEAT], cwd=tmp_path)
    try:
        victim = wait_for(
            lambda: _running_with_epochs(url, "orphan", 1, epochs - 2),
            timeout=400,
            what="trial 0 after its first epoch",
        )
        os.kill(worker_pid(victim), signal.SIGKILL)
        launch.kill()  # and the launching process: nothing is left alive to notice
        launch.wait(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
    time.sleep(9)  # > the grace period of 8 s after the last heartbeat
    status = cli(["status", "--storage", url], cwd=tmp_path, env={"MASKCLS_HPO_GRACE_PERIOD": "8"})
    assert status.returncode == 0, status.stderr
    assert f"stale trials failed and re-queued: [{victim.number}]" in status.stderr
    trials = load_trials(url, "orphan")
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.FAIL), (1, TrialState.WAITING)]
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].intermediate_values == trials[0].intermediate_values  # inherited while waiting

    # a worker joining later picks up the queued copy and resumes it from the checkpoint
    worker = cli(["worker", str(sweep), "--storage", url, *KILL_HEARTBEAT], cwd=tmp_path, timeout=400)
    assert worker.returncode == 0, worker.stderr[-3000:]
    trials = load_trials(url, "orphan")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    _check_resumed(trials[0], trials[1], epochs, worker.stderr, tmp_path, "orphan", tmp_path / "checkpoints")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:The reported value is ignored")
def test_worker_goes_on_when_its_trial_was_failed_as_stale(tmp_path, caplog):
    """Another process fails this worker's trial as stale mid-run: a warning, no failure, budget met."""
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    sweep_path = REPO_ROOT / "sweeps" / "smoke.py"
    sweep = load_sweep(sweep_path)
    heartbeat = HeartbeatSettings(interval=1, grace_period=4)
    prepare_study(sweep, open_storage(url, heartbeat), "stale", n_trials=3)
    other = open_storage(url, heartbeat)  # "another process": its own engine
    calls = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        sweep.suggest(trial)
        trial.report(0.25, 1)
        if trial.number == 0:
            # what fail_stale_trials does in another worker when this trial's heartbeat was late
            other.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(
                optuna.load_study(study_name="stale", storage=other), other.get_trial(trial._trial_id)
            )
        trial.report(0.5, 2)  # raises: the trial is finished
        return 0.5

    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="stale",
        options=RunOptions(heartbeat=heartbeat, checkpoints=tmp_path / "ckpt", poll_interval=0.1),
    )
    with caplog.at_level("WARNING", logger="maskcls_hpo.hpo.workers._loop"):
        report = run_worker(settings, sweep, objective=objective)
    assert (report.complete, report.failed) == (3, 0)
    assert report.stop_reason == "study holds 3 finished trials (target 3)"
    said = [r.getMessage() for r in caplog.records]
    # no checkpoint was written (the objective trains nothing): the copy starts over, and the line says so
    line = "trial 0 was marked FAIL by another process while it ran here; its queued copy starts at epoch 1"
    assert any(m.startswith(line) and m.endswith("this worker goes on") for m in said), said
    trials = load_trials(url, "stale")
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    assert calls == [0, 1, 2, 3]


def test_sqlite_four_workers_and_a_polling_reader_never_locked(tiny_demo, tmp_path):
    from maskcls_hpo.results.status import study_status

    db = tmp_path / "many.db"
    url = f"sqlite:///{db}"
    sweep = write_sweep(tmp_path, "many", tiny_demo, epochs=2)
    launch = cli_background(
        ["launch", str(sweep), "--n-trials", "8", "--workers", "4", "--storage", url, *SAFE_HEARTBEAT], cwd=tmp_path
    )
    # the reader starts once `launch` has made the study (before that there is nothing to read)
    wait_for(
        lambda: "study 'many' on" in launch.log_path.read_text(errors="replace") or launch.poll() is not None,
        timeout=300,
        what="launch to create the study",
    )
    errors: list[str] = []
    polls = []
    stop = threading.Event()
    storage = open_storage(url, HeartbeatSettings(interval=1, grace_period=15), create=False)
    study = optuna.load_study(study_name="many", storage=storage)

    def read_once() -> None:
        try:
            polls.append(study_status(study)["counts"]["finished"])
        except Exception as err:  # noqa: BLE001 - every error is a finding
            errors.append(f"{type(err).__name__}: {err}")

    def reader() -> None:
        while not stop.is_set():
            read_once()
            stop.wait(0.2)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        code = launch.wait(timeout=600)
    finally:
        stop.set()
        thread.join(timeout=60)
        if launch.poll() is None:
            launch.kill()
    read_once()  # once more after the sweep ended: the last read is never raced with it
    out = launch.log_path.read_text(errors="replace")
    assert code == 0, out[-3000:]
    logs = worker_logs(tmp_path, "many")
    assert len(logs) == 4
    everything = "\n".join([out, *logs.values(), *errors])
    assert "database is locked" not in everything
    assert "database error" not in everything  # not even a retried one
    assert errors == []
    # read during the sweep (how often depends on the machine's load) and after it: the last read is the total
    assert len(polls) >= 2 and polls[-1] == 8 and polls == sorted(polls)
    trials = load_trials(url, "many")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 8
    assert not [t.number for t in trials if t.state in (TrialState.FAIL, TrialState.RUNNING)]


@pytest.mark.postgres
def test_which_database_errors_are_retried(pg_database, tmp_path):
    def error_of(fn) -> BaseException:
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            return err
        raise AssertionError("no error")

    def connect(url: str):
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    base = sqlalchemy.engine.make_url(pg_database)
    refused = error_of(lambda: connect(base.set(port=1)))
    no_db = error_of(lambda: connect(base.set(database="maskcls_no_such_db")))
    no_role = error_of(lambda: connect(base.set(username="maskcls_no_such_role")))
    assert is_transient_db_error(refused)  # a server restarting / unreachable
    assert not is_transient_db_error(no_db)
    assert not is_transient_db_error(no_role)

    db = tmp_path / "x.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x INTEGER)")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = error_of(lambda: sqlite3.connect(db, timeout=0).execute("SELECT * FROM t"))
    finally:
        holder.execute("ROLLBACK")
    assert "locked" in str(locked) and is_transient_db_error(locked)
    assert not is_transient_db_error(error_of(lambda: sqlite3.connect(db).execute("SELECT * FROM missing")))
    assert not is_transient_db_error(ValueError("database is locked"))  # not a database error at all
    # Optuna wraps driver errors in StorageInternalError: the cause decides
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = refused
    assert is_transient_db_error(wrapped)
