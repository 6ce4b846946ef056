"""`status`: trial counts by state, the best trial, running trials with their last heartbeat, stale trials.

The best trial is shown with the 95% person-bootstrap interval of its val macro F1 (user attrs
`val_f1_ci_low`/`val_f1_ci_high`), and with a line saying whether the runner-up is within noise of it (a
paired bootstrap on the shared validation persons: :mod:`maskcls_hpo.hpo.select`). When the study has a
linked confirm study (`maskcls-hpo confirm`), its winner and runner-up lines follow: the ranking that
`export` and `finalize` use (:func:`maskcls_hpo.hpo.select.selection_ranking`).

`status` fails stale trials itself (a RUNNING trial whose heartbeat is older than the grace period, or that
has no heartbeat and started longer ago than that: hpo/store/_stale.py), so a
study whose workers all died is cleaned up by just looking at it: the stale trial becomes FAIL and a copy
with the same params is queued (WAITING) to resume from its checkpoint.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from maskcls_hpo.hpo._optuna import rdb_models, rdb_of, storage_of, study_id_of, trial_id_of
from maskcls_hpo.hpo.attrs import StudyAttrs, TrialAttrs, slurm_label
from maskcls_hpo.hpo.select import (
    compare_runner_up,
    find_confirm_study,
    format_ledger,
    format_summary,
    selection_ranking,
    study_ledger,
    summarize_confirm,
)
from maskcls_hpo.hpo.store import (
    count_trials,
    db_now,
    fail_stale_trials,
    first_rung_warning,
    ranked_complete_trials,
    trial_ids,
)
from maskcls_hpo.hpo.trial import lr_range_line

__all__ = ["study_status", "print_status", "last_heartbeats"]


def last_heartbeats(study: optuna.Study) -> dict[int, dt.datetime]:
    """trial_id -> time of its last heartbeat (naive datetime as the storage keeps it)."""
    models = rdb_models()

    storage = rdb_of(storage_of(study))
    q = (
        sqlalchemy.select(models.TrialHeartbeatModel.trial_id, models.TrialHeartbeatModel.heartbeat)
        .join(models.TrialModel, models.TrialModel.trial_id == models.TrialHeartbeatModel.trial_id)
        .where(models.TrialModel.study_id == study_id_of(study))
    )
    with storage.engine.connect() as con:
        return {tid: hb for tid, hb in con.execute(q)}


def study_status(
    study: optuna.Study, storage_url: str | None = None, checkpoints: str | Path | None = None
) -> dict[str, Any]:
    """Everything `status` prints, as plain data.

    Reads counts with one SQL ``GROUP BY`` and loads only the RUNNING trials and the best COMPLETE one, so
    the cost does not grow with the study's size (benchmarks/b6_study_size.py).

    Args:
        storage_url, checkpoints: where the trials' `val_predictions.csv` are found for the runner-up
            comparison (:func:`maskcls_hpo.hpo.select.compare_runner_up`); without either there is none.

    Returns:
        {"study", "n_trials", "budget_epochs" (None without ``--budget-epochs``),
         "counts": {complete, pruned, failed, running, waiting, finished},
         "stale_failed": [trial numbers failed as stale by this call],
         "best": {number, value, accuracy, ci_low, ci_high, params} | None,
         "runner_up": RunnerUpComparison.as_dict() | None (fewer than 2 COMPLETE trials, or nowhere to look),
         "confirm": {study, finished, runs_finished, runs, winner (source trial number or None), lines} | None
         (no linked confirm study; `lines` are the winner and runner-up lines that `confirm` prints),
         "known_good": KnownGoodComparison.as_dict() | None (the ranking's winner against the known-good trial on
         the same persons; None without a COMPLETE known-good trial or nowhere to look),
         "ledger": the compute ledger by stage as the workers last stored it
         (:func:`~maskcls_hpo.hpo.select.study_ledger`),
         "running": [{number, last_epoch, heartbeat_age_s, worker, slurm}]}; `slurm` is the Slurm job and
         array task the trial runs in (``"12_1"``; None outside Slurm);
         "lr_range": the line of the study's learning-rate range test (None without one);
         "warning": more than half of the finished trials pruned at the first rung (None otherwise).
    """
    storage, study_id = storage_of(study), study_id_of(study)
    rdb = rdb_of(storage)
    grace = rdb.grace_period if rdb.grace_period is not None else 2 * (rdb.heartbeat_interval or 60)
    stale = sorted(fail_stale_trials(study, grace))
    # only the RUNNING trials and the best one are loaded, never the whole study
    running = [storage.get_trial(tid) for tid in trial_ids(storage, study_id, (TrialState.RUNNING,))]
    c = count_trials(storage, study_id)
    ranked = ranked_complete_trials(study, limit=1)
    best = None
    if ranked:
        b = ranked[0]
        best = {
            "number": b.number,
            "value": b.value,
            "accuracy": b.user_attrs.get(TrialAttrs.ACCURACY),
            "ci_low": b.user_attrs.get(TrialAttrs.VAL_F1_CI_LOW),
            "ci_high": b.user_attrs.get(TrialAttrs.VAL_F1_CI_HIGH),
            "params": b.params,
        }
    rows = _running_rows(study, running)
    return {
        "study": study.study_name,
        "n_trials": study.user_attrs.get(StudyAttrs.N_TRIALS),
        "budget_epochs": study.user_attrs.get(StudyAttrs.BUDGET_EPOCHS),
        "counts": {
            "complete": c.complete,
            "pruned": c.pruned,
            "failed": c.failed,
            "running": c.running,
            "waiting": c.waiting,
            "finished": c.finished,
        },
        "stale_failed": stale,
        "best": best,
        "runner_up": _runner_up(study, storage_url, checkpoints),
        "confirm": _confirm(study),
        "known_good": _known_good(study, storage_url, checkpoints),
        "ledger": study_ledger(study, fresh=False),
        "running": rows,
        "lr_range": lr_range_line(study.user_attrs.get(StudyAttrs.LR_RANGE)),
        "warning": first_rung_warning(storage, study_id, c.finished) if c.pruned else None,
    }


def _running_rows(study: optuna.Study, running: list[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per RUNNING trial: number, last epoch, heartbeat age (database clock), worker, Slurm task."""
    beats = last_heartbeats(study)
    now = db_now(rdb_of(storage_of(study)).engine)
    rows = []
    for t in running:
        hb = beats.get(trial_id_of(t))
        rows.append(
            {
                "number": t.number,
                "last_epoch": t.last_step,
                "heartbeat_age_s": round((now - hb).total_seconds(), 1) if hb is not None else None,
                "worker": t.user_attrs.get(TrialAttrs.WORKER),
                "slurm": slurm_label(t.user_attrs),
            }
        )
    return rows


