"""hpo/workers/_local.py: worker processes get the settings whole, and a worker that ignores SIGTERM is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.store import HeartbeatSettings
from maskcls_hpo.hpo.workers import LocalWorkers, RunOptions, WorkerSettings
from maskcls_hpo.hpo.workers import _local as supervisor

SMOKE = REPO_ROOT / "sweeps" / "smoke.py"

STUBBORN = """
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1]).with_suffix(".term")
def on_term(signum, frame):
    marker.write_text("got SIGTERM")   # and go on running: this worker ignores the request
signal.signal(signal.SIGTERM, on_term)
Path(sys.argv[1]).with_suffix(".started").write_text("up")
while True:
    time.sleep(0.1)
"""


def _settings(tmp_path, **kw) -> WorkerSettings:
    return WorkerSettings(
        sweep_path=tmp_path / "sweep.py",
        storage_url=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="s",
        n_trials=3,
        options=RunOptions(heartbeat=HeartbeatSettings(interval=2, grace_period=9), **kw),
    )


def test_settings_travel_whole_and_without_the_password(tmp_path):
    s = WorkerSettings(
        sweep_path=tmp_path / "sweep.py",
        storage_url="postgresql+psycopg://maskcls:S3cr3tTok3n@127.0.0.1:5432/db",
        study_name="s",
        n_trials=7,
        options=RunOptions(
            overrides={"data_dir": "/data"},
            heartbeat=HeartbeatSettings(interval=3, grace_period=12),
            logs=tmp_path / "logs",
        ),
    )
    bare, password = s.without_password()
    assert password == "S3cr3tTok3n"
    text = bare.model_dump_json()
    assert "S3cr3tTok3n" not in text
    back = WorkerSettings.model_validate_json(text)
    assert back.options.heartbeat == HeartbeatSettings(interval=3, grace_period=12)
    assert back.n_trials == 7 and back.overrides == {"data_dir": "/data"}
    assert back.storage_url == "postgresql+psycopg://maskcls@127.0.0.1:5432/db"
    assert back.log_dir == tmp_path / "logs" / "s"


def test_defaults_sit_beside_the_sqlite_file(tmp_path):
    s = _settings(tmp_path)
    assert s.checkpoint_root == tmp_path / "checkpoints"
    assert s.log_dir == tmp_path / "logs" / "s"


def test_a_worker_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    monkeypatch.setattr(supervisor, "worker_argv", lambda path: [sys.executable, str(script), str(path)])
    pool = supervisor.LocalWorkers(_settings(tmp_path, logs=tmp_path / "logs"), workers=2)
    pool.start()
    try:
        folder = tmp_path / "logs" / "s"
        deadline = time.monotonic() + 60
        while not all((folder / f"worker-{i}.started").exists() for i in range(2)):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        # each worker got its own settings file, whole, with its index
        for i in range(2):
            doc = json.loads((folder / f"worker-{i}.json").read_text())
            assert doc["worker_index"] == i and doc["n_trials"] == 3 and doc["study_name"] == "s"
        codes = pool.stop(term_timeout=1.0, kill_timeout=20.0)
    finally:
        pool.close()
    assert codes == [-signal.SIGKILL, -signal.SIGKILL]
    assert all((folder / f"worker-{i}.term").read_text() == "got SIGTERM" for i in range(2))
    assert pool.last_lines() == "worker 0 was killed by signal 9; worker 1 was killed by signal 9"


def test_zero_workers_is_refused():
    with pytest.raises(Exception, match="--workers must be at least 1"):
        supervisor.LocalWorkers(None, workers=0)  # type: ignore[arg-type]


def test_workers_killed_by_sigkill_are_reported_as_signal_9(tmp_path):
    settings = WorkerSettings(
        sweep_path=SMOKE,
        storage_url=f"sqlite:///{tmp_path / 's.db'}",
        study_name="s",
        options=RunOptions(logs=tmp_path / "logs"),
    )
    pool = LocalWorkers(settings, workers=2)
    try:
        pool.start()
        for p in pool.procs:
            p.process.send_signal(signal.SIGKILL)
        assert pool.wait(poll_interval=0.1) == [-9, -9]
        assert pool.last_lines([0, 1]) == "worker 0 was killed by signal 9; worker 1 was killed by signal 9"
    finally:
        pool.stop(term_timeout=5)
        pool.close()


def _environ(pid: int) -> str:
    """What `ps eww PID` shows: the process's environment (NUL-separated in /proc), read once it is there."""
    deadline = time.monotonic() + 10
    while True:
        text = Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
        if "PYTHONUNBUFFERED=1" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_no_password_in_worker_environment_or_files_with_a_password_file(tmp_path, monkeypatch):
    secret = "Pw-file-9c1e"
    pw_file = tmp_path / "pgpass"
    pw_file.write_text(secret + "\n")
    monkeypatch.setenv("MASKCLS_HPO_STORAGE", f"postgresql+psycopg://maskcls:{secret}@127.0.0.1:1/db")  # not passed on
    settings = WorkerSettings(
        sweep_path=SMOKE,
        storage_url=f"postgresql+psycopg://maskcls:{secret}@127.0.0.1:1/nosuchdb",
        study_name="s",
        options=RunOptions(password_file=str(pw_file), logs=tmp_path / "logs"),
    )
    pool = LocalWorkers(settings, workers=1)
    try:
        (proc,) = pool.start()
        env = _environ(proc.process.pid)
        assert "PYTHONUNBUFFERED=1" in env  # the environment was read
        assert secret not in env and "PGPASSWORD" not in env
        pool.wait(poll_interval=0.1)  # the worker cannot connect (port 1) and says so in one masked line
    finally:
        pool.stop(term_timeout=5)
        pool.close()
    files = _files_text(tmp_path / "logs")
    assert '"password_file"' in files and "error: " in files
    assert secret not in files


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_password_inside_the_url_travels_as_pgpassword_only(tmp_path, where):
    secret = f"Pw-{where}-77ab"
    url = (
        f"postgresql+psycopg://maskcls:{secret}@127.0.0.1:1/nosuchdb"
        if where == "userinfo"
        else f"postgresql+psycopg://maskcls@127.0.0.1:1/nosuchdb?password={secret}&connect_timeout=3"
    )
    settings = WorkerSettings(
        sweep_path=SMOKE, storage_url=url, study_name="s", options=RunOptions(logs=tmp_path / "logs")
    )
    pool = LocalWorkers(settings, workers=1)
    try:
        (proc,) = pool.start()
        env = _environ(proc.process.pid)
        assert f"PGPASSWORD={secret}" in env.splitlines()
        assert env.count(secret) == 1  # nowhere else (no URL in the environment)
    finally:
        pool.stop(term_timeout=5)
        pool.close()
    assert secret not in _files_text(tmp_path / "logs")
    stored = WorkerSettings.model_validate_json((tmp_path / "logs" / "s" / "worker-0.json").read_text())
    assert "password" not in stored.storage_url and stored.storage_url.startswith("postgresql+psycopg://maskcls@")


