"""The typed training config: one object, validated on load, shared by `train`, sweeps and `export`.

A config is a flat mapping of the keys below. It loads from YAML or JSON (`load_config`), is written back
with `save_config`, and `maskcls-hpo train --print-config` prints the defaults. An unknown key or a bad
value is refused with a :class:`ConfigError` that names the key, the value and the accepted values.

Units: `epochs`, `t_max` and `step_size` count epochs; `lr` is per optimizer step; `image_size` is
`[height, width]` in pixels; `val_ratio` is the share of *persons* held out for validation. Every number is
finite and bounded (:data:`MAX_EPOCHS`, :data:`MAX_BATCH_SIZE`, :data:`MAX_SEED`, :data:`MAX_FOLDS`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maskcls_hpo._util import atomic_write_text, read_text_file
from maskcls_hpo.errors import ConfigError
from maskcls_hpo.labels import check_age_bins

__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "save_config",
    "config_from_mapping",
    "run_config",
    "resume_files",
    "MAX_EPOCHS",
    "MAX_BATCH_SIZE",
    "MAX_SEED",
    "MAX_FOLDS",
]

MAX_EPOCHS = 10_000
"""The most epochs (and `t_max`, `step_size`) a config takes: a larger number is a typo, not a plan."""
MAX_BATCH_SIZE = 65_536
"""The largest `batch_size` a config takes."""
MAX_SEED = 2**32 - 1
"""The largest `seed` / `split_seed`: NumPy's seeds are 32-bit."""
MAX_FOLDS = 1_000
"""The most `folds` (and the largest `fold`) a config takes."""


