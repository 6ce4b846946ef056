"""Every use of Optuna's private API, in one module.

Optuna is pinned to one major version (pyproject: ``optuna>=5,<6``); ``tests/hpo/test_optuna.py``
fails when an upgrade removes or renames anything used here. Outside this module the package uses
Optuna's public API only.

What is used and why:

- ``optuna.storages._rdb.models`` (``TrialModel``, ``TrialHeartbeatModel``): trial counts by state and last
  heartbeats with one SQL statement each, instead of loading every trial (``count_trials``,
  ``last_heartbeats``, ``find_stale_trials``; the latter reads the column ``TrialModel._datetime_start_utc``);
  ``TrialSystemAttributeModel`` and the trials table for the atomic claim of a trial (``hpo/store/_claim.py``).
- the bundled alembic scripts of ``optuna.storages._rdb``: the schema revision the installed Optuna writes
  (``alembic_dir``), compared with a database's before anything touches it.
- ``optuna.storages._heartbeat.get_heartbeat_thread``: the heartbeat thread that ``Study.optimize`` runs,
  for our own worker loop (``heartbeat``).
- ``optuna.study._tell._tell_with_warning``: ``Study.tell`` without reading the whole trial back
  (``tell_quietly``; benchmarks/b4_storage.py measured that read-back as a sixth of a short trial's database
  work).
- private attributes ``Study._storage``, ``Study._study_id``, ``Trial._trial_id``, and the caching wrapper's
  ``_backend`` (``storage_of``, ``study_id_of``, ``trial_id_of``, ``rdb_of``).
- private ``RDBStorage`` methods that the retrying storage wraps (``RETRIED_METHODS``).
- ``TPESampler._n_startup_trials`` and ``PercentilePruner._n_warmup_steps`` (MedianPruner is one): a sweep
  file's random start-up and pruner warm-up, read to warn when they waste a small budget
  (``tpe_startup_trials``, ``percentile_warmup_steps``).
- ``Study._pop_waiting_trial_id`` and ``Study._thread_local``: ``Study.ask`` in two steps (``ask_tracked``),
  so that a trial whose creation fails half-way (a sampler error in ``before_trial``) is known and failed
  instead of staying RUNNING, and so that the worker takes a queued trial with its own atomic claim.
- ``SuccessiveHalvingPruner._min_resource`` / ``_reduction_factor`` / ``_min_early_stopping_rate`` and its
  system attrs ``completed_rung_<k>`` (the value a trial had at rung k): where the rungs are and who reached
  them, for promotion from checkpoints (``sha_rungs``, ``completed_rungs``; hpo/trial/_promotion.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

import optuna
from optuna.trial import TrialState

if TYPE_CHECKING:
    from optuna.storages._heartbeat import BaseHeartbeatThread

__all__ = [
    "RETRIED_METHODS",
    "rdb_models",
    "alembic_dir",
    "heartbeat",
    "AskError",
    "ask_tracked",
    "tell_quietly",
    "storage_of",
    "study_id_of",
    "trial_id_of",
    "rdb_of",
    "finished_since",
    "tpe_startup_trials",
    "percentile_warmup_steps",
    "check_internals",
]

RETRIED_METHODS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",  # what Optuna's cache layer (storages/_cached_storage.py) calls
    "set_trial_param",
    "_set_trial_param",  # likewise: a suggest_* during a server restart otherwise failed its trial
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_n_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)
"""``RDBStorage`` methods (public and private) whose database calls are retried on transient errors."""


def rdb_models() -> ModuleType:
    """Optuna's SQLAlchemy models module (``TrialModel``, ``TrialHeartbeatModel``, ...)."""
    from optuna.storages._rdb import models  # lazy: SQLAlchemy ORM (0.4 s; `import optuna` does not load it)

    return models


def alembic_dir() -> Path:
    """Folder of the alembic scripts bundled with the installed Optuna (its schema history)."""
    from optuna.storages import _rdb  # lazy: private API, looked up on use (check_internals names what is gone)

    return Path(_rdb.__file__).parent / "alembic"


