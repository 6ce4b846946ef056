"""The compute one study spent: epochs, image-epochs and seconds of its trials, and what pruning saved.

Computed from what the trials store, not from counters that could drift: the epochs a trial trained are its
reported epochs (``intermediate_values``, one per epoch) less the epochs it inherited when it resumed from a
checkpoint (user attr ``resumed_at_epoch``: a stale trial's re-queued copy carries the failed trial's values,
and the failed trial counts its own); its seconds are the matching entries of ``epoch_seconds``; image-epochs
are epochs x ``train_images`` (training images of one epoch, stored at the first epoch). What pruning saved is
each PRUNED trial's epochs not trained: its config's ``epochs`` less the epochs it reached.

Workers write the ledger of their study as the study user attr ``ledger``
(:data:`~maskcls_hpo.hpo.attrs.StudyAttrs.LEDGER`) at most every :data:`WRITE_INTERVAL_S` seconds and when they
stop (:class:`LedgerWriter`), so the dashboard and other tools see it; `status`, `report` and `export` compute
it afresh (:func:`maskcls_hpo.hpo.select.study_ledger`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs

log = logging.getLogger(__name__)

WRITE_INTERVAL_S = 10.0
"""Workers write the ledger at most this often (seconds), and once when they stop."""


def trial_epochs(trial: FrozenTrial) -> int:
    """Epochs `trial` trained itself: its reported epochs less those it inherited when it resumed."""
    inherited = int(trial.user_attrs.get(TrialAttrs.RESUMED_AT_EPOCH, 0) or 0)
    return max(0, len(trial.intermediate_values) - inherited)


def trial_seconds(trial: FrozenTrial) -> float:
    """Wall seconds of the epochs `trial` trained itself (``epoch_seconds`` after the inherited ones)."""
    inherited = int(trial.user_attrs.get(TrialAttrs.RESUMED_AT_EPOCH, 0) or 0)
    seconds = trial.user_attrs.get(TrialAttrs.EPOCH_SECONDS) or []
    return float(sum(float(s) for s in seconds[inherited:]))


def epochs_to_come(trial: FrozenTrial, default_epochs: int) -> int:
    """Epochs `trial` still trains to reach its config's last epoch: its planned epochs (its config's ``epochs``,
    `default_epochs` before the config is stored) less the epochs it reported, inherited ones included."""
    planned = _planned_epochs(trial)
    return max(0, (planned if planned is not None else default_epochs) - len(trial.intermediate_values))


def epoch_room(trials: list[FrozenTrial], budget: int, default_epochs: int, *, below: int | None = None) -> int:
    """Epochs of `budget` that no trial has trained or holds: what a trial may still take (``--budget-epochs``).

    Trained: every trial's own epochs (:func:`trial_epochs`; WAITING trials have none). Held: the epochs to come
    of each RUNNING trial (:func:`epochs_to_come`), so a trial that starts when its epochs fit cannot take the
    study past `budget` even if every running trial trains to its last epoch.

    Args:
        trials: every trial of the study.
        budget: the study's epoch budget.
        default_epochs: planned epochs of a trial whose config is not stored yet (the sweep's base config).
        below: count only the RUNNING trials numbered below it, and leave trial `below` itself out: the room of
            trial `below` when lower numbers go first (as the worker's slot claim decides a race).

    Returns:
        epochs left (negative when the held epochs already exceed the budget).
    """
    room = budget
    for t in trials:
        if below is not None and t.number == below:
            continue
        if t.state != TrialState.WAITING:
            room -= trial_epochs(t)
        if t.state == TrialState.RUNNING and (below is None or t.number < below):
            room -= epochs_to_come(t, default_epochs)
    return room


def _planned_epochs(trial: FrozenTrial) -> int | None:
    config = trial.user_attrs.get(TrialAttrs.CONFIG)
    epochs = config.get("epochs") if isinstance(config, dict) else None
    return int(epochs) if isinstance(epochs, int) else None


def _device(trial: FrozenTrial) -> str:
    """``cuda`` or ``cpu`` (what the trial ran on; its config's device while it runs)."""
    device = trial.user_attrs.get(TrialAttrs.DEVICE)
    if device is None:
        config = trial.user_attrs.get(TrialAttrs.CONFIG)
        device = config.get("device") if isinstance(config, dict) else None
    return "cuda" if str(device or "").startswith("cuda") else "cpu"


def empty_stage() -> dict[str, Any]:
    """A stage of the ledger with nothing spent (the shape :func:`stage_ledger` returns)."""
    return {
        "trials": 0,
        "epochs": 0,
        "image_epochs": 0,
        "seconds": 0.0,
        "seconds_by_device": {},
        "pruned": {"trials": 0, "epochs_saved": 0, "image_epochs_saved": 0},
        "promoted": 0,
    }


def stage_ledger(trials: list[FrozenTrial]) -> dict[str, Any]:
    """What `trials` (one study's, any state) spent and what pruning saved.

    Returns:
        {"trials": trials that trained at least one epoch, "epochs": int, "image_epochs": int (epochs x
        ``train_images``; trials without it count 0), "seconds": float (wall seconds of the epochs),
        "seconds_by_device": {"cpu" | "cuda": seconds} (on a GPU: GPU-seconds, one GPU per trial),
        "pruned": {"trials", "epochs_saved", "image_epochs_saved"} (each PRUNED trial against running it to
        its config's last epoch; a promoted one is not counted: its copy went on, hpo/trial/_promotion.py),
        "promoted": pruned trials continued from their checkpoints (hpo/trial/_promotion.py)}.
    """
    out = empty_stage()
    promoted = {t.user_attrs.get(TrialAttrs.PROMOTED_FROM) for t in trials}  # continued by a copy
    out["promoted"] = len(promoted - {None})
    for t in trials:
        epochs = trial_epochs(t)
        images = int(t.user_attrs.get(TrialAttrs.TRAIN_IMAGES, 0) or 0)
        if epochs:
            seconds = trial_seconds(t)
            out["trials"] += 1
            out["epochs"] += epochs
            out["image_epochs"] += epochs * images
            out["seconds"] += seconds
            device = _device(t)
            out["seconds_by_device"][device] = out["seconds_by_device"].get(device, 0.0) + seconds
        planned = _planned_epochs(t)
        if t.state == TrialState.PRUNED and planned is not None and t.number not in promoted:
            saved = max(0, planned - len(t.intermediate_values))
            out["pruned"]["trials"] += 1
            out["pruned"]["epochs_saved"] += saved
            out["pruned"]["image_epochs_saved"] += saved * images
    out["seconds"] = round(out["seconds"], 3)
    out["seconds_by_device"] = {k: round(v, 3) for k, v in out["seconds_by_device"].items()}
    return out


class LedgerWriter:
    """Writes a study's :func:`stage_ledger` as its user attr ``ledger``, at most every `interval` seconds.

    A failed write (the database away) is logged and tried again at the next chance: the ledger is computed
    from the trials each time, so nothing is lost.
    """

    def __init__(self, interval: float = WRITE_INTERVAL_S) -> None:
        self.interval = interval
        self._last = -float("inf")

    def maybe_write(self, study: optuna.Study) -> bool:
        """Write when `interval` seconds have passed since the last write; True when written."""
        if time.monotonic() - self._last < self.interval:
            return False
        return self.write(study)

    def write(self, study: optuna.Study) -> bool:
        """Write now; True when written."""
        try:
            ledger = stage_ledger(study.get_trials(deepcopy=False))
            study.set_user_attr(StudyAttrs.LEDGER, ledger)
        except Exception as err:  # noqa: BLE001 - the ledger never stops a worker
            log.warning("compute ledger of study '%s' not written: %s", study.study_name, err)
            return False
        self._last = time.monotonic()
        return True