class TrainConfig(BaseModel):
    """Everything one training run needs.

    Fields (defaults in brackets):

    - model: timm model name ["test_efficientnet"]; `xception` is accepted and mapped to
      `legacy_xception` with one warning (see `models.canonical_model_name`).
    - pretrained: False, True (timm's weights from the local Hugging Face cache) or a path to a weights file.
    - head: "single" (18 logits) or "multi" (mask 3 + gender 2 + age 3 logits).
    - dropout: probability in [0, 1) applied before every linear layer of the head.
    - image_size: [height, width] in pixels, or None for the model's own input size
      (`timm.data.resolve_data_config`).
    - mean, std: per-channel normalisation, or None for the model's own.
    - batch_size, epochs: images per step, passes over the training split.
    - optimizer: adam | adamw | radam | sgd; lr, weight_decay, momentum (SGD only).
    - scheduler: step | cosine | none. Both step once per *epoch*: StepLR(step_size, gamma) and
      CosineAnnealingLR(T_max=t_max epochs, eta_min); t_max None means `epochs`.
    - loss: cross_entropy | label_smoothing | focal | f1; label_smoothing (epsilon), focal_gamma.
    - age_loss_weight: weight of the age loss in the multi head's loss mask + gender + w * age.
    - val_ratio: share of persons held out (0 only with full_data).
    - age_bins: the two band edges in years: age < a -> 0, a <= age < b -> 1, age >= b -> 2.
    - corrections: None, "known" (the published fixes of the real set) or a CSV path (id,field,value).
    - augment: random horizontal flip, random resized crop (crop_scale) and colour jitter on/off.
    - seed: seeds Python, NumPy and torch; also seeds the split.
    - device: auto (CUDA when present) | cpu | cuda; amp and channels_last apply on CUDA only.
    - data_dir: dataset root in the competition layout; cache_dir: decoded-image cache folder.
    - full_data: train on every person (no validation split; the last epoch is kept).
    - folds, fold: a fold run: the persons are cut into `folds` person-grouped folds stratified by gender x
      age band (`data.assign_folds`), fold `fold` (0-based) validates and the others train; `val_ratio`
      is then unused. None, None: the `val_ratio` split.
    - split_seed: seeds the person split or the fold assignment; None means `seed` (so runs of several
      seeds can share one split).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    model: str = "test_efficientnet"
    pretrained: bool | str = False
    head: Literal["single", "multi"] = "single"
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    image_size: tuple[int, int] | None = (96, 72)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE)
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    optimizer: Literal["adam", "adamw", "radam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["step", "cosine", "none"] = "step"
    t_max: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    eta_min: float = Field(0.0, ge=0.0)
    step_size: int = Field(5, ge=1, le=MAX_EPOCHS)
    gamma: float = Field(0.5, gt=0.0, le=1.0)

    loss: Literal["cross_entropy", "label_smoothing", "focal", "f1"] = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    age_loss_weight: float = Field(1.0, ge=0.0)

    val_ratio: float = Field(0.2, ge=0.0, lt=1.0)
    age_bins: tuple[int, int] = (30, 60)
    corrections: str | None = None
    augment: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    color_jitter: float = Field(0.2, ge=0.0, le=1.0)

    seed: int = Field(42, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    channels_last: bool = True
    data_dir: str = "storage/demo"
    cache_dir: str = "storage/cache"
    full_data: bool = False
    folds: int | None = Field(None, ge=2, le=MAX_FOLDS)
    fold: int | None = Field(None, ge=0, le=MAX_FOLDS)
    split_seed: int | None = Field(None, ge=0, le=MAX_SEED)

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] < 8 or v[1] < 8):
            raise ValueError(f"image_size must be [height, width] with both >= 8 pixels, got {list(v)}")
        return v

    @field_validator("age_bins")
    @classmethod
    def _ordered_bins(cls, v: tuple[int, int]) -> tuple[int, int]:
        return check_age_bins(v)

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _split_needs_val(self) -> TrainConfig:
        if self.val_ratio == 0.0 and not self.full_data:
            raise ValueError("val_ratio is 0 but full_data is false: set val_ratio > 0 or full_data: true")
        return self

    @model_validator(mode="after")
    def _fold_run(self) -> TrainConfig:
        if (self.folds is None) != (self.fold is None):
            raise ValueError("a fold run needs both folds and fold (or neither)")
        if self.folds is not None and self.fold is not None and self.fold >= self.folds:
            raise ValueError(f"fold must be in 0..{self.folds - 1} for {self.folds} folds, got {self.fold}")
        if self.folds is not None and self.full_data:
            raise ValueError("full_data trains on every person: drop folds/fold, or set full_data: false")
        return self

    @property
    def effective_split_seed(self) -> int:
        """The seed of the person split / fold assignment: `split_seed`, or `seed` when unset."""
        return self.split_seed if self.split_seed is not None else self.seed

    @property
    def effective_t_max(self) -> int:
        """CosineAnnealingLR's T_max in epochs: `t_max`, or `epochs` when unset."""
        return self.t_max if self.t_max is not None else self.epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists) that `config_from_mapping` accepts unchanged."""
        return json.loads(self.model_dump_json())


TIMM_KEYS: dict[str, str] = {
    "opt": "optimizer",
    "sched": "scheduler",
    "drop": "dropout",
    "drop_rate": "dropout",
    "img_size": "image_size",
    "input_size": "image_size",
    "min_lr": "eta_min",
    "decay_epochs": "step_size",
    "decay_rate": "gamma",
    "smoothing": "label_smoothing",
    "scale": "crop_scale",
    "data": "data_dir",
    "batch-size": "batch_size",
    "weight-decay": "weight_decay",
}
"""Keys of timm's `train.py` / `args.yaml` -> the key of :class:`TrainConfig` that means the same."""

TIMM_NOTES: dict[str, str] = {
    "num_classes": "fixed at 18 classes here; head: multi splits them 3 + 2 + 3",
    "warmup_epochs": "no warm-up here; scheduler is step, cosine or none",
    "output": "the run folder is `maskcls-hpo train --out`",
    "resume": "use `maskcls-hpo train --resume RUN_DIR`",
    "workers": "images are decoded once into cache_dir; there are no loader workers",
}
"""timm keys without a config key of their own, and what to use instead."""


