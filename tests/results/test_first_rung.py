"""The first-rung warning of `status` and the live view (hpo/store/_queries.py ``first_rung_warning``), on a real
SQLite study: 6 finished trials, 4 pruned at epoch 1 (the first rung), 1 pruned at epoch 2, 1 complete."""

from __future__ import annotations

import optuna
from rich.console import Console

from maskcls_hpo.hpo._optuna import study_id_of
from maskcls_hpo.hpo.store import StudyCounts, first_rung_warning, pruned_at_steps
from maskcls_hpo.hpo.workers import Progress
from maskcls_hpo.results.live import ProgressLines, progress_table
from maskcls_hpo.results.status import print_status


def _study(tmp_path, pruned_at: list[int], complete: int) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for last in pruned_at:
        t = study.ask()
        for epoch in range(1, last + 1):
            t.report(0.1, epoch)
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    for _ in range(complete):
        t = study.ask()
        for epoch in (1, 2, 3):
            t.report(0.5, epoch)
        study.tell(t, 0.5)
    t = study.ask()  # pruned without a reported epoch (e.g. out of memory): a pruner never judged it
    study.tell(t, state=optuna.trial.TrialState.PRUNED)
    return study


def test_more_than_half_pruned_at_the_first_rung_is_warned_in_status_and_the_live_view(tmp_path):
    study = _study(tmp_path, pruned_at=[1, 1, 1, 1, 2], complete=1)
    storage = study._storage
    assert pruned_at_steps(storage, study_id_of(study)) == {1: 4, 2: 1}
    warning = first_rung_warning(storage, study_id_of(study), finished=7)
    assert warning is not None and warning.startswith(
        "warning: 4 of 7 finished trials were pruned at the first rung (epoch 1)"
    )
    console = Console(record=True, width=300)
    status = print_status(study, console)
    assert status["warning"] == warning and warning in console.export_text()
    p = Progress("s", 10, StudyCounts(complete=1, pruned=6), 0.5, [], 12.0, warning=warning)
    lines = ProgressLines()
    assert f"[0:12] {warning}" in lines(p)
    assert not any("warning" in line for line in lines(p))  # said once
    table = Console(record=True, width=300)
    table.print(progress_table(p))
    assert "pruned at the first rung" in table.export_text()


def test_half_or_fewer_at_the_first_rung_is_no_warning(tmp_path):
    study = _study(tmp_path, pruned_at=[1, 1, 2], complete=2)  # 2 of 6 finished at the first rung
    assert first_rung_warning(study._storage, study_id_of(study), finished=6) is None
    assert print_status(study, Console(record=True))["warning"] is None
