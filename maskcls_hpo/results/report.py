"""`report`: one self-contained HTML page that shows what mattered in a study.

The page holds Optuna's plotly figures (:mod:`optuna.visualization`: optimization history, intermediate
values, parallel coordinates, parameter importances, slice) and a table of the top COMPLETE trials (val
macro F1 with its 95% person-bootstrap interval, accuracy, best epoch, params). plotly.js is embedded once,
inline, so the file opens offline and links to no CDN. Every text taken from the study (names, params, attrs)
is HTML-escaped; the figures' JSON is written by plotly, which escapes ``<``, ``>`` and ``/``.

A figure that cannot be drawn (no COMPLETE trial yet, fewer than 2 for importances, no intermediate values)
is replaced by a one-line note saying why.

Below the top trials: the best trial's section (its numbers, its 95% val macro F1 interval when the trial
carries one, its validation confusion matrix image and per-class F1 table, both read from the trial's
artifacts ``confusion_matrix.png`` / ``per_class_f1.csv``) and the pruned and failed trials (counts by
reason, then each trial's last epoch and reason). Every figure is as wide as the page: Optuna's slice plot
(300 px per parameter) is drawn in rows of :data:`SLICE_PER_ROW` parameters.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import functools
import html
import io
import json
import logging
import math
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import plotly
import plotly.graph_objects as go
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo._util import atomic_write_text, check_output_file, check_whole_number
from maskcls_hpo.errors import ExportError
from maskcls_hpo.hpo._optuna import rdb_models, rdb_of, storage_of, study_id_of
from maskcls_hpo.hpo.attrs import OBJECTIVE_LABEL, PRUNED_REASON, StudyAttrs, TrialAttrs
from maskcls_hpo.hpo.select import MAX_TOP, STAGES, selection_ranking, study_ledger
from maskcls_hpo.hpo.store import mask_password, ranked_complete_trials, uses_sql
from maskcls_hpo.hpo.trial import lr_range_line

__all__ = ["write_report", "report_html", "report_figures", "ReportFigure", "StudyDigest", "TARGET_NAME", "PLOT_TOP"]

log = logging.getLogger(__name__)

TARGET_NAME = OBJECTIVE_LABEL
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


class ReportFigure:
    """One section of the report: a plotly figure, or `note` (why there is none)."""

    def __init__(self, key: str, title: str, figure: go.Figure | None = None, note: str = "") -> None:
        self.key = key
        self.title = title
        self.figure = figure
        self.note = note


PLOT_TOP = 100
"""Per-trial figures (intermediate values, parallel coordinates, slice) draw the best this many COMPLETE
trials (and as many of the latest PRUNED/FAIL trials for the intermediate values), so that the file stays a
few MB at 10,000 trials (benchmarks/b6_study_size.py)."""

IMPORTANCE_SAMPLE = 1000
"""Parameter importances are fitted on at most this many COMPLETE trials (a seeded random sample)."""


class StudyDigest:
    """What the report draws, read once: counts and (number, state, value) of every trial, full trials only
    for the best `plot_top` COMPLETE ones and the latest `plot_top` others with epochs, params + values of a
    sample of COMPLETE trials for the importances.

    With an SQL storage the per-trial rows come from one query on trial numbers/states/values (no attrs,
    params or intermediate values), so memory and time grow with the number of trials only through those
    three columns. Other storages (in memory) are read through ``study.get_trials``.

    Attributes:
        counts: TrialState -> number of trials.
        rows: [(number, state, value or None)], by number; value = objective 0 when finite.
        top: the best `plot_top` COMPLETE trials (FrozenTrial), best first.
        others: up to `plot_top` latest non-COMPLETE trials with intermediate values (FrozenTrial).
        sample: up to `importance_sample` COMPLETE trials with params, distributions and value only.
        has_intermediate: any trial reported an epoch.
    """

    def __init__(self, study: optuna.Study, plot_top: int | None = None, importance_sample: int | None = None) -> None:
        plot_top = PLOT_TOP if plot_top is None else plot_top
        importance_sample = IMPORTANCE_SAMPLE if importance_sample is None else importance_sample

        self.plot_top = plot_top
        self.top = ranked_complete_trials(study, limit=plot_top)
        rng = random.Random(0)
        if uses_sql(study):
            self._from_sql(study, plot_top, importance_sample, rng)
            return
        trials = study.get_trials(deepcopy=False)
        self.counts = dict.fromkeys(TrialState, 0)
        for t in trials:
            self.counts[t.state] += 1
        self.rows = [(t.number, t.state, _finite(t.value) if t.state == TrialState.COMPLETE else None) for t in trials]
        self.others = [t for t in trials if t.state != TrialState.COMPLETE and t.intermediate_values][-plot_top:]
        self.has_intermediate = any(t.intermediate_values for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and _finite(t.value) is not None]
        self.sample = complete if len(complete) <= importance_sample else rng.sample(complete, importance_sample)

    def _from_sql(self, study: optuna.Study, plot_top: int, importance_sample: int, rng: random.Random) -> None:

        m = rdb_models()
        storage, sid = storage_of(study), study_id_of(study)
        engine = rdb_of(storage).engine
        value = (
            sqlalchemy.select(m.TrialValueModel.trial_id, m.TrialValueModel.value)
            .where(
                m.TrialValueModel.objective == 0,
                m.TrialValueModel.value_type == m.TrialValueModel.TrialValueType.FINITE,
            )
            .subquery()
        )
        has_steps = sqlalchemy.exists().where(m.TrialIntermediateValueModel.trial_id == m.TrialModel.trial_id)
        query = (
            sqlalchemy.select(m.TrialModel.trial_id, m.TrialModel.number, m.TrialModel.state, value.c.value, has_steps)
            .outerjoin(value, value.c.trial_id == m.TrialModel.trial_id)
            .where(m.TrialModel.study_id == sid)
            .order_by(m.TrialModel.number)
        )
        with engine.connect() as con:
            raw = [
                (tid, n, TrialState[st] if isinstance(st, str) else TrialState(st), v, bool(h))
                for tid, n, st, v, h in con.execute(query)
            ]
        self.counts = dict.fromkeys(TrialState, 0)
        for r in raw:
            self.counts[r[2]] += 1
        self.rows = [(n, st, v if st == TrialState.COMPLETE else None) for _, n, st, v, _ in raw]
        self.has_intermediate = any(r[4] for r in raw)
        others = [tid for tid, _, st, _, h in raw if st != TrialState.COMPLETE and h][-plot_top:]
        self.others = [storage.get_trial(tid) for tid in others]
        complete = [(tid, v) for tid, _, st, v, _ in raw if st == TrialState.COMPLETE and v is not None]
        if len(complete) > importance_sample:
            complete = rng.sample(complete, importance_sample)
        self.sample = _params_only(engine, m, complete)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _params_only(engine: sqlalchemy.engine.Engine, m: ModuleType, trials: list[tuple[int, float]]) -> list[FrozenTrial]:
    """COMPLETE FrozenTrials with only params, distributions and value, from the trial_params table."""
    by_trial: dict[int, tuple[dict, dict]] = {tid: ({}, {}) for tid, _ in trials}
    cache: dict[str, Any] = {}
    ids = list(by_trial)
    with engine.connect() as con:
        for i in range(0, len(ids), 500):  # IN lists of 500 stay under every database's parameter limit
            q = sqlalchemy.select(
                m.TrialParamModel.trial_id,
                m.TrialParamModel.param_name,
                m.TrialParamModel.param_value,
                m.TrialParamModel.distribution_json,
            ).where(m.TrialParamModel.trial_id.in_(ids[i : i + 500]))
            for tid, name, internal, dist_json in con.execute(q):
                dist = cache.get(dist_json) or cache.setdefault(dist_json, json_to_distribution(dist_json))
                params, dists = by_trial[tid]
                params[name] = dist.to_external_repr(internal)
                dists[name] = dist
    out = []
    for tid, v in trials:
        try:
            out.append(optuna.trial.create_trial(params=by_trial[tid][0], distributions=by_trial[tid][1], value=v))
        except ValueError as err:  # a stored param outside its stored distribution: left out, not fatal
            log.warning("report: trial id %d left out of the importances: %s", tid, mask_password(err))
    return out


def _light_study(direction: optuna.study.StudyDirection, trials: list[FrozenTrial]) -> tuple[optuna.Study, list[int]]:
    """An in-memory study holding copies of `trials` (renumbered 0..n-1 in the given order), and the real
    numbers of the trials it holds. A trial Optuna refuses to add (e.g. a stored param outside its stored
    distribution) is left out with a warning instead of costing the report."""
    light = optuna.create_study(direction=direction)
    kept = []
    for t in trials:
        try:
            light.add_trial(t)
        except ValueError as err:
            log.warning("report: trial %d left out of the figures: %s", t.number, mask_password(err))
            continue
        kept.append(t.number)
    return light, kept


def _renumber(fig: go.Figure, key: str, numbers: list[int]) -> None:
    """Put the real trial numbers back on a figure drawn from a light study (trial i there = numbers[i])."""
    if key == "intermediate":
        for trace in fig.data:
            if isinstance(trace.name, str) and trace.name.startswith("Trial") and trace.name[5:].isdigit():
                trace.name = f"Trial{numbers[int(trace.name[5:])]}"
    elif key.startswith("slice"):
        for trace in fig.data:
            color = getattr(trace.marker, "color", None)
            if color is not None and not isinstance(color, str):
                trace.marker.color = [numbers[int(c)] for c in color]


def _history_figure(digest: StudyDigest) -> go.Figure:
    """Every COMPLETE trial's value by trial number and the best value so far (plotly), from the digest's rows."""
    xs = [n for n, st, v in digest.rows if st == TrialState.COMPLETE and v is not None]
    ys = [v for n, st, v in digest.rows if st == TrialState.COMPLETE and v is not None]
    best, running = [], -math.inf
    for y in ys:
        running = max(running, y)
        best.append(running)
    fig = go.Figure(
        [
            go.Scatter(x=xs, y=ys, mode="markers", name=TARGET_NAME, marker={"size": 5}),
            go.Scatter(x=xs, y=best, mode="lines", name="best value", line={"shape": "hv"}),
        ]
    )
    fig.update_layout(title="Optimization History Plot", xaxis_title="Trial", yaxis_title=TARGET_NAME)
    return fig


SLICE_PER_ROW = 4
"""Parameters per row of the report's slice plot."""


