"""The checks before any trial: the dataset, pretrained weights and the image cache; a joining worker's checks;
folders that are files; a CUDA device that is not there."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from maskcls_hpo._util import DISK_FULL, free_bytes
from maskcls_hpo.errors import DataError, LaunchError, StorageError
from maskcls_hpo.hpo._optuna import rdb_of, storage_of
from maskcls_hpo.hpo.attrs import StudyAttrs
from maskcls_hpo.hpo.store import open_study
from maskcls_hpo.hpo.trial import Sweep

if TYPE_CHECKING:
    import pandas as pd

    from maskcls_hpo.config import TrainConfig
    from maskcls_hpo.hpo.workers._options import WorkerSettings


def _input_size(config: TrainConfig) -> tuple[int, int]:
    """The model's input size (H, W) for `config`: its `image_size`, else what timm says for the model."""
    if config.image_size is not None:
        # NOTE resolve_preprocessing returns a set image_size unchanged; no model is built (and torch / timm are
        # not imported) just to learn it: a launch's workers import them meanwhile.
        return int(config.image_size[0]), int(config.image_size[1])
    from maskcls_hpo.models import build_model, resolve_preprocessing  # lazy: torch, timm

    backbone = build_model(config.model_copy(update={"pretrained": False}))
    image_size, _, _ = resolve_preprocessing(config, backbone)
    del backbone
    return image_size


def _samples_and_size(config: TrainConfig, verify: bool = True) -> tuple[pd.DataFrame, tuple[int, int]]:
    """The training samples (every image decoded as a check when `verify`) and the model's input size (H, W)."""
    from maskcls_hpo.data import load_train  # lazy: pandas, PIL (a worker process imports this package first)

    samples = load_train(config.data_dir, age_bins=config.age_bins, corrections=config.corrections, verify=verify)
    return samples, _input_size(config)


def prepare_data(config: TrainConfig) -> dict[str, Any]:
    """Check the dataset and the pretrained weights, build the cache once.

    Runs in the launching process before any trial starts, so a bad dataset or missing weights is one message
    instead of a failure in every trial, and every worker finds the cache ready. The layout, the csv and every
    file's presence are checked each time; every image is decoded as a check only when the cache must be built
    (a finished cache of the same files, by path, size and mtime, proves they all decode:
    :func:`~maskcls_hpo.cache.find_cache`).

    Args:
        config: the sweep's base :class:`~maskcls_hpo.config.TrainConfig` (with overrides).

    Returns:
        ``{"data_fingerprint": the cache fingerprint, "dataset": {"data_dir", "persons", "images",
        "launch_dir"}}`` (`data_dir` absolute; `launch_dir` the current folder, against which `export` makes the
        trials' relative paths absolute).

    Raises:
        DataError: every problem by path. PretrainedWeightsError: naming the model and the ways to get weights.
    """
    from maskcls_hpo.cache import build_cache, find_cache  # lazy: pandas, PIL (as above)
    from maskcls_hpo.data import check_train  # lazy: pandas, PIL (as above)

    if config.pretrained is not False:  # NOTE `pretrained: false` has nothing to check (and needs no timm here)
        from maskcls_hpo.models import check_pretrained_available  # lazy: torch, timm

        check_pretrained_available(config)
    samples, image_size = _samples_and_size(config, verify=False)
    paths = samples["path"].tolist()
    cache = find_cache(paths, image_size, config.cache_dir, config.interpolation)
    if cache is None:
        problems = check_train(config.data_dir)  # every image decoded: each unreadable one named, nothing written
        if problems:
            raise DataError(problems)
        cache = build_cache(
            paths, size=image_size, cache_dir=config.cache_dir, progress=True, interpolation=config.interpolation
        )
    return {
        StudyAttrs.FINGERPRINT: cache.fingerprint,
        StudyAttrs.DATASET: {
            "data_dir": str(Path(config.data_dir).resolve()),
            "persons": int(samples["person_id"].nunique()),
            "images": int(len(samples)),
            "launch_dir": str(Path.cwd()),
        },
    }


def check_join(
    sweep: Sweep | None,
    storage_url: str,
    study_name: str,
    overrides: dict[str, Any] | None = None,
    *,
    check_data: bool = True,
) -> None:
    """The checks `launch` makes, for a worker that joins an existing study; nothing is created or changed.

    In order: the database exists (an SQLite file is never created) and has the installed Optuna's schema;
    the study exists; the sweep's search space is the stored one (C3); and, when `check_data` and the
    study stored one, the data's fingerprint (paths, sizes, mtimes at the model's input size: the image
    cache's key) is the one the study was launched on. With `sweep` None (a confirm study, whose runs are
    fixed params of stored configs) only the database and the study are checked.

    Raises:
        StorageError: no database, another schema, no such study (the studies there are named).
        SweepError: the search space differs. LaunchError: other data than the study's. DataError: bad data.
    """
    try:
        study = open_study(storage_url, study_name)
    except StorageError as err:
        raise StorageError(f"{err}; create the study first with `maskcls-hpo launch SWEEP --workers 0`") from None
    try:
        _check_joined_study(study, sweep, study_name, overrides, check_data)
    finally:
        # NOTE the checks' own engine is closed here: a worker holds at most 2 connections (main + heartbeat)
        rdb_of(storage_of(study)).engine.dispose()


