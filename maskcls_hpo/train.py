"""One training run: config in, checkpoints + metrics + a :class:`TrainResult` out. No Optuna here.

`train(config)` loads and splits the dataset (by person), builds (or reuses) the uint8 image cache at the
model's input size, builds the model, loss, optimizer and scheduler, then runs `config.epochs` epochs:

    train (augment on the batch's device, AMP + channels_last on CUDA) -> validate every val image ->
    scheduler.step() (once per epoch) -> last.pt (+ best.pt when val macro F1 improves) -> metrics.json ->
    on_epoch(EpochResult)

The best epoch is the one with the highest validation macro F1 (ties keep the earlier epoch); accuracy never
decides. With `full_data` there is no validation: the val fields are NaN and the last epoch is the best.

Learning-rate schedule: both schedulers step once per *epoch*, so the schedule does not depend on the batch
size. `EpochResult.lr` is the lr used by that epoch's steps. Cosine annealing with `T_max = t_max` epochs
(default `epochs`) uses `eta_min + (lr - eta_min) * (1 + cos(pi * (e - 1) / T_max)) / 2` in epoch `e`,
reaches `eta_min` with the step after epoch `T_max` and stays there (no warm restart: ``CosineToFloor``).

A diverged run (a NaN/inf training-step loss, a NaN/inf mean training or validation loss or one above
:data:`DIVERGED_LOSS`, or NaN/inf weights after an epoch's last step) raises :class:`NonFiniteLossError` at
that epoch, the last one included.

Files in `out_dir` (when given): `last.pt` after every epoch, `best.pt` and `val_predictions.csv` (every val
image's person, true class and probabilities at that epoch: :func:`maskcls_hpo.metrics.write_val_predictions`)
at each new best, `model.pt` (the best epoch's weights, config and preprocessing, no optimizer: what `predict`
needs) at the end, and `metrics.json`.

Uncertainty: at each new best the val macro F1 gets a 95% interval from a bootstrap over val persons
(:func:`maskcls_hpo.metrics.bootstrap_macro_f1`, 1000 resamples, seed 0: the same resampled persons for every
run on the same split), kept in `TrainResult.val_f1_interval` and metrics.json `best_f1_interval`.

Checkpoints (:mod:`maskcls_hpo.checkpoint`) hold only tensors and plain containers (config as a dict, RNG
states as tensors and tuples), so `torch.load(path, weights_only=True)` reads them; `train(...,
resume_from=last.pt)` restores model, optimizer, scheduler, grad scaler, RNG states and history and continues at
the next epoch, giving the same numbers as an uninterrupted run on the CPU (same seed).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from maskcls_hpo._util import atomic_write_text, check_output_folder, progress_bar
from maskcls_hpo.cache import BatchLoader, build_cache
from maskcls_hpo.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FORMAT,  # re-exported: `from maskcls_hpo.train import CHECKPOINT_FORMAT` (tests)
    LAST_FILE,
    copy_run_file,
    load_checkpoint,  # re-exported: `from maskcls_hpo.train import load_checkpoint` (cli, hpo/objective, tests)
    make_checkpoint,
    resume,
    save_checkpoint,
    write_model_file,
)
from maskcls_hpo.config import ConfigError, TrainConfig
from maskcls_hpo.data import load_train, split_by_fold, split_by_person
from maskcls_hpo.errors import TrainingError
from maskcls_hpo.losses import build_loss
from maskcls_hpo.metrics import (
    TASK_CLASSES,
    VAL_PREDICTIONS_FILE,
    BootstrapInterval,
    bootstrap_macro_f1,
    evaluate_predictions,
    predict_labels,
    write_val_predictions,
)
from maskcls_hpo.models import build_model, resolve_preprocessing
from maskcls_hpo.transforms import BatchAugment, normalize

if TYPE_CHECKING:
    import pandas as pd
    from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "train",
    "EpochResult",
    "TrainResult",
    "TrainingError",
    "NonFiniteLossError",
    "DIVERGED_LOSS",
    "OutOfMemoryError",
    "load_checkpoint",
    "CHECKPOINT_FORMAT",
]

log = logging.getLogger(__name__)

DIVERGED_LOSS = 1e4
"""A mean training or validation loss per image above this counts as diverged. A uniform guess over the 18
classes costs ln 18 = 2.9 (cross-entropy; the multi-head sum is about the same), so a loss of 1e4 means logits
in the thousands: with lr 1e3 the tiny test model reached a finite training loss of 4e7 and a validation loss
of 5e17 in its one epoch, with a val macro F1 that could still have been the study's best."""