_FigureSpec = tuple[str, str, Callable[[], "go.Figure"], str]
"""One figure to draw: (key, title, the function that draws it, a note saying why it is not drawn, or "")."""


def report_figures(study: optuna.Study, digest: StudyDigest | None = None) -> list[ReportFigure]:
    """Build the report's figures with :mod:`optuna.visualization` (plotly), with notes where they cannot be drawn.

    The history shows every COMPLETE trial; intermediate values, parallel coordinates and the slice plot the
    digest's best `plot_top` COMPLETE trials (intermediate values also the latest `plot_top` others);
    importances a sample of at most `IMPORTANCE_SAMPLE` COMPLETE trials (see :class:`StudyDigest`).

    Guards: every figure needs a COMPLETE trial; intermediate values need reported epochs; parameter
    importances need at least 2 COMPLETE trials (Optuna's evaluator fits a model to them). Any other
    error from a plot function becomes a note (with its message), never a failed report.
    """
    d = digest or StudyDigest(study)
    light, numbers = _light_study(study.direction, d.top + d.others)
    top_light, top_numbers = _light_study(study.direction, d.top)
    sample, _ = _light_study(study.direction, d.sample)
    specs = _figure_specs(d, light, top_light, sample)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the plot functions log why a plot is empty
    try:
        return [_draw(spec, numbers if spec[0] == "intermediate" else top_numbers) for spec in specs]
    finally:
        optuna.logging.set_verbosity(level)


