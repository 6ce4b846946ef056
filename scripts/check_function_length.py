"""List every function and method in maskcls_hpo/ longer than N lines (default 80); exit 1 if any.

A function's length counts from its `def` line (decorators excluded) to the last line of its body, docstring
and comments inside the body included: ``node.end_lineno - node.lineno + 1`` of the function's ast node. Nested
functions count towards their parent and are also checked on their own.

Usage: python scripts/check_function_length.py [--max N] [PATH ...]   (default PATH: the maskcls_hpo package)
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "maskcls_hpo"
DEFAULT_MAX = 80


def function_lengths(path: Path) -> Iterator[tuple[str, int, int]]:
    """Yield (qualified name, def line, length in lines) for every function and method in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                yield name, child.lineno, child.end_lineno - child.lineno + 1
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def long_functions(paths: list[Path], limit: int) -> list[tuple[Path, str, int, int]]:
    """Every function longer than `limit` lines under `paths` (files or folders of *.py), longest first."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    found = [(f, name, line, n) for f in files for name, line, n in function_lengths(f) if n > limit]
    return sorted(found, key=lambda row: (-row[3], str(row[0]), row[2]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "paths", nargs="*", type=Path, default=[PACKAGE], help="files or folders (default: the package)"
    )
    parser.add_argument(
        "--max", type=int, default=DEFAULT_MAX, help=f"longest allowed function (default {DEFAULT_MAX})"
    )
    args = parser.parse_args(argv)
    found = long_functions(args.paths, args.max)
    root = Path.cwd()
    for path, name, line, n in found:
        shown = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
        print(f"{shown}:{line}: {name} is {n} lines (max {args.max})")
    if found:
        print(f"{len(found)} function(s) over {args.max} lines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