class NonFiniteLossError(TrainingError):
    """The run diverged: the training loss, the validation loss or the weights became NaN or inf, or a mean
    loss exceeded :data:`DIVERGED_LOSS`.

    `what` is "loss" (a training step's loss), "mean training loss", "validation loss" or "weights" (after the
    epoch's last step); `reason` is e.g. "non-finite validation loss at epoch 1" or "diverged: validation loss
    5.2e+17 at epoch 1" (stored on a pruned trial).
    """

    def __init__(self, epoch: int, step: int | None, value: float, lr: float, what: str = "loss"):
        where = f"epoch {epoch} step {step}" if step is not None else f"epoch {epoch}"
        if math.isfinite(value):
            head = f"diverged: {what} {value:.3g} at {where}"
            message = f"{what} {value:.3g} (above {DIVERGED_LOSS:g}) at {where} with lr {lr:.3g}"
        else:
            head = f"non-finite {what} at {where}"
            message = f"non-finite {what} ({value}) at {where} with lr {lr:.3g}"
        super().__init__(
            f"{message}: the run diverged; lower the learning rate (lr), or try another loss or optimizer",
            reason=head,
        )
        self.epoch, self.step, self.what = epoch, step, what


class OutOfMemoryError(TrainingError):
    """`torch.cuda.OutOfMemoryError` during the run; the model and optimizer were freed. `reason` is "oom"."""

    def __init__(self, message: str):
        super().__init__(message, reason="oom")


