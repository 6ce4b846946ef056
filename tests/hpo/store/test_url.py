"""hpo/store/_url.py: storage URL resolution shared by every verb (C7), the password file, and which of
--storage, MASKCLS_HPO_STORAGE, OPTUNA_STORAGE and the default a URL came from (C14)."""

import pytest

from maskcls_hpo.errors import StorageError
from maskcls_hpo.hpo.store import DEFAULT_STORAGE, display_url, resolve_storage_url

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


def test_password_file(tmp_path):
    pw = tmp_path / "pgpass"
    pw.write_text(SECRET + "\n")
    url = resolve_storage_url("postgresql://maskcls@127.0.0.1/db", password_file=str(pw))
    assert url == f"postgresql+psycopg://maskcls:{SECRET}@127.0.0.1/db"
    assert display_url(url) == "postgresql+psycopg://maskcls:***@127.0.0.1/db"
    with pytest.raises(StorageError, match="cannot read the password file"):
        resolve_storage_url("postgresql://maskcls@127.0.0.1/db", password_file=str(tmp_path / "none"))


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
