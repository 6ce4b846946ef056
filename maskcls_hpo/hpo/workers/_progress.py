"""Snapshots of a running study for live views: counts, running trials with their epochs, trials just finished."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo._optuna import finished_since, study_id_of
from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.store import StudyCounts, best_of, count_trials, first_rung_warning


@dataclass
class RunningTrial:
    """One RUNNING trial in a :class:`Progress` snapshot.

    Attributes:
        number: the trial number.
        epoch: last reported epoch (1-based; 0 before the first report).
        epochs: epochs the trial trains (its config user attr, else the sweep's); None when unknown.
        value: val macro F1 of the last reported epoch (None before the first).
        values: every reported epoch -> val macro F1 (the trial's intermediate values).
        elapsed: seconds since the trial started (None when the storage has no start time).
        eta: seconds until its last epoch at the pace of its epochs so far (None before the first epoch);
            a pruner may end it earlier.
    """

    number: int
    epoch: int
    epochs: int | None
    value: float | None
    values: dict[int, float]
    elapsed: float | None
    eta: float | None


@dataclass
class FinishedTrial:
    """A trial that finished (COMPLETE, PRUNED or FAIL) since the previous :class:`Progress` snapshot.

    Attributes:
        number, state: the trial and its end state (``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``).
        value: its value (val macro F1; None unless COMPLETE). epoch: last reported epoch (0: none).
        epochs: epochs it was meant to train (None when unknown). values: epoch -> val macro F1.
        reason: its `reason` user attr ("" when none). seconds: start to end (None when unknown).
    """

    number: int
    state: str
    value: float | None
    epoch: int
    epochs: int | None
    values: dict[int, float]
    reason: str
    seconds: float | None


@dataclass
class Progress:
    """A snapshot of a running sweep, for live views (:mod:`maskcls_hpo.results.live`).

    Attributes:
        study_name, n_trials: the study and its budget (finished trials).
        counts: trials by state.
        best: best COMPLETE value so far (val macro F1), None before the first; best_trial: its number.
        running: each RUNNING trial (:class:`RunningTrial`), by trial number.
        elapsed: seconds since the workers started.
        workers: worker processes of this launch still alive.
        phase: ``"starting"`` (workers alive, none has started a trial yet: they are importing torch),
            ``"running"``, ``"interrupted"`` (the final snapshot after Ctrl-C / SIGTERM: workers stopped)
            or ``"done"`` (the final snapshot after the workers exited).
        finished: trials that finished since the previous snapshot (:class:`FinishedTrial`, by end time).
        eta: seconds until the budget is reached at this launch's pace so far (None before this launch
            finished a trial).
        tasks: the Slurm array's tasks by state (e.g. ``{"RUNNING": 2}``); None for local workers.
        job: the Slurm array job id (None for local workers).
        warning: more than half of the finished trials were pruned at the first rung
            (:func:`~maskcls_hpo.hpo.store.first_rung_warning`), else None.
    """

    study_name: str
    n_trials: int
    counts: StudyCounts
    best: float | None
    running: list[RunningTrial]
    elapsed: float
    best_trial: int | None = None
    workers: int = 0
    phase: str = "running"
    finished: list[FinishedTrial] = field(default_factory=list)
    eta: float | None = None
    tasks: dict[str, int] | None = None
    job: str | None = None
    warning: str | None = None

    @property
    def final(self) -> bool:
        """True for the last snapshot of a launch (no trial of it runs any more)."""
        return self.phase in ("interrupted", "done")


class ProgressReader:
    """Builds :class:`Progress` snapshots of one study with a few cheap reads per call.

    Per call: one ``GROUP BY`` count (:func:`~maskcls_hpo.hpo.store.count_trials`), the RUNNING trials only
    (``get_trials(states=(RUNNING,))``), the best trial, and the ids of trials that finished in the last
    minute (one SQL query over the study's trial rows), of which only those not seen before are read whole. It never
    loads every trial of the study, so it stays cheap for studies with thousands of trials.

    Args:
        storage: the study's storage; study: the study.
        n_trials: the budget; default_epochs: epochs of a trial whose config attr is not stored yet.
        started: ``time.monotonic()`` when the workers started (snapshots' `elapsed` counts from it).
    """

    # trials that finished up to this long before the previous snapshot are looked for again (slow commits,
    # workers on other machines with a slightly different clock); the numbers already reported are skipped
    WINDOW = datetime.timedelta(seconds=60)

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        study: optuna.Study,
        n_trials: int,
        default_epochs: int | None = None,
        started: float | None = None,
    ):
        self.storage, self.study, self.n_trials, self.default_epochs = storage, study, n_trials, default_epochs
        self.started = time.monotonic() if started is None else started
        self._since = datetime.datetime.now().astimezone()
        self._reported: set[int] = set()
        self._start_finished = count_trials(storage, study_id_of(study)).finished
        self._trial_started = False
        self._polled = False

    def _epochs(self, t: FrozenTrial) -> int | None:
        config = t.user_attrs.get(TrialAttrs.CONFIG)
        if isinstance(config, dict) and isinstance(config.get("epochs"), int):
            return int(config["epochs"])
        return self.default_epochs

    def _running(self, now: datetime.datetime) -> list[RunningTrial]:
        now = now.replace(tzinfo=None)  # FrozenTrial times are naive local
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            values = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
            epoch = max(values, default=0)
            epochs = self._epochs(t)
            elapsed = (now - t.datetime_start).total_seconds() if t.datetime_start is not None else None
            seconds = t.user_attrs.get(TrialAttrs.EPOCH_SECONDS) or []
            pace = sum(seconds) / len(seconds) if seconds else (elapsed / epoch if epoch and elapsed else None)
            eta = pace * max(epochs - epoch, 0) if pace is not None and epochs is not None else None
            out.append(RunningTrial(t.number, epoch, epochs, values.get(epoch), values, elapsed, eta))
        return sorted(out, key=lambda r: r.number)

    def _finished(self, now: datetime.datetime) -> list[FinishedTrial]:
        since = self._since - (self.WINDOW if self._polled else datetime.timedelta(0))
        self._polled = True
        rows = [
            (trial_id, number)
            for trial_id, number in finished_since(self.storage, study_id_of(self.study), since)
            if number not in self._reported
        ]
        self._since = now
        out = []
        for trial_id, number in rows:
            t = self.storage.get_trial(trial_id)
            self._reported.add(number)
            values = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_start is not None and t.datetime_complete is not None
                else None
            )
            out.append(
                FinishedTrial(
                    number,
                    t.state.name,
                    float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else None,
                    max(values, default=0),
                    self._epochs(t),
                    values,
                    str(t.user_attrs.get(TrialAttrs.REASON, "")),
                    seconds,
                )
            )
        return out

    def snapshot(self, workers: int = 0, phase: str | None = None) -> Progress:
        """The study now. `workers`: this launch's live worker processes; `phase`: "interrupted" or "done"
        for the final snapshot (no trial is listed as running then), else derived ("starting" / "running").
        """
        now = datetime.datetime.now().astimezone()
        counts = count_trials(self.storage, study_id_of(self.study))
        running = self._running(now) if phase is None else []
        finished = self._finished(now)
        self._trial_started = self._trial_started or bool(running) or bool(finished)
        if phase is None:
            phase = "starting" if workers and not self._trial_started else "running"
        best, best_number = best_of(self.study)
        elapsed = time.monotonic() - self.started
        done_here = counts.finished - self._start_finished
        eta = None
        if done_here > 0 and elapsed > 0 and phase == "running":
            eta = max(self.n_trials - counts.finished, 0) * elapsed / done_here
        return Progress(
            self.study.study_name,
            self.n_trials,
            counts,
            best,
            running,
            elapsed,
            best_trial=best_number,
            workers=workers,
            phase=phase,
            finished=finished,
            eta=eta,
            warning=first_rung_warning(self.storage, study_id_of(self.study), counts.finished)
            if counts.pruned
            else None,
        )
