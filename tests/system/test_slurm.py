"""`launch --backend slurm` on the real single-node Slurm cluster (scripts/test-env.sh starts it).

The code under test: hpo/workers/_slurm.py.

- A smoke sweep as one array job of 2 tasks, on SQLite and on PostgreSQL: exactly 6 finished trials, none
  RUNNING, both tasks COMPLETED (``scontrol show job``; gone from ``squeue``), each trial marked with its
  Slurm job and task.
- A task cancelled (``scancel``) or requeued (``scontrol requeue``) in the middle of a trial: the trial is FAIL,
  its copy resumes from the epoch checkpoint (the log line), the budget stays exact; the requeued task runs
  again (``restart 1``) and completes; `status` names the job and task of a running trial.
- The script and settings file: the array, resources and outputs asked for, no password anywhere (the script
  alone, without a cluster: tests/hpo/workers/test_slurm.py).
- Bad input (no sbatch on PATH, an unknown partition, GPUs on a cluster without any, SQLite on several
  nodes): one line, exit 1, nothing submitted, no database or logs folder created.

Heartbeat 2 s / grace 8 s and 2-6 epochs on the 24-person demo keep each sweep within about a minute or two on
2 busy cores; every task asks for 1 CPU, so the 2-CPU node runs both tasks at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.pg import cli, cli_background, load_trials, wait_for, write_sweep
from optuna.trial import TrialState

HEARTBEAT = ["--heartbeat-interval", "2", "--grace-period", "8"]
JOB_LINE = re.compile(r"submitted Slurm array job (\d+)")
RESUME_LINE = re.compile(r"trial (\d+) resumes from (\S+) \(epoch (\d+)\); training continues at epoch (\d+)")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _task_states(job: str) -> dict[int, str]:
    """Array task index -> JobState, read with `scontrol -o show job` (what squeue/sacct call the states)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True).stdout
    states = {}
    for line in out.splitlines():
        task = re.search(r"\bArrayTaskId=(\d+)\b", line)
        if task and f"ArrayJobId={job} " in line:
            states[int(task.group(1))] = re.search(r"\bJobState=(\S+)", line).group(1)
    return states


