"""Every verb's `--help` prints its help texts as written (issue 25): rich markup must not eat a bracket, e.g. the
``[mlflow]`` of ``pip install 'maskcls-hpo[mlflow]'``."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from maskcls_hpo.cli import app

COMMAND = typer.main.get_command(app)  # a TyperGroup (Typer's own copy of click)
VERBS = sorted(COMMAND.commands)  # type: ignore[attr-defined]


def _written(text: str) -> str:
    """A help text as the code writes it (the escape for rich taken out), blanks collapsed."""
    return " ".join(text.replace("\\[", "[").split())


@pytest.mark.parametrize("verb", VERBS)
def test_every_bracket_of_every_help_text_is_printed(verb):
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "2000", "TERMINAL_WIDTH": "2000"})
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.replace("│", " ").split())
    command = COMMAND.commands[verb]  # type: ignore[attr-defined]
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    brackets = [b for text in texts for b in re.findall(r"\[[^\]\s]*\]", _written(text))]
    for bracket in brackets:
        assert bracket in shown, f"{verb} --help lost {bracket}"


def test_launch_help_names_the_mlflow_extra():
    result = CliRunner().invoke(app, ["launch", "--help"], env={"COLUMNS": "2000", "TERMINAL_WIDTH": "2000"})
    assert "pip install 'maskcls-hpo[mlflow]'" in " ".join(result.output.split())
