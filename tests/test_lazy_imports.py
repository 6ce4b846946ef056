"""Imports inside functions are marked, and the light entry points stay light.

Issue 21: "A function-level import stays only for start-up time or an optional extra, marked as such." Every
``import`` / ``from ... import`` inside a function of ``maskcls_hpo/`` carries a trailing ``# lazy: <what>``
comment (e.g. ``# lazy: torch``, ``# lazy: optional extra mlflow``); everything else is imported at the top
of its module. The marker is what the start-up checks below keep honest: the command line, the package root
and ``hpo.select`` (what `status` and `export` import) must not load torch, timm or Optuna's heavy parts.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import maskcls_hpo

PACKAGE = Path(maskcls_hpo.__file__).resolve().parent
MARKER = "# lazy:"


def function_level_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, the statement's first line, marked) of every import statement inside a function of one file.

    An import counts as marked when one of its lines (a wrapped ``from x import (...)`` has several) holds
    ``# lazy:`` followed by a reason.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom) and in_function:
                assert child.end_lineno is not None
                text = lines[child.lineno - 1 : child.end_lineno]
                reasons = [line.split(MARKER, 1)[1].split("#", 1)[0].strip() for line in text if MARKER in line]
                found.append((child.lineno, text[0].strip(), any(reasons)))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse("\n".join(lines), filename=str(path)), False)
    return found


def test_the_walk_finds_marked_and_unmarked_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    import json\n"
        "    from pathlib import (  # lazy: a reason\n"
        "        Path,\n"
        "    )\n"
        "    def g():\n"
        "        import csv  # lazy:\n"
        "    class C:\n"
        "        def h(self):\n"
        "            import io  # lazy: io  # noqa: F401\n"
    )
    assert function_level_imports(source) == [
        (3, "import json", False),
        (4, "from pathlib import (  # lazy: a reason", True),
        (8, "import csv  # lazy:", False),  # a marker without a reason does not count
        (11, "import io  # lazy: io  # noqa: F401", True),
    ]


def test_every_function_level_import_is_marked():
    unmarked = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text, marked in function_level_imports(path)
        if not marked
    ]
    assert unmarked == [], (
        "move these imports to the top of their module, or mark each with `# lazy: <what>` when it must wait "
        "(start-up time, an optional extra):\n" + "\n".join(unmarked)
    )


HEAVY = ("torch", "timm", "optuna")

PROBE = """
import atexit, json, sys
HEAVY = {heavy!r}
atexit.register(lambda: print("LOADED " + json.dumps([m for m in HEAVY if m in sys.modules]), file=sys.stderr))
{code}
"""


def loaded_after(code: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Which of :data:`HEAVY` a fresh interpreter holds once `code` ran (also when it ended by SystemExit)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE.parent), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, code=code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = [line for line in result.stderr.splitlines() if line.startswith("LOADED ")]
    assert last, result.stderr[-2000:]
    return json.loads(last[-1].removeprefix("LOADED ")), result


def test_importing_the_package_and_the_cli_loads_no_torch_timm_or_optuna():
    assert loaded_after("import maskcls_hpo")[0] == []
    assert loaded_after("import maskcls_hpo.cli")[0] == []


def test_help_loads_no_torch_timm_or_optuna():
    """`maskcls-hpo --help` (the console script runs ``maskcls_hpo.cli:app``)."""
    heavy, result = loaded_after("from maskcls_hpo.cli import app\napp(['--help'], prog_name='maskcls-hpo')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "launch" in result.stdout and "Usage: maskcls-hpo" in result.stdout
    assert heavy == []


def test_select_loads_no_torch():
    """`hpo.select` is what `status` and `export` read studies with: Optuna, but no torch or timm."""
    heavy, _ = loaded_after("import maskcls_hpo.hpo.select")
    assert "torch" not in heavy and "timm" not in heavy
