"""Generate the summary table of docs/errors.md from maskcls_hpo/errors.py, so the page lists every error class.

One row per :class:`~maskcls_hpo.errors.MaskclsError` subclass in the package: its parent and the built-in base
that ``except`` in user code can catch it by, the exit code the command line gives it (``exit_code``, set on
MaskclsError and inherited), and the first paragraph of its docstring. Classes are found by reading the source
(``ast``), not by importing it, so the subclasses in ``train.py`` are listed without importing torch. The table
sits between ``<!-- errors:begin -->`` and ``<!-- errors:end -->``; tests/docs/test_docs.py fails when it is stale or
a class has no section on the page:

    .venv/bin/python scripts/errors_table.py            # rewrite the table in docs/errors.md
    .venv/bin/python scripts/errors_table.py --print    # print it only
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generated import main, section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "maskcls_hpo"
PAGE = ROOT / "docs" / "errors.md"
BEGIN, END = "<!-- errors:begin -->", "<!-- errors:end -->"
BUILTINS = ("ValueError", "RuntimeError")


@dataclass(frozen=True)
class ErrorClass:
    """One subclass of MaskclsError as written in the source."""

    name: str
    module: str  # dotted, e.g. "maskcls_hpo.train"
    bases: tuple[str, ...]  # as written: "MaskclsError", "ValueError", ...
    summary: str  # the docstring's first paragraph, on one line
    exit_code: int | None  # `exit_code = N` in the class body, else None (inherited)


def error_classes() -> list[ErrorClass]:
    """Every class of the package that derives from MaskclsError (directly or not), errors.py's first."""
    found: dict[str, ErrorClass] = {}
    paths = sorted(PACKAGE.rglob("*.py"), key=lambda p: (p.name != "errors.py", str(p)))
    for path in paths:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                bases = tuple(b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases)
                doc = (ast.get_docstring(node) or "").strip().split("\n\n")
                code = next(
                    (
                        stmt.value.value
                        for stmt in node.body
                        if isinstance(stmt, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "exit_code" for t in stmt.targets)
                        and isinstance(stmt.value, ast.Constant)
                    ),
                    None,
                )
                found.setdefault(node.name, ErrorClass(node.name, module, bases, " ".join(doc[0].split()), code))
    errors: dict[str, ErrorClass] = {"MaskclsError": found["MaskclsError"]}
    grew = True
    while grew:  # the transitive closure over base names
        grew = False
        for cls in found.values():
            if cls.name not in errors and any(b in errors for b in cls.bases):
                errors[cls.name] = cls
                grew = True
    return list(errors.values())


def _builtin(cls: ErrorClass, by_name: dict[str, ErrorClass]) -> str:
    """The built-in base (ValueError, RuntimeError) of `cls` or of its nearest project parent."""
    for base in cls.bases:
        if base in BUILTINS:
            return base
    parent = next((b for b in cls.bases if b in by_name), None)
    return _builtin(by_name[parent], by_name) if parent else "Exception"


def _exit_code(cls: ErrorClass, by_name: dict[str, ErrorClass]) -> int:
    if cls.exit_code is not None:
        return cls.exit_code
    parent = next(b for b in cls.bases if b in by_name)
    return _exit_code(by_name[parent], by_name)


def _markdown(text: str) -> str:
    """A docstring's Sphinx roles (:data:`X`, :class:`~a.B`) as Markdown code; no `|` to break the table."""
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("|", "/")


def errors_table() -> str:
    """The markdown table, one row per error class."""
    classes = error_classes()
    by_name = {c.name: c for c in classes}
    rows = ["| error | is a | exit code | what it means |", "|---|---|---|---|"]
    for cls in classes:
        parent = next((b for b in cls.bases if b in by_name), None)
        is_a = ", ".join(f"`{b}`" for b in dict.fromkeys(x for x in (parent, _builtin(cls, by_name)) if x))
        where = "" if cls.module == "maskcls_hpo.errors" else f" (`{cls.module}`)"
        rows.append(
            f"| [`{cls.name}`](#{cls.name.lower()}){where} | {is_a} | {_exit_code(cls, by_name)} "
            f"| {_markdown(cls.summary)} |"
        )
    return "\n".join(rows) + "\n"


def page_section(text: str) -> str | None:
    """The table currently in the page (between the markers), or None without markers."""
    return section(text, BEGIN, END)


if __name__ == "__main__":
    main(errors_table, PAGE, BEGIN, END, __doc__.splitlines()[0], "error table")
