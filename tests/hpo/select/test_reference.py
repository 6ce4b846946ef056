"""The known-good is the reference: never pruned, always confirmed, compared with the winner, the default.

Studies are built by hand (SQLite, ask/tell) with known per-image predictions written where the workers write
them, so the figures in the messages can be checked by hand (as tests/hpo/select/test_noise.py).
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.config import TrainConfig
from maskcls_hpo.hpo.attrs import TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.select import compare_known_good, selection_ranking
from maskcls_hpo.hpo.select._confirm import with_known_good
from maskcls_hpo.hpo.store import open_storage, ranked_complete_trials, resolve_storage_url, storage_folder
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.metrics import evaluate_predictions, write_val_predictions

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")  # ask/tell by hand

SWEEP = """
import optuna
from maskcls_hpo.hpo.trial import median_pruner

BASE_CONFIG = {"model": "test_resnet", "pretrained": False, "epochs": 4, "data_dir": "storage/demo"}
KNOWN_GOOD = [{"lr": 0.0001}]

def suggest(trial):
    return {"lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True)}

def make_pruner(config):
    return median_pruner(warmup_epochs=1, n_startup_trials=1)
"""


@pytest.fixture
def study(tmp_path):
    url = resolve_storage_url(str(tmp_path / "s.db"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="ref", storage=open_storage(url), direction="maximize"), url


def add_trial(study, url, persons, y_true, y_pred, known_good=False):
    """A COMPLETE trial whose value is the macro F1 of `y_pred`, with its val_predictions.csv."""
    trial = study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
    trial.set_user_attr(TrialAttrs.CONFIG, TrainConfig(data_dir="storage/demo").to_dict())
    if known_good:
        trial.set_user_attr(TrialAttrs.KNOWN_GOOD, True)
    folder = checkpoint_dir(storage_folder(url, "checkpoints") / study.study_name, trial.number)
    folder.mkdir(parents=True, exist_ok=True)
    write_val_predictions(
        folder / "val_predictions.csv",
        image_paths=[f"/data/{p}/img{i}.jpg" for i, p in enumerate(persons)],
        person_ids=persons,
        epoch=2,
        y_true=y_true,
        y_pred=y_pred,
        probabilities=np.eye(18)[np.asarray(y_pred)],
        head="single",
    )
    study.tell(trial, evaluate_predictions(y_true, y_pred)["f1"])
    return trial.number


def test_known_good_worst_at_the_first_rung_is_not_pruned_and_is_confirmed(tmp_path):
    path = tmp_path / "ref.py"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    url = resolve_storage_url(str(tmp_path / "s.db"))
    study = prepare_study(sweep, open_storage(url), "ref", n_trials=4)
    # the enqueued known-good is the first trial; it is marked
    known = study.ask()
    assert known.suggest_float("lr", 1e-5, 1e-1, log=True) == 0.0001
    assert known.user_attrs[TrialAttrs.KNOWN_GOOD] is True
    # two ordinary trials finish first, F1 0.5 and 0.4 at every epoch
    for value in (0.5, 0.4):
        t = study.ask()
        t.suggest_float("lr", 1e-5, 1e-1, log=True)
        for epoch in range(1, 5):
            t.report(value, epoch)
        study.tell(t, value)
    # the known-good is worst at the first rung (epoch 2: the pruner's warm-up is 1 epoch), yet never pruned
    known.report(0.01, 1)
    known.report(0.01, 2)
    assert known.should_prune() is False
    other = study.ask()  # an ordinary trial as bad at epoch 2 is pruned
    other.suggest_float("lr", 1e-5, 1e-1, log=True)
    other.report(0.01, 1)
    other.report(0.01, 2)
    assert bool(other.should_prune()) is True
    for epoch in range(3, 5):
        known.report(0.02, epoch)
    study.tell(known, 0.02)
    study.tell(other, state=optuna.trial.TrialState.PRUNED)
    top = ranked_complete_trials(study, limit=2)
    assert [t.number for t in top] == [1, 2]
    assert [t.number for t in with_known_good(study, top)] == [1, 2, 0]  # the worst, confirmed with the top 2


def test_all_within_noise_of_the_known_good_export_picks_it_and_says_why(study, tmp_path):
    s, url = study
    # person 000001: one class-0 image; person 000002: one class-1 image. The known-good #0 says 0 for both;
    # #1 is right on both: +0.074 with the paired interval [+0.000, +0.074] (test_noise: by hand), low not > 0
    persons = ["000001", "000002"]
    assert add_trial(s, url, persons, [0, 1], [0, 0], known_good=True) == 0
    add_trial(s, url, persons, [0, 1], [0, 1])
    ranking = selection_ranking(s, limit=1, known_good=True, storage_url=url)
    c = ranking.reference
    assert (c.winner, c.known_good, c.beaten) == (1, 0, False)
    assert c.message == (
        "winner vs known-good on the same validation persons (single split): +0.074 [+0.000, +0.074]: the search "
        "found nothing better than the known-good #0 within noise (winner #1); export and finalize use the "
        "known-good"
    )
    assert [t.number for t in ranking.trials] == [0]
    out_file = tmp_path / "best.yaml"
    out = CliRunner().invoke(app, ["export", "--storage", url, "--out", str(out_file)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "known-good trial 0 first: the search found nothing better than it within noise" in text
    assert "winner vs known-good on the same validation persons (single split): +0.074 [+0.000, +0.074]" in text
    doc = yaml.safe_load(out_file.read_text())
    assert doc["trial"] == 0 and doc["known_good"]["beaten"] is False
    out = CliRunner().invoke(app, ["status", "--storage", url])
    assert "the search found nothing better than the known-good #0 within noise" in " ".join(out.output.split())


def test_a_winner_beyond_noise_stays_the_winner(study):
    s, url = study
    # 20 persons of one image, 10 of class 0 and 10 of class 1: #1 is right on all (macro F1 2/18), the
    # known-good #0 says 2 for every image (0): every resample gives +0.111
    persons = [f"{i:06d}" for i in range(20)]
    y_true = [0] * 10 + [1] * 10
    add_trial(s, url, persons, y_true, [2] * 20, known_good=True)
    add_trial(s, url, persons, y_true, y_true)
    ranking = selection_ranking(s, limit=1, known_good=True, storage_url=url)
    assert ranking.trials[0].number == 1 and ranking.reference.beaten is True
    assert ranking.reference.message.endswith("+0.111 [+0.111, +0.111]: winner #1 beats the known-good #0 beyond noise")
    assert compare_known_good(s, selection_ranking(s, limit=1), storage_url=url).difference.estimate == pytest.approx(
        2 / 18
    )