@dataclass
class EpochResult:
    """One epoch's numbers. `epoch` is 1-based; val fields are NaN with `full_data`.

    Attributes:
        train_loss: mean training loss over the epoch's images; val_loss: mean over every val image.
        val_f1: macro F1 over the 18 classes; val_accuracy: share of val images right (0..1).
        task_f1: {"mask", "gender", "age"} -> macro F1 of that task.
        lr: learning rate of the epoch's steps (first param group).
        seconds: wall time of the epoch (train + validation); images_per_second: training images / training
            seconds.
        is_best: this epoch set a new best val macro F1 (with `full_data`: every epoch).
        train_images: training images of one epoch (the compute ledger's image-epochs); 0 when not known.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float
    val_accuracy: float
    task_f1: dict[str, float]
    lr: float
    seconds: float
    images_per_second: float
    is_best: bool
    train_images: int = 0


@dataclass
class TrainResult:
    """The whole run. `confusion` (18 x 18 ints, rows true, columns predicted) and `per_class_f1` (18 floats)
    are the best epoch's; with `full_data` they are empty. `peak_memory_bytes`: CUDA max allocated on GPU,
    else the process's peak RSS. `seed` is the seed the run used.

    `val_f1_interval`: the best epoch's person-bootstrap 95% interval of val macro F1 as a dict (estimate, low,
    high, sd, resamples, persons, seed: :class:`maskcls_hpo.metrics.BootstrapInterval`), None with `full_data`.
    `val_predictions`: the best epoch's `val_predictions.csv` in `out_dir`, None without out_dir or val."""

    best_epoch: int
    best_f1: float
    best_accuracy: float
    history: list[EpochResult]
    confusion: list[list[int]]
    per_class_f1: list[float]
    device: str
    peak_memory_bytes: int
    seed: int
    out_dir: Path | None
    final_lr: float = float("nan")
    train_images: int = 0
    val_images: int = 0
    val_f1_interval: dict[str, float] | None = None
    val_predictions: Path | None = None


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    resume_from: str | Path | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train one model on `config.data_dir` as the config says (see the module docstring).

    Args:
        config: the run's :class:`TrainConfig`.
        out_dir: folder for last.pt, best.pt, model.pt and metrics.json (created); None writes nothing.
        on_epoch: called once after every epoch's validation and checkpoint with its :class:`EpochResult`;
            an exception it raises (e.g. `optuna.TrialPruned`) stops the run and propagates unchanged.
        resume_from: a `last.pt` of an earlier run of the same model; training continues at its epoch + 1.
        progress: show a rich progress bar per epoch (stderr).

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (epoch and step in the message).
        OutOfMemoryError: CUDA ran out of memory anywhere in the run; model and optimizer are freed first.
        ConfigError: e.g. `device: cuda` without a GPU, an unknown model, missing pretrained weights, an
            `out_dir` that is empty, a file or under a file.
        DataError: a dataset problem (from `data.load_train` / `cache.build_cache`).
        TrainingError: a checkpoint that does not fit the config.
    """
    if out_dir is not None:
        out_dir = check_output_folder(out_dir, "--out", ConfigError)
    try:
        return _run(config, out_dir, on_epoch, resume_from, progress)
    except torch.cuda.OutOfMemoryError as err:
        detail = (str(err).strip().splitlines() or ["CUDA out of memory"])[0]
    # NOTE raised outside the `except` block so that neither the traceback nor `__context__` keeps the
    # frames of `_run` (model, optimizer, batches) alive; only then can the memory really be released.
    _release_memory()
    raise OutOfMemoryError(
        f"CUDA out of memory with model {config.model}, batch_size {config.batch_size}, image_size "
        f"{config.image_size}: {detail}; use a smaller batch_size or image_size"
    )


def _run(
    config: TrainConfig,
    out_dir: str | Path | None,
    on_epoch: Callable[[EpochResult], None] | None,
    resume_from: str | Path | None,
    progress: bool,
) -> TrainResult:
    run = _setup(config, out_dir, resume_from, progress)
    for epoch in range(run.start_epoch, config.epochs + 1):
        started = time.perf_counter()
        lr = _current_lr(run)
        train_loss, images_per_second = _train_epoch(run, epoch)
        scores = _validate(run) if run.val_loader is not None else ValScores.empty()
        _check_epoch_finite(run, epoch, lr, train_loss, scores)
        is_best = _is_new_best(scores, run.best)
        if is_best:
            run.best = _Best.of(epoch, scores, _person_interval(scores, run.val_persons))
        if run.scheduler is not None:
            run.scheduler.step()
        result = EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=scores.loss,
            val_f1=scores.f1,
            val_accuracy=scores.accuracy,
            task_f1=dict(scores.task_f1),
            lr=lr,
            seconds=time.perf_counter() - started,
            images_per_second=images_per_second,
            is_best=is_best,
            train_images=len(run.train_loader.indices),
        )
        run.history.append(result)
        _save_checkpoints(run, epoch, is_best)
        _write_metrics(run)
        log.info(_describe(result, config.epochs))
        if on_epoch is not None:
            on_epoch(result)
    return _finish(run)


# --- validation scores and the best epoch -------------------------------------------------------------


@dataclass(frozen=True)
class ValPredictions:
    """Every val image's prediction at one epoch, in val order (`write_val_predictions` writes them).

    Attributes:
        y_true, y_pred: `(N,)` int64 class ids 0..17.
        probabilities: `(N, 18)` float32 softmax (single head) or `(N, 8)` per-head softmaxes (multi head).
    """

    y_true: NDArray[np.int64]
    y_pred: NDArray[np.int64]
    probabilities: NDArray[np.float32]


@dataclass(frozen=True)
class ValScores:
    """One epoch's validation numbers (:func:`maskcls_hpo.metrics.evaluate_predictions` plus the loss).

    Attributes:
        loss: mean validation loss per image; f1: macro F1 over the 18 classes; accuracy: share right (0..1).
        task_f1: {"mask", "gender", "age"} -> macro F1 of that task.
        per_class_f1: 18 floats; confusion: 18 x 18 ints (rows true, columns predicted).
        images: val images scored (0: no validation, see :meth:`empty`).
        predictions: the images' labels and probabilities; None without validation.
    """

    loss: float
    f1: float
    accuracy: float
    task_f1: dict[str, float]
    per_class_f1: list[float]
    confusion: list[list[int]]
    images: int
    predictions: ValPredictions | None

    @classmethod
    def empty(cls) -> ValScores:
        """No validation (`full_data`): NaN numbers, no confusion, no per-class F1, no predictions."""
        nan = math.nan
        return cls(nan, nan, nan, {k: nan for k in TASK_CLASSES}, [], [], images=0, predictions=None)


@dataclass
class _Best:
    """The best epoch so far (epoch 0: none yet). `to_dict` is the checkpoint's and metrics.json's `best`:
    the keys of a field that is None are left out, as the files have always had them."""

    epoch: int = 0
    f1: float = -math.inf
    accuracy: float = math.nan
    confusion: list[list[int]] | None = None
    per_class_f1: list[float] | None = None
    interval: dict[str, Any] | None = None
    predictions: ValPredictions | None = None  # kept for val_predictions.csv, never saved in a checkpoint

    @classmethod
    def of(cls, epoch: int, scores: ValScores, interval: BootstrapInterval | None) -> _Best:
        """The best epoch `epoch` with `scores` (NaN F1 and accuracy with `full_data`)."""
        return cls(
            epoch=epoch,
            f1=scores.f1,
            accuracy=scores.accuracy,
            confusion=scores.confusion,
            per_class_f1=scores.per_class_f1,
            interval=asdict(interval) if interval is not None else None,
            predictions=scores.predictions,
        )

    @classmethod
    def from_dict(cls, best: dict[str, Any]) -> _Best:
        """Read a checkpoint's `best` (see :meth:`to_dict`)."""
        keys = ("epoch", "f1", "accuracy", "confusion", "per_class_f1", "interval")
        return cls(**{k: best[k] for k in keys if k in best})

    def to_dict(self) -> dict[str, Any]:
        """epoch, f1, accuracy, and confusion, per_class_f1, interval where set."""
        kept = {"confusion": self.confusion, "per_class_f1": self.per_class_f1, "interval": self.interval}
        return {"epoch": self.epoch, "f1": self.f1, "accuracy": self.accuracy} | {
            k: v for k, v in kept.items() if v is not None
        }


