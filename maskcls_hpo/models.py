"""timm backbone + the project's heads, model names, preprocessing and offline pretrained weights.

`build_model(config)` returns a :class:`MaskClassifier`: `timm.create_model(name, num_classes=0)` (the pooled
features, `(B, F) float`) followed by the project's head, with a dropout before each linear layer:

- `single`: `Dropout(p) -> Linear(F, 18)`; forward returns `(B, 18)` logits;
- `multi`: three `Dropout(p) -> Linear` heads; forward returns `{"mask": (B, 3), "gender": (B, 2),
  "age": (B, 3)}` logits (`metrics.combine_multi` turns them into the 18-class prediction).

Pretrained weights are never downloaded: `pretrained: true` uses only what is already on disk (the Hugging
Face cache, timm's/torch hub's checkpoint cache, a `local-dir:` model folder) and `pretrained: <path>` loads a
local file. :func:`check_pretrained_available` says up front, without touching the network, whether that
works, and raises :class:`PretrainedWeightsError` with the ways to provide weights when it does not.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from maskcls_hpo.config import ConfigError, TrainConfig
from maskcls_hpo.errors import PretrainedWeightsError

__all__ = [
    "MaskClassifier",
    "PretrainedSource",
    "PretrainedWeightsError",
    "build_model",
    "canonical_model_name",
    "check_pretrained_available",
    "resolve_preprocessing",
    "HEAD_CLASSES",
]

_log = logging.getLogger(__name__)

#: Output sizes of each head: name -> {output: number of classes}.
HEAD_CLASSES: dict[str, dict[str, int]] = {
    "single": {"class": 18},
    "multi": {"mask": 3, "gender": 2, "age": 3},
}

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_warned_names: set[str] = set()


class MaskClassifier(nn.Module):
    """A timm backbone (`num_classes=0`, pooled features) and the project's `single` or `multi` head.

    Args:
        backbone: a timm model created with `num_classes=0`; `backbone(x)` gives `(B, num_features)`.
        head: "single" (18 logits) or "multi" (mask 3, gender 2, age 3 logits).
        dropout: probability of the `nn.Dropout` placed before every linear layer (active in train mode only).

    Forward: `(B, 3, H, W) float` -> `(B, 18)` logits for "single", a dict of `(B, 3)`, `(B, 2)`, `(B, 3)`
    logits under keys "mask", "gender", "age" for "multi".
    """

    def __init__(self, backbone: nn.Module, head: Literal["single", "multi"] = "single", dropout: float = 0.5):
        super().__init__()
        if head not in HEAD_CLASSES:
            raise ConfigError(f"head must be one of {sorted(HEAD_CLASSES)}, got {head!r}")
        self.backbone = backbone
        self.head_type = head
        features = int(backbone.num_features)
        self.heads = nn.ModuleDict(
            {name: nn.Sequential(nn.Dropout(dropout), nn.Linear(features, n)) for name, n in HEAD_CLASSES[head].items()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        features = self.backbone(x)
        if self.head_type == "single":
            return self.heads["class"](features)
        return {name: head(features) for name, head in self.heads.items()}


def canonical_model_name(name: str) -> str:
    """Map a deprecated timm model name to its current one (`xception` -> `legacy_xception`).

    Uses timm's own table of deprecated names (`timm.models.get_deprecated_models()`). The first time a
    deprecated name is seen in a process a `FutureWarning` is issued (once per name); later calls are silent.
    Other names, including `hf-hub:` / `local-dir:` sources, are returned unchanged.
    """
    current = timm.models.get_deprecated_models().get(name)
    if current is None:
        return name
    if name not in _warned_names:
        _warned_names.add(name)
        warnings.warn(
            f"model name '{name}' is deprecated in timm; using '{current}' (write `model: {current}`)",
            FutureWarning,
            stacklevel=2,
        )
    return current


def resolve_preprocessing(
    config: TrainConfig, model: nn.Module
) -> tuple[tuple[int, int], tuple[float, float, float], tuple[float, float, float]]:
    """The input size and normalisation a model expects, with the config's overrides applied.

    Defaults come from `timm.data.resolve_data_config({}, model=backbone)` (the weights' own input size,
    mean and std); `config.image_size`, `config.mean` and `config.std` replace them when not None.

    Returns:
        `((height, width) pixels, mean (3 floats), std (3 floats))`, mean/std in the [0, 1] pixel scale.
    """
    backbone = getattr(model, "backbone", model)
    data_config = timm.data.resolve_data_config({}, model=backbone)
    _, height, width = data_config["input_size"]
    size = tuple(config.image_size) if config.image_size is not None else (int(height), int(width))
    mean = tuple(config.mean) if config.mean is not None else tuple(float(v) for v in data_config["mean"])
    std = tuple(config.std) if config.std is not None else tuple(float(v) for v in data_config["std"])
    return size, mean, std


@dataclass(frozen=True)
class PretrainedSource:
    """Where pretrained weights come from: kind "none" | "file" | "hf-cache" | "torch-cache" | "local-dir"."""

    kind: str
    path: Path | None = None


def _ways_to_provide(model: str, looked: list[str]) -> str:
    where = "; ".join(looked) if looked else "nothing to look for"
    return (
        f"pretrained weights for model '{model}' are not available offline (looked: {where}). "
        f"Provide them in one of three ways: (1) a local file in the config: `pretrained: "
        f"/path/to/weights.safetensors` (or .pth); (2) timm's local-dir source: `model: "
        f"local-dir:/path/to/folder` holding config.json and model.safetensors, with `pretrained: true`; "
        f"(3) a pre-filled Hugging Face cache (run `hf download timm/<model>` on a machine with internet and "
        f"copy ~/.cache/huggingface/hub, or set HF_HUB_CACHE), used with HF_HUB_OFFLINE=1 (for weights that "
        f"timm fetches by URL, put the file at the torch hub path named above). "
        f"Or set `pretrained: false` to train from scratch."
    )


def _hf_cached_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    from huggingface_hub import constants, try_to_load_from_cache

    repo, _, revision = repo_id.partition("@")
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=constants.HF_HUB_CACHE, revision=revision or None)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def check_pretrained_available(config: TrainConfig) -> PretrainedSource:
    """Check, without any network access, that `config.pretrained` can be honoured; say where from.

    - `pretrained: false` -> kind "none".
    - `pretrained: <path>` -> the file must exist (.safetensors, .pth, .pt, .bin) -> kind "file".
    - `pretrained: true` with `model: local-dir:DIR` -> DIR/config.json and a weights file -> "local-dir".
    - `pretrained: true` with `model: hf-hub:ORG/NAME` -> config.json and weights in the HF cache -> "hf-cache".
    - `pretrained: true` with a timm name -> the weights of its default pretrained tag in the Hugging Face
      cache (`huggingface_hub.try_to_load_from_cache` on the tag's `hf_hub_id`) -> "hf-cache", else the
      torch hub checkpoint cache (`<torch.hub.get_dir()>/checkpoints/<file of its url>`) -> "torch-cache".

    Raises:
        PretrainedWeightsError: naming the model, the places looked at, and the three ways to provide
            weights (a local file, `local-dir:`, a pre-filled Hugging Face cache) or `pretrained: false`.
        ConfigError: an unknown model name.
    """
    if config.pretrained is False:
        return PretrainedSource("none")
    if isinstance(config.pretrained, str):
        path = Path(config.pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"pretrained: weights file '{path}' not found; give an existing .safetensors/.pth file "
                f"or set `pretrained: true` (local caches) / `pretrained: false`"
            )
        return PretrainedSource("file", path)

    name = canonical_model_name(config.model)
    source, _, model_id = name.partition(":")
    if source == "local-dir":
        folder = Path(model_id).expanduser()
        weights = [p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pth", ".pt")]
        if not (folder / "config.json").is_file() or not weights:
            raise PretrainedWeightsError(
                f"model: local-dir:{folder} needs {folder}/config.json and a weights file "
                f"(model.safetensors or pytorch_model.bin); " + _ways_to_provide(name, [str(folder)])
            )
        return PretrainedSource("local-dir", folder)
    if source in ("hf-hub", "hf_hub"):
        config_file = _hf_cached_file(model_id, ("config.json",))
        weights = _hf_cached_file(model_id, _HF_WEIGHT_FILES)
        if config_file is None or weights is None:
            raise PretrainedWeightsError(_ways_to_provide(name, [f"Hugging Face cache for {model_id}"]))
        return PretrainedSource("hf-cache", weights)

    _check_model_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    looked: list[str] = []
    if cfg is not None and cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_WEIGHT_FILES
        found = _hf_cached_file(cfg.hf_hub_id, files)
        if found is not None:
            return PretrainedSource("hf-cache", found)
        from huggingface_hub import constants

        looked.append(f"Hugging Face cache {constants.HF_HUB_CACHE} for {cfg.hf_hub_id}")
    if cfg is not None and cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if cached.is_file():
            return PretrainedSource("torch-cache", cached)
        looked.append(f"torch hub cache {cached}")
    raise PretrainedWeightsError(_ways_to_provide(name, looked))


def _check_model_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ConfigError(f"model: '{name}' is not a timm model{hint}")


@contextlib.contextmanager
def _hub_offline():
    """Make huggingface_hub refuse network access while timm loads weights (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _load_weights_file(backbone: nn.Module, path: Path, model: str) -> None:
    """Load a weights file into a `num_classes=0` backbone, keeping only keys whose name and shape match.

    Refused (PretrainedWeightsError) when fewer than half of the backbone's tensors match; a partial match
    is loaded with a warning naming the missing tensors (they keep their random init).
    """
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise PretrainedWeightsError(f"pretrained: cannot read weights file '{path}': {err}") from None
    own = backbone.state_dict()
    # NOTE our own checkpoints (train.py) store the whole MaskClassifier: strip its "backbone." prefix.
    if not any(k in own for k in state) and any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    missing = sorted(set(own) - set(matched))
    weights = [k for k in own if not k.endswith("num_batches_tracked")]
    n_matched = sum(k in matched for k in weights)
    # NOTE a file of another architecture can share a few generic names (bn1.weight): demand a majority.
    if n_matched * 2 < len(weights):
        raise PretrainedWeightsError(
            f"pretrained: only {n_matched} of {len(weights)} tensors of model '{model}' match '{path}' by name "
            f"and shape (missing e.g. {missing[:3]}; the file has e.g. {sorted(state)[:3]}); "
            f"is it a checkpoint of another architecture?"
        )
    backbone.load_state_dict(matched, strict=False)
    if missing:
        _log.warning(
            "pretrained: %d of %d backbone tensors not in '%s' (kept random init), e.g. %s",
            len(missing),
            len(own),
            path,
            missing[:5],
        )


def build_model(config: TrainConfig) -> MaskClassifier:
    """Build the timm backbone (`num_classes=0`) and the config's head; load pretrained weights offline.

    Args:
        config: uses `model` (mapped by :func:`canonical_model_name`), `pretrained`, `head`, `dropout`.

    Returns:
        A :class:`MaskClassifier` on the CPU in train mode.

    Raises:
        ConfigError: unknown model name.
        PretrainedWeightsError: pretrained weights requested but not on disk, or a file that does not fit
            (see :func:`check_pretrained_available`).
    """
    name = canonical_model_name(config.model)
    source = check_pretrained_available(config)
    if ":" not in name:
        _check_model_name(name)
    kwargs: dict = {"num_classes": 0}
    if source.kind in ("hf-cache", "torch-cache") and ":" not in name:
        # NOTE point timm at the cached file so it loads from disk and never asks the hub.
        kwargs["pretrained_cfg_overlay"] = {"file": str(source.path)}
    with _hub_offline():
        backbone = timm.create_model(name, pretrained=source.kind not in ("none", "file"), **kwargs)
    if source.kind == "file":
        _load_weights_file(backbone, source.path, name)
    return MaskClassifier(backbone, head=config.head, dropout=config.dropout)
