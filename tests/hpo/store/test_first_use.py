"""Concurrent first use of a storage (hpo/store/_rdb.py, ``first_use_lock``): real processes open a new database
at the same moment; the schema is created once and every process joins it.

Issue 25 saw two launches on a new SQLite file die in 2 of 3 repeats ("UNIQUE constraint failed:
alembic_version.version_num", "table study_user_attributes already exists").
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from helpers.spawned import open_at

from maskcls_hpo.hpo.store import HeartbeatSettings

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed"),
]

HEARTBEAT = HeartbeatSettings(interval=1, grace_period=20)
N_CREATORS = 4


def _first_use(url: str, reader: bool) -> list[str]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 5.0  # every process has imported Optuna by then
    jobs = [(i, url, start_at, f"study-{i % 2}", True, out) for i in range(N_CREATORS)]
    if reader:  # the dashboard's way: no table creation, a little after the launches began
        jobs.append((N_CREATORS, url, start_at + 0.05, None, False, out))
    procs = [ctx.Process(target=open_at, args=job) for job in jobs]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return [results[n] for n in range(len(procs))]  # in process order (they finish in any order)


def _tables_once(url: str) -> tuple[int, list[str]]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            rows = con.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).scalar_one()
            names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    finally:
        engine.dispose()
    return int(rows), names


def test_several_processes_on_a_new_sqlite_file_create_the_schema_once(tmp_path):
    db: Path = tmp_path / "sub" / "new.db"
    url = f"sqlite:///{db}"
    results = _first_use(url, reader=True)
    # the reader may come before the file exists (refused: nothing to read yet) or join; no creator fails
    assert results[:N_CREATORS] == ["ok"] * N_CREATORS
    assert results[-1] == "ok" or results[-1].endswith("no study database there (nothing was created)")
    assert _tables_once(url) == (1, ["study-0", "study-1"])
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("new.db-")) == ["new.db", "new.db.lock"]


@pytest.mark.postgres
def test_several_processes_on_a_new_postgres_database_create_the_schema_once(pg_database):
    results = _first_use(pg_database, reader=False)
    assert results == ["ok"] * N_CREATORS
    assert _tables_once(pg_database) == (1, ["study-0", "study-1"])
