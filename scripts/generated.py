"""Tables generated from the code into the docs, between two marker comments: one reader and one writer.

``scripts/cli_options.py`` (docs/cli.md) and ``scripts/errors_table.py`` (docs/errors.md) use it; tests compare
:func:`section` of the page with the freshly generated table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def section(text: str, begin: str, end: str) -> str | None:
    """The text between the markers `begin` and `end` (one trailing newline), or None without markers."""
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def write_section(page: Path, table: str, begin: str, end: str) -> None:
    """Put `table` between the markers of `page`.

    Raises:
        SystemExit: the page has no markers (one line saying where they belong).
    """
    text = page.read_text(encoding="utf-8")
    if section(text, begin, end) is None:
        raise SystemExit(f"{page}: no {begin} ... {end} markers; add them where the table belongs")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    page.write_text(f"{head}{begin}\n{table}{end}{tail}", encoding="utf-8")


def main(make: Callable[[], str], page: Path, begin: str, end: str, description: str, what: str) -> None:
    """The command line of a generator: ``--print`` prints the table, else it is written into `page`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--print", action="store_true", help=f"print the table, do not touch {page.name}")
    args = parser.parse_args()
    table = make()
    if args.print:
        print(table, end="")
        return
    write_section(page, table, begin, end)
    print(f"wrote the {what} ({len(table.splitlines()) - 2} rows) into {page}")