def _is_new_best(scores: ValScores, best: _Best) -> bool:
    """Every epoch without validation (`full_data`: the last epoch is the best); otherwise a finite val macro
    F1 strictly above the best so far (ties keep the earlier epoch; accuracy never decides)."""
    if scores.images == 0:
        return True
    return math.isfinite(scores.f1) and scores.f1 > best.f1


def _person_interval(scores: ValScores, val_persons: list[str]) -> BootstrapInterval | None:
    """The 95% person-bootstrap interval of the val macro F1 (module docstring); None without validation."""
    if scores.predictions is None:
        return None
    return bootstrap_macro_f1(scores.predictions.y_true, scores.predictions.y_pred, val_persons)


# --- setup --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything the epoch loop touches (kept in one place so the loop stays short)."""

    config: TrainConfig
    device: torch.device
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    channels_last: bool
    augment: BatchAugment | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: tuple[int, int]
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    fingerprint: str
    out_dir: Path | None
    progress: bool
    val_paths: list[str] = field(default_factory=list)
    val_persons: list[str] = field(default_factory=list)
    start_epoch: int = 1
    history: list[EpochResult] = field(default_factory=list)
    best: _Best = field(default_factory=_Best)


def _setup(config: TrainConfig, out_dir: str | Path | None, resume_from: str | Path | None, progress: bool) -> _Run:
    """Device, seeds, model, data (split, cache, loaders), precision, optimizer; then the resume, if any."""
    device = _pick_device(config)
    _seed_everything(config.seed)
    model = build_model(config)
    image_size, mean, std = resolve_preprocessing(config, model)
    samples, train_idx, val_idx = _load_split(config)
    train_loader, val_loader, fingerprint = _loaders(config, samples, train_idx, val_idx, image_size, device, progress)
    amp_dtype, channels_last = _precision(config, device)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    # NOTE torch's type stubs lack the (device, memory_format) overload of Module.to that it accepts at run time
    model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = _build_optimizer(config, model)
    run = _Run(
        config=config,
        device=device,
        model=model,
        loss_fn=build_loss(config),
        optimizer=optimizer,
        scheduler=_build_scheduler(config, optimizer),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        augment=BatchAugment(mean, std, config.crop_scale, color_jitter=config.color_jitter, seed=config.seed)
        if config.augment
        else None,
        mean=mean,
        std=std,
        image_size=(image_size[0], image_size[1]),
        train_loader=train_loader,
        val_loader=val_loader,
        fingerprint=fingerprint,
        out_dir=Path(out_dir) if out_dir is not None else None,
        progress=progress,
        # NOTE val batches follow val_idx (ascending, shuffle=False), so prediction i belongs to row val_idx[i]
        val_paths=samples["path"].iloc[val_idx].astype(str).tolist(),
        val_persons=samples["person_id"].iloc[val_idx].astype(str).tolist(),
    )
    if run.out_dir is not None:
        run.out_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        _resume(run, Path(resume_from))
    log.info(
        "training %s (%s head) on %s, seed %d, %d train / %d val images at %sx%s, amp %s",
        config.model,
        config.head,
        device,
        config.seed,
        len(train_idx),
        len(val_idx),
        *image_size,
        amp_dtype,
    )
    return run


