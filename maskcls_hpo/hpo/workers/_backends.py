"""The protocol of where workers run (local processes, one Slurm array job)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class WorkerBackend(Protocol):
    """Where the workers of a prepared study run: `launch` starts them, follows them and stops them through this.

    Implementations: :class:`LocalWorkers` (processes on this machine) and
    :class:`maskcls_hpo.hpo.workers.SlurmWorkers` (one Slurm array job).
    """

    kind: str
    """"local", "slurm"."""
    n: int
    """How many workers."""

    def start(self) -> object:
        """Start (or submit) the workers. Raises LaunchError when they cannot start."""

    def alive(self) -> int:
        """How many workers have not ended (a queued Slurm task counts)."""

    def wait(self, on_poll: Callable[[], bool | None] | None = None, poll_interval: float = 1.0) -> list[int]:
        """Wait until every worker has ended, calling `on_poll()` between looks; exit codes by worker index.

        `on_poll` returns True once the study holds its budget and no trial runs (a backend may then drop
        workers that have not started).
        """

    def stop(self) -> list[int | None]:
        """Stop every worker cleanly (SIGTERM: the running trial is failed and re-queued); exit codes."""

    def close(self) -> None:
        """Release what the backend holds here (log files); the workers are not touched."""

    def states(self) -> dict[str, int] | None:
        """Workers by state for the live view (e.g. ``{"RUNNING": 2}``), or None when there is nothing to add."""

    def last_lines(self, indices: Sequence[int] | None = None) -> str:
        """One line per worker in `indices` saying why it ended."""
