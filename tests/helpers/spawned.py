"""Targets of the processes that tests start with multiprocessing's "spawn" (a new interpreter per process).

A spawned process imports its target by module name. The test modules are imported by pytest in importlib mode
under names the child cannot import (``tests.hpo.store...`` needs the repository root on ``sys.path``); this
module is found through pytest's ``pythonpath = ["tests"]``, which the child inherits as its ``sys.path``.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import optuna

from maskcls_hpo.hpo._optuna import storage_of, study_id_of
from maskcls_hpo.hpo.store import HeartbeatSettings, claim_waiting_trial, new_claim, open_storage

HEARTBEAT = HeartbeatSettings(interval=1, grace_period=20)


def open_at(n: int, url: str, start_at: float, study: str | None, create: bool, out: mp.Queue) -> None:
    """Process `n`: at `start_at`, open the storage (and create a study in it when `study` is given)."""
    time.sleep(max(0.0, start_at - time.time()))
    try:
        storage = open_storage(url, HEARTBEAT, create=create)
        if study is not None:
            optuna.create_study(study_name=study, storage=storage, load_if_exists=True)
        out.put((n, "ok"))
    except Exception as err:  # noqa: BLE001 - the parent asserts on the text
        out.put((n, f"{type(err).__name__}: {err}"))


def claim_racer(url: str, name: str, start_at: float, out: mp.Queue) -> None:
    """One process: wait for the common start time, then claim the queue's trials one by one until none is left."""
    storage = open_storage(url, HEARTBEAT)
    study = optuna.load_study(study_name="race", storage=storage)
    claim = new_claim(name)
    won = []
    time.sleep(max(0.0, start_at - time.time()))
    while (trial_id := claim_waiting_trial(storage_of(study), study_id_of(study), claim)) is not None:
        won.append(trial_id)
    out.put((name, claim.token, won))
