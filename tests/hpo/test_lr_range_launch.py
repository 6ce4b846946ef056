"""`LR_RANGE_TEST = True` in a sweep file: `launch` runs the range test on the base config, stores it in the study
(``lr_range`` user attr), the sampler draws lr from it, and `status` / `report` show it; `maskcls-hpo lr-range`
runs the same test and stores nothing."""

from __future__ import annotations

import optuna
import pytest
from rich.console import Console
from typer.testing import CliRunner

import maskcls_hpo as m
from maskcls_hpo.cli import app
from maskcls_hpo.errors import SweepError
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.hpo.workers import SweepEvents
from maskcls_hpo.results.report import report_html
from maskcls_hpo.results.status import print_status


@pytest.mark.slow
def test_launch_measures_the_lr_range_and_the_sampler_draws_from_it(tmp_path, tiny_sweep):
    sweep = tiny_sweep(epochs=1, extra="\nLR_RANGE_TEST = True\n")
    db = tmp_path / "nb.db"
    messages: list[str] = []
    result = m.run_sweep(sweep, 2, storage=db, workers=1, events=SweepEvents(on_message=messages.append))
    assert result.reached, result.message
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    found = study.user_attrs["lr_range"]
    assert 1e-6 <= found["low"] < found["high"] <= 1.0 and found["steps"] == 200
    assert (found["model"], found["image_size"], found["batch_size"]) == ("test_resnet", [32, 24], 32)
    assert len(found["lrs"]) == found["steps_run"] == len(found["smoothed"])
    for t in study.trials:  # not the file's 1e-3 .. 1e-2
        dist = t.distributions["lr"]
        assert (dist.low, dist.high, dist.log) == (found["low"], found["high"], True)
        assert found["low"] <= t.params["lr"] <= found["high"]
    line = f"lr range {found['low']:.3g} .. {found['high']:.3g} (range test: test_resnet 32x24, batch 32,"
    assert any(msg.startswith(line) for msg in messages)
    console = Console(record=True, width=300)
    assert print_status(study, console)["lr_range"].startswith(line) and line in console.export_text()
    assert line in report_html(study)
    # a worker that joins reads the range from the study: the same search space, no refusal
    joined = load_sweep(sweep)
    joined.check_study_compatible(study)
    assert joined.lr_range == (found["low"], found["high"])


def test_lr_range_test_must_be_a_bool(tmp_path, tiny_sweep):
    with pytest.raises(SweepError, match="LR_RANGE_TEST must be True or False, got 'yes'"):
        load_sweep(tiny_sweep(extra="\nLR_RANGE_TEST = 'yes'\n"))


@pytest.mark.slow
def test_lr_range_verb_prints_the_range_and_the_sweep_files(tmp_path, tiny_sweep, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["lr-range", str(tiny_sweep(epochs=1)), "--steps", "60"])
    assert done.exit_code == 0, done.output
    assert "lr range " in done.output and "(range test: test_resnet 32x24, batch 32, " in done.output
    assert "the sweep file draws lr from 0.001 .. 0.01" in done.output
    assert not list(tmp_path.glob("*.db"))  # stores nothing
    bad = CliRunner().invoke(app, ["lr-range", str(tiny_sweep(epochs=1)), "--steps", "5"])
    assert bad.exit_code == 1 and "--steps must be 10 or more, got 5" in bad.output
