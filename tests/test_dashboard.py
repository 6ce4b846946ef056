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
from conftest import DashboardProcess, http_get, maskcls_hpo_command, subprocess_env
from optuna.trial import TrialState

from maskcls_hpo.results.artifacts import ARTIFACT_FILES
from maskcls_hpo.results.dashboard import dashboard_address, is_loopback

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
    detail_polls = [p for p, _ in poller.polls if p.startswith("/api/studies/")]
    assert len(detail_polls) >= 10  # the study page was read many times while the sweep ran
    # The dashboard was read while trials were running, and again after all 3 had finished.
    assert any("Running" in states for states in poller.states)
    assert len(poller.states[-1]) == 3 and "Running" not in poller.states[-1]
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
            page.get_by_text("3 Trials", exact=True).wait_for()
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
            seen[key] = (sid, [(t["number"], t["state"], t["values"]) for t in trials])
        reference = seen["default"]
        assert len(reference[1]) == 3
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


# --- helpers --------------------------------------------------------------------------------------------


def test_loopback_and_address():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert dashboard_address("127.0.0.1", 8080) == "http://127.0.0.1:8080/dashboard"
    assert dashboard_address("0.0.0.0", 9000) == "http://127.0.0.1:9000/dashboard"
    assert dashboard_address("::1", 8080) == "http://[::1]:8080/dashboard"