def _figure_specs(
    d: StudyDigest, light: optuna.Study, top_light: optuna.Study, sample: optuna.Study
) -> list[_FigureSpec]:
    """The report's figures, in page order: history, intermediate values, parallel coordinates, importances,
    slice (drawn from the light studies of :func:`report_figures`)."""
    from optuna import visualization as vis  # lazy: optuna.visualization (1 s): only the figures need it

    n_complete = d.counts[TrialState.COMPLETE]
    top_only = n_complete > len(d.top)
    best = f", the best {len(d.top)} COMPLETE trials" if top_only else ""
    latest = f" and the latest {len(d.others)} others" if top_only and d.others else ""
    sampled = f", a random {len(d.sample)} of {n_complete} COMPLETE trials" if len(d.sample) < n_complete else ""
    none = "no COMPLETE trial yet" if n_complete == 0 else ""
    specs: list[_FigureSpec] = [
        ("history", "Optimization history", lambda: _history_figure(d), none),
        (
            "intermediate",
            f"Intermediate values (val macro F1 per epoch){best}{latest}",
            lambda: vis.plot_intermediate_values(light),
            "" if d.has_intermediate else "no trial reported an epoch yet",
        ),
        (
            "parallel",
            f"Parallel coordinates{best}",
            lambda: vis.plot_parallel_coordinate(top_light, target_name=TARGET_NAME),
            none,
        ),
        (
            "importances",
            f"Parameter importances{sampled}",
            lambda: vis.plot_param_importances(sample, target_name=TARGET_NAME),
            none or (f"needs at least 2 COMPLETE trials (the study has {n_complete})" if n_complete < 2 else ""),
        ),
    ]
    # NOTE Optuna's slice plot is 300 px wide per parameter (a 10-parameter sweep: 3,000 px); the report draws
    # it in rows of SLICE_PER_ROW parameters, each as wide as the page.
    names = sorted({k for t in d.top for k in t.params})
    chunks = [names[i : i + SLICE_PER_ROW] for i in range(0, len(names), SLICE_PER_ROW)] or [[]]
    for i, chunk in enumerate(chunks):
        key = "slice" if i == 0 else f"slice-{i + 1}"
        part = f" ({i + 1} of {len(chunks)}: {', '.join(chunk)})" if len(chunks) > 1 else ""
        draw = functools.partial(vis.plot_slice, top_light, params=chunk or None, target_name=TARGET_NAME)
        specs.append((key, f"Slice plot{best}{part}", draw, none))
    return specs


