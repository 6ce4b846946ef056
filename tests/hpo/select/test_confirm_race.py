"""`confirm --race` through the real worker loop on SQLite, with planted run values instead of training.

The two configs of the session study `src` (tests/hpo/select/conftest.py) on 2 folds x 3 seeds (6 rounds):
the runs return planted values, the best config about 0.8 and the other about 0.5. The race stops the worse
config after 4 pairs (its rounds 5 and 6 are PRUNED without training, 2 of 12 epochs saved), unless it is
protected (--keep), then it runs all 6. The planted best is the sweep's known-good, which the race never stops.
"""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

from maskcls_hpo.hpo.attrs import ConfirmAttrs, TrialAttrs
from maskcls_hpo.hpo.store import HeartbeatSettings
from maskcls_hpo.hpo.trial import load_plan
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

NOISE = [0.01, -0.02, 0.015, 0.0, -0.01, 0.02]  # by round (seed index * 2 + fold)


def _race(confirm_source, tmp_path, keep_worse: bool):
    import maskcls_hpo as m
    from maskcls_hpo.hpo.select import format_summary, summarize_confirm

    db = confirm_source.copy(tmp_path)
    url = f"sqlite:///{db}"
    storage = optuna.storages.RDBStorage(url)
    source = optuna.load_study(study_name="src", storage=storage).trials
    best, worse = (t.number for t in sorted(source, key=lambda t: (-t.value, t.number)))
    # both configs of `src` are smoke.py's KNOWN_GOOD, which the race never stops: the worse one is made an
    # ordinary sampled config here (its known_good attr set to false in the copied file) so the race may stop it
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE trial_user_attributes SET value_json = 'false' WHERE key = ? AND trial_id = ?",
            (TrialAttrs.KNOWN_GOOD, source[worse]._trial_id),
        )
    storage = optuna.storages.RDBStorage(url)
    keep = [worse] if keep_worse else []
    m.confirm("src", top=2, folds=2, seeds=3, storage=db, workers=0, race=True, protected=keep)
    heartbeat = HeartbeatSettings(interval=5, grace_period=60)
    plan = load_plan(storage, "src-confirm")
    assert plan.race and plan.protected == keep

    def planted(trial: optuna.Trial) -> float:
        params = plan.suggest(trial)
        trial.set_user_attr(TrialAttrs.CONFIG, plan.build_config(params).to_dict())
        base = 0.8 if params["source_trial"] == best else 0.5
        return base + NOISE[params["seed_index"] * 2 + params["fold"]]

    options = RunOptions(heartbeat=heartbeat, checkpoints=tmp_path / "ckpt")
    settings = WorkerSettings(kind="confirm", storage_url=url, study_name="src-confirm", options=options)
    report = run_worker(settings, objective=planted)
    study = optuna.load_study(study_name="src-confirm", storage=storage)
    summary = summarize_confirm(study)
    return study, summary, format_summary(summary), best, worse, report


@pytest.mark.slow
def test_the_race_stops_the_planted_worse_config_after_4_pairs(confirm_source, tmp_path):
    study, summary, lines, best, worse, _ = _race(confirm_source, tmp_path, keep_worse=False)
    runs = study.get_trials(deepcopy=False)
    assert len(runs) == 12 and summary.finished
    # queued round by round: (seed 0, fold 0) of both configs, then (seed 0, fold 1), ...
    assert [(t.params["seed_index"], t.params["fold"]) for t in runs[:4]] == [(0, 0), (0, 0), (0, 1), (0, 1)]
    mine = [t for t in runs if t.params["source_trial"] == worse]
    assert [t.state for t in mine] == [TrialState.COMPLETE] * 4 + [TrialState.PRUNED] * 2
    stop = mine[-1].user_attrs[TrialAttrs.RACE_STOPPED]
    assert (stop["leader"], stop["pairs"]) == (best, 4) and stop["mean_diff"] == pytest.approx(-0.3)
    assert mine[-1].user_attrs[TrialAttrs.REASON] == "race"
    assert all(t.state == TrialState.COMPLETE for t in runs if t.params["source_trial"] == best)
    assert summary.winner is not None and summary.winner.source_trial == best
    assert (summary.race.runs_skipped, summary.race.epochs_saved, summary.race.epochs_full) == (2, 2, 12)
    assert "the race saved 2 of 12 epochs (17%): 2 run(s) not trained" in lines
    assert any(
        line.startswith(f"race: trial {worse} stopped after 4 pairs: 0.3000 behind trial {best}") for line in lines
    )
    assert study.user_attrs[ConfirmAttrs.RACE] is True


@pytest.mark.slow
def test_the_race_runs_a_protected_config_to_the_end(confirm_source, tmp_path):
    study, summary, lines, best, worse, _ = _race(confirm_source, tmp_path, keep_worse=True)
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE] * 12
    assert summary.race.stops == {} and summary.race.epochs_saved == 0
    assert f"race: known-good trial(s) {sorted([best, worse])} run to the end" in lines  # --keep and known-good


def test_race_refuses_fewer_than_4_rounds_and_unknown_keep(confirm_source, tmp_path):
    import maskcls_hpo as m
    from maskcls_hpo.errors import ConfirmError

    db = confirm_source.copy(tmp_path)
    with pytest.raises(
        ConfirmError, match=r"--race needs at least 4 paired results per config: --folds x --seeds is 3 x 1"
    ):
        m.confirm("src", top=2, folds=3, storage=db, workers=0, race=True)
    with pytest.raises(ConfirmError, match=r"--keep 5: trial 5 is not among the confirmed trials"):
        m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, race=True, protected=[5])
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    assert optuna.get_all_study_names(storage) == ["src"]  # nothing created
    m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, race=True, protected=[0])
    with pytest.raises(ConfirmError, match=r"was made with --race --keep 0; run it again so to resume it"):
        m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, race=False)
    # neither --race nor --no-race: the existing study resumes as it was made
    m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0)
    assert load_plan(storage, "src-confirm").race


def test_a_new_confirm_races_by_default_when_it_has_4_rounds(confirm_source, tmp_path):
    import maskcls_hpo as m

    db = confirm_source.copy(tmp_path)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    m.confirm("src", top=2, folds=4, storage=db, workers=0, name="four")  # 4 folds x 1 seed: 4 rounds
    m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, name="two-by-two")
    m.confirm("src", top=2, folds=3, storage=db, workers=0, name="three")  # 3 rounds: the race could never stop
    m.confirm("src", top=2, folds=4, storage=db, workers=0, name="asked-off", race=False)
    made = {name: load_plan(storage, name).race for name in ("four", "two-by-two", "three", "asked-off")}
    assert made == {"four": True, "two-by-two": True, "three": False, "asked-off": False}
