"""The import graph of the whole package (issue 21, docs/architecture.md "Layers"): no import cycle inside
`maskcls_hpo`, and the import-linter contracts of pyproject.toml kept with no `ignore_imports`.

The graph is grimp's (the library import-linter is built on): every `import` statement counts, those inside a
function and under `if TYPE_CHECKING:` included, as the contracts count them.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp
import tomllib
from helpers import REPO_ROOT


def import_cycles(package: str) -> list[list[str]]:
    """The import cycles inside `package`, one per strongly connected component of more than one module.

    A module's component is the modules it imports (directly or not) that also import it (directly or not).
    Each cycle is a closed chain ``[a, b, ..., a]`` through the component's two first modules by name: the
    shortest chain from the first to the second, then back. Cycles are sorted by their first module.
    """
    graph = grimp.build_graph(package, cache_dir=None)
    cycles, seen = [], set()
    for module in sorted(graph.modules):
        if module in seen:
            continue
        component = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        seen |= component
        if component - {module}:
            other = min(component - {module})
            there = graph.find_shortest_chain(importer=module, imported=other)
            back = graph.find_shortest_chain(importer=other, imported=module)
            cycles.append([*there, *back[1:]])
    return cycles


def describe(cycle: list[str], package: str) -> str:
    """One line per import of `cycle`: ``importer:line: the statement -> imported``."""
    graph = grimp.build_graph(package, cache_dir=None)
    lines = []
    for importer, imported in itertools.pairwise(cycle):
        detail = graph.get_import_details(importer=importer, imported=imported)[0]
        lines.append(f"{importer}:{detail['line_number']}: {detail['line_contents']} -> {imported}")
    return "\n".join(lines)


def test_no_import_cycle_inside_the_package():
    cycles = import_cycles("maskcls_hpo")
    assert cycles == [], "import cycles:\n" + "\n\n".join(describe(c, "maskcls_hpo") for c in cycles)


def test_the_cycle_check_finds_a_cycle_closed_by_a_function_level_import(tmp_path, monkeypatch):
    """A planted package: a -> b at module level, b -> c inside a function, c -> a; d imports a, outside the
    cycle. The check names the cycle a, b, c and the line of each import."""
    package = tmp_path / "planted_cycle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from planted_cycle import b\n\nVALUE = 1\n")
    (package / "b.py").write_text("def late():\n    from planted_cycle.c import helper\n\n    return helper()\n")
    (package / "c.py").write_text("import planted_cycle.a\n\n\ndef helper():\n    return planted_cycle.a.VALUE\n")
    (package / "d.py").write_text("from planted_cycle import a\n")
    monkeypatch.syspath_prepend(tmp_path)

    cycles = import_cycles("planted_cycle")
    assert cycles == [["planted_cycle.a", "planted_cycle.b", "planted_cycle.c", "planted_cycle.a"]]
    assert describe(cycles[0], "planted_cycle").splitlines() == [
        "planted_cycle.a:1: from planted_cycle import b -> planted_cycle.b",
        "planted_cycle.b:2: from planted_cycle.c import helper -> planted_cycle.c",
        "planted_cycle.c:1: import planted_cycle.a -> planted_cycle.a",
    ]

    (package / "b.py").write_text("def late():\n    return 1\n")  # the function-level import gone: no cycle
    assert import_cycles("planted_cycle") == []


def importlinter_config() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def test_the_contracts_ignore_no_import_and_layer_the_package_and_hpo():
    config = importlinter_config()
    contracts = config["contracts"]
    assert "ignore_imports" not in config
    assert [c["name"] for c in contracts if "ignore_imports" in c] == []
    layers = [c for c in contracts if c["type"] == "layers"]
    # one contract over the package's top (cli > results > hpo), one inside hpo/ (its sub-packages)
    assert any({"maskcls_hpo.cli", "maskcls_hpo.results", "maskcls_hpo.hpo"} <= set(c["layers"]) for c in layers)
    assert any(c.get("containers") == ["maskcls_hpo.hpo"] for c in layers)


def test_lint_imports_keeps_every_contract():
    """`lint-imports` (what `make lint` runs) on this checkout's package: every contract of pyproject.toml kept."""
    n_contracts = len(importlinter_config()["contracts"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(rf"Contracts: {n_contracts} kept, 0 broken\.", out), out
