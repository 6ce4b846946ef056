"""storage.py: URL resolution shared by every verb (C7), password masking (C6), schema check (C5)."""

import re
import sqlite3

import optuna
import pytest

from maskcls_hpo.errors import StorageError, StorageSchemaError
from maskcls_hpo.hpo.store import (
    DEFAULT_STORAGE,
    HeartbeatSettings,
    check_schema,
    display_url,
    mask_password,
    open_storage,
    resolve_storage_url,
)

SECRET = "S3cr3tTok3n"


def test_default_env_and_bare_path(monkeypatch, tmp_path):
    monkeypatch.delenv("MASKCLS_HPO_STORAGE", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert resolve_storage_url(None) == DEFAULT_STORAGE == "sqlite:///storage/maskcls_hpo.db"
    monkeypatch.setenv("MASKCLS_HPO_STORAGE", "sqlite:///elsewhere.db")
    assert resolve_storage_url(None) == "sqlite:///elsewhere.db"
    # a bare path and the sqlite URL of the same file resolve to the same URL
    assert resolve_storage_url("storage/maskcls_hpo.db") == resolve_storage_url("sqlite:///storage/maskcls_hpo.db")
    assert resolve_storage_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"


def test_postgres_spellings_use_psycopg():
    assert resolve_storage_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_storage_url("postgres://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"


def test_missing_sqlite_file_is_refused_without_creating_it(tmp_path):
    missing = tmp_path / "nope" / "study.db"
    with pytest.raises(StorageError, match=r"no study database at .*study\.db"):
        resolve_storage_url(str(missing), must_exist=True)
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize("must_exist", [True, False])
def test_a_folder_as_sqlite_storage_is_refused_naming_the_database_files_in_it(tmp_path, must_exist):
    folder = tmp_path / "storage"
    folder.mkdir()
    with pytest.raises(StorageError, match=r"is a folder, not an SQLite database file; pass the file, e\.g\."):
        resolve_storage_url(str(folder), must_exist=must_exist)
    (folder / "maskcls_hpo.db").write_bytes(b"")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(StorageError, match=rf"the database files in it: {folder / 'maskcls_hpo.db'}$"):
        resolve_storage_url(str(folder), must_exist=must_exist)
    assert sorted(p.name for p in folder.iterdir()) == ["maskcls_hpo.db", "notes.txt"]  # nothing created


def test_password_is_masked_everywhere():
    url = resolve_storage_url(f"postgresql+psycopg://maskcls:{SECRET}@127.0.0.1:5432/nosuchdb")
    assert display_url(url) == "postgresql+psycopg://maskcls:***@127.0.0.1:5432/nosuchdb"
    text = f"could not connect to {url}; password {SECRET} rejected"
    assert SECRET not in mask_password(text)
    assert mask_password(text).count("***") == 2


def test_password_file(tmp_path):
    pw = tmp_path / "pgpass"
    pw.write_text(SECRET + "\n")
    url = resolve_storage_url("postgresql://maskcls@127.0.0.1/db", password_file=str(pw))
    assert url == f"postgresql+psycopg://maskcls:{SECRET}@127.0.0.1/db"
    assert display_url(url) == "postgresql+psycopg://maskcls:***@127.0.0.1/db"
    with pytest.raises(StorageError, match="cannot read the password file"):
        resolve_storage_url("postgresql://maskcls@127.0.0.1/db", password_file=str(tmp_path / "none"))


def test_heartbeat_settings_from_env(monkeypatch):
    monkeypatch.setenv("MASKCLS_HPO_HEARTBEAT_INTERVAL", "5")
    monkeypatch.setenv("MASKCLS_HPO_GRACE_PERIOD", "20")
    assert HeartbeatSettings.from_env() == HeartbeatSettings(5, 20)
    assert HeartbeatSettings.from_env(interval=2).interval == 2
    with pytest.raises(StorageError, match="must be larger than --heartbeat-interval"):
        HeartbeatSettings(30, 30)


def test_sqlite_is_in_wal_mode_with_heartbeat(tmp_path):
    url = resolve_storage_url(str(tmp_path / "s.db"))
    storage = open_storage(url, HeartbeatSettings(5, 20))
    assert storage.get_heartbeat_interval() == 5
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _older_schema(db, revision="v3.0.0.d", made_by="3.0.0"):
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    con.execute("UPDATE version_info SET library_version = ?", (made_by,))
    con.commit()
    con.close()


def test_schema_of_another_optuna_version_is_refused_and_untouched(tmp_path):
    db = tmp_path / "old.db"
    url = resolve_storage_url(str(db))
    optuna.create_study(storage=open_storage(url), study_name="s")
    _older_schema(db)
    before = db.read_bytes()
    with pytest.raises(StorageSchemaError) as err:
        open_storage(url)
    msg = str(err.value)
    assert "v3.0.0.d" in msg and "made by Optuna 3.0.0" in msg and optuna.__version__ in msg
    assert f"optuna storage upgrade --storage '{url}'" in msg
    assert db.read_bytes() == before  # nothing migrated
    with pytest.raises(StorageSchemaError):
        check_schema(url)


# --- issue 14: OPTUNA_STORAGE after MASKCLS_HPO_STORAGE, and messages name where the storage came from -------


def test_storage_source_order(monkeypatch):
    from maskcls_hpo.hpo.store import resolve_storage

    monkeypatch.delenv("MASKCLS_HPO_STORAGE", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert resolve_storage(None) == resolve_storage(None)  # frozen dataclass, comparable
    assert (resolve_storage(None).url, resolve_storage(None).source) == (DEFAULT_STORAGE, "default")
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///optuna.db")
    assert (resolve_storage(None).url, resolve_storage(None).source) == ("sqlite:///optuna.db", "env OPTUNA_STORAGE")
    monkeypatch.setenv("MASKCLS_HPO_STORAGE", "sqlite:///ours.db")
    assert (resolve_storage(None).url, resolve_storage(None).source) == ("sqlite:///ours.db", "env MASKCLS_HPO_STORAGE")
    given = resolve_storage("given.db")
    assert (given.url, given.source) == ("sqlite:///given.db", "--storage")
    assert given.shown == "sqlite:///given.db (from --storage)"


@pytest.mark.parametrize(
    ("option", "env", "said"),
    [
        (
            None,
            {"OPTUNA_STORAGE": "sqlite:///x.db"},
            "no study database at x.db (from env OPTUNA_STORAGE 'sqlite:///x.db')",
        ),
        (
            None,
            {"MASKCLS_HPO_STORAGE": "y.db", "OPTUNA_STORAGE": "x.db"},
            "(from env MASKCLS_HPO_STORAGE 'sqlite:///y.db')",
        ),
        ("z.db", {"OPTUNA_STORAGE": "x.db"}, "no study database at z.db (from --storage 'sqlite:///z.db')"),
        (None, {}, "no study database at storage/maskcls_hpo.db (default 'sqlite:///storage/maskcls_hpo.db')"),
    ],
)
def test_missing_database_message_names_the_source(monkeypatch, tmp_path, option, env, said):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MASKCLS_HPO_STORAGE", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(StorageError) as info:
        resolve_storage_url(option, must_exist=True)
    assert said in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://maskcls:Pw-userinfo-1@127.0.0.1:5432/db",
        "postgresql+psycopg://maskcls@127.0.0.1:5432/db?password=Pw-query-2",
        "postgresql+psycopg://maskcls@127.0.0.1/db?sslmode=disable&password=Pw-query-3&application_name=x",
        "postgresql://maskcls@127.0.0.1/db?password=Pw%40encoded-4",
        "postgresql://maskcls@127.0.0.1/db?sslpassword=Pw-ssl-5",
        "connection failed: host=127.0.0.1 user=maskcls password=Pw-conninfo-6 dbname=db",
        "cannot open storage 'postgresql://maskcls@h/db?PASSWORD=Pw-upper-7': refused",
    ],
)
def test_every_form_of_password_in_a_url_is_masked(text):
    secret = re.search(r"Pw[-%\w]+", text).group(0)
    masked = mask_password(text)
    assert secret not in masked and "***" in masked
    assert masked.replace("***", secret) == text  # nothing else changed


def test_query_string_password_is_masked_in_display_url():
    url = resolve_storage_url("postgresql://maskcls@127.0.0.1/db?password=Pw-display-8")
    assert display_url(url) == "postgresql+psycopg://maskcls@127.0.0.1/db?password=***"


def test_the_default_study_skips_a_linked_confirm_study(tmp_path):
    import optuna

    from maskcls_hpo.hpo.store import open_study

    url = f"sqlite:///{tmp_path / 'two.db'}"
    optuna.create_study(study_name="smoke", storage=url)
    optuna.create_study(study_name="smoke-confirm", storage=url).set_user_attr("kind", "confirm")
    assert open_study(url).study_name == "smoke"
    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(StorageError, match=r"holds 3 studies \(smoke, smoke-confirm, other\); pass --study NAME"):
        open_study(url)
