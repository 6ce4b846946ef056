"""export.py and problem C4: only COMPLETE trials are exported, plain types only, accepted by the config loader."""

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.config import TrainConfig, load_config
from maskcls_hpo.errors import ExportError
from maskcls_hpo.hpo.select import export_trials
from maskcls_hpo.hpo.store import open_storage, resolve_storage_url

DISTS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "batch_size": CategoricalDistribution([16, 32])}


def add(study, state, value=None, lr=1e-3, batch=16, inter=None, accuracy=0.5):
    config = TrainConfig(lr=lr, batch_size=batch, data_dir="storage/demo").to_dict()
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params={"lr": lr, "batch_size": batch},
            distributions=DISTS,
            intermediate_values=inter or {},
            user_attrs={"config": config, "accuracy": accuracy},
        )
    )


@pytest.fixture
def study(tmp_path):
    url = resolve_storage_url(str(tmp_path / "s.db"))
    return optuna.create_study(study_name="smoke", storage=open_storage(url), direction="maximize"), url


def test_no_complete_trial_is_one_line_and_exit_1(study, tmp_path):
    s, url = study
    for _ in range(3):
        add(s, TrialState.PRUNED, inter={1: 0.9})
    add(s, TrialState.FAIL)
    with pytest.raises(ExportError, match=r"^no COMPLETE trial in study 'smoke' \(3 pruned, 1 failed\)$"):
        export_trials(s, tmp_path / "best.yaml")
    result = CliRunner().invoke(app, ["export", "--storage", url, "--out", str(tmp_path / "best.yaml")])
    assert result.exit_code == 1
    assert "no COMPLETE trial in study 'smoke' (3 pruned, 1 failed)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "best.yaml").exists()


def test_pruned_trial_with_higher_value_is_not_exported(study, tmp_path):
    s, _ = study
    add(s, TrialState.COMPLETE, value=0.61, lr=2e-3)
    # a worker's tell(PRUNED) stores the last reported F1 (0.95) as the pruned trial's value
    add(s, TrialState.PRUNED, value=0.95, inter={1: 0.5, 2: 0.95}, lr=5e-2)
    add(s, TrialState.COMPLETE, value=0.72, lr=3e-3, batch=32, accuracy=0.8)
    assert s.trials[1].value == pytest.approx(0.95)
    (path,) = export_trials(s, tmp_path / "best.yaml")
    doc = yaml.safe_load(path.read_text())
    assert doc["trial"] == 2 and doc["value"] == pytest.approx(0.72)
    assert doc["config"]["lr"] == pytest.approx(3e-3) and doc["config"]["batch_size"] == 32
    assert type(doc["accuracy"]) is float and doc["accuracy"] == pytest.approx(0.8)
    assert "!!python" not in path.read_text()  # plain YAML only
    cfg = load_config(path)  # what `train --config` does with it
    assert cfg.lr == pytest.approx(3e-3) and cfg.batch_size == 32


def test_json_top_k_and_chosen_trial(study, tmp_path):
    s, _ = study
    for i, v in enumerate([0.3, 0.9, 0.6]):
        add(s, TrialState.COMPLETE, value=v, lr=1e-3 * (i + 1))
    paths = export_trials(s, tmp_path / "top.json", top=2)
    assert [p.name for p in paths] == ["top-1.json", "top-2.json"]
    docs = [json.loads(p.read_text()) for p in paths]
    assert [d["trial"] for d in docs] == [1, 2] and [d["rank"] for d in docs] == [1, 2]
    (one,) = export_trials(s, tmp_path / "t0.yaml", trial_number=0)
    assert yaml.safe_load(one.read_text())["value"] == pytest.approx(0.3)
    with pytest.raises(ExportError, match="has no trial 7"):
        export_trials(s, tmp_path / "x.yaml", trial_number=7)


def test_sql_ranking_and_counts_equal_optunas_trials_on_300_trials(tmp_path):
    """status/export read counts and the best trials by SQL; on 300 fake trials they equal study.trials."""
    import random
    from collections import Counter

    from maskcls_hpo.hpo.store import count_trials, ranked_complete_trials, top_complete_trial_ids, trial_by_number
    from maskcls_hpo.results.status import study_status

    url = resolve_storage_url(str(tmp_path / "big.db"))
    s = optuna.create_study(study_name="big", storage=open_storage(url), direction="maximize")
    rng = random.Random(7)
    states = [TrialState.COMPLETE] * 6 + [TrialState.PRUNED] * 3 + [TrialState.FAIL]
    config = TrainConfig(data_dir="storage/demo").to_dict()
    trials = []
    for _ in range(300):
        state = rng.choice(states)
        value = round(rng.uniform(0.2, 0.8), 2) if state != TrialState.FAIL else None  # 2 decimals: many ties
        trials.append(
            create_trial(
                state=state,
                value=value,
                params={"lr": 1e-3, "batch_size": 16},
                distributions=DISTS,
                intermediate_values={1: value or 0.0},
                user_attrs={"config": config, "accuracy": 0.5},
            )
        )
    # a PRUNED trial with the highest value and a COMPLETE one at +inf: neither may be the best
    trials.append(create_trial(state=TrialState.PRUNED, value=0.99, params={}, distributions={}))
    trials.append(create_trial(state=TrialState.COMPLETE, value=float("inf"), params={}, distributions={}))
    s.add_trials(trials)
    fresh = optuna.load_study(study_name="big", storage=open_storage(url))
    every = fresh.trials
    assert len(every) == 302
    expected = sorted(
        (t for t in every if t.state == TrialState.COMPLETE and t.value != float("inf")),
        key=lambda t: (-t.value, t.number),
    )
    by_state = Counter(t.state for t in every)

    c = count_trials(fresh._storage, fresh._study_id)
    assert (c.complete, c.pruned, c.failed) == (
        by_state[TrialState.COMPLETE],
        by_state[TrialState.PRUNED],
        by_state[TrialState.FAIL],
    )
    top10 = ranked_complete_trials(fresh, limit=10)
    assert [t.number for t in top10] == [t.number for t in expected[:10]]
    assert top10[0].value == pytest.approx(expected[0].value) and top10[0].value < 0.81
    # ties broken by the lower trial number, as in the sort over all trials
    ids = top_complete_trial_ids(fresh._storage, fresh._study_id, None)
    assert len(ids) == len(expected)
    status = study_status(fresh)
    assert status["best"]["number"] == expected[0].number
    assert status["counts"]["complete"] == by_state[TrialState.COMPLETE]
    assert status["counts"]["finished"] == by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    paths = export_trials(fresh, tmp_path / "top.json", top=3)
    assert [json.loads(p.read_text())["trial"] for p in paths] == [t.number for t in expected[:3]]
    assert trial_by_number(fresh, 123).number == 123 and trial_by_number(fresh, 999) is None


