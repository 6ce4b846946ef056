"""The Optuna objective: one trial = one :func:`maskcls_hpo.train.train` run.

This is the only place where training meets Optuna. Per epoch the objective reports the validation macro
F1 exactly once (`step = epoch`, 1-based, the epochs `report` shows) and asks the study's pruner, except
after the last epoch: a trial that trained all its epochs is COMPLETE, never "pruned at epoch 4 of 4". The
trial's value is the best epoch's val macro F1. User attrs record what a person looks at afterwards: the full
config, accuracy, per-task F1, the 95% person-bootstrap interval of the value (`val_f1_ci_low`,
`val_f1_ci_high`, `val_f1_bootstrap_sd`, `bootstrap_resamples`, `val_persons`), epoch seconds, images/s,
device, peak memory, and the reason a trial was pruned or failed.

Ends of a trial (problem C2):

- pruned by the pruner -> PRUNED, `reason = "pruned at epoch E"`;
- non-finite training or validation loss, weights or metric, at any epoch including the last -> PRUNED,
  `reason = "non-finite ... at epoch E"` (never COMPLETE, so never a best value);
- CUDA out of memory -> PRUNED, `reason = "oom"` (the sampler sees the region as bad; the worker goes on);
- any other exception (a bug, bad data) -> FAIL, `reason = "<Type>: <message>"`, raised to the worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import optuna

from maskcls_hpo.hpo._optuna import storage_of, trial_id_of
from maskcls_hpo.hpo.attrs import PRUNED_REASON, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.store import mask_password, to_native
from maskcls_hpo.hpo.trial._sweep import MeasuredLrTrial, Sweep

if TYPE_CHECKING:
    from maskcls_hpo.config import TrainConfig
    from maskcls_hpo.hpo.trial._plan import ConfirmPlan
    from maskcls_hpo.hpo.trial._tracking import TrialTracker
    from maskcls_hpo.train import EpochResult, TrainResult

log = logging.getLogger(__name__)


def resume_checkpoint(root: Path, trial: optuna.Trial | optuna.trial.FrozenTrial) -> Path | None:
    """The `last.pt` a re-queued or promoted trial should resume from, or None.

    A trial re-queued by ``RetryHeartbeatStaleTrialCallback`` carries `retry_history` (the numbers of the
    trials it repeats, oldest first); a promoted trial (hpo/trial/_promotion.py) carries the user attr
    `promoted_from`, the pruned trial it continues, which ran before any of its own retries. The most recent
    one with a `last.pt` wins.
    """
    # optuna.Trial has no system_attrs (Optuna >= 4); the stored trial has them
    frozen = (
        trial if isinstance(trial, optuna.trial.FrozenTrial) else storage_of(trial.study).get_trial(trial_id_of(trial))
    )
    history = list(frozen.system_attrs.get("retry_history", []))
    promoted_from = frozen.user_attrs.get(TrialAttrs.PROMOTED_FROM)
    if promoted_from is not None:
        history.insert(0, int(promoted_from))
    for number in reversed(history):
        last = checkpoint_dir(root, number) / "last.pt"
        if last.is_file():
            return last
    return None


def make_objective(
    sweep: Sweep | ConfirmPlan,
    checkpoint_root: Path,
    overrides: dict[str, Any] | None = None,
    worker: str = "",
    after_trial: Callable[[optuna.Trial, TrainResult], None] | None = None,
    tracker: TrialTracker | None = None,
    epoch_done: Callable[[float, bool], None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """Build the objective for `study.tell`-style worker loops.

    Args:
        sweep: the loaded sweep file (base config + `suggest`), or the :class:`~maskcls_hpo.hpo.trial.ConfirmPlan`
            of a confirm study.
        checkpoint_root: `<checkpoints>/<study>`; each trial writes `trial_<number>/last.pt` and `best.pt`.
        overrides: run-time config keys applied on top of the sweep (e.g. `data_dir`, `device`).
        worker: a label stored on the trial (host:pid/index).
        after_trial: called with (trial, TrainResult) after a finished run (used to upload artifacts).
        tracker: a :class:`~maskcls_hpo.hpo.trial.TrialTracker`: each trial's params, every epoch (from
            the `on_epoch` hook) and its end state go to TensorBoard / MLflow; None tracks nothing.
        epoch_done: called with the seconds of every epoch finished in this run (not those restored on resume:
            the resumed run's start-up is no epoch) and whether it was the trial's last epoch: the worker's
            watchdog for hung trials (``hpo/workers/_watchdog.py``).

    Returns:
        ``objective(trial) -> float``: the best epoch's val macro F1 in [0, 1].

    Raises (from the objective):
        optuna.TrialPruned: pruned, non-finite, or out of memory (reason in the trial's user attrs).
        Exception: anything else, after recording `reason`.
    """
    from maskcls_hpo.train import NonFiniteLossError, OutOfMemoryError, train  # lazy: torch, timm

    def objective(trial: optuna.Trial) -> float:
        config, resume, epoch_seconds = _start_trial(trial, sweep, checkpoint_root, overrides, worker)
        on_epoch = _epoch_hook(trial, config, epoch_seconds, tracker, epoch_done)
        out_dir = checkpoint_dir(checkpoint_root, trial.number)
        try:
            result = train(config, out_dir=out_dir, on_epoch=on_epoch, resume_from=resume)
        except OutOfMemoryError as err:
            _prune(trial, "oom", detail=str(err))
        except NonFiniteLossError as err:
            _prune(trial, err.reason, detail=str(err))
        except optuna.TrialPruned:
            raise
        except Exception as err:
            # A trial failed as stale by another process refuses every write; the worker sees the original error.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr(TrialAttrs.REASON, mask_password(f"{type(err).__name__}: {err}")[:500])
            raise
        _record_result(trial, result)
        if after_trial is not None:
            after_trial(trial, result)
        return float(result.best_f1)

    return tracker.wrap(objective) if tracker is not None else objective


def _start_trial(
    trial: optuna.Trial,
    sweep: Sweep | ConfirmPlan,
    checkpoint_root: Path,
    overrides: dict[str, Any] | None,
    worker: str,
) -> tuple[TrainConfig, Path | None, list[float]]:
    """A trial's first steps: its worker label, its params and config (stored as user attrs), the `last.pt` it
    resumes from, and the seconds of the epochs it already has.

    Returns:
        (config, the checkpoint to resume from or None, epoch seconds so far).
    """
    if worker:
        trial.set_user_attr(TrialAttrs.WORKER, worker)
    # numpy values (e.g. a GridSampler's grid) as Python ones; lr from the measured range when there is one
    asked: Any = trial
    if isinstance(sweep, Sweep) and sweep.lr_range is not None:
        asked = MeasuredLrTrial(trial, sweep.lr_range)
    params = cast(dict[str, Any], to_native(sweep.suggest(asked)))
    config = sweep.build_config(params, overrides)
    trial.set_user_attr(TrialAttrs.CONFIG, config.to_dict())
    trial.set_user_attr(TrialAttrs.SEED, config.seed)
    resume = resume_checkpoint(checkpoint_root, trial)
    epoch_seconds: list[float] = list(trial.user_attrs.get(TrialAttrs.EPOCH_SECONDS, []))
    if resume is not None:
        epoch_seconds = _resume_records(trial, resume)
    # NOTE epochs restored from a checkpoint are not passed to `epoch_done`: the watchdog would then time the
    # resumed trial's start-up (model, data, loading the checkpoint: no epoch) against the "after an epoch"
    # limit (factor x a 0.3 s epoch) and fail it as hung (issue 25); until its first epoch here it gets the
    # first-epoch allowance
    return config, resume, epoch_seconds


def _epoch_hook(
    trial: optuna.Trial,
    config: TrainConfig,
    epoch_seconds: list[float],
    tracker: TrialTracker | None,
    epoch_done: Callable[[float, bool], None] | None,
) -> Callable[[EpochResult], None]:
    """The `on_epoch` hook of one trial's training: track the epoch, report its val macro F1 (step = epoch), record
    its seconds (appended to `epoch_seconds`) and speed, and ask the pruner (never after the last epoch)."""
    recorded: list[bool] = []  # train_images stored (the compute ledger's image-epochs)

    def on_epoch(r: EpochResult) -> None:
        if tracker is not None:
            tracker.epoch(trial.number, trial.params, r)
        if not math.isfinite(r.val_f1):
            _prune(trial, f"non-finite validation macro F1 at epoch {r.epoch}")
        trial.report(r.val_f1, r.epoch)
        epoch_seconds.append(round(float(r.seconds), 3))
        if epoch_done is not None:
            epoch_done(float(r.seconds), r.epoch >= config.epochs)
        trial.set_user_attr(TrialAttrs.EPOCH_SECONDS, epoch_seconds)
        trial.set_user_attr(TrialAttrs.IMAGES_PER_SECOND, round(float(r.images_per_second), 1))
        if r.train_images and not recorded:  # once per run: the same images every epoch
            trial.set_user_attr(TrialAttrs.TRAIN_IMAGES, int(r.train_images))
            recorded.append(True)
        # NOTE the pruner is not asked after the last epoch: the work is done, and a trial pruned there
        # would be dropped from export and `--top` although it trained as long as every COMPLETE one.
        if r.epoch < config.epochs and trial.should_prune():
            _prune(trial, f"{PRUNED_REASON} {r.epoch} (val macro F1 {r.val_f1:.4f})")

    return on_epoch


def _record_result(trial: optuna.Trial, result: TrainResult) -> None:
    """A finished run's numbers as user attrs: accuracy, per-task F1 and interval of the best epoch, device, peak
    memory; a non-finite best val macro F1 prunes the trial instead."""
    if not math.isfinite(result.best_f1):
        _prune(trial, "non-finite best validation macro F1")
    trial.set_user_attr(TrialAttrs.ACCURACY, float(result.best_accuracy))
    best = next((h for h in result.history if h.epoch == result.best_epoch), None)
    if best is not None:
        trial.set_user_attr(TrialAttrs.TASK_F1, {k: float(v) for k, v in best.task_f1.items()})
    trial.set_user_attr(TrialAttrs.BEST_EPOCH, int(result.best_epoch))
    _record_interval(trial, result.val_f1_interval)
    trial.set_user_attr(TrialAttrs.DEVICE, str(result.device))
    trial.set_user_attr(TrialAttrs.PEAK_MEMORY, int(result.peak_memory_bytes))


def _resume_records(trial: optuna.Trial, resume: Path) -> list[float]:
    """Log and record that `trial` resumes from `resume` (a `last.pt`); returns the epoch seconds so far.

    The checkpoint's own history is the record of the epochs already trained: an epoch whose checkpoint was
    written but whose value the killed worker did not report yet is reported now (earlier ones were
    inherited by the re-queued trial and are left as they are), and `epoch_seconds` restarts from it.
    """
    from maskcls_hpo.train import load_checkpoint  # lazy: torch

    ckpt = load_checkpoint(resume)
    epoch = int(ckpt["epoch"])
    history = [h for h in ckpt.get("history", []) if int(h["epoch"]) <= epoch]
    trial.set_user_attr(TrialAttrs.RESUMED_FROM, str(resume))
    trial.set_user_attr(TrialAttrs.RESUMED_AT_EPOCH, epoch)
    log.info(
        "trial %d resumes from %s (epoch %d); training continues at epoch %d", trial.number, resume, epoch, epoch + 1
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is already reported")
        for h in history:
            if h.get("val_f1") is not None and math.isfinite(h["val_f1"]):
                trial.report(float(h["val_f1"]), int(h["epoch"]))
    return [round(float(h["seconds"]), 3) for h in history]


def _record_interval(trial: optuna.Trial, interval: dict[str, Any] | None) -> None:
    """The value's 95% person-bootstrap interval as user attrs (shown by the dashboard, `status`, `report`)."""
    if not interval:
        return
    trial.set_user_attr(TrialAttrs.VAL_F1_CI_LOW, round(float(interval["low"]), 5))
    trial.set_user_attr(TrialAttrs.VAL_F1_CI_HIGH, round(float(interval["high"]), 5))
    trial.set_user_attr(TrialAttrs.VAL_F1_BOOTSTRAP_SD, round(float(interval["sd"]), 5))
    trial.set_user_attr(TrialAttrs.BOOTSTRAP_RESAMPLES, int(interval["resamples"]))
    trial.set_user_attr(TrialAttrs.VAL_PERSONS, int(interval["persons"]))


def _prune(trial: optuna.Trial, reason: str, detail: str = "") -> NoReturn:
    """Record `reason` on the trial and raise :class:`optuna.TrialPruned`."""
    trial.set_user_attr(TrialAttrs.REASON, reason)
    raise optuna.TrialPruned(f"{reason}{': ' + detail if detail else ''}")
