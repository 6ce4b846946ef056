"""A study database that cannot be written (issue 25): its folder a read-only mount (a tmpfs remounted ``ro``,
since root ignores file permissions and ``chmod`` would prove nothing).

The readers (`status`, `export`, `report`) open it read-only (SQLite ``mode=ro&immutable=1``: no WAL or -shm file
is needed) and work; a verb that writes (`launch`, `worker`) says in one line that the storage is read-only,
naming the file and its folder.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from helpers import REPO_ROOT
from helpers.studies import one_trial_study, sqlite_copy
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.hpo.store import read_only_url, sqlite_writable

SMOKE = REPO_ROOT / "sweeps" / "smoke.py"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def read_only_db(tmpfs, tmp_path: Path) -> Path:
    """A one-trial study database on a tmpfs remounted read-only."""
    one_trial_study(tmp_path / "study.db", SMOKE)
    folder = tmpfs(tmp_path / "ro", "8m")
    sqlite_copy(tmp_path / "study.db", folder)  # the WAL's pages folded in, as a clean exit leaves the file
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    return folder / "study.db"


def test_readers_open_a_read_only_database_read_only(read_only_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not sqlite_writable(read_only_db)
    assert read_only_url(f"sqlite:///{read_only_db}") == f"sqlite:///file:{read_only_db}?mode=ro&immutable=1&uri=true"
    digest = hashlib.sha256(read_only_db.read_bytes()).hexdigest()
    status = CliRunner().invoke(app, ["status", "--storage", str(read_only_db)])
    assert status.exit_code == 0, status.output
    assert "study 'smoke': 1 finished of 2" in status.output
    export = CliRunner().invoke(app, ["export", "--storage", str(read_only_db), "--out", "best.yaml"])
    assert export.exit_code == 0, export.output
    assert (tmp_path / "best.yaml").is_file()
    report = CliRunner().invoke(app, ["report", "--storage", str(read_only_db), "--out", "report.html"])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report.html").stat().st_size > 0
    assert sorted(p.name for p in read_only_db.parent.iterdir()) == ["study.db"]  # no WAL, no -shm
    assert hashlib.sha256(read_only_db.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("verb", ["launch", "worker"])
def test_a_write_on_a_read_only_database_says_so(verb, read_only_db, tmp_path, tiny_demo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [verb, str(SMOKE), "--storage", str(read_only_db), "--data-dir", str(tiny_demo), "--study", "smoke"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: storage {read_only_db} is read-only (it or its folder {read_only_db.parent} cannot be written): "
        "status, export, report and dashboard read it; to run trials, copy it to a writable folder and pass that "
        "--storage"
    ), last
    assert sorted(p.name for p in tmp_path.iterdir()) == before
