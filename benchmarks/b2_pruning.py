"""B2 pruning efficiency: the smoke sweep with its own pruner vs the same sampler without pruning.

Both studies run ``sweeps/smoke.py`` (test_efficientnet, 48x36 images, 4 epochs, TPE with seed 0 and 4
start-up trials, KNOWN_GOOD enqueued first) through the project's worker loop (``workers.run_worker``, one
worker, in this process, SQLite in a scratch folder) on the same demo dataset with the same seeds and the same
number of trials; only the pruner differs:

- ``sweep``: the sweep file's pruner (HyperbandPruner(min_resource=1, max_resource=4, reduction_factor=2));
- ``none``: ``optuna.pruners.NopPruner()``;
- optionally more pruners to compare (``--pruners``, e.g. ``sha3`` = SuccessiveHalvingPruner(min_resource=1,
  reduction_factor=3), ``sha4`` (reduction_factor=4), ``median`` = MedianPruner(n_startup_trials=2,
  n_warmup_steps=1), ``hb3`` = HyperbandPruner(min_resource=1, max_resource=4, reduction_factor=3)); with
  ``--reference results/b2_pruning.json`` the ``none`` study of that file is the reference instead of a new
  run (the same seeds and data on a CPU give the same trials).

Reported per study: epochs trained (sum over trials of the epochs each ran), best val macro F1 of a COMPLETE
trial (what the sweep exports), the best F1 seen in any epoch of any trial, trials pruned, wall time.

    .venv/bin/python benchmarks/b2_pruning.py                       # 12 trials each on storage/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, demo_dataset, print_table, ratio, save_result  # noqa: E402

PRUNERS = {
    "sweep": None,  # the sweep file's own make_pruner
    "none": lambda config: __import__("optuna").pruners.NopPruner(),
    "sha3": lambda config: __import__("optuna").pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    "sha4": lambda config: __import__("optuna").pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
    "hb3": lambda config: __import__("optuna").pruners.HyperbandPruner(
        min_resource=1, max_resource=config.epochs, reduction_factor=3
    ),
    "median": lambda config: __import__("optuna").pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
}


def describe_pruner(pruner) -> str:
    """``HyperbandPruner(min_resource=1, max_resource=4, reduction_factor=2)``: the class and its settings."""
    keys = (
        "min_resource",
        "max_resource",
        "reduction_factor",
        "n_startup_trials",
        "n_warmup_steps",
        "min_early_stopping_rate",
    )
    args = [f"{k}={getattr(pruner, '_' + k)}" for k in keys if isinstance(getattr(pruner, "_" + k, None), int | str)]
    return f"{type(pruner).__name__}({', '.join(args)})"


def run_study(
    pruner: str, sweep_file: Path, data_dir: Path, n_trials: int, work: Path, epochs: int | None = None
) -> dict:
    import optuna

    from maskcls_hpo.hpo.launch import prepare_study
    from maskcls_hpo.hpo.storage import HeartbeatSettings, open_storage
    from maskcls_hpo.hpo.sweep import load_sweep
    from maskcls_hpo.hpo.worker import WorkerSettings, run_worker

    sweep = load_sweep(sweep_file)
    if epochs is not None:  # a longer (or shorter) sweep: the pruner gets the new epoch count too
        sweep = dataclasses.replace(sweep, base_config=sweep.base_config.model_copy(update={"epochs": epochs}))
    if PRUNERS[pruner] is not None:
        sweep = dataclasses.replace(sweep, _make_pruner=PRUNERS[pruner])
    url = f"sqlite:///{work / f'b2-{pruner}.db'}"
    storage = open_storage(url, HeartbeatSettings())
    name = f"b2-{pruner}"
    prepare_study(sweep, storage, name, n_trials)
    overrides = {"data_dir": str(data_dir), "cache_dir": str(work / "cache"), "device": "cpu"}
    settings = WorkerSettings(
        sweep_path=sweep.path,
        storage_url=url,
        study_name=name,
        n_trials=n_trials,
        overrides=overrides,
        checkpoints=work / "ckpt",
        poll_interval=0.2,
    )
    t0 = time.perf_counter()
    report = run_worker(settings, sweep=sweep)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "epochs": len(t.intermediate_values),
            "value": t.value,
            "max_epoch_f1": max(t.intermediate_values.values(), default=None),
            "params": t.params,
            "reason": t.user_attrs.get("reason"),
            "f1_by_epoch": [round(t.intermediate_values[k], 4) for k in sorted(t.intermediate_values)],
        }
        for t in trials
    ]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    epochs = sum(r["epochs"] for r in rows)
    return {
        "pruner": pruner,
        "pruner_desc": describe_pruner(sweep.make_pruner()),
        "trials": len(trials),
        "complete": len(complete),
        "pruned": report.pruned,
        "failed": report.failed,
        "epochs": epochs,
        "best_f1": round(study.best_value, 4) if complete else None,
        "best_trial": study.best_trial.number if complete else None,
        "best_any_epoch_f1": round(max((r["max_epoch_f1"] or 0) for r in rows), 4),
        "wall_s": round(wall, 1),
        "per_trial": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO / "storage" / "demo",
        help="demo dataset (written with demo-data when missing)",
    )
    ap.add_argument("--persons", type=int, default=300)
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "smoke.py")
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the sweep's)")
    ap.add_argument("--pruners", default="sweep,none", help=f"comma-separated, from {', '.join(PRUNERS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a b2 JSON whose 'none' study is the no-pruning reference (instead of running it)",
    )
    ap.add_argument("--name", default="b2_pruning")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    demo_dataset(args.data, args.persons, (96, 128))
    work = Path(tempfile.mkdtemp(prefix="b2-"))
    studies = []
    try:
        for pruner in args.pruners.split(","):
            r = run_study(pruner, args.sweep, args.data, args.n_trials, work, args.epochs)
            studies.append(r)
            print(
                f"  {pruner}: {r['epochs']} epochs, best F1 {r['best_f1']}, {r['pruned']} pruned, {r['wall_s']} s",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ref = next((s for s in studies if s["pruner"] == "none"), None)
    if ref is None and args.reference is not None:
        import json

        ref = next(s for s in json.loads(args.reference.read_text())["studies"] if s["pruner"] == "none")
        ref = {**ref, "pruner": "none (reference)", "reference_file": str(args.reference)}
        studies.append(ref)
    for s in studies:
        if ref is not None:
            s["epochs_vs_no_pruning"] = ratio(s["epochs"], ref["epochs"])
            s["best_f1_minus_no_pruning"] = round(s["best_f1"] - ref["best_f1"], 4)
            # "the same best F1 within 0.01": not more than 0.01 below the run without pruning (higher is fine)
            s["target_met"] = (
                None
                if s["pruner"].startswith("none")
                else s["epochs_vs_no_pruning"] <= 0.4 and s["best_f1_minus_no_pruning"] >= -0.01
            )
    from maskcls_hpo.hpo.sweep import load_sweep

    base = load_sweep(args.sweep).base_config
    if args.epochs is not None:
        base = base.model_copy(update={"epochs": args.epochs})
    result = {
        "settings": {
            "sweep": str(args.sweep.relative_to(REPO)) if args.sweep.is_relative_to(REPO) else str(args.sweep),
            "data_dir": str(args.data),
            "n_trials": args.n_trials,
            "model": base.model,
            "image_size_hw": list(base.image_size or []),
            "epochs_per_trial": base.epochs,
            "sampler": "the sweep's (TPESampler(seed=0, n_startup_trials=4)), one worker",
            "device": "cpu",
            "torch_threads": args.threads,
        },
        "target": "same best val macro F1 (within 0.01) for at most 40% of the epochs of the run without pruning",
        "studies": studies,
    }
    path = save_result(args.name, result)
    print_table(
        f"B2 pruning: {args.n_trials} trials each, {base.model} at {base.image_size}, {base.epochs} epochs",
        ["pruner", "epochs", "epochs / no pruning", "best F1 (complete)", "best F1 - no pruning", "pruned", "wall s"],
        [
            [
                s["pruner"],
                s["epochs"],
                s.get("epochs_vs_no_pruning", float("nan")),
                s["best_f1"],
                s.get("best_f1_minus_no_pruning", float("nan")),
                s["pruned"],
                s["wall_s"],
            ]
            for s in studies
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
