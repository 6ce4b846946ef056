"""Local worker processes: start K workers on a prepared study, watch them, stop them cleanly.

Each process runs ``python -m maskcls_hpo.hpo.workers <logs>/<study>/worker-<i>.json``: the
:class:`~maskcls_hpo.hpo.workers.WorkerSettings` of the sweep, serialised whole, with its own
``worker_index``. The storage password never goes into that file or onto a command line: it stays in the
password file the user named, or travels as ``PGPASSWORD`` in the worker's environment when it came inside
the URL. GPUs are assigned round-robin through ``CUDA_VISIBLE_DEVICES`` (several workers per GPU allowed). A
worker whose trial hung exits with ``EXIT_HUNG`` (hpo/workers/_watchdog.py) and is replaced by a new process.

`launch` starts its workers early, while it still checks the data (:meth:`LocalWorkers.standby`): each process
(``python -m maskcls_hpo.hpo.workers --standby``) imports torch, timm and the training code, then waits for one
line on its stdin. :meth:`LocalWorkers.start` writes the settings files and sends each the line (its settings
file and log file: from then on it is an ordinary worker); :meth:`LocalWorkers.stop` before that ends them
(a refused launch). A standby worker touches no file, database or folder of the user's until its line arrives
(its output goes to an unlinked temporary file, which it copies into its log when told), so a refused launch
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.workers._options import EXIT_HUNG, WorkerSettings
from maskcls_hpo.hpo.workers._preflight import check_device_here

log = logging.getLogger(__name__)


def worker_argv(settings_file: Path) -> list[str]:
    """argv of one worker process reading `settings_file`."""
    return [sys.executable, "-m", "maskcls_hpo.hpo.workers", str(settings_file)]


def standby_argv() -> list[str]:
    """argv of one standby worker process: it imports, then reads its settings and log file from stdin."""
    return [sys.executable, "-m", "maskcls_hpo.hpo.workers", "--standby"]


def wait_for_exit(processes: Sequence[subprocess.Popen], timeout: float) -> None:
    """Sleep up to `timeout` seconds, waking as soon as one of `processes` exits (at once if one has already).

    Uses Linux pidfds (``os.pidfd_open``); where they are missing it looks every 50 ms. Reaps nothing: call
    ``poll()`` afterwards.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    fds: list[int] = []
    try:
        for p in processes:
            if p.returncode is not None:
                return
            try:
                fds.append(os.pidfd_open(p.pid))
            except ProcessLookupError:  # exited (and reaped) since
                return
        if fds:
            select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
            return
    except (AttributeError, OSError):  # no pidfd here (old kernel, not Linux): look every 50 ms
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return
    finally:
        for fd in fds:
            os.close(fd)
    time.sleep(max(0.0, deadline - time.monotonic()))  # no process to wait for


@dataclass
class WorkerProcess:
    """One started worker: its index, process, log file and settings file."""

    index: int
    process: subprocess.Popen
    log_path: Path | None
    settings_path: Path | None
    _log: IO[bytes] | None = field(default=None, repr=False)
    standby: bool = False
    """Started by :meth:`LocalWorkers.standby` and not told its settings yet (its log is `_log`, a temp file)."""

    @property
    def returncode(self) -> int | None:
        """Exit code (negative: killed by that signal), None while running."""
        return self.process.poll()


