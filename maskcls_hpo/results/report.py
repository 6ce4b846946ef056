"""`report`: one self-contained HTML page that shows what mattered in a study.

The page holds Optuna's plotly figures (:mod:`optuna.visualization`: optimization history, intermediate
values, parallel coordinates, parameter importances, slice) and a table of the top COMPLETE trials (val
macro F1, accuracy, best epoch, params). plotly.js is embedded once, inline, so the file opens offline and
links to no CDN. Every text taken from the study (names, params, attrs) is HTML-escaped; the figures' JSON
is written by plotly, which escapes ``<``, ``>`` and ``/``.

A figure that cannot be drawn (no COMPLETE trial yet, fewer than 2 for importances, no intermediate values)
is replaced by a one-line note saying why.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from maskcls_hpo.hpo.attrs import TrialAttrs
from maskcls_hpo.hpo.export import ranked_complete_trials
from maskcls_hpo.hpo.storage import mask_password
from maskcls_hpo.results.artifacts import OBJECTIVE_NAME

__all__ = ["write_report", "report_html", "report_figures", "ReportFigure", "TARGET_NAME"]

log = logging.getLogger("maskcls_hpo.results.report")

TARGET_NAME = OBJECTIVE_NAME
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


class ReportFigure:
    """One section of the report: a plotly figure, or `note` (why there is none)."""

    def __init__(self, key: str, title: str, figure: Any = None, note: str = ""):
        self.key = key
        self.title = title
        self.figure = figure
        self.note = note


def _count(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _has_intermediate(study: optuna.Study) -> bool:
    return any(t.intermediate_values for t in study.get_trials(deepcopy=False))


def report_figures(study: optuna.Study) -> list[ReportFigure]:
    """Build the report's figures with :mod:`optuna.visualization` (plotly), with notes where they cannot be drawn.

    Guards: every figure needs a COMPLETE trial; intermediate values need reported epochs; parameter
    importances need at least 2 COMPLETE trials (Optuna's evaluator fits a model to them). Any other
    error from a plot function becomes a note (with its message), never a failed report.
    """
    from optuna import visualization as vis

    n_complete = len(ranked_complete_trials(study))
    none = "no COMPLETE trial yet" if n_complete == 0 else ""
    specs: list[tuple[str, str, Callable[[], Any], str]] = [
        (
            "history",
            "Optimization history",
            lambda: vis.plot_optimization_history(study, target_name=TARGET_NAME),
            none,
        ),
        (
            "intermediate",
            "Intermediate values (val macro F1 per epoch)",
            lambda: vis.plot_intermediate_values(study),
            "" if _has_intermediate(study) else "no trial reported an epoch yet",
        ),
        (
            "parallel",
            "Parallel coordinates",
            lambda: vis.plot_parallel_coordinate(study, target_name=TARGET_NAME),
            none,
        ),
        (
            "importances",
            "Parameter importances",
            lambda: vis.plot_param_importances(study, target_name=TARGET_NAME),
            none or ("needs at least 2 COMPLETE trials (the study has 1)" if n_complete < 2 else ""),
        ),
        ("slice", "Slice plot", lambda: vis.plot_slice(study, target_name=TARGET_NAME), none),
    ]
    figures = []
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the plot functions log why a plot is empty
    try:
        for key, title, make, note in specs:
            if note:
                figures.append(ReportFigure(key, title, note=note))
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fig = make()
            except Exception as err:  # noqa: BLE001 - one figure must not cost the whole report
                log.warning("report: %s not drawn: %s", title, mask_password(err))
                figures.append(ReportFigure(key, title, note=f"not drawn: {type(err).__name__}: {err}"))
                continue
            if not fig.data:
                figures.append(ReportFigure(key, title, note="nothing to plot for this study"))
                continue
            fig.update_layout(template="plotly_white", margin={"t": 50, "l": 60, "r": 30, "b": 50})
            figures.append(ReportFigure(key, title, figure=fig))
    finally:
        optuna.logging.set_verbosity(level)
    return figures


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


def _top_table(study: optuna.Study, top: int) -> str:
    ranked = ranked_complete_trials(study)[:top]
    if not ranked:
        return "<p class='note'>No COMPLETE trial yet.</p>"
    names = sorted({k for t in ranked for k in t.params})
    head = ["rank", "trial", TARGET_NAME, "accuracy", "best epoch", "duration"] + names
    rows = []
    for rank, t in enumerate(ranked, 1):
        attrs = t.user_attrs
        cells = [
            rank,
            t.number,
            t.value,
            attrs.get(TrialAttrs.ACCURACY),
            attrs.get(TrialAttrs.BEST_EPOCH),
            _duration(t),
        ] + [t.params.get(n) for n in names]
        rows.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<div class='scroll'><table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def _summary(study: optuna.Study) -> str:
    counts = _count(study)
    ranked = ranked_complete_trials(study)
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
    return (
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(mask_password(v))}</dd>" for k, v in items)
        + "</dl>"
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
"""


def report_html(study: optuna.Study, top: int = 10) -> str:
    """The whole report as one HTML document (str). plotly.js is inlined with the first figure.

    Args:
        top: rows of the top-trials table (best COMPLETE trials by val macro F1).
    """
    import plotly

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
        _summary(study),
        f"<section id='top'><h2>Top {top} trials</h2>{_top_table(study, top)}</section>",
    ]
    plotly_included = False
    for f in report_figures(study):
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
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(study: optuna.Study, out: str | Path, top: int = 10) -> Path:
    """Write :func:`report_html` to `out` (parent folders are made; written to a temp file, then renamed).

    Returns:
        The path written.

    Raises:
        ValueError: `top` < 1.
        OSError: the file cannot be written.
    """
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    out = Path(out)
    text = report_html(study, top=top)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