def _draw(spec: _FigureSpec, numbers: list[int]) -> ReportFigure:
    """One figure of the report, or a note: why it is not drawn, or the error that stopped it.

    `numbers`: the real trial numbers of the light study the figure is drawn from (:func:`_renumber`).
    """
    key, title, make, note = spec
    if note:
        return ReportFigure(key, title, note=note)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = make()
    except Exception as err:  # noqa: BLE001 - one figure must not cost the whole report
        log.warning("report: %s not drawn: %s", title, mask_password(err))
        return ReportFigure(key, title, note=f"not drawn: {type(err).__name__}: {err}")
    if not fig.data:
        return ReportFigure(key, title, note="nothing to plot for this study")
    _renumber(fig, key, numbers)
    # as wide as the page (the plots' own fixed widths stretch it), a height that fits a screen
    fig.update_layout(
        template="plotly_white",
        margin={"t": 50, "l": 60, "r": 30, "b": 50},
        width=None,
        height=min(fig.layout.height or 450, 600),
        autosize=True,
    )
    return ReportFigure(key, title, figure=fig)


def _fmt(value: Any) -> str:
    """A table cell: floats with 4 significant digits, everything else as text (not yet escaped)."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _duration(t: FrozenTrial) -> str:
    if t.datetime_start is None or t.datetime_complete is None:
        return ""
    return f"{(t.datetime_complete - t.datetime_start).total_seconds():.0f} s"


def _interval_cell(attrs: dict[str, Any]) -> str:
    """`0.41-0.52`: the val macro F1's 95% interval from a bootstrap over val persons; "" without one."""
    low, high = attrs.get(TrialAttrs.VAL_F1_CI_LOW), attrs.get(TrialAttrs.VAL_F1_CI_HIGH)
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return ""
    return f"{low:.4g}-{high:.4g}"


