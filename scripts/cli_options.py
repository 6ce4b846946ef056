"""Generate the docs' option table (docs/cli.md) from the Typer app (`maskcls_hpo.cli.app`), so the two agree.

The table sits between ``<!-- options:begin -->`` and ``<!-- options:end -->`` in docs/cli.md; tests/cli/test_cli.py
fails when it differs from what this script generates. Rerun after adding or renaming an option:

    .venv/bin/python scripts/cli_options.py            # rewrite the table in docs/cli.md
    .venv/bin/python scripts/cli_options.py --print    # print it only
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generated import main, section  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"
SHARED = ("--storage", "--study")


def _code(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def options_table() -> str:
    """The markdown table: one row per verb, whether it takes --storage / --study, and its other options."""
    import typer.main

    from maskcls_hpo.cli import app

    group = typer.main.get_command(app)
    rows = [
        "| verb | `--storage` | `--study` / `--study-name` | other options |",
        "|---|---|---|---|",
    ]
    for name, command in group.commands.items():
        args = [p.name.upper() for p in command.params if p.param_type_name == "argument"]
        options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
        longs = {o.opts[0] for o in options}
        other = [o.opts[0] for o in options if o.opts[0] not in SHARED]
        verb = " ".join([name, *args])
        rows.append(
            f"| `{verb}` | {'yes' if '--storage' in longs else '-'} | {'yes' if '--study' in longs else '-'} "
            f"| {_code(other) or '-'} |"
        )
    return "\n".join(rows) + "\n"


def page_section(text: str) -> str | None:
    """The table currently in the page (between the markers), or None without markers."""
    return section(text, BEGIN, END)


if __name__ == "__main__":
    main(options_table, PAGE, BEGIN, END, __doc__.splitlines()[0], "option table")
