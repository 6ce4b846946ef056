"""Checkpoints of a training run: what `last.pt`, `best.pt` and `model.pt` hold, how they are written and read,
and how a run resumes from one. No training code here (:mod:`maskcls_hpo.train` runs the epochs).

A checkpoint is a dict of tensors and plain containers, so `torch.load(path, weights_only=True)` reads it:

    format ("maskcls-hpo-checkpoint/1"), epoch (1-based, the last finished), model (state dict), optimizer,
    scheduler (None without one), scaler (None unless fp16 AMP), rng (python, numpy, torch, cuda states),
    config (TrainConfig as a dict), preprocessing (image_size [H, W], mean, std), history (one EpochResult dict
    per epoch), best (epoch, f1, accuracy, confusion, per_class_f1, interval), seed.

`model.pt` keeps only format, epoch, model, config, preprocessing, best and seed of `best.pt` (what `predict`
needs). Every file is written atomically (``maskcls_hpo._util.atomic_path``: a unique temporary file in
the same folder, then `os.replace`), so a crash or a concurrent reader never sees half a checkpoint.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from maskcls_hpo._util import atomic_path
from maskcls_hpo.errors import ConfigError, TrainingError
from maskcls_hpo.metrics import VAL_PREDICTIONS_FILE

if TYPE_CHECKING:
    from torch import nn
    from torch.optim.lr_scheduler import LRScheduler

    from maskcls_hpo.config import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "LAST_FILE",
    "BEST_FILE",
    "MODEL_FILE",
    "MODEL_FILE_KEYS",
    "Trainable",
    "Resumed",
    "make_checkpoint",
    "save_checkpoint",
    "copy_run_file",
    "write_model_file",
    "load_checkpoint",
    "check_resume",
    "resume",
]

CHECKPOINT_FORMAT = "maskcls-hpo-checkpoint/1"
"""The `format` key of every checkpoint this project writes."""

LAST_FILE, BEST_FILE, MODEL_FILE = "last.pt", "best.pt", "model.pt"
"""File names in a run's `out_dir`: after every epoch, at each new best epoch, at the end of the run."""

MODEL_FILE_KEYS = ("format", "epoch", "model", "config", "preprocessing", "best", "seed")
"""The keys of `best.pt` that `model.pt` keeps (no optimizer, scheduler, scaler, RNG state or history)."""

_FIT_KEYS = ("model", "head", "image_size")
"""Config keys a resumed run must share with its checkpoint (else the weights do not fit)."""


class Trainable(Protocol):
    """The parts of a training run that a checkpoint saves and a resume restores (`train._Run` has them)."""

    config: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    scaler: torch.amp.GradScaler
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Resumed:
    """What :func:`resume` read besides the restored objects: the checkpoint's last finished `epoch`
    (1-based), its `history` (one EpochResult dict per epoch) and its `best` dict."""

    epoch: int
    history: list[dict[str, Any]]
    best: dict[str, Any]