def _top_table(study: optuna.Study, top: int, digest: StudyDigest) -> str:
    ranked = digest.top[:top]  # the digest holds at least `top` (report_html)
    if not ranked:
        return "<p class='note'>No COMPLETE trial yet.</p>"
    names = sorted({k for t in ranked for k in t.params})
    head = ["rank", "trial", TARGET_NAME, "95% interval", "accuracy", "best epoch", "duration"] + names
    rows = []
    for rank, t in enumerate(ranked, 1):
        attrs = t.user_attrs
        cells = [
            rank,
            t.number,
            t.value,
            _interval_cell(attrs),
            attrs.get(TrialAttrs.ACCURACY),
            attrs.get(TrialAttrs.BEST_EPOCH),
            _duration(t),
        ] + [t.params.get(n) for n in names]
        rows.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<div class='scroll'><table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def _summary(study: optuna.Study, digest: StudyDigest) -> str:
    counts = digest.counts
    ranked = digest.top
    items = [
        ("trials", ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n) or "none"),
        ("best", f"{TARGET_NAME} {ranked[0].value:.4f} (trial {ranked[0].number})" if ranked else "none yet"),
    ]
    attrs = study.user_attrs
    if attrs.get("sweep_file"):
        items.append(("sweep file", str(attrs["sweep_file"])))
    if attrs.get("n_trials"):
        items.append(("trial budget", f"{attrs['n_trials']} finished trials"))
    dataset = attrs.get("dataset") or {}
    if isinstance(dataset, dict) and dataset:
        size = ", ".join(f"{dataset[k]:,} {k}" for k in ("persons", "images") if isinstance(dataset.get(k), int))
        items.append(("dataset", f"{size} in {dataset.get('data_dir', '?')}"))
    if attrs.get("data_fingerprint"):
        items.append(("data fingerprint", str(attrs["data_fingerprint"])))
    reference = selection_ranking(study, limit=1, known_good=True).reference
    if reference is not None:
        items.append(("winner vs known-good", reference.message))
    if line := lr_range_line(attrs.get(StudyAttrs.LR_RANGE)):
        items.append(("learning rate", line))
    return (
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(mask_password(v))}</dd>" for k, v in items)
        + "</dl>"
    )


# --- the best trial: confusion matrix, per-class F1, interval ------------------------------------------


def _artifact(
    trial: FrozenTrial, study: optuna.Study, store: FileSystemArtifactStore | None, filename: str
) -> bytes | None:
    """The bytes of the trial's artifact `filename` (the newest upload), or None (no store, none uploaded)."""
    if store is None:
        return None

    try:
        metas = [m for m in get_all_artifact_meta(trial, storage=storage_of(study)) if m.filename == filename]
        if not metas:
            return None
        with store.open_reader(metas[-1].artifact_id) as fh:
            return fh.read()
    except Exception as err:  # noqa: BLE001 - a missing file costs one section, never the report
        log.warning("report: artifact %s of trial %d not read: %s", filename, trial.number, mask_password(err))
        return None


def _interval(attrs: dict[str, Any]) -> str:
    """The best trial's 95% person-bootstrap interval of val macro F1 as words; "" when not recorded."""
    low, high = attrs.get(TrialAttrs.VAL_F1_CI_LOW), attrs.get(TrialAttrs.VAL_F1_CI_HIGH)
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"95% interval {low:.4f} to {high:.4f} (bootstrap over validation persons)"
    return ""


