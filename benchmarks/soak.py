"""Soak: workers killed with SIGKILL at random moments (and a PostgreSQL restart) while a study runs.

Not part of pytest. For each storage (SQLite, PostgreSQL on a private server as tests/helpers/pg.py starts one):

1. `maskcls-hpo launch SWEEP --n-trials N --workers 0` prepares the study (tiny procedural data, 3 epochs);
2. 2 `maskcls-hpo worker` processes start, as a user would start them;
3. `--kills` times, after a random wait, one worker is killed with SIGKILL: most at a random moment, every
   third one right after a worker said "joins study" (0-1 s later: between ask() and the first heartbeat
   the trial had no heartbeat row); each killed worker is replaced by a new `worker` command;
4. on PostgreSQL the server is restarted once (fast shutdown, start 3 s later) in the middle;
5. the study must finish on its own; then the stored trials are counted.

Recorded (benchmarks/results/soak.json), per storage: trials lost (a killed trial with no queued copy),
trials left RUNNING, finished == N, and for each re-run that resumed from a checkpoint whether it continued
at the epoch after the checkpoint's (the killed trial's last stored epoch), with every epoch reported once.
Targets: 0 / 0 / yes / all.

Run (about 10-15 minutes per storage on 2 shared cores):

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/soak.py --storage sqlite postgres
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from common import save_result  # noqa: E402

RESUME_LINE = re.compile(r"trial (\d+) resumes from (\S+) \(epoch (\d+)\); training continues at epoch (\d+)")
EPOCHS = 3


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKCLS_HPO_")}
    env.update({"COLUMNS": "400", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    return env


def _write_sweep(folder: Path, data_dir: Path) -> Path:
    text = (REPO / "sweeps" / "smoke.py").read_text(encoding="utf-8")
    for old, new in (
        ('"epochs": 4', f'"epochs": {EPOCHS}'),
        ('"data_dir": "storage/demo"', f'"data_dir": {str(data_dir)!r}'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    # every trial runs all its epochs, so that kills land in the middle of trials
    text += "\n\ndef make_pruner(config):\n    return optuna.pruners.NopPruner()\n"
    path = folder / "soak.py"
    path.write_text(text, encoding="utf-8")
    return path


class Worker:
    """One `maskcls-hpo worker` process with its own log file."""

    def __init__(self, n: int, args: list[str], cwd: Path) -> None:
        self.n = n
        self.log = cwd / f"worker-{n:02d}.log"
        fh = open(self.log, "wb")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maskcls_hpo", "worker", *args],
            cwd=cwd,
            env=_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        fh.close()
        self.started = time.monotonic()

    def joined(self) -> bool:
        return "joins study" in self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def _counts(url: str, study: str) -> dict[str, int]:
    import optuna

    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def soak(kind: str, n_trials: int, kills: int, seed: int, workdir: Path) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    from maskcls_hpo.demo import write_demo_dataset

    rng = random.Random(seed)
    work = workdir / kind
    work.mkdir(parents=True)
    data = work / "data"
    write_demo_dataset(data, persons=24, eval_persons=0, size=(36, 48), seed=1, progress=False)
    sweep = _write_sweep(work, data)
    server = None
    if kind == "sqlite":
        url = f"sqlite:///{work / 'soak.db'}"
    else:
        from pg import PrivateServer, create_database

        server = PrivateServer().init()
        server.start()
        url = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{create_database(server.admin_url)}"
    beat = ["--heartbeat-interval", "1", "--grace-period", "8"]
    common = ["--storage", url, "--checkpoints", str(work / "checkpoints"), *beat]
    started = time.monotonic()
    prep = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskcls_hpo",
            "launch",
            str(sweep),
            "--n-trials",
            str(n_trials),
            "--workers",
            "0",
            *common,
        ],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-2000:]
    worker_args = [str(sweep), *common]
    counter = 0

    def new_worker() -> Worker:
        nonlocal counter
        counter += 1
        return Worker(counter, worker_args, work)

    workers = [new_worker(), new_worker()]
    events: list[dict[str, Any]] = []
    restart_at = kills // 2 if server is not None else -1
    deadline = time.monotonic() + 40 * 60
    for k in range(kills):
        after_join = k % 3 == 2
        if after_join:
            w = workers[-1]  # the most recent replacement
            while not w.joined() and w.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            time.sleep(rng.uniform(2.0, 20.0))
            alive = [w for w in workers if w.alive()]
            if not alive:
                break
            w = rng.choice(alive)
        if not w.alive():
            events.append({"kill": k, "skipped": f"worker {w.n} already exited ({w.proc.returncode})"})
            continue
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(timeout=60)
        events.append(
            {
                "kill": k,
                "worker": w.n,
                "moment": "right after it joined" if after_join else "random",
                "seconds_after_start": round(time.monotonic() - w.started, 2),
                "at_s": round(time.monotonic() - started, 1),
                "counts": _counts(url, "soak") if server is None or server.is_running() else None,
            }
        )
        workers = [x for x in workers if x is not w] + [new_worker()]
        print(f"[{kind}] kill {k + 1}/{kills}: worker {w.n} ({events[-1]['moment']})", flush=True)
        if k == restart_at and server is not None:
            server.stop("fast")
            time.sleep(3)
            server.start()
            events.append({"postgres_restart": True, "at_s": round(time.monotonic() - started, 1)})
            print(f"[{kind}] PostgreSQL restarted", flush=True)
    # the study must now finish by itself
    exit_codes = []
    for w in workers:
        try:
            w.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(timeout=60)
        exit_codes.append(w.proc.returncode)
    seconds = time.monotonic() - started
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    trials = sorted(
        optuna.load_study(study_name="soak", storage=storage).get_trials(deepcopy=False), key=lambda t: t.number
    )
    storage.engine.dispose()
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    copied = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    lost = [t.number for t in failed if t.number not in copied]
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(work.glob("worker-*.log")))
    by_number = {t.number: t for t in trials}
    resumes = []
    for m in RESUME_LINE.finditer(logs):
        number, ckpt, epoch, cont = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        copy = by_number.get(number)
        killed_number = int(re.search(r"trial_(\d+)", ckpt).group(1))
        killed = by_number.get(killed_number)
        last_stored = max(killed.intermediate_values, default=0) if killed is not None else None
        steps = sorted(copy.intermediate_values) if copy is not None else []
        right = (
            cont == epoch + 1
            and last_stored is not None
            and epoch >= last_stored  # nothing stored was trained again from scratch
            and (copy is None or copy.state != TrialState.COMPLETE or steps == list(range(1, EPOCHS + 1)))
        )
        resumes.append(
            {
                "trial": number,
                "from_trial": killed_number,
                "checkpoint_epoch": epoch,
                "continues_at": cont,
                "killed_trial_last_stored_epoch": last_stored,
                "copy_state": copy.state.name if copy is not None else None,
                "copy_epochs": steps,
                "right_epoch": right,
            }
        )
    reasons: dict[str, int] = {}
    for t in failed:
        r = str(t.user_attrs.get("reason", "(none)")).split(":")[0]
        reasons[r] = reasons.get(r, 0) + 1
    if server is not None:
        server.cleanup()
    result = {
        "storage": kind,
        "n_trials": n_trials,
        "workers": 2,
        "kills": sum("worker" in e for e in events),
        "kills_right_after_join": sum(e.get("moment") == "right after it joined" for e in events),
        "postgres_restarts": sum("postgres_restart" in e for e in events),
        "seconds": round(seconds, 1),
        "finished": finished,
        "finished_equals_n": finished == n_trials,
        "trials_lost": len(lost),
        "lost_trials": lost,
        "left_running": len(running),
        "failed_trials": len(failed),
        "failed_by_reason": reasons,
        "resumes": len(resumes),
        "resumes_at_right_epoch": sum(r["right_epoch"] for r in resumes),
        "resume_details": resumes,
        "final_worker_exit_codes": exit_codes,
        "events": events,
    }
    print(
        f"[{kind}] {finished}/{n_trials} finished, lost {len(lost)}, left RUNNING {len(running)}, "
        f"resumes right {result['resumes_at_right_epoch']}/{len(resumes)}, {seconds:.0f} s",
        flush=True,
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    ap.add_argument("--n-trials", type=int, default=16)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="maskcls-soak-") as tmp:
        for kind in args.storage:
            runs[kind] = soak(kind, args.n_trials, args.kills, args.seed, Path(tmp))
    targets = {"trials_lost": 0, "left_running": 0, "finished_equals_n": True, "resumes_at_right_epoch": "all"}
    met = {
        kind: r["trials_lost"] == 0
        and r["left_running"] == 0
        and r["finished_equals_n"]
        and r["resumes_at_right_epoch"] == r["resumes"]
        for kind, r in runs.items()
    }
    path = save_result("soak", {"targets": targets, "met": met, "runs": runs}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
