"""From trained checkpoints to a submission: prediction, ensembles, test-time flips and scoring.

`predict(checkpoints, data_dir, out)` reads `DATA_DIR/eval/info.csv`, checks that every eval image exists and
decodes (`data.load_eval`: a :class:`~maskcls_hpo.errors.DataError` names each missing or unreadable image
before anything is written), loads each checkpoint with its own preprocessing (the input size, mean and std
stored in the checkpoint, i.e. `models.resolve_preprocessing` at training time, and the config's
interpolation), predicts every image in info.csv order in batches under `torch.inference_mode` (CUDA with
the checkpoint's AMP setting when a GPU is visible), and writes `ImageID,ans` (`ans` in 0..17) atomically:
a temporary file in the same folder renamed over `out` with `os.replace`, so a failure leaves no
half-written file.

Every model's output becomes probabilities with a softmax (per head for `multi` models). With `tta` each
model's probabilities are the mean of those of the image and of its horizontal mirror (flip of the width
axis), before any ensembling.

Ensemble rule (several checkpoints, equal weights):

- all `single` heads: the mean of the 18-class probabilities; `ans` is its argmax.
- all `multi` heads: the mean of the mask, gender and age probabilities, head by head; `ans` combines the
  three argmaxes, `labels.encode_label` (as `metrics.combine_multi` does for one model).
- mixed: every model gives an 18-class distribution - a `single` head its own, a `multi` head the product
  of its three heads, `p(m, g, a) = p(m) p(g) p(a)`, whose argmax is exactly that model's own combined
  prediction - and `ans` is the argmax of their mean.

So one checkpoint alone always predicts what its validation scored. :class:`Prediction` carries both views:
`probs` (N, 18), the distribution whose argmax is `ans` (for all-`multi` ensembles the product of the
averaged heads), and `task_probs`, the per-task probabilities (the averaged heads, or the marginals of
`probs`).

`score(submission, answers)` (in :mod:`maskcls_hpo.scoring`, which imports no torch) compares a submission
with an answers file (`ImageID,ans`) by ImageID: accuracy and macro F1 over the 18 classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike, NDArray

from maskcls_hpo._util import atomic_path, check_cache_dir, check_output_file, check_whole_number
from maskcls_hpo.cache import BatchLoader, build_cache
from maskcls_hpo.checkpoint import load_checkpoint
from maskcls_hpo.config import MAX_BATCH_SIZE, ConfigError, config_from_mapping
from maskcls_hpo.data import load_eval
from maskcls_hpo.errors import PredictError, TrainingError
from maskcls_hpo.labels import NUM_CLASSES, encode_label
from maskcls_hpo.metrics import TASK_CLASSES
from maskcls_hpo.scoring import score  # re-exported: `predict.score` is part of the API

__all__ = [
    "PredictError",
    "Prediction",
    "LoadedModel",
    "predict",
    "score",
    "load_model",
    "model_probabilities",
    "ensemble",
    "joint_from_tasks",
    "tasks_from_joint",
    "write_submission",
]

TASKS = tuple(TASK_CLASSES)  # ("mask", "gender", "age")


# --- models -------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A checkpoint ready for inference.

    Attributes:
        path: the checkpoint file.
        model: the `MaskClassifier` in eval mode on `device`.
        head: "single" or "multi".
        image_size: (height, width) pixels the model was trained at; mean, std: 3 floats in [0, 1] scale.
        interpolation: resize filter of the training cache (bilinear | bicubic | nearest).
        amp_dtype: autocast dtype on CUDA (None: float32); channels_last: memory format on CUDA.
    """

    path: Path
    model: torch.nn.Module
    head: str
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False


