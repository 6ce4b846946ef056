"""Entry point of a worker process: ``python -m maskcls_hpo.hpo.workers SETTINGS.json | --standby``."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from maskcls_hpo._util import disk_full_reason
from maskcls_hpo.errors import LaunchError, MaskclsError
from maskcls_hpo.hpo.logs import setup_logging
from maskcls_hpo.hpo.store import mask_password
from maskcls_hpo.hpo.workers._loop import run_worker
from maskcls_hpo.hpo.workers._options import WorkerSettings

# What a trial needs before its first batch: a standby worker (launch's workers, started before the data check)
# imports these while it waits, so the first trial starts without the import time. A missing optional one is
# skipped.
STANDBY_IMPORTS = (
    "torch",
    "timm",
    "sklearn.metrics",
    "maskcls_hpo.train",
    "maskcls_hpo.hpo.trial._objective",
)

# What a trial needs only after its first epoch (TensorBoard scalars) or at its end (the confusion-matrix PNG):
# imported in a background thread while the first trial trains, so they add nothing to its critical path
# (benchmark B3: they took about 2 s of a standby worker's 7 s of imports).
LATER_IMPORTS = ("torch.utils.tensorboard", "matplotlib.figure")


def import_in_background(names: tuple[str, ...] = LATER_IMPORTS) -> threading.Thread:
    """Import `names` in a daemon thread (a missing optional one is skipped); the thread, started.

    An import that the training thread needs meanwhile waits on Python's per-module import lock, so nothing is
    imported twice or half.
    """

    def run() -> None:
        for name in names:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="maskcls-hpo-imports", daemon=True)
    thread.start()
    return thread


def standby(stdin: TextIO | None = None, imports: tuple[str, ...] = STANDBY_IMPORTS) -> tuple[Path, Path] | None:
    """Import what a trial needs, then wait for the launcher's line on `stdin`: the settings and log file.

    The line is JSON ``{"settings": PATH, "log": PATH, "carry_output": BOOL}``; the process's stdout and stderr
    are then pointed at the log file (appended), after copying into it what they received so far when
    `carry_output` (the supervisor gives a standby worker a temporary file as its output until then). End of
    input (the launcher was refused, stopped or died) returns None: the worker ends without touching any file
    of the user's. Nothing is opened or created before the line.

    Returns:
        (settings file, log file), or None at end of input.
    """
    for name in imports:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    line = (stdin or sys.stdin).readline()
    if not line.strip():
        return None
    told = json.loads(line)
    log_path, settings_path = Path(told["log"]), Path(told["settings"])
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if told.get("carry_output"):
        offset = 0
        with contextlib.suppress(OSError):  # output that cannot be read back (a terminal): nothing to carry
            while chunk := os.pread(1, 1 << 16, offset):
                offset += len(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk) :]
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return settings_path, log_path


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process: ``python -m maskcls_hpo.hpo.workers SETTINGS.json``.

    The settings file holds one :class:`WorkerSettings` as JSON (written by the supervisor; no password in
    it: see ``WorkerSettings.storage_url``). Prints the worker's summary line. ``--standby`` instead of the
    file: import first, then read the settings and log file from stdin (:func:`standby`; how `launch`
    starts its workers while it checks the data).

    Returns:
        0 when the study reached its budget (or the timeout) or a standby worker was not needed, 3 after the
        failure cap, 130 when interrupted, 1 on an error a user can fix (one line on stderr).
    """

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m maskcls_hpo.hpo.workers SETTINGS.json | --standby", file=sys.stderr)
        return 2
    if args[0] == "--standby":
        try:
            told = standby()
        except KeyboardInterrupt:
            return 130
        if told is None:
            return 0
        args = [str(told[0])]
    setup_logging(verbose=True)
    import_in_background()
    settings: WorkerSettings | None = None
    try:
        settings = _read_settings(Path(args[0]))
        report = run_worker(settings)
    except MaskclsError as err:
        print(f"error: {mask_password(err)}", file=sys.stderr)
        return 1
    except Exception as err:  # a full disk under the study database (SQLite) or a log: one line, not a traceback
        full = disk_full_reason(err, settings.run_folders if settings is not None else [])
        if full is None:
            raise
        # NOTE one short line, no traceback: the log may sit on the full disk; launch names the folder anyway
        logging.getLogger(__name__).error("worker stops: %s", full)
        print(f"error: {full}; free space there, then launch again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("worker interrupted", file=sys.stderr)
        return 130
    print(report.summary_line(), flush=True)
    return report.exit_code


def _read_settings(path: Path) -> WorkerSettings:
    """The worker's settings file, for this process (its worker index).

    Raises:
        LaunchError: the file cannot be read, or it is no settings file of this version (one line naming it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise LaunchError(f"cannot read the worker settings file {path}: {err.strerror or err}") from None
    try:
        return WorkerSettings.model_validate_json(text).for_this_process()
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "file"
        message = str(first.get("ctx", {}).get("error") or first["msg"])
        raise LaunchError(f"{path}: {where}: {message}") from None


def exit_now(code: int) -> None:
    """End this worker process with `code` at once: flush the logs and stdio, skip the interpreter's teardown.

    NOTE a worker's work is stored when :func:`main` returns (trials told, checkpoints, artifacts and
    TensorBoard files closed); tearing down torch, timm, scikit-learn and matplotlib after that takes seconds
    (about 3 s on a busy 2-core machine, B3) that `launch` would wait for before it notices the end of the run.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
