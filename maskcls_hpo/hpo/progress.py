"""The live progress table of a running sweep (rich), drawn from a :class:`~maskcls_hpo.hpo.launch.Progress`."""

from __future__ import annotations

from rich.table import Table

from maskcls_hpo.hpo.launch import Progress

__all__ = ["progress_table"]


def progress_table(p: Progress) -> Table:
    """Counts by state, best val macro F1, and each running trial's last epoch."""
    table = Table(title=f"study '{p.study_name}'  {p.elapsed:,.0f} s", show_header=True, header_style="bold")
    for col in ("finished", "complete", "pruned", "failed", "running", "best val macro F1"):
        table.add_column(col, justify="right")
    c = p.counts
    table.add_row(
        f"{c.finished}/{p.n_trials}",
        str(c.complete),
        str(c.pruned),
        str(c.failed),
        str(c.running),
        f"{p.best:.4f}" if p.best is not None else "-",
    )
    if p.running:
        table.caption = "running: " + ", ".join(f"#{n} epoch {e}" for n, e in p.running)
    return table
