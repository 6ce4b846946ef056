"""Fixtures of the system tests that need a service of the machine beyond PostgreSQL (tests/helpers/pg.py)."""

from __future__ import annotations

import pytest

# --- Slurm fixtures (owner: Slurm backend) ---------------------------------------------------------
# `slurm_cluster`: the single-node cluster scripts/test-env.sh starts (`make test` runs it), checked once.


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of the local cluster's node once `sinfo` shows it ready; fails (never skips) saying what to do."""
    import shutil
    import subprocess

    hint = "run scripts/test-env.sh (make test does), or deselect: -m 'not slurm'"
    if shutil.which("sinfo") is None:
        pytest.fail(f"Slurm is not installed (no sinfo on PATH): {hint}", pytrace=False)
    done = subprocess.run(["sinfo", "-h", "-o", "%n|%T"], capture_output=True, text=True, timeout=30, check=False)
    rows = [line.split("|") for line in done.stdout.split() if "|" in line]
    ready = [n for n, state in rows if state in ("idle", "mixed", "allocated", "completing")]
    if done.returncode != 0 or not ready:
        pytest.fail(f"no Slurm node is up ({(done.stderr or done.stdout).strip()[:200]}): {hint}", pytrace=False)
    return ready[0]
