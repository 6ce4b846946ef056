"""B3 service overhead: one trial under ``maskcls-hpo launch`` (1 worker, 1 trial) vs the same training run
called directly (``train.train(config)``).

The trial is the sweep's first KNOWN_GOOD setting, which ``launch`` enqueues as trial 0, so both sides train the
same config with the same seed on the same data (the decoded-image cache is built once before timing and
reused by both). Each side runs as a fresh process from the repository root, alternating, ``--repeats`` times:

- direct: ``python -c "... train(sweep.build_config(KNOWN_GOOD[0], {data_dir}), out_dir=...)"``; the process
  wall time and the ``train()`` call's own time;
- launch: ``maskcls-hpo launch SWEEP --n-trials 1 --workers 1 --storage sqlite:///... --data-dir ...``; the
  process wall time (sweep load, full data check, cache lookup, study creation, worker process, trial with
  artifacts, shutdown) and the trial's own time (its start/complete timestamps).

Overhead = launch process - direct process of the same repeat (both pay interpreter + torch start-up), median
over repeats; also split into the time outside the training run (fixed per launch) and inside the trial (per
epoch: reporting, pruner, checkpoints, artifacts). Sides alternate which goes first; both run with
``OMP_NUM_THREADS=1`` by default (steadier on a shared machine).

    .venv/bin/python benchmarks/b3_service_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, demo_dataset, median, print_table, ratio, save_result  # noqa: E402

DIRECT = """
import json, sys, time
from maskcls_hpo.hpo.trial import load_sweep
from maskcls_hpo.train import train
sweep = load_sweep(sys.argv[1])
config = sweep.build_config(sweep.known_good[0], {"data_dir": sys.argv[2]})
t0 = time.perf_counter()
r = train(config, out_dir=sys.argv[3])
print(json.dumps({"train_s": time.perf_counter() - t0, "best_f1": r.best_f1, "epochs": len(r.history)}))
"""


def _env(threads: int) -> dict:
    return {**os.environ, "COLUMNS": "120", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_direct(python: str, sweep: Path, data_dir: Path, out: Path, threads: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, "-c", DIRECT, str(sweep), str(data_dir), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=_env(threads),
    )
    wall = time.perf_counter() - t0
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "process_s": round(wall, 3),
        "train_s": round(info["train_s"], 3),
        "best_f1": round(info["best_f1"], 4),
        "epochs": info["epochs"],
    }


def run_launch(cli: str, sweep: Path, data_dir: Path, work: Path, i: int, threads: int) -> dict:
    import optuna

    db = work / f"b3-{i}.db"
    url = f"sqlite:///{db}"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            cli,
            "launch",
            str(sweep),
            "--n-trials",
            "1",
            "--workers",
            "1",
            "--storage",
            url,
            "--checkpoints",
            str(work / f"ckpt-{i}"),
            "--data-dir",
            str(data_dir),
            "--study",
            f"b3-{i}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(threads),
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"launch failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    study = optuna.load_study(study_name=f"b3-{i}", storage=url)
    t = study.trials[0]
    return {
        "process_s": round(wall, 3),
        "trial_s": round((t.datetime_complete - t.datetime_start).total_seconds(), 3),
        "best_f1": round(t.value, 4),
        "state": t.state.name,
        "epochs": len(t.intermediate_values),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "storage" / "demo")
    ap.add_argument("--persons", type=int, default=300)
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "smoke.py")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS of both sides (1: steadier timings on a shared machine)"
    )
    ap.add_argument("--name", default="b3_service_overhead")
    args = ap.parse_args()
    demo_dataset(args.data, args.persons, (96, 128))
    python = sys.executable
    cli = str(Path(python).with_name("maskcls-hpo"))
    work = Path(tempfile.mkdtemp(prefix="b3-"))
    # build (or find) the cache once, as `launch` would, so neither side pays for decoding
    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.hpo.workers import prepare_data

    sweep = load_sweep(args.sweep)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        prepare_data(sweep.build_config({}, {"data_dir": str(args.data)}))
    finally:
        os.chdir(cwd)
    direct, launched = [], []
    try:
        for i in range(args.repeats):
            for side in ("direct", "launch") if i % 2 == 0 else ("launch", "direct"):
                if side == "direct":
                    d = run_direct(python, args.sweep, args.data, work / f"direct-{i}", args.threads)
                    direct.append(d)
                else:
                    d = run_launch(cli, args.sweep, args.data, work, i, args.threads)
                    launched.append(d)
                print(f"  #{i} {side}: {d}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for i in range(args.repeats):  # launch's worker logs (storage/logs/<study>)
            shutil.rmtree(REPO / "storage" / "logs" / f"b3-{i}", ignore_errors=True)
    pairs = list(zip(direct, launched, strict=True))
    dp, lp = median([d["process_s"] for d in direct]), median([x["process_s"] for x in launched])
    dt, lt = median([d["train_s"] for d in direct]), median([x["trial_s"] for x in launched])
    overhead = median([x["process_s"] - d["process_s"] for d, x in pairs])
    trial_extra = median([x["trial_s"] - d["train_s"] for d, x in pairs])
    # what each side spends outside the training run itself (interpreter, imports, data, study, workers)
    fixed_direct = median([d["process_s"] - d["train_s"] for d in direct])
    fixed_launch = median([x["process_s"] - x["trial_s"] for x in launched])
    summary = {
        "direct_process_s": round(dp, 2),
        "launch_process_s": round(lp, 2),
        "overhead_s": round(overhead, 2),
        "overhead_share": ratio(overhead, dp),
        "direct_train_s": round(dt, 2),
        "launch_trial_s": round(lt, 2),
        "trial_vs_train_s": round(trial_extra, 2),
        "trial_vs_train_share": ratio(trial_extra, dt),
        "outside_training_direct_s": round(fixed_direct, 2),
        "outside_training_launch_s": round(fixed_launch, 2),
        "launch_fixed_overhead_s": round(fixed_launch - fixed_direct, 2),
        "same_f1": all(d["best_f1"] == x["best_f1"] for d, x in zip(direct, launched, strict=True)),
    }
    base = sweep.base_config
    result = {
        "settings": {
            "sweep": str(args.sweep.relative_to(REPO)),
            "data_dir": str(args.data),
            "config": {
                **sweep.known_good[0],
                "model": base.model,
                "image_size": list(base.image_size or []),
                "epochs": base.epochs,
            },
            "repeats": args.repeats,
            "storage": "SQLite in a scratch folder",
            "device": "cpu",
            "threads": args.threads,
        },
        "target": "launch at most 3% more wall time than the direct run, or a few seconds for very short trials",
        "summary": summary,
        "direct": direct,
        "launch": launched,
    }
    path = save_result(args.name, result)
    print_table(
        "B3 service overhead: one trial (median of repeats, seconds)",
        ["", "direct train()", "launch (1 worker, 1 trial)", "difference", "share"],
        [
            ["whole process", dp, lp, overhead, summary["overhead_share"]],
            ["training run / trial only", dt, lt, trial_extra, summary["trial_vs_train_share"]],
            ["outside the training run", fixed_direct, fixed_launch, fixed_launch - fixed_direct, float("nan")],
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
