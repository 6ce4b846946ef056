"""`confirm`: re-train the K best COMPLETE configs of a study on F person-grouped folds (x R seeds).

One validation split of a few hundred persons cannot tell the top configs of a sweep apart (README,
"Trustworthy winner"). `confirm` re-trains each of the K best COMPLETE configs of study S on every fold of
a person-grouped, gender x age band stratified K-fold (:func:`maskcls_hpo.data.assign_folds`, one fold
assignment for all configs, so their fold scores are paired) and ranks the configs by their mean val macro
F1 over the folds.

The runs are the trials of a *linked study* in the same storage (default name ``S-confirm``), queued with
fixed params ``source_trial`` (the trial number in S), ``fold`` (0..F-1) and ``seed_index`` (0..R-1). The
ordinary worker loop (:func:`maskcls_hpo.hpo.worker.run_worker` with ``WorkerSettings(kind="confirm")``)
runs them, so a confirm gets what a sweep gets: K*F*R finished trials exactly, parallel workers and GPUs,
heartbeats, a killed run resumed from its last checkpoint, artifacts and the dashboard. A run that fails
is queued again with the same params (a sweep would sample a new config instead). The study's user attrs
link it back to S and record K, F, R, the source trial numbers and their single-split values.

Run ``seed_index`` r of source trial n trains the stored config of trial n with ``seed + r``,
``folds=F``, ``fold=f`` and ``split_seed`` fixed (the source config's split seed), no pruning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.config import TrainConfig, config_from_mapping
from maskcls_hpo.errors import ConfirmError
from maskcls_hpo.hpo._optuna import storage_of, study_id_of, trial_id_of
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.settings import WorkerSettings
from maskcls_hpo.hpo.signals import Interrupted, stop_signals
from maskcls_hpo.hpo.storage import HeartbeatSettings, display_url, open_storage, resolve_storage_url
from maskcls_hpo.hpo.trials import StudyCounts, count_trials
from maskcls_hpo.metrics import corrected_fold_interval

__all__ = [
    "confirm",
    "ConfirmAttrs",
    "ConfirmPlan",
    "ConfirmRow",
    "ConfirmSummary",
    "ConfirmResult",
    "Ranking",
    "confirm_study_name",
    "load_plan",
    "requeue_failed",
    "prepare_confirm",
    "run_confirm",
    "summarize_confirm",
    "find_confirm_study",
    "selection_ranking",
]

log = logging.getLogger("maskcls_hpo.confirm")

PARAM_SOURCE = "source_trial"
PARAM_FOLD = "fold"
PARAM_SEED = "seed_index"
KIND_CONFIRM = "confirm"


class ConfirmAttrs:
    """Study user attrs of a confirm study (besides ``n_trials``, ``data_fingerprint``, ``dataset``)."""

    KIND = "kind"  # "confirm"
    SOURCE = "confirm_of"  # the source study's name
    TOP = "top"
    FOLDS = "folds"
    SEEDS = "seeds"
    SOURCE_TRIALS = "source_trials"  # trial numbers in the source study, best first (single-split ranking)
    SOURCE_VALUES = "source_values"  # their single-split val macro F1, same order
    SPLIT_SEED = "split_seed"  # seed of the fold assignment


def confirm_study_name(source: str) -> str:
    """The default name of the confirm study of `source`: ``<source>-confirm``."""
    return f"{source}-confirm"


# --- the plan: what the worker loop runs ---------------------------------------------------------


@dataclass
class ConfirmPlan:
    """The fold runs of one confirm study; stands in for a :class:`~maskcls_hpo.hpo.sweep.Sweep` in the worker.

    ``make_objective`` calls :meth:`suggest` (which reads the trial's fixed params) and :meth:`build_config`;
    ``run_worker`` calls :meth:`make_sampler` and :meth:`make_pruner`.

    Attributes:
        study_name, source_study: the confirm study and the study whose configs it re-trains.
        sources: source trial numbers, best first; configs: their stored configs (plain dicts) by number.
        folds, seeds: F and R; split_seed: the fold assignment's seed.
    """

    study_name: str
    source_study: str
    sources: list[int]
    configs: dict[int, dict[str, Any]]
    folds: int
    seeds: int
    split_seed: int
    path: Path = field(default_factory=lambda: Path("<confirm>"))

    def runs(self) -> list[dict[str, int]]:
        """Every run's params, in queue order: by source trial (best first), then fold, then seed index."""
        return [
            {PARAM_SOURCE: n, PARAM_FOLD: f, PARAM_SEED: r}
            for n in self.sources
            for f in range(self.folds)
            for r in range(self.seeds)
        ]

    def suggest(self, trial: optuna.Trial) -> dict[str, int]:
        """The trial's fixed params ``{source_trial, fold, seed_index}``.

        Raises:
            ConfirmError: the trial was not queued by `confirm` (no fixed params); the first run without a
                trial is queued, so the next trial runs it.
        """
        frozen = storage_of(trial.study).get_trial(trial_id_of(trial))
        if not frozen.params and "fixed_params" not in frozen.system_attrs:
            missing = missing_runs(trial.study, self)
            if missing:
                trial.study.enqueue_trial(missing[0])
            raise ConfirmError(f"trial {trial.number} was not queued by confirm; queued the runs still missing")
        return {
            PARAM_SOURCE: trial.suggest_categorical(PARAM_SOURCE, self.sources),
            PARAM_FOLD: trial.suggest_int(PARAM_FOLD, 0, self.folds - 1),
            PARAM_SEED: trial.suggest_int(PARAM_SEED, 0, self.seeds - 1),
        }

    def build_config(self, params: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The config of one fold run: the source trial's config + fold, seed and split seed + `overrides`.

        Raises:
            ConfirmError: the source trial has no stored config; ConfigError: a bad override.
        """
        number = int(params[PARAM_SOURCE])
        base = self.configs.get(number)
        if base is None:
            raise ConfirmError(f"trial {number} of study '{self.source_study}' has no stored config")
        data = {
            **base,
            "full_data": False,
            "folds": self.folds,
            "fold": int(params[PARAM_FOLD]),
            "split_seed": self.split_seed,
            "seed": int(base.get("seed", 42)) + int(params[PARAM_SEED]),
            **(overrides or {}),
        }
        return config_from_mapping(data, source=f"study '{self.source_study}' trial {number} (confirm run)")

    def make_sampler(self, worker_index: int = 0, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
        """Unused for queued runs (their params are fixed); a seeded random sampler."""
        return optuna.samplers.RandomSampler(seed=worker_index)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """No pruning: every fold run trains all its epochs."""
        return optuna.pruners.NopPruner()


def _source_configs(source: optuna.Study, numbers: Sequence[int]) -> dict[int, dict[str, Any]]:
    by_number = {t.number: t for t in source.get_trials(deepcopy=False)}
    configs = {}
    for n in numbers:
        t = by_number.get(n)
        config = t.user_attrs.get(TrialAttrs.CONFIG) if t is not None else None
        if not isinstance(config, dict):
            raise ConfirmError(f"trial {n} of study '{source.study_name}' has no stored config; it cannot be confirmed")
        configs[n] = dict(config)
    return configs


def load_plan(storage: optuna.storages.BaseStorage, study_name: str) -> ConfirmPlan:
    """The :class:`ConfirmPlan` of confirm study `study_name`, from its user attrs and its source study.

    Raises:
        ConfirmError: the study is not a confirm study, or its source study / configs are gone.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    attrs = study.user_attrs
    if attrs.get(ConfirmAttrs.KIND) != KIND_CONFIRM:
        raise ConfirmError(f"study '{study_name}' is not a confirm study (made by `maskcls-hpo confirm`)")
    source_name = attrs[ConfirmAttrs.SOURCE]
    try:
        source = optuna.load_study(study_name=source_name, storage=storage)
    except KeyError:
        raise ConfirmError(f"confirm study '{study_name}': its source study '{source_name}' is gone") from None
    sources = [int(n) for n in attrs[ConfirmAttrs.SOURCE_TRIALS]]
    return ConfirmPlan(
        study_name=study_name,
        source_study=source_name,
        sources=sources,
        configs=_source_configs(source, sources),
        folds=int(attrs[ConfirmAttrs.FOLDS]),
        seeds=int(attrs[ConfirmAttrs.SEEDS]),
        split_seed=int(attrs[ConfirmAttrs.SPLIT_SEED]),
        path=Path(f"<confirm study {study_name}>"),
    )


def _run_key(params: dict[str, Any]) -> tuple[int, int, int] | None:
    try:
        return int(params[PARAM_SOURCE]), int(params[PARAM_FOLD]), int(params[PARAM_SEED])
    except (KeyError, TypeError, ValueError):
        return None


def _params_of(trial: FrozenTrial) -> dict[str, Any]:
    return trial.params or trial.system_attrs.get("fixed_params") or {}


def missing_runs(study: optuna.Study, plan: ConfirmPlan) -> list[dict[str, int]]:
    """Runs of `plan` with no trial that is COMPLETE, PRUNED, RUNNING or WAITING (to be queued)."""
    taken = set()
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
            key = _run_key(_params_of(t))
            if key is not None:
                taken.add(key)
    return [r for r in plan.runs() if _run_key(r) not in taken]


def requeue_failed(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """Wrap a confirm objective: a run that raises (and is still RUNNING here) is queued again, same params.

    The copy is queued before the worker marks the trial FAIL, so no other worker sees a free slot without a
    queued run. Pruned runs (out of memory, non-finite loss) are finished and not repeated; a run failed as
    stale by another process was already re-queued by Optuna's retry callback; Ctrl-C is handled by the worker.
    """

    def wrapped(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception:
            with contextlib.suppress(Exception):
                frozen = storage_of(trial.study).get_trial(trial_id_of(trial))
                params = _params_of(frozen)
                if frozen.state == TrialState.RUNNING and _run_key(params) is not None:
                    trial.study.enqueue_trial({k: int(v) for k, v in params.items()})
                    log.warning("confirm run %s (trial %d) failed; queued again", params, trial.number)
            raise

    return wrapped


# --- results -------------------------------------------------------------------------------------


@dataclass
class ConfirmRow:
    """One confirmed config.

    Attributes:
        source_trial: trial number in the source study; single_rank: its place (1 = best) in the source
            study's single-split ranking; single_value: its single-split val macro F1.
        fold_values: val macro F1 by fold (the mean over seeds when R > 1), folds with a COMPLETE run only.
        runs_done / runs_total: COMPLETE runs of this config / F * R.
        mean: mean of `fold_values` (NaN without any); se: its standard error, ``std(ddof=1) / sqrt(F)``
            (NaN with fewer than 2 folds). Folds share training persons, so this standard error is the usual
            K-fold one, which tends to be optimistic.
    """

    source_trial: int
    single_rank: int
    single_value: float
    fold_values: dict[int, float]
    runs_done: int
    runs_total: int
    mean: float
    se: float

    @property
    def complete(self) -> bool:
        """Every run of this config is COMPLETE."""
        return self.runs_done == self.runs_total


@dataclass
class ConfirmSummary:
    """What a confirm study says.

    Attributes:
        study_name, source_study, folds, seeds: as stored.
        rows: one per confirmed config, best mean first (complete configs before incomplete ones).
        counts: trials by state; n_trials: the budget (F * R * K); finished: the budget is reached.
        winner: the best complete row (None when no config has all its runs).
        runner_up_diff: winner minus runner-up, mean over the folds both have (None without a runner-up);
        runner_up_interval: a 95% interval of that paired difference, the t-interval corrected for folds that
            share training persons (:func:`maskcls_hpo.metrics.corrected_fold_interval`, Nadeau & Bengio 2003);
        within_noise: the interval contains 0.
    """

    study_name: str
    source_study: str
    folds: int
    seeds: int
    rows: list[ConfirmRow]
    counts: StudyCounts
    n_trials: int
    winner: ConfirmRow | None = None
    runner_up_diff: float | None = None
    runner_up_interval: tuple[float, float] | None = None
    within_noise: bool | None = None

    @property
    def finished(self) -> bool:
        return self.counts.finished >= self.n_trials

    @property
    def label(self) -> str:
        """``confirmed on 5 folds`` / ``confirmed on 3 folds x 2 seeds``."""
        seeds = f" x {self.seeds} seeds" if self.seeds > 1 else ""
        return f"confirmed on {self.folds} folds{seeds}"


def summarize_confirm(study: optuna.Study) -> ConfirmSummary:
    """Mean val macro F1 over folds, standard error and the winner of confirm study `study`.

    Raises:
        ConfirmError: `study` is not a confirm study.
    """
    attrs = study.user_attrs
    if attrs.get(ConfirmAttrs.KIND) != KIND_CONFIRM:
        raise ConfirmError(f"study '{study.study_name}' is not a confirm study (made by `maskcls-hpo confirm`)")
    folds, seeds = int(attrs[ConfirmAttrs.FOLDS]), int(attrs[ConfirmAttrs.SEEDS])
    sources = [int(n) for n in attrs[ConfirmAttrs.SOURCE_TRIALS]]
    values = [float(v) for v in attrs.get(ConfirmAttrs.SOURCE_VALUES, [math.nan] * len(sources))]
    runs: dict[int, dict[int, list[float]]] = {n: {} for n in sources}
    done = dict.fromkeys(sources, 0)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = _run_key(t.params)
        if key is None or key[0] not in runs or t.value is None or not math.isfinite(t.value):
            continue
        runs[key[0]].setdefault(key[1], []).append(float(t.value))
        done[key[0]] += 1
    rows = []
    for rank, (n, single) in enumerate(zip(sources, values, strict=True), start=1):
        by_fold = {f: float(np.mean(v)) for f, v in sorted(runs[n].items())}
        arr = np.array(list(by_fold.values()), dtype=float)
        mean = float(arr.mean()) if len(arr) else math.nan
        se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) >= 2 else math.nan
        rows.append(ConfirmRow(n, rank, single, by_fold, done[n], folds * seeds, mean, se))
    rows.sort(key=lambda r: (not r.complete, -(r.mean if math.isfinite(r.mean) else -math.inf), r.single_rank))
    counts = count_trials(storage_of(study), study_id_of(study))
    n_trials = int(attrs.get(StudyAttrs.N_TRIALS, folds * seeds * len(sources)))
    summary = ConfirmSummary(study.study_name, attrs[ConfirmAttrs.SOURCE], folds, seeds, rows, counts, n_trials)
    complete = [r for r in rows if r.complete]
    if complete:
        summary.winner = complete[0]
    if len(complete) >= 2:
        a, b = complete[0], complete[1]
        common = sorted(set(a.fold_values) & set(b.fold_values))
        diff = np.array([a.fold_values[f] - b.fold_values[f] for f in common])
        summary.runner_up_diff = float(diff.mean())
        if len(diff) >= 2:
            _, low, high = corrected_fold_interval(diff, folds)
            summary.runner_up_interval = (low, high)
            summary.within_noise = low <= 0.0
    return summary


def find_confirm_study(source: optuna.Study) -> optuna.Study | None:
    """The confirm study linked to `source` in the same storage (the newest finished one; else the newest)."""
    storage = storage_of(source)
    found = []
    for s in storage.get_all_studies():  # study rows and attrs only (summaries would load every trial)
        a = s.user_attrs
        if a.get(ConfirmAttrs.KIND) == KIND_CONFIRM and a.get(ConfirmAttrs.SOURCE) == source.study_name:
            found.append(s)
    if not found:
        return None
    studies = [optuna.load_study(study_name=s.study_name, storage=storage) for s in found]
    studies.sort(key=lambda st: study_id_of(st))
    finished = [
        st
        for st in studies
        if count_trials(storage, study_id_of(st)).finished >= st.user_attrs.get(StudyAttrs.N_TRIALS, 1)
    ]
    return (finished or studies)[-1]


@dataclass
class Ranking:
    """The ranking that `export` and `finalize` pick configs by.

    Attributes:
        label: ``confirmed on 5 folds (study S-confirm)`` or ``single validation split``, plus why a confirm
            study was not used when there is one.
        trials: source-study trials, best first (confirmed configs first in their confirmed order, then the
            remaining COMPLETE trials by their single-split value).
        confirm: the confirm summary used (None for the single-split ranking).
    """

    label: str
    trials: list[FrozenTrial]
    confirm: ConfirmSummary | None = None

    @property
    def confirmed(self) -> bool:
        return self.confirm is not None


def selection_ranking(source: optuna.Study, single_split: bool = False, limit: int | None = None) -> Ranking:
    """Rank the COMPLETE trials of `source`: by a finished linked confirm study, else by the single split.

    Args:
        single_split: ignore any confirm study.
        limit: at most this many trials (the best; see ``export.ranked_complete_trials``).
    """
    from maskcls_hpo.hpo.export import ranked_complete_trials, trial_by_number

    if single_split:
        return Ranking("single validation split", ranked_complete_trials(source, limit=limit))
    linked = find_confirm_study(source)
    if linked is None:
        return Ranking("single validation split", ranked_complete_trials(source, limit=limit))
    summary = summarize_confirm(linked)
    if not summary.finished or summary.winner is None:
        c = summary.counts
        return Ranking(
            f"single validation split (confirm study '{linked.study_name}' is not finished: {c.finished} of "
            f"{summary.n_trials} runs; run `maskcls-hpo confirm` again to finish it)",
            ranked_complete_trials(source, limit=limit),
        )
    confirmed = []
    for r in summary.rows:
        t = trial_by_number(source, r.source_trial) if r.complete else None
        if t is not None and t.state == TrialState.COMPLETE:
            confirmed.append(t)
    numbers = {t.number for t in confirmed}
    wanted = None if limit is None else limit + len(numbers)
    rest = [t for t in ranked_complete_trials(source, limit=wanted) if t.number not in numbers]
    trials = confirmed + rest
    label = f"{summary.label} (study '{linked.study_name}')"
    return Ranking(label, trials if limit is None else trials[:limit], summary)


# --- preparing and running -----------------------------------------------------------------------


@dataclass
class ConfirmResult:
    """What :func:`run_confirm` did: the summary, the worker exit codes, wall seconds and a closing line."""

    summary: ConfirmSummary
    storage: str
    seconds: float = 0.0
    worker_exit_codes: list[int] = field(default_factory=list)
    interrupted: bool = False
    message: str = ""
    log_dir: Path | None = None

    @property
    def reached(self) -> bool:
        return self.summary.finished


def _check_existing(study: optuna.Study, source: str, top: int, folds: int, seeds: int) -> None:
    a = study.user_attrs
    if a.get(ConfirmAttrs.KIND) != KIND_CONFIRM or a.get(ConfirmAttrs.SOURCE) != source:
        raise ConfirmError(
            f"study '{study.study_name}' exists and is not the confirm study of '{source}'; pass another --name"
        )
    stored = (int(a[ConfirmAttrs.TOP]), int(a[ConfirmAttrs.FOLDS]), int(a[ConfirmAttrs.SEEDS]))
    if stored != (top, folds, seeds):
        raise ConfirmError(
            f"confirm study '{study.study_name}' was made with --top {stored[0]} --folds {stored[1]} --seeds "
            f"{stored[2]}; run it again with those to resume it, or pass --name NEW for another confirm"
        )


def prepare_confirm(
    storage: optuna.storages.BaseStorage,
    source_name: str,
    top: int,
    folds: int,
    seeds: int = 1,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[optuna.Study, ConfirmPlan]:
    """Check everything, then create (or resume) the confirm study and queue its missing runs.

    Order: the source study and its COMPLETE trials, the counts (top, folds, seeds), an existing confirm
    study's settings, the configs, the data (folds vs persons per stratum, every image) and the image cache;
    only then is anything written. So every refusal leaves the storage as it was.

    Raises:
        StorageError: no source study.
        ConfirmError: fewer COMPLETE trials than `top`, folds < 2, seeds < 1, an existing confirm study made
            with other counts.
        DataError: more folds than persons in a gender x age band stratum, or a broken dataset.
        ConfigError: a bad override.
    """
    from maskcls_hpo.data import check_folds, load_train
    from maskcls_hpo.hpo.export import ranked_complete_trials, state_counts_text
    from maskcls_hpo.hpo.launch import prepare_data
    from maskcls_hpo.results.artifacts import save_study_note

    try:
        source = optuna.load_study(study_name=source_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfirmError(f"no study '{source_name}' (studies: {', '.join(names) or 'none'})") from None
    if source.user_attrs.get(ConfirmAttrs.KIND) == KIND_CONFIRM:
        raise ConfirmError(f"study '{source_name}' is itself a confirm study; pass the sweep's study")
    if top < 1:
        raise ConfirmError(f"--top must be at least 1, got {top}")
    if seeds < 1:
        raise ConfirmError(f"--seeds must be at least 1, got {seeds}")
    if folds < 2:
        raise ConfirmError(f"--folds must be at least 2 (one fold validates, the others train), got {folds}")
    ranked = ranked_complete_trials(source, limit=top)
    if len(ranked) < top:
        raise ConfirmError(
            f"study '{source_name}' has {len(ranked)} COMPLETE trial(s), --top asks for {top} "
            f"({state_counts_text(source)}); lower --top or run more trials"
        )
    name = name or confirm_study_name(source_name)
    existing = set(optuna.get_all_study_names(storage))
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage)
        _check_existing(study, source_name, top, folds, seeds)
        plan = load_plan(storage, name)
    else:
        chosen = ranked[:top]
        configs = _source_configs(source, [t.number for t in chosen])
        first = config_from_mapping({**configs[chosen[0].number], **(overrides or {})}, source="confirm")
        plan = ConfirmPlan(
            study_name=name,
            source_study=source_name,
            sources=[t.number for t in chosen],
            configs=configs,
            folds=folds,
            seeds=seeds,
            split_seed=first.effective_split_seed,
        )
        study = None
    # every config must build (bad overrides refuse here), and the data must hold `folds` persons per stratum
    checked = set()
    for params in plan.runs():
        config = plan.build_config(params, overrides)
        key = (config.data_dir, tuple(config.age_bins), config.corrections)
        if key not in checked:
            checked.add(key)
            samples = load_train(
                config.data_dir, age_bins=config.age_bins, corrections=config.corrections, verify=False
            )
            check_folds(samples, folds)
    meta = prepare_data(plan.build_config(plan.runs()[0], overrides))
    if study is None:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=plan.make_sampler(),
            pruner=plan.make_pruner(),
        )
        values = {t.number: float(t.value) for t in ranked}
        attrs = {
            ConfirmAttrs.KIND: KIND_CONFIRM,
            ConfirmAttrs.SOURCE: source_name,
            ConfirmAttrs.TOP: top,
            ConfirmAttrs.FOLDS: folds,
            ConfirmAttrs.SEEDS: seeds,
            ConfirmAttrs.SOURCE_TRIALS: plan.sources,
            ConfirmAttrs.SOURCE_VALUES: [values[n] for n in plan.sources],
            ConfirmAttrs.SPLIT_SEED: plan.split_seed,
            StudyAttrs.N_TRIALS: top * folds * seeds,
            **meta,
        }
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        save_study_note(study, _note(plan, attrs))
    for params in missing_runs(study, plan):
        study.enqueue_trial(params)
    return study, plan


def _note(plan: ConfirmPlan, attrs: dict[str, Any]) -> str:
    sources = ", ".join(f"{n} ({v:.4f})" for n, v in zip(plan.sources, attrs[ConfirmAttrs.SOURCE_VALUES], strict=True))
    return (
        f"## Confirm study `{plan.study_name}`\n\n"
        f"- re-trains the {len(plan.sources)} best COMPLETE configs of study `{plan.source_study}` "
        f"(trials, single-split val macro F1: {sources})\n"
        f"- on {plan.folds} person-grouped folds stratified by gender x age band (split seed {plan.split_seed})"
        f" x {plan.seeds} seed(s): {attrs[StudyAttrs.N_TRIALS]} runs\n"
        f"- params: `{PARAM_SOURCE}` (trial in the source study), `{PARAM_FOLD}`, `{PARAM_SEED}` "
        f"(seed = the config's seed + index)\n"
        f"- the value of a run is its best epoch's val macro F1 on the held-out fold\n"
    )


def run_confirm(
    study_name: str,
    top: int,
    folds: int,
    seeds: int = 1,
    *,
    storage: str | Path | None = None,
    name: str | None = None,
    workers: int = 1,
    gpus: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    timeout: float | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    checkpoints: str | Path | None = None,
    logs: str | Path | None = None,
    password_file: str | Path | None = None,
    on_message: Callable[[str], None] | None = None,
    poll_interval: float = 1.0,
) -> ConfirmResult:
    """Confirm the `top` best COMPLETE configs of `study_name` on `folds` folds x `seeds` seeds.

    Creates (or resumes) the linked study ``<study_name>-confirm`` (or `name`) and runs `workers` local
    worker processes until it holds top * folds * seeds finished trials; `workers=0` only prepares it (join
    with ``maskcls-hpo worker --confirm --study NAME``). Run it again after a crash or Ctrl-C: finished runs
    are kept, killed ones resume from their last checkpoint.

    Args:
        storage: URL or SQLite path of the source study (the confirm study goes beside it).
        data_dir: overrides the configs' data_dir; overrides: further config keys (e.g. ``epochs`` in tests).
        others: as :func:`maskcls_hpo.hpo.launch.run_sweep`.

    Returns:
        ConfirmResult with the :class:`ConfirmSummary` (per-config mean, standard error, winner).

    Raises:
        MaskclsError: before anything is stored (see :func:`prepare_confirm`); LaunchError when a worker
            process cannot start.
    """
    from maskcls_hpo.hpo.supervisor import LocalWorkers

    say = on_message or (lambda _line: None)
    extra = dict(overrides or {})
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    url = resolve_storage_url(
        storage, must_exist=True, password_file=str(password_file) if password_file is not None else None
    )
    heartbeat = HeartbeatSettings.from_env(heartbeat_interval, grace_period)
    rdb = open_storage(url, heartbeat, create=False)
    study, plan = prepare_confirm(rdb, study_name, top, folds, seeds, name=name, overrides=extra)
    settings = WorkerSettings(
        kind="confirm",
        storage_url=url,
        study_name=study.study_name,
        n_trials=top * folds * seeds,
        overrides=extra,
        heartbeat=heartbeat,
        timeout=timeout,
        checkpoints=Path(checkpoints) if checkpoints is not None else None,
        logs=Path(logs) if logs is not None else None,
        poll_interval=poll_interval,
        password_file=str(password_file) if password_file is not None else None,
    )
    summary = summarize_confirm(study)
    result = ConfirmResult(summary, display_url(url), log_dir=settings.log_dir)
    c = summary.counts
    say(
        f"confirm study '{study.study_name}' on {display_url(url)}: trials {plan.sources} of '{study_name}' on "
        f"{folds} folds x {seeds} seed(s); {c.finished} of {summary.n_trials} runs finished; {workers} worker(s)"
    )
    if summary.finished:
        result.message = f"nothing to do: all {summary.n_trials} runs are finished"
        return result
    if workers == 0:
        result.message = (
            f"study '{study.study_name}' is ready; start workers with: maskcls-hpo worker --confirm "
            f"--study {study.study_name}"
        )
        return result
    started = time.monotonic()
    pool = LocalWorkers(settings, workers, gpus=gpus)
    last = [-1]

    def poll() -> None:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            done = count_trials(rdb, study_id_of(study)).finished
            if done != last[0]:
                last[0] = done
                say(f"{done} of {summary.n_trials} runs finished")

    try:
        with stop_signals():
            pool.start()
            result.worker_exit_codes = pool.wait(on_poll=poll, poll_interval=poll_interval)
    except (KeyboardInterrupt, Interrupted):
        result.worker_exit_codes = [code if code is not None else -9 for code in pool.stop()]
        result.interrupted = True
    finally:
        pool.close()
    result.seconds = time.monotonic() - started
    result.summary = summarize_confirm(study)
    c = result.summary.counts
    if result.interrupted:
        result.message = f"interrupted: {c.finished} of {summary.n_trials} runs finished; run confirm again to resume"
    elif result.reached:
        result.message = (
            f"{c.finished} runs finished ({c.complete} complete, {c.pruned} pruned), {c.failed} failed in "
            f"{result.seconds:,.0f} s; worker logs in {settings.log_dir}"
        )
    else:
        bad = [i for i, code in enumerate(result.worker_exit_codes) if code != 0]
        result.message = (
            f"the confirm study did not reach {summary.n_trials} finished runs ({c.finished} finished, {c.failed} "
            f"failed); {pool.last_lines(bad)}; run confirm again to resume"
        )
    return result


def format_summary(summary: ConfirmSummary) -> list[str]:
    """The lines `confirm` prints: one per config (mean +- standard error over folds), then the winner."""
    lines = [
        f"{'trial':>5} {'single-split':>12} {'mean (' + str(summary.folds) + ' folds)':>16} {'s.e.':>7} "
        f"{'runs':>6}  fold values"
    ]
    for r in summary.rows:
        folds = " ".join(f"{v:.4f}" for v in r.fold_values.values())
        lines.append(
            f"{r.source_trial:>5} {r.single_value:>12.4f} {r.mean:>16.4f} {r.se:>7.4f} "
            f"{r.runs_done:>3}/{r.runs_total:<2}  {folds}"
        )
    w = summary.winner
    if w is None:
        lines.append("no winner yet: no config has all its runs COMPLETE")
        return lines
    line = (
        f"winner: trial {w.source_trial} of '{summary.source_study}', mean val macro F1 {w.mean:.4f} +- {w.se:.4f} "
        f"(s.e., {summary.label}; single split ranked it {w.single_rank})"
    )
    lines.append(line)
    if summary.runner_up_interval is not None:
        lo, hi = summary.runner_up_interval
        verdict = "within noise" if summary.within_noise else "ahead beyond noise"
        second = next(r for r in summary.rows if r.complete and r is not w)
        lines.append(
            f"runner-up trial {second.source_trial}: the winner leads by {summary.runner_up_diff:.4f} on the same "
            f"folds, 95% interval [{lo:+.4f}, {hi:+.4f}]: {verdict}"
        )
    return lines


def confirm(study_name: str, top: int = 3, folds: int = 5, seeds: int = 1, **kwargs: Any) -> ConfirmResult:
    """Re-train the `top` best COMPLETE configs of a study on `folds` person-grouped folds x `seeds` seeds.

    The Python API of `maskcls-hpo confirm` (``maskcls_hpo.confirm``): :func:`run_confirm` with its keyword
    arguments (`storage`, `workers`, `gpus`, `data_dir`, ...). Resumable: call it again after a crash.

    Returns:
        ConfirmResult; ``.summary.rows`` holds each config's mean val macro F1 over the folds and its standard
        error, ``.summary.winner`` the best config.

    Raises:
        MaskclsError: fewer COMPLETE trials than `top`, folds < 2, more folds than persons in a gender x age
            band stratum, ... (nothing stored is changed).

    Example::

        import maskcls_hpo as m
        r = m.confirm("smoke", top=3, folds=3, storage="storage/nb.db", workers=2)
        print(r.summary.winner.source_trial, r.summary.winner.mean, r.summary.winner.se)
    """
    return run_confirm(study_name, top, folds, seeds, **kwargs)
