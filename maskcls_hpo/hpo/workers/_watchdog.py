"""Watchdog for a hung trial: no epoch finished within a limit derived from the trial's own epoch times.

A trial stuck inside an epoch (a dead data path, a deadlocked collective, a stuck GPU) keeps its heartbeat
fresh, so it never looks stale. A daemon thread of the worker watches the time since the trial's last
finished epoch (or since it started). The limit is

- before the first epoch ends: ``max(minimum, first_epoch)`` (model build, data loading, one epoch); a
  resumed trial too, until its first epoch in this process ends (loading its checkpoint is no epoch, and the
  epochs it restored are not timed here: issue 25 saw a resumed trial failed as hung during its start-up);
- after that: ``max(minimum, factor x the slowest epoch so far)``;
- after the trial's last epoch (writing the final files, uploading artifacts): ``max(minimum, first_epoch)``.

Past the limit the trial is failed with reason ``hung: ...``, a copy is queued to resume from its last
checkpoint (once: a copy of a trial that already hung is not queued again), and the worker process exits
with :data:`~maskcls_hpo.hpo.workers.EXIT_HUNG`: the stuck thread cannot be stopped from inside, so the
process is replaced (``LocalWorkers`` starts a new one; a plain `maskcls-hpo worker` exits with that code
for its service manager to restart). See "Faults" in docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import optuna

from maskcls_hpo.hpo._optuna import storage_of, study_id_of, trial_id_of
from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.store import fail_trial
from maskcls_hpo.hpo.workers._options import EXIT_HUNG

log = logging.getLogger(__name__)


class TrialWatchdog:
    """Watches the trial the worker runs (one at a time) from a daemon thread.

    Args:
        study: the study (its storage is used from the watchdog thread: statements only, no Study state).
        minimum: seconds; the limit is never below this.
        factor: the limit after the first epoch is `factor` x the slowest epoch so far (seconds).
        first_epoch: seconds allowed until the first epoch ends.
        on_hung: called after the trial was failed (default: flush logs and ``os._exit(EXIT_HUNG)``).
    """

    def __init__(
        self,
        study: optuna.Study,
        minimum: float,
        factor: float = 5.0,
        first_epoch: float = 3600.0,
        on_hung: Callable[[], None] | None = None,
    ) -> None:
        self.study = study
        self.minimum, self.factor, self.first_epoch = float(minimum), float(factor), float(first_epoch)
        self.on_hung = on_hung or _exit_hung
        self._lock = threading.Lock()
        self._trial: optuna.Trial | None = None
        self._last = 0.0
        self._slowest: float | None = None
        self._trained = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="maskcls-trial-watchdog", daemon=True)
        self._thread.start()

    def limit(self) -> float:
        """Seconds allowed from now's reference point (trial start or last finished epoch) to the next epoch."""
        if self._slowest is None or self._trained:
            return max(self.minimum, self.first_epoch)
        return max(self.minimum, self.factor * self._slowest)

    def start(self, trial: optuna.Trial) -> None:
        """Watch `trial` from now on."""
        with self._lock:
            self._trial, self._last, self._slowest, self._trained = trial, time.monotonic(), None, False
        self._wake.set()

    def epoch_done(self, seconds: float, last: bool = False) -> None:
        """One epoch of the watched trial finished in this process; it took `seconds`.

        `last`: it was the trial's last epoch (what follows is no epoch: the first-epoch limit applies).
        """
        with self._lock:
            self._last = time.monotonic()
            self._slowest = max(self._slowest or 0.0, float(seconds))
            self._trained = bool(last)

    def stop(self) -> None:
        """The trial ended: stop watching it."""
        with self._lock:
            self._trial = None

    def _watch(self) -> None:
        while True:
            with self._lock:
                trial, last, limit = self._trial, self._last, self.limit()
            if trial is None:
                self._wake.wait(timeout=5.0)
                self._wake.clear()
                continue
            idle = time.monotonic() - last
            if idle > limit:
                self._hung(trial, idle, limit)
                continue
            time.sleep(min(1.0, max(0.05, (limit - idle) / 2)))

    def _hung(self, trial: optuna.Trial, idle: float, limit: float) -> None:
        with self._lock:
            if self._trial is not trial:
                return  # it ended meanwhile
            slowest = self._slowest
            self._trial = None
        since = "its last epoch" if slowest is not None else "it started"
        if self._trained:
            since = "its final epoch (writing its files)"
        reason = f"hung: no epoch finished within {limit:.0f} s of {since}"
        if slowest is not None:
            reason += f" (slowest epoch so far {slowest:.1f} s)"
        again = _hung_before(self.study, trial)
        try:
            failed = fail_trial(self.study, trial_id_of(trial), reason, queue_copy=not again)
        except Exception as err:  # noqa: BLE001 - cannot reach the storage: a stale check fails it later
            log.error("trial %d hung, and marking it failed raised %s: %s", trial.number, type(err).__name__, err)
            failed = True
        if not failed:
            return  # it finished just now
        log.error(
            "trial %d %s; %s; this worker process exits (code %d) to be replaced",
            trial.number,
            reason,
            "it hung before, so no copy is queued" if again else "a copy is queued to resume from its checkpoint",
            EXIT_HUNG,
        )
        self.on_hung()


def _hung_before(study: optuna.Study, trial: optuna.Trial) -> bool:
    """True when `trial` is the re-queued copy of a trial that ended as hung."""
    storage = storage_of(study)
    try:
        history = storage.get_trial(trial_id_of(trial)).system_attrs.get("retry_history", [])
        for number in history:
            tid = storage.get_trial_id_from_study_id_trial_number(study_id_of(study), number)
            if str(storage.get_trial(tid).user_attrs.get(TrialAttrs.REASON, "")).startswith("hung"):
                return True
    except Exception:  # noqa: BLE001 - cannot tell: queue the copy (it is limited by max_retry anyway)
        return False
    return False


def _exit_hung() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_HUNG)
