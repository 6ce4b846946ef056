"""Session-wide test setup: one torch thread per process, the helpers' assertions, the PostgreSQL plugin, and the
fixtures tests in several folders share (`tiny_demo`, `tiny_sweep`, `swept_study`).

The tree mirrors the package (tests/ml, tests/hpo/{store,trial,workers,select}, tests/results, tests/cli) plus
tests/system (real services: PostgreSQL, Slurm, faults with real workers, deployment files, the dashboard as a
server). What is not a fixture lives in tests/helpers/; fixtures of one folder in that folder's conftest.py
(tests/ml: datasets and training caches; tests/hpo/select: the confirm source study; tests/system: Slurm).
Marks (pyproject.toml): `postgres`, `browser`, `slurm`, `slow`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

# NOTE One torch thread per process (set before torch is imported; subprocesses inherit it): the suite runs
# several training processes at once on 2 cores, where 2 threads each run 5-8x slower than 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The helpers' `assert`s explain themselves as a test's do (registered before the first helpers import).
pytest.register_assert_rewrite("helpers")

from helpers import REPO_ROOT  # noqa: E402
from helpers.processes import DashboardPoller, DashboardProcess, maskcls_hpo_command, subprocess_env  # noqa: E402
from helpers.studies import SMOKE_STUDY, TINY_SWEEP  # noqa: E402

# --- PostgreSQL and fault fixtures (owner: PostgreSQL/faults) -----------------------------------------
# tests/helpers/pg.py: `pg_admin_url`, `pg_database` (a fresh database per test on the machine's server),
# `private_pg` (a server of its own, to stop and start).
pytest_plugins = ("helpers.pg",)


# --- sweep-service fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 24-person procedural demo set at 36x48 (W x H), written once per test session."""
    from maskcls_hpo.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("tiny_demo") / "data"
    write_demo_dataset(root, persons=24, eval_persons=6, size=(36, 48), seed=1, progress=False)
    return root


@pytest.fixture
def tiny_sweep(tmp_path, tiny_demo):
    """Write a tiny sweep file: `tiny_sweep(epochs=2, pruner="optuna.pruners.NopPruner()", extra="")` -> path.

    `extra` is appended verbatim (e.g. a different `suggest` or a registered timm model).
    """

    def make(
        epochs: int = 2, pruner: str = "optuna.pruners.NopPruner()", extra: str = "", name: str = "tiny.py"
    ) -> Path:
        body = (
            TINY_SWEEP.replace("EPOCHS", str(epochs))
            .replace("DATA_DIR", str(tiny_demo))
            .replace("CACHE_DIR", str(tmp_path / "cache"))
            .replace("PRUNER", pruner)
        )
        path = tmp_path / name
        path.write_text(body + extra)
        return path

    return make


# --- dashboard fixtures (owner: dashboard/report) ----------------------------------------------------
# One real sweep per session (sweeps/smoke.py, 3 trials, 2 workers, on `tiny_demo`) with the dashboard
# running against it the whole time and a poller reading its pages every 0.5 s. system/test_dashboard.py,
# hpo/trial/test_artifacts.py, hpo/select/test_export.py and results/test_report.py read the finished study;
# the dashboard keeps running for them.


@pytest.fixture(scope="session")
def swept_study(tmp_path_factory, tiny_demo):
    """A study made by `maskcls-hpo launch sweeps/smoke.py --n-trials 3 --workers 2` on SQLite while the
    dashboard runs on it and a :class:`DashboardPoller` reads it every 0.5 s.

    The database sits at `<root>/storage/maskcls_hpo.db` (the default path relative to `root`). Yields a
    namespace: root, db, url, study (name), dashboard (running :class:`DashboardProcess`), poller,
    launch_rc, launch_output, checkpoints.
    """
    import subprocess

    from maskcls_hpo.hpo._optuna import rdb_of
    from maskcls_hpo.hpo.store import open_storage, resolve_storage_url

    root = tmp_path_factory.mktemp("swept")
    db = root / "storage" / "maskcls_hpo.db"
    url = resolve_storage_url(db)
    rdb_of(open_storage(url)).engine.dispose()  # an empty Optuna database, so the dashboard can start first
    dashboard = DashboardProcess(["--storage", str(db)], cwd=root, log=root / "dashboard.log").wait_ready()
    checkpoints = root / "checkpoints"
    cmd = maskcls_hpo_command() + [
        "launch",
        str(REPO_ROOT / "sweeps" / "smoke.py"),
        "--n-trials",
        "3",
        "--workers",
        "2",
        "--storage",
        str(db),
        "--study",
        SMOKE_STUDY,
        "--data-dir",
        str(tiny_demo),
        "--checkpoints",
        str(checkpoints),
    ]
    try:
        with DashboardPoller(dashboard.base, SMOKE_STUDY) as poller:
            launched = subprocess.run(cmd, cwd=root, env=subprocess_env(), capture_output=True, text=True, timeout=540)
        yield SimpleNamespace(
            root=root,
            db=db,
            url=url,
            study=SMOKE_STUDY,
            dashboard=dashboard,
            poller=poller,
            launch_rc=launched.returncode,
            launch_output=launched.stdout + launched.stderr,
            checkpoints=checkpoints,
        )
    finally:
        dashboard.stop()
