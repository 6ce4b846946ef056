"""The README and the docs site: the README stays short and its links land, the error page covers every error
class, and Read the Docs installs what the package imports. The strict build itself is `make docs` (run by
`make test` and CI: warnings, broken links and cross-references fail it)."""

from __future__ import annotations

import re
import sys

import pytest
from helpers import REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _scripts_module(name: str):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub and MyST give a page's headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_heading_anchors_follow_the_slug_rule():
    text = "# Uncertainty: how sure is the winner?\n```\n# not a heading\n```\n## B2 pruning: `R` <= 0.35\n"
    assert heading_anchors(text) == {"uncertainty-how-sure-is-the-winner", "b2-pruning-r--035"}


def test_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the details into docs/"


def test_readme_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make demo    # venv + install, a 300-person procedural demo dataset" in text
    assert "make test    # the test suite (real SQLite, real PostgreSQL on 127.0.0.1:5432, headless Chromium)" in text


def test_every_readme_link_lands_on_a_file_and_heading():
    text = README.read_text(encoding="utf-8")
    links = [t for t in LINK.findall(text) if not re.match(r"[a-z]+://", t)]
    assert len(links) >= 20, links  # the feature list, the table, the screenshots
    for target in links:
        path, _, anchor = target.partition("#")
        file = (README.parent / path).resolve()
        assert file.is_file(), f"README links to {target}: no such file"
        if anchor:
            headings = heading_anchors(file.read_text(encoding="utf-8"))
            assert anchor in headings, f"README links to {target}: no such heading"


def test_error_table_is_current_and_every_error_has_a_section():
    errors_table = _scripts_module("errors_table")
    page = (DOCS / "errors.md").read_text(encoding="utf-8")
    assert errors_table.page_section(page) == errors_table.errors_table(), (
        "docs/errors.md's table is stale: run .venv/bin/python scripts/errors_table.py"
    )
    classes = errors_table.error_classes()
    names = {c.name for c in classes}
    # errors.py's own classes and the two TrainingError kinds of train.py, nothing else
    assert {"MaskclsError", "DataError", "StorageSchemaError", "NonFiniteLossError", "OutOfMemoryError"} <= names
    assert "AskError" not in names  # hpo/_optuna.py: an internal signal, not a user's error
    for cls in classes:
        assert f"\n## {cls.name}\n" in page, f"docs/errors.md has no section '## {cls.name}'"
        assert f".. autoexception:: {cls.module}.{cls.name}" in page, f"docs/errors.md does not document {cls.name}"


def test_error_table_reads_bases_and_exit_codes_from_the_code():
    from maskcls_hpo import errors

    errors_table = _scripts_module("errors_table")
    rows = {c.name: c for c in errors_table.error_classes()}
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert rows[name].module == "maskcls_hpo.errors"
        assert errors_table._exit_code(rows[name], rows) == cls.exit_code, name
        builtin = next((b.__name__ for b in cls.__mro__ if b in (ValueError, RuntimeError)), "Exception")
        assert errors_table._builtin(rows[name], rows) == builtin, name
    table = errors_table.errors_table()
    assert "| [`PretrainedWeightsError`](#pretrainedweightserror) | `ConfigError`, `ValueError` | 1 |" in table
    assert "| [`StorageSchemaError`](#storageschemaerror) | `StorageError`, `RuntimeError` | 1 |" in table


@pytest.mark.parametrize("extra", ["docs", "dev"])
def test_docs_tools_are_in_the_extras(extra):
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=\[ ]", r)[0] for r in project["optional-dependencies"][extra]}
    assert {"sphinx", "myst-parser", "furo"} <= names


def test_read_the_docs_requirements_are_the_dependencies_less_the_mocked_ones():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = (DOCS / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    mocked = {"torch", "torchvision", "timm"}  # docs/conf.py: autodoc_mock_imports
    wanted = {r for r in project["dependencies"] if re.split(r"[<>=\[ ]", r)[0] not in mocked}
    assert listed == wanted | set(project["optional-dependencies"]["docs"])
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert all(f'"{name}"' in conf for name in mocked)
