"""Where workers run, as objects with one protocol: a :class:`Backend` (what the user chose) makes a
:class:`WorkerPool` (the running workers) that `launch` and `confirm` start, follow and stop.

Two backends: :class:`LocalBackend` (processes on this machine, :class:`~maskcls_hpo.hpo.workers.LocalWorkers`)
and :class:`~maskcls_hpo.hpo.workers.SlurmBackend` (one Slurm array job,
:class:`~maskcls_hpo.hpo.workers.SlurmWorkers`). Callers never branch on which one they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.workers._local import LocalBackend
from maskcls_hpo.hpo.workers._options import RunOptions, WorkerSettings
from maskcls_hpo.hpo.workers._slurm import SlurmBackend

SLURM_ONLY = {
    "gpus_per_worker": "--gpus-per-worker",
    "cpus_per_task": "--cpus-per-task",
    "partition": "--partition",
    "time_limit": "--time",
    "sbatch_arg": "--sbatch-arg",
    "detach": "--detach",
    "dry_run": "--dry-run",
    "cancel_on_exit": "--cancel-on-exit",
}
"""The flags that only a Slurm backend takes (parameter name -> flag)."""


class WorkerPool(Protocol):
    """Running workers of one study: `launch` and `confirm` start, follow and stop them through this.

    Implementations: :class:`~maskcls_hpo.hpo.workers.LocalWorkers` (processes on this machine) and
    :class:`~maskcls_hpo.hpo.workers.SlurmWorkers` (one Slurm array job).
    """

    n: int
    """How many workers."""
    job_id: str | None
    """The scheduler's job id (None for local processes, or before submitting)."""

    @property
    def script_path(self) -> Path | None:
        """The batch script written for the scheduler (None for local processes)."""

    def start(self) -> object:
        """Start (or submit) the workers. Raises LaunchError when they cannot start."""

    def alive(self) -> int:
        """How many workers have not ended (a queued Slurm task counts)."""

    def wait(self, on_poll: Callable[[], bool | None] | None = None, poll_interval: float = 1.0) -> list[int]:
        """Wait until every worker has ended, calling `on_poll()` between looks; exit codes by worker index.

        `on_poll` returns True once the study holds its budget and no trial runs (a pool may then drop
        workers that have not started).
        """

    def stop(self) -> list[int | None]:
        """Stop every worker cleanly (SIGTERM: the running trial is failed and re-queued); exit codes."""

    def close(self) -> None:
        """Release what the pool holds here (log files); the workers are not touched."""

    def returncodes(self) -> Sequence[int | None]:
        """Exit codes by worker index (negative: killed by that signal; None: still running)."""

    def states(self) -> dict[str, int] | None:
        """Workers by state for the live view (e.g. ``{"RUNNING": 2}``), or None when there is nothing to add."""

    def task_states(self) -> dict[int, str]:
        """Worker index -> last state seen (Slurm tasks); empty for local processes."""

    def last_lines(self, indices: Sequence[int] | None = None) -> str:
        """One line per worker in `indices` saying why it ended."""

    def where(self) -> str:
        """Where the workers' output is, for the closing line (``worker logs`` / ``Slurm job 12 tasks ...``)."""

    def on_interrupt(self, by_ctrl_c: bool, ask: Callable[[str], bool] | None) -> str:
        """Ctrl-C / SIGTERM reached the launcher: stop the workers or leave them; one line saying what was done.

        Args:
            by_ctrl_c: the user pressed Ctrl-C (a pool may then ask through `ask`); False for SIGTERM.
            ask: asks the user a yes/no question (None: no one to ask).
        """


class Backend(Protocol):
    """What the user chose about where workers run; makes the :class:`WorkerPool` of a prepared study."""

    @property
    def name(self) -> str:
        """``local`` or ``slurm``: for messages and the result."""

    @property
    def detach(self) -> bool:
        """Submit the workers and return without following them."""

    @property
    def dry_run(self) -> bool:
        """Write what would be submitted; prepare and submit nothing."""

    def preflight(self, settings: WorkerSettings, workers: int) -> list[str]:
        """Refuse what cannot run before anything is prepared (LaunchError, one line); notes for the user."""

    def describe(self, workers: int) -> str:
        """``2 worker(s)`` / ``Slurm array of 2 task(s)``: for the launch's first line."""

    def standby(self, settings: WorkerSettings, workers: int) -> WorkerPool | None:
        """Workers started early, on standby (they import torch while the launcher checks the data and touch
        nothing until :meth:`WorkerPool.start`); None when this backend cannot start them before the study exists.
        """

    def pool(self, settings: WorkerSettings, workers: int) -> WorkerPool:
        """The workers of a prepared study (not started)."""

    def write_script(self, settings: WorkerSettings, workers: int) -> Path:
        """`dry_run`: write what would be submitted (settings file, script); returns the script.

        Raises:
            LaunchError: the backend submits nothing (``--dry-run`` needs a scheduler).
        """


def run_options(options: RunOptions | None, flags: dict[str, Any]) -> RunOptions:
    """`options`, or :meth:`RunOptions.from_flags` of `flags` (a notebook's ``storage=..., data_dir=...``).

    Raises:
        TypeError: both were given. LaunchError: a bad flag value.
    """
    if options is not None and flags:
        raise TypeError(f"pass either options= or flags ({', '.join(sorted(flags))}), not both")
    return options if options is not None else RunOptions.from_flags(**flags)


def make_backend(
    name: str, *, given: Sequence[str] = (), gpus: str | None = None, **slurm: Any
) -> LocalBackend | SlurmBackend:
    """The backend ``--backend NAME`` and its flags describe.

    Args:
        name: ``local`` or ``slurm``.
        given: the parameter names the user typed (a flag left at its default is not "given").
        gpus: ``--gpus 0,1`` (local only).
        slurm: the :class:`~maskcls_hpo.hpo.workers.SlurmBackend` fields (used with ``slurm``).

    Raises:
        LaunchError: an unknown backend, ``--gpus`` with Slurm, or Slurm-only flags with ``local`` (one line
            naming them).
    """
    if name == "local":
        wrong = [flag for param, flag in SLURM_ONLY.items() if param in given]
        if wrong:
            raise LaunchError(f"{', '.join(wrong)} only apply to --backend slurm")
        return LocalBackend.from_flag(gpus)
    if name == "slurm":
        if gpus:
            raise LaunchError("--gpus is for local workers; with --backend slurm use --gpus-per-worker")
        return SlurmBackend(**slurm)
    raise LaunchError(f"--backend {name!r} is not known; use local or slurm")
