"""`confirm` (hpo/select/_confirm.py): the K best configs re-trained on F person-grouped folds as a linked study.

- end to end on SQLite with the CLI: 2 configs x 2 folds, each run once, means and the winner as printed,
  `export` takes the confirmed winner and says so (`--single-split` does not), `status` names it;
- with 2 worker processes on PostgreSQL;
- a run whose worker is killed mid-run resumes from its checkpoint when `confirm` is run again;
- bad input (too few COMPLETE trials, folds < 2, more folds than persons per stratum): one line, exit 1,
  nothing stored changed.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from helpers.pg import load_trials, wait_for, worker_pid
from optuna.trial import TrialState
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.hpo.attrs import ConfirmAttrs
from maskcls_hpo.hpo.select import summarize_confirm

FAST_HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "8"]


def _study_names(url: str) -> list[str]:
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        return sorted(optuna.get_all_study_names(storage))
    finally:
        storage.engine.dispose()


def _runs(trials) -> list[tuple[int, int, int]]:
    return sorted((t.params["source_trial"], t.params["fold"], t.params["seed_index"]) for t in trials)


@pytest.mark.slow
def test_confirm_end_to_end_then_export_takes_the_confirmed_winner(confirmed_source, tmp_path):
    done = confirmed_source
    assert done.rc == 0, done.stderr[-3000:]
    db = confirmed_source.copy(tmp_path)
    url = f"sqlite:///{db}"
    assert _study_names(url) == ["src", "src-confirm"]
    source = {t.number: t for t in load_trials(url, "src")}
    runs = load_trials(url, "src-confirm")
    assert [t.state for t in runs] == [TrialState.COMPLETE] * 4
    assert _runs(runs) == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]  # each config on each fold, once
    for t in runs:
        config = t.user_attrs["config"]
        assert (config["folds"], config["fold"], config["full_data"]) == (2, t.params["fold"], False)
        src_config = source[t.params["source_trial"]].user_attrs["config"]
        assert (config["lr"], config["batch_size"]) == (src_config["lr"], src_config["batch_size"])
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    study = optuna.load_study(study_name="src-confirm", storage=storage)
    attrs = study.user_attrs
    ranked = sorted(source.values(), key=lambda t: (-t.value, t.number))
    assert attrs[ConfirmAttrs.SOURCE] == "src" and attrs[ConfirmAttrs.SOURCE_TRIALS] == [t.number for t in ranked]
    assert (attrs[ConfirmAttrs.TOP], attrs[ConfirmAttrs.FOLDS], attrs[ConfirmAttrs.SEEDS], attrs["n_trials"]) == (
        2,
        2,
        1,
        4,
    )

    # the means and standard errors, by hand from the 4 stored values
    by_config = {n: [t.value for t in runs if t.params["source_trial"] == n] for n in source}
    means = {n: float(np.mean(v)) for n, v in by_config.items()}
    ses = {n: abs(v[0] - v[1]) / 2 for n, v in by_config.items()}  # std(ddof=1)/sqrt(2) of two values
    winner = max(means, key=lambda n: (means[n], -attrs[ConfirmAttrs.SOURCE_TRIALS].index(n)))
    summary = summarize_confirm(study)
    assert summary.winner.source_trial == winner and summary.finished
    for row in summary.rows:
        assert math.isclose(row.mean, means[row.source_trial]) and math.isclose(row.se, ses[row.source_trial])
    out = done.stdout
    for n in source:
        assert re.search(rf"^\s+{n}\s+{source[n].value:.4f}\s+{means[n]:.4f}\s+{ses[n]:.4f}\s+2/2", out, re.M), out
    assert f"winner: trial {winner} of 'src', mean val macro F1 {means[winner]:.4f}" in out
    storage.engine.dispose()

    # export: the confirmed winner by default, the single-split best with --single-split
    runner = CliRunner()
    best, single = tmp_path / "best.yaml", tmp_path / "single.yaml"
    exported = runner.invoke(app, ["export", "--study", "src", "--storage", str(db), "--out", str(best)])
    assert exported.exit_code == 0, exported.output
    assert "ranking: confirmed on 2 folds (study 'src-confirm')" in exported.output
    doc = yaml.safe_load(best.read_text())
    assert doc["trial"] == winner and doc["ranking"].startswith("confirmed on 2 folds")
    assert math.isclose(doc["confirm"]["mean"], means[winner]) and doc["confirm"]["folds"] == 2
    args = ["export", "--study", "src", "--storage", str(db), "--out", str(single), "--single-split"]
    assert "ranking: single validation split" in runner.invoke(app, args).output
    assert yaml.safe_load(single.read_text())["trial"] == ranked[0].number

    # status names the confirmed winner with the same figures (what export and finalize will use)
    shown = runner.invoke(app, ["status", "--study", "src", "--storage", str(db)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"confirm study 'src-confirm': winner: trial {winner} of 'src', mean val macro F1 {means[winner]:.4f}" in (
        shown.output
    )


@pytest.mark.postgres
@pytest.mark.slow
def test_confirm_with_two_workers_on_postgres(confirm_source, pg_database, tmp_path):
    import maskcls_hpo as m

    optuna.copy_study(from_study_name="src", from_storage=f"sqlite:///{confirm_source.db}", to_storage=pg_database)
    result = m.confirm(
        "src", top=2, folds=2, storage=pg_database, workers=2, logs=tmp_path / "logs", checkpoints=tmp_path / "ckpt"
    )
    assert result.reached, result.message
    runs = load_trials(pg_database, "src-confirm")
    assert [t.state for t in runs] == [TrialState.COMPLETE] * 4
    assert _runs(runs) == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]
    logs = [p.read_text() for p in sorted((tmp_path / "logs" / "src-confirm").glob("worker-*.log"))]
    assert len(logs) == 2 and all("stops: study holds 4 finished trials (target 4)" in text for text in logs)
    assert result.summary.winner is not None and len(result.summary.rows) == 2


RUN_CONFIRM = """
import sys
import maskcls_hpo as m
r = m.confirm("src", top=1, folds=2, storage=sys.argv[1], workers=1, overrides={"epochs": 5},
              heartbeat_interval=1, grace_period=8)