def heartbeat(trial: optuna.Trial, study: optuna.Study) -> BaseHeartbeatThread:
    """The heartbeat thread ``Study.optimize`` runs around a trial, as a context manager.

    A no-op when the storage has no heartbeat.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread  # lazy: private API, looked up on use (as above)

    return get_heartbeat_thread(trial_id_of(trial), storage_of(study))


class AskError(Exception):
    """``Study.ask`` failed after the trial was created (or taken from the queue) as RUNNING.

    Attributes:
        trial_id: the database id of that trial (the caller fails or re-queues it).
        error: the original exception (also ``__cause__``).
    """

    def __init__(self, trial_id: int, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.trial_id, self.error = trial_id, error


def ask_tracked(
    study: optuna.Study,
    pop: Callable[[], int | None] | None = None,
    created: Callable[[int], None] | None = None,
) -> optuna.Trial:
    """``study.ask()`` (same steps: sync the trial cache, pop a WAITING trial or create one, build the Trial).

    Args:
        pop: takes a WAITING trial and returns its id, or None when none could be taken (default: Optuna's
            ``Study._pop_waiting_trial_id``); the worker passes its atomic claim
            (:func:`~maskcls_hpo.hpo.store.claim_waiting_trial`).
        created: called with the id of a trial this call created (the worker claims it).

    Raises:
        AskError: building the trial failed once it was RUNNING in the storage (e.g. the sampler's
            ``before_trial`` raised, or `created` raised); ``trial_id`` names it. Errors before that propagate
            unchanged.
    """
    study._thread_local.cached_all_trials = None
    trial_id = (pop or study._pop_waiting_trial_id)()
    new = trial_id is None
    if trial_id is None:
        trial_id = storage_of(study).create_new_trial(study_id_of(study))
    try:
        if new and created is not None:
            created(trial_id)
        return optuna.Trial(study, trial_id)
    except Exception as err:
        raise AskError(trial_id, err) from err


def tell_quietly(
    study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None
) -> None:
    """``study.tell(trial, value, state=state)`` without reading the finished trial back.

    Same checks, warnings and errors as ``Study.tell`` (``Study.optimize`` calls the same function).
    """
    from optuna.study._tell import _tell_with_warning  # lazy: private API, looked up on use (as above)

    _tell_with_warning(study=study, trial=trial, value_or_values=value, state=state)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object a study uses (``Study._storage``)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The database id of a study (``Study._study_id``)."""
    return study._study_id