def _load_split(config: TrainConfig) -> tuple[pd.DataFrame, NDArray[np.int64], NDArray[np.int64]]:
    """The train table and its (train rows, val rows): everyone with `full_data`, else by fold or by person."""
    # NOTE verify=False: build_cache decodes every image anyway and names any unreadable file.
    samples = load_train(config.data_dir, age_bins=config.age_bins, corrections=config.corrections, verify=False)
    if config.full_data:
        return samples, np.arange(len(samples), dtype=np.int64), np.empty(0, dtype=np.int64)
    if config.folds is not None and config.fold is not None:  # TrainConfig sets both or neither
        return samples, *split_by_fold(samples, config.folds, config.fold, config.effective_split_seed)
    return samples, *split_by_person(samples, config.val_ratio, config.effective_split_seed)


def _loaders(
    config: TrainConfig,
    samples: pd.DataFrame,
    train_idx: NDArray[np.int64],
    val_idx: NDArray[np.int64],
    image_size: tuple[int, int],
    device: torch.device,
    progress: bool,
) -> tuple[BatchLoader, BatchLoader | None, str]:
    """(train loader, val loader or None without val rows, the cache's fingerprint) over the uint8 image cache
    at the model's input size (built on first use)."""
    cache = build_cache(
        samples["path"].tolist(),
        size=image_size,
        cache_dir=config.cache_dir,
        progress=progress,
        interpolation=config.interpolation,
    )
    labels = samples["label"].to_numpy()
    # NOTE a last training batch of 1 image breaks BatchNorm; drop the partial batch when a full one exists.
    train_loader = BatchLoader(
        cache.images,
        labels,
        train_idx,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        drop_last=len(train_idx) > config.batch_size,
        device=device,
    )
    if not len(val_idx):
        return train_loader, None, cache.fingerprint
    val_loader = BatchLoader(
        cache.images,
        labels,
        val_idx,
        config.batch_size,
        shuffle=False,
        seed=config.seed,
        drop_last=False,
        device=device,
    )
    return train_loader, val_loader, cache.fingerprint


