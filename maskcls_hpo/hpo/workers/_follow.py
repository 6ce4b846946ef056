"""Following running workers until they end: one loop for `launch` and `confirm` alike.

:func:`follow` starts a :class:`~maskcls_hpo.hpo.workers.WorkerPool`, shows a
:class:`~maskcls_hpo.hpo.workers.Progress` snapshot about every poll interval (and at once when a worker process
exits), and on Ctrl-C / SIGTERM lets the pool decide what to do with its workers
(:meth:`~maskcls_hpo.hpo.workers.WorkerPool.on_interrupt`). It knows nothing of sweeps or confirm studies: the
caller turns the :class:`Followed` it returns into its own result.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy

from maskcls_hpo.hpo.signals import Interrupted, stop_requested, stop_signals
from maskcls_hpo.hpo.workers._backends import WorkerPool
from maskcls_hpo.hpo.workers._progress import Progress, ProgressReader


@dataclass
class SweepEvents:
    """Callbacks of a launcher (the CLI's live view, a notebook's prints); each may be None.

    Attributes:
        on_progress: called with a :class:`~maskcls_hpo.hpo.workers.Progress` about every poll interval and
            once at the end.
        on_message: called with each one-line status message (e.g. ``print``).
        ask: asks the user a yes/no question (on Ctrl-C: cancel the Slurm array?); None: never asks.
    """

    on_progress: Callable[[Progress], None] | None = None
    on_message: Callable[[str], None] | None = None
    ask: Callable[[str], bool] | None = None

    def say(self, line: str) -> None:
        """Pass `line` to `on_message` (if any)."""
        if self.on_message is not None:
            self.on_message(line)

    def show(self, snapshot: Progress) -> None:
        """Pass `snapshot` to `on_progress` (if any)."""
        if self.on_progress is not None:
            self.on_progress(snapshot)


@dataclass
class Followed:
    """How following workers ended.

    Attributes:
        exit_codes: by worker index (negative: killed by that signal; -9 for one that would not stop).
        interrupted: stopped by Ctrl-C / SIGTERM.
        seconds: wall time since the workers started.
        message: what the pool did on an interrupt ("" otherwise), e.g. ``cancelled Slurm job 12``.
    """

    exit_codes: list[int] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    message: str = ""


def follow(
    pool: WorkerPool,
    reader: ProgressReader,
    events: SweepEvents,
    *,
    started: float | None = None,
    poll_interval: float = 1.0,
    start: bool = True,
) -> Followed:
    """Start `pool` (unless `start` is False: already started) and follow it until every worker has ended.

    Args:
        reader: snapshots of the study the workers run (its budget says when it is done).
        started: ``time.monotonic()`` the elapsed time counts from (default: now).

    Returns:
        :class:`Followed`; the final snapshot (phase ``done`` or ``interrupted``) has been shown.
    """
    began = time.monotonic() if started is None else started
    out = Followed()

    def poll(phase: str | None = None) -> bool:
        try:
            snap = reader.snapshot(workers=pool.alive() if phase is None else 0, phase=phase)
        except sqlalchemy.exc.SQLAlchemyError:
            return False
        snap.tasks, snap.job = pool.states(), pool.job_id
        events.show(snap)
        return snap.counts.finished >= reader.n_trials and snap.counts.running == 0

    try:
        with stop_signals():
            if start:
                pool.start()
            out.exit_codes = pool.wait(on_poll=poll, poll_interval=poll_interval)
    except (KeyboardInterrupt, Interrupted) as err:
        out.interrupted = True
        # Ctrl-C (SIGINT) may ask; SIGTERM (a scheduler or `kill` stopping the launcher) never does
        by_ctrl_c = isinstance(err, KeyboardInterrupt) or stop_requested() == f"signal {int(signal.SIGINT)}"
        out.message = pool.on_interrupt(by_ctrl_c, events.ask)
        out.exit_codes = [code if code is not None else -9 for code in pool.returncodes()]
    finally:
        pool.close()
    out.seconds = time.monotonic() - began
    poll("interrupted" if out.interrupted else "done")
    return out
