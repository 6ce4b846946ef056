"""A full disk, said plainly (issue 25): the checkpoint folder or the SQLite storage folder on a small tmpfs.

A trial that hits the full disk fails with reason ``disk-full: FOLDER has N MiB free``; the worker stops at once
(no failure budget burnt); launch's last line says so; no ``.tmp`` is left and no trial is left RUNNING; a new
launch refuses before starting when the checkpoint root cannot hold one trial's checkpoints.

The tmpfs comes from the fixture `tmpfs` (tests/system/conftest.py: ``mount -t tmpfs``, root only; the tests skip,
saying so, where mounting is not permitted).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from helpers import REPO_ROOT
from helpers.pg import cli
from optuna.trial import TrialState

SMOKE = REPO_ROOT / "sweeps" / "smoke.py"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def _trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}").trials


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_checkpoint_folder_fails_one_trial_and_stops(tmpfs, tmp_path, tiny_demo):
    full = tmpfs(tmp_path / "full", "2m")  # a smoke trial writes ~3 MB of checkpoints
    args = ["launch", str(SMOKE), "--n-trials", "3", "--storage", "s.db", "--data-dir", str(tiny_demo)]
    done = cli([*args, "--checkpoints", str(full)], cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the study did not reach 3 finished trials (0 finished, 1 failed); ")
    assert f"stopped: disk-full: {full}/smoke/trial_00000 has " in last and "free space there" in last
    trials = _trials(tmp_path / "s.db")
    assert [t.state for t in trials] == [TrialState.FAIL]  # one trial, then the worker stopped
    assert trials[0].user_attrs["reason"].startswith(f"disk-full: {full}/smoke/trial_00000 has ")
    assert _tmp_files(full) == [] and _tmp_files(tmp_path) == []
    # the next launch refuses before starting: the trial folder so far is larger than what is free
    again = cli([*args, "--checkpoints", str(full)], cwd=tmp_path)
    assert again.returncode == 1
    free = shutil.disk_usage(full).free / 2**20
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: disk-full: {full} has {free:.1f} MiB free; one trial's checkpoints need about "
        f"{sum(f.stat().st_size for f in (full / 'smoke' / 'trial_00000').iterdir()) / 2**20:.1f} MiB; free space "
        "there or pass --checkpoints DIR; nothing was started"
    )
    assert len(_trials(tmp_path / "s.db")) == 1


def test_a_full_sqlite_storage_folder_is_named_and_leaves_nothing_running(tmpfs, tmp_path, tiny_demo):
    ready = cli(
        ["launch", str(SMOKE), "--storage", "s.db", "--data-dir", str(tiny_demo), "--workers", "0"], cwd=tmp_path
    )
    assert ready.returncode == 0, ready.stderr
    size = (tmp_path / "s.db").stat().st_size
    full = tmpfs(tmp_path / "full", f"{size // 1024 + 24}k")  # the database and hardly more
    trials_before = len(_trials(tmp_path / "s.db"))
    shutil.copy(tmp_path / "s.db", full / "s.db")
    args = ["launch", str(SMOKE), "--storage", str(full / "s.db"), "--data-dir", str(tiny_demo)]
    done = cli([*args, "--checkpoints", str(tmp_path / "ck")], cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    # SQLite fails where it does (opening: its WAL cannot grow; or the first write); either way the line names it
    assert last.startswith("error: "), last
    assert f"disk-full: {full} has " in last and "free space there" in last, last
    assert "Traceback" not in last and 'File "' not in last
    subprocess.run(["mount", "-o", "remount,size=10m", str(full)], check=True)  # free space, then look
    assert [t for t in _trials(full / "s.db") if t.state == TrialState.RUNNING] == []
    assert len(_trials(full / "s.db")) <= trials_before + 1  # at most the one trial that hit the full disk
    assert _tmp_files(full) == [] and _tmp_files(tmp_path / "ck") == []
