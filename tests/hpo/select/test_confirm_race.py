"""`confirm --race` through the real worker loop on SQLite, with planted run values instead of training.

The two configs of the session study `src` (tests/hpo/select/conftest.py) on 2 folds x 3 seeds (6 rounds):
the runs return planted values, the best config about 0.8 and the other about 0.5. Paired over folds, the race
stops the worse config after 4 pairs (its rounds 5 and 6 are PRUNED without training, 2 of 12 epochs saved),
unless it is protected (--keep), then it runs all 6. Paired over persons (the default), each run also writes
planted val predictions (the best config right on every val person, the worse one on half of them): the worse
config is stopped after its first round. The planted best is the sweep's known-good, which the race never stops.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from maskcls_hpo.hpo.attrs import ConfirmAttrs, TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.store import HeartbeatSettings
from maskcls_hpo.hpo.trial import load_plan
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

NOISE = [0.01, -0.02, 0.015, 0.0, -0.01, 0.02]  # by round (seed index * 2 + fold)


def _planted_predictions(path, right_share: float) -> None:
    """A run's val_predictions.csv: 20 persons x 7 images of classes 0-6, right on the first `right_share` of them."""
    from maskcls_hpo.metrics import write_val_predictions

    true = np.tile(np.arange(7), 20)
    right = np.repeat(np.arange(20) < round(20 * right_share), 7)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_val_predictions(
        path,
        image_paths=[f"img{i}.jpg" for i in range(len(true))],
        person_ids=[f"{i // 7:06d}" for i in range(len(true))],
        epoch=1,
        y_true=true,
        y_pred=np.where(right, true, (true + 1) % 7),
        probabilities=np.full((len(true), 18), 1 / 18),
        head="single",
    )


def _race(confirm_source, tmp_path, keep_worse: bool, pairing: str = "folds"):
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
    m.confirm("src", top=2, folds=2, seeds=3, storage=db, workers=0, race=True, protected=keep, race_pairing=pairing)
    heartbeat = HeartbeatSettings(interval=5, grace_period=60)
    plan = load_plan(storage, "src-confirm")
    assert plan.race and plan.protected == keep

    options = RunOptions(heartbeat=heartbeat, checkpoints=tmp_path / "ckpt")
    settings = WorkerSettings(kind="confirm", storage_url=url, study_name="src-confirm", options=options)
    plan.predictions_root = settings.study_checkpoints  # as the worker sets it on the plan it loads

    def planted(trial: optuna.Trial) -> float:
        params = plan.suggest(trial)
        trial.set_user_attr(TrialAttrs.CONFIG, plan.build_config(params).to_dict())
        winner = params["source_trial"] == best
        _planted_predictions(
            checkpoint_dir(settings.study_checkpoints, trial.number) / "val_predictions.csv", 1.0 if winner else 0.5
        )
        return (0.8 if winner else 0.5) + NOISE[params["seed_index"] * 2 + params["fold"]]

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
def test_paired_over_persons_the_race_stops_the_planted_worse_config_after_its_first_round(confirm_source, tmp_path):
    study, summary, lines, best, worse, _ = _race(confirm_source, tmp_path, keep_worse=False, pairing="persons")
    mine = [t for t in study.get_trials(deepcopy=False) if t.params["source_trial"] == worse]
    assert [t.state for t in mine] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 5
    stop = mine[-1].user_attrs[TrialAttrs.RACE_STOPPED]
    # round 1: the best config right on all 20 persons (macro F1 7/18), the worse one on 10 of them
    assert (stop["leader"], stop["pairs"], stop["pairing"]) == (best, 1, "persons") and stop["mean_diff"] < -0.15
    assert (summary.race.runs_skipped, summary.race.epochs_saved, summary.race.epochs_full) == (5, 5, 12)
    assert "the race saved 5 of 12 epochs (42%): 5 run(s) not trained" in lines
    assert any(line.startswith(f"race: trial {worse} stopped after 1 round(s): ") for line in lines)
    assert study.user_attrs[ConfirmAttrs.RACE_PAIRING] == "persons"
    assert summary.winner is not None and summary.winner.source_trial == best


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
    with pytest.raises(ConfirmError, match=r"was made with --race --keep 0 --race-pairing persons; run it again so"):
        m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, race=False)
    with pytest.raises(ConfirmError, match=r"was made with --race --keep 0 --race-pairing persons; run it again so"):
        m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, protected=[0], race_pairing="folds")
    with pytest.raises(ConfirmError, match=r"--race-pairing 'rounds': use persons or folds"):
        m.confirm("src", top=2, folds=2, seeds=2, storage=db, workers=0, name="other", race_pairing="rounds")
    assert "other" not in optuna.get_all_study_names(storage)
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