def _per_class_table(csv_bytes: bytes) -> str:
    """The per_class_f1.csv artifact as a table (class, label, F1 with a bar, support, predicted)."""
    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode("utf-8"))))
    body = []
    for r in rows:
        try:
            f1 = float(r.get("f1") or "nan")
        except ValueError:
            f1 = math.nan
        bar = f"<span class='bar' style='width:{max(f1, 0.0) * 100:.0f}%'></span>" if math.isfinite(f1) else ""
        cells = [r.get("class", ""), r.get("label", ""), f"{f1:.4f}" if math.isfinite(f1) else ""]
        cells += [r.get("support", ""), r.get("predicted", "")]
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells[:3])
        tds += f"<td class='barcell'>{bar}</td>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells[3:])
        body.append(f"<tr>{tds}</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("class", "label", "F1", "", "support", "predicted"))
    return f"<table class='perclass'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _best_section(study: optuna.Study, digest: StudyDigest, store: FileSystemArtifactStore | None) -> str:
    """Section "best trial": its numbers, interval, per-task F1, confusion matrix image and per-class F1 table.

    The image and the table are the trial's ``confusion_matrix.png`` and ``per_class_f1.csv`` artifacts
    (:mod:`maskcls_hpo.hpo.trial`), read from `store`; a note says so when they are missing.
    """
    ranked = digest.top
    if not ranked:
        return "<section id='best'><h2>Best trial</h2><p class='note'>No COMPLETE trial yet.</p></section>"
    t = ranked[0]
    attrs = t.user_attrs
    facts = [f"{TARGET_NAME} {t.value:.4f}"]
    if _interval(attrs):
        facts.append(_interval(attrs))
    if isinstance(attrs.get(TrialAttrs.ACCURACY), int | float):
        facts.append(f"accuracy {attrs[TrialAttrs.ACCURACY]:.4f}")
    if attrs.get(TrialAttrs.BEST_EPOCH):
        facts.append(f"best epoch {attrs[TrialAttrs.BEST_EPOCH]}")
    task = attrs.get(TrialAttrs.TASK_F1)
    if isinstance(task, dict) and task:
        facts.append("task macro F1 " + ", ".join(f"{k} {float(v):.4f}" for k, v in task.items()))
    parts = [
        f"<section id='best'><h2>Best trial: {t.number}</h2><p>{html.escape('; '.join(facts))}</p>",
        "<div class='best'>",
    ]
    png = _artifact(t, study, store, "confusion_matrix.png")
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img id='confusion' alt='confusion matrix of trial {t.number}' "
            f"src='data:image/png;base64,{data}'><figcaption>validation confusion matrix of the best epoch "
            "(rows: true class, columns: predicted; colour: share of the true class)</figcaption></figure>"
        )
    else:
        parts.append(f"<p class='note'>no confusion_matrix.png artifact for trial {t.number}</p>")
    table = _artifact(t, study, store, "per_class_f1.csv")
    if table is not None:
        parts.append(f"<div><h3>Per-class F1</h3>{_per_class_table(table)}</div>")
    else:
        parts.append(f"<p class='note'>no per_class_f1.csv artifact for trial {t.number}</p>")
    parts.append("</div></section>")
    return "".join(parts)


# --- why trials ended early ----------------------------------------------------------------------------

MAX_ENDED_ROWS = 200


def reason_kind(state: TrialState, reason: str) -> str:
    """A short group name for a PRUNED / FAIL trial's reason: ``pruned at epoch 2``, ``oom``, ``TypeError``, ...

    The pruner's own reason ("pruned at epoch E (val macro F1 ...)") groups by epoch; a failed trial's
    "<Type>: <message>" groups by the exception type.
    """
    reason = (reason or "").strip()
    if not reason:
        return "no reason recorded"
    if reason.startswith(PRUNED_REASON):
        return " ".join(reason.split()[:4])
    if state == TrialState.FAIL and ":" in reason.split()[0]:
        return reason.split(":", 1)[0]
    if reason.startswith("non-finite"):
        return "non-finite " + ("loss" if "loss" in reason.split(":", 1)[0] else "val macro F1")
    return reason.split(":", 1)[0][:60]


