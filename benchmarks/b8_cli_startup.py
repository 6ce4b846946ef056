"""B8 read-only verbs: `maskcls-hpo status` and `export` against Optuna's own `optuna trials` on one study.

A small study as a real smoke sweep leaves it (``--trials`` trials, 70% COMPLETE / 30% PRUNED, each with the
smoke sweep's params, 4 intermediate values and the objective's user attrs including the full config), in a
fresh SQLite file. Each command runs as a fresh process from the repository root (process wall time), the
four commands alternating, ``--repeats`` times:

- ``maskcls-hpo status --storage DB``;
- ``maskcls-hpo export --storage DB --out best.yaml``;
- ``optuna trials --storage sqlite:///DB --study-name NAME`` (Optuna's CLI, every trial as a table);
- ``python -c "import torch, timm"``: what `export` imported for its version stamp before issue 14.

Target: `status` and `export` within 1.5x of `optuna trials` (median of the per-repeat ratios). At this size
the time is start-up (imports, opening the storage), which is what the target is about; B6 measures 1k-10k
trial studies.

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b8_cli_startup.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, median, print_table, save_result  # noqa: E402

VENV = REPO / ".venv" / "bin"
TARGET_RATIO = 1.5
STUDY = "smoke"


def make_study(db: Path, trials: int) -> None:
    """`trials` finished trials with what the objective stores (no training)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    from maskcls_hpo.config import TrainConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{db}", direction="maximize")
    study.set_metric_names(["val_macro_f1"])
    dists = {"lr": FloatDistribution(1e-3, 3e-2, log=True), "batch_size": CategoricalDistribution([16, 32])}
    for i in range(trials):
        complete = i % 10 < 7
        lr, batch = 1e-3 * (1 + i % 7), (16, 32)[i % 2]
        curve = {e: 0.2 + 0.05 * e + 0.01 * (i % 5) for e in range(1, 5 if complete else 3)}
        config = TrainConfig(lr=lr, batch_size=batch, epochs=4, data_dir="storage/demo").to_dict()
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE if complete else TrialState.PRUNED,
                value=max(curve.values()),
                params={"lr": lr, "batch_size": batch},
                distributions=dists,
                intermediate_values=curve,
                user_attrs={
                    "config": config,
                    "accuracy": 0.5,
                    "task_f1": {"mask": 0.9, "gender": 0.7, "age": 0.4},
                    "best_epoch": len(curve),
                    "epoch_seconds": [5.0] * len(curve),
                    "device": "cpu",
                    "seed": 42,
                    "worker": i % 2,
                },
            )
        )


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("MASKCLS_HPO_STORAGE", "OPTUNA_STORAGE")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="maskcls_b8_") as tmp:
        work = Path(tmp)
        db = work / "b8.db"
        make_study(db, args.trials)
        commands = {
            "status": [str(VENV / "maskcls-hpo"), "status", "--storage", str(db)],
            "export": [str(VENV / "maskcls-hpo"), "export", "--storage", str(db), "--out", str(work / "best.yaml")],
            "optuna trials": [str(VENV / "optuna"), "trials", "--storage", f"sqlite:///{db}", "--study-name", STUDY],
            "import torch, timm": [str(VENV / "python"), "-c", "import torch, timm"],
        }
        for cmd in commands.values():  # warm the page cache once
            timed(cmd, REPO, env)
        seconds: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                seconds[name].append(timed(cmd, REPO, env))
    base = seconds["optuna trials"]
    ratios = {
        k: median([a / b for a, b in zip(seconds[k], base, strict=True)])
        for k in ("status", "export", "import torch, timm")
    }
    rows = [
        [name, median(values), ratios.get(name, 1.0), "met" if ratios.get(name, 0) <= TARGET_RATIO else "not met"]
        for name, values in seconds.items()
    ]
    rows[-1][-1] = ""  # the reference, no target
    rows[2][-1] = ""
    print_table(
        f"B8 read-only verbs, {args.trials}-trial SQLite study",
        ["command", "median s", "/ optuna trials", "target"],
        rows,
    )
    path = save_result(
        "b8_cli_startup",
        {
            "settings": {"trials": args.trials, "repeats": args.repeats, "target_ratio": TARGET_RATIO},
            "code": subprocess.run(
                ["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True
            ).stdout.strip(),
            "seconds": seconds,
            "median_seconds": {k: median(v) for k, v in seconds.items()},
            "ratio_to_optuna_trials": ratios,
            "target_met": {k: ratios[k] <= TARGET_RATIO for k in ("status", "export")},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
