"""hpo/workers/_progress.py: the snapshots of a real study the live views of `launch` are drawn from (the views
themselves: tests/results/test_live.py)."""

from __future__ import annotations

import optuna

from maskcls_hpo.hpo.store import open_storage, resolve_storage_url
from maskcls_hpo.hpo.workers import ProgressReader


def test_reader_snapshots_a_real_study(tmp_path):
    """Running trials with epochs from their config attr, finished trials reported once, a final frame."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(resolve_storage_url(tmp_path / "p.db"))
    study = optuna.create_study(study_name="p", storage=storage, direction="maximize")
    reader = ProgressReader(storage, study, n_trials=3, default_epochs=5)
    assert reader.snapshot(workers=2).phase == "starting"
    a, b = study.ask(), study.ask()
    a.set_user_attr("config", {"epochs": 3})
    a.report(0.25, 1)
    a.report(0.5, 2)
    a.set_user_attr("epoch_seconds", [2.0, 4.0])
    p = reader.snapshot(workers=2)
    assert p.phase == "running" and p.counts.running == 2
    ra, rb = p.running
    assert (ra.number, ra.epoch, ra.epochs, ra.value, ra.values) == (0, 2, 3, 0.5, {1: 0.25, 2: 0.5})
    assert ra.eta == 3.0  # one epoch left at the mean of 2 s and 4 s
    assert (rb.number, rb.epoch, rb.epochs, rb.value, rb.eta) == (1, 0, 5, None, None)  # the sweep's epochs
    assert ra.elapsed is not None and ra.elapsed >= 0
    assert p.finished == [] and p.best is None
    study.tell(a, 0.5)
    b.set_user_attr("reason", "pruned at epoch 1")
    b.report(0.125, 1)
    study.tell(b, state=optuna.trial.TrialState.PRUNED)
    p = reader.snapshot(workers=2)
    assert [(f.number, f.state, f.value, f.epoch, f.epochs) for f in p.finished] == [
        (0, "COMPLETE", 0.5, 2, 3),
        (1, "PRUNED", None, 1, 5),
    ]
    assert p.finished[1].reason == "pruned at epoch 1"
    assert (p.best, p.best_trial, p.running) == (0.5, 0, [])
    assert p.eta is not None  # 2 of 3 finished by this launch
    c = study.ask()
    c.report(0.1, 1)
    final = reader.snapshot(phase="interrupted")
    assert final.finished == []  # each trial is reported once
    assert final.running == [] and final.counts.running == 1 and final.final