# --- issue 14: absolute paths, a non-COMPLETE trial needs --force ------------------------------------------


def test_exported_paths_are_absolute_from_the_launch_folder(study, tmp_path, monkeypatch):
    """The trial's config says data_dir `storage/demo`, cache_dir `storage/cache` (relative to where the sweep
    ran); the study records that folder, so the file names it whatever folder `export` runs in."""
    s, url = study
    s.set_user_attr("dataset", {"data_dir": "/srv/sweep/storage/demo", "launch_dir": "/srv/sweep", "persons": 3})
    add(s, TrialState.COMPLETE, value=0.5)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (path,) = export_trials(s, tmp_path / "best.yaml")
    config = yaml.safe_load(path.read_text())["config"]
    assert config["data_dir"] == "/srv/sweep/storage/demo"
    assert config["cache_dir"] == "/srv/sweep/storage/cache"
    assert config["corrections"] is None and config["pretrained"] is False  # not paths: unchanged


def test_launch_folder_is_inferred_from_the_recorded_data_folder(study, tmp_path):
    """Studies made before `launch_dir` was recorded: the absolute data folder ends with the relative one."""
    s, _ = study
    s.set_user_attr("dataset", {"data_dir": "/srv/old/storage/demo", "persons": 3})
    add(s, TrialState.COMPLETE, value=0.5)
    (path,) = export_trials(s, tmp_path / "best.yaml")
    config = yaml.safe_load(path.read_text())["config"]
    assert (config["data_dir"], config["cache_dir"]) == ("/srv/old/storage/demo", "/srv/old/storage/cache")


def test_export_versions_come_from_package_metadata_without_torch():
    """The version stamp: torch's and timm's versions are read from their metadata, neither is imported."""
    import subprocess
    import sys
    from importlib.metadata import version

    code = (
        "import sys; from maskcls_hpo.hpo.select._export import _versions; v = _versions(); "
        "print(v['torch'], v['timm'], 'torch' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [version("torch"), version("timm"), "False", "False"]


def test_pruned_trial_by_number_needs_force(study, tmp_path):
    s, url = study
    add(s, TrialState.COMPLETE, value=0.5)
    add(s, TrialState.PRUNED, value=0.8, inter={1: 0.8})
    out = tmp_path / "t1.yaml"
    with pytest.raises(ExportError, match=r"trial 1 of study 'smoke' is PRUNED: .* pass --force"):
        export_trials(s, out, trial_number=1)
    assert not out.exists()
    result = CliRunner().invoke(app, ["export", "--storage", url, "--trial", "1", "--out", str(out)])
    assert result.exit_code == 1 and "pass --force" in result.output and not out.exists()
    result = CliRunner().invoke(app, ["export", "--storage", url, "--trial", "1", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert "warning: trial 1 is PRUNED, not COMPLETE: exported because of --force" in " ".join(result.output.split())
    doc = yaml.safe_load(out.read_text())
    assert (doc["trial"], doc["state"]) == (1, "PRUNED")


def test_forced_export_of_a_trial_that_never_trained_is_one_error_without_a_warning(study, tmp_path):
    s, url = study
    add(s, TrialState.COMPLETE, value=0.5)
    s.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}, user_attrs={"reason": "TypeError: x"}))
    out = tmp_path / "t1.yaml"
    result = CliRunner().invoke(app, ["export", "--storage", url, "--trial", "1", "--out", str(out), "--force"])
    assert result.exit_code == 1 and not out.exists()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "error: trial 1 of study 'smoke' has no stored config (it failed before training started, e.g. in the "
        "sweep's suggest()); export another trial, or leave out --trial for the best"
    ], result.output


def test_exported_config_trains_from_another_folder(swept_study, tmp_path, monkeypatch):
    """The session's smoke study: its trials' cache_dir is `storage/cache` (relative to where launch ran);
    the export names the absolute folder, and `train --config /abs/best.yaml` runs from an unrelated folder."""
    best = tmp_path / "best.yaml"
    monkeypatch.chdir(swept_study.root)
    result = CliRunner().invoke(app, ["export", "--storage", str(swept_study.db), "--out", str(best)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(best.read_text())["config"]
    assert config["cache_dir"] == str(swept_study.root / "storage" / "cache")
    assert Path(config["data_dir"]).is_absolute() and Path(config["data_dir"]).is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = CliRunner().invoke(app, ["train", "--config", str(best), "--epochs", "1", "--out", "run"])
    assert run.exit_code == 0, run.output
    assert (elsewhere / "run" / "model.pt").is_file()
    assert not (elsewhere / "storage").exists()  # the cache stayed where the sweep put it
