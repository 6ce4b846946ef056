"""Promotion from checkpoints: a pruned trial goes on from its checkpoint when it later ranks into the top.

Optuna's ``SuccessiveHalvingPruner`` stops a trial at rung k (epoch ``min_resource * eta**k``) unless its value
is in the top 1/eta of the values other trials had at rung k so far; the epochs it trained are thrown away,
and a config that was judged against too few peers never comes back. Asynchronous successive halving (Li et
al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020, Algorithm 2) pauses it instead and
promotes it when it ranks in the top ``floor(n_k / eta)`` of the ``n_k`` trials that reached rung k (the shipped
pruner, :func:`~maskcls_hpo.hpo.trial.asha_pruner`, also stops a trial alone at its rung, so that a trial goes
past a rung only by that rule). Here, before
each new trial, a worker looks for such a trial (highest rung first, then the best value):

- PRUNED by the pruner at rung k (its reason is ``pruned at epoch E``; out-of-memory and non-finite trials are
  never promoted), not promoted before, and its ``trial_<n>/last.pt`` still on disk;
- in the top ``floor(n_k / eta)`` of the values at rung k, one value per config: a copy (a promoted trial's or a
  stale trial's) inherits the rung values of the trial it copies, and they count once, for that trial.

The worker marks the pruned trial with the system attr ``maskcls_promoted`` (one atomic row:
:func:`~maskcls_hpo.hpo.store.mark_once`, so one promotion per trial however many workers look) and queues a
copy (WAITING): the same params, user attrs (without its reason) and intermediate values, the rung values the
pruner stored, and the user attr ``promoted_from`` = the pruned trial's number. Whoever takes the copy resumes
it from the pruned trial's ``last.pt`` (:func:`~maskcls_hpo.hpo.trial.resume_checkpoint`) at epoch E + 1 with
its optimizer, scheduler and RNG states, recorded as ``resumed_from`` / ``resumed_at_epoch`` as a stale trial's
copy is; its intermediate values are the whole curve (the dashboard plots it whole). The pruner sees rungs
0..k completed and judges it next at rung k + 1.

The copy is one trial of the budget (``--n-trials`` counts it); the compute ledger counts only the epochs it
trains, and a promoted trial's epochs are no longer "saved by pruning". The pruner itself still counts a
copy's inherited rung values next to its source's (one extra equal value at those rungs; Optuna's pruner has
no notion of copies).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo._optuna import completed_rungs, rung_attrs, sha_rungs, storage_of, trial_id_of
from maskcls_hpo.hpo.attrs import PRUNED_REASON, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.store import PROMOTED_KEY, mark_once, retry_db
from maskcls_hpo.hpo.trial._ledger import epochs_to_come
from maskcls_hpo.hpo.trial._reference import KnownGoodPruner

log = logging.getLogger(__name__)

_NOT_COPIED = (
    TrialAttrs.REASON,
    TrialAttrs.RESUMED_FROM,
    TrialAttrs.RESUMED_AT_EPOCH,
    TrialAttrs.ARTIFACTS,
    TrialAttrs.SLURM_JOB_ID,
    TrialAttrs.SLURM_TASK_ID,
)
"""User attrs of the pruned trial that describe its own run, not the config: the copy writes its own."""


@dataclass(frozen=True)
class Rungs:
    """The rungs of a ``SuccessiveHalvingPruner``: rung k (0-based) is at epoch
    ``min_resource * reduction_factor ** (min_early_stopping_rate + k)``, as Optuna's pruner computes it."""

    min_resource: int
    reduction_factor: int
    min_early_stopping_rate: int

    def step(self, rung: int) -> int:
        """The epoch (step) of rung `rung`."""
        return self.min_resource * self.reduction_factor ** (self.min_early_stopping_rate + rung)


