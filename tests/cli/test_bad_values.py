"""Every numeric and path option checked where its options object or API entry point is built (issue 25): bounds
(numbers no SQLite column or NumPy seed takes), finiteness, empty paths, files where folders belong and folders
where files belong, devices that are not there, KNOWN_GOOD keys, and what make_sampler / make_pruner return.

Each case runs the real verb in-process (Typer's runner) and checks the exit code (1: refused by the API, one
``error:`` line, the last; 2: refused by the parser), the words of the line, that nothing was created and that the
study holds the trials it held.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import REPO_ROOT
from helpers.studies import one_trial_study
from typer.testing import CliRunner

from maskcls_hpo.cli import app

SMOKE = REPO_ROOT / "sweeps" / "smoke.py"
HUGE = "99999999999999999999"  # above SQLite's 64-bit INTEGER

SWEEP_TAIL = {
    "typo.py": 'KNOWN_GOOD = [{"lr": 0.01, "batch_sise": 16}]\n',
    "sampler.py": "def make_sampler(seed):\n    return None\n",
    "pruner.py": "import optuna\n\ndef make_pruner(config):\n    return optuna.samplers.RandomSampler()\n",
}

# name -> (argv, exit code, words of the error line); DB: the study's database, NEW: a database not there yet,
# DEMO: a small dataset, FILE: a file, DIR: a folder, TAKEN/new.db: a storage folder whose checkpoints/ is a file
CASES: dict[str, tuple[list[str], int, str]] = {
    "export --top huge": (["export", "--storage", "DB", "--top", HUGE], 1, "--top must be a whole number from 1"),
    "export --trial huge": (["export", "--storage", "DB", "--trial", HUGE], 1, "--trial must be a whole number"),
    "export --trial not a number": (["export", "--storage", "DB", "--trial", "x"], 2, "Invalid value for '--trial'"),
    "export --out empty": (["export", "--storage", "DB", "--out", ""], 1, "--out is empty; give a file name"),
    "report --top huge": (["report", "--storage", "DB", "--top", HUGE], 1, "--top must be a whole number from 1"),
    "report --out empty": (["report", "--storage", "DB", "--out", ""], 1, "--out is empty"),
    "report --out a folder": (["report", "--storage", "DB", "--out", "DIR"], 1, "is a folder; give a file name"),
    "finalize --out empty": (["finalize", "--study", "smoke", "--storage", "DB", "--out", ""], 1, "--out is empty"),
    "finalize --out a folder": (
        ["finalize", "--study", "smoke", "--storage", "DB", "--out", "DIR"],
        1,
        "is a folder; give a file name",
    ),
    "finalize --top huge": (["finalize", "--study", "smoke", "--storage", "DB", "--top", HUGE], 1, "--top must be"),
    "finalize --seeds too many": (
        ["finalize", "--study", "smoke", "--storage", "DB", "--seeds", "100000000"],
        1,
        "--seeds must be a whole number from 1 to 1000",
    ),
    "confirm --top huge": (["confirm", "--study", "smoke", "--storage", "DB", "--top", HUGE], 1, "--top must be"),
    "confirm --timeout nan": (
        ["confirm", "--study", "smoke", "--storage", "DB", "--timeout", "nan"],
        1,
        "--timeout must be a number of seconds",
    ),
    "confirm --workers huge": (["confirm", "--study", "smoke", "--storage", "DB", "--workers", HUGE], 1, "--workers"),
    "predict --top huge": (
        ["predict", "--study", "smoke", "--storage", "DB", "--data-dir", "DEMO", "--top", HUGE],
        1,
        "--top must be a whole number from 1 to 1000",
    ),
    "predict --out empty": (
        ["predict", "--checkpoint", "FILE", "--data-dir", "DEMO", "--out", ""],
        1,
        "--out is empty",
    ),
    "predict --batch-size huge": (
        ["predict", "--checkpoint", "FILE", "--data-dir", "DEMO", "--batch-size", HUGE],
        1,
        "--batch-size must be a whole number from 1 to 65536",
    ),
    "predict --cache-dir a file": (
        ["predict", "--checkpoint", "FILE", "--data-dir", "DEMO", "--cache-dir", "FILE"],
        1,
        "is a file, not a folder",
    ),
    "predict --device tpu": (
        ["predict", "--checkpoint", "FILE", "--data-dir", "DEMO", "--device", "tpu"],
        1,
        "--device must be auto, cpu or cuda, got 'tpu'",
    ),
    "predict --device cuda:7": (
        ["predict", "--checkpoint", "FILE", "--data-dir", "DEMO", "--device", "cuda:7"],
        1,
        "--device cuda:7: this machine has",
    ),
    "train --out empty": (["train", "--data-dir", "DEMO", "--out", ""], 1, "--out is empty; give a folder"),
    "train --out a file": (["train", "--data-dir", "DEMO", "--out", "FILE"], 1, "is a file, not a folder"),
    "train --epochs huge": (["train", "--data-dir", "DEMO", "--epochs", "99999999"], 1, "less than or equal to 10000"),
    "train --seed huge": (["train", "--data-dir", "DEMO", "--seed", HUGE], 1, "key 'seed'"),
    "demo-data --persons huge": (["demo-data", "NEWDIR", "--persons", "99999999999999"], 1, "--persons must be"),
    "demo-data OUT empty": (["demo-data", "", "--persons", "3"], 1, "OUT is empty; give a folder"),
    "worker --worker-index huge": (["worker", "SMOKE", "--storage", "DB", "--worker-index", HUGE], 1, "--worker-index"),
    "worker --watchdog nan": (["worker", "SMOKE", "--storage", "DB", "--watchdog", "nan"], 1, "--watchdog must be"),
    "worker --timeout -1": (["worker", "SMOKE", "--storage", "DB", "--timeout", "-1"], 1, "--timeout must be"),
    "worker --checkpoints empty": (["worker", "SMOKE", "--storage", "DB", "--checkpoints", ""], 1, "--checkpoints is"),
    "worker --checkpoints a file": (
        ["worker", "SMOKE", "--storage", "DB", "--checkpoints", "FILE"],
        1,
        "is a file, not a folder",
    ),
    "worker --device cuda:7": (
        ["worker", "SMOKE", "--storage", "DB", "--device", "cuda:7"],
        1,
        "--device cuda:7: pick the GPU with --gpus 7",
    ),
    "worker --device tpu": (["worker", "SMOKE", "--storage", "DB", "--device", "tpu"], 1, "--device 'tpu' is not a"),
    "worker --device cuda without a GPU": (
        ["worker", "SMOKE", "--storage", "DB", "--device", "cuda", "--data-dir", "DEMO"],
        1,
        "--device cuda but no CUDA device is visible here",
    ),
    "launch --workers huge": (["launch", "SMOKE", "--storage", "NEW", "--workers", HUGE], 1, "--workers must be"),
    "launch --n-trials huge": (["launch", "SMOKE", "--storage", "NEW", "--n-trials", HUGE], 1, "--n-trials must be"),
    "launch --budget-epochs huge": (
        ["launch", "SMOKE", "--storage", "NEW", "--budget-epochs", HUGE],
        1,
        "--budget-epochs must be between 1 and 1000000000",
    ),
    "launch --budget-epochs 0": (
        ["launch", "SMOKE", "--storage", "NEW", "--budget-epochs", "0"],
        1,
        "--budget-epochs must",
    ),
    "launch --data-dir empty": (["launch", "SMOKE", "--storage", "NEW", "--data-dir", ""], 1, "--data-dir is empty"),
    "launch --heartbeat-interval huge": (
        ["launch", "SMOKE", "--storage", "NEW", "--heartbeat-interval", "99999999"],
        1,
        "--grace-period (120 s) must be larger",
    ),
    "launch into a checkpoint root that is a file": (
        ["launch", "SMOKE", "--storage", "TAKEN/new.db", "--data-dir", "DEMO"],
        1,
        "the checkpoint root",
    ),
    "launch a KNOWN_GOOD key no parameter has": (
        ["launch", "typo.py", "--storage", "NEW"],
        1,
        "KNOWN_GOOD[0] has 'batch_sise', which suggest() never asks",
    ),
    "launch a make_sampler that returns None": (
        ["launch", "sampler.py", "--storage", "NEW"],
        1,
        "make_sampler() must return an optuna.samplers sampler, got NoneType",
    ),
    "launch a make_pruner that returns a sampler": (
        ["launch", "pruner.py", "--storage", "NEW"],
        1,
        "make_pruner() must return an optuna.pruners pruner, got RandomSampler",
    ),
    "dashboard --port out of range": (["dashboard", "--storage", "DB", "--port", "70000"], 2, "Invalid value"),
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _argv(args: list[str], tmp: Path, db: Path, demo: Path) -> list[str]:
    names = {"DB": str(db), "NEW": str(tmp / "new.db"), "DEMO": str(demo), "SMOKE": str(SMOKE)}
    names |= {"FILE": str(tmp / "afile"), "DIR": str(tmp / "adir"), "NEWDIR": str(tmp / "newdir")}
    return [names.get(a, str(tmp / a) if a.endswith(".py") or a.startswith("TAKEN") else a) for a in args]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_value_is_one_line_and_changes_nothing(name, tmp_path, tiny_demo, monkeypatch):
    if name == "worker --device cuda without a GPU":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is visible: --device cuda is then a good value")
    monkeypatch.chdir(tmp_path)  # default folders (storage/, runs/, checkpoints/) would land here
    db = tmp_path / "study.db"
    one_trial_study(db, SMOKE)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "TAKEN").mkdir()
    (tmp_path / "TAKEN" / "checkpoints").write_text("a file where the checkpoint root belongs\n")
    for file, tail in SWEEP_TAIL.items():
        (tmp_path / file).write_text(SMOKE.read_text() + "\n" + tail)
    args, code, words = CASES[name]
    trials_before = len(optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}").trials)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, _argv(args, tmp_path, db, tiny_demo))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 2:  # the parser's usage error (Click): its own box naming the option
        assert words in result.stderr, result.stderr
    else:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
        assert words in errors[0], errors[0]
    created = {c for c in _tree(tmp_path) - before if not c.startswith("study.db-")}
    assert created == set(), created
    assert len(optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}").trials) == trials_before
