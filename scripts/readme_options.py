"""Generate the README's option table from the Typer app (`maskcls_hpo.cli.app`), so the two always agree.

The table sits between ``<!-- options:begin -->`` and ``<!-- options:end -->`` in README.md; tests/test_cli.py
fails when it differs from what this script generates. Rerun after adding or renaming an option:

    .venv/bin/python scripts/readme_options.py            # rewrite the table in README.md
    .venv/bin/python scripts/readme_options.py --print    # print it only
"""

from __future__ import annotations

import argparse
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
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


def readme_section(text: str) -> str | None:
    """The table currently in README.md (between the markers), or None without markers."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table, do not touch README.md")
    args = parser.parse_args()
    table = options_table()
    if args.print:
        print(table, end="")
        return
    text = README.read_text(encoding="utf-8")
    if readme_section(text) is None:
        raise SystemExit(f"{README}: no {BEGIN} ... {END} markers; add them where the table belongs")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{BEGIN}\n{table}{END}{tail}", encoding="utf-8")
    print(f"wrote the option table ({table.count(chr(10)) - 2} verbs) into {README}")


if __name__ == "__main__":
    main()
