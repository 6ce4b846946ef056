"""Sweep-file loading (sweep.py) and problem C3: a changed search space is refused before any training."""

from pathlib import Path

import optuna
import pytest

from maskcls_hpo.errors import SweepError
from maskcls_hpo.hpo._optuna import tpe_startup_trials
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.trial import (
    asha_pruner,
    budget_line,
    budget_warnings,
    first_rung,
    load_sweep,
    median_pruner,
    startup_trials,
)

SWEEP = """
import optuna
BASE_CONFIG = {"model": "test_resnet", "image_size": [32, 24], "epochs": 2}
def suggest(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", BATCHES),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=LOG)}
"""


def write_sweep(tmp_path: Path, batches="[16, 32]", log="True", name="c3.py", body=SWEEP) -> Path:
    path = tmp_path / name
    path.write_text(body.replace("BATCHES", batches).replace("LOG", log))
    return path


@pytest.mark.parametrize("sweeps_file", ["smoke.py", "xception.py", "efficientnet_b0.py"])
def test_shipped_sweeps_search_the_required_parameters(sweeps_file):
    sweep = load_sweep(Path("sweeps") / sweeps_file)
    space = sweep.search_space()
    # batch size, lr (log), dropout, T_max (under cosine), loss type, age-loss weight (under the multi head)
    for name in ("batch_size", "lr", "dropout", "t_max", "loss", "age_loss_weight"):
        assert name in space, name
    assert space["lr"].log is True
    assert set(space["loss"].choices) == {"cross_entropy", "label_smoothing", "focal", "f1"}
    pruner = sweep.make_pruner().inner  # the sweep file's pruner (wrapped so that it never prunes known-good trials)
    if isinstance(pruner, optuna.pruners.HyperbandPruner):
        assert pruner._max_resource == sweep.base_config.epochs


def test_known_good_settings_of_the_seed_teams():
    x = load_sweep("sweeps/xception.py")
    assert x.base_config.model == "legacy_xception" and x.base_config.optimizer == "adam"
    assert x.known_good[0] == {
        "batch_size": 32,
        "lr": 1e-3,
        "dropout": 0.5,
        "scheduler": "step",
        "loss": "cross_entropy",
        "head": "single",
    }
    e = load_sweep("sweeps/efficientnet_b0.py")
    assert e.known_good[0]["batch_size"] == 64 and e.known_good[0]["dropout"] == 0.5
    assert list(e.base_config.image_size) == [512, 384]


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("BASE_CONFIG = {}\ndef suggest(trial)\n    return {}\n")
    with pytest.raises(SweepError, match=r"broken\.py:2: syntax error"):
        load_sweep(path)


def test_missing_objects_are_named(tmp_path):
    path = tmp_path / "nosuggest.py"
    path.write_text("BASE_CONFIG = {}\n")
    with pytest.raises(SweepError, match="missing function suggest"):
        load_sweep(path)
    path.write_text("def suggest(trial):\n    return {}\n")
    with pytest.raises(SweepError, match="missing BASE_CONFIG"):
        load_sweep(path)


def test_unknown_config_key_from_suggest_is_named(tmp_path):
    path = tmp_path / "badkey.py"
    path.write_text(
        "BASE_CONFIG = {}\ndef suggest(trial):\n"
        "    return {'batchsize': trial.suggest_categorical('batchsize', [16, 32])}\n"
    )
    with pytest.raises(SweepError, match="unknown key 'batchsize'"):
        load_sweep(path)


def test_error_inside_suggest_names_the_line(tmp_path):
    path = tmp_path / "raises.py"
    path.write_text("BASE_CONFIG = {}\ndef suggest(trial):\n    x = 1\n    return {'lr': 1 / 0}\n")
    with pytest.raises(SweepError, match=r"ZeroDivisionError.*line 4"):
        load_sweep(path)


def test_conditional_parameters_are_found_by_dry_runs():
    space = load_sweep("sweeps/smoke.py").search_space()
    assert space["t_max"] == optuna.distributions.IntDistribution(2, 4)
    assert space["age_loss_weight"] == optuna.distributions.FloatDistribution(0.5, 2.0)


