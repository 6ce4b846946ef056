"""hpo/_optuna.py: every private Optuna name the package uses still exists in the installed Optuna.

An Optuna upgrade that removes or renames one of them fails here, by name, before anything else breaks.
"""

from __future__ import annotations

import optuna
from helpers.sourcegrep import package_lines_matching

from maskcls_hpo.hpo import _optuna


def test_optuna_is_the_tested_major_version():
    assert optuna.__version__.split(".")[0] == "5"


def test_every_private_name_exists():
    assert _optuna.check_internals() == []
    models = _optuna.rdb_models()
    assert models.TrialModel.__tablename__ == "trials"
    assert (_optuna.alembic_dir() / "versions").is_dir()


def test_private_helpers_work_on_a_real_study(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'x.db'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with _optuna.heartbeat(trial, study):
        trial.report(0.5, 1)
    _optuna.tell_quietly(study, trial, 0.5)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert _optuna.study_id_of(study) == 1
    assert _optuna.trial_id_of(trial) == study.trials[0]._trial_id
    assert _optuna.rdb_of(_optuna.storage_of(study)) is storage


def test_no_module_outside_optuna_py_touches_optuna_internals():
    private = r"optuna\.[\w.]*\b_[a-z]\w*|from optuna[\w.]*\._|\._(storage|study_id|trial_id|backend)\b"
    assert package_lines_matching(private, "_optuna.py") == []


def test_every_database_call_of_optunas_cache_layer_is_retried():
    # Studies wrap an RDBStorage in Optuna's _CachedStorage, which calls some *private* RDBStorage methods
    # (_create_new_trial, _set_trial_param, _get_trials, ...). A method missing from RETRIED_METHODS is not
    # retried on a PostgreSQL restart: a suggest_* during one failed its trial (seen in tests/system/test_postgres.py).
    import inspect
    import re

    from optuna.storages import _cached_storage  # the module read here, not used

    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_cached_storage)))
    no_database = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    retried_elsewhere = {"record_heartbeat"}  # its own retry at the heartbeat's pace (hpo/store/_rdb.py)
    assert {"_create_new_trial", "_set_trial_param", "_get_trials"} <= called  # the scan finds them
    assert sorted(called - set(_optuna.RETRIED_METHODS) - no_database - retried_elsewhere) == []
