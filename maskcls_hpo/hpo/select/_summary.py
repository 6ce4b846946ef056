"""What a confirm study says: per-config mean val macro F1 over folds, its standard error, the winner."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from maskcls_hpo.errors import ConfirmError
from maskcls_hpo.hpo._optuna import storage_of, study_id_of
from maskcls_hpo.hpo.attrs import KIND_CONFIRM, ConfirmAttrs, StudyAttrs
from maskcls_hpo.hpo.select._race import RaceReport, race_lines, race_report
from maskcls_hpo.hpo.store import StudyCounts, count_trials
from maskcls_hpo.hpo.trial import run_key
from maskcls_hpo.metrics import corrected_fold_interval


@dataclass
class ConfirmRow:
    """One confirmed config.

    Attributes:
        source_trial: trial number in the source study; single_rank: its place (1 = best) in the source
            study's single-split ranking; single_value: its single-split val macro F1.
        fold_values: val macro F1 by fold (the mean over seeds when R > 1), folds with a COMPLETE run only.
        runs_done / runs_total: COMPLETE runs of this config / F * R.
        mean: mean of `fold_values` (NaN without any); se: its standard error, ``std(ddof=1) / sqrt(F)``
            (NaN with fewer than 2 folds). Folds share training persons, so this standard error is the usual
            K-fold one, which tends to be optimistic.
        known_good: the config is a known-good trial of the source study (confirmed besides the top K).
    """

    source_trial: int
    single_rank: int
    single_value: float
    fold_values: dict[int, float]
    runs_done: int
    runs_total: int
    mean: float
    se: float
    known_good: bool = False

    @property
    def complete(self) -> bool:
        """Every run of this config is COMPLETE."""
        return self.runs_done == self.runs_total


@dataclass
class ConfirmSummary:
    """What a confirm study says.

    Attributes:
        study_name, source_study, folds, seeds: as stored.
        rows: one per confirmed config, best mean first (complete configs before incomplete ones).
        counts: trials by state; n_trials: the budget (F * R * K); finished: the budget is reached.
        winner: the best complete row (None when no config has all its runs).
        runner_up_diff: winner minus runner-up, mean over the folds both have (None without a runner-up);
        runner_up_interval: a 95% interval of that paired difference, the t-interval corrected for folds that
            share training persons (:func:`maskcls_hpo.metrics.corrected_fold_interval`, Nadeau & Bengio 2003);
        within_noise: the interval contains 0.
        race: what the race stopped and the epochs it saved (None when the confirm is not a race).
    """

    study_name: str
    source_study: str
    folds: int
    seeds: int
    rows: list[ConfirmRow]
    counts: StudyCounts
    n_trials: int
    winner: ConfirmRow | None = None
    runner_up_diff: float | None = None
    runner_up_interval: tuple[float, float] | None = None
    within_noise: bool | None = None
    race: RaceReport | None = None

    @property
    def finished(self) -> bool:
        return self.counts.finished >= self.n_trials

    @property
    def label(self) -> str:
        """``confirmed on 5 folds`` / ``confirmed on 3 folds x 2 seeds``."""
        seeds = f" x {self.seeds} seeds" if self.seeds > 1 else ""
        return f"confirmed on {self.folds} folds{seeds}"


def summarize_confirm(study: optuna.Study) -> ConfirmSummary:
    """Mean val macro F1 over folds, standard error and the winner of confirm study `study`.

    Raises:
        ConfirmError: `study` is not a confirm study.
    """
    attrs = study.user_attrs
    if attrs.get(ConfirmAttrs.KIND) != KIND_CONFIRM:
        raise ConfirmError(f"study '{study.study_name}' is not a confirm study (made by `maskcls-hpo confirm`)")
    folds, seeds = int(attrs[ConfirmAttrs.FOLDS]), int(attrs[ConfirmAttrs.SEEDS])
    sources = [int(n) for n in attrs[ConfirmAttrs.SOURCE_TRIALS]]
    values = [float(v) for v in attrs.get(ConfirmAttrs.SOURCE_VALUES, [math.nan] * len(sources))]
    runs: dict[int, dict[int, list[float]]] = {n: {} for n in sources}
    done = dict.fromkeys(sources, 0)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = run_key(t.params)
        if key is None or key[0] not in runs or t.value is None or not math.isfinite(t.value):
            continue
        runs[key[0]].setdefault(key[1], []).append(float(t.value))
        done[key[0]] += 1
    rows = []
    known = {int(n) for n in attrs.get(ConfirmAttrs.KNOWN_GOOD, [])}
    for rank, (n, single) in enumerate(zip(sources, values, strict=True), start=1):
        by_fold = {f: float(np.mean(v)) for f, v in sorted(runs[n].items())}
        arr = np.array(list(by_fold.values()), dtype=float)
        mean = float(arr.mean()) if len(arr) else math.nan
        se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) >= 2 else math.nan
        rows.append(ConfirmRow(n, rank, single, by_fold, done[n], folds * seeds, mean, se, n in known))
    rows.sort(key=lambda r: (not r.complete, -(r.mean if math.isfinite(r.mean) else -math.inf), r.single_rank))
    counts = count_trials(storage_of(study), study_id_of(study))
    n_trials = int(attrs.get(StudyAttrs.N_TRIALS, folds * seeds * len(sources)))
    summary = ConfirmSummary(study.study_name, attrs[ConfirmAttrs.SOURCE], folds, seeds, rows, counts, n_trials)
    summary.race = race_report(study)
    complete = [r for r in rows if r.complete]
    if complete:
        summary.winner = complete[0]
    if len(complete) >= 2:
        a, b = complete[0], complete[1]
        common = sorted(set(a.fold_values) & set(b.fold_values))
        diff = np.array([a.fold_values[f] - b.fold_values[f] for f in common])
        summary.runner_up_diff = float(diff.mean())
        if len(diff) >= 2:
            _, low, high = corrected_fold_interval(diff, folds)
            summary.runner_up_interval = (low, high)
            summary.within_noise = low <= 0.0
    return summary


def find_confirm_study(source: optuna.Study) -> optuna.Study | None:
    """The confirm study linked to `source` in the same storage (the newest finished one; else the newest)."""
    storage = storage_of(source)
    found = []
    for s in storage.get_all_studies():  # study rows and attrs only (summaries would load every trial)
        a = s.user_attrs
        if a.get(ConfirmAttrs.KIND) == KIND_CONFIRM and a.get(ConfirmAttrs.SOURCE) == source.study_name:
            found.append(s)
    if not found:
        return None
    studies = [optuna.load_study(study_name=s.study_name, storage=storage) for s in found]
    studies.sort(key=lambda st: study_id_of(st))
    finished = [
        st
        for st in studies
        if count_trials(storage, study_id_of(st)).finished >= st.user_attrs.get(StudyAttrs.N_TRIALS, 1)
    ]
    return (finished or studies)[-1]


def format_summary(summary: ConfirmSummary) -> list[str]:
    """The lines `confirm` prints: one per config (mean +- standard error over folds), then the winner."""
    lines = [
        f"{'trial':>5} {'single-split':>12} {'mean (' + str(summary.folds) + ' folds)':>16} {'s.e.':>7} "
        f"{'runs':>6}  fold values"
    ]
    for r in summary.rows:
        folds = " ".join(f"{v:.4f}" for v in r.fold_values.values())
        lines.append(
            f"{r.source_trial:>5} {r.single_value:>12.4f} {r.mean:>16.4f} {r.se:>7.4f} "
            f"{r.runs_done:>3}/{r.runs_total:<2}  {folds}{'  (known-good)' if r.known_good else ''}"
        )
    lines.extend(race_lines(summary.race))
    w = summary.winner
    if w is None:
        lines.append("no winner yet: no config has all its runs COMPLETE")
        return lines
    line = (
        f"winner: trial {w.source_trial} of '{summary.source_study}', mean val macro F1 {w.mean:.4f} +- {w.se:.4f} "
        f"(s.e., {summary.label}; single split ranked it {w.single_rank})"
    )
    lines.append(line)
    if summary.runner_up_interval is not None:
        lo, hi = summary.runner_up_interval
        verdict = "within noise" if summary.within_noise else "ahead beyond noise"
        second = next(r for r in summary.rows if r.complete and r is not w)
        lines.append(
            f"runner-up trial {second.source_trial}: the winner leads by {summary.runner_up_diff:.4f} on the same "
            f"folds, 95% interval [{lo:+.4f}, {hi:+.4f}]: {verdict}"
        )
    return lines
