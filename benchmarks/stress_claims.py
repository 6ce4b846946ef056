"""Stress: one claim per job under load with a short heartbeat (issue 25).

Not part of pytest. On a new SQLite storage in a work folder, with tiny procedural data (24 persons at 36x48,
2 epochs per trial, no pruning):

1. a source study: `maskcls-hpo launch` with `--top` trials (made once, reused by every repeat);
2. `--hogs` CPU hogs (``python -c 'while 1: pass'``) run the whole time beside the workers;
3. each repeat runs `maskcls-hpo confirm --top T --folds F --workers 2` into a new confirm study, and
   `maskcls-hpo launch --n-trials N --workers 3` into a new sweep study, both with
   ``--heartbeat-interval 1 --grace-period 4`` (issue 25 saw confirm run a job twice in 2 of 3 repeats so);
4. each study is counted: from the study (per job: its trials and their states; a job is a confirm run's
   (source trial, fold, seed), a sweep trial's number) and from the worker logs (the "trial N claimed by
   worker ..." line each worker writes when it starts training a trial).

Target per repeat: every job trained exactly once (one trial per job in the study, one "claimed" line per
trial in the logs, no trial with a retry history), 0 FAIL trials, 0 left RUNNING, exit code 0. Recorded in
benchmarks/results/stress_claims.json with the machine (benchmarks/common.py: load average included).

Run (a few minutes per repeat on 2 shared cores):

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/stress_claims.py --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from common import demo_dataset, machine_info, save_result  # noqa: E402

CLAIMED = re.compile(r"trial (\d+) claimed by worker (\S+) \(claim ([0-9a-f]+)\)")
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "4"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKCLS_HPO_")}
    env.update({"COLUMNS": "400", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    return env


def _cli(args: list[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maskcls_hpo", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _write_sweep(folder: Path, data_dir: Path) -> Path:
    text = (REPO / "sweeps" / "smoke.py").read_text(encoding="utf-8")
    for old, new in (('"epochs": 4', '"epochs": 2'), ('"data_dir": "storage/demo"', f'"data_dir": {str(data_dir)!r}')):
        assert old in text, old
        text = text.replace(old, new)
    text += "\n\ndef make_pruner(config):\n    return optuna.pruners.NopPruner()\n"
    path = folder / "stress.py"
    path.write_text(text, encoding="utf-8")
    return path


def _claims_in_logs(log_dir: Path) -> Counter[int]:
    """Trial number -> how many "claimed" lines the study's worker logs hold for it."""
    seen: Counter[int] = Counter()
    for log in sorted(log_dir.glob("worker-*.log")):
        for m in CLAIMED.finditer(log.read_text(errors="replace")):
            seen[int(m.group(1))] += 1
    return seen


def _count(url: str, study_name: str, log_dir: Path, confirm: bool) -> dict[str, Any]:
    """What the study and the worker logs say about one repeat (see the module docstring)."""
    import optuna
    from optuna.trial import TrialState

    trials = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    started = [t for t in trials if t.state != TrialState.WAITING]  # a WAITING one never trained
    claims = _claims_in_logs(log_dir)
    if confirm:
        keys = ("source_trial", "fold", "seed_index")  # a confirm run's params (hpo/attrs.py)
        jobs = Counter(tuple(t.params.get(k) for k in keys) for t in started)
    else:
        jobs = Counter(t.number for t in started)
    twice_by_log = sorted(n for n, k in claims.items() if k > 1)
    twice_by_study = sorted(str(j) for j, k in jobs.items() if k > 1)
    retried = sorted(t.number for t in trials if "failed_trial" in t.system_attrs)
    return {
        "states": dict(states),
        "jobs": len(jobs),
        "claimed_lines": sum(claims.values()),
        "trained_twice_by_logs": twice_by_log,
        "trained_twice_by_study": twice_by_study,
        "retried_trials": retried,
        "unclaimed_started": sorted(t.number for t in started if claims[t.number] == 0),
        "ok": (
            not twice_by_log
            and not twice_by_study
            and not retried
            and states.get("FAIL", 0) == 0
            and states.get("RUNNING", 0) == 0
            and all(claims[t.number] == 1 for t in started)
        ),
    }


