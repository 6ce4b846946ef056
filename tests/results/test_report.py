"""`report`: one self-contained HTML file with Optuna's plotly figures and the top trials."""

from __future__ import annotations

import re
import subprocess

import optuna
import pytest
from helpers.processes import maskcls_hpo_command, subprocess_env
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from maskcls_hpo.results.report import report_figures, report_html, write_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

NASTY = "</script><b>bold</b>"  # a categorical choice that must be escaped, not run
VALUES = (0.123456789, 0.6543210987, 0.4242424242)  # trial 0, 1, 2 (trial 1 is best)
FIGURES = ("history", "intermediate", "parallel", "importances", "slice")
SCRIPT_SRC = re.compile(r"<script[^>]*\ssrc\s*=", re.IGNORECASE)


def make_study(values=VALUES, states=None, intermediate=True) -> optuna.Study:
    """An in-memory study whose trials have known values, params, accuracy and per-epoch values."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="report<&>test", direction="maximize")
    study.set_user_attr("sweep_file", "sweeps/smoke.py")
    study.set_user_attr("dataset", {"data_dir": "storage/demo", "persons": 300, "images": 2100})
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "loss": CategoricalDistribution(["ce", NASTY])}
    for i, value in enumerate(values):
        state = (states or {}).get(i, TrialState.COMPLETE)
        study.add_trial(
            create_trial(
                params={"lr": 10 ** -(i + 2), "loss": ["ce", NASTY][i % 2]},
                distributions=dists,
                value=value if state == TrialState.COMPLETE else None,
                state=state,
                intermediate_values={1: value / 2, 2: value} if intermediate else None,
                user_attrs={
                    "accuracy": round(value + 0.1, 4),
                    "best_epoch": 2,
                    "val_f1_ci_low": round(value - 0.05, 4),
                    "val_f1_ci_high": round(value + 0.04, 4),
                },
            )
        )
    return study


def test_report_is_self_contained_and_holds_the_figures_data(tmp_path):
    out = write_report(make_study(), tmp_path / "sub" / "report.html", top=5)
    html = out.read_text(encoding="utf-8")
    assert SCRIPT_SRC.search(html) is None  # no <script src=...>: nothing from a CDN
    assert html.count("plotly.js v") == 1  # plotly.js inlined once for all five figures
    for key in FIGURES:
        assert f'id="fig-{key}"' in html
    for value in VALUES:  # the trials' values are in the figures' JSON
        assert repr(value) in html
    assert repr(VALUES[1] / 2) in html  # an intermediate value (epoch 1 of trial 1)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


@pytest.mark.browser
def test_report_draws_every_figure_offline_in_chromium(tmp_path):
    """Headless Chromium with every network request refused draws all five figures from the file alone."""
    from playwright.sync_api import sync_playwright

    out = write_report(make_study(), tmp_path / "report.html")
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route(re.compile(r"^https?://"), lambda route: (requested.append(route.request.url), route.abort()))
            page.goto(out.as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5", timeout=60_000)
            drawn = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.id)")
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert sorted(drawn) == sorted(f"fig-{k}" for k in (*FIGURES, "ledger"))  # and the compute ledger's bars
    assert requested == []


def test_text_from_the_study_is_escaped(tmp_path):
    html = report_html(make_study())
    assert NASTY not in html  # neither in the table nor in the figures' JSON
    assert "&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<title>Study report&lt;&amp;&gt;test</title>" in html
    # Every <script> that opens also closes: the nasty choice did not end one early.
    assert html.count("<script") == html.count("</script>")


def test_top_trials_table_ranks_by_val_macro_f1():
    html = report_html(make_study(), top=2)
    table = html[html.index("<table>") : html.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    header = re.findall(r"<th>(.*?)</th>", rows[0])
    assert header[:7] == ["rank", "trial", "val macro F1", "95% interval", "accuracy", "best epoch", "duration"]
    assert header[7:] == ["loss", "lr"]
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows[1:]]
    assert len(cells) == 2  # top=2 of 3
    # trial 1: value 0.6543210987, interval value -0.05 / +0.04 (user attrs), accuracy +0.1
    assert cells[0][:5] == ["1", "1", "0.6543", "0.6043-0.6943", "0.7543"]
    assert cells[1][:5] == ["2", "2", "0.4242", "0.3742-0.4642", "0.5242"]
    assert cells[0][7:] == ["&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;", "0.001"]


def test_one_complete_trial_gets_a_note_instead_of_importances():
    study = make_study(states={1: TrialState.PRUNED, 2: TrialState.FAIL})
    notes = {f.key: f.note for f in report_figures(study)}
    assert notes["importances"] == "needs at least 2 COMPLETE trials (the study has 1)"
    assert notes["history"] == "" and notes["slice"] == ""


def test_no_complete_trial_gives_notes_and_no_plotly(tmp_path):
    study = make_study(states={0: TrialState.PRUNED, 1: TrialState.PRUNED, 2: TrialState.FAIL})
    html = report_html(study)
    assert html.count("no COMPLETE trial yet") == 4  # history, parallel, importances, slice
    assert "No COMPLETE trial yet." in html  # the table
    assert "plotly.js v" in html  # the intermediate values of the pruned trials are still drawn
    no_epochs = make_study(states={0: TrialState.FAIL}, values=(0.5,), intermediate=False)
    html = report_html(no_epochs)
    assert "no trial reported an epoch yet" in html
    assert "plotly.js v" not in html and "<script" not in html


def test_top_must_be_positive(tmp_path):
    from maskcls_hpo.errors import ExportError

    for top in (0, 10**20):  # 10**20: no SQLite INTEGER holds it
        with pytest.raises(ExportError, match=rf"--top must be a whole number from 1 to 1000, got {top}$"):
            write_report(make_study(), tmp_path / "r.html", top=top)
    assert list(tmp_path.iterdir()) == []


# --- the CLI on the real smoke sweep --------------------------------------------------------------------


def run_cli(*args, cwd):
    return subprocess.run(
        maskcls_hpo_command() + list(args), cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


def test_report_command_on_a_smoke_sweep(swept_study, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli(
        "report",
        "--storage",
        f"sqlite:///{swept_study.db}",
        "--study",
        swept_study.study,
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in " ".join(result.stderr.split())
    html = out.read_text(encoding="utf-8")
    assert SCRIPT_SRC.search(html) is None
    study = optuna.load_study(study_name=swept_study.study, storage=swept_study.url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        assert repr(t.value) in html
    best = max(complete, key=lambda t: t.value)
    first_row = re.findall(r"<td>(.*?)</td>", html[html.index("<tbody>") :])[:5]
    assert first_row[:3] == ["1", str(best.number), f"{best.value:.4g}"]
    low, high = best.user_attrs["val_f1_ci_low"], best.user_attrs["val_f1_ci_high"]
    assert first_row[3] == f"{low:.4g}-{high:.4g}" and low <= best.value <= high
    assert first_row[4] == f"{best.user_attrs['accuracy']:.4g}"
    assert "24 persons, 168 images" in html
    # the best trial's confusion matrix (its artifact, inlined) and per-class F1 table
    assert f"<h2>Best trial: {best.number}</h2>" in html
    assert f"alt='confusion matrix of trial {best.number}' src='data:image/png;base64," in html
    perclass = html[html.index("<table class='perclass'>") : html.index("</table>", html.index("class='perclass'"))]
    assert perclass.count("<tr>") == 1 + 18


def test_report_command_errors(swept_study, tmp_path):
    result = run_cli("report", "--storage", "nosuch.db", "--out", "r.html", cwd=tmp_path)
    assert result.returncode == 1 and "no study database at nosuch.db" in result.stderr
    result = run_cli("report", "--storage", str(swept_study.db), "--study", "nosuch", "--out", "r.html", cwd=tmp_path)
    assert result.returncode == 1 and "no study 'nosuch'" in result.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty.db").write_bytes(b"")  # a file, but not an Optuna database: one line, no traceback
    result = run_cli("report", "--storage", "empty.db", "--out", "r.html", cwd=tmp_path)
    assert result.returncode == 1 and "is not an Optuna study database" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_big_sqlite_study_draws_the_top_trials_and_stays_small(tmp_path, monkeypatch):
    """250 trials in SQLite: per-trial figures hold the best PLOT_TOP COMPLETE trials (+ as many others), the
    history every COMPLETE trial, and the page without plotly.js stays under a bound that does not grow with
    the trials' attrs or epochs."""
    import json

    import plotly.offline

    import maskcls_hpo.results.report as report
    from maskcls_hpo.hpo.store import open_storage, resolve_storage_url

    monkeypatch.setattr(report, "PLOT_TOP", 10)
    monkeypatch.setattr(report, "IMPORTANCE_SAMPLE", 50)
    url = resolve_storage_url(str(tmp_path / "big.db"))
    study = optuna.create_study(study_name="big", storage=open_storage(url), direction="maximize")
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "loss": CategoricalDistribution(["ce", "focal"])}
    trials = []
    for i in range(250):
        state = TrialState.PRUNED if i % 3 == 0 else TrialState.COMPLETE
        value = round(0.2 + 0.5 * ((i * 37) % 250) / 250, 4)  # distinct values; best COMPLETE: trial 20, 0.68
        trials.append(
            create_trial(
                params={"lr": 10 ** -(2 + (i % 3)), "loss": ["ce", "focal"][i % 2]},
                distributions=dists,
                value=value if state == TrialState.COMPLETE else None,
                state=state,
                intermediate_values={e: value * e / 20 for e in range(1, 21)},
                user_attrs={"accuracy": 0.5, "best_epoch": 20, "epoch_seconds": [1.0] * 20, "config": {"x": "y" * 500}},
            )
        )
    study.add_trials(trials)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    best = max((i for i, t in enumerate(trials) if t.state == TrialState.COMPLETE), key=lambda i: trials[i].value)
    assert (n_complete, best, trials[best].value) == (166, 20, 0.68)
    html = report.report_html(optuna.load_study(study_name="big", storage=open_storage(url)), top=5)
    figures = {
        m.group(1): json.loads(m.group(2))
        for m in re.finditer(r'Plotly.newPlot\(\s*"fig-(\w+)",\s*(\[.*?\]),\s*\{', html, re.DOTALL)
    }
    traces = [t for t in figures["intermediate"] if str(t.get("name", "")).startswith("Trial")]
    assert len(traces) == 20  # the best 10 COMPLETE + the latest 10 PRUNED trials
    names = {t["name"] for t in traces}
    assert {"Trial20", "Trial47", "Trial74", "Trial249"} <= names  # real trial numbers (3 best, last PRUNED)
    assert len(figures["history"][0]["x"]) == n_complete  # the history: every COMPLETE trial
    assert "the best 10 COMPLETE trials and the latest 10 others" in html
    assert "a random 50 of 166 COMPLETE trials" in html
    assert "<dd>166 complete, 84 pruned</dd>" in html
    data_bytes = len(html.encode()) - len(plotly.offline.get_plotlyjs().encode())
    assert data_bytes < 400_000, data_bytes  # 250 trials x 20 epochs drawn in full would be several MB


