"""WorkerSettings (hpo/workers/_options.py): what a worker's settings file may hold."""

from __future__ import annotations

from pathlib import Path

from maskcls_hpo.hpo.workers import WorkerSettings


def test_without_password_drops_it_from_the_url_and_hands_it_over():
    s = WorkerSettings(
        sweep_path="x.py", storage_url="postgresql+psycopg://maskcls:s3cret@db:5432/hpo?sslmode=require", study_name="x"
    )
    bare, password = s.without_password()
    assert bare.storage_url == "postgresql+psycopg://maskcls@db:5432/hpo?sslmode=require"
    assert password == "s3cret" and "s3cret" not in bare.model_dump_json()
    # with a password file the worker reads the file itself: nothing to pass on
    with_file = s.model_copy(
        update={"options": s.options.model_copy(update={"password_file": Path("/run/secrets/pg")})}
    )
    bare, password = with_file.without_password()
    assert password is None and "s3cret" not in bare.model_dump_json()


def test_worker_index_from_the_environment():
    s = WorkerSettings(sweep_path="x.py", storage_url="sqlite:///x.db", study_name="x", worker_index_env="TASK")
    assert s.for_this_process({"TASK": "3"}).worker_index == 3
    assert s.for_this_process({}).worker_index == 0