def _pick_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise PredictError("device 'cuda' asked for but no CUDA device is visible; use --device auto or cpu")
    index = device[5:] if device.startswith("cuda:") else None
    if index is not None and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise PredictError(
            f"--device {device}: this machine has {torch.cuda.device_count()} visible CUDA device(s); use --device "
            "auto, cpu, cuda or cuda:N with N below that"
        )
    if device not in ("cpu", "cuda") and index is None:
        raise PredictError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint written by `train.train` (`best.pt`, `last.pt` or `model.pt`; :mod:`maskcls_hpo.checkpoint`)
    for inference.

    The model is rebuilt from the checkpoint's stored config with `pretrained: false` (the weights come
    from the checkpoint, so no pretrained file is needed), and its preprocessing is the one stored in the
    checkpoint (`preprocessing`: image_size [H, W], mean, std), else `models.resolve_preprocessing`.

    Raises:
        PredictError: missing or unreadable file, not a maskcls-hpo checkpoint, a stored config that does not
            validate, or weights that do not fit the model the config describes (all name the file).
    """
    from maskcls_hpo.models import build_model, resolve_preprocessing  # lazy: timm (3 s beyond torch)

    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
    except TrainingError as err:
        raise PredictError(f"{err}; pass a best.pt / model.pt written by `maskcls-hpo train`") from None
    try:
        config = config_from_mapping(ckpt.get("config"), source=f"{path} (stored config)")
        config = config.model_copy(update={"pretrained": False})
        model = build_model(config)
        model.load_state_dict(ckpt["model"])
    except (ConfigError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PredictError(f"{path}: cannot rebuild the model from the checkpoint: {first}") from None
    pre = ckpt.get("preprocessing")
    if pre:
        size = (int(pre["image_size"][0]), int(pre["image_size"][1]))
        mean, std = _rgb(pre["mean"]), _rgb(pre["std"])
    else:
        size, mean, std = resolve_preprocessing(config, model)
    device = _pick_device(device)
    on_cuda = device.type == "cuda"
    channels_last = on_cuda and config.channels_last
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    # NOTE torch's type stubs lack the (device, memory_format) overload of Module.to that it accepts at run time
    model = model.to(device, memory_format=memory_format).eval()  # type: ignore[call-overload]
    amp_dtype = None
    if on_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return LoadedModel(
        path=path,
        model=model,
        head=config.head,
        image_size=(size[0], size[1]),
        mean=mean,
        std=std,
        interpolation=config.interpolation,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
    )


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    """Three per-channel floats (R, G, B) of a stored mean or std."""
    return float(values[0]), float(values[1]), float(values[2])


def _softmax(outputs: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(outputs, dict):
        return {k: torch.softmax(outputs[k].float(), dim=1) for k in TASKS}
    return {"class": torch.softmax(outputs.float(), dim=1)}


@torch.inference_mode()
def model_probabilities(loaded: LoadedModel, images: torch.Tensor, tta: bool = False) -> dict[str, NDArray[np.float32]]:
    """Class probabilities of one model for one batch.

    Args:
        loaded: from :func:`load_model`.
        images: `(B, 3, H, W) uint8` RGB at `loaded.image_size`, on any device (moved to the model's).
        tta: also run the horizontally flipped batch (`torch.flip(x, dims=[3])`) and average the two
            probabilities (after the softmax).

    Returns:
        single head: `{"class": (B, 18) float32}`; multi head: `{"mask": (B, 3), "gender": (B, 2),
        "age": (B, 3)}` float32; NumPy arrays whose rows sum to 1.
    """
    from maskcls_hpo.transforms import normalize  # lazy: torchvision (2 s beyond torch)

    x = normalize(images.to(loaded.device, non_blocking=True), loaded.mean, loaded.std)
    if loaded.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(loaded.device.type, dtype=loaded.amp_dtype)
        if loaded.amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        probs = _softmax(loaded.model(x))
        if tta:
            flipped = _softmax(loaded.model(torch.flip(x, dims=[3])))
            probs = {k: (probs[k] + flipped[k]) / 2 for k in probs}
    return {k: v.float().cpu().numpy() for k, v in probs.items()}


# --- ensembles ----------------------------------------------------------------------------------------


def joint_from_tasks(task_probs: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
    """18-class probabilities from per-task ones, assuming the tasks independent: `p(m) p(g) p(a)`.

    Args:
        task_probs: "mask" (N, 3), "gender" (N, 2), "age" (N, 3) probabilities.

    Returns:
        (N, 18) float64, column `labels.encode_label(mask, gender, age)`.
    """
    m, g, a = (np.asarray(task_probs[k], dtype=np.float64) for k in TASKS)
    return np.einsum("nm,ng,na->nmga", m, g, a).reshape(len(m), NUM_CLASSES)


def tasks_from_joint(probs: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """Per-task marginals of 18-class probabilities `(N, 18)`: mask (N, 3), gender (N, 2), age (N, 3) float64."""
    cube = np.asarray(probs, dtype=np.float64).reshape(-1, 3, 2, 3)  # (N, mask, gender, age)
    return {"mask": cube.sum(axis=(2, 3)), "gender": cube.sum(axis=(1, 3)), "age": cube.sum(axis=(1, 2))}


def ensemble(
    outputs: Sequence[Mapping[str, ArrayLike]],
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float64]], NDArray[np.int64], str]:
    """Combine the probabilities of several models over the same images (equal weights; module docstring).

    Args:
        outputs: one dict per model as :func:`model_probabilities` returns (whole eval set): `{"class":
            (N, 18)}` for single heads, `{"mask", "gender", "age"}` for multi heads.

    Returns:
        `(probs (N, 18) float64, task_probs {"mask" (N, 3), "gender" (N, 2), "age" (N, 3)} float64,
        labels (N,) int64 in 0..17, rule)`, rule "single" | "multi" | "mixed".

    Raises:
        ValueError: no outputs.
    """
    if not outputs:
        raise ValueError("ensemble needs at least one model's outputs")
    singles = ["class" in o for o in outputs]
    if all(singles):
        probs = np.mean([np.asarray(o["class"], dtype=np.float64) for o in outputs], axis=0)
        return probs, tasks_from_joint(probs), probs.argmax(axis=1).astype(np.int64), "single"
    if not any(singles):
        tasks = {k: np.mean([np.asarray(o[k], dtype=np.float64) for o in outputs], axis=0) for k in TASKS}
        # NOTE labels from the three argmaxes directly, not from the product, so rounding in the product
        # can never pick another class than combine_multi would.
        labels = encode_label(tasks["mask"].argmax(1), tasks["gender"].argmax(1), tasks["age"].argmax(1))
        return joint_from_tasks(tasks), tasks, labels.astype(np.int64), "multi"
    joints = [np.asarray(o["class"], dtype=np.float64) if "class" in o else joint_from_tasks(o) for o in outputs]
    probs = np.mean(joints, axis=0)
    return probs, tasks_from_joint(probs), probs.argmax(axis=1).astype(np.int64), "mixed"


# --- predict ------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What :func:`predict` computed, in info.csv order.

    Attributes:
        image_ids: N eval ImageIDs; labels: (N,) int64 in 0..17 (the `ans` column).
        probs: (N, 18) float64, the ensemble distribution whose argmax is `labels` (module docstring).
        task_probs: {"mask" (N, 3), "gender" (N, 2), "age" (N, 3)} float64.
        rule: "single" | "multi" | "mixed" (which ensemble rule applied); checkpoints: the files used.
        tta: horizontal-flip averaging on; device: where the models ran; out: the file written or None.
    """

    image_ids: list[str]
    labels: NDArray[np.int64]
    probs: NDArray[np.float64]
    task_probs: dict[str, NDArray[np.float64]]
    rule: str
    checkpoints: list[Path]
    tta: bool
    device: str
    out: Path | None = None
    heads: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """The submission table: columns ImageID (str), ans (int 0..17)."""
        return pd.DataFrame({"ImageID": self.image_ids, "ans": self.labels.astype(np.int64)})


def write_submission(image_ids: Sequence[str], labels: ArrayLike, out: str | Path) -> Path:
    """Write `ImageID,ans` to `out` atomically (a temp file in the same folder, then `os.replace`).

    Raises:
        ValueError: different lengths or a label outside 0..17 (nothing is written).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(image_ids):
        raise ValueError(f"{len(image_ids)} ImageIDs but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pd.DataFrame({"ImageID": list(image_ids), "ans": labels}).to_csv(tmp, index=False)
    return out


def predict(
    checkpoints: Sequence[str | Path],
    data_dir: str | Path,
    out: str | Path | None = None,
    tta: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    cache_dir: str | Path = "storage/cache",
    progress: bool = False,
) -> Prediction:
    """Predict every eval image with one checkpoint or an ensemble; optionally write the submission.

    Order of work: the eval set is checked (every image exists and decodes), every checkpoint is loaded,
    then the images are decoded once per preprocessing (input size, interpolation) into the shared uint8
    cache (`cache.build_cache` under `cache_dir`), run through the models in batches of `batch_size`, and
    combined (:func:`ensemble`); `out` is written last, atomically (:func:`write_submission`).

    Args:
        checkpoints: one or more checkpoint files (`best.pt`, `model.pt` of `maskcls-hpo train`, or a trial's).
        data_dir: dataset root with `eval/info.csv` and `eval/images/`.
        out: submission CSV to write (`ImageID,ans`), or None to only return the prediction.
        tta: average each model's probabilities with those of the horizontally flipped images.
        batch_size: images per forward pass.
        device: "auto" (CUDA when visible, with the checkpoint's AMP setting), "cpu" or "cuda".
        cache_dir: folder of the decoded-image cache (shared with training).
        progress: progress bars on stderr while decoding.

    Returns:
        :class:`Prediction` (probabilities, labels, ensemble rule).

    Raises:
        DataError: missing `eval/info.csv`, or eval images missing/unreadable, every one named; nothing
            written.
        PredictError: no checkpoint, or a checkpoint that cannot be loaded (named); nothing written.
    """
    if not checkpoints:
        raise PredictError("no checkpoint given: pass at least one checkpoint (best.pt / model.pt)")
    check_whole_number(batch_size, "--batch-size", 1, MAX_BATCH_SIZE, PredictError)
    if out is not None:
        out = check_output_file(out, "--out", PredictError)
    check_cache_dir(cache_dir, PredictError)
    dev = _pick_device(device)
    table = load_eval(data_dir)
    if len(table) == 0:
        raise PredictError(f"{Path(data_dir) / 'eval' / 'info.csv'} lists no image")
    models = [load_model(p, dev) for p in checkpoints]

    groups: dict[tuple[tuple[int, int], str], list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault((m.image_size, m.interpolation), []).append(i)
    parts: list[list[dict[str, NDArray[np.float32]]]] = [[] for _ in models]
    paths = table["path"].tolist()
    rows = np.arange(len(paths))
    for (size, interpolation), members in groups.items():
        cache = build_cache(paths, size=size, cache_dir=cache_dir, progress=progress, interpolation=interpolation)
        loader = BatchLoader(cache.images, None, rows, batch_size, shuffle=False, seed=0, device=dev)
        for images, _ in loader:
            for i in members:
                parts[i].append(model_probabilities(models[i], images, tta=tta))
    outputs = [{k: np.concatenate([p[k] for p in chunks]) for k in chunks[0]} for chunks in parts]
    probs, task_probs, labels, rule = ensemble(outputs)
    written = write_submission(table["ImageID"].tolist(), labels, out) if out is not None else None
    return Prediction(
        image_ids=table["ImageID"].tolist(),
        labels=labels,
        probs=probs,
        task_probs=task_probs,
        rule=rule,
        checkpoints=[m.path for m in models],
        tta=tta,
        device=str(dev),
        out=written,
        heads=[m.head for m in models],
    )
