"""One claim per job: a worker owns a trial only after an atomic claim row in the storage.

Optuna moves a queued (WAITING) trial to RUNNING with a read, a check and a write
(``RDBStorage.set_trial_state_values`` with ``SELECT ... FOR UPDATE``). SQLite ignores ``FOR UPDATE`` and
Python's sqlite3 starts a transaction only at the first write, so two processes can both read WAITING and both
move the trial to RUNNING: both train it, into one ``trial_<n>/`` folder (issue 25, seen with `confirm`, which
queues every job). The same read-check-write lets a stale check fail a trial that was told COMPLETE a moment
before.

Here the claim is one row of Optuna's own ``trial_system_attributes`` table, key :data:`CLAIM_KEY`, whose
``UNIQUE (trial_id, key)`` constraint makes the insert atomic on SQLite and PostgreSQL alike: two processes
inserting it for one trial cannot both commit, the loser gets ``IntegrityError`` and moves on. In the same
transaction the winner moves the trial from WAITING to RUNNING with a conditional ``UPDATE ... WHERE state =
'WAITING'`` (a compare-and-set: 0 rows means another process took it first). A trial created by this process
(already RUNNING, nobody else knows it yet) is claimed by the insert alone. A trial handed back to the queue
(a lost budget slot) has its claim row deleted in the same transaction that sets it WAITING, so the next claim
starts clean; a copy queued for a failed trial does not inherit the row (:func:`~maskcls_hpo.hpo.store.requeue`).
The stale check fails a trial with the same compare-and-set (``WHERE state = 'RUNNING'``,
:func:`finish_running`), so a trial told COMPLETE or failed by its owner is never failed again.

The row's value is the owner's label (``host:pid/worker``) and a random token, shown by the worker's messages.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass

import optuna
import sqlalchemy
from optuna.trial import TrialState

from maskcls_hpo.hpo._optuna import rdb_models, rdb_of, trial_id_of

CLAIM_KEY = "maskcls_claim"
"""Key of the claim row in ``trial_system_attributes`` (a system attr, so it is never shown as a user attr)."""


@dataclass(frozen=True)
class Claim:
    """Who owns a trial: the owner's label (``host:pid/worker``) and a token unique to this claim."""

    owner: str
    token: str

    def to_json(self) -> str:
        """The row's ``value_json`` (Optuna reads system attrs as JSON)."""
        return json.dumps({"owner": self.owner, "token": self.token})


def new_claim(owner: str) -> Claim:
    """A claim for `owner` with a fresh random token (64 bits)."""
    return Claim(owner, secrets.token_hex(8))


def _utc_now() -> dt.datetime:
    # The trials table's datetime columns hold naive UTC (Optuna >= 5, the model's ``_datetime_*_utc``).
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _engine(storage: object) -> sqlalchemy.engine.Engine:
    return rdb_of(storage).engine


def claim_trial(storage: object, trial_id: int, claim: Claim, *, from_waiting: bool) -> bool:
    """Claim trial `trial_id` for `claim`'s owner: True when this call won it.

    Args:
        storage: the study's storage (an RDB storage, possibly behind Optuna's cache).
        from_waiting: the trial is queued (WAITING) and is moved to RUNNING in the same transaction (its start
            time set to now, as Optuna does); False for a trial this process just created (already RUNNING).

    Returns:
        False when another process holds the claim or the trial is no longer WAITING; nothing was changed.
    """
    models = rdb_models()
    attrs = models.TrialSystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    try:
        with _engine(storage).begin() as con:
            if from_waiting:  # a claim row on a still-WAITING trial is a leftover: copied with the trial's system
                # attrs by Optuna's own RetryFailedTrialCallback (``**trial.system_attrs``), not a live owner
                waiting = sqlalchemy.exists().where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                con.execute(attrs.delete().where(attrs.c.trial_id == trial_id, attrs.c.key == CLAIM_KEY, waiting))
            con.execute(attrs.insert().values(trial_id=trial_id, key=CLAIM_KEY, value_json=claim.to_json()))
            if from_waiting:
                moved = con.execute(
                    trials.update()
                    .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                    .values(state=TrialState.RUNNING, datetime_start=_utc_now())
                )
                if moved.rowcount != 1:
                    raise _Lost
    except (sqlalchemy.exc.IntegrityError, _Lost):
        return False
    return True


