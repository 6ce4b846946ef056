"""cli.py: `--version`, shell completion, Optuna's own names (`--study-name`, `OPTUNA_STORAGE`), read-only
verbs without torch, and the option table of docs/cli.md generated from the Typer app."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest
from helpers import REPO_ROOT
from helpers.processes import free_port, maskcls_hpo_command, subprocess_env
from helpers.studies import ALWAYS_FAILING_SUGGEST
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from maskcls_hpo.config import TrainConfig


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        maskcls_hpo_command() + list(args),
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def small_study(tmp_path) -> Path:
    """`tmp_path/x.db` holding study 's1': trial 0 COMPLETE (0.7), trial 1 PRUNED (0.4), each with a config."""
    db = tmp_path / "x.db"
    study = optuna.create_study(study_name="s1", storage=f"sqlite:///{db}", direction="maximize")
    for state, value in ((TrialState.COMPLETE, 0.7), (TrialState.PRUNED, 0.4)):
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"lr": 1e-3},
                distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True)},
                intermediate_values={1: value},
                user_attrs={"config": TrainConfig(data_dir="data/demo").to_dict()},
            )
        )
    return db


def test_version_names_the_package_and_libraries(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"maskcls-hpo {version('maskcls-hpo')} (")
    for dist in ("optuna", "torch", "timm"):
        assert f"{dist} {version(dist)}" in line


def test_shell_completion_script(tmp_path):
    result = run_cli("--show-completion", "bash", cwd=tmp_path, env=subprocess_env(SHELL="/bin/bash"))
    assert result.returncode == 0, result.stderr
    assert "_MASKCLS_HPO_COMPLETE" in result.stdout and "complete " in result.stdout


def test_optuna_storage_and_study_name_are_accepted(small_study, tmp_path):
    """`OPTUNA_STORAGE=sqlite:///x.db maskcls-hpo status --study-name s1` reads the study; a missing file is
    named with the variable it came from, never as `--storage`."""
    env = subprocess_env(OPTUNA_STORAGE=f"sqlite:///{small_study}")
    result = run_cli("status", "--study-name", "s1", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "study 's1': 2 finished" in result.stdout + result.stderr
    missing = run_cli("status", cwd=tmp_path, env=subprocess_env(OPTUNA_STORAGE="sqlite:///nope.db"))
    assert missing.returncode == 1
    assert "no study database at nope.db (from env OPTUNA_STORAGE 'sqlite:///nope.db')" in missing.stderr
    assert "--storage '" not in missing.stderr
    wrong = run_cli("export", "--study-name", "s2", cwd=tmp_path, env=env)
    assert wrong.returncode == 1
    assert f"no study 's2' in sqlite:///{small_study} (from env OPTUNA_STORAGE) (studies: s1)" in " ".join(
        wrong.stderr.split()
    )


READ_ONLY_VERBS = r"""
import json, sys, threading, time, urllib.request
from maskcls_hpo.cli import app

def run(args):
    try:
        app(args)
    except SystemExit as e:
        assert not e.code, (args, e.code)

db, out, port = sys.argv[1], sys.argv[2], sys.argv[3]
run(["status", "--storage", db])
run(["export", "--storage", db, "--out", out + "/best.yaml"])
run(["report", "--storage", db, "--out", out + "/report.html"])
open(out + "/a.csv", "w").write("ImageID,ans\na.jpg,3\nb.jpg,4\n")
run(["score", out + "/a.csv", "--answers", out + "/a.csv"])
threading.Thread(target=run, args=(["dashboard", "--storage", db, "--port", port],), daemon=True).start()
for _ in range(300):
    try:
        studies = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5))
        detail = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1", timeout=30))
        break
    except OSError:
        time.sleep(0.2)
heavy = [m for m in ("torch", "timm", "torchvision") if m in sys.modules]
print(json.dumps({"heavy": heavy, "studies": len(studies["study_summaries"]), "trials": len(detail["trials"])}))
"""


def test_read_only_verbs_import_no_torch_or_timm(small_study, tmp_path):
    """status, export, report, score and dashboard (serving the study page) in one interpreter: no torch."""
    result = subprocess.run(
        [sys.executable, "-c", READ_ONLY_VERBS, str(small_study), str(tmp_path), str(free_port())],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"heavy": [], "studies": 1, "trials": 2}
    assert (tmp_path / "best.yaml").is_file() and (tmp_path / "report.html").is_file()


def test_docs_option_table_matches_the_typer_app():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import cli_options
    finally:
        sys.path.pop(0)
    table = cli_options.options_table()
    in_docs = cli_options.page_section((REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))
    assert in_docs == table, "docs/cli.md's option table is stale: run .venv/bin/python scripts/cli_options.py"
    rows = {line.split("|")[1].strip().strip("`").split()[0]: line for line in table.splitlines()[2:]}
    for reader in ("launch", "worker", "status", "export", "dashboard", "report", "predict"):
        assert "| yes | yes |" in rows[reader], rows[reader]
    for local in ("train", "score", "check-data", "demo-data"):
        assert "| - | - |" in rows[local], rows[local]


def test_a_launch_whose_trials_all_fail_says_why_once_without_wrapping(tmp_path, tiny_sweep):
    """C1's failure cap through the CLI: exit 1, the 'did not reach' line exactly once, unbroken in a file."""
    sweep = tiny_sweep(extra=ALWAYS_FAILING_SUGGEST)
    env = subprocess_env(COLUMNS="80")
    env.pop("COLUMNS")  # stderr is a pipe: rich would wrap at 80 columns unless the console soft-wraps
    done = run_cli(
        "launch", str(sweep), "--n-trials", "3", "--workers", "1", "--storage", "t.db", cwd=tmp_path, env=env
    )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "did not reach 3 finished trials" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: the study did not reach 3 finished trials (0 finished, 5 failed)"), lines
    assert len(lines[0]) > 80 and "stopped after 5 failed trials in a row" in lines[0]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 5