def trial_id_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The database id of a trial (``Trial._trial_id`` / ``FrozenTrial._trial_id``)."""
    return trial._trial_id


def rdb_of(storage: object) -> optuna.storages.RDBStorage:
    """The :class:`RDBStorage` behind a study's storage (Optuna wraps it in a private caching layer).

    Only for a database storage (:func:`~maskcls_hpo.hpo.store.uses_sql`): another storage is returned as it is.
    """
    return cast(optuna.storages.RDBStorage, getattr(storage, "_backend", storage))


def finished_since(storage: object, study_id: int, since: datetime.datetime) -> list[tuple[int, int]]:
    """``(trial_id, number)`` of the study's COMPLETE / PRUNED / FAIL trials that ended at or after `since`.

    One SQL query on the trials table (used by the live view, so that it never loads every trial). The
    ``datetime_complete`` column holds naive UTC in Optuna >= 5 (the model's ``_datetime_complete_utc``) and
    naive local time before; `since` (timezone-aware, or naive local) is converted to match.
    """
    import sqlalchemy  # lazy: sqlalchemy (0.35 s; `import optuna` does not load it)

    tm = rdb_models().TrialModel
    aware = since if since.tzinfo is not None else since.astimezone()
    if hasattr(tm, "_datetime_complete_utc"):
        bound = aware.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    else:
        bound = aware.astimezone().replace(tzinfo=None)
    column = tm.__table__.c.datetime_complete
    query = (
        sqlalchemy.select(tm.trial_id, tm.number)
        .where(tm.study_id == study_id)
        .where(tm.state.in_([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]))
        .where(column >= bound)
        .order_by(column, tm.number)
    )
    with rdb_of(storage).engine.connect() as con:
        return [(int(trial_id), int(number)) for trial_id, number in con.execute(query)]


def tpe_startup_trials(sampler: object) -> int | None:
    """Random start-up trials of a ``TPESampler`` (``_n_startup_trials``); None for any other sampler."""
    if isinstance(sampler, optuna.samplers.TPESampler):
        return int(sampler._n_startup_trials)
    return None


def percentile_warmup_steps(pruner: object) -> int | None:
    """``n_warmup_steps`` of a ``PercentilePruner`` / ``MedianPruner`` (``_n_warmup_steps``); None otherwise."""
    if isinstance(pruner, optuna.pruners.PercentilePruner):
        return int(pruner._n_warmup_steps)
    return None


def sha_rungs(pruner: object) -> tuple[int, int, int] | None:
    """``(min_resource, reduction_factor, min_early_stopping_rate)`` of a ``SuccessiveHalvingPruner`` with a fixed
    ``min_resource`` (``_min_resource``, ``_reduction_factor``, ``_min_early_stopping_rate``); None for any other
    pruner or ``min_resource="auto"``."""
    if not isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner) or pruner._min_resource is None:
        return None
    return int(pruner._min_resource), int(pruner._reduction_factor), int(pruner._min_early_stopping_rate)


def completed_rungs(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """{rung: value at that rung} that ``SuccessiveHalvingPruner`` stored on `trial` (system attrs
    ``completed_rung_<k>``, written when the trial reached rung k, whether it went on or was pruned there)."""
    out = {}
    rung = 0
    while (value := trial.system_attrs.get(f"completed_rung_{rung}")) is not None:
        out[rung] = float(value)
        rung += 1
    return out


def rung_attrs(rungs: dict[int, float]) -> dict[str, float]:
    """`rungs` ({rung: value}) as the system attrs ``SuccessiveHalvingPruner`` reads (``completed_rung_<k>``)."""
    return {f"completed_rung_{k}": v for k, v in rungs.items()}


def check_internals() -> list[str]:
    """Names used by this module that the installed Optuna lacks (``[]`` when everything is there)."""
    missing = []
    try:
        models = rdb_models()
        for name in ("TrialModel", "TrialHeartbeatModel", "StudyModel", "TrialSystemAttributeModel"):
            if not hasattr(models, name):
                missing.append(f"optuna.storages._rdb.models.{name}")
        for name in ("study_id", "state", "number", "trial_id", "_datetime_start_utc"):
            if not hasattr(models.TrialModel, name):
                missing.append(f"TrialModel.{name}")
        if "datetime_complete" not in models.TrialModel.__table__.c:
            missing.append("trials.datetime_complete")
        for name in ("trial_id", "heartbeat"):
            if not hasattr(models.TrialHeartbeatModel, name):
                missing.append(f"TrialHeartbeatModel.{name}")
    except ImportError:
        missing.append("optuna.storages._rdb.models")
    if not (alembic_dir() / "versions").is_dir():
        missing.append("optuna/storages/_rdb/alembic/versions")
    for module, name in (
        ("optuna.storages._heartbeat", "get_heartbeat_thread"),
        ("optuna.study._tell", "_tell_with_warning"),
    ):
        try:
            mod = __import__(module, fromlist=[name])
            if not hasattr(mod, name):
                missing.append(f"{module}.{name}")
        except ImportError:
            missing.append(module)
    if not hasattr(optuna.samplers.TPESampler(n_startup_trials=3), "_n_startup_trials"):
        missing.append("TPESampler._n_startup_trials")
    if not hasattr(optuna.pruners.MedianPruner(n_warmup_steps=2), "_n_warmup_steps"):
        missing.append("PercentilePruner._n_warmup_steps")
    sha = optuna.pruners.SuccessiveHalvingPruner(min_resource=2)
    for name in ("_min_resource", "_reduction_factor", "_min_early_stopping_rate"):
        if not hasattr(sha, name):
            missing.append(f"SuccessiveHalvingPruner.{name}")
    try:
        from optuna.pruners._successive_halving import _completed_rung_key  # lazy: private API, checked here

        if _completed_rung_key(0) != "completed_rung_0":
            missing.append("SuccessiveHalvingPruner's system attr completed_rung_<k>")
    except ImportError:
        missing.append("optuna.pruners._successive_halving._completed_rung_key")
    if not hasattr(optuna.Study, "_pop_waiting_trial_id"):
        missing.append("Study._pop_waiting_trial_id")
    for name in RETRIED_METHODS + ("record_heartbeat",):
        if not hasattr(optuna.storages.RDBStorage, name):
            missing.append(f"RDBStorage.{name}")
    return missing