def _check_joined_study(
    study: optuna.Study, sweep: Sweep | None, study_name: str, overrides: dict[str, Any] | None, check_data: bool
) -> None:
    """Search space and data fingerprint of :func:`check_join` (raises as it documents)."""
    from maskcls_hpo.cache import fingerprint  # lazy: pandas, PIL (as above)

    if sweep is None:  # a confirm study: its runs are fixed params of stored configs (hpo/select/_confirm.py)
        return
    sweep.check_study_compatible(study)
    stored = study.user_attrs.get(StudyAttrs.FINGERPRINT)
    if not check_data or not stored:
        return
    config = sweep.build_config({}, overrides)
    samples, image_size = _samples_and_size(config, verify=False)  # the fingerprint needs the files, not pixels
    found = fingerprint(samples["path"].tolist(), image_size, config.interpolation)
    if found != stored:
        was = study.user_attrs.get(StudyAttrs.DATASET) or {}
        raise LaunchError(
            f"the data in {config.data_dir} ({samples['person_id'].nunique()} persons, {len(samples)} images) is "
            f"not the data study '{study_name}' was launched on ({was.get('data_dir', '?')}: "
            f"{was.get('persons', '?')} persons, {was.get('images', '?')} images; fingerprints {found[:12]} vs "
            f"{stored[:12]}); pass the same --data-dir as launch, or start a new study with --study NEW_NAME"
        )


def check_run_folders(settings: WorkerSettings) -> None:
    """Refuse a checkpoint root, logs or TensorBoard folder that is a file (or lies under a file).

    Checked before anything is stored, so a file where the checkpoint root belongs is one line, not a FAIL
    trial per attempt until the failure cap.

    Raises:
        LaunchError: naming the folder and the file in its way.
    """
    folders = (
        ("checkpoint root", settings.checkpoint_root, "--checkpoints DIR"),
        ("logs folder", settings.log_dir.parent, "another --storage"),
        ("TensorBoard folder", settings.tensorboard_dir.parent, "another --storage"),
    )
    for what, folder, instead in folders:
        for path in (folder, *folder.parents):
            if path.exists():
                if not path.is_dir():
                    raise LaunchError(
                        f"the {what} {folder} cannot be made: {path} is a file, not a folder; move it away or pass "
                        f"{instead}; nothing was started"
                    )
                break


def check_device_here(device: str | None) -> None:
    """Refuse ``--device cuda`` on a machine where torch sees no CUDA device (before any trial is claimed).

    Raises:
        LaunchError: `device` is ``cuda`` and :func:`torch.cuda.is_available` is False.
    """
    if device != "cuda":
        return
    import torch  # lazy: torch (only to look for a GPU)

    if not torch.cuda.is_available():
        raise LaunchError(
            "--device cuda but no CUDA device is visible here (torch.cuda.is_available() is False; "
            "CUDA_VISIBLE_DEVICES and --gpus pick among the GPUs); use --device auto or cpu; nothing was started"
        )


MIN_TRIAL_BYTES = 2**20
"""The least free space `launch` asks for in the checkpoint root when no trial folder shows a trial's size yet."""


def check_free_space(settings: WorkerSettings) -> int:
    """Refuse to start trials when the checkpoint root has less free space than one trial's checkpoints.

    One trial's size is that of the largest ``trial_<n>/`` folder of the study so far (last.pt, best.pt and
    model.pt), at least :data:`MIN_TRIAL_BYTES`: a first launch cannot know the model's size without building it.

    Returns:
        The bytes one trial is taken to need.

    Raises:
        LaunchError: ``disk-full: FOLDER has N MiB free; one trial's checkpoints need about M MiB ...``.
    """
    root = settings.checkpoint_root
    study_dir = root / settings.study_name
    sizes = [MIN_TRIAL_BYTES]
    if study_dir.is_dir():
        for trial_dir in study_dir.glob("trial_*"):
            sizes.append(sum(f.stat().st_size for f in trial_dir.rglob("*") if f.is_file()))
    need = max(sizes)
    free = free_bytes(root)
    if free < need:
        raise LaunchError(
            f"{DISK_FULL}: {root} has {free / 2**20:.1f} MiB free; one trial's checkpoints need about "
            f"{need / 2**20:.1f} MiB; free space there or pass --checkpoints DIR; nothing was started"
        )
    return need
