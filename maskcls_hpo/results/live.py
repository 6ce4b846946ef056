"""Live views of a running sweep, drawn from :class:`~maskcls_hpo.hpo.workers.Progress` snapshots.

Two renderers, picked by `launch` (``console.is_terminal``):

- :func:`progress_table` (a terminal): a rich table redrawn in place: per RUNNING trial its epoch / epochs,
  last val macro F1, elapsed time and ETA; above it the counts, the best trial so far and the sweep's ETA;
  workers that are still importing torch are shown as "starting"; a Slurm launch adds its array's task states.
- :class:`ProgressLines` (output redirected to a file): plain lines, one per reported epoch and one per
  finished trial, each prefixed with the launch's elapsed time, so the log reads like a training log.

The final snapshot (phase "done" or "interrupted") lists no running trial: after Ctrl-C the workers have
failed and re-queued their trials, and the view says how many wait to resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from maskcls_hpo.hpo.attrs import PRUNED_REASON
from maskcls_hpo.hpo.workers import FinishedTrial, Progress

__all__ = ["progress_table", "ProgressLines", "clock", "live_view"]


def clock(seconds: float | None) -> str:
    """Seconds as ``m:ss`` (under an hour) or ``h:mm:ss``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(int(round(seconds)), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _epochs(epoch: int, epochs: int | None) -> str:
    return f"{epoch}/{epochs}" if epochs else str(epoch)


def _f1(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _counts(p: Progress) -> str:
    c = p.counts
    return f"{c.finished}/{p.n_trials} finished ({c.complete} complete, {c.pruned} pruned), {c.failed} failed"


def _best(p: Progress) -> str:
    if p.best is None:
        return "best: none yet"
    return f"best val macro F1 {p.best:.4f}" + (f" (trial {p.best_trial})" if p.best_trial is not None else "")


def _end_line(p: Progress) -> str:
    """What the final snapshot says instead of the running trials."""
    c = p.counts
    if p.phase == "interrupted":
        line = f"interrupted: no trial of this launch runs; {c.waiting} trial(s) queued to resume with the next launch"
        if c.running:
            line += f"; {c.running} RUNNING trial(s) of other workers or killed ones (stale after the grace period)"
        return line
    return "done: every worker has exited" + (
        f"; {c.running} trial(s) of other workers still running" if c.running else ""
    )


def _tasks_line(p: Progress) -> str | None:
    """``slurm job 12: RUNNING 2, PENDING 1`` for a Slurm launch, else None."""
    if not p.tasks:
        return None
    return f"slurm job {p.job}: " + ", ".join(f"{state} {n}" for state, n in p.tasks.items())


def progress_table(p: Progress) -> Group:
    """The terminal view of one snapshot (a rich renderable: a summary line and the running trials' table)."""
    head = Text.assemble(
        (f"study '{p.study_name}'", "bold"),
        f": {_counts(p)}; elapsed {clock(p.elapsed)}",
        f", ETA {clock(p.eta)}" if p.eta is not None else "",
        "\n",
        (_best(p), "bold green" if p.best is not None else ""),
    )
    tasks = [Text(line, style="cyan")] if (line := _tasks_line(p)) else []
    if p.warning:
        tasks.append(Text(p.warning, style="yellow"))
    if p.final:
        return Group(head, Text(_end_line(p), style="yellow" if p.phase == "interrupted" else ""), *tasks)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("trial", "epoch", "last val macro F1", "elapsed", "ETA"):
        table.add_column(col, justify="right")
    for r in p.running:
        table.add_row(str(r.number), _epochs(r.epoch, r.epochs), _f1(r.value), clock(r.elapsed), clock(r.eta))
    idle = max(p.workers - len(p.running), 0)
    if p.phase == "starting":
        status = f"{p.workers} worker(s) starting (loading torch and the data cache) ..."
    elif not p.running:
        status = "no trial running" + (f"; {idle} worker(s) between trials" if idle else "")
    elif idle:
        status = f"{idle} worker(s) between trials or waiting for a slot"
    else:
        status = ""
    parts: list = [head, *tasks]
    if p.running:
        parts.append(table)
    if status:
        parts.append(Text(status, style="dim"))
    return Group(*parts)


class ProgressLines:
    """Plain log lines from successive snapshots: each call returns the lines that are new since the last.

    Lines (``[m:ss]`` is the launch's elapsed time)::

        [0:03] starting 2 worker(s)
        [0:21] trial 0 epoch 1/4: val macro F1 0.1234
        [0:40] trial 0 COMPLETE: val macro F1 0.3456 after 4/4 epochs in 0:37 | 1/12 finished (...), 0 failed; best ...
        [0:41] trial 1 PRUNED at epoch 2/4 (val macro F1 0.1000) | ...
        [1:10] done: 12/12 finished (9 complete, 3 pruned), 0 failed; best val macro F1 0.5 (trial 7)

    A PRUNED or FAIL line ends with the trial's reason when it is more than the pruner's own
    "pruned at epoch E" (e.g. ``oom``, a non-finite loss, the exception of a failed trial).
    """

    def __init__(self) -> None:
        self._epochs: dict[int, int] = {}
        self._finished: set[int] = set()  # trials whose end line was written
        self._said_starting = False
        self._tasks: str | None = None
        self._warned = False

    def _epoch_lines(self, stamp: str, number: int, values: dict[int, float], epochs: int | None) -> list[str]:
        done = self._epochs.get(number, 0)
        out = [
            f"{stamp} trial {number} epoch {_epochs(e, epochs)}: val macro F1 {v:.4f}"
            for e, v in sorted(values.items())
            if e > done
        ]
        if values:
            self._epochs[number] = max(done, max(values))
        return out

    def _finished_line(self, stamp: str, t: FinishedTrial, p: Progress) -> str:
        if t.state == "COMPLETE":
            what = f"COMPLETE: val macro F1 {_f1(t.value)} after {_epochs(t.epoch, t.epochs)} epochs"
        else:
            what = f"{t.state} at epoch {_epochs(t.epoch, t.epochs)}"
            if t.epoch and t.epoch in t.values:
                what += f" (val macro F1 {t.values[t.epoch]:.4f})"
            if t.reason and not t.reason.startswith(PRUNED_REASON):
                what += f": {t.reason}"
        if t.seconds is not None:
            what += f" in {clock(t.seconds)}"
        return f"{stamp} trial {t.number} {what} | {_counts(p)}; {_best(p)}"

    def __call__(self, p: Progress) -> list[str]:
        """The new lines for snapshot `p` (possibly none)."""
        stamp = f"[{clock(p.elapsed)}]"
        lines: list[str] = []
        if p.phase == "starting" and not self._said_starting:
            lines.append(f"{stamp} starting {p.workers} worker(s)")
            self._said_starting = True
        tasks = _tasks_line(p)
        if tasks is not None and tasks != self._tasks:  # a Slurm launch: one line whenever a task changes state
            lines.append(f"{stamp} {tasks}")
            self._tasks = tasks
        for t in p.finished:
            lines += self._epoch_lines(stamp, t.number, t.values, t.epochs)
            lines.append(self._finished_line(stamp, t, p))
            self._epochs.pop(t.number, None)
            self._finished.add(t.number)
        for r in p.running:
            # a trial that ended between the snapshot's two reads is in both lists: its end line is written
            if r.number not in self._finished:
                lines += self._epoch_lines(stamp, r.number, r.values, r.epochs)
        if p.warning and not self._warned:  # once per launch
            lines.append(f"{stamp} {p.warning}")
            self._warned = True
        if p.final:
            lines.append(f"{stamp} {_end_line(p).split(':', 1)[0]}: {_counts(p)}; {_best(p)}")
            if p.phase == "interrupted":
                lines.append(f"{stamp} {_end_line(p)}")
        return lines


@contextlib.contextmanager
def live_view(console: Console) -> Iterator[tuple[Callable[[Progress], None], Callable[[], None] | None]]:
    """The view `launch` and `confirm` show while they follow their workers, on `console`.

    A terminal gets :func:`progress_table` redrawn in place; a file (output redirected) gets :class:`ProgressLines`.

    Yields:
        ``(on_progress, stop)``: the callback that draws a snapshot, and (on a terminal) one that stops the live
        table so that a question can be asked below it (None for a file).
    """
    if console.is_terminal:
        live = Live(console=console, refresh_per_second=2, transient=False, auto_refresh=False)
        with live:
            yield (lambda p: live.update(progress_table(p), refresh=True)), live.stop
        return
    lines = ProgressLines()

    def print_lines(p: Progress) -> None:
        for line in lines(p):
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    yield print_lines, None
