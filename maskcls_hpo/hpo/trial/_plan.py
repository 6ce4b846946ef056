"""The confirm plan: the fold runs of a confirm study, standing in for a sweep file in the worker loop.

A confirm run is a trial of the linked confirm study with fixed params ``source_trial`` (the trial number in the
source study), ``fold`` and ``seed_index``; :class:`ConfirmPlan` builds its config from the source trial's
stored config (see :mod:`maskcls_hpo.hpo.select` for the use case that creates the study).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.config import TrainConfig, config_from_mapping
from maskcls_hpo.errors import ConfirmError
from maskcls_hpo.hpo._optuna import storage_of, trial_id_of
from maskcls_hpo.hpo.attrs import KIND_CONFIRM, PARAM_FOLD, PARAM_SEED, PARAM_SOURCE, ConfirmAttrs, TrialAttrs
from maskcls_hpo.hpo.trial._race import PAIR_FOLDS, RACE_REASON, run_key, stopped_configs

log = logging.getLogger(__name__)


def confirm_study_name(source: str) -> str:
    """The default name of the confirm study of `source`: ``<source>-confirm``."""
    return f"{source}-confirm"


@dataclass
class ConfirmPlan:
    """The fold runs of one confirm study; stands in for a :class:`~maskcls_hpo.hpo.trial.Sweep` in the worker.

    ``make_objective`` calls :meth:`suggest` (which reads the trial's fixed params) and :meth:`build_config`;
    ``run_worker`` calls :meth:`make_sampler` and :meth:`make_pruner`.

    Attributes:
        study_name, source_study: the confirm study and the study whose configs it re-trains.
        sources: source trial numbers, best first; configs: their stored configs (plain dicts) by number.
        folds, seeds: F and R; split_seed: the fold assignment's seed.
        race: run the confirm as a race (``hpo/trial/_race.py``): runs queued round by round, a
            config worse than the leader with 95% confidence is not trained further.
        protected: source trial numbers the race never stops (``--keep``).
        known_good: the source study's known-good trials among `sources` (confirmed besides the top K); the race
            never stops them either.
        race_pairing: ``"persons"`` (a new confirm's default) or ``"folds"`` (study attr ``race_pairing``; absent
            in studies made before it: folds); see hpo/trial/_race.py.
        predictions_root: ``<checkpoints>/<confirm study>``, where the runs' ``val_predictions.csv`` are (set by
            the worker; person pairing reads them there); None: not known (person pairing then stops nothing).
    """

    study_name: str
    source_study: str
    sources: list[int]
    configs: dict[int, dict[str, Any]]
    folds: int
    seeds: int
    split_seed: int
    path: Path = field(default_factory=lambda: Path("<confirm>"))
    race: bool = False
    protected: list[int] = field(default_factory=list)
    known_good: list[int] = field(default_factory=list)
    race_pairing: str = PAIR_FOLDS
    predictions_root: Path | None = None

    def kept(self) -> list[int]:
        """The configs the race never stops: ``--keep`` and the known-good, sorted."""
        return sorted({*self.protected, *self.known_good})

    def runs(self) -> list[dict[str, int]]:
        """Every run's params, in queue order: by source trial (best first), then fold, then seed index; in a
        race by round (seed index, then fold), then source trial, so every config's round r runs before round
        r + 1 and the race can compare them."""
        if self.race:
            return [
                {PARAM_SOURCE: n, PARAM_FOLD: f, PARAM_SEED: r}
                for r in range(self.seeds)
                for f in range(self.folds)
                for n in self.sources
            ]
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
            optuna.TrialPruned: in a race, the run's config is stopped (user attrs ``reason = "race"`` and
                ``race_stopped``); the worker records the run PRUNED without training it.
        """
        frozen = storage_of(trial.study).get_trial(trial_id_of(trial))
        if not frozen.params and "fixed_params" not in frozen.system_attrs:
            missing = missing_runs(trial.study, self)
            if missing:
                trial.study.enqueue_trial(missing[0])
            raise ConfirmError(f"trial {trial.number} was not queued by confirm; queued the runs still missing")
        params = {
            PARAM_SOURCE: trial.suggest_categorical(PARAM_SOURCE, self.sources),
            PARAM_FOLD: trial.suggest_int(PARAM_FOLD, 0, self.folds - 1),
            PARAM_SEED: trial.suggest_int(PARAM_SEED, 0, self.seeds - 1),
        }
        if self.race:
            stopped = stopped_configs(trial.study, self.kept(), self.race_pairing, self.predictions_root)
            stop = stopped.get(int(params[PARAM_SOURCE]))
            if stop is not None:
                trial.set_user_attr(TrialAttrs.REASON, RACE_REASON)
                trial.set_user_attr(TrialAttrs.RACE_STOPPED, stop.to_attr())
                raise optuna.TrialPruned(f"confirm race: trial {stop.source_trial} {stop.describe()}")
        return params

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


def source_configs(source: optuna.Study, numbers: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored configs (plain dicts, the ``config`` trial user attr) of trials `numbers` of study `source`.

    Raises:
        ConfirmError: a trial is missing or has no stored config (it cannot be confirmed).
    """
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
        configs=source_configs(source, sources),
        folds=int(attrs[ConfirmAttrs.FOLDS]),
        seeds=int(attrs[ConfirmAttrs.SEEDS]),
        split_seed=int(attrs[ConfirmAttrs.SPLIT_SEED]),
        path=Path(f"<confirm study {study_name}>"),
        race=bool(attrs.get(ConfirmAttrs.RACE, False)),
        protected=[int(n) for n in attrs.get(ConfirmAttrs.PROTECTED, [])],
        known_good=[int(n) for n in attrs.get(ConfirmAttrs.KNOWN_GOOD, [])],
        race_pairing=str(attrs.get(ConfirmAttrs.RACE_PAIRING, PAIR_FOLDS)),
    )


def _params_of(trial: FrozenTrial) -> dict[str, Any]:
    return trial.params or trial.system_attrs.get("fixed_params") or {}


def missing_runs(study: optuna.Study, plan: ConfirmPlan) -> list[dict[str, int]]:
    """Runs of `plan` with no trial that is COMPLETE, PRUNED, RUNNING or WAITING (to be queued)."""
    taken = set()
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
            key = run_key(_params_of(t))
            if key is not None:
                taken.add(key)
    return [r for r in plan.runs() if run_key(r) not in taken]


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
                if frozen.state == TrialState.RUNNING and run_key(params) is not None:
                    trial.study.enqueue_trial({k: int(v) for k, v in params.items()})
                    log.warning("confirm run %s (trial %d) failed; queued again", params, trial.number)
            raise

    return wrapped
