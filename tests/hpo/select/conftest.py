"""Fixtures of the confirm and finalize tests: one finished source study per session."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers.processes import maskcls_hpo_command, subprocess_env
from helpers.studies import CONFIRM_SWEEP, sqlite_copy

# --- confirm / finalize fixtures (owner: confirm and finalize) ----------------------------------------
# One finished source study per session: 2 COMPLETE trials of a 1-epoch sweep on `tiny_demo`, run in-process
# by the real worker loop into an SQLite file. Tests copy the file (`confirm_source.copy(folder)`), so each
# confirm/finalize starts from the same study and none sees another's confirm study.


@pytest.fixture(scope="session")
def confirm_source(tmp_path_factory, tiny_demo):
    """A finished study `src` (2 COMPLETE trials, 1 epoch each) in an SQLite file; `.copy(folder)` copies the
    database into `folder` and returns its path. Also: `.sweep` (the sweep file), `.data` (the dataset),
    `.cache` (the shared image cache folder), `.study` ("src")."""
    from maskcls_hpo.hpo.launch import prepare_study
    from maskcls_hpo.hpo.store import HeartbeatSettings, open_storage
    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

    root = tmp_path_factory.mktemp("confirm_source")
    cache = root / "cache"
    sweep_path = root / "src.py"
    sweep_path.write_text(CONFIRM_SWEEP.replace("DATA_DIR", str(tiny_demo)).replace("CACHE_DIR", str(cache)))
    db = root / "src.db"
    url = f"sqlite:///{db}"
    sweep = load_sweep(sweep_path)
    heartbeat = HeartbeatSettings(interval=5, grace_period=60)
    prepare_study(sweep, open_storage(url, heartbeat), "src", n_trials=2)
    settings = WorkerSettings(
        sweep_path=sweep_path,
        storage_url=url,
        study_name="src",
        options=RunOptions(heartbeat=heartbeat, checkpoints=root / "checkpoints"),
    )
    report = run_worker(settings, sweep)
    assert report.complete == 2, report

    return SimpleNamespace(
        copy=lambda folder: sqlite_copy(db, folder), sweep=sweep_path, data=tiny_demo, cache=cache, study="src", db=db
    )


@pytest.fixture(scope="session")
def confirmed_source(tmp_path_factory, confirm_source):
    """`confirm_source` after `maskcls-hpo confirm --study src --top 2 --folds 2 --workers 1` (CLI subprocess):
    the study `src-confirm` holds 4 finished runs. Namespace: db, root, rc, stdout, stderr, `.copy(folder)`."""
    import subprocess

    root = tmp_path_factory.mktemp("confirmed")
    db = confirm_source.copy(root)
    done = subprocess.run(
        [*maskcls_hpo_command(), "confirm", "--study", "src", "--top", "2", "--folds", "2", "--workers", "1"]
        + ["--storage", str(db)],
        cwd=root,
        env=subprocess_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=500,
    )
    return SimpleNamespace(
        db=db,
        root=root,
        rc=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        copy=lambda folder: sqlite_copy(db, folder),
    )