def _confirm(study: optuna.Study) -> dict[str, Any] | None:
    linked = find_confirm_study(study)
    if linked is None:
        return None
    summary = summarize_confirm(linked)
    return {
        "study": linked.study_name,
        "finished": summary.finished,
        "runs_finished": summary.counts.finished,
        "runs": summary.n_trials,
        "winner": summary.winner.source_trial if summary.finished and summary.winner else None,
        "lines": format_summary(summary)[1 + len(summary.rows) :],
    }


def _known_good(study: optuna.Study, storage_url: str | None, checkpoints: str | Path | None) -> dict[str, Any] | None:
    """The winner of the ranking `export` uses against the known-good (None without one, or nowhere to look)."""
    if storage_url is None and checkpoints is None:
        return None
    ranking = selection_ranking(study, limit=1, known_good=True, storage_url=storage_url, checkpoints=checkpoints)
    return ranking.reference.as_dict() if ranking.reference is not None else None


def _runner_up(study: optuna.Study, storage_url: str | None, checkpoints: str | Path | None) -> dict[str, Any] | None:
    if storage_url is None and checkpoints is None:
        return None
    comparison = compare_runner_up(study, storage_url=storage_url, checkpoints=checkpoints)
    return comparison.as_dict() if comparison is not None else None


def print_status(
    study: optuna.Study, console: Console, storage_url: str | None = None, checkpoints: str | Path | None = None
) -> dict[str, Any]:
    """Print :func:`study_status` as tables on `console`; returns the data."""
    s = study_status(study, storage_url=storage_url, checkpoints=checkpoints)
    c = s["counts"]
    target = f" of {s['n_trials']}" if s["n_trials"] else ""
    if s["budget_epochs"]:
        target += f"; {s['ledger']['sweep']['epochs']} of {s['budget_epochs']} epochs"
    console.print(f"study '{s['study']}': {c['finished']} finished{target}", highlight=False)
    t = Table(show_header=True, header_style="bold")
    for col in ("complete", "pruned", "failed", "running", "waiting"):
        t.add_column(col, justify="right")
    t.add_row(*(str(c[k]) for k in ("complete", "pruned", "failed", "running", "waiting")))
    console.print(t)
    if s["lr_range"]:
        console.print(s["lr_range"], highlight=False, soft_wrap=True)
    if s["warning"]:
        console.print(s["warning"], style="yellow", highlight=False, soft_wrap=True)
    if s["best"]:
        b = s["best"]
        acc = f", accuracy {b['accuracy']:.4f}" if isinstance(b["accuracy"], int | float) else ""
        ci = ""
        if isinstance(b["ci_low"], int | float) and isinstance(b["ci_high"], int | float):
            ci = f" (95% interval {b['ci_low']:.4f}-{b['ci_high']:.4f}, bootstrap over val persons)"
        console.print(f"best: trial {b['number']}, val macro F1 {b['value']:.4f}{ci}{acc}", highlight=False)
        console.print("  params: " + ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items()), highlight=False)
        if s["runner_up"]:
            console.print(s["runner_up"]["message"], highlight=False, soft_wrap=True)
    else:
        console.print("best: no COMPLETE trial yet", highlight=False)
    if s["confirm"]:
        cf = s["confirm"]
        if cf["finished"]:
            for line in cf["lines"]:
                console.print(f"confirm study '{cf['study']}': {line}", highlight=False, soft_wrap=True)
        else:
            console.print(
                f"confirm study '{cf['study']}': {cf['runs_finished']} of {cf['runs']} runs finished (run "
                "`maskcls-hpo confirm` again to finish it; until then export and finalize use the single split)",
                highlight=False,
                soft_wrap=True,
            )
    if s["known_good"]:
        console.print(s["known_good"]["message"], highlight=False, soft_wrap=True)
    for line in format_ledger(s["ledger"]):
        console.print(line, highlight=False, soft_wrap=True)
    if s["stale_failed"]:
        console.print(f"stale trials failed and re-queued: {s['stale_failed']}", highlight=False)
    if s["running"]:
        rt = Table(title="running trials", show_header=True, header_style="bold")
        with_slurm = any(r["slurm"] for r in s["running"])
        for col in ("trial", "last epoch", "last heartbeat (s ago)", "worker", *(["slurm job"] if with_slurm else [])):
            rt.add_column(col)
        for r in s["running"]:
            rt.add_row(
                str(r["number"]),
                str(r["last_epoch"] or "-"),
                "-" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.0f}",
                str(r["worker"] or "-"),
                *([str(r["slurm"] or "-")] if with_slurm else []),
            )
        console.print(rt)
    return s


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
