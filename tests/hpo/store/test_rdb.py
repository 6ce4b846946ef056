"""hpo/store/_rdb.py: the heartbeat settings, SQLite in WAL mode, and the schema check (C5)."""

import sqlite3

import optuna
import pytest

from maskcls_hpo.errors import StorageError, StorageSchemaError
from maskcls_hpo.hpo.store import HeartbeatSettings, check_schema, open_storage, resolve_storage_url


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