def _study_with_two_trials(tmp_path, sweep_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c3.db'}")
    sweep = load_sweep(sweep_path)
    study = prepare_study(sweep, storage, "c3", n_trials=2)
    for _ in range(2):  # what two finished trials store: their distributions
        t = study.ask()
        sweep.suggest(t)
        study.tell(t, 0.5)
    return storage, study


@pytest.mark.parametrize(
    ("batches", "log", "expected"),
    [
        (
            "[16, 32, 64]",
            "True",
            r"batch_size': study has categorical\[16, 32\], sweep file asks categorical\[16, 32, 64\]",
        ),
        ("[16, 32]", "False", r"lr': study has float\[0.0001, 0.01\] log, sweep file asks float\[0.0001, 0.01\]"),
    ],
)
def test_changed_search_space_is_refused(tmp_path, batches, log, expected):
    path = write_sweep(tmp_path)
    storage, study = _study_with_two_trials(tmp_path, path)
    write_sweep(tmp_path, batches=batches, log=log)
    changed = load_sweep(path)
    with pytest.raises(SweepError, match=expected) as err:
        prepare_study(changed, storage, "c3", n_trials=4)
    assert "--study" in str(err.value)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2  # no FAIL trial added


def test_int_turned_categorical_is_refused(tmp_path):
    body = "BASE_CONFIG = {}\ndef suggest(trial):\n    return {'epochs': trial.suggest_int('epochs', 1, 3)}\n"
    path = write_sweep(tmp_path, body=body)
    storage, _ = _study_with_two_trials(tmp_path, path)
    path.write_text(body.replace("suggest_int('epochs', 1, 3)", "suggest_categorical('epochs', [1, 2, 3])"))
    with pytest.raises(SweepError, match=r"'epochs': study has int\[1, 3\].*categorical\[1, 2, 3\]"):
        prepare_study(load_sweep(path), storage, "c3", n_trials=4)


def test_same_space_resumes(tmp_path):
    path = write_sweep(tmp_path)
    storage, _ = _study_with_two_trials(tmp_path, path)
    study = prepare_study(load_sweep(path), storage, "c3", n_trials=4)
    assert len(study.trials) == 2 and study.user_attrs["n_trials"] == 4


# --- sweep defaults sized to the budget ---------------------------------------------------------------


def test_the_first_rung_is_at_epoch_4_or_half_a_shorter_trial():
    # B2 on the recorded UTKFace curves: epoch 4 ranks configs well, epochs 1-3 do not (docs/performance.md)
    assert [first_rung(e) for e in (1, 2, 3, 4, 6, 8, 9, 12, 16, 40)] == [1, 1, 1, 2, 3, 4, 4, 4, 4, 4]
    xception = load_sweep("sweeps/xception.py")  # 12 epochs: rungs at 4 and 8 (was 6 with the old epochs // 2)
    line = budget_line(xception, 12, None)
    assert "pruner SuccessiveHalvingPruner, rungs at epoch 4, 8 (eta 2)" in line, line
    smoke = load_sweep("sweeps/smoke.py")  # 4 epochs: one rung at 2, as before
    assert "rungs at epoch 2 (eta 2)" in budget_line(smoke, 8, None)


def test_the_shipped_pruner_pauses_a_trial_alone_at_a_rung_and_keeps_the_top_half():
    # asynchronous successive halving (asha_pruner): at a rung, a trial goes on only while it is in the top
    # floor(n / 2) of the n trials that reached it; Optuna's default rule would let the first one through
    assert all(
        isinstance(p := load_sweep(f"sweeps/{name}.py").make_pruner().inner, optuna.pruners.SuccessiveHalvingPruner)
        and (p._min_resource, p._reduction_factor, p._bootstrap_count) == (4 if name != "smoke" else 2, 2, 1)
        for name in ("xception", "efficientnet_b0", "smoke")
    )
    study = optuna.create_study(direction="maximize", pruner=asha_pruner(8))
    decisions = []
    for value in (0.30, 0.50, 0.20, 0.40, 0.45):  # val macro F1 at every epoch up to the rung (epoch 4)
        trial = study.ask()
        for epoch in range(1, 5):
            trial.report(value, epoch)
        decisions.append(trial.should_prune())
        if decisions[-1]:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    # 0.30 alone: paused; 0.50 best of 2; 0.20 not best of 3; 0.40 2nd of 4 (top 2); 0.45 2nd of 5 (top 2)
    assert decisions == [True, False, True, False, False]


def test_start_up_trials_scale_with_the_budget(tmp_path):
    assert [startup_trials(n) for n in (4, 6, 12, 20, 40, 100, None)] == [2, 2, 3, 5, 10, 10, 10]
    sweep = load_sweep(write_sweep(tmp_path))  # no make_sampler: the default TPE, sized to the budget
    assert tpe_startup_trials(sweep.make_sampler(0, n_trials=12)) == 3
    assert tpe_startup_trials(sweep.make_sampler(0, n_trials=200)) == 10
    assert budget_warnings(sweep, 12) == [] and budget_warnings(sweep, 3) == []  # 2 of 3: the least TPE needs
    smoke = load_sweep("sweeps/smoke.py")  # the shipped sweeps take the budget as make_sampler's 2nd argument
    assert tpe_startup_trials(smoke.make_sampler(1, n_trials=12)) == 3
    assert budget_warnings(smoke, 12) == []


def test_a_sweep_files_own_start_up_that_eats_the_budget_is_warned_about(tmp_path, caplog):
    body = SWEEP + "\ndef make_sampler(seed):\n    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)\n"
    sweep = load_sweep(write_sweep(tmp_path, body=body))
    (line,) = budget_warnings(sweep, 12)
    assert "starts with 10 random trials of a 12-trial budget, so only 2 are chosen by TPE" in line
    assert str(sweep.path) in line and "startup_trials(n_trials)" in line
    assert budget_warnings(sweep, 20) == []  # 10 of 20: half is left to TPE
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    with caplog.at_level("WARNING", logger="maskcls_hpo"):
        prepare_study(sweep, storage, "small", n_trials=12)
    assert any("10 random trials of a 12-trial budget" in r.getMessage() for r in caplog.records)


def _pruned_at(pruner, values_of_others, step, value):
    """Would `pruner` prune a trial reporting `value` at epoch `step`, after trials reporting `values_of_others`
    (one list of per-epoch values each, epochs counted from 1) have finished?"""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for values in values_of_others:
        t = study.ask()
        for epoch, v in enumerate(values, start=1):
            t.report(v, epoch)
        study.tell(t, values[-1])
    t = study.ask()
    for epoch in range(1, step + 1):
        t.report(value, epoch)
    return bool(t.should_prune())


def test_default_pruner_warm_up_is_counted_in_epochs_from_1(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path))
    others = [[0.5, 0.6, 0.7]] * 3
    # the default (one epoch of warm-up): a trial far below the median is not pruned at epoch 1, but at epoch 2
    assert _pruned_at(sweep.make_pruner(), others, step=1, value=0.01) is False
    assert _pruned_at(sweep.make_pruner(), others, step=2, value=0.01) is True
    assert _pruned_at(median_pruner(warmup_epochs=2), others, step=2, value=0.01) is False
    assert _pruned_at(median_pruner(warmup_epochs=2), others, step=3, value=0.01) is True
    # what the old default did: Optuna's n_warmup_steps=1 prunes at epoch 1, and says so now
    assert _pruned_at(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1), others, 1, 0.01) is True
    body = SWEEP + "\ndef make_pruner(config):\n    return optuna.pruners.MedianPruner(n_warmup_steps=1)\n"
    (line,) = budget_warnings(load_sweep(write_sweep(tmp_path, body=body, name="w1.py")), 12)
    assert "n_warmup_steps=1, which prunes at epoch 1" in line and "median_pruner(warmup_epochs=W)" in line
