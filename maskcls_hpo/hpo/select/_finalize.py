"""`finalize`: from a study to a submission file in one step.

Takes the winner of study S (the confirmed winner when a finished linked confirm study exists, else the
best COMPLETE trial: :func:`maskcls_hpo.hpo.select.selection_ranking`), retrains it on *all* persons
(``full_data``) with N seeds, or the top K configs with N seeds each, ensembles the models
(:func:`maskcls_hpo.predict.ensemble`, optionally with test-time flips), predicts the eval set and writes
the submission. The models and their configs are kept under ``<storage folder>/finalize/<study>/``
(``trial_<n>-seed_<s>/`` with ``model.pt``, ``config.yaml``, ``metrics.json``) with a ``finalize.json``
that says what was trained, by which ranking, and what was written. A model whose folder already holds a
``model.pt`` trained from the same config is reused, so running `finalize` again after a crash only
trains what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from maskcls_hpo._util import (
    atomic_write_text,
    check_output_file,
    check_path_name,
    check_whole_number,
    path_under,
)
from maskcls_hpo.config import TrainConfig, config_from_mapping, load_config, save_config
from maskcls_hpo.data import load_eval
from maskcls_hpo.errors import ConfirmError
from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.select._ensemble import EnsembleChoice, choose_ensemble
from maskcls_hpo.hpo.select._ledger import record_final_model
from maskcls_hpo.hpo.select._ranking import MAX_TOP, Ranking, selection_ranking
from maskcls_hpo.hpo.store import open_study, state_counts_text, storage_folder, trial_by_number
from maskcls_hpo.hpo.workers import RunOptions, run_options

if TYPE_CHECKING:
    from maskcls_hpo.predict import Prediction

log = logging.getLogger(__name__)

MAX_SEEDS = 1000
"""The most seeds per config (``--seeds``) finalize trains."""


@dataclass
class FinalModel:
    """One retrained model: the source trial, its seed, folder, config; `reused` when it was already there."""

    trial: int
    seed: int
    folder: Path
    config: TrainConfig
    reused: bool = False
    seconds: float = 0.0
    train_images: int = 0
    device: str = "cpu"


@dataclass
class FinalizeResult:
    """What :func:`finalize_study` did.

    Attributes:
        study_name: the source study; ranking: the ranking's label (``confirmed on 5 folds (...)`` or
            ``single validation split``); models: the retrained models (folders kept).
        out: the submission written; prediction: the :class:`maskcls_hpo.predict.Prediction`.
        epochs: epochs trained by this call (reused models count 0); seconds: wall time of this call.
        folder: ``<storage folder>/finalize/<study>``; manifest: its ``finalize.json``.
    """

    study_name: str
    ranking: str
    models: list[FinalModel]
    out: Path
    prediction: Prediction
    epochs: int
    seconds: float
    folder: Path
    manifest: Path
    tta: bool = False

    def summary_lines(self) -> list[str]:
        """What `finalize` prints at the end: the submission, the models (trained / reused), the ranking used."""
        trained = sum(not m.reused for m in self.models)
        return [
            f"wrote {self.out}: {len(self.prediction.labels)} rows from {len(self.models)} model(s) ({trained} "
            f"trained, {len(self.models) - trained} reused; tta {'on' if self.tta else 'off'}); ranking: "
            f"{self.ranking}; models and configs in {self.folder}"
        ]


def final_configs(
    study: optuna.Study,
    seeds: int = 1,
    top: int = 1,
    single_split: bool = False,
    data_dir: str | Path | None = None,
    storage_url: str | None = None,
) -> tuple[Ranking, list[tuple[int, TrainConfig]]]:
    """The configs `finalize` trains: ``(ranking, [(trial number, TrainConfig), ...])``.

    Each of the `top` best trials (by :func:`~maskcls_hpo.hpo.select.selection_ranking`) with seeds
    ``seed, seed + 1, ..., seed + seeds - 1``, ``full_data`` on, fold settings off. The known-good trial is
    first when the winner does not beat it beyond noise (:func:`~maskcls_hpo.hpo.select.compare_known_good`).

    Raises:
        ConfirmError: seeds or top < 1, fewer COMPLETE trials than `top`, a trial without a stored config.
    """
    check_whole_number(seeds, "--seeds", 1, MAX_SEEDS, ConfirmError)
    check_whole_number(top, "--top", 1, MAX_TOP, ConfirmError)
    ranking = selection_ranking(study, single_split=single_split, limit=top, known_good=True, storage_url=storage_url)
    if len(ranking.trials) < top:
        raise ConfirmError(
            f"study '{study.study_name}' has {len(ranking.trials)} COMPLETE trial(s), --top asks for {top} "
            f"({state_counts_text(study)})"
        )
    return ranking, configs_of(study, ranking.trials[:top], seeds, data_dir)


def configs_of(
    study: optuna.Study, trials: list[FrozenTrial], seeds: int, data_dir: str | Path | None = None
) -> list[tuple[int, TrainConfig]]:
    """``[(trial number, TrainConfig)]``: each of `trials` with seeds ``seed .. seed + seeds - 1``, ``full_data``
    on, fold settings off (`data_dir` replaces the stored one when given).

    Raises:
        ConfirmError: a trial without a stored config.
    """
    planned = []
    for t in trials:
        stored = t.user_attrs.get(TrialAttrs.CONFIG)
        if not isinstance(stored, dict):
            raise ConfirmError(f"trial {t.number} of study '{study.study_name}' has no stored config")
        base = config_from_mapping(stored, source=f"study '{study.study_name}' trial {t.number}")
        for i in range(seeds):
            update: dict[str, Any] = {"full_data": True, "folds": None, "fold": None, "seed": base.seed + i}
            if data_dir is not None:
                update["data_dir"] = str(data_dir)
            data = {**base.to_dict(), **update}
            planned.append((t.number, config_from_mapping(data, source=f"study '{study.study_name}' trial {t.number}")))
    return planned


def _reusable(folder: Path, config: TrainConfig) -> bool:
    if not (folder / "model.pt").is_file() or not (folder / "config.yaml").is_file():
        return False
    try:
        return load_config(folder / "config.yaml").to_dict() == config.to_dict()
    except Exception:  # noqa: BLE001 - an unreadable config is simply retrained
        return False


def finalize_study(
    study: optuna.Study,
    out: str | Path,
    *,
    storage_url: str,
    seeds: int = 1,
    top: int = 1,
    tta: bool = False,
    single_split: bool = False,
    options: RunOptions | None = None,
    folder: str | Path | None = None,
    on_message: Callable[[str], None] | None = None,
    ensemble_selection: bool = True,
) -> FinalizeResult:
    """Retrain the winner (or the top `top` configs) with `seeds` seeds on all persons, ensemble, write `out`.

    Args:
        study: the source study; storage_url: its storage (the models go under its folder).
        out: the submission CSV (``ImageID,ans``), written last and atomically.
        single_split: rank by the single validation split even when a confirm study is finished.
        options: ``data_dir`` (dataset root with ``train/`` and ``eval/``; default the winner config's),
            ``device`` (default auto) and further config ``overrides`` for the retrained models.
        folder: where the models go (default ``storage_folder(storage_url, "finalize") / <study>``).
        ensemble_selection: with a confirmed ranking and `top` 1, choose a mixture of the confirmed configs by
            ensemble selection on confirm's out-of-fold predictions and use it (each member with `seeds` seeds,
            weighted by its count) only when its cross-fitted gain over the winner's seed ensemble lies above 0
            (:func:`~maskcls_hpo.hpo.select.choose_ensemble`); it says which it used and why.

    Returns:
        FinalizeResult.

    Raises:
        DataError: no eval set (``DATA_DIR/eval/info.csv``) or a broken one, before anything is trained or
            written. ConfirmError: see :func:`final_configs`. PredictError: a model that cannot be loaded.
    """
    say = on_message or (lambda _line: None)
    opts = options or RunOptions()
    out = check_output_file(out, "--out", ConfirmError)  # before minutes of training
    started = time.monotonic()
    ranking, planned = final_configs(
        study, seeds=seeds, top=top, single_split=single_split, data_dir=opts.data_dir, storage_url=storage_url
    )
    extra = {k: v for k, v in opts.config_overrides().items() if k != "data_dir"}
    planned = [(n, config_from_mapping({**c.to_dict(), **extra}, source="finalize")) for n, c in planned]
    eval_dir = Path(planned[0][1].data_dir)
    load_eval(eval_dir)  # no eval set: refused here, before anything is trained or written
    if folder is not None:
        root = Path(folder)
    else:
        check_path_name(study.study_name, "--study", ConfirmError)
        root = path_under(storage_folder(storage_url, "finalize"), study.study_name, error=ConfirmError)
    say(f"finalize '{study.study_name}' by ranking: {ranking.label}")
    if ranking.reference is not None:
        say(ranking.reference.message)
    choice = choose_ensemble(study, ranking, storage_url) if ensemble_selection and top == 1 else None
    if choice is not None:
        say(choice.message)
        if choice.used:
            planned = configs_of(study, _member_trials(study, choice.members), seeds, opts.data_dir)
            planned = [(n, config_from_mapping({**c.to_dict(), **extra}, source="finalize")) for n, c in planned]
    models = [_final_model(number, config, root, say) for number, config in planned]
    for m in models:
        if not m.reused:  # the compute ledger's finalize stage (a reused model was counted when it was trained)
            epochs = m.config.epochs
            record_final_model(study, m.folder.name, epochs, epochs * m.train_images, m.seconds, m.device)
    weights = choice.members if choice is not None and choice.used else {}
    prediction = _predict(models, eval_dir, out, tta, opts.device or "auto", planned[0][1].cache_dir, weights)
    manifest = _write_manifest(root, study.study_name, ranking, models, prediction, eval_dir, out, tta, choice)
    return FinalizeResult(
        study_name=study.study_name,
        ranking=ranking.label,
        models=models,
        out=Path(out),
        prediction=prediction,
        epochs=sum(m.config.epochs for m in models if not m.reused),
        seconds=time.monotonic() - started,
        folder=root,
        manifest=manifest,
        tta=tta,
    )


def _final_model(number: int, config: TrainConfig, root: Path, say: Callable[[str], None]) -> FinalModel:
    """Train one model of the ensemble on all persons (or reuse the one trained from the same config)."""
    from maskcls_hpo.train import train  # lazy: torch

    target = root / f"trial_{number:05d}-seed_{config.seed}"
    model = FinalModel(number, config.seed, target, config)
    if _reusable(target, config):
        model.reused = True
        say(f"trial {number} seed {config.seed}: reusing {target / 'model.pt'}")
        return model
    say(f"trial {number} seed {config.seed}: training {config.epochs} epoch(s) on all persons -> {target}")
    t0 = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").unlink(missing_ok=True)  # written after the model: marks it complete
    result = train(config, out_dir=target)
    save_config(config, target / "config.yaml")
    model.seconds = time.monotonic() - t0
    model.train_images, model.device = int(result.train_images), str(result.device)
    return model


def _member_trials(study: optuna.Study, members: dict[int, int]) -> list[FrozenTrial]:
    """The source trials of a mixture's members, in the mixture's order."""
    found = [trial_by_number(study, n) for n in members]
    return [t for t in found if t is not None]


def _predict(
    models: list[FinalModel],
    eval_dir: Path,
    out: str | Path,
    tta: bool,
    device: str,
    cache_dir: str,
    weights: dict[int, int] | None = None,
) -> Prediction:
    """The ensemble's prediction of the eval set, written to `out` (:func:`maskcls_hpo.predict.predict`); a model of
    source trial n counts ``weights[n]`` times in the mean (an ensemble selection's counts; default once)."""
    from maskcls_hpo.predict import predict  # lazy: torch

    paths = [m.folder / "model.pt" for m in models for _ in range((weights or {}).get(m.trial, 1))]
    return predict(paths, eval_dir, out=out, tta=tta, device=device, cache_dir=cache_dir)


def _write_manifest(
    root: Path,
    study_name: str,
    ranking: Ranking,
    models: list[FinalModel],
    prediction: Prediction,
    eval_dir: Path,
    out: str | Path,
    tta: bool,
    choice: EnsembleChoice | None = None,
) -> Path:
    """``<root>/finalize.json``: what was trained, by which ranking, and what was written."""
    manifest = root / "finalize.json"
    doc = {
        "study": study_name,
        "ranking": ranking.label,
        "confirmed": ranking.confirmed,
        "models": [
            {"trial": m.trial, "seed": m.seed, "model": str(m.folder / "model.pt"), "reused": m.reused} for m in models
        ],
        "epochs_per_model": [m.config.epochs for m in models],
        "tta": tta,
        "rule": prediction.rule,
        "data_dir": str(eval_dir),
        "submission": str(Path(out).resolve()),
        "rows": int(len(prediction.labels)),
        "known_good": ranking.reference.as_dict() if ranking.reference is not None else None,
        "ensemble_selection": choice.as_dict() if choice is not None else None,
    }
    return atomic_write_text(manifest, json.dumps(doc, indent=2) + "\n")


def finalize(
    study_name: str,
    out: str | Path = "submission.csv",
    *,
    seeds: int = 1,
    top: int = 1,
    tta: bool = False,
    single_split: bool = False,
    options: RunOptions | None = None,
    on_message: Callable[[str], None] | None = None,
    ensemble_selection: bool = True,
    **flags: Any,
) -> FinalizeResult:
    """Retrain the winner (confirmed, else best) on all persons with `seeds` seeds (or the `top` configs),
    ensemble them, predict the eval set and write the submission `out` (``maskcls_hpo.finalize``).

    Args: as :func:`finalize_study`; `options` (or its `flags`: ``storage=``, ``data_dir=``, ``device=``, ...)
    name the storage (a URL or SQLite path, default as every verb) and the data.

    Returns:
        FinalizeResult (models kept under ``<storage folder>/finalize/<study>``).

    Raises:
        DataError: no eval set. ConfirmError / StorageError / LaunchError: see :func:`finalize_study`.

    Example::

        import maskcls_hpo as m
        m.finalize("smoke", "submission.csv", storage="storage/nb.db", seeds=3, tta=True)
    """
    opts = run_options(options, flags)
    out = check_output_file(out, "--out", ConfirmError)  # before minutes of training
    check_whole_number(seeds, "--seeds", 1, MAX_SEEDS, ConfirmError)
    check_whole_number(top, "--top", 1, MAX_TOP, ConfirmError)
    url = opts.resolve_storage(must_exist=True).url
    pw = str(opts.password_file) if opts.password_file is not None else None
    study = open_study(url, study_name, password_file=pw)
    return finalize_study(
        study,
        out,
        storage_url=url,
        seeds=seeds,
        top=top,
        tta=tta,
        single_split=single_split,
        options=opts,
        on_message=on_message,
        ensemble_selection=ensemble_selection,
    )