def _ended_trials(study: optuna.Study, latest: int) -> tuple[list[tuple[TrialState, str]], list[FrozenTrial]]:
    """(state, reason) of every PRUNED / FAIL trial, and the latest `latest` of them as full trials.

    With an SQL storage one query reads numbers, states and the `reason` attr only (so a study of 10,000
    trials is not loaded whole); then only the `latest` trials are read in full.
    """
    ended_states = (TrialState.PRUNED, TrialState.FAIL)
    if not uses_sql(study):
        ended = study.get_trials(deepcopy=False, states=ended_states)
        return [(t.state, str(t.user_attrs.get(TrialAttrs.REASON, ""))) for t in ended], ended[-latest:]

    m = rdb_models()
    storage = storage_of(study)
    ua = m.TrialUserAttributeModel
    reason = sqlalchemy.select(ua.trial_id, ua.value_json).where(ua.key == TrialAttrs.REASON).subquery()
    query = (
        sqlalchemy.select(m.TrialModel.trial_id, m.TrialModel.state, reason.c.value_json)
        .outerjoin(reason, reason.c.trial_id == m.TrialModel.trial_id)
        .where(m.TrialModel.study_id == study_id_of(study), m.TrialModel.state.in_(ended_states))
        .order_by(m.TrialModel.number)
    )
    with rdb_of(storage).engine.connect() as con:
        rows = list(con.execute(query))
    reasons = []
    for _, state, value_json in rows:
        state = TrialState[state] if isinstance(state, str) else TrialState(state)
        try:
            text = json.loads(value_json) if value_json is not None else ""
        except ValueError:
            text = value_json
        reasons.append((state, str(text)))
    return reasons, [storage.get_trial(tid) for tid, _, _ in rows[-latest:]]


