"""One options object for how trials run (issue 21; hpo/workers/_options.py): every `RunOptions` flag is an
option of `launch`, `confirm` and `worker`, `finalize` has the storage and data ones it uses, and the Python
functions behind them take the object whole (`options=`).

`FLAGS` maps each `RunOptions.from_flags` keyword to the flag it is given as; a flag that does not start with
"--" (`overrides`, `logs`, `poll_interval`) has no command-line option, only the Python API sets it. The CLI
hands a verb's parameters to `RunOptions.from_flags` by name (cli.py `_run_options`), so each option's
parameter must be named as its `FLAGS` keyword, or its value never arrives.
"""

from __future__ import annotations

import inspect
import re
import typing

import pytest
import typer.main
from helpers import REPO_ROOT

from maskcls_hpo.cli import app
from maskcls_hpo.errors import DataError, StorageError
from maskcls_hpo.hpo.launch import run_sweep
from maskcls_hpo.hpo.select import finalize, run_confirm
from maskcls_hpo.hpo.workers import FLAGS, RunOptions

CLI_FLAGS = {keyword: flag for keyword, flag in FLAGS.items() if flag.startswith("--")}
FINALIZE_FLAGS = ("--storage", "--password-file", "--data-dir", "--device")


def verb_options(verb: str) -> dict[str, str]:
    """The options of `maskcls-hpo VERB`: each spelling (``--storage``, ``--study-name``, ...) -> parameter name."""
    command = typer.main.get_command(app).commands[verb]
    return {opt: p.name for p in command.params if p.param_type_name == "option" for opt in p.opts}


def test_the_api_only_options_are_the_three_without_a_flag():
    assert sorted(set(FLAGS) - set(CLI_FLAGS)) == ["logs", "overrides", "poll_interval"]
    assert set(FINALIZE_FLAGS) <= set(CLI_FLAGS.values())


@pytest.mark.parametrize("verb", ["launch", "confirm", "worker"])
def test_every_run_option_is_an_option_of_each_verb_that_runs_trials(verb):
    options = verb_options(verb)
    wrong = {flag: options.get(flag) for keyword, flag in CLI_FLAGS.items() if options.get(flag) != keyword}
    assert wrong == {}, f"`{verb}` lacks these RunOptions flags (or names their parameter otherwise): {wrong}"


def test_finalize_has_the_storage_and_data_options():
    options = verb_options("finalize")
    keyword = {flag: k for k, flag in CLI_FLAGS.items()}
    assert {flag: options.get(flag) for flag in FINALIZE_FLAGS} == {flag: keyword[flag] for flag in FINALIZE_FLAGS}


@pytest.mark.parametrize("function", [run_sweep, run_confirm, finalize], ids=lambda f: f.__name__)
def test_the_api_takes_one_run_options(function):
    parameter = inspect.signature(function).parameters["options"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
    assert typing.get_type_hints(function)["options"] == RunOptions | None


def test_the_options_given_reach_confirm_and_finalize(tmp_path):
    """A storage that does not exist, given only inside `options`, is the one each function refuses."""
    options = RunOptions.from_flags(storage=str(tmp_path / "nosuch.db"))
    missing = re.escape(f"no study database at {tmp_path / 'nosuch.db'} (from --storage")
    with pytest.raises(StorageError, match=missing):
        run_confirm("src", 2, 2, options=options)
    with pytest.raises(StorageError, match=missing):
        finalize("src", tmp_path / "submission.csv", options=options)
    assert list(tmp_path.iterdir()) == []


def test_the_options_given_reach_run_sweep(tmp_path):
    """The data folder given only inside `options` is the one the pre-flight checks, before any study exists."""
    sweep = REPO_ROOT / "sweeps" / "smoke.py"
    options = RunOptions.from_flags(storage=str(tmp_path / "new.db"), data_dir=str(tmp_path / "nodata"))
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nodata'}: dataset folder not found")):
        run_sweep(sweep, 2, options=options)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match=r"pass either options= or flags \(timeout\), not both"):
        run_sweep(sweep, 2, options=options, timeout=5)
