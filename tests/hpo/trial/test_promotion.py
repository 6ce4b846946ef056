"""Promotion from checkpoints (hpo/trial/_promotion.py): which pruned trial goes on, once, and that its curve
continues exactly where an uninterrupted run would be."""

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from maskcls_hpo.checkpoint import load_checkpoint
from maskcls_hpo.hpo.attrs import TrialAttrs, checkpoint_dir
from maskcls_hpo.hpo.launch import prepare_study
from maskcls_hpo.hpo.store import PROMOTED_KEY, open_storage, resolve_storage_url
from maskcls_hpo.hpo.trial import (
    Rungs,
    find_promotions,
    load_sweep,
    promote,
    resume_checkpoint,
    stage_ledger,
    top_fraction,
)
from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker
from maskcls_hpo.results.status import print_status
from maskcls_hpo.train import train

DISTRIBUTIONS = {"batch_size": CategoricalDistribution([16, 32]), "lr": FloatDistribution(1e-3, 1e-2, log=True)}
RUNGS = Rungs(min_resource=2, reduction_factor=2, min_early_stopping_rate=0)


def _add(study, state, rung_value, *, lr=0.005, reason=None, value=None):
    """A finished trial whose value at rung 0 (epoch 2) was `rung_value`, as the pruner stores it."""
    user_attrs = {TrialAttrs.REASON: reason} if reason else {}
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params={"batch_size": 16, "lr": lr},
            distributions=DISTRIBUTIONS,
            user_attrs=user_attrs,
            system_attrs={"completed_rung_0": rung_value},
            intermediate_values={1: rung_value / 2, 2: rung_value},
        )
    )
    return study.trials[-1]


