"""One claim per job (hpo/store/_claim.py): real processes racing for the same queued trials on SQLite and PostgreSQL.

Optuna's own pop (``set_trial_state_values(RUNNING)``, a read then a write) lets two SQLite processes both take
one WAITING trial; the claim row (UNIQUE (trial_id, key)) plus the conditional update lets exactly one win.
No training: each process only claims, so a test takes a few seconds.
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time

import optuna
import pytest
from helpers.spawned import claim_racer
from optuna.trial import TrialState

from maskcls_hpo.hpo._optuna import rdb_of, storage_of, study_id_of
from maskcls_hpo.hpo.store import (
    CLAIM_KEY,
    HeartbeatSettings,
    claim_of,
    claim_trial,
    claim_waiting_trial,
    fail_trial,
    new_claim,
    open_storage,
    release_trial,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed"),
]

HEARTBEAT = HeartbeatSettings(interval=1, grace_period=20)
N_QUEUED = 12


def _queued_study(url: str) -> optuna.Study:
    study = optuna.create_study(study_name="race", storage=open_storage(url, HEARTBEAT))
    for i in range(N_QUEUED):
        study.enqueue_trial({"x": float(i)})
    return study


def _race(url: str) -> tuple[optuna.Study, dict[str, tuple[str, list[int]]]]:
    study = _queued_study(url)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 4.0  # both processes have imported Optuna and opened the storage by then
    procs = [ctx.Process(target=claim_racer, args=(url, f"racer-{i}", start_at, out)) for i in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        name, token, won = out.get(timeout=120)
        results[name] = (token, won)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return study, results


def _check_each_trial_claimed_once(study: optuna.Study, results: dict[str, tuple[str, list[int]]]) -> None:
    won = [tid for _, ids in results.values() for tid in ids]
    trials = study.get_trials(deepcopy=False)
    assert sorted(won) == sorted(t._trial_id for t in trials)  # every queued trial taken once, none twice
    assert all(t.state == TrialState.RUNNING for t in trials)
    storage = storage_of(study)
    for name, (token, ids) in results.items():
        for tid in ids:
            held = claim_of(storage, tid)
            assert held is not None and (held.owner, held.token) == (name, token)


def test_two_processes_racing_for_queued_trials_on_sqlite_each_trial_won_once(tmp_path):
    study, results = _race(f"sqlite:///{tmp_path / 'race.db'}")
    _check_each_trial_claimed_once(study, results)


@pytest.mark.postgres
def test_two_processes_racing_for_queued_trials_on_postgres_each_trial_won_once(pg_database):
    study, results = _race(pg_database)
    _check_each_trial_claimed_once(study, results)


def test_a_claimed_trial_is_refused_to_a_second_claim_and_released_cleanly(tmp_path):
    study = _queued_study(f"sqlite:///{tmp_path / 'claim.db'}")
    storage = storage_of(study)
    first = study.get_trials(deepcopy=False)[0]._trial_id
    a, b = new_claim("a"), new_claim("b")
    assert claim_trial(storage, first, a, from_waiting=True)
    assert not claim_trial(storage, first, b, from_waiting=True)  # the row exists: b loses
    assert claim_of(storage, first) == a
    assert rdb_of(storage).get_trial(first).state == TrialState.RUNNING
    assert release_trial(storage, first)  # back to the queue, the claim row gone
    assert rdb_of(storage).get_trial(first).state == TrialState.WAITING
    assert claim_of(storage, first) is None
    assert claim_trial(storage, first, b, from_waiting=True)  # a fresh claim
    assert claim_of(storage, first) == b


def test_failed_trial_copy_is_claimable_and_a_told_trial_is_not_failed_again(tmp_path):
    study = _queued_study(f"sqlite:///{tmp_path / 'claim.db'}")
    storage = storage_of(study)
    claim = new_claim("a")
    tid = claim_waiting_trial(storage, study_id_of(study), claim)
    assert tid is not None
    assert fail_trial(study, tid, "stale: test")  # FAIL, and a copy queued without the claim
    copy = next(t for t in study.get_trials(deepcopy=False) if t.system_attrs.get("failed_trial") is not None)
    assert copy.state == TrialState.WAITING and CLAIM_KEY not in copy.system_attrs
    assert not fail_trial(study, tid, "stale: again")  # already finished: left as it is, no second copy
    assert sum(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)) == N_QUEUED
    other = claim_waiting_trial(storage, study_id_of(study), new_claim("b"))
    assert other is not None and other != tid


def test_telling_a_trial_another_process_just_failed_refuses_instead_of_overwriting_on_sqlite(tmp_path):
    """The stale check of another process writes FAIL while this worker tells COMPLETE: the tell must see FAIL.

    Optuna's read-check-write (``SELECT ... FOR UPDATE``, ignored by SQLite) read RUNNING and then wrote
    COMPLETE over the FAIL; the state change now takes SQLite's write lock before it reads.
    """
    db = tmp_path / "tell.db"
    study = _queued_study(f"sqlite:///{db}")
    storage = storage_of(study)
    tid = claim_waiting_trial(storage, study_id_of(study), new_claim("a"))
    other = sqlite3.connect(db, timeout=60, isolation_level=None)  # another process's stale check, mid-write
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE trials SET state = 'FAIL' WHERE trial_id = ?", (tid,))
    outcome: list[object] = []

    def tell() -> None:
        try:
            outcome.append(storage.set_trial_state_values(tid, TrialState.COMPLETE, [0.5]))
        except optuna.exceptions.UpdateFinishedTrialError as err:
            outcome.append(err)

    teller = threading.Thread(target=tell)
    teller.start()
    time.sleep(1.0)  # the teller waits for the write lock (it would have read RUNNING here before)
    other.execute("COMMIT")
    teller.join(timeout=120)
    other.close()
    assert len(outcome) == 1 and isinstance(outcome[0], optuna.exceptions.UpdateFinishedTrialError)
    assert rdb_of(storage).get_trial(tid).state == TrialState.FAIL
