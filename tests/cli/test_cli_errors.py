"""Bad input at the command line: one line naming the thing and what to do, exit non-zero, nothing created.

Each case runs the real `maskcls-hpo` verb in-process (Typer's runner) and checks the exit code, that stderr
ends in one error line holding the expected words (no traceback), that no file or folder appeared where the
command would have written, and that the study database holds the same trials.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from helpers import REPO_ROOT
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.store import open_storage
from maskcls_hpo.hpo.trial import load_sweep

SMOKE = REPO_ROOT / "sweeps" / "smoke.py"


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def study_db(tmp_path: Path) -> Path:
    """An SQLite study 'smoke' (the smoke sweep's space) with one COMPLETE trial, as `launch` leaves it."""
    db = tmp_path / "study.db"
    study = prepare_study(load_sweep(SMOKE), open_storage(f"sqlite:///{db}"), "smoke", 2)
    study.set_user_attr("data_fingerprint", "0" * 64)
    trial = study.ask()
    load_sweep(SMOKE).suggest(trial)
    trial.set_user_attr("config", load_sweep(SMOKE).build_config(trial.params).to_dict())
    study.tell(trial, 0.5)
    return db


def _cases(tmp: Path, db: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, words the one line must hold). Files the cases need are written here."""
    (tmp / "latin1.py").write_bytes(b"BASE_CONFIG = {'model': 'caf\xe9'}\n")
    (tmp / "binary.py").write_bytes(b"\x00\x01\x02 PNG garbage \x00")
    (tmp / "latin1.yaml").write_bytes(b"model: caf\xe9\n")
    (tmp / "binary.yaml").write_bytes(b"\x00\x00\x00\x01")
    (tmp / "afile").write_text("not a folder\n")
    (tmp / "outdir").mkdir()
    (tmp / "junk.pt").write_bytes(b"this is not a checkpoint\n" * 10)
    edited = tmp / "edited.py"
    edited.write_text(SMOKE.read_text().replace("lr=(1e-3, 3e-2)", "lr=(1e-4, 3e-2)"))
    new_db = str(tmp / "new.db")
    st = ["--storage", str(db)]
    return {
        "sweep not UTF-8": (["launch", str(tmp / "latin1.py"), "--storage", new_db], "not a text file"),
        "sweep binary": (["launch", str(tmp / "binary.py"), "--storage", new_db], "not a text file"),
        "config not UTF-8": (["train", "--config", str(tmp / "latin1.yaml"), "--out", str(tmp / "run")], "not UTF-8"),
        "config binary": (["train", "--config", str(tmp / "binary.yaml"), "--out", str(tmp / "run")], "not a text"),
        "port not a number": (["status", "--storage", "postgresql://u@127.0.0.1:abc/db"], "port must be a number"),
        "export into a missing folder": (["export", *st, "--out", str(tmp / "nope" / "best.yaml")], "does not exist"),
        "export into a file": (["export", *st, "--out", str(tmp / "afile" / "best.yaml")], "is not a folder"),
        "export --out a folder": (["export", *st, "--out", str(tmp / "outdir")], "is a folder"),
        "export --out without suffix": (["export", *st, "--out", str(tmp / "best")], "ending in .yaml"),
        "worker --n-trials -1": (["worker", str(SMOKE), *st, "--n-trials", "-1"], "--n-trials must be between 1 and"),
        "worker --timeout -5": (["worker", str(SMOKE), *st, "--timeout", "-5"], "--timeout must be a number"),
        "launch --timeout -5": (["launch", str(SMOKE), "--storage", new_db, "--timeout", "-5"], "--timeout must be"),
        "predict on a non-checkpoint": (
            ["predict", "--checkpoint", str(tmp / "junk.pt"), "--data-dir", "DEMO", "--out", str(tmp / "s.csv")],
            "not a PyTorch checkpoint file",
        ),
        "launch with a missing data folder": (
            ["launch", str(SMOKE), "--storage", new_db, "--data-dir", str(tmp / "nodata")],
            "nodata",
        ),
        "worker on a new SQLite path": (["worker", str(SMOKE), "--storage", new_db], "no study database"),
        "worker --study nosuch": (["worker", str(SMOKE), *st, "--study", "nosuch"], "no study 'nosuch'"),
        "worker with an edited search space": (
            ["worker", str(edited), *st, "--study", "smoke"],
            "search space differs",
        ),
        "worker on other data": (
            ["worker", str(SMOKE), *st, "--data-dir", "DEMO"],
            "not the data study 'smoke' was launched on",
        ),
        # names used as folder names (issue 25): refused before anything is written, inside or outside tmp
        "launch --study ../../escape": (
            ["launch", str(SMOKE), "--storage", new_db, "--study", "../../escape"],
            "--study '../../escape' holds a path separator",
        ),
        "confirm --name ../../evil": (
            ["confirm", *st, "--study", "smoke", "--name", "../../evil", "--top", "1", "--folds", "2"],
            "--name '../../evil' holds a path separator",
        ),
        "confirm --name ..": (["confirm", *st, "--study", "smoke", "--name", ".."], "--name '..' holds '..'"),
        "worker --study with a newline": (
            ["worker", str(SMOKE), *st, "--study", "a\nb"],
            "--study 'a\\nb' holds control characters",
        ),
    }


NAMES = [
    "sweep not UTF-8",
    "sweep binary",
    "config not UTF-8",
    "config binary",
    "port not a number",
    "export into a missing folder",
    "export into a file",
    "export --out a folder",
    "export --out without suffix",
    "worker --n-trials -1",
    "worker --timeout -5",
    "launch --timeout -5",
    "predict on a non-checkpoint",
    "launch with a missing data folder",
    "worker on a new SQLite path",
    "worker --study nosuch",
    "worker with an edited search space",
    "worker on other data",
    "launch --study ../../escape",
    "confirm --name ../../evil",
    "confirm --name ..",
    "worker --study with a newline",
]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_line_and_creates_nothing(name, tmp_path, study_db, tiny_demo, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default folders (storage/, runs/) would land here
    args, words = _cases(tmp_path, study_db)[name]
    args = [str(tiny_demo) if a == "DEMO" else a for a in args]
    storage = optuna.load_study(study_name="smoke", storage=f"sqlite:///{study_db}")
    n_trials_before = len(storage.trials)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code not in (0, None), result.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # one error line, the last one
    assert words in errors[0], errors[0]
    # before it at most launch's first frame ("[0:00] starting 1 worker(s)": its workers start while the data
    # is checked) and its progress line ("checking data in DIR ...", wrapped by the terminal width)
    assert "Traceback" not in result.output and len(lines) <= 5, result.stderr
    created = _tree(tmp_path) - before
    # the study database's own WAL/SHM files may appear when a reader opened it; nothing else may
    assert {c for c in created if not c.startswith("study.db-")} == set(), created
    # nor outside it: the names of the escape cases, where `../../` from the storage's folders would point
    assert not [p for a in list(tmp_path.parents)[:3] for p in (a / "escape", a / "evil") if p.exists()]
    assert len(optuna.load_study(study_name="smoke", storage=f"sqlite:///{study_db}").trials) == n_trials_before


def test_names_match_cases(tmp_path, study_db):
    assert sorted(_cases(tmp_path, study_db)) == sorted(NAMES)
    shutil.rmtree(tmp_path / "outdir")