def _rng_state() -> dict[str, Any]:
    """Python, NumPy (MT19937 as tensors and ints, so `weights_only` loads it), torch and CUDA RNG states."""
    state = np.random.get_state(legacy=True)
    assert isinstance(state, tuple)  # legacy=True: ("MT19937", keys, pos, has_gauss, cached_gaussian)
    _, keys, pos, has_gauss, cached = state
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`_rng_state`; the CUDA states only when as many devices are visible as were saved."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(run: Trainable, epoch: int, history: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict (module docstring) of `run` after `epoch` (1-based), with the current RNG states.

    Args:
        run: the run's model, optimizer, scheduler, grad scaler, config and preprocessing.
        epoch: the last finished epoch.
        history: one `dataclasses.asdict(EpochResult)` per finished epoch.
        best: the best epoch's numbers (epoch, f1, accuracy, confusion, per_class_f1, interval).
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "rng": _rng_state(),
        "config": run.config.to_dict(),
        "preprocessing": {"image_size": list(run.image_size), "mean": list(run.mean), "std": list(run.std)},
        "history": history,
        "best": dict(best),
        "seed": run.config.seed,
    }


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """`torch.save(checkpoint)` to `path` atomically (a unique temporary file, then `os.replace`).

    Raises:
        OSError: the folder is missing or not writable; nothing is left behind.
    """
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def copy_run_file(source: Path, target: Path) -> None:
    """Copy a file of a run over `target` atomically (e.g. `last.pt` to `best.pt` at a new best epoch).

    Raises:
        OSError: `source` is missing or `target`'s folder is not writable; nothing is left behind.
    """
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def write_model_file(out_dir: Path) -> Path | None:
    """Write `out_dir/model.pt` from `out_dir/best.pt` (only :data:`MODEL_FILE_KEYS`); None when there is no
    best.pt.

    Raises:
        TrainingError: best.pt is not a checkpoint of this project.
    """
    best_file = out_dir / BEST_FILE
    if not best_file.is_file():
        return None
    best = load_checkpoint(best_file)
    save_checkpoint({k: best[k] for k in MODEL_FILE_KEYS}, out_dir / MODEL_FILE)
    return out_dir / MODEL_FILE


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`maskcls_hpo.train.train` (`torch.load(weights_only=True)`, tensors on
    the CPU). The keys are listed in the module docstring; `model.pt` holds only :data:`MODEL_FILE_KEYS`.

    Raises:
        TrainingError: missing file or not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint '{path}' not found", reason="missing checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        # NOTE torch's own message for a file that is not a checkpoint is several lines about weights_only
        raise TrainingError(
            f"cannot read checkpoint '{path}': not a PyTorch checkpoint file ({type(err).__name__})",
            reason="bad checkpoint",
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"'{path}' is not a maskcls-hpo checkpoint ({CHECKPOINT_FORMAT})", reason="bad checkpoint")
    return ckpt


def check_resume(path: Path, config: TrainConfig) -> int:
    """Check that the run whose `last.pt` is `path` can go on with `config`, before anything is written.

    Returns:
        The epochs the run has finished (training goes on at the next one).

    Raises:
        TrainingError: `path` is missing or not a checkpoint.
        ConfigError: it was trained with another seed than ``config.seed``, or it has already finished
            ``config.epochs`` epochs (one line each, saying which option to change).
    """
    ckpt = load_checkpoint(path)
    done, theirs = int(ckpt["epoch"]), ckpt.get("seed")
    if theirs is not None and int(theirs) != config.seed:
        raise ConfigError(f"{path} was trained with seed {theirs}, the config says {config.seed}; drop --seed")
    if done >= config.epochs:
        raise ConfigError(
            f"{path.parent} already finished epoch {done} of {config.epochs}; pass --epochs N (N > {done}) to train on"
        )
    return done


def resume(run: Trainable, path: Path, out_dir: Path | None) -> Resumed:
    """Restore `run` from the checkpoint `path` (a `last.pt`): model, optimizer, scheduler, grad scaler and the
    RNG states. When `out_dir` is another folder, the run's `best.pt` and `val_predictions.csv` beside `path`
    are copied into it unless it has its own (a re-queued trial resumes into a new folder).

    Returns:
        :class:`Resumed`: the checkpoint's epoch, history and best (the caller continues at epoch + 1).

    Raises:
        TrainingError: `path` is missing or not a checkpoint, or it was trained with another model, head or
            image_size than `run.config`.
    """
    ckpt = load_checkpoint(path)
    ours_all = run.config.to_dict()
    for key in _FIT_KEYS:
        theirs, ours = ckpt["config"].get(key), ours_all.get(key)
        if theirs != ours:
            raise TrainingError(
                f"cannot resume from '{path}': it was trained with {key}={theirs!r}, the config says {ours!r}",
                reason="checkpoint does not fit the config",
            )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scheduler is not None and ckpt["scheduler"] is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt["scaler"] is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    if out_dir is not None:
        for name in (BEST_FILE, VAL_PREDICTIONS_FILE):
            if (path.parent / name).is_file() and not (out_dir / name).exists():
                copy_run_file(path.parent / name, out_dir / name)
    return Resumed(epoch=int(ckpt["epoch"]), history=list(ckpt["history"]), best=dict(ckpt["best"]))
