"""hpo/store/_url.py: a libpq keyword/value string (``host=h user=u password=pw dbname=d``) as `--storage` or env
MASKCLS_HPO_STORAGE is a PostgreSQL storage (issue 25): converted to a ``postgresql+psycopg://`` URL, or refused as
a keyword string, and its password never shown, neither as written nor URL-encoded."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from maskcls_hpo.cli import app
from maskcls_hpo.errors import StorageError
from maskcls_hpo.hpo.store import display_url, is_keyword_string, mask_password, resolve_storage

SECRET = "S3cr3t kw/+"  # a space, a slash and a plus: each URL-encodes differently


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("host=127.0.0.1 user=u password=pw dbname=db", "postgresql+psycopg://u:pw@127.0.0.1/db"),
        ("host=db.example port=5433 user=u dbname=study", "postgresql+psycopg://u@db.example:5433/study"),
        (
            "host=h user=u dbname=d sslmode=require connect_timeout=5",
            "postgresql+psycopg://u@h/d?connect_timeout=5&sslmode=require",
        ),
        ("host=/var/run/postgresql dbname=d", "postgresql+psycopg:///d?host=%2Fvar%2Frun%2Fpostgresql"),
        ("host=h1,h2 port=5432,5433 dbname=d", "postgresql+psycopg:///d?host=h1%2Ch2&port=5432%2C5433"),
    ],
)
def test_keyword_strings_become_psycopg_urls(raw, url):
    assert is_keyword_string(raw)
    assert resolve_storage(raw).url == url


@pytest.mark.parametrize(
    "raw", ["storage/maskcls_hpo.db", "a=b.db", "/data/x=1/study.db", "sqlite:///x.db", "postgresql://u@h/d?a=b"]
)
def test_paths_and_urls_are_no_keyword_strings(raw):
    assert not is_keyword_string(raw)


def test_a_quoted_password_is_read_and_masked():
    raw = f"host=127.0.0.1 user=u password='{SECRET}' dbname=db"
    resolved = resolve_storage(raw)
    assert make_url(resolved.url).password == SECRET
    assert display_url(resolved.url) == "postgresql+psycopg://u:***@127.0.0.1/db"
    for form in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET), quote(SECRET)):
        assert form not in mask_password(f"could not connect: {form} ({raw}) {resolved.url}")


@pytest.mark.parametrize("via_env", [False, True])
def test_a_bad_keyword_string_is_refused_as_such_without_its_password(via_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = "hots=127.0.0.1 user=u password=Kw-Typo-9 dbname=db"  # a typo in `host`
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    if via_env:
        monkeypatch.setenv("MASKCLS_HPO_STORAGE", raw)
    result = CliRunner().invoke(app, ["status"] if via_env else ["status", "--storage", raw])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: cannot parse storage 'hots=127.0.0.1 user=u password=*** dbname=db' "
        f"({'from env MASKCLS_HPO_STORAGE' if via_env else 'from --storage'}) as a libpq keyword string: "
        'invalid connection option "hots"; use host=HOST user=USER dbname=DB (the password in --password-file '
        "or PGPASSWORD), or postgresql+psycopg://USER@HOST:PORT/DB"
    ]
    assert "Kw-Typo-9" not in result.output and "Kw-Typo" not in result.output
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the string


def test_an_unclosed_quote_is_refused(tmp_path):
    with pytest.raises(StorageError, match=r"as a libpq keyword string: .*; use host=HOST") as caught:
        resolve_storage("host=h user=u password='Kw-open-10 dbname=db")
    assert "Kw-open-10" not in str(caught.value)


@pytest.mark.postgres
def test_status_on_postgres_through_a_keyword_string(pg_database, tmp_path, monkeypatch):
    import optuna

    url = make_url(pg_database)
    optuna.create_study(storage=pg_database, study_name="kw", direction="maximize")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setenv(
        "MASKCLS_HPO_STORAGE",
        f"host={url.host} port={url.port or 5432} user={url.username} password=Kw-Pg-11 dbname={url.database}",
    )
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "kw" in result.output and "Kw-Pg-11" not in result.output
    assert list(Path(tmp_path).iterdir()) == []


def test_dashboard_refuses_an_empty_host(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for host in ("", " ", "127.0.0.1 "):
        result = CliRunner().invoke(app, ["dashboard", "--host", host, "--storage", str(tmp_path / "none.db")])
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"error: --host {host!r} is not an address to listen on; give 127.0.0.1 (this machine only, the "
            "default) or 0.0.0.0 (every interface: anyone who can reach this machine can open the dashboard, it "
            "has no login)"
        ]
    assert list(tmp_path.iterdir()) == []
