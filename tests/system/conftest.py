"""Fixtures of the system tests that need a service of the machine beyond PostgreSQL (tests/helpers/pg.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

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


# --- small file systems (owner: reliability, issue 25) ------------------------------------------------
# `tmpfs`: a small tmpfs (a full disk at a known size; remounted read-only for a read-only storage).


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """``mount(folder, size)``: a tmpfs of `size` (``2m``, ``150k``) at `folder`; every one unmounted after."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(folder)], check=False)  # lazy: this process may still hold a file