def _precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, channels_last): bf16 where the GPU has it, else fp16, with `amp` on CUDA; None and
    False on the CPU."""
    on_cuda = device.type == "cuda"
    amp_dtype = None
    if on_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return amp_dtype, on_cuda and config.channels_last


def _pick_device(config: TrainConfig) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if config.device == "cuda":
        raise ConfigError(
            "device: cuda but no CUDA device is visible (torch.cuda.is_available() is False); use device: auto or cpu"
        )
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


_OPTIMIZERS: dict[str, Callable[[Iterator[nn.Parameter], TrainConfig], torch.optim.Optimizer]] = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
    "radam": lambda p, c: torch.optim.RAdam(p, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
}

_SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer, TrainConfig], LRScheduler | None]] = {
    "step": lambda o, c: torch.optim.lr_scheduler.StepLR(o, step_size=c.step_size, gamma=c.gamma),
    "cosine": lambda o, c: torch.optim.lr_scheduler.LambdaLR(o, CosineToFloor(c.lr, c.eta_min, c.effective_t_max)),
    "none": lambda o, c: None,
}


class CosineToFloor:
    """Cosine annealing over `t_max` epochs that then stays at `eta_min` (no warm restart).

    torch's CosineAnnealingLR follows the cosine on past `T_max` and the lr rises again (with t_max 2 of 4
    epochs: 0.0026, 0.0013, 0, 0.0013); the shipped search space draws t_max in [2, epochs], so that matters.
    As a ``LambdaLR`` factor of the initial `lr` at scheduler step k (0-based; epoch e = k + 1 uses step e - 1):
    ``(eta_min + (lr - eta_min) * (1 + cos(pi * min(k, t_max) / t_max)) / 2) / lr``, the formula of
    CosineAnnealingLR (torch docs) up to `t_max`. A plain object (not a closure) so the scheduler's state dict
    holds it.
    """

    def __init__(self, lr: float, eta_min: float, t_max: int) -> None:
        self.lr, self.eta_min, self.t_max = float(lr), float(eta_min), int(t_max)

    def __call__(self, k: int) -> float:
        frac = min(k, self.t_max) / self.t_max
        return (self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * frac)) / 2) / self.lr


def _build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    return _OPTIMIZERS[config.optimizer](model.parameters(), config)


def _build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> LRScheduler | None:
    return _SCHEDULERS[config.scheduler](optimizer, config)


# --- one epoch ----------------------------------------------------------------------------------------


def _autocast(run: _Run) -> contextlib.AbstractContextManager[object]:
    """bf16/fp16 autocast on CUDA when `amp` (the dtype chosen in `_precision`), else a no-op."""
    if run.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run.device.type, dtype=run.amp_dtype)


def _prepare_batch(run: _Run, images: torch.Tensor, train: bool) -> torch.Tensor:
    """`(B, 3, H, W)` uint8 -> float32: augmented and normalised for training, normalised for validation."""
    x = run.augment(images) if train and run.augment is not None else normalize(images, run.mean, run.std)
    return x.contiguous(memory_format=torch.channels_last) if run.channels_last else x


def _current_lr(run: _Run) -> float:
    """The learning rate of the next optimizer steps (first param group)."""
    return float(run.optimizer.param_groups[0]["lr"])


def _train_epoch(run: _Run, epoch: int) -> tuple[float, float]:
    """Train one epoch; returns (mean loss per image, training images per second)."""
    run.model.train()
    run.train_loader.set_epoch(epoch)
    if run.augment is not None:
        run.augment.reseed(int(np.random.SeedSequence([run.config.seed, epoch]).generate_state(1)[0]))
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    pending: tuple[int, torch.Tensor] | None = None  # (step, loss) of the step whose loss is not read yet
    started = time.perf_counter()
    description = f"epoch {epoch}/{run.config.epochs}"
    with progress_bar(len(run.train_loader), description, enabled=run.progress, transient=True, show_loss=True) as bar:
        for step, (images, labels) in enumerate(run.train_loader, start=1):
            x = _prepare_batch(run, images, train=True)
            with _autocast(run):
                loss = run.loss_fn(run.model(x), labels)
            # NOTE the previous step's loss is checked once this step's forward is queued: reading a loss
            # waits for the GPU, and reading one that is already computed keeps the GPU busy meanwhile.
            if pending is not None:
                bar(_finite_loss(run, epoch, step=pending[0], loss=pending[1]))
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
            total += loss.detach() * len(labels)
            seen += len(labels)
            pending = (step, loss.detach())
        if pending is not None:
            bar(_finite_loss(run, epoch, step=pending[0], loss=pending[1]))
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - started
    return float(total) / max(seen, 1), seen / max(seconds, 1e-9)


def _finite_loss(run: _Run, epoch: int, step: int, loss: torch.Tensor) -> float:
    """The step's loss as a float (a host sync).

    Raises:
        NonFiniteLossError: the loss is NaN or inf."""
    value = float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(epoch, step, value, _current_lr(run))
    return value


def _check_epoch_finite(run: _Run, epoch: int, lr: float, train_loss: float, scores: ValScores) -> None:
    """Raise :class:`NonFiniteLossError` when the epoch's mean training loss or its validation loss is NaN/inf
    or above :data:`DIVERGED_LOSS`, or any weight after its last step is NaN/inf (a diverged run must never
    become a best epoch, even the last one)."""
    if not math.isfinite(train_loss) or train_loss > DIVERGED_LOSS:
        raise NonFiniteLossError(epoch, None, train_loss, lr, what="mean training loss")
    if scores.images and (not math.isfinite(scores.loss) or scores.loss > DIVERGED_LOSS):
        raise NonFiniteLossError(epoch, None, scores.loss, lr, what="validation loss")
    with torch.no_grad():
        flags = [p.isfinite().all() for p in run.model.parameters()]
        if flags and not bool(torch.stack(flags).all()):
            raise NonFiniteLossError(epoch, None, math.nan, lr, what="weights")


@torch.inference_mode()
def _validate(run: _Run) -> ValScores:
    """Score every val image (no dropped batch): :func:`maskcls_hpo.metrics.evaluate_predictions`, the mean
    loss per image and the predictions in val order."""
    assert run.val_loader is not None
    run.model.eval()
    preds, truth, probs = [], [], []
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    for images, labels in run.val_loader:
        with _autocast(run):
            outputs = run.model(_prepare_batch(run, images, train=False))
            total += run.loss_fn(outputs, labels).double() * len(labels)
        preds.append(predict_labels(outputs))
        truth.append(labels)
        probs.append(_probabilities(outputs))
    y_true, y_pred = torch.cat(truth).cpu().numpy(), torch.cat(preds).cpu().numpy()
    scores = evaluate_predictions(y_true, y_pred)
    return ValScores(
        loss=float(total) / len(y_true),
        f1=scores["f1"],
        accuracy=scores["accuracy"],
        task_f1=scores["task_f1"],
        per_class_f1=scores["per_class_f1"],
        confusion=scores["confusion"],
        images=len(y_true),
        predictions=ValPredictions(y_true, y_pred, torch.cat(probs).cpu().numpy()),
    )


def _probabilities(outputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """`(B, 18)` softmax of single-head logits, or `(B, 8)` per-head softmaxes (mask, gender, age), float32."""
    if isinstance(outputs, dict):
        return torch.cat([outputs[k].float().softmax(dim=1) for k in ("mask", "gender", "age")], dim=1)
    return outputs.float().softmax(dim=1)


# --- checkpoints, metrics, result ---------------------------------------------------------------------


def _save_checkpoints(run: _Run, epoch: int, is_best: bool) -> None:
    """`last.pt` after every epoch; at a new best epoch also `val_predictions.csv`, then `best.pt`."""
    if run.out_dir is None:
        return
    history = [asdict(h) for h in run.history]
    save_checkpoint(make_checkpoint(run, epoch, history, run.best.to_dict()), run.out_dir / LAST_FILE)
    if is_best and run.best.predictions is not None:
        p = run.best.predictions
        write_val_predictions(
            run.out_dir / VAL_PREDICTIONS_FILE,
            image_paths=run.val_paths,
            person_ids=run.val_persons,
            epoch=epoch,
            y_true=p.y_true,
            y_pred=p.y_pred,
            probabilities=p.probabilities,
            head=run.config.head,
        )
    if is_best:
        copy_run_file(run.out_dir / LAST_FILE, run.out_dir / BEST_FILE)


def _resume(run: _Run, path: Path) -> None:
    resumed = resume(run, path, run.out_dir)
    run.history = [EpochResult(**h) for h in resumed.history]
    run.best = _Best.from_dict(resumed.best)
    run.start_epoch = resumed.epoch + 1
    log.info("resumed from %s at epoch %d", path, run.start_epoch)


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _write_metrics(run: _Run) -> None:
    """`metrics.json`: the run's setup, the best epoch and every epoch so far (non-finite floats as null)."""
    if run.out_dir is None:
        return
    best = run.best
    data = {
        "model": run.config.model,
        "head": run.config.head,
        "seed": run.config.seed,
        "device": str(run.device),
        "amp": str(run.amp_dtype).removeprefix("torch.") if run.amp_dtype is not None else None,
        "channels_last": run.channels_last,
        "image_size": list(run.image_size),
        "mean": list(run.mean),
        "std": list(run.std),
        "train_images": len(run.train_loader.indices),
        "val_images": len(run.val_loader.indices) if run.val_loader is not None else 0,
        "data_fingerprint": run.fingerprint,
        "best_epoch": best.epoch,
        "best_f1": best.f1,
        "best_accuracy": best.accuracy,
        "best_per_class_f1": best.per_class_f1 or [],
        "best_confusion": best.confusion or [],
        "best_f1_interval": best.interval,
        "final_lr": _current_lr(run),
        "peak_memory_bytes": _peak_memory_bytes(run.device),
        "epochs": [asdict(h) for h in run.history],
        "config": run.config.to_dict(),
    }
    atomic_write_text(run.out_dir / "metrics.json", json.dumps(_finite_or_none(data), indent=2) + "\n")