PROMOTED_KEY = "maskcls_promoted"
"""Key of the row that marks a pruned trial as promoted (continued by a copy): hpo/trial/_promotion.py."""


def mark_once(storage: object, trial_id: int, key: str, value: object) -> bool:
    """Add the system attr `key` = `value` (JSON) to trial `trial_id` unless it has one: True when this call added it.

    The same ``UNIQUE (trial_id, key)`` insert as a claim, so of several processes exactly one wins; unlike
    Optuna's ``set_trial_system_attr`` it also works on a finished trial (a PRUNED trial being promoted).
    """
    attrs = rdb_models().TrialSystemAttributeModel.__table__
    try:
        with _engine(storage).begin() as con:
            con.execute(attrs.insert().values(trial_id=trial_id, key=key, value_json=json.dumps(value)))
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


class _Lost(Exception):
    """The trial left WAITING before this claim's update (rolls the claim row back)."""


def claim_waiting_trial(storage: optuna.storages.BaseStorage, study_id: int, claim: Claim) -> int | None:
    """Claim the oldest WAITING trial of the study that no other process claims first; its id, or None.

    Replaces Optuna's ``Study._pop_waiting_trial_id`` (:func:`~maskcls_hpo.hpo._optuna.ask_tracked` takes it)
    and, like it, lists the queue through the study's storage (`storage`, so that Optuna's trial cache learns
    the queued trials), then claims them in turn with :func:`claim_trial`.
    """
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = trial_id_of(frozen)
        if claim_trial(storage, trial_id, claim, from_waiting=True):
            return trial_id
    return None


def release_trial(storage: object, trial_id: int) -> bool:
    """Hand a RUNNING trial back to the queue (WAITING) and drop its claim, in one transaction.

    Returns:
        False when the trial was no longer RUNNING (e.g. failed as stale meanwhile); nothing was changed.
    """
    models = rdb_models()
    attrs = models.TrialSystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    try:
        with _engine(storage).begin() as con:
            moved = con.execute(
                trials.update()
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
                .values(state=TrialState.WAITING)
            )
            if moved.rowcount != 1:
                raise _Lost
            con.execute(attrs.delete().where(attrs.c.trial_id == trial_id, attrs.c.key == CLAIM_KEY))
    except _Lost:
        return False
    return True


def finish_running(storage: object, trial_id: int, state: TrialState) -> bool:
    """Move trial `trial_id` from RUNNING to the finished `state` (FAIL for a stale trial), atomically.

    The conditional update succeeds for exactly one caller; a trial its owner told (or another process failed)
    first is left as it is.

    Returns:
        True when this call finished the trial.
    """
    if not state.is_finished():
        raise ValueError(f"finish_running needs a finished state, got {state.name}")
    trials = rdb_models().TrialModel.__table__
    with _engine(storage).begin() as con:
        moved = con.execute(
            trials.update()
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
            .values(state=state, datetime_complete=_utc_now())
        )
    return bool(moved.rowcount == 1)


def claim_of(storage: object, trial_id: int) -> Claim | None:
    """The claim held on trial `trial_id`, or None (no row: never claimed, or handed back to the queue)."""
    attrs = rdb_models().TrialSystemAttributeModel.__table__
    query = sqlalchemy.select(attrs.c.value_json).where(attrs.c.trial_id == trial_id, attrs.c.key == CLAIM_KEY)
    with _engine(storage).connect() as con:
        raw = con.execute(query).scalar()
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Claim(str(data["owner"]), str(data["token"]))
    except (ValueError, KeyError, TypeError):
        return Claim(str(raw), "")


def holds_claim(storage: object, trial_id: int, claim: Claim) -> bool:
    """True when `claim` is the claim stored on trial `trial_id` (this process still owns it)."""
    return claim_of(storage, trial_id) == claim