def _in_squeue(job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i %T %r"], capture_output=True, text=True).stdout
    return out.strip().split("\n") if out.strip() else []


def _job_id(text: str) -> str | None:
    m = JOB_LINE.search(text)
    return m.group(1) if m else None


def _log_folder(cwd: Path, url: str, study: str) -> Path:
    """`logs/<study>` beside an SQLite file, else `storage/logs/<study>` under the launch folder."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).parent / "logs" / study
    return cwd / "storage" / "logs" / study


def _running_in_slurm(url: str, study: str, min_epochs: int, max_epochs: int):
    """A RUNNING trial with min..max epochs reported that carries its Slurm task attr, else None."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return None
    try:
        trials = load_trials(url, study)
    except Exception:  # noqa: BLE001 - study not created yet
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and min_epochs <= len(t.intermediate_values) <= max_epochs:
            if "slurm_task_id" in t.user_attrs:
                return t
    return None


@pytest.mark.slurm
def test_dry_run_writes_script_and_settings_without_password(slurm_cluster, tiny_demo, tmp_path):
    sweep = write_sweep(tmp_path, "dry", tiny_demo, epochs=2)
    url = "postgresql+psycopg://maskcls:s3cret-pw@127.0.0.1:1/nowhere"  # never connected to in a dry run
    done = cli(
        ["launch", str(sweep), "--backend", "slurm", "--workers", "3", "--n-trials", "5", "--storage", url,
         "--time", "00:30:00", "--sbatch-arg=--comment=hpo", "--dry-run"],
        cwd=tmp_path,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    folder = tmp_path / "storage" / "logs" / "dry"
    script = (folder / "slurm-array.sbatch").read_text()
    settings = json.loads((folder / "slurm-worker.json").read_text())
    assert "nothing submitted" in out and "s3cret" not in out
    assert "s3cret" not in script and "s3cret" not in json.dumps(settings)
    assert settings["storage_url"] == "postgresql+psycopg://maskcls@127.0.0.1:1/nowhere"
    assert settings["worker_index_env"] == "SLURM_ARRAY_TASK_ID" and settings["n_trials"] == 5
    assert Path(settings["sweep_path"]) == sweep.resolve()
    for line in ("#SBATCH --array=0-2", "#SBATCH --time=00:30:00", "#SBATCH --comment=hpo", "#SBATCH --requeue"):
        assert line in script.splitlines()
    assert not _job_id(out)
    # a person can check the script with Slurm itself: sbatch --test-only validates it and submits nothing
    test = subprocess.run(["sbatch", "--test-only", str(folder / "slurm-array.sbatch")], capture_output=True, text=True)
    assert test.returncode == 0 and "to start at" in test.stderr, test.stderr


# --- whole sweeps ----------------------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_array_of_two_reaches_exactly_six_trials(kind, request, slurm_cluster, tiny_demo, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else request.getfixturevalue("pg_database")
    sweep = write_sweep(tmp_path, "twotasks", tiny_demo, epochs=2)
    done = cli(
        ["launch", str(sweep), "--backend", "slurm", "--workers", "2", "--n-trials", "6", "--storage", url, *HEARTBEAT],
        cwd=tmp_path,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    job = _job_id(out)
    assert job, out[-2000:]
    trials = load_trials(url, "twotasks")
    assert sum(t.state in FINISHED for t in trials) == 6
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    # A trial asked for when the budget was already taken goes back to the queue unrun (WAITING, no worker
    # attrs: hpo/workers/_loop.py _claim_slot); on a loaded machine that happens. Every trial that ran names
    # the array job and its task.
    ran = [t for t in trials if t.state in FINISHED]
    assert {t.state for t in trials} - set(FINISHED) <= {TrialState.WAITING}
    assert {t.user_attrs["slurm_job_id"] for t in ran} == {job}
    assert {t.user_attrs["slurm_task_id"] for t in ran} <= {0, 1}
    assert _task_states(job) == {0: "COMPLETED", 1: "COMPLETED"}
    assert _in_squeue(job) == []
    assert "tasks COMPLETED 2" in out
    folder = _log_folder(tmp_path, url, "twotasks")
    script = (folder / "slurm-array.sbatch").read_text().splitlines()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --cpus-per-task=1" in script
    assert not [line for line in script if "--gres" in line]
    for task in (0, 1):
        log = (folder / f"worker-{job}_{task}.log").read_text()
        assert re.search(
            rf"joins study 'twotasks' \(target 6 finished trials; slurm job {job}_{task}, restart 0\)", log
        )


def _interrupt_mid_trial(how: str, workers: int, n_trials: int, tiny_demo, tmp_path: Path):
    """Launch `workers` tasks, then `how` ("scancel" / "requeue") the task of a trial in its middle epochs.

    Returns (job, task index, the victim trial as it was, trials at the end, task outputs by file name, epochs).
    """
    epochs, study = 6, f"{how}d"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # 0.25 s per training batch: epochs 2..4 of a trial last seconds, so the poll below cannot miss them
    sweep = write_sweep(tmp_path, study, tiny_demo, epochs=epochs, prune=False, batch_sleep=0.25)
    args = ["launch", str(sweep), "--backend", "slurm", "--workers", str(workers), "--n-trials", str(n_trials)]
    launch = cli_background([*args, "--storage", url, *HEARTBEAT], cwd=tmp_path)
    try:
        job = wait_for(lambda: _job_id(launch.log_path.read_text(errors="replace")), 300, what="the job id")
        # `status` names the Slurm job and task of a running trial
        first = wait_for(lambda: _running_in_slurm(url, study, 0, epochs), 600, what="a trial running in Slurm")
        status = cli(["status", "--storage", url, "--study", study], cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        shown = status.stdout + status.stderr
        assert "slurm job" in shown and re.search(rf"\b{job}_[0-9]\b", shown), shown
        assert first.user_attrs["slurm_job_id"] == job
        victim = wait_for(lambda: _running_in_slurm(url, study, 2, epochs - 2), 600, what="a trial mid-way")
        task = victim.user_attrs["slurm_task_id"]
        name = f"{job}_{task}"
        if how == "scancel":
            subprocess.run(["scancel", name], check=True, timeout=30)
        else:
            subprocess.run(["scontrol", "requeue", name], check=True, timeout=30)
            # once its processes have ended Slurm holds a requeued job for about 2 minutes (Reason BeginTime);
            # let it start again at once
            wait_for(lambda: f"{name} PENDING BeginTime" in _in_squeue(job), 180, interval=1, what="the hold")
            subprocess.run(["scontrol", "update", f"JobId={name}", "StartTime=now"], check=True, timeout=30)
        code = launch.wait(timeout=900)
    finally:
        if launch.poll() is None:
            launch.kill()
    out = launch.log_path.read_text(errors="replace")
    assert code == 0, out[-3000:]
    folder = _log_folder(tmp_path, url, study)
    logs = {p.name: p.read_text(errors="replace") for p in folder.glob(f"worker-{job}_*.log")}
    return job, task, victim, load_trials(url, study), logs, epochs


def _assert_resumed(victim, trials, logs: dict[str, str], epochs: int, n_trials: int) -> None:
    by_number = {t.number: t for t in trials}
    assert sum(t.state in FINISHED for t in trials) == n_trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    killed = by_number[victim.number]
    assert killed.state == TrialState.FAIL
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    copy = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert copy.state == TrialState.COMPLETE and copy.params == killed.params
    reported = len(killed.intermediate_values)
    lines = [m for m in RESUME_LINE.finditer("\n".join(logs.values())) if int(m.group(1)) == copy.number]
    assert len(lines) == 1, "\n".join(logs.values())[-3000:]
    ckpt_epoch, next_epoch = int(lines[0].group(3)), int(lines[0].group(4))
    assert next_epoch == ckpt_epoch + 1 and ckpt_epoch in (reported, reported + 1) and ckpt_epoch >= 2
    assert sorted(copy.intermediate_values) == list(range(1, epochs + 1))


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_of_a_task_mid_trial_resumes_its_trial(slurm_cluster, tiny_demo, tmp_path):
    job, task, victim, trials, logs, epochs = _interrupt_mid_trial("scancel", 2, 3, tiny_demo, tmp_path)
    _assert_resumed(victim, trials, logs, epochs, 3)
    assert f"trial {victim.number} interrupted" in logs[f"worker-{job}_{task}.log"]
    assert _task_states(job) == {task: "CANCELLED", 1 - task: "COMPLETED"}
    copy = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert copy.user_attrs["slurm_task_id"] == 1 - task  # the task that was left ran it


@pytest.mark.slurm
@pytest.mark.slow
def test_scontrol_requeue_mid_trial_resumes_and_the_task_rejoins(slurm_cluster, tiny_demo, tmp_path):
    # one task: nobody else moves the study on while it waits in the queue, so it must come back to finish it
    job, task, victim, trials, logs, epochs = _interrupt_mid_trial("requeue", 1, 2, tiny_demo, tmp_path)
    _assert_resumed(victim, trials, logs, epochs, 2)
    mine = logs[f"worker-{job}_{task}.log"]  # --open-mode=append: both runs of the task in one file
    first, _, second = mine.partition(f"slurm job {job}_{task}, restart 1)")
    assert second, mine[-3000:]
    assert f"slurm job {job}_{task}, restart 0)" in first and f"trial {victim.number} interrupted" in first
    assert RESUME_LINE.search(second)  # the rejoined task resumed the trial it was running
    assert _task_states(job) == {0: "COMPLETED"}


@pytest.mark.slurm
@pytest.mark.slow
def test_ctrl_c_with_cancel_on_exit_then_detach(slurm_cluster, tiny_demo, tmp_path):
    epochs, study = 6, "again"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sweep = write_sweep(tmp_path, study, tiny_demo, epochs=epochs, prune=False, batch_sleep=0.25)
    args = ["launch", str(sweep), "--backend", "slurm", "--workers", "1", "--n-trials", "2", "--storage", url]
    args += HEARTBEAT
    launch = cli_background([*args, "--cancel-on-exit"], cwd=tmp_path)
    try:
        job = wait_for(lambda: _job_id(launch.log_path.read_text(errors="replace")), 300, what="the job id")
        victim = wait_for(lambda: _running_in_slurm(url, study, 1, epochs - 2), 600, what="a trial mid-way")
        launch.send_signal(signal.SIGINT)  # Ctrl-C
        code = launch.wait(timeout=180)
    finally:
        if launch.poll() is None:
            launch.kill()
    out = launch.log_path.read_text(errors="replace")
    assert code == 130 and f"cancelled Slurm job {job}" in out, out[-2000:]
    assert _in_squeue(job) == [] and _task_states(job) == {0: "CANCELLED"}
    trials = {t.number: t for t in load_trials(url, study)}
    assert trials[victim.number].state == TrialState.FAIL
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    copy = next(t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number)
    assert copy.state == TrialState.WAITING  # queued to resume

    # --detach: submit and return at once; the array finishes the study by itself
    done = cli([*args, "--detach"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    second = _job_id(done.stdout + done.stderr)
    assert second and second != job and "scancel " + second in done.stdout + done.stderr
    wait_for(lambda: not _in_squeue(second), 600, interval=2, what="the detached job to end")
    trials = load_trials(url, study)
    assert sum(t.state in FINISHED for t in trials) == 2
    assert next(t for t in trials if t.number == copy.number).user_attrs["slurm_job_id"] == second
    assert _task_states(second) == {0: "COMPLETED"}


# --- bad input ------------------------------------------------------------------------------------------


def _slurm_bin_free_path(tmp_path: Path) -> str:
    """A PATH with the venv's and the system's tools but no Slurm commands (symlinks to a few basics)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("bash", "sh", "env", "hostname", "date"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            os.symlink(found, folder / tool)
    return f"{Path(sys.executable).parent}:{folder}"


@pytest.mark.slurm
@pytest.mark.parametrize(
    "case, args, expected",
    [
        ("no sbatch", [], r"`sbatch`.* is not on PATH"),
        ("partition", ["--partition", "nosuch"], r"--partition 'nosuch' does not exist on this cluster \(partitions: "),
        ("gpus", ["--gpus-per-worker", "1"], r"--gpus-per-worker 1: no node of partition '\w+' has GPUs"),
        ("sqlite nodes", ["--sbatch-arg=--nodelist=node[1-3]"], r"SQLite storage with 2 workers on up to 3 nodes"),
    ],
)
def test_bad_input_is_one_line_and_submits_nothing(case, args, expected, slurm_cluster, tiny_demo, tmp_path):
    sweep = write_sweep(tmp_path, "bad", tiny_demo, epochs=2)
    env = {"PATH": _slurm_bin_free_path(tmp_path)} if case == "no sbatch" else None
    before = subprocess.run(["squeue", "-h", "-n", "maskcls-bad"], capture_output=True, text=True).stdout
    db = tmp_path / "study.db"
    done = cli(
        ["launch", str(sweep), "--backend", "slurm", "--workers", "2", "--n-trials", "2", "--storage", str(db), *args],
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert not db.exists() and not (tmp_path / "logs").exists()  # nothing stored, no script written
    after = subprocess.run(["squeue", "-h", "-n", "maskcls-bad"], capture_output=True, text=True).stdout
    assert after == before == ""
