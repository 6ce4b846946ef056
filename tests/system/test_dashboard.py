"""`maskcls-hpo dashboard`: optuna-dashboard on a real study (sweeps/smoke.py), in headless Chromium, while
2 workers write to it, on every storage spelling (C7), refusing missing/foreign databases (C5, C7) and never
showing the storage password (C6).

The study comes from the session fixture `swept_study` (tests/conftest.py): a 3-trial, 2-worker launch of
sweeps/smoke.py with the dashboard running and polled every 0.5 s the whole time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
from helpers.processes import DashboardProcess, http_get, maskcls_hpo_command, subprocess_env
from optuna.trial import TrialState

from maskcls_hpo.hpo.trial import ARTIFACT_FILES

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "S3cr3tTok3n"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        maskcls_hpo_command() + list(args),
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(swept) -> optuna.Study:
    return optuna.load_study(study_name=swept.study, storage=swept.url)


def study_id_of(base: str, name: str) -> int:
    status, body = http_get(base + "/api/studies")
    assert status == 200
    return next(s["study_id"] for s in json.loads(body)["study_summaries"] if s["study_name"] == name)


# --- the sweep with the dashboard open ------------------------------------------------------------------


def test_sweep_finishes_without_failed_trials(swept_study):
    assert swept_study.launch_rc == 0, swept_study.launch_output[-3000:]
    trials = load(swept_study).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.FAIL not in states
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 3
    assert TrialState.COMPLETE in states


def test_every_dashboard_load_during_the_sweep_succeeded(swept_study):
    poller = swept_study.poller
    failed = [(path, status) for path, status in poller.polls if status != 200]
    assert failed == []
    # The study page was read while the sweep ran (at least once: how often depends on the machine's load) and
    # once more after the launch returned (the poller's final read, never raced with the sweep).
    assert len(poller.states) >= 2
    last = poller.final_states
    assert last is not None
    # that last read shows what is stored: exactly 3 finished, none running (a trial that lost the race for the
    # last slot stays WAITING by design, hpo/workers/_loop.py)
    stored = {
        TrialState.COMPLETE: "Complete",
        TrialState.PRUNED: "Pruned",
        TrialState.WAITING: "Waiting",
        TrialState.FAIL: "Fail",
        TrialState.RUNNING: "Running",
    }
    assert sorted(last) == sorted(stored[t.state] for t in load(swept_study).get_trials(deepcopy=False))
    assert sum(state in ("Complete", "Pruned") for state in last) == 3 and "Running" not in last, last
    # The dashboard is still up after the sweep.
    assert http_get(swept_study.dashboard.base + "/dashboard")[0] == 200


def test_dashboard_output_names_the_address_and_the_artifacts(swept_study):
    out = swept_study.dashboard.output()
    assert f"open http://127.0.0.1:{swept_study.dashboard.port}/dashboard" in out
    assert f"artifacts in {swept_study.db.parent / 'artifacts'}" in out


def test_api_lists_each_finished_trials_artifacts(swept_study):
    base = swept_study.dashboard.base
    sid = study_id_of(base, swept_study.study)
    status, body = http_get(f"{base}/api/studies/{sid}")
    assert status == 200
    detail = json.loads(body)
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert complete
    for t in complete:
        assert sorted(a["filename"] for a in t["artifacts"]) == sorted(ARTIFACT_FILES)
    # The PNG is served from the artifact store: a real PNG file.
    png = next(a for a in complete[0]["artifacts"] if a["filename"] == "confusion_matrix.png")
    status, data = http_get(f"{base}/artifacts/{sid}/{complete[0]['trial_id']}/{png['artifact_id']}")
    assert status == 200
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # The study note names the sweep file and the dataset size (24 persons, 168 images).
    note = detail["note"]["body"]
    assert "smoke.py" in note and "24 persons, 168 images" in note


@pytest.mark.browser
def test_dashboard_in_headless_chromium(swept_study, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "install Debian's chromium: run scripts/test-env.sh (make test does)"
    study = load(swept_study)
    complete = next(t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)
    assert sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) == 3  # the exact budget
    base = swept_study.dashboard.base
    sid = study_id_of(base, swept_study.study)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(base + "/dashboard", wait_until="networkidle")
            page.get_by_text(f"{sid}. {swept_study.study}", exact=True).wait_for()  # the study list: "1. name"
            page.screenshot(path=str(tmp_path / "dashboard_home.png"))

            page.goto(f"{base}/dashboard/studies/{sid}/trials", wait_until="networkidle")
            # what is stored: 3 finished, plus a trial asked for as the last slot was taken, if the race happened
            # (it waits in the queue unrun: hpo/workers/_loop.py `_claim_slot`)
            page.get_by_text(f"{len(study.get_trials(deepcopy=False))} Trials", exact=True).wait_for()
            page.get_by_text(f"Trial {complete.number}", exact=True).first.click()
            artifact = page.get_by_text("confusion_matrix.png", exact=True).first
            artifact.wait_for()
            artifact.scroll_into_view_if_needed()
            for name in ARTIFACT_FILES:
                assert page.get_by_text(name, exact=True).count() >= 1
            # The confusion-matrix preview image really loaded in the browser.
            img = page.locator("img[src*='/artifacts/']").first
            img.wait_for()
            assert page.evaluate("(el) => el.complete && el.naturalWidth > 100", img.element_handle())
            page.screenshot(path=str(tmp_path / "dashboard_trial.png"))
        finally:
            browser.close()
    for shot in ("dashboard_home.png", "dashboard_trial.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- C7: one storage resolution -------------------------------------------------------------------------


def test_three_storage_spellings_open_the_same_study(swept_study, tmp_path):
    """`dashboard`, `--storage storage/maskcls_hpo.db`, `--storage sqlite:///storage/maskcls_hpo.db` (from the
    folder that holds storage/) and the env variable all show the same study with the same trials."""
    root = swept_study.root
    spellings = {
        "default": ([], None),
        "path": (["--storage", "storage/maskcls_hpo.db"], None),
        "url": (["--storage", "sqlite:///storage/maskcls_hpo.db"], None),
        "env": ([], subprocess_env(MASKCLS_HPO_STORAGE="storage/maskcls_hpo.db")),
    }
    procs = {
        k: DashboardProcess(args, cwd=root, log=tmp_path / f"{k}.log", env=env) for k, (args, env) in spellings.items()
    }
    try:
        seen = {}
        for key, proc in procs.items():
            proc.wait_ready()
            sid = study_id_of(proc.base, swept_study.study)
            status, body = http_get(f"{proc.base}/api/studies/{sid}")
            assert status == 200
            trials = json.loads(body)["trials"]
            seen[key] = (sid, [(t["number"], t["state"], t.get("values")) for t in trials])  # a WAITING one has none
        reference = seen["default"]
        assert len(reference[1]) == len(load(swept_study).trials)  # what is stored (3 finished, see above)
        assert all(v == reference for v in seen.values()), seen
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.mark.parametrize("spelling", ["nosuch/maskcls_hpo.db", "sqlite:///nosuch/maskcls_hpo.db", "missing.db", None])
def test_missing_database_is_an_error_and_no_file_is_made(tmp_path, spelling):
    args = ["--storage", spelling] if spelling else []
    result = run_cli("dashboard", *args, "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "no study database at" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.rglob("*")) == []  # no database file, no folder


def test_a_file_that_is_not_a_study_database_is_refused(tmp_path):
    (tmp_path / "empty.db").write_bytes(b"")
    result = run_cli("dashboard", "--storage", "empty.db", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "is not an Optuna study database" in result.stderr


def test_schema_of_another_optuna_version_is_refused(swept_study, tmp_path):
    """C5: stop at once with both versions and the upgrade command; nothing is changed."""
    old = tmp_path / "old.db"
    con = sqlite3.connect(swept_study.db)
    try:
        con.execute(f"VACUUM INTO '{old}'")
    finally:
        con.close()
    con = sqlite3.connect(old)
    con.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    con.commit()
    con.close()
    result = run_cli("dashboard", "--storage", str(old), "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "v3.0.0.d" in err and f"Optuna {optuna.__version__}" in err
    assert "optuna storage upgrade --storage" in err
    con = sqlite3.connect(old)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "v3.0.0.d"
    con.close()


def test_port_in_use_is_one_clear_error(swept_study, tmp_path):
    port = swept_study.dashboard.port
    result = run_cli("dashboard", "--storage", str(swept_study.db), "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# --- C6: the password never shows ------------------------------------------------------------------------


def _pg_admin_url() -> str:
    return os.environ.get("MASKCLS_HPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_study_db():
    """A fresh PostgreSQL database holding one Optuna study (dropped afterwards); yields its name."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(_pg_admin_url()).set(drivername="postgresql")
    name = f"maskcls_dash_{uuid.uuid4().hex[:8]}"
    try:
        con = psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        pytest.fail(f"PostgreSQL at {admin.render_as_string()} is needed (start it or set MASKCLS_HPO_TEST_PG): {err}")
    with con:
        con.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    optuna.create_study(study_name="pg-dash", storage=url, direction="maximize")
    yield admin, name
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_password_never_shows_on_a_wrong_database(tmp_path):
    url = f"postgresql+psycopg://maskcls:{SECRET}@127.0.0.1:5432/nosuchdb"
    result = run_cli("dashboard", "--storage", url, "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "maskcls:***@127.0.0.1:5432/nosuchdb" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.postgres
def test_password_never_shows_while_serving(pg_study_db, tmp_path):
    admin, name = pg_study_db
    url = admin.set(drivername="postgresql+psycopg", password=SECRET, database=name).render_as_string(
        hide_password=False
    )
    # The URL travels in the environment (as `launch` passes it to workers), so `ps` does not show it.
    proc = DashboardProcess([], cwd=tmp_path, log=tmp_path / "pg.log", env=subprocess_env(MASKCLS_HPO_STORAGE=url))
    proc.wait_ready()
    assert "pg-dash" in http_get(proc.base + "/api/studies")[1].decode()
    out = proc.stop()
    assert f"{admin.username}:***@" in out
    assert SECRET not in out
    for path in tmp_path.rglob("*"):  # nothing the dashboard wrote (log, artifact folder) holds it
        assert not path.is_file() or SECRET not in path.read_text(errors="replace")


# --- read-only by default (writes need --allow-writes) ------------------------------------------------------


def http_request(url: str, method: str, body: bytes | None = None, content_type: str = "application/json"):
    """One request with any method -> (HTTP status, body); HTTP errors are returned, not raised."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def two_studies(tmp_path) -> Path:
    """`tmp_path/two.db` with studies 'keep' (one COMPLETE trial, a study note) and 'other'."""
    from optuna_dashboard import save_note

    db = tmp_path / "two.db"
    url = f"sqlite:///{db}"
    keep = optuna.create_study(study_name="keep", storage=url, direction="maximize")
    keep.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=1)
    save_note(keep, "the note as launch wrote it")
    optuna.create_study(study_name="other", storage=url, direction="maximize")
    return db


def study_names(db: Path) -> list[str]:
    return sorted(optuna.get_all_study_names(f"sqlite:///{db}"))


@pytest.mark.slow
def test_read_only_dashboard_refuses_every_write_with_403(two_studies, tmp_path):
    from optuna_dashboard import get_note

    args = ["--storage", str(two_studies), "--study-name", "keep"]
    proc = DashboardProcess(args, cwd=tmp_path, log=tmp_path / "ro.log").wait_ready()
    try:
        sid = study_id_of(proc.base, "keep")
        assert f"open http://127.0.0.1:{proc.port}/dashboard/studies/{sid}" in proc.output()  # --study: its page
        trial_id = json.loads(http_get(f"{proc.base}/api/studies/{sid}")[1])["trials"][0]["trial_id"]
        status, body = http_request(f"{proc.base}/api/studies/{sid}", "DELETE")
        assert status == 403
        assert "read-only" in json.loads(body)["reason"] and "--allow-writes" in json.loads(body)["reason"]
        writes = [
            ("PUT", f"/api/studies/{sid}/note", {"version": 2, "body": "vandalised"}),
            ("POST", f"/api/studies/{sid}/rename", {"study_name": "renamed"}),
            ("POST", "/api/studies", {"study_name": "new", "directions": ["maximize"]}),
            ("POST", f"/api/trials/{trial_id}/user-attrs", {"user_attrs": {"x": 1}}),
            ("POST", f"/api/artifacts/{sid}", {"file": "data:text/plain;base64,aGk=", "filename": "x.txt"}),
            ("PATCH", f"/api/studies/{sid}", {}),
        ]
        for method, path, payload in writes:
            assert http_request(proc.base + path, method, json.dumps(payload).encode())[0] == 403, (method, path)
        out = proc.output()
    finally:
        proc.stop()
    assert study_names(two_studies) == ["keep", "other"]  # still 2 studies, none renamed or added
    keep = optuna.load_study(study_name="keep", storage=f"sqlite:///{two_studies}")
    assert get_note(keep) == "the note as launch wrote it"
    assert keep.trials[0].user_attrs == {}
    assert not any((tmp_path / "artifacts").rglob("*.txt"))
    assert "read-only" in out and f"refused DELETE /api/studies/{sid}" in " ".join(out.split())


def test_allow_writes_lets_a_study_be_deleted(two_studies, tmp_path):
    args = ["--storage", str(two_studies), "--allow-writes"]
    proc = DashboardProcess(args, cwd=tmp_path, log=tmp_path / "rw.log").wait_ready()
    try:
        sid = study_id_of(proc.base, "other")
        assert http_request(f"{proc.base}/api/studies/{sid}", "DELETE")[0] == 204
        out = proc.output()
    finally:
        proc.stop()
    assert study_names(two_studies) == ["keep"]
    assert "writes allowed" in out


def test_study_option_must_exist(two_studies, tmp_path):
    result = run_cli("dashboard", "--storage", str(two_studies), "--study", "nosuch", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "no study 'nosuch' in" in result.stderr and "(studies: keep, other)" in result.stderr


@pytest.mark.browser
@pytest.mark.slow
def test_deleting_a_study_in_chromium_fails_and_the_study_stays(two_studies, tmp_path):
    """A visitor clicks the bin icon of study 'other' and confirms: the page says it failed, the study is there."""
    from playwright.sync_api import sync_playwright

    proc = DashboardProcess(["--storage", str(two_studies)], cwd=tmp_path, log=tmp_path / "ui.log").wait_ready()
    sid = study_id_of(proc.base, "other")
    refused = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.on(
                    "response", lambda r: r.request.method != "GET" and refused.append((r.request.method, r.status))
                )
                page.goto(proc.base + "/dashboard", wait_until="networkidle")
                card = page.locator(".MuiCard-root", has_text=f"{sid}. other")
                card.get_by_role("button", name="delete study").click()
                page.get_by_role("button", name="YES").click()
                page.get_by_text(f"Failed to delete study (id={sid})").wait_for()
                page.screenshot(path=str(tmp_path / "refused.png"))
                page.reload(wait_until="networkidle")
                page.get_by_text(f"{sid}. other", exact=True).wait_for()  # still listed after a reload
            finally:
                browser.close()
    finally:
        proc.stop()
    assert refused == [("DELETE", 403)]
    assert study_names(two_studies) == ["keep", "other"]


# --- Optuna's own tools on a study the project made (problem C14, docs/architecture.md) ----------------------


def optuna_tool(name: str) -> str:
    import sys

    return str(Path(sys.executable).with_name(name))


def test_optuna_trials_and_best_trial_read_the_project_study(swept_study, tmp_path):
    study = load(swept_study)
    args = ["--storage", swept_study.url, "--study-name", swept_study.study, "-f", "json"]
    trials = subprocess.run([optuna_tool("optuna"), "trials", *args], capture_output=True, text=True, timeout=120)
    assert trials.returncode == 0, trials.stderr
    rows = json.loads(trials.stdout)
    assert [r["number"] for r in rows] == [t.number for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert {r["number"]: r["value"] for r in rows if r["state"] == "COMPLETE"} == {
        t.number: {"val_macro_f1": t.value} for t in complete
    }
    best = subprocess.run([optuna_tool("optuna"), "best-trial", *args], capture_output=True, text=True, timeout=120)
    assert best.returncode == 0, best.stderr
    doc = json.loads(best.stdout)
    assert doc["number"] == study.best_trial.number and doc["state"] == "COMPLETE"
    assert doc["value"] == {"val_macro_f1": study.best_value}
    assert doc["params"] == study.best_trial.params


def test_plain_optuna_dashboard_shows_the_project_study(swept_study, tmp_path):
    import time

    from helpers.processes import free_port

    port = free_port()
    artifacts = swept_study.db.parent / "artifacts"
    cmd = [optuna_tool("optuna-dashboard"), swept_study.url, "--port", str(port), "--artifact-dir", str(artifacts)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if http_get(base + "/api/meta", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "optuna-dashboard did not start"
            time.sleep(0.3)
        sid = study_id_of(base, swept_study.study)
        detail = json.loads(http_get(f"{base}/api/studies/{sid}")[1])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert detail["objective_names"] == ["val_macro_f1"]
    assert len(detail["trials"]) == len(load(swept_study).trials)  # what is stored (3 finished, see above)
    for t in detail["trials"]:
        if t["state"] in ("Complete", "Pruned"):
            assert sorted(a["filename"] for a in t["artifacts"]) == sorted(ARTIFACT_FILES)
    assert "smoke.py" in detail["note"]["body"]