class LocalWorkers:
    """K worker processes of one sweep on this machine.

    Args:
        settings: the sweep's worker settings (``worker_index`` is set per process: 0..K-1).
        workers: how many processes.
        gpus: GPU ids for ``CUDA_VISIBLE_DEVICES``, round-robin; None: leave it as it is and split the CPU
            threads between the workers (``OMP_NUM_THREADS``) unless the user set that.
        env: extra environment for every worker.

    Example::

        with LocalWorkers(settings, workers=2) as pool:
            pool.wait(on_poll=lambda: None)
    """

    job_id: str | None = None
    script_path: Path | None = None

    def __init__(
        self,
        settings: WorkerSettings,
        workers: int,
        gpus: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise LaunchError(f"--workers must be at least 1 to start workers here, got {workers}")
        self.settings = settings
        self.n = workers
        self.gpus = list(gpus or [])
        self.extra_env = dict(env or {})
        self.procs: list[WorkerProcess] = []
        self.replaced = 0  # processes started anew after a hung trial
        self._password: str | None = None

    def _env(self, index: int, password: str | None) -> dict[str, str]:
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        env.pop("MASKCLS_HPO_STORAGE", None)  # the settings file names the storage
        env.setdefault("COLUMNS", "200")  # log files: rich would wrap every line at 80 characters
        if password is not None:
            env["PGPASSWORD"] = password
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        elif "OMP_NUM_THREADS" not in os.environ:
            # NOTE K CPU-bound workers with torch's default (all cores each) oversubscribe the CPU; split it.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.n))
        return env

    def standby(self) -> list[WorkerProcess]:
        """Start the K processes now, before the study exists; :meth:`start` later tells each its settings.

        Each runs ``python -m maskcls_hpo.hpo.workers --standby``: it imports torch, timm and the training code
        and waits for one line on its stdin. Until then it writes nothing but its own output, which goes to an
        unlinked temporary file (the worker copies it to the top of its log when :meth:`start` tells it where).
        :meth:`stop` ends the processes of a launch that is refused meanwhile; nothing of theirs stays behind.

        Raises:
            LaunchError: a process could not be started (the ones already started are stopped).
        """
        _, self._password = self.settings.without_password()
        try:
            for i in range(self.n):
                out = tempfile.TemporaryFile(prefix="maskcls-hpo-worker-")
                try:
                    proc = subprocess.Popen(
                        standby_argv(),
                        env=self._env(i, self._password),
                        stdin=subprocess.PIPE,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                except OSError as err:
                    out.close()
                    raise LaunchError(f"cannot start worker {i} ({sys.executable}): {err.strerror or err}") from None
                self.procs.append(WorkerProcess(i, proc, None, None, out, standby=True))
        except BaseException:
            self.stop()
            self.close()
            raise
        log.debug("started %d workers on standby (they import torch while the data is checked)", self.n)
        return self.procs

    def start(self) -> list[WorkerProcess]:
        """Write each worker's settings file and start the processes (or tell the standby ones to begin).

        Raises:
            LaunchError: a process could not be started, or a standby one ended before it was told to begin
                (the ones already started are stopped).
        """
        log_dir = self.settings.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        bare, self._password = self.settings.without_password()
        try:
            for i in range(self.n):
                path = log_dir / f"worker-{i}.json"
                path.write_text(bare.model_copy(update={"worker_index": i}).model_dump_json(indent=1), encoding="utf-8")
                log_path = log_dir / f"worker-{i}.log"
                if i < len(self.procs) and self.procs[i].standby:
                    self._release(self.procs[i], path, log_path)
                else:
                    self.procs.append(self._spawn(i, path, log_path))
        except BaseException:
            self.stop()
            raise
        log.info("started %d workers (logs in %s)", self.n, log_dir)
        return self.procs

    def _release(self, p: WorkerProcess, settings_path: Path, log_path: Path) -> None:
        """Tell a standby worker its settings and log file (it carries its output so far into that log)."""
        assert p._log is not None
        line = json.dumps({"settings": str(settings_path), "log": str(log_path), "carry_output": True}) + "\n"
        try:
            if p.process.poll() is not None:
                raise BrokenPipeError
            assert p.process.stdin is not None
            p.process.stdin.write(line.encode("utf-8"))
            p.process.stdin.close()
        except (BrokenPipeError, OSError):
            p.process.wait()
            last = _read_all(p._log).decode("utf-8", errors="replace").strip().splitlines()
            raise LaunchError(
                f"worker {p.index} ended while starting (exit code {p.process.returncode}): "
                f"{last[-1].strip() if last else 'no output'}"
            ) from None
        p._log.close()  # the worker keeps its own handle until it has copied what it wrote there
        p._log, p.log_path, p.settings_path, p.standby = None, log_path, settings_path, False

    def _spawn(self, index: int, settings_path: Path, log_path: Path) -> WorkerProcess:
        fh = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        try:
            proc = subprocess.Popen(
                worker_argv(settings_path), env=self._env(index, self._password), stdout=fh, stderr=subprocess.STDOUT
            )
        except OSError as err:
            fh.close()
            raise LaunchError(f"cannot start worker {index} ({sys.executable}): {err.strerror or err}") from None
        return WorkerProcess(index, proc, log_path, settings_path, fh)

    def replace_hung(self) -> int:
        """Start a new process for every worker that exited with EXIT_HUNG (its trial hung); returns how many.

        The hung trial was already failed (reason ``hung``) and re-queued by that worker's watchdog.
        """
        n = 0
        for pos, p in enumerate(self.procs):
            if p.returncode != EXIT_HUNG:
                continue
            if p._log is not None:
                p._log.close()
            assert p.log_path is not None and p.settings_path is not None  # a worker that ran a trial was started
            with open(p.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"--- worker {p.index} exited after a hung trial (code {EXIT_HUNG}); a new process starts\n")
            log.warning("worker %d exited after a hung trial; starting a new process", p.index)
            self.procs[pos] = self._spawn(p.index, p.settings_path, p.log_path)
            self.replaced += 1
            n += 1
        return n

    def alive(self) -> int:
        """How many worker processes are still running."""
        return sum(p.returncode is None for p in self.procs)

    def states(self) -> dict[str, int] | None:
        """None: the live view's trial counts say it all for local processes."""
        return None

    def wait(self, on_poll: Callable[[], bool | None] | None = None, poll_interval: float = 1.0) -> list[int]:
        """Wait until every worker has exited, calling `on_poll()` every `poll_interval` seconds and when one exits.

        A worker that exits because its trial hung (EXIT_HUNG) is replaced by a new process (:meth:`replace_hung`).

        Returns:
            the exit codes by worker index (negative: killed by that signal).
        """
        while self.replace_hung() or self.alive():
            if on_poll is not None:
                on_poll()
            # NOTE wakes as soon as a worker exits: the last one's exit ends the launch without a poll's delay
            wait_for_exit([p.process for p in self.procs if p.returncode is None], poll_interval)
        return [p.process.wait() for p in self.procs]  # every process has exited: wait() returns its code at once

    def returncodes(self) -> list[int | None]:
        """Exit codes by worker index (None for one still running)."""
        return [p.returncode for p in self.procs]

    def stop(self, term_timeout: float = 60.0, kill_timeout: float = 30.0) -> list[int | None]:
        """Stop every worker: SIGTERM (each closes its running trial cleanly), then SIGKILL after `term_timeout`.

        A worker that ignores SIGTERM is killed once `term_timeout` seconds have passed since the signal; one
        that survives even SIGKILL for `kill_timeout` seconds is reported in the log and left.

        Returns:
            the exit codes by worker index.
        """
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + term_timeout
        for p in self.procs:
            try:
                p.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop within %.0f s of SIGTERM; killing it", p.index, term_timeout)
                with contextlib.suppress(ProcessLookupError):
                    p.process.kill()
                try:
                    p.process.wait(timeout=kill_timeout)
                except subprocess.TimeoutExpired:
                    log.error("worker %d (pid %d) survived SIGKILL for %.0f s", p.index, p.process.pid, kill_timeout)
        return [p.returncode for p in self.procs]

    def close(self) -> None:
        """Close the log files and standby pipes (the processes are not touched)."""
        for p in self.procs:
            if p._log is not None:
                p._log.close()
                p._log = None
            if p.process.stdin is not None and not p.process.stdin.closed:
                with contextlib.suppress(OSError):
                    p.process.stdin.close()

    def __enter__(self) -> LocalWorkers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.alive():
                self.stop()
        finally:
            self.close()

    def task_states(self) -> dict[int, str]:
        """Empty: local processes have no scheduler states."""
        return {}

    def where(self) -> str:
        """``worker logs in <logs>/<study>``."""
        return f"worker logs in {self.settings.log_dir}"

    def on_interrupt(self, by_ctrl_c: bool, ask: Callable[[str], bool] | None) -> str:
        """Stop every worker (each fails its running trial and queues it to resume); nothing to say.

        NOTE SIGTERM, not SIGINT: a launch started in the background has SIGINT ignored, and its workers inherit
        that; every worker turns SIGTERM into a clean stop of its running trial.
        """
        self.stop()
        return ""

    def last_lines(self, indices: Sequence[int] | None = None) -> str:
        """Why workers stopped: the signal that killed each, else the last line of its log."""
        lines = []
        for p in self.procs:
            if indices is not None and p.index not in indices:
                continue
            code = p.returncode
            if code is not None and code < 0:
                lines.append(f"worker {p.index} was killed by signal {-code}")
                continue
            if p.log_path is None and p._log is not None:  # still on standby: its output is in a temp file
                text = _read_all(p._log).decode("utf-8", errors="replace").strip().splitlines()
            elif p.log_path is not None and p.log_path.is_file():
                text = p.log_path.read_text(errors="replace").strip().splitlines()
            else:
                text = []
            lines.append(text[-1].strip() if text else f"worker {p.index}: no log")
        return "; ".join(lines) or "see the worker logs"


def _read_all(fh: IO[bytes]) -> bytes:
    """Everything in the file behind `fh`, read with pread (the offset a child process shares is not moved)."""
    fd, offset = fh.fileno(), 0
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


@dataclass(frozen=True)
class LocalBackend:
    """Worker processes on this machine.

    Attributes:
        gpus: GPU ids assigned round-robin through ``CUDA_VISIBLE_DEVICES`` (several workers per GPU allowed);
            empty: leave ``CUDA_VISIBLE_DEVICES`` as it is and split the CPU threads between the workers.
    """

    gpus: tuple[str, ...] = ()
    name: str = "local"

    @property
    def detach(self) -> bool:
        """False: a local launch follows its workers."""
        return False

    @property
    def dry_run(self) -> bool:
        """False: there is nothing to write for local workers."""
        return False

    def preflight(self, settings: WorkerSettings, workers: int) -> list[str]:
        """``--device cuda`` needs a GPU here (:func:`check_device_here`); no notes."""
        check_device_here(settings.options.device)
        return []

    def describe(self, workers: int) -> str:
        """``2 worker(s)``."""
        return f"{workers} worker(s)"

    def standby(self, settings: WorkerSettings, workers: int) -> LocalWorkers:
        """`workers` processes started now, on standby (:meth:`LocalWorkers.standby`)."""
        pool = self.pool(settings, workers)
        pool.standby()
        return pool

    def pool(self, settings: WorkerSettings, workers: int) -> LocalWorkers:
        """:class:`LocalWorkers` with this backend's GPUs (not started)."""
        return LocalWorkers(settings, workers, gpus=self.gpus)

    def write_script(self, settings: WorkerSettings, workers: int) -> Path:
        """Refused: local workers need no script.

        Raises:
            LaunchError: always (``--dry-run`` needs ``--backend slurm``).
        """
        raise LaunchError("--dry-run needs --backend slurm")

    @classmethod
    def from_flag(cls, gpus: str | None) -> LocalBackend:
        """``--gpus 0,1`` -> ``LocalBackend(gpus=("0", "1"))`` (blank entries dropped)."""
        return cls(tuple(g.strip() for g in (gpus or "").split(",") if g.strip()))
