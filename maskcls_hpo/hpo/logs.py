"""Logging set-up shared by the command line and worker processes (rich handler on stderr)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["setup_logging"]


def setup_logging(console: Console | None = None, verbose: bool = False) -> None:
    """Log ``maskcls_hpo`` at INFO (others at WARNING, INFO with `verbose`) through rich on `console`.

    Args:
        console: a ``rich.console.Console`` (default: a new one on stderr).
        verbose: INFO for every library, not only this package.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console or Console(stderr=True), show_path=False, rich_tracebacks=False)],
        force=True,
    )
    logging.getLogger("maskcls_hpo").setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's schema setup logs plugin lines at INFO
    try:
        import optuna  # lazy: optuna; the CLI imports this module at start-up
    except ImportError:  # pragma: no cover - optuna is a dependency
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