print("REACHED", r.reached, r.message)
"""


@pytest.mark.slow
def test_confirm_run_killed_mid_run_resumes_when_confirm_runs_again(confirm_source, tmp_path):
    db = confirm_source.copy(tmp_path)
    url = f"sqlite:///{db}"
    script = tmp_path / "run_confirm.py"
    script.write_text(textwrap.dedent(RUN_CONFIRM))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MASKCLS_HPO_STORAGE", None)
    first = subprocess.Popen(
        [sys.executable, str(script), url], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def mid_run():
        if "src-confirm" not in _study_names(url):
            return None
        for t in load_trials(url, "src-confirm"):
            if t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= 3 and "worker" in t.user_attrs:
                return t
        return None

    try:
        victim = wait_for(mid_run, timeout=300, what="a confirm run between epochs 1 and 3")
        os.kill(worker_pid(victim), signal.SIGKILL)
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert "REACHED False" in out.decode(), out.decode()[-2000:]
    time.sleep(9)  # > the grace period after the killed run's last heartbeat
    second = subprocess.run(
        [sys.executable, str(script), url], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert "REACHED True" in second.stdout, second.stdout[-2000:] + second.stderr[-3000:]
    trials = load_trials(url, "src-confirm")
    killed = next(t for t in trials if t.number == victim.number)
    copy = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert killed.state == TrialState.FAIL and copy.state == TrialState.COMPLETE
    assert copy.params == killed.params
    last_pt = db.parent / "checkpoints" / "src-confirm" / f"trial_{victim.number:05d}" / "last.pt"
    assert Path(copy.user_attrs["resumed_from"]).resolve() == last_pt.resolve()
    assert sorted(copy.intermediate_values) == [1, 2, 3, 4, 5]
    assert len(copy.user_attrs["epoch_seconds"]) == 5
    # exactly the budget: both folds of the top config and of the other known-good trial (the fixture's two
    # trials are both KNOWN_GOOD: always confirmed besides --top 1) COMPLETE, nothing left running or waiting
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert _runs(done) == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_confirm_bad_input_is_one_line_and_changes_nothing(confirm_source, tmp_path):
    db = confirm_source.copy(tmp_path)
    before = db.read_bytes()
    runner = CliRunner()
    cases = [
        (["--top", "3", "--folds", "2"], "study 'src' has 2 COMPLETE trial(s), --top asks for 3"),
        (["--top", "2", "--folds", "1"], "--folds must be between 2 and"),
        (["--top", "2", "--folds", "9"], "9 folds but stratum"),
        (["--top", "2", "--folds", "2", "--seeds", "0"], "--seeds must be between 1 and"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["confirm", "--study", "src", "--storage", str(db), *args])
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.output)
    assert _study_names(f"sqlite:///{db}") == ["src"]
    assert db.read_bytes() == before  # nothing stored changed
    joined = runner.invoke(app, ["worker", "--confirm", "--storage", str(db)])
    assert joined.exit_code == 1 and "--confirm needs --study NAME" in joined.output
