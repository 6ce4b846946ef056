"""Who runs trials, and how a launcher follows them: the run options, the worker settings, the worker loop, the
watchdog, the pre-flight checks, progress snapshots, the follow loop and the backends that start worker processes
(local, Slurm).

Imports :mod:`maskcls_hpo.hpo.trial` and :mod:`maskcls_hpo.hpo.store`. A worker process runs
``python -m maskcls_hpo.hpo.workers SETTINGS.json`` (the old ``python -m maskcls_hpo.hpo.worker`` still works).
"""

from maskcls_hpo.hpo.workers._backends import SLURM_ONLY, Backend, WorkerPool, make_backend, run_options
from maskcls_hpo.hpo.workers._follow import Followed, SweepEvents, follow
from maskcls_hpo.hpo.workers._local import (
    LocalBackend,
    LocalWorkers,
    WorkerProcess,
    standby_argv,
    wait_for_exit,
    worker_argv,
)
from maskcls_hpo.hpo.workers._loop import (
    Objective,
    Outcome,
    StopReason,
    TrialEnd,
    WorkerReport,
    join_worker,
    run_worker,
)
from maskcls_hpo.hpo.workers._options import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_WATCHDOG_FIRST_EPOCH_S,
    DEFAULT_WATCHDOG_S,
    EXIT_HUNG,
    FLAGS,
    MAX_SECONDS,
    MAX_TRIALS,
    MAX_WORKER_INDEX,
    MAX_WORKERS,
    RunOptions,
    Watchdog,
    WorkerSettings,
)
from maskcls_hpo.hpo.workers._preflight import (
    check_device_here,
    check_free_space,
    check_join,
    check_run_folders,
    prepare_data,
)
from maskcls_hpo.hpo.workers._progress import FinishedTrial, Progress, ProgressReader, RunningTrial
from maskcls_hpo.hpo.workers._slurm import (
    COMMANDS,
    SCRIPT_NAME,
    SETTINGS_NAME,
    TERMINAL_STATES,
    SlurmBackend,
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
    "Backend",
    "check_cluster",
    "check_join",
    "check_device_here",
    "check_run_folders",
    "check_free_space",
    "COMMANDS",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "DEFAULT_WATCHDOG_FIRST_EPOCH_S",
    "DEFAULT_WATCHDOG_S",
    "EXIT_HUNG",
    "FinishedTrial",
    "FLAGS",
    "follow",
    "Followed",
    "join_worker",
    "LocalBackend",
    "LocalWorkers",
    "make_backend",
    "MAX_SECONDS",
    "MAX_TRIALS",
    "MAX_WORKER_INDEX",
    "MAX_WORKERS",
    "Objective",
    "Outcome",
    "prepare_data",
    "Progress",
    "ProgressReader",
    "run_options",
    "run_worker",
    "RunningTrial",
    "RunOptions",
    "sbatch_script",
    "SCRIPT_NAME",
    "SETTINGS_NAME",
    "SLURM_ONLY",
    "slurm_task_of_env",
    "SlurmBackend",
    "SlurmTask",
    "SlurmWorkers",
    "standby_argv",
    "StopReason",
    "summarize",
    "SweepEvents",
    "task_states",
    "TERMINAL_STATES",
    "TrialEnd",
    "TrialWatchdog",
    "wait_for_exit",
    "Watchdog",
    "worker_argv",
    "WorkerPool",
    "WorkerProcess",
    "WorkerReport",
    "WorkerSettings",
]