def _finish(run: _Run) -> TrainResult:
    """Write `model.pt` (from best.pt) and return the run's :class:`TrainResult`."""
    if run.out_dir is not None:
        write_model_file(run.out_dir)
    best = run.best
    predictions = run.out_dir / VAL_PREDICTIONS_FILE if run.out_dir is not None and run.val_loader is not None else None
    return TrainResult(
        best_epoch=best.epoch,
        best_f1=float(best.f1) if best.epoch else math.nan,
        best_accuracy=float(best.accuracy),
        history=list(run.history),
        confusion=[list(r) for r in best.confusion or []],
        per_class_f1=list(best.per_class_f1 or []),
        device=str(run.device),
        peak_memory_bytes=_peak_memory_bytes(run.device),
        seed=run.config.seed,
        out_dir=run.out_dir,
        final_lr=_current_lr(run),
        train_images=len(run.train_loader.indices),
        val_images=len(run.val_loader.indices) if run.val_loader is not None else 0,
        val_f1_interval=dict(best.interval) if best.interval else None,
        val_predictions=predictions if predictions is not None and predictions.is_file() else None,
    )


def _describe(r: EpochResult, epochs: int) -> str:
    if math.isnan(r.val_f1) and math.isnan(r.val_loss):  # full_data: no validation persons, nothing to call best
        return (
            f"epoch {r.epoch}/{epochs}: train loss {r.train_loss:.4f} (all persons, no validation), lr {r.lr:.3g}, "
            f"{r.seconds:.1f} s, {r.images_per_second:.0f} images/s"
        )
    return (
        f"epoch {r.epoch}/{epochs}: train loss {r.train_loss:.4f}, val loss {r.val_loss:.4f}, "
        f"val macro F1 {r.val_f1:.4f}, accuracy {r.val_accuracy:.4f}, lr {r.lr:.3g}, {r.seconds:.1f} s, "
        f"{r.images_per_second:.0f} images/s{' (best)' if r.is_best else ''}"
    )


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
