"""PostgreSQL connection discipline (hpo/store/): at most 2 connections per worker process, and a launch
that would need more than the server's max_connections refused before anything starts.

A private server (tests/helpers/pg.py `PrivateServer`) with ``max_connections=20`` and ``log_connections=on``; 8 worker
processes run the project's worker loop with a no-training objective (benchmarks/b7_connections.py, the same
code that measures the figure in docs/deploy/slurm.md), sampled from ``pg_stat_activity`` every 20 ms.
"""

from __future__ import annotations

import sys

import psycopg
import pytest
from helpers import REPO_ROOT
from helpers.pg import PrivateServer, cli, write_sweep

from maskcls_hpo.errors import LaunchError
from maskcls_hpo.hpo.store import CONNECTIONS_PER_PROCESS, check_connection_budget, engine_kwargs

REPO = REPO_ROOT
sys.path.insert(0, str(REPO / "benchmarks"))
import b7_connections  # noqa: E402


@pytest.fixture
def pg20():
    server = PrivateServer(settings={"max_connections": 20, "log_connections": "on"}).init()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_pool_never_grows_past_two():
    kw = engine_kwargs("postgresql+psycopg://u@h/db")
    assert CONNECTIONS_PER_PROCESS == 2
    assert kw["pool_size"] == 2 and kw["max_overflow"] == 0
    assert kw["connect_args"]["application_name"].startswith("maskcls-hpo ")
    assert engine_kwargs("sqlite:///x.db") == {"connect_args": {"timeout": 60.0}}
    assert check_connection_budget("sqlite:///x.db", 100) is None


@pytest.mark.postgres
def test_eight_workers_at_max_connections_20(pg20):
    admin = f"host=127.0.0.1 port={pg20.port} user=postgres dbname=postgres"
    r = b7_connections.measure(admin, pg20.port, pg20.logfile, workers=8, n_trials=24, pool=None)
    assert r["connection_errors"] == 0, r
    assert r["finished"] == 24 and r["states"]["RUNNING"] == 0 and r["states"]["FAIL"] == 0
    assert r["peak_connections_per_worker"] == 2, r  # main thread + heartbeat thread, never more
    assert len(r["peak_connections_by_worker"]) == 8
    assert r["peak_connections_all_workers"] <= 16
    # from the server's own log, over each process's life, one after another (never more than 2 open at once):
    # the pre-flight check's engine (hpo.launch.check_join: 2, closed before the run), the schema check of each
    # of the two storages it opens (1 + 1), the first-use check whether Optuna's schema is made (1, closed before
    # the storage opens: store._rdb._pg_schema_made, issue 25), and the run's 2 pool connections
    assert len(r["connections_opened_by_worker"]) == 8 and max(r["connections_opened_by_worker"]) <= 7, r
    assert r["budget_check"]["max_connections"] == 20 and r["budget_check"]["max_workers"] >= 8


@pytest.mark.postgres
def test_too_many_workers_refused_before_anything(pg20, tiny_demo, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{pg20.port}/postgres"
    with pytest.raises(LaunchError) as err:
        check_connection_budget(url, 10)
    text = str(err.value)
    assert text.startswith("10 workers need 20 PostgreSQL connections") and "max_connections=20" in text
    # the CLI: one line, exit 1, no Optuna table created
    sweep = write_sweep(tmp_path, "crowd", tiny_demo, epochs=2)
    done = cli(["launch", str(sweep), "--n-trials", "4", "--workers", "10", "--storage", url], cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "10 workers need 20 PostgreSQL connections" in lines[0] and "max_connections=20" in lines[0]
    with psycopg.connect(f"host=127.0.0.1 port={pg20.port} user=postgres dbname=postgres") as con:
        tables = con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    assert tables == 0
