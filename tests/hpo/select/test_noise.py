"""hpo/select/_noise.py: the best trial against the runner-up, a paired person bootstrap on the shared val split.

Studies are built by hand (SQLite, `create_trial`) with known per-image predictions written where the workers
write them (``<checkpoints>/<study>/trial_<n>/val_predictions.csv``) or uploaded as artifacts, so the figures
in the messages can be checked by hand.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.config import TrainConfig
from maskcls_hpo.hpo.attrs import TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.select import compare_runner_up
from maskcls_hpo.hpo.store import open_storage, resolve_storage_url, storage_folder
from maskcls_hpo.hpo.trial import open_artifact_store, upload_trial_artifacts
from maskcls_hpo.metrics import evaluate_predictions, write_val_predictions

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")  # ask/tell by hand


@pytest.fixture
def study(tmp_path):
    url = resolve_storage_url(str(tmp_path / "s.db"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="noisy", storage=open_storage(url), direction="maximize"), url


def add_trial(study, url, persons, y_true, y_pred, write=True, ci=None, artifact_only=False):
    """A COMPLETE trial whose value is the macro F1 of `y_pred`, with its val_predictions.csv (when `write`)
    beside its checkpoints, or only as its artifact (`artifact_only`, uploaded while it runs, as workers do)."""
    value = evaluate_predictions(y_true, y_pred)["f1"]
    attrs = {TrialAttrs.CONFIG: TrainConfig(data_dir="storage/demo").to_dict()}
    if ci:
        attrs |= {TrialAttrs.VAL_F1_CI_LOW: ci[0], TrialAttrs.VAL_F1_CI_HIGH: ci[1]}
    trial = study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
    for key, v in attrs.items():
        trial.set_user_attr(key, v)
    folder = checkpoint_dir(storage_folder(url, "checkpoints") / study.study_name, trial.number)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "val_predictions.csv"
    if write:
        probs = np.eye(18)[np.asarray(y_pred)]
        write_val_predictions(
            path,
            image_paths=[f"/data/{p}/img{i}.jpg" for i, p in enumerate(persons)],
            person_ids=persons,
            epoch=2,
            y_true=y_true,
            y_pred=y_pred,
            probabilities=probs,
            head="single",
        )
    if artifact_only:
        store, _ = open_artifact_store(url)
        upload_trial_artifacts(trial, store, config=None, val_predictions=path)
        path.unlink()
    study.tell(trial, value)
    return trial.number, path


def test_runner_up_within_noise_by_hand(study):
    s, url = study
    # person 000001: one class-0 image; person 000002: one class-1 image. #0 is right on both; #1 is right on
    # 000001 and says 0 for 000002. Resampled pairs: AA -> difference 0, BB -> 1/18, AB -> (2 - 2/3)/18.
    persons = ["000001", "000002"]
    add_trial(s, url, persons, [0, 1], [0, 1], ci=(0.0556, 0.1111))
    add_trial(s, url, persons, [0, 1], [0, 0])
    c = compare_runner_up(s, storage_url=url)
    assert (c.best, c.runner_up) == (0, 1) and c.within_noise is True
    assert c.difference.estimate == pytest.approx((4 / 3) / 18)
    assert c.difference.low == pytest.approx(0.0) and c.difference.high == pytest.approx((4 / 3) / 18)
    assert c.message == (
        "runner-up #1 is within noise of #0: difference 0.074, 95% interval [+0.000, +0.074] "
        "(paired bootstrap over 2 val persons, 1000 resamples)"
    )
    # status and export say it
    out = CliRunner().invoke(app, ["status", "--storage", url])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "best: trial 0, val macro F1 0.1111 (95% interval 0.0556-0.1111, bootstrap over val persons)" in text
    assert "runner-up #1 is within noise of #0: difference 0.074, 95% interval [+0.000, +0.074]" in text
    out = CliRunner().invoke(app, ["export", "--storage", url, "--out", str(url.split("///")[1] + ".yaml")])
    assert out.exit_code == 0, out.output
    assert "runner-up #1 is within noise of #0" in " ".join(out.output.split())


def test_runner_up_beyond_noise_and_from_the_artifact_store(study):
    s, url = study
    # 20 persons of one image: 10 of class 0, 10 of class 1. #0 is right on all (macro F1 2/18); #1 says 2 for
    # every image (0). Every resample holds a class #0 gets right: the difference never reaches 0.
    persons = [f"{i:06d}" for i in range(20)]
    y_true = [0] * 10 + [1] * 10
    add_trial(s, url, persons, y_true, y_true)
    # the runner-up's file only as an artifact (as on a machine without the workers' checkpoint folder)
    _, path = add_trial(s, url, persons, y_true, [2] * 20, artifact_only=True)
    assert not path.exists()
    c = compare_runner_up(s, storage_url=url)
    assert c.within_noise is False
    assert c.message == (
        "best #0 beats runner-up #1 beyond noise: difference 0.111, 95% interval [+0.111, +0.111] "
        "(paired bootstrap over 20 val persons, 1000 resamples)"
    )


def test_runner_up_not_compared_without_predictions_or_on_other_persons(study):
    s, url = study
    assert compare_runner_up(s, storage_url=url) is None  # no trial: nothing to compare
    add_trial(s, url, ["000001", "000002"], [0, 1], [0, 1])
    assert compare_runner_up(s, storage_url=url) is None  # one COMPLETE trial
    add_trial(s, url, ["000001", "000002"], [0, 1], [0, 0], write=False)
    assert compare_runner_up(s, storage_url=url).message == (
        "runner-up #1 not compared with #0: no validation predictions of #1 (val_predictions.csv)"
    )
    add_trial(s, url, ["000003", "000004"], [0, 1], [0, 1])  # ties with #0 (2/18): the runner-up, other persons
    c = compare_runner_up(s, storage_url=url)
    assert c.runner_up == 2 and c.within_noise is None
    assert "validated on different images" in c.message