# --- the best trial, why trials ended, intervals, page width ---------------------------------------------


def test_best_trial_section_inlines_its_confusion_matrix_and_per_class_f1(tmp_path):
    import base64

    from maskcls_hpo.hpo.trial import open_artifact_store, upload_trial_artifacts

    study = make_study()
    best = study.ask(
        {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    )  # trial 3, the best (artifacts need a RUNNING trial)
    best.set_user_attr("accuracy", 0.875)
    best.set_user_attr("best_epoch", 3)
    store, _ = open_artifact_store("sqlite:///" + str(tmp_path / "x.db"))
    confusion = [[(5 if i == j else 0) + (1 if j == (i + 1) % 18 else 0) for j in range(18)] for i in range(18)]
    per_class = [round(c / 20, 2) for c in range(18)]  # class c has F1 c/20
    upload_trial_artifacts(best, store, config=None, confusion=confusion, per_class_f1=per_class)
    study.tell(best, 0.8)
    html = report_html(study, artifact_store=store)
    section = html[html.index("<section id='best'>") : html.index("</section>", html.index("<section id='best'>"))]
    assert "<h2>Best trial: 3</h2>" in section and "val macro F1 0.8000; accuracy 0.8750; best epoch 3" in section
    png = base64.b64decode(re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", section).group(1))
    assert png.startswith(b"\x89PNG\r\n")
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", section)[1:]]
    assert len(rows) == 18
    assert rows[0][:3] == ["0", "0 wear/M/&lt;30", "0.0000"] and rows[0][4:] == ["6", "6"]
    assert rows[17][:3] == ["17", "17 not wear/F/&gt;=60", "0.8500"]
    assert report_html(study).count("no confusion_matrix.png artifact for trial 3") == 1  # no store: a note


def ended_study() -> optuna.Study:
    """Trial 0 and 3 pruned by the pruner at epoch 1, trial 1 out of memory, trial 2 failed, trial 4 best."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    ends = [
        (TrialState.PRUNED, "pruned at epoch 1 (val macro F1 0.1000)", {1: 0.1}),
        (TrialState.PRUNED, "oom", {}),
        (TrialState.FAIL, "TypeError: unsupported operand <b>", {1: 0.2}),
        (TrialState.PRUNED, "pruned at epoch 1 (val macro F1 0.1500)", {1: 0.15}),
        (TrialState.COMPLETE, "", {1: 0.3, 2: 0.5}),
    ]
    for i, (state, reason, values) in enumerate(ends):
        attrs = {"reason": reason} if reason else {"val_f1_ci_low": 0.41, "val_f1_ci_high": 0.5875}
        study.add_trial(
            create_trial(
                params={"lr": 10 ** -(i % 3 + 2)},
                distributions=dists,
                value=0.5 if state == TrialState.COMPLETE else None,
                state=state,
                intermediate_values=values,
                user_attrs=attrs,
            )
        )
    return study


@pytest.mark.parametrize("where", ["memory", "sqlite"])
def test_pruning_reasons_per_trial_and_by_kind(where, tmp_path):
    study = ended_study()
    if where == "sqlite":  # the same trials in SQLite: reasons read by one SQL query, not every trial loaded
        from maskcls_hpo.hpo.store import open_storage, resolve_storage_url

        stored = optuna.create_study(storage=open_storage(resolve_storage_url(tmp_path / "e.db")), direction="maximize")
        stored.add_trials(study.trials)
        study = stored
    html = report_html(study)
    section = html[html.index("<section id='ended'>") : html.index("</section>", html.index("<section id='ended'>"))]
    tables = re.findall(r"<tbody>(.*?)</tbody>", section)
    summary = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", tables[0])]
    assert summary == [["PRUNED", "pruned at epoch 1", "2"], ["FAIL", "TypeError", "1"], ["PRUNED", "oom", "1"]]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", tables[1])]
    assert rows == [
        ["0", "PRUNED", "1", "0.1", "pruned at epoch 1 (val macro F1 0.1000)"],
        ["1", "PRUNED", "", "", "oom"],
        ["2", "FAIL", "1", "0.2", "TypeError: unsupported operand &lt;b&gt;"],
        ["3", "PRUNED", "1", "0.15", "pruned at epoch 1 (val macro F1 0.1500)"],
    ]


def test_best_trial_shows_its_interval_when_recorded():
    html = report_html(ended_study())
    assert "<h2>Best trial: 4</h2><p>val macro F1 0.5000; 95% interval 0.4100 to 0.5875" in html


def wide_study(n_params: int = 10) -> optuna.Study:
    """6 COMPLETE trials over `n_params` float params (p00, p01, ...): Optuna's slice plot would be 3,000 px."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    dists = {f"p{i:02d}": FloatDistribution(0.0, 1.0) for i in range(n_params)}
    for t in range(6):
        params = {name: ((t + 1) * (i + 3) % 7) / 7 for i, name in enumerate(dists)}
        study.add_trial(create_trial(params=params, distributions=dists, value=t / 10, intermediate_values={1: t / 20}))
    return study


def test_slice_plot_comes_in_rows_as_wide_as_the_page():
    figures = {f.key: f for f in report_figures(wide_study(10))}
    assert [k for k in figures if k.startswith("slice")] == ["slice", "slice-2", "slice-3"]  # 4 + 4 + 2 params
    assert figures["slice-3"].title == "Slice plot (3 of 3: p08, p09)"
    for f in figures.values():
        assert f.figure is not None and f.figure.layout.width is None, f.key


@pytest.mark.browser
def test_report_fits_the_page_in_chromium(tmp_path):
    """A 10-parameter study's report is no wider than a 1280 px window (the slice plot stretched it to 3,000)."""
    from playwright.sync_api import sync_playwright

    out = write_report(wide_study(10), tmp_path / "wide.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(out.as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 7", timeout=60_000)
            width = page.evaluate("document.documentElement.scrollWidth")
            widest = page.evaluate(
                "Math.max(...Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.offsetWidth))"
            )
        finally:
            browser.close()
    assert width <= 1280 and widest <= 1200