def top_fraction(values: Mapping[Any, float], eta: int) -> list[Any]:
    """ASHA's promotable set: the keys of the ``floor(len(values) / eta)`` largest values, best first.

    Ties keep the mapping's order (earlier trials first). Li et al. 2020, Algorithm 2 (``get_job`` promotes from
    the top n/eta of a rung, n the trials that reached it); val macro F1 is maximised.

    Args:
        values: {config key: value at the rung}.
        eta: the reduction factor (>= 2).

    Returns:
        at most ``len(values) // eta`` keys; empty while fewer than `eta` configs reached the rung.
    """
    ranked = sorted(values, key=lambda k: -values[k])
    return ranked[: len(values) // eta]


def promotion_rungs(pruner: optuna.pruners.BasePruner) -> Rungs | None:
    """The rungs promotion works with: those of a ``SuccessiveHalvingPruner`` (also inside
    :class:`~maskcls_hpo.hpo.trial.KnownGoodPruner`); None for any other pruner (they have no rungs)."""
    inner = pruner.inner if isinstance(pruner, KnownGoodPruner) else pruner
    found = sha_rungs(inner)
    return Rungs(*found) if found is not None else None


def origin(trial: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> int:
    """The number of the trial whose run `trial` continues: itself, or (through promoted and stale copies) the
    first trial of its line (user attr ``promoted_from``, system attr ``failed_trial`` of Optuna's retry)."""
    seen = set()
    while trial.number not in seen:
        seen.add(trial.number)
        source = trial.user_attrs.get(TrialAttrs.PROMOTED_FROM, trial.system_attrs.get("failed_trial"))
        if source is None or int(source) not in by_number:
            break
        trial = by_number[int(source)]
    return trial.number


@dataclass(frozen=True)
class Promotion:
    """A pruned trial to continue: it, its rung (0-based), its value there, and the rung's size and top."""

    trial: FrozenTrial
    rung: int
    value: float
    reached: int
    top: int

    def epochs_to_come(self, default_epochs: int) -> int:
        """Epochs the copy trains to the trial's last epoch (:func:`~maskcls_hpo.hpo.trial.epochs_to_come`)."""
        return epochs_to_come(self.trial, default_epochs)

    def describe(self) -> str:
        """One line for the worker's log."""
        return (
            f"trial {self.trial.number} (pruned at epoch {self.trial.last_step}, val macro F1 {self.value:.4f}) "
            f"is now in the top {self.top} of the {self.reached} trials at rung {self.rung}"
        )


def find_promotions(trials: Sequence[FrozenTrial], rungs: Rungs, checkpoint_root: Path) -> list[Promotion]:
    """The pruned trials to promote now (see the module docstring), the one to try first first.

    A trial counts as promoted when some trial carries ``promoted_from`` = its number (its copy, queued or run);
    the ``maskcls_promoted`` mark decides races and is not read here (Optuna's storage cache keeps a finished
    trial's attrs as first read). A trial marked but without a copy (its promoter died between the two) stays
    in the list; :func:`promote` refuses it, and the caller tries the next one.

    Args:
        trials: every trial of the study (any state).
        rungs: the pruner's rungs (:func:`promotion_rungs`).
        checkpoint_root: ``<checkpoints>/<study>``: a candidate needs its ``trial_<n>/last.pt`` there.
    """
    by_number = {t.number: t for t in trials}
    promoted = {int(t.user_attrs[TrialAttrs.PROMOTED_FROM]) for t in trials if TrialAttrs.PROMOTED_FROM in t.user_attrs}
    at_rung: dict[int, dict[int, float]] = {}  # rung -> {origin: value}
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        root = origin(t, by_number)
        for rung, value in completed_rungs(t).items():
            at_rung.setdefault(rung, {}).setdefault(root, value)
    paused = {origin(t, by_number): t for t in trials if t.number not in promoted and _paused(t, checkpoint_root)}
    out = []
    for rung in sorted(at_rung, reverse=True):
        values = at_rung[rung]
        for root in top_fraction(values, rungs.reduction_factor):
            candidate = paused.get(root)
            if candidate is not None and max(completed_rungs(candidate)) == rung:
                top = len(values) // rungs.reduction_factor
                out.append(Promotion(candidate, rung, values[root], len(values), top))
    return out


def _paused(trial: FrozenTrial, checkpoint_root: Path) -> bool:
    """A trial the pruner stopped at a rung whose last checkpoint is on disk."""
    return (
        trial.state == TrialState.PRUNED
        and str(trial.user_attrs.get(TrialAttrs.REASON, "")).startswith(PRUNED_REASON)
        and bool(completed_rungs(trial))
        and (checkpoint_dir(checkpoint_root, trial.number) / "last.pt").is_file()
    )


def promote(study: optuna.Study, promotion: Promotion, by: str) -> int | None:
    """Mark `promotion`'s trial promoted and queue its copy (see the module docstring).

    Args:
        by: who promotes (the worker's label), stored in the mark.

    Returns:
        the copy's trial number; None when another process promoted the trial first (nothing was queued).
    """
    source = promotion.trial
    marked = retry_db(lambda: mark_once(storage_of(study), trial_id_of(source), PROMOTED_KEY, {"by": by}), "promoting")
    if not marked:
        return None
    user_attrs = {k: v for k, v in source.user_attrs.items() if k not in _NOT_COPIED}
    user_attrs[TrialAttrs.PROMOTED_FROM] = source.number
    system_attrs = rung_attrs(completed_rungs(source))
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=source.params,
            distributions=source.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
            intermediate_values=source.intermediate_values,
        )
    )
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    copy = max((t.number for t in waiting if t.user_attrs.get(TrialAttrs.PROMOTED_FROM) == source.number), default=None)
    log.info("promoted %s; it continues from its checkpoint as trial %s", promotion.describe(), copy)
    return copy
