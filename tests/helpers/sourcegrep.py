"""Greps over the package's own source, for tests that keep one fact in one place."""

from __future__ import annotations

import re

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "maskcls_hpo"


def package_lines_matching(pattern: str, except_file: str) -> list[str]:
    """``"path:line: text"`` of every non-comment line of ``maskcls_hpo/**/*.py`` matching `pattern`.

    Files named `except_file` (the one place the pattern belongs) are skipped.
    """
    regex = re.compile(pattern)
    return [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != except_file
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if regex.search(line) and not line.lstrip().startswith("#")
    ]
