"""Who runs trials, and how a launcher follows them: the worker settings, the worker loop, the watchdog, the
pre-flight checks, progress snapshots and the backends that start worker processes (local, Slurm).

Imports :mod:`maskcls_hpo.hpo.trial` and :mod:`maskcls_hpo.hpo.store`. A worker process runs
``python -m maskcls_hpo.hpo.workers SETTINGS.json`` (the old ``python -m maskcls_hpo.hpo.worker`` still works).
"""

from maskcls_hpo.hpo.workers._backends import WorkerBackend
from maskcls_hpo.hpo.workers._local import LocalWorkers, WorkerProcess, standby_argv, wait_for_exit, worker_argv
from maskcls_hpo.hpo.workers._loop import STALE, WorkerReport, run_worker
from maskcls_hpo.hpo.workers._options import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_WATCHDOG_FIRST_EPOCH_S,
    DEFAULT_WATCHDOG_S,
    EXIT_HUNG,
    WorkerSettings,
)
from maskcls_hpo.hpo.workers._preflight import check_join, prepare_data
from maskcls_hpo.hpo.workers._progress import FinishedTrial, Progress, ProgressReader, RunningTrial
from maskcls_hpo.hpo.workers._slurm import (
    COMMANDS,
    SCRIPT_NAME,
    SETTINGS_NAME,
    TERMINAL_STATES,
    SlurmOptions,
    SlurmTask,
    SlurmWorkers,
    check_cluster,
    sbatch_script,
    slurm_task_of_env,
    summarize,
    task_states,
)
from maskcls_hpo.hpo.workers._watchdog import TrialWatchdog

__all__ = [
    "check_cluster",
    "check_join",
    "COMMANDS",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "DEFAULT_WATCHDOG_FIRST_EPOCH_S",
    "DEFAULT_WATCHDOG_S",
    "EXIT_HUNG",
    "FinishedTrial",
    "LocalWorkers",
    "prepare_data",
    "Progress",
    "ProgressReader",
    "run_worker",
    "RunningTrial",
    "sbatch_script",
    "SCRIPT_NAME",
    "SETTINGS_NAME",
    "slurm_task_of_env",
    "SlurmOptions",
    "SlurmTask",
    "SlurmWorkers",
    "STALE",
    "standby_argv",
    "summarize",
    "task_states",
    "TERMINAL_STATES",
    "TrialWatchdog",
    "wait_for_exit",
    "worker_argv",
    "WorkerBackend",
    "WorkerProcess",
    "WorkerReport",
    "WorkerSettings",
]
