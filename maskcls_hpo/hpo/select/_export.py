"""`export`: the best COMPLETE trial (or a chosen one, or the top K) as a training-config file.

The file holds the full training config (sweep base + the trial's params) under `config`, plus the study,
trial number, value (val macro F1), accuracy, versions and data fingerprint. Only plain YAML/JSON types are
written (no numpy scalars), and `maskcls-hpo train --config FILE` accepts the file unchanged.

Only COMPLETE trials are candidates: Optuna also stores a value on PRUNED trials (their last reported F1),
which may be higher than every complete trial's value but was never trained to the end (problem C4). Asking
for such a trial by number (`--trial N`) is refused unless forced.

The paths of the exported config (`data_dir`, `cache_dir`, a `corrections` CSV, a `pretrained` weights
file) are absolute, so the file trains from any folder: a relative path is resolved against the folder the
sweep was launched in, which the study records (user attr `dataset`: `launch_dir`, or inferred from the
absolute `data_dir` it holds), else against the current folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo._util import check_output_file, check_path_name, check_whole_number, path_under
from maskcls_hpo.config import config_from_mapping, save_config
from maskcls_hpo.errors import ExportError, PredictError
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.select._ledger import study_ledger
from maskcls_hpo.hpo.select._ranking import MAX_TOP, Ranking, selection_ranking
from maskcls_hpo.hpo.store import mask_password, open_study, ranked_complete_trials, state_counts_text, trial_by_number
from maskcls_hpo.hpo.workers import MAX_TRIALS
from maskcls_hpo.versions import package_versions


def _plain(value: Any) -> Any:
    """Recursively convert to native JSON types (numpy scalars -> int/float, tuples -> lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _plain(value.item())
    if isinstance(value, str):
        return str(value)  # str subclasses (e.g. torch's TorchVersion) are not plain YAML
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return mask_password(str(value))


def _versions() -> dict[str, str]:
    """The version stamp (from the installed packages' metadata: torch and timm are not imported)."""
    v = package_versions()
    return {k: v[k] for k in ("maskcls_hpo", "optuna", "torch", "timm", "scikit_learn", "python")}


PATH_KEYS = ("data_dir", "cache_dir", "corrections", "pretrained")
"""Config keys that may hold a file or folder path (made absolute by :func:`absolute_config_paths`)."""


def launch_dir_of(study: optuna.Study, config: dict[str, Any] | None = None) -> Path | None:
    """The folder the sweep was launched in, from the study's `dataset` user attr, or None when unknown.

    `launch_dir` when recorded; else, when the recorded absolute `data_dir` ends with the trial config's
    relative `data_dir` (e.g. ``/work/x/data/demo`` and ``data/demo``), the part before it (``/work/x``).
    """
    dataset = study.user_attrs.get(StudyAttrs.DATASET) or {}
    if not isinstance(dataset, dict):
        return None
    if dataset.get("launch_dir"):
        return Path(dataset["launch_dir"])
    recorded, rel = dataset.get("data_dir"), (config or {}).get("data_dir")
    if not recorded or not rel or not Path(recorded).is_absolute() or Path(rel).is_absolute():
        return None
    rel_parts = PurePath(os.path.normpath(rel)).parts
    rec_parts = Path(recorded).parts
    if ".." in rel_parts or rel_parts == (".",) or len(rel_parts) >= len(rec_parts):
        return None
    if tuple(rec_parts[-len(rel_parts) :]) != rel_parts:
        return None
    return Path(*rec_parts[: -len(rel_parts)])


def absolute_config_paths(config: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """A copy of `config` whose :data:`PATH_KEYS` are absolute, relative ones joined to `base` (default: cwd).

    `corrections: known` and `pretrained: true/false` are not paths and stay as they are; a path that is
    already absolute is kept.
    """
    root = Path(base) if base is not None else Path.cwd()
    out = dict(config)
    for key in PATH_KEYS:
        value = out.get(key)
        if not isinstance(value, str) or not value or (key == "corrections" and value == "known"):
            continue
        path = Path(value).expanduser()
        out[key] = os.path.normpath(path if path.is_absolute() else root / path)
    return out


def trial_record(study: optuna.Study, trial: FrozenTrial, rank: int | None = None) -> dict[str, Any]:
    """The export document of one trial (plain types only).

    Raises:
        ExportError: the trial carries no stored config (it never started training).
    """
    config = trial.user_attrs.get(TrialAttrs.CONFIG)
    if not isinstance(config, dict):
        raise ExportError(
            f"trial {trial.number} of study '{study.study_name}' has no stored config (it failed before training "
            "started, e.g. in the sweep's suggest()); export another trial, or leave out --trial for the best"
        )
    config = config_from_mapping(config, source=f"study '{study.study_name}' trial {trial.number}").to_dict()
    config = absolute_config_paths(config, launch_dir_of(study, config))
    record = {
        "study": study.study_name,
        "trial": trial.number,
        "rank": rank,
        "state": trial.state.name,
        "value": trial.value,
        "metric": "val_macro_f1",
        "accuracy": trial.user_attrs.get(TrialAttrs.ACCURACY),
        "task_f1": trial.user_attrs.get(TrialAttrs.TASK_F1),
        "best_epoch": trial.user_attrs.get(TrialAttrs.BEST_EPOCH),
        "val_f1_interval": _interval_of(trial),
        "params": trial.params,
        "data_fingerprint": study.user_attrs.get("data_fingerprint"),
        "sweep_file": study.user_attrs.get("sweep_file"),
        "versions": _versions(),
        "config": config,
    }
    if rank is None:
        record.pop("rank")
    return _plain(record)


def _interval_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The value's 95% person-bootstrap interval from the trial's user attrs (None for trials without one)."""
    a = trial.user_attrs
    if a.get(TrialAttrs.VAL_F1_CI_LOW) is None:
        return None
    return {
        "low": a.get(TrialAttrs.VAL_F1_CI_LOW),
        "high": a.get(TrialAttrs.VAL_F1_CI_HIGH),
        "bootstrap_sd": a.get(TrialAttrs.VAL_F1_BOOTSTRAP_SD),
        "resamples": a.get(TrialAttrs.BOOTSTRAP_RESAMPLES),
        "val_persons": a.get(TrialAttrs.VAL_PERSONS),
    }


def export_trials(
    study: optuna.Study,
    out: str | Path,
    trial_number: int | None = None,
    top: int | None = None,
    fmt: str | None = None,
    single_split: bool = False,
    force: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the export file(s) and return their paths.

    The best trial is the confirmed winner when a finished confirm study is linked to `study`
    (:func:`maskcls_hpo.hpo.select.selection_ranking`), else the best single-split value; each file says
    which ranking chose it (``ranking``) and, for a confirmed config, its fold results (``confirm``). When the
    winner does not beat the known-good trial beyond noise (paired person bootstrap on the same persons,
    :func:`maskcls_hpo.hpo.select.compare_known_good`), the known-good is exported and ``known_good`` says why.
    ``ledger`` is the compute the sweep, confirm and finalize spent (:func:`maskcls_hpo.hpo.select.study_ledger`).

    Args:
        trial_number: export this trial instead of the best; a trial that is not COMPLETE (PRUNED, FAIL,
            RUNNING: never trained to the end) is refused unless `force`, and then `on_warning` is told.
        top: export the best `top` COMPLETE trials to `<stem>-1<suffix>`, `<stem>-2<suffix>`, ...
        fmt: "yaml" or "json"; default from the suffix of `out` (YAML unless `.json`).
        single_split: rank by the single validation split even when a confirm study is finished.

    Raises:
        ExportError: no COMPLETE trial (message counts the states), unknown trial number, a trial that is
            not COMPLETE without `force`, bad format, an `out` that is empty or a folder, has no .yaml/.yml/.json
            suffix, or whose folder does not exist, `trial_number` or `top` out of range (nothing written).
    """
    out = _export_path(check_output_file(out, "--out", ExportError), fmt)
    if trial_number is not None:
        check_whole_number(trial_number, "--trial", 0, MAX_TRIALS, ExportError)
    if top is not None:
        check_whole_number(top, "--top", 1, MAX_TOP, ExportError)
    if trial_number is not None:
        docs = [(out, _chosen_record(study, trial_number, force, on_warning))]
    else:
        docs = _ranked_docs(study, out, top, single_split)
    written = []
    for path, doc in docs:
        json.dumps(doc)  # proves plain JSON types before anything is written
        written.append(save_config(doc, path))
    return written


def _export_path(out: Path, fmt: str | None) -> Path:
    """`out` with the suffix of the format (`fmt`, else from the suffix: YAML unless `.json`), checked.

    Raises:
        ExportError: bad format, an `out` that is a folder, has no .yaml/.yml/.json suffix, or whose folder does
            not exist.
    """
    fmt = (fmt or ("json" if out.suffix.lower() == ".json" else "yaml")).lower()
    if fmt not in ("yaml", "json"):
        raise ExportError(f"--format must be yaml or json, got {fmt!r}")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name in it, e.g. --out {out / 'best.yaml'}")
    if out.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ExportError(f"--out {out}: give a file name ending in .yaml, .yml or .json (e.g. {out}.yaml)")
    parent = out.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ExportError(f"--out {out}: {parent} {what}; create the folder first or pick another --out")
    suffix = ".json" if fmt == "json" else (out.suffix if out.suffix.lower() in (".yaml", ".yml") else ".yaml")
    return out.with_suffix(suffix)


def _chosen_record(
    study: optuna.Study, trial_number: int, force: bool, on_warning: Callable[[str], None] | None
) -> dict[str, Any]:
    """The record of trial `trial_number` (`--trial N`); one that is not COMPLETE only with `force` (and a warning).

    Raises:
        ExportError: no such trial; not COMPLETE without `force`.
    """
    found = trial_by_number(study, trial_number)
    if found is None:
        raise ExportError(f"study '{study.study_name}' has no trial {trial_number}")
    if found.state == TrialState.COMPLETE:
        return trial_record(study, found)
    why = found.user_attrs.get(TrialAttrs.REASON)
    shown = f"{found.state.name}{f' ({why})' if why else ''}"
    value = f"; its value {found.value:.4f} is the last reported val macro F1" if found.value is not None else ""
    if not force:
        raise ExportError(
            f"trial {trial_number} of study '{study.study_name}' is {shown}: it was not trained to the end"
            f"{value}; pass --force to export it anyway, or leave out --trial for the best COMPLETE trial"
        )
    record = trial_record(study, found)  # a trial that never trained has no config: refused, no warning
    if on_warning is not None:
        on_warning(f"trial {trial_number} is {shown}, not COMPLETE: exported because of --force")
    return record


def _ranked_docs(
    study: optuna.Study, out: Path, top: int | None, single_split: bool
) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of the best trial (`top` None: written to `out`) or of the best `top` trials (to
    ``<stem>-1<suffix>``, ...), by :func:`~maskcls_hpo.hpo.select.selection_ranking`.

    Raises:
        ExportError: `top` below 1; no COMPLETE trial (the message counts the states).
    """
    if top is not None and top < 1:
        raise ExportError(f"--top must be at least 1, got {top}")
    ranking = selection_ranking(study, single_split=single_split, limit=1 if top is None else top, known_good=True)
    ranked = ranking.trials
    if not ranked:
        raise ExportError(f"no COMPLETE trial in study '{study.study_name}' ({state_counts_text(study)})")
    if top is None:
        return [(out, _ranked_record(study, ranked[0], ranking, None))]
    return [
        (out.with_name(f"{out.stem}-{i + 1}{out.suffix}"), _ranked_record(study, t, ranking, i + 1))
        for i, t in enumerate(ranked[:top])
    ]


def _ranked_record(study: optuna.Study, trial: FrozenTrial, ranking: Ranking, rank: int | None) -> dict[str, Any]:
    """`trial_record` plus the ranking that chose the trial and, when confirmed, its fold results."""
    record = trial_record(study, trial, rank=rank)
    record["ranking"] = ranking.label
    if ranking.reference is not None:
        record["known_good"] = _plain(ranking.reference.as_dict())
    record["ledger"] = _plain(study_ledger(study))
    if ranking.confirm is not None:
        row = next((r for r in ranking.confirm.rows if r.source_trial == trial.number), None)
        if row is not None:
            record["confirm"] = _plain(
                {
                    "study": ranking.confirm.study_name,
                    "folds": ranking.confirm.folds,
                    "seeds": ranking.confirm.seeds,
                    "mean": row.mean,
                    "standard_error": row.se,
                    "fold_values": {str(k): v for k, v in row.fold_values.items()},
                }
            )
    return record


def study_checkpoints(study: optuna.Study, top: int, checkpoints: str | Path = "storage/checkpoints") -> list[Path]:
    """The `best.pt` of the top `top` COMPLETE trials of an Optuna study, best first.

    Trials are ranked by `export.ranked_complete_trials` (value, then trial number); each trial's checkpoint
    is `<checkpoints>/<study name>/trial_<number:05d>/best.pt` (`objective.checkpoint_dir`).

    Raises:
        PredictError: top < 1, fewer COMPLETE trials than `top` (with the study's state counts), or a
            trial's best.pt missing (the path named; pass the workers' --checkpoints folder).
    """
    check_whole_number(top, "--top", 1, MAX_TOP, PredictError)
    ranked = ranked_complete_trials(study, limit=top)
    if len(ranked) < top:
        raise PredictError(
            f"study '{study.study_name}' has {len(ranked)} COMPLETE trial(s) with a value, --top asks for {top} "
            f"({state_counts_text(study)})"
        )
    check_path_name(study.study_name, "--study", PredictError)
    root = path_under(checkpoints, study.study_name, error=PredictError)
    found = []
    for t in ranked[:top]:
        path = checkpoint_dir(root, t.number) / "best.pt"
        if not path.is_file():
            raise PredictError(
                f"{path}: best.pt of trial {t.number} (value {t.value:.4f}) not found; pass the checkpoint root "
                f"the workers used with --checkpoints"
            )
        found.append(path)
    return found


def export_best(
    out: str | Path = "best.yaml",
    *,
    storage: str | Path | None = None,
    study_name: str | None = None,
    trial_number: int | None = None,
    top: int | None = None,
    fmt: str | None = None,
    password_file: str | None = None,
    force: bool = False,
) -> list[Path]:
    """Write the best COMPLETE trial (or trial `trial_number`, or the best `top`) as a training config.

    A `trial_number` that is not COMPLETE is refused unless `force` (see :func:`export_trials`).

    The file holds the full training config (sweep base + params) plus study, trial number, value, accuracy,
    versions and data fingerprint, in plain YAML/JSON types; ``train(load_config(path))`` accepts it.

    Returns:
        the paths written.

    Raises:
        StorageError: see :func:`open_study`. ExportError: no COMPLETE trial, unknown trial, bad format.
    """
    study = open_study(storage, study_name, password_file=password_file)
    return export_trials(study, Path(out), trial_number=trial_number, top=top, fmt=fmt, force=force)