# A standby worker as `launch` starts it, with nothing to import: says something while "importing", then waits.
STANDBY = (
    "import sys; print('importing', flush=True); from maskcls_hpo.hpo.workers._main import standby; "
    "told = standby(imports=()); print('told', told[0].name, flush=True); sys.exit(7)"
)


def test_standby_workers_wait_for_their_settings_then_log_where_they_are_told(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "standby_argv", lambda: [sys.executable, "-c", STANDBY])
    pool = LocalWorkers(_settings(tmp_path, logs=tmp_path / "logs"), workers=2)
    try:
        pool.standby()
        assert not (tmp_path / "logs").exists()  # nothing written while on standby
        assert [p.returncode for p in pool.procs] == [None, None]  # waiting for their line
        pool.start()
        assert pool.wait(poll_interval=0.1) == [7, 7]
    finally:
        pool.stop(term_timeout=5)
        pool.close()
    for i in range(2):
        # what it said on standby comes first in its log, then what it said once told its settings file
        log = (tmp_path / "logs" / "s" / f"worker-{i}.log").read_text().splitlines()
        assert log == ["importing", f"told worker-{i}.json"]
        assert json.loads((tmp_path / "logs" / "s" / f"worker-{i}.json").read_text())["worker_index"] == i


def test_standby_workers_of_a_refused_launch_end_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "standby_argv", lambda: [sys.executable, "-c", STANDBY])
    pool = LocalWorkers(_settings(tmp_path, logs=tmp_path / "logs"), workers=2)
    try:
        pool.standby()
        codes = pool.stop(term_timeout=20)
    finally:
        pool.close()
    assert all(code is not None for code in codes)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_standby_worker_that_died_is_named_when_the_workers_are_told_to_start(tmp_path, monkeypatch):
    script = "import sys; print('ImportError: no module named torch', flush=True); sys.exit(1)"
    monkeypatch.setattr(supervisor, "standby_argv", lambda: [sys.executable, "-c", script])
    pool = LocalWorkers(_settings(tmp_path, logs=tmp_path / "logs"), workers=1)
    try:
        pool.standby()
        pool.procs[0].process.wait()
        with pytest.raises(LaunchError) as info:
            pool.start()
    finally:
        pool.close()
    assert str(info.value) == "worker 0 ended while starting (exit code 1): ImportError: no module named torch"


def test_wait_for_exit_wakes_when_one_process_exits(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    quick = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        supervisor.wait_for_exit([sleeper, quick], timeout=120)
        # it returned because `quick` ended (the sleeper still runs), not because the timeout passed
        assert quick.wait(timeout=30) == 3 and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