def _one(kind: str, r: int, work: Path, sweep: Path, db: Path, args: argparse.Namespace) -> dict[str, Any]:
    common = ["--storage", str(db), "--checkpoints", str(work / "checkpoints")]  # logs: <work>/logs/<study>
    if kind == "confirm":
        name = f"confirm-{r:02d}"
        argv = ["confirm", "--study", "stress", "--name", name, "--top", str(args.top), "--folds", str(args.folds)]
        argv += ["--workers", "2", *HEARTBEAT, *common]
        expected = args.top * args.folds
    else:
        name = f"sweep-{r:02d}"
        argv = ["launch", str(sweep), "--study", name, "--n-trials", str(args.n_trials), "--workers", "3"]
        argv += [*HEARTBEAT, *common]
        expected = args.n_trials
    t0 = time.perf_counter()
    done = _cli(argv, work)
    seconds = time.perf_counter() - t0
    counted = _count(f"sqlite:///{db}", name, work / "logs" / name, confirm=kind == "confirm")
    counted["ok"] = counted["ok"] and done.returncode == 0 and counted["jobs"] == expected
    last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1:]
    row = {"kind": kind, "repeat": r, "study": name, "exit_code": done.returncode, "expected_jobs": expected}
    row.update(counted, seconds=round(seconds, 1), last_line=last[0] if last else "")
    print(f"{kind} {r}: {'ok' if row['ok'] else 'NOT OK'} {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--start", type=int, default=0, help="number of the first repeat (study names)")
    parser.add_argument("--kinds", nargs="+", default=["confirm", "sweep"], choices=["confirm", "sweep"])
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--top", type=int, default=3, help="confirm --top (jobs = top x folds)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--n-trials", type=int, default=6, help="the sweep's budget")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--merge", type=Path, default=None, help="a stress_claims.json whose runs are kept first")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="stress_claims_"))
    work.mkdir(parents=True, exist_ok=True)
    data = demo_dataset(work / "data", persons=24, size=(36, 48))
    sweep = _write_sweep(work, data)
    db = work / "stress.db"
    source = _cli(["launch", str(sweep), "--study", "stress", "--n-trials", str(args.top), "--storage", str(db)], work)
    assert source.returncode == 0, source.stdout[-2000:] + source.stderr[-2000:]
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.hogs)]
    rows: list[dict[str, Any]] = []
    load_before = machine_info()["load_average"]
    try:
        for r in range(args.start, args.start + args.repeats):
            for kind in args.kinds:
                rows.append(_one(kind, r, work, sweep, db, args))
                _save(rows, args, load_before)  # what finished so far survives an interrupted run
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    _save(rows, args, load_before)


def _save(rows: list[dict[str, Any]], args: argparse.Namespace, load_before: Any) -> None:
    if args.merge is not None and args.merge.is_file():  # an earlier run's repeats (same settings) come first
        rows = json.loads(args.merge.read_text(encoding="utf-8"))["runs"] + rows
    summary = {}
    for kind in args.kinds:
        mine = [r for r in rows if r["kind"] == kind]
        summary[kind] = {
            "repeats": len(mine),
            "ok": sum(r["ok"] for r in mine),
            "jobs_trained_twice": sum(len(r["trained_twice_by_logs"]) for r in mine),
            "failed_trials": sum(r["states"].get("FAIL", 0) for r in mine),
            "jobs": sum(r["jobs"] for r in mine),
        }
    settings = {
        "hogs": args.hogs,
        "heartbeat": HEARTBEAT,
        "confirm": f"--top {args.top} --folds {args.folds} --workers 2",
        "sweep": f"--n-trials {args.n_trials} --workers 3",
        "data": "procedural demo, 24 persons, 36x48 px, 2 epochs, NopPruner",
        "load_average_before": load_before,
    }
    path = save_result("stress_claims", {"settings": settings, "summary": summary, "runs": rows}, args.out)
    print(f"summary {summary} -> {path}", flush=True)


if __name__ == "__main__":
    main()
