"""docker-compose.yml and the Dockerfile: the shape docs/architecture.md, "Faults" asks for, and only real commands.

No Docker engine here, so nothing is started: the file is read with PyYAML (merge keys resolved as Compose
does), `${VAR:-default}` takes its default, and every command of a service that runs the maskcls-hpo image is
checked against the Typer app: a registered verb, options that verb has, and `--help` exiting 0.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml
from helpers import REPO_ROOT
from sqlalchemy.engine import make_url

from maskcls_hpo.cli import app

REPO = REPO_ROOT
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _interpolate(value: str) -> str:
    """`${VAR:-default}` -> default (what Compose does with VAR unset)."""
    assert "${" not in _DEFAULT.sub("", value), f"a variable without a default: {value!r}"
    return _DEFAULT.sub(lambda m: m.group(2), value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def _entrypoint() -> list[str]:
    lines = [ln for ln in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines() if ln.startswith("ENTRYPOINT")]
    assert len(lines) == 1
    return json.loads(lines[0].removeprefix("ENTRYPOINT").strip())


def _app_services(compose: dict) -> dict[str, dict]:
    """Services that run the image the Dockerfile builds (so their `command` is maskcls-hpo's argv)."""
    return {
        name: s
        for name, s in compose["services"].items()
        if "build" in s or s.get("image", "").startswith("maskcls-hpo")
    }


def test_postgres_has_a_volume_and_a_healthcheck(compose):
    pg = compose["services"]["postgres"]
    mounts = dict(v.split(":", 1) for v in pg["volumes"])
    assert mounts["pgdata"] == "/var/lib/postgresql/data"
    assert "pgdata" in compose["volumes"]  # a named volume: the database outlives the container
    test = pg["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready")
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    assert "POSTGRES_PASSWORD" not in pg["environment"]


def test_worker_reserves_a_gpu_and_scales(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert [d["driver"] for d in devices] == ["nvidia"]
    assert "gpu" in devices[0]["capabilities"] and devices[0]["count"] == 1
    # `--scale worker=N` needs no fixed container name and no published host port
    assert "container_name" not in worker and "ports" not in worker
    # workers start after the database is healthy and the study was prepared once
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert compose["services"]["dashboard"]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_storage_url_carries_no_password(compose):
    for name, service in _app_services(compose).items():
        env = service["environment"]
        url = make_url(env["MASKCLS_HPO_STORAGE"])
        assert url.drivername == "postgresql+psycopg" and url.host == "postgres" and url.password is None, name
        secret = Path(env["MASKCLS_HPO_PASSWORD_FILE"]).name
        assert env["MASKCLS_HPO_PASSWORD_FILE"] == f"/run/secrets/{secret}" and secret in service["secrets"], name
        assert secret in compose["secrets"]
        assert int(env["MASKCLS_HPO_GRACE_PERIOD"]) > int(env["MASKCLS_HPO_HEARTBEAT_INTERVAL"])


def test_every_command_is_a_real_maskcls_hpo_command(compose):
    assert _entrypoint() == ["maskcls-hpo"]
    group = typer.main.get_command(app)
    services = _app_services(compose)
    assert set(services) == {"init", "worker", "dashboard"}
    assert services["init"]["command"][0] == "launch" and services["worker"]["command"][0] == "worker"
    verbs = set()
    for name, service in services.items():
        argv = [_interpolate(str(a)) for a in service["command"]]
        verb, args = argv[0], argv[1:]
        assert verb in group.commands, f"{name}: `maskcls-hpo {verb}` is not a command"
        command = group.commands[verb]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        for arg in args:
            if arg.startswith("-"):
                assert arg in options, f"{name}: `maskcls-hpo {verb}` has no option {arg}"
        for arg in args:  # sweep files named in a command are in the repository (mounted at /app/sweeps)
            if arg.startswith("sweeps/"):
                assert (REPO / arg).is_file(), f"{name}: {arg} does not exist"
        verbs.add(verb)
    for verb in sorted(verbs):
        done = subprocess.run(
            [sys.executable, "-m", "maskcls_hpo", verb, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"maskcls-hpo {verb} --help: {done.stderr}"


def test_dockerfile_builds_the_package_and_only_what_it_needs():
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    copied = [ln.split()[1] for ln in text.splitlines() if ln.startswith("COPY")]
    for path in copied:
        assert (REPO / path).exists(), path
    assert "sweeps" in copied and "maskcls_hpo" in copied
    assert re.search(r"^USER (?!root)\w+", text, re.M)  # not root
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "storage"} <= set(ignored)