def _ended_section(study: optuna.Study) -> str:
    """Section "pruned and failed trials": counts by reason, then one row per trial (the latest
    :data:`MAX_ENDED_ROWS`, by trial number)."""
    reasons, ended = _ended_trials(study, MAX_ENDED_ROWS)
    if not reasons:
        return "<section id='ended'><h2>Pruned and failed trials</h2><p class='note'>none</p></section>"
    groups: dict[tuple[str, str], int] = {}
    for state, reason in reasons:
        key = (state.name, reason_kind(state, reason))
        groups[key] = groups.get(key, 0) + 1
    summary = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{html.escape(k)}</td><td>{n}</td></tr>"
        for (s, k), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    rows = []
    for t in ended:
        last = max(t.intermediate_values, default=None)
        cells = [
            t.number,
            t.state.name,
            last if last is not None else "",
            t.intermediate_values.get(last) if last is not None else None,
            str(t.user_attrs.get(TrialAttrs.REASON, "")),
        ]
        tds = "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in cells[:-1])
        rows.append(f"<tr>{tds}<td class='reason'>{html.escape(mask_password(cells[-1]))}</td></tr>")
    more = (
        f"<p class='note'>the last {MAX_ENDED_ROWS} of {len(reasons)} are listed</p>"
        if len(reasons) > MAX_ENDED_ROWS
        else ""
    )
    head = "".join(f"<th>{h}</th>" for h in ("trial", "state", "last epoch", f"last {TARGET_NAME}", "reason"))
    return (
        "<section id='ended'><h2>Pruned and failed trials</h2>"
        f"<table class='reasons'><thead><tr><th>state</th><th>reason</th><th>trials</th></tr></thead>"
        f"<tbody>{summary}</tbody></table>{more}"
        f"<div class='scroll'><table class='ended'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div></section>"
    )


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; } dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; } td { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:first-child { background: #eef6ee; } .note { color: #8a5a00; font-style: italic; }
section { margin-top: 2em; } .scroll { overflow-x: auto; }
.best { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.best figure { margin: 0; flex: 1 1 520px; max-width: 760px; } .best img { width: 100%; height: auto; }
figcaption { color: #666; font-size: 0.85em; } td.reason { text-align: left; } table.reasons { margin-bottom: 1em; }
table.reasons td:nth-child(-n+2), table.perclass td:nth-child(2) { text-align: left; }
td.barcell { width: 8em; text-align: left; } .bar { display: inline-block; height: 0.8em; background: #4a7fb5; }
table.perclass tbody tr:first-child, table.reasons tbody tr:first-child, table.ended tbody tr:first-child {
  background: none; }
.js-plotly-plot, .plotly-graph-div { max-width: 100%; }
"""


def _ledger_section(study: optuna.Study, include_plotlyjs: bool) -> str:
    """Section "compute ledger": epochs, image-epochs and seconds by stage, what pruning saved, and a bar chart
    of epochs by stage with the epochs pruning saved beside them (:func:`maskcls_hpo.hpo.select.study_ledger`)."""
    ledger = study_ledger(study)
    saved = ledger["pruning_saved"]
    rows = "".join(
        f"<tr><td>{name}</td><td>{ledger[name]['epochs']:,}</td><td>{ledger[name]['image_epochs']:,}</td>"
        f"<td>{ledger[name]['seconds']:,.0f}</td></tr>"
        for name in STAGES
    )
    t = ledger["total"]
    rows += f"<tr><td>total</td><td>{t['epochs']:,}</td><td>{t['image_epochs']:,}</td><td>{t['seconds']:,.0f}</td></tr>"
    table = (
        "<table><thead><tr><th>stage</th><th>epochs</th><th>image-epochs</th><th>seconds</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f"<p>Pruning saved {saved['epochs']:,} epochs ({saved['image_epochs']:,} image-epochs) over "
        f"{saved['trials']} pruned trial(s), against running each to its last epoch.</p>"
    )
    if not t["epochs"]:
        return f"<section id='ledger'><h2>Compute ledger</h2>{table}</section>"
    fig = go.Figure(
        [
            go.Bar(name="epochs trained", x=[*STAGES], y=[ledger[s]["epochs"] for s in STAGES]),
            go.Bar(name="epochs pruning saved", x=["sweep"], y=[saved["epochs"]]),
        ]
    )
    fig.update_layout(barmode="group", height=320, yaxis_title="epochs", margin={"t": 20})
    chart = fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, config=PLOTLY_CONFIG, div_id="fig-ledger")
    return f"<section id='ledger'><h2>Compute ledger</h2>{table}{chart}</section>"


def report_html(study: optuna.Study, top: int = 10, artifact_store: FileSystemArtifactStore | None = None) -> str:
    """The whole report as one HTML document (str). plotly.js is inlined with the first figure.

    Args:
        top: rows of the top-trials table (best COMPLETE trials by val macro F1).
        artifact_store: the study's Optuna artifact store (:func:`maskcls_hpo.hpo.trial.open_artifact_store`),
            where the best trial's confusion matrix and per-class F1 are read; None leaves a note instead.
    """
    digest = StudyDigest(study, plot_top=max(PLOT_TOP, top))
    title = f"Study {study.study_name}"
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>maskcls-hpo report, {html.escape(now)}; Optuna {html.escape(optuna.__version__)}, "
        f"plotly {html.escape(plotly.__version__)}; objective: {TARGET_NAME} (maximize)</p>",
        _summary(study, digest),
        f"<section id='top'><h2>Top {top} trials</h2>{_top_table(study, top, digest)}</section>",
        _best_section(study, digest, artifact_store),
        _ended_section(study),
    ]
    plotly_included = False
    for f in report_figures(study, digest):
        parts.append(f"<section id='{f.key}'><h2>{html.escape(f.title)}</h2>")
        if f.figure is None:
            parts.append(f"<p class='note'>{html.escape(mask_password(f.note))}</p>")
        else:
            parts.append(
                f.figure.to_html(
                    full_html=False, include_plotlyjs=not plotly_included, config=PLOTLY_CONFIG, div_id=f"fig-{f.key}"
                )
            )
            plotly_included = True
        parts.append("</section>")
    parts.append(_ledger_section(study, include_plotlyjs=not plotly_included))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    study: optuna.Study, out: str | Path, top: int = 10, artifact_store: FileSystemArtifactStore | None = None
) -> Path:
    """Write :func:`report_html` to `out` (parent folders are made; written to a temp file, then renamed).

    Returns:
        The path written.

    Raises:
        ExportError: `top` outside 1..:data:`~maskcls_hpo.hpo.select.MAX_TOP`; `out` is empty, a folder or
            under a file (before the page is built).
        OSError: the file cannot be written.
    """
    check_whole_number(top, "--top", 1, MAX_TOP, ExportError)
    out = check_output_file(out, "--out", ExportError)
    text = report_html(study, top=top, artifact_store=artifact_store)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, text)
