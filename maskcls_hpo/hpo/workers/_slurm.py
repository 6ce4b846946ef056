"""Workers as one Slurm array job: the sbatch script, submission, task states, cancel (README "On a Slurm cluster").

`launch --backend slurm --workers K` prepares the study on the submitting machine exactly as a local launch
does, then :class:`SlurmWorkers` writes two files under the study's logs folder and submits the script:

- ``slurm-worker.json``: the sweep's :class:`~maskcls_hpo.hpo.workers.WorkerSettings`, written once, with no
  password in it (``WorkerSettings.without_password``); every task reads it and takes its ``worker_index``
  from ``SLURM_ARRAY_TASK_ID``;
- ``slurm-array.sbatch``: ``#SBATCH --array=0-(K-1)``, ``--requeue``, ``--cpus-per-task``, ``--gres=gpu:G``
  when G > 0, output per task in ``worker-%A_%a.log`` (appended across requeues), then
  ``exec python -m maskcls_hpo.hpo.workers slurm-worker.json``. A person can read and resubmit it
  (``sbatch FILE``; the study must exist: ``launch --workers 0`` prepares it).

A password that came inside the storage URL travels as ``PGPASSWORD`` in the environment of ``sbatch``,
which Slurm passes to the tasks (its default ``--export=ALL``); with a password file each task reads the file.
Task states come from ``squeue`` (pending and running tasks) and ``scontrol show job`` (finished tasks, kept by
the controller for ``MinJobAge``, 300 s by default), else ``sacct`` where accounting is on.

This module imports no Optuna and no torch (the worker reads :func:`slurm_task_of_env` at start).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.store import display_url
from maskcls_hpo.hpo.workers._options import WorkerSettings

log = logging.getLogger(__name__)

SCRIPT_NAME = "slurm-array.sbatch"
SETTINGS_NAME = "slurm-worker.json"
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")  # Slurm's --time forms: MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]

TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
    }
)
"""Job states after which a task runs no more (``squeue``/``sacct`` names); REQUEUED and PENDING are not."""


@dataclass(frozen=True)
class SlurmBackend:
    """Workers as one Slurm array job (`launch --backend slurm --workers K`): the array's resources and behaviour.

    Attributes:
        gpus_per_worker: ``--gres=gpu:G`` per task when G > 0 (checked against the partition's Gres).
        cpus_per_task: ``--cpus-per-task`` (default 1; the worker's ``OMP_NUM_THREADS`` follows it).
        partition: ``--partition`` (None: the cluster's default partition).
        time: ``--time`` limit per task, e.g. ``"02:00:00"`` (None: the partition's).
        sbatch_args: further ``#SBATCH`` lines, each one argument such as ``"--qos=short"``.
        job_name: ``--job-name`` (None: ``maskcls-<study>``).
        detach: submit and return without following the job.
        dry_run: write the script and settings file only (no study prepared, nothing submitted).
        cancel_on_exit: on Ctrl-C / SIGTERM of the launcher, ``scancel`` the array (False: leave it running;
            None: ask, on Ctrl-C only, through the launcher's `ask` callback, e.g. a prompt on a terminal).

    Raises:
        LaunchError: a negative GPU count, fewer than 1 CPU, a ``--time`` that is no Slurm time limit, an
            ``--sbatch-arg`` with a line break (one line naming the flag).
    """

    gpus_per_worker: int = 0
    cpus_per_task: int = 1
    partition: str | None = None
    time: str | None = None
    sbatch_args: tuple[str, ...] = ()
    job_name: str | None = None
    detach: bool = False
    dry_run: bool = False
    cancel_on_exit: bool | None = False
    name: str = "slurm"

    def __post_init__(self) -> None:
        if not 0 <= self.gpus_per_worker <= 1024:
            raise LaunchError(f"--gpus-per-worker must be between 0 and 1024, got {self.gpus_per_worker}")
        if not 1 <= self.cpus_per_task <= 100_000:
            raise LaunchError(f"--cpus-per-task must be between 1 and 100000, got {self.cpus_per_task}")
        if self.time is not None and not _TIME.match(self.time):
            raise LaunchError(f"--time {self.time!r} is not a Slurm time limit; use HH:MM:SS (e.g. 02:00:00) or D-HH")
        for arg in self.sbatch_args:
            if "\n" in arg or "\r" in arg:
                raise LaunchError(f"--sbatch-arg {arg!r} holds a line break; give one #SBATCH option per flag")

    def preflight(self, settings: WorkerSettings, workers: int) -> list[str]:
        """:func:`check_cluster` for `workers` tasks on the settings' storage."""
        return check_cluster(self, workers, settings.storage_url)

    def describe(self, workers: int) -> str:
        """``Slurm array of 2 task(s)``."""
        return f"Slurm array of {workers} task(s)"

    def standby(self, settings: WorkerSettings, workers: int) -> None:
        """None: Slurm tasks start when the scheduler says, after the study is prepared."""
        return None

    def pool(self, settings: WorkerSettings, workers: int) -> SlurmWorkers:
        """The array job of `workers` tasks (:class:`SlurmWorkers`; not submitted yet)."""
        return SlurmWorkers(settings, self, workers)

    def write_script(self, settings: WorkerSettings, workers: int) -> Path:
        """The settings file and the sbatch script of the array (nothing submitted); returns the script."""
        script, _ = SlurmWorkers(settings, self, workers).write_files()
        return script


@dataclass
class SlurmTask:
    """One array task as Slurm reports it: index, state (``RUNNING``, ``COMPLETED``, ...), exit code, restarts.

    ``exit_code`` is the task's exit status (negative: killed by that signal), None until it ended.
    """

    index: int
    state: str
    exit_code: int | None = None
    restarts: int = 0
    reason: str = ""


def slurm_task_of_env(environ: Mapping[str, str] | None = None) -> tuple[str, int | None, int] | None:
    """The Slurm job this process runs in: ``(job id, array task id or None, restart count)``, or None.

    The job id is the array's (``SLURM_ARRAY_JOB_ID``) for an array task, so ``f"{job}_{task}"`` is the name
    ``squeue`` shows; a plain batch job gives ``(SLURM_JOB_ID, None, restarts)``.
    """
    env = os.environ if environ is None else environ
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")
    if not job:
        return None
    task = env.get("SLURM_ARRAY_TASK_ID")
    try:
        restarts = int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    return job, (int(task) if task and task.isdigit() else None), restarts


# --- cluster checks --------------------------------------------------------------------------------------


def _run(argv: Sequence[str], timeout: float = 30.0, env: Mapping[str, str] | None = None) -> str:
    """Run a Slurm command; its stdout. Raises LaunchError with the command's own first error line."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=dict(env or os.environ)
        )
    except FileNotFoundError:
        raise LaunchError(
            f"`{argv[0]}` is not on PATH; install Slurm's client commands or run on a login node"
        ) from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"`{shlex.join(argv)}` did not answer within {timeout:.0f} s; is slurmctld up?") from None
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[0]
        raise LaunchError(f"`{shlex.join(argv)}` failed: {first}")
    return done.stdout


def _missing_commands() -> list[str]:
    return [c for c in COMMANDS if shutil.which(c) is None]


def _sbatch_arg_value(args: Sequence[str], *names: str) -> str | None:
    """The value of an option such as ``--nodelist=a,b`` / ``-w a,b`` among the extra sbatch args (last wins)."""
    value = None
    items = list(args)
    for i, a in enumerate(items):
        for n in names:
            if a.startswith(n + "=") and n.startswith("--"):
                value = a.split("=", 1)[1]
            elif a == n and i + 1 < len(items):
                value = items[i + 1]
            elif not n.startswith("--") and a.startswith(n) and len(a) > len(n):
                value = a[len(n) :]
    return value


def check_cluster(options: SlurmBackend, workers: int, storage_url: str) -> list[str]:
    """Refuse what cannot run, before anything is prepared or submitted; returns notes for the user.

    Checks: the Slurm commands are on PATH; `workers` >= 1; ``--time`` has a Slurm form; the partition exists
    (``sinfo``); with ``gpus_per_worker`` > 0 some node of the partition has ``gpu`` Gres; an SQLite storage is
    refused when the array may run on more than one node (the partition's nodes, or ``--nodelist``): SQLite
    needs every worker on one machine, PostgreSQL serves many.

    Raises:
        LaunchError: one line naming the option and what to do.
    """
    if workers < 1:
        raise LaunchError(f"--workers must be at least 1 with --backend slurm, got {workers}")
    missing = _missing_commands()
    if missing:
        if options.dry_run:
            return [f"Slurm commands not on PATH ({', '.join(missing)}): the cluster was not checked"]
        raise LaunchError(
            f"--backend slurm needs Slurm's commands, and {', '.join(f'`{c}`' for c in missing)} "
            "is not on PATH; run launch on a machine that can submit jobs (a login node), or use --backend local"
        )
    # partitions: name (default marked with *), node count, gres, nodes
    rows = [line.split("|") for line in _run(["sinfo", "-h", "-o", "%P|%D|%G|%N"]).splitlines() if line.count("|") == 3]
    partitions: dict[str, list[list[str]]] = {}
    default = None
    for name, *rest in rows:
        if name.endswith("*"):
            name = name[:-1]
            default = name
        partitions.setdefault(name, []).append(rest)
    part = options.partition or default
    if options.partition is not None and options.partition not in partitions:
        known = ", ".join(sorted(partitions)) or "none"
        raise LaunchError(
            f"--partition {options.partition!r} does not exist on this cluster (partitions: {known}); "
            "nothing was submitted"
        )
    if part is None:
        raise LaunchError(
            "this cluster has no default partition; name one with --partition "
            f"(partitions: {', '.join(sorted(partitions)) or 'none'})"
        )
    entries = partitions[part]
    if options.gpus_per_worker > 0:
        gres = [g for _, g, _ in entries if g and g != "(null)"]
        gpus = [g for g in gres if re.search(r"(^|,)gpu[:(]", g) or g == "gpu"]
        if not gpus:
            raise LaunchError(
                f"--gpus-per-worker {options.gpus_per_worker}: no node of partition '{part}' has GPUs (sinfo Gres: "
                f"{', '.join(gres) or '(null)'}); use --gpus-per-worker 0 here or a GPU partition (--partition)"
            )
    if make_url(storage_url).get_backend_name() == "sqlite":
        nodelist = _sbatch_arg_value(options.sbatch_args, "--nodelist", "-w")
        if nodelist:
            nodes = len(_run(["scontrol", "show", "hostnames", nodelist]).split())
            where = f"--nodelist {nodelist}"
        else:
            nodes = sum(int(d) for d, _, _ in entries if d.isdigit())
            where = f"partition '{part}'"
        if nodes > 1 and workers > 1:
            raise LaunchError(
                f"SQLite storage with {workers} workers on up to {nodes} nodes ({where}): SQLite needs every "
                "worker on one node (its file locks do not hold over a network filesystem); use PostgreSQL "
                "(--storage postgresql+psycopg://...) for several nodes, or pin the array to one node "
                "(--sbatch-arg=--nodelist=NODE); nothing was submitted"
            )
    return []


# --- the script ------------------------------------------------------------------------------------------


def sbatch_script(
    options: SlurmBackend,
    workers: int,
    settings_file: Path,
    log_dir: Path,
    study_name: str,
    storage_shown: str,
    workdir: Path,
    python: str | None = None,
) -> str:
    """The array job's batch script (text). Paths are absolute, so it runs from any folder.

    Args:
        options: the array's resources; workers: its size (tasks).
        settings_file: the WorkerSettings JSON every task reads.
        log_dir: folder of the per-task output files ``worker-<job>_<task>.log``.
        study_name, storage_shown: for the header comment (the URL with its password masked).
        workdir: ``--chdir`` of the tasks (relative paths in the settings resolve from there).
        python: interpreter of the workers (default: this one, ``sys.executable``).
    """
    python = python or sys.executable
    k = workers
    lines = [
        "#!/bin/bash",
        f"# maskcls-hpo: {k} worker(s) of study '{study_name}' on {storage_shown}.",
        "# Written by `maskcls-hpo launch --backend slurm`; resubmit with `sbatch THIS_FILE` (the study must exist).",
        "# No password here: it comes from the password file named in the settings file, or PGPASSWORD in the",
        "# environment sbatch passes to the tasks.",
        f"#SBATCH --job-name={options.job_name or 'maskcls-' + study_name}",
        f"#SBATCH --array=0-{k - 1}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={log_dir / 'worker-%A_%a.log'}",
        f"#SBATCH --chdir={workdir}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={options.cpus_per_task}",
    ]
    if options.gpus_per_worker > 0:
        lines.append(f"#SBATCH --gres=gpu:{options.gpus_per_worker}")
    if options.partition:
        lines.append(f"#SBATCH --partition={options.partition}")
    if options.time:
        lines.append(f"#SBATCH --time={options.time}")
    lines += [f"#SBATCH {arg}" for arg in options.sbatch_args]
    lines += [
        "",
        "export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-200}",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        'echo "maskcls-hpo task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname) '
        '(restart ${SLURM_RESTART_COUNT:-0}) $(date -Is)"',
        f"exec {shlex.quote(python)} -m maskcls_hpo.hpo.workers {shlex.quote(str(settings_file))}",
        "",
    ]
    return "\n".join(lines)


# --- task states ---------------------------------------------------------------------------------------


def _expand_indices(spec: str) -> list[int]:
    """``"0-3,5,7-9:2%4"`` -> task indices (Slurm's array syntax; the ``%`` limit is ignored)."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not m:
            continue
        lo, hi, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
        out.extend(range(lo, hi + 1, step))
    return out


def _exit_code(text: str) -> int | None:
    """Slurm's ``EXIT:SIGNAL`` -> exit status (negative signal when killed by one)."""
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2))
    return -sig if sig else code


def _scontrol_tasks(job_id: str) -> dict[int, SlurmTask] | None:
    """Every task of array `job_id` from ``scontrol -o show job`` (None when the controller forgot the job)."""
    done = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        return None
    tasks: dict[int, SlurmTask] = {}
    for line in done.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("ArrayJobId") != job_id:
            continue
        state = fields.get("JobState", "UNKNOWN")
        ended = state in TERMINAL_STATES
        for i in _expand_indices(fields.get("ArrayTaskId", "")):
            tasks[i] = SlurmTask(
                index=i,
                state=state,
                exit_code=_exit_code(fields.get("ExitCode", "")) if ended else None,
                restarts=int(fields.get("Restarts", "0") or 0),
                reason=fields.get("Reason", "") if fields.get("Reason") not in ("None", None) else "",
            )
    return tasks


def _sacct_tasks(job_id: str) -> dict[int, SlurmTask]:
    """Tasks of `job_id` from ``sacct`` (empty where accounting is off)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        tasks: dict[int, SlurmTask] = {}
        if done.returncode == 0:
            for line in done.stdout.splitlines():
                parts = line.split("|")
                if len(parts) != 3:
                    continue
                jid, state, code = parts
                m = re.fullmatch(rf"{re.escape(job_id)}_(\d+)", jid)
                if m:
                    state = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
                    i = int(m.group(1))
                    tasks[i] = SlurmTask(i, state, _exit_code(code) if state in TERMINAL_STATES else None)
        return tasks
    return {}


def task_states(job_id: str, workers: int) -> dict[int, SlurmTask]:
    """State of each of the `workers` tasks of array `job_id` (index -> SlurmTask).

    From ``scontrol show job`` (pending, running and recently finished tasks; the same states ``squeue`` and
    ``sacct`` print), else ``sacct``; a task neither knows is reported as ``UNKNOWN`` with no exit code.
    """
    tasks = _scontrol_tasks(job_id)
    if not tasks:
        tasks = _sacct_tasks(job_id)
    return {i: tasks.get(i, SlurmTask(i, "UNKNOWN")) for i in range(workers)}


def summarize(tasks: Mapping[int, SlurmTask]) -> dict[str, int]:
    """State -> number of tasks, e.g. ``{"RUNNING": 2}`` (states in first-seen order of the task index)."""
    out: dict[str, int] = {}
    for t in sorted(tasks.values(), key=lambda t: t.index):
        out[t.state] = out.get(t.state, 0) + 1
    return out


# --- the backend ----------------------------------------------------------------------------------------


class SlurmWorkers:
    """K workers of one sweep as one Slurm array job (the Slurm side of ``supervisor.WorkerBackend``).

    Args:
        settings: the sweep's worker settings (as for ``LocalWorkers``); the password stays out of the files.
        options: the array's resources and behaviour. workers: array tasks (K): ``--array=0-(K-1)``.
        workdir: the tasks' working folder (default: the current one).
        python: interpreter of the workers (default ``sys.executable``; a shared filesystem must hold it).

    Example::

        backend = SlurmWorkers(settings, SlurmBackend(gpus_per_worker=1, time="04:00:00"), workers=4)
        backend.start()          # writes the files, runs sbatch
        backend.wait(on_poll=lambda: None)
    """

    def __init__(
        self,
        settings: WorkerSettings,
        options: SlurmBackend,
        workers: int,
        workdir: Path | None = None,
        python: str | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.n = workers
        self.workdir = Path(workdir or Path.cwd()).resolve()
        self.python = python or sys.executable
        self.job_id: str | None = None
        self.tasks: dict[int, SlurmTask] = {}
        self._cancelled_pending: set[int] = set()
        self._unknown_since: dict[int, float] = {}

    @property
    def log_dir(self) -> Path:
        """Absolute folder of the script, the settings file and the task outputs."""
        return self.settings.log_dir.resolve()

    @property
    def script_path(self) -> Path:
        """The batch script (``<logs>/<study>/slurm-array.sbatch``)."""
        return self.log_dir / SCRIPT_NAME

    @property
    def settings_path(self) -> Path:
        """The settings file every task reads (``<logs>/<study>/slurm-worker.json``)."""
        return self.log_dir / SETTINGS_NAME

    def write_files(self) -> tuple[Path, str | None]:
        """Write the settings file (no password) and the script; returns (script path, password to pass on)."""
        bare, password = self.settings.without_password()
        # Absolute paths: the tasks may start in another folder (e.g. a --chdir given by the user).
        run: dict[str, object] = {"checkpoints": bare.checkpoint_root.resolve(), "logs": self.log_dir.parent}
        if bare.options.password_file:
            run["password_file"] = Path(bare.options.password_file).expanduser().resolve()
        updates: dict[str, object] = {
            "worker_index_env": "SLURM_ARRAY_TASK_ID",
            "sweep_path": Path(bare.sweep_path).resolve() if bare.sweep_path is not None else None,
            "options": bare.options.model_copy(update=run),
        }
        url = make_url(bare.storage_url)
        if url.get_backend_name() == "sqlite" and url.database:
            updates["storage_url"] = url.set(database=str(Path(url.database).resolve())).render_as_string(
                hide_password=False
            )
        bare = bare.model_copy(update=updates)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.settings_path.write_text(bare.model_dump_json(indent=1), encoding="utf-8")
        text = sbatch_script(
            self.options,
            self.n,
            self.settings_path,
            self.log_dir,
            self.settings.study_name,
            display_url(self.settings.storage_url),
            self.workdir,
            self.python,
        )
        self.script_path.write_text(text, encoding="utf-8")
        self.script_path.chmod(0o755)
        return self.script_path, password

    def start(self) -> str:
        """Write the files and submit the array (``sbatch --parsable``); returns the job id.

        Raises:
            LaunchError: sbatch refused the script (its message), or it is not on PATH.
        """
        script, password = self.write_files()
        env = {k: v for k, v in os.environ.items() if k != "MASKCLS_HPO_STORAGE"}
        if password is not None:
            env["PGPASSWORD"] = password
        out = _run(["sbatch", "--parsable", str(script)], env=env).strip()
        self.job_id = out.split(";")[0]
        log.info("submitted Slurm array job %s (%d tasks; script %s)", self.job_id, self.n, script)
        self.tasks = {i: SlurmTask(i, "PENDING") for i in range(self.n)}
        return self.job_id

    # a task Slurm cannot tell about (scontrol failing for a moment, or the job purged) keeps its last state
    # this long before it counts as ended
    UNKNOWN_GRACE_S = 300.0

    def refresh(self) -> dict[int, SlurmTask]:
        """Ask Slurm for the tasks' states (kept in `tasks`)."""
        if self.job_id is not None:
            now = time.monotonic()
            for i, t in task_states(self.job_id, self.n).items():
                if t.state != "UNKNOWN":
                    self._unknown_since.pop(i, None)
                    self.tasks[i] = t
                    continue
                since = self._unknown_since.setdefault(i, now)
                seen = self.tasks.get(i)
                if seen is None or (seen.state not in TERMINAL_STATES and now - since > self.UNKNOWN_GRACE_S):
                    self.tasks[i] = t  # never seen, or unknown for too long: the controller forgot it
        return self.tasks

    def alive(self) -> int:
        """Tasks not ended yet (pending, running, requeued)."""
        self.refresh()
        return sum(t.state not in TERMINAL_STATES and t.state != "UNKNOWN" for t in self.tasks.values())

    def states(self) -> dict[str, int]:
        """State -> number of tasks, from the last refresh (for the live view)."""
        return summarize(self.tasks)

    def cancel_pending(self) -> list[int]:
        """Cancel tasks that have not started (the study holds its budget: they would only exit)."""
        pending = [i for i, t in self.tasks.items() if t.state == "PENDING" and i not in self._cancelled_pending]
        if pending and self.job_id is not None:
            ids = [f"{self.job_id}_{i}" for i in pending]
            with contextlib.suppress(LaunchError):
                _run(["scancel", "--state=PENDING", *ids])
                self._cancelled_pending.update(pending)
                log.info("the study holds its budget: cancelled tasks that had not started: %s", ", ".join(ids))
        return pending

    def wait(self, on_poll: Callable[[], bool | None] | None = None, poll_interval: float = 2.0) -> list[int]:
        """Follow the array until no task is pending or running; `on_poll()` every `poll_interval` seconds.

        When `on_poll` returns True (the study holds its budget and no trial runs), tasks still pending are
        cancelled: they would start only to stop again.

        Returns:
            exit codes by task index (0 for a task cancelled before it started; -15 for one cancelled running).
        """
        poll_interval = max(poll_interval, 2.0)  # NOTE squeue/scontrol per poll: not faster than every 2 s
        quiet = 0
        # NOTE ended twice in a row: a task that is preempted or whose node failed shows that state for a moment
        # before --requeue puts it back in the queue
        while quiet < 2:
            if self.alive():
                quiet = 0
                if on_poll is not None and on_poll():
                    self.cancel_pending()
            else:
                quiet += 1
            if quiet < 2:
                time.sleep(poll_interval)
        if on_poll is not None:
            on_poll()
        return self.returncodes()

    def returncodes(self) -> list[int]:
        """Exit codes by task index; a task cancelled before it started counts as 0."""
        out = []
        for i in range(self.n):
            t = self.tasks.get(i)
            if t is None:
                out.append(-1)
            elif i in self._cancelled_pending and t.state == "CANCELLED":
                out.append(0)
            elif t.exit_code is not None:
                out.append(t.exit_code if t.state != "CANCELLED" or t.exit_code else -15)
            else:
                out.append(0 if t.state == "COMPLETED" else -1)
        return out

    def stop(self) -> list[int | None]:
        """``scancel`` the whole array (each running worker gets SIGTERM: its trial is failed and re-queued)."""
        if self.job_id is not None:
            _run(["scancel", self.job_id])
            log.info("cancelled Slurm array job %s", self.job_id)
            deadline = time.monotonic() + 90
            while self.alive() and time.monotonic() < deadline:
                time.sleep(1)
        return [t.exit_code for t in (self.tasks.get(i) for i in range(self.n)) if t is not None]

    def close(self) -> None:
        """Nothing to release (the job belongs to Slurm)."""

    def task_states(self) -> dict[int, str]:
        """Task index -> the last state Slurm reported."""
        return {i: task.state for i, task in self.tasks.items()}

    def where(self) -> str:
        """``Slurm job N tasks COMPLETED 2; task outputs in <logs>/<study>``."""
        states = ", ".join(f"{state} {n}" for state, n in self.states().items())
        return f"Slurm job {self.job_id} tasks {states}; task outputs in {self.settings.log_dir}"

    def on_interrupt(self, by_ctrl_c: bool, ask: Callable[[str], bool] | None) -> str:
        """Cancel the array when ``cancel_on_exit`` says so (None: ask, on Ctrl-C only); else leave it running.

        SIGTERM (a scheduler or `kill` stopping the launcher) never asks: the array keeps running.
        """
        if self.job_id is None:
            return "nothing was submitted"
        cancel = self.options.cancel_on_exit
        if cancel is None:
            question = f"cancel Slurm job {self.job_id} (its running trials are failed and re-queued)?"
            cancel = bool(ask(question)) if ask is not None and by_ctrl_c else False
        if cancel:
            self.stop()
            return f"cancelled Slurm job {self.job_id}"
        return f"Slurm job {self.job_id} keeps running (cancel it with: scancel {self.job_id})"

    def log_paths(self, index: int) -> list[Path]:
        """The output file(s) of task `index`."""
        return sorted(self.log_dir.glob(f"worker-{self.job_id}_{index}.log"))

    def last_lines(self, indices: Sequence[int] | None = None) -> str:
        """Why tasks ended: state and exit code, with the last line of each one's output."""
        lines = []
        for i in range(self.n):
            if indices is not None and i not in indices:
                continue
            t = self.tasks.get(i, SlurmTask(i, "UNKNOWN"))
            text: list[str] = []
            for p in self.log_paths(i):
                text = p.read_text(errors="replace").strip().splitlines() or text
            tail = text[-1].strip() if text else "no output"
            lines.append(f"task {self.job_id}_{i} {t.state} (exit {t.exit_code}): {tail}")
        return "; ".join(lines) or "see the task outputs in " + str(self.log_dir)
