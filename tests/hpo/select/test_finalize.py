"""`finalize` (hpo/select/_finalize.py): the winner retrained on all persons with N seeds, ensembled, the submission.

- after `confirm` (the confirmed winner) on the tiny demo set: 2 seeds with TTA, one row per eval image, the
  models and configs kept, the manifest saying which ranking chose them; a second run reuses the models;
- no eval set, or more configs than COMPLETE trials: one line, exit 1, nothing trained or written.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from helpers.pg import cli
from typer.testing import CliRunner

from maskcls_hpo.cli import app


@pytest.mark.slow
def test_finalize_after_confirm_writes_the_submission_and_keeps_the_models(confirmed_source, confirm_source, tmp_path):
    import optuna

    from maskcls_hpo.hpo.select import summarize_confirm

    assert confirmed_source.rc == 0, confirmed_source.stderr[-3000:]
    db = confirmed_source.copy(tmp_path)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_table_creation=True)
    winner = summarize_confirm(optuna.load_study(study_name="src-confirm", storage=storage)).winner.source_trial
    storage.engine.dispose()

    done = cli(
        ["finalize", "--study", "src", "--storage", str(db), "--seeds", "2", "--tta", "--out", "sub.csv"],
        cwd=tmp_path,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = pd.read_csv(confirm_source.data / "eval" / "info.csv")
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub.columns) == ["ImageID", "ans"] and sub["ImageID"].tolist() == info["ImageID"].tolist()
    assert sub["ans"].between(0, 17).all()
    folder = tmp_path / "finalize" / "src"  # beside the SQLite file
    manifest = json.loads((folder / "finalize.json").read_text())
    assert manifest["ranking"] == "confirmed on 2 folds (study 'src-confirm')" and manifest["confirmed"]
    assert [(x["trial"], x["seed"]) for x in manifest["models"]] == [(winner, 42), (winner, 43)]
    assert manifest["tta"] is True and manifest["rows"] == len(info)
    for seed in (42, 43):
        model_dir = folder / f"trial_{winner:05d}-seed_{seed}"
        assert (model_dir / "model.pt").is_file()
        config = yaml.safe_load((model_dir / "config.yaml").read_text())
        assert (config["full_data"], config["folds"], config["seed"]) == (True, None, seed)
    assert "2 trained, 0 reused" in done.stderr and "ranking: confirmed on 2 folds" in done.stderr

    args = ["finalize", "--study", "src", "--storage", str(db), "--seeds", "2", "--tta"]
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "sub2.csv")])
    assert again.exit_code == 0, again.output
    assert "0 trained, 2 reused" in again.output
    assert pd.read_csv(tmp_path / "sub2.csv").equals(sub)  # the same models predict the same classes


def test_finalize_without_eval_set_is_one_line_and_writes_nothing(confirm_source, tmp_path):
    db = confirm_source.copy(tmp_path)
    no_eval = tmp_path / "no_eval"
    shutil.copytree(confirm_source.data / "train", no_eval / "train")
    out = tmp_path / "sub.csv"
    args = ["finalize", "--study", "src", "--storage", str(db), "--data-dir", str(no_eval), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "eval/info.csv" in lines[0] and "not found" in lines[0], result.output
    assert not out.exists() and not (tmp_path / "finalize").exists()


def test_finalize_refuses_more_configs_than_complete_trials(confirm_source, tmp_path):
    db = confirm_source.copy(tmp_path)
    result = CliRunner().invoke(app, ["finalize", "--study", "src", "--storage", str(db), "--top", "3"])
    assert result.exit_code == 1
    assert "study 'src' has 2 COMPLETE trial(s), --top asks for 3" in result.output
    assert not (tmp_path / "finalize").exists()