def test_top_fraction_is_the_best_floor_n_over_eta():
    values = {"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.4, "e": 0.2}
    assert top_fraction(values, 2) == ["b", "d"]  # floor(5 / 2) = 2
    assert top_fraction(values, 3) == ["b"]
    assert top_fraction({"a": 0.9}, 2) == []  # fewer than eta trials at the rung: nothing is promotable yet
    assert top_fraction({"a": 0.2, "b": 0.2, "c": 0.1, "d": 0.0}, 2) == ["a", "b"]  # ties: earlier first


def test_a_pruned_trial_is_promoted_once_when_it_ranks_into_the_top(tmp_path):
    study = optuna.create_study(storage=resolve_storage_url(tmp_path / "s.db"), direction="maximize")
    root = tmp_path / "ckpt"
    _add(study, TrialState.COMPLETE, 0.6, value=0.7)
    paused = _add(study, TrialState.PRUNED, 0.3, lr=0.004, reason="pruned at epoch 2 (val macro F1 0.3000)")
    checkpoint_dir(root, paused.number).mkdir(parents=True)
    (checkpoint_dir(root, paused.number) / "last.pt").write_bytes(b"")
    # 2 trials at rung 0: only the best (0.6) is in the top floor(2/2) = 1
    assert find_promotions(study.trials, RUNGS, root) == []
    # out of memory and no checkpoint: never promoted, though 0.5 and 0.4 rank above the paused trial
    _add(study, TrialState.PRUNED, 0.5, reason="oom")
    _add(study, TrialState.PRUNED, 0.4, reason="pruned at epoch 2 (val macro F1 0.4000)")
    assert find_promotions(study.trials, RUNGS, root) == []  # the paused one is 4th of 4, top is 2
    for low in (0.1, 0.05, 0.0, 0.02):
        _add(study, TrialState.PRUNED, low, reason="pruned at epoch 2")
    (found,) = find_promotions(study.trials, RUNGS, root)  # 8 at rung 0, top 4: 0.6, 0.5, 0.4, 0.3
    assert found.trial.number == paused.number
    assert (found.rung, found.value, found.reached, found.top) == (0, 0.3, 8, 4)

    copy = promote(study, found, "test")
    assert promote(study, found, "another worker") is None  # one promotion per trial
    trials = study.get_trials()
    waiting = trials[copy]
    assert waiting.state == TrialState.WAITING and waiting.params == paused.params
    assert waiting.user_attrs[TrialAttrs.PROMOTED_FROM] == paused.number
    assert TrialAttrs.REASON not in waiting.user_attrs
    assert waiting.intermediate_values == {1: 0.15, 2: 0.3}
    assert waiting.system_attrs["completed_rung_0"] == 0.3
    # the mark that decided the race is in the database (a fresh read; the study's cache keeps finished trials)
    fresh = optuna.load_study(study_name=study.study_name, storage=resolve_storage_url(tmp_path / "s.db"))
    assert PROMOTED_KEY in fresh.trials[paused.number].system_attrs
    # the copy's inherited rung value counts once: nothing else is promotable, and the paused trial is done
    assert find_promotions(trials, RUNGS, root) == []


@pytest.mark.slow
def test_a_promoted_trial_continues_exactly_as_an_uninterrupted_run(tmp_path, tiny_sweep):
    sweep_path = tiny_sweep(
        epochs=4, pruner="optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2)"
    )
    url = resolve_storage_url(str(tmp_path / "study.db"))
    sweep = load_sweep(sweep_path)
    storage = open_storage(url)
    prepare_study(sweep, storage, "t", 2)
    study = optuna.load_study(study_name="t", storage=storage)
    _add(study, TrialState.COMPLETE, 0.99, value=0.99)  # far ahead at epoch 2: the next trial is pruned there
    params = {"batch_size": 16, "lr": 0.004}
    study.enqueue_trial(params)
    ckpt = tmp_path / "ckpt"

    def work(n_trials):
        options = RunOptions(checkpoints=ckpt, poll_interval=0.1)
        settings = WorkerSettings(
            sweep_path=sweep_path, storage_url=url, study_name="t", n_trials=n_trials, options=options
        )
        return run_worker(settings, sweep)

    work(2)
    first = study.get_trials()[1]
    assert first.state == TrialState.PRUNED and first.user_attrs[TrialAttrs.REASON].startswith("pruned at epoch 2")
    # three later configs did worse at epoch 2: of 5 at rung 0 the paused trial is 2nd, in the top 2
    for _ in range(3):
        _add(study, TrialState.PRUNED, 0.0, reason="pruned at epoch 2")
    work(6)
    trials = study.get_trials()
    copy = next(t for t in trials if t.user_attrs.get(TrialAttrs.PROMOTED_FROM) == first.number)
    assert copy.state == TrialState.COMPLETE and copy.user_attrs[TrialAttrs.RESUMED_AT_EPOCH] == 2
    assert copy.user_attrs[TrialAttrs.RESUMED_FROM] == str(checkpoint_dir(ckpt / "t", first.number) / "last.pt")
    assert len(trials) == 6 and sum(t.user_attrs.get(TrialAttrs.PROMOTED_FROM) is not None for t in trials) == 1

    # the same config trained 4 epochs in one go: the same curve, weights, optimizer and scheduler state
    straight = train(sweep.build_config(params), out_dir=tmp_path / "straight")
    assert copy.intermediate_values == {h.epoch: h.val_f1 for h in straight.history}
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(checkpoint_dir(ckpt / "t", copy.number) / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert a["scheduler"] == b["scheduler"]
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for p, q in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for name in p:
            torch.testing.assert_close(p[name], q[name], rtol=0, atol=0)

    # the ledger: the copy trained epochs 3-4 only; the promoted trial's epochs 3-4 were not "saved"
    ledger = stage_ledger([trials[first.number], copy])
    assert ledger["epochs"] == 4 and ledger["pruned"]["epochs_saved"] == 0 and ledger["promoted"] == 1
    # `status` says so under the compute ledger
    console = Console(record=True, width=200)
    print_status(optuna.load_study(study_name="t", storage=open_storage(url)), console)
    assert "1 pruned trial(s) promoted: continued from their checkpoints" in console.export_text()


def test_a_promoted_trial_resumes_from_its_own_checkpoint_once_it_has_one(tmp_path):
    """A promoted copy that is killed and re-queued resumes from the copy's last.pt, not the pruned trial's."""
    root = tmp_path / "ckpt"

    def frozen(number, retry_history=(), promoted_from=None):
        t = create_trial(
            state=TrialState.WAITING,
            user_attrs={} if promoted_from is None else {TrialAttrs.PROMOTED_FROM: promoted_from},
            system_attrs={"retry_history": list(retry_history)} if retry_history else {},
        )
        t.number = number
        return t

    def last(number):
        path = checkpoint_dir(root, number) / "last.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path

    pruned = last(3)
    assert resume_checkpoint(root, frozen(9, promoted_from=3)) == pruned
    # the copy (9) was killed before its first checkpoint: its re-queued copy (12) goes back to trial 3's
    retry = frozen(12, retry_history=[9], promoted_from=3)
    assert resume_checkpoint(root, retry) == pruned
    # once trial 9 wrote its own last.pt, that one is the most recent
    own = last(9)
    assert resume_checkpoint(root, retry) == own
    assert resume_checkpoint(root, frozen(13)) is None  # neither retried nor promoted: a fresh start
