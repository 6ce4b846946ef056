"""hpo/workers/_slurm.py without a cluster: the sbatch script of a worker array (the cluster itself:
tests/system/test_slurm.py)."""

from __future__ import annotations

from maskcls_hpo.hpo.workers import SlurmBackend, sbatch_script


def test_sbatch_script_has_the_array_resources_and_outputs(tmp_path):
    options = SlurmBackend(gpus_per_worker=2, partition="gpu", time="02:00:00", sbatch_args=("--qos=short", "--mem=8G"))
    text = sbatch_script(options, 3, tmp_path / "s.json", tmp_path / "logs", "st", "sqlite:///x.db", tmp_path, "/py")
    directives = [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert "--array=0-2" in directives and "--requeue" in directives
    assert "--gres=gpu:2" in directives and "--partition=gpu" in directives and "--time=02:00:00" in directives
    assert directives[-2:] == ["--qos=short", "--mem=8G"]
    assert f"--output={tmp_path / 'logs' / 'worker-%A_%a.log'}" in directives
    assert text.rstrip().endswith(f"exec /py -m maskcls_hpo.hpo.workers {tmp_path / 's.json'}")
    no_gpu = sbatch_script(SlurmBackend(), 1, tmp_path / "s.json", tmp_path, "st", "x", tmp_path, "/py")
    assert "--array=0-0" in no_gpu and "--gres" not in no_gpu
