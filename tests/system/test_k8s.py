"""deploy/k8s/: the example Kubernetes Jobs hold only real maskcls-hpo commands and a consistent pod spec.

No Kubernetes cluster here, so nothing is applied (docs/deploy/kubernetes.md says so): the manifests are read
with PyYAML and every container's `args` is checked against the Typer app (a registered verb, options that verb
has, sweep files that exist), as tests/system/test_compose.py does for docker-compose.yml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
import yaml
from helpers import REPO_ROOT
from sqlalchemy.engine import make_url

from maskcls_hpo.cli import app

REPO = REPO_ROOT
K8S = REPO / "deploy" / "k8s"


@pytest.fixture(scope="module")
def jobs() -> dict[str, dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job", path
            out[doc["metadata"]["name"]] = doc
    return out


def _container(job: dict) -> dict:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_init_then_an_indexed_job_of_gpu_workers(jobs):
    assert set(jobs) == {"maskcls-hpo-init", "maskcls-hpo-workers"}
    assert _container(jobs["maskcls-hpo-init"])["args"][:1] == ["launch"]
    assert "--workers" in (a := _container(jobs["maskcls-hpo-init"])["args"]) and a[a.index("--workers") + 1] == "0"
    spec = jobs["maskcls-hpo-workers"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 1
    worker = _container(jobs["maskcls-hpo-workers"])
    assert worker["args"][0] == "worker" and worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the completion index is the worker index (sampler-seed offset), read from the pod's annotation
    args = worker["args"]
    assert args[args.index("--worker-index") + 1] == "$(JOB_COMPLETION_INDEX)"
    env = {e["name"]: e for e in worker["env"]}
    assert "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert jobs["maskcls-hpo-workers"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_every_command_is_a_real_maskcls_hpo_command(jobs):
    group = typer.main.get_command(app)
    for name, job in jobs.items():
        argv = _container(job)["args"]
        verb, args = argv[0], argv[1:]
        assert verb in group.commands, f"{name}: `maskcls-hpo {verb}` is not a command"
        options = {o for p in group.commands[verb].params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        for arg in args:
            if arg.startswith("-"):
                assert arg in options, f"{name}: `maskcls-hpo {verb}` has no option {arg}"
            if arg.startswith("sweeps/"):
                assert (REPO / arg).is_file(), f"{name}: {arg} is not in the repository (the image copies sweeps/)"
        assert not re.search(r"\$\((?!JOB_COMPLETION_INDEX\))", " ".join(args)), f"{name}: an undefined $(VAR)"


def test_storage_secret_and_shared_volume(jobs):
    for name, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        c = _container(job)
        env = {e["name"]: e.get("value") for e in c["env"]}
        url = make_url(env["MASKCLS_HPO_STORAGE"])
        assert url.drivername == "postgresql+psycopg" and url.password is None, name
        assert int(env["MASKCLS_HPO_GRACE_PERIOD"]) > int(env["MASKCLS_HPO_HEARTBEAT_INTERVAL"]), name
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert set(mounts.values()) <= set(volumes), name
        # the password file lies in the mounted secret; checkpoints, artifacts and logs on the shared claim
        secret_dir = str(Path(env["MASKCLS_HPO_PASSWORD_FILE"]).parent)
        assert "secret" in volumes[mounts[secret_dir]], name
        shared = volumes[mounts["/app/storage"]]
        assert shared["persistentVolumeClaim"]["claimName"] == "maskcls-shared", name
        args = c["args"]
        assert args[args.index("--checkpoints") + 1].startswith("/app/storage/"), name
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsUser"] != 0, name