def unknown_key_hint(key: str) -> str:
    """What to say about an unknown config key: its timm meaning, else the closest valid key.

    Uses :func:`difflib.get_close_matches` (cutoff 0.6) over the :class:`TrainConfig` field names, e.g.
    ``"opt"`` -> ``"timm's name for 'optimizer'"``, ``"lrr"`` -> ``"did you mean 'lr'?"``.
    """
    if key in TIMM_KEYS:
        return f"timm's name for '{TIMM_KEYS[key]}'"
    if key in TIMM_NOTES:
        return f"timm's {key}: {TIMM_NOTES[key]}"
    close = difflib.get_close_matches(key, list(TrainConfig.model_fields), n=1)
    return f"did you mean '{close[0]}'?" if close else "no such key"


def _format_validation_error(err: ValidationError, source: str) -> str:
    parts, unknown = [], []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<config>"
        if e["type"] == "extra_forbidden":
            unknown.append(f"'{key}' ({unknown_key_hint(key)})")
        else:
            parts.append(f"key '{key}': {e['msg']} (got {e.get('input')!r})")
    if unknown:
        parts.insert(
            0,
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(unknown)
            + " (the valid keys: `maskcls-hpo train --print-config`)",
        )
    return f"{source}: invalid training config: " + "; ".join(parts)


def config_from_mapping(data: object, source: str = "<config>") -> TrainConfig:
    """Validate a mapping (anything read from a file: checked here) into a :class:`TrainConfig`.

    Raises:
        ConfigError: naming `source` and every bad or unknown key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a training config must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return TrainConfig(**data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path, section: str | None = None) -> TrainConfig:
    """Load a config from a YAML (.yaml/.yml) or JSON (.json) file.

    Files written by `maskcls-hpo export` hold the config under the key `config` beside metadata
    (study, trial, value, ...); such files are accepted unchanged. Pass `section` to pick another key.

    Raises:
        ConfigError: missing/unreadable file, a parse error (with the line), or invalid keys.
    """
    path = Path(path)
    text = read_text_file(path, ConfigError, "config file", "give a YAML or JSON training config")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot parse: {err}") from None
    if data is None:
        data = {}
    if isinstance(data, dict):
        key = section or ("config" if "config" in data and isinstance(data.get("config"), dict) else None)
        if key is not None:
            if key not in data:
                raise ConfigError(f"{path}: no section '{key}'")
            data = data[key]
    return config_from_mapping(data, source=str(path))


def save_config(config: TrainConfig | dict[str, Any], path: str | Path) -> Path:
    """Write a config (or a mapping holding one) as YAML or JSON, chosen by the file suffix.

    The file is written to a temporary name first and renamed, so a failure leaves no half-written file.
    """
    path = Path(path)
    data = config.to_dict() if isinstance(config, TrainConfig) else config
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    return atomic_write_text(path, text)


def run_config(path: str | Path | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """The config of one `train` run: the file `path` (None: the defaults) with `overrides` on top; a key whose
    value is None is left as the file has it.

    Raises:
        ConfigError: see :func:`load_config`; a bad override value (named with its source
            ``<path or defaults> + options``).
    """
    config = load_config(path) if path is not None else TrainConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return config
    return config_from_mapping(config.to_dict() | given, source=f"{path or 'defaults'} + options")


def resume_files(run_dir: Path, config: Path | None = None) -> tuple[Path, Path]:
    """What resuming the `train` run folder `run_dir` reads: its ``last.pt`` (the checkpoint after every epoch)
    and the config to go on with: `config`, else the ``config.yaml`` the run wrote before its first epoch.

    Raises:
        ConfigError: `run_dir` holds no ``last.pt``, or no ``config.yaml`` and `config` is None.
    """
    last = run_dir / "last.pt"  # NOTE checkpoint.LAST_FILE; that module imports torch, this one must not
    if not last.is_file():
        raise ConfigError(
            f"{run_dir}: no last.pt to resume from; pass the folder a `maskcls-hpo train` run wrote (--out)"
        )
    if config is None:
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"{run_dir}: no config.yaml beside last.pt; pass the run's config with --config")
    return last, config
