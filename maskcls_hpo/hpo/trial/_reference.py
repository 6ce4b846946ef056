"""The known-good settings of a sweep file are the reference every other trial is judged against.

`launch` enqueues each ``KNOWN_GOOD`` entry with the trial user attr ``known_good = True``
(:data:`~maskcls_hpo.hpo.attrs.TrialAttrs.KNOWN_GOOD`; a stale trial's re-queued copy inherits it), and the
sweep's pruner is wrapped in :class:`KnownGoodPruner`, which never prunes such a trial: a reference that is
pruned at epoch 2 is no reference. `confirm` re-trains the known-good COMPLETE trials along with the top K.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo._optuna import storage_of, study_id_of
from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.store import flagged_trial_ids, uses_sql


def is_known_good(trial: FrozenTrial) -> bool:
    """True when `trial` was enqueued from the sweep file's ``KNOWN_GOOD`` (user attr ``known_good``)."""
    return bool(trial.user_attrs.get(TrialAttrs.KNOWN_GOOD, False))


def known_good_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE known-good trials of `study` with a value, in trial order (with an SQL storage one query finds
    them and only they are loaded, so `status` stays cheap on large studies)."""
    if uses_sql(study):
        storage = storage_of(study)
        ids = flagged_trial_ids(storage, study_id_of(study), TrialAttrs.KNOWN_GOOD, (TrialState.COMPLETE,))
        found = [storage.get_trial(tid) for tid in ids]
    else:
        found = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in found if is_known_good(t) and t.value is not None]


class KnownGoodPruner(optuna.pruners.BasePruner):
    """Wraps a pruner so that it never prunes a known-good trial (Optuna's ``BasePruner.prune`` API).

    Every other trial is asked of `inner` as before. The known-good trial still reports every epoch, so it
    counts in the median of the trials after it.

    Attributes:
        inner: the sweep file's pruner.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """False for a known-good trial, else what `inner` says."""
        if is_known_good(trial):
            return False
        return self.inner.prune(study, trial)
