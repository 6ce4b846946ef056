"""B2, part 1: record full per-epoch validation curves once, for replaying pruners over them (b2_pruning.py).

Draws ``--configs`` points of the smoke sweep's search space (``sweeps/smoke.py``: the shared
``hpo.spaces.mask_classifier_space`` with the smoke sweep's ranges, ``t_max`` up to ``--epochs``) with
``optuna.samplers.RandomSampler(seed=0)``, the sweep's KNOWN_GOOD first, and trains each for ``--epochs``
epochs with ``train.train`` (no pruning, one torch thread, CPU), recording the val macro F1 of every epoch.
The first ``--noise-configs`` configs are trained again with ``--noise-seeds`` more seeds (``config.seed``:
weights, augmentation and batch order; the train/val split follows the seed too), which gives the seed noise
eps = the mean over those configs of the standard deviation over seeds of the best epoch's val macro F1
(the trial's value).

The JSON (``results/<name>.json``) is rewritten after every run, so a recording cut short keeps what it has:
``configs`` = [{"index", "params", "distributions" (Optuna's JSON form, for ``enqueue``/``ask``), "f1" (list,
one per epoch), "seconds" (per epoch)}], ``noise`` = [{"index", "seed", "f1"}], ``eps``.

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b2_record.py --configs 48
    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b2_record.py --faces ../shared/data/utkface \\
        --configs 24 --name b2_curves_faces
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, demo_dataset, save_result  # noqa: E402


def draw_configs(n: int, epochs: int, seed: int = 0) -> list[dict]:
    """``n`` points of the smoke sweep's space: KNOWN_GOOD first, then RandomSampler(seed) draws.

    Returns [{"params": {name: value}, "distributions": {name: Optuna JSON distribution}}].
    """
    import optuna

    from maskcls_hpo.hpo.trial import load_sweep, mask_classifier_space

    sweep = load_sweep(REPO / "sweeps" / "smoke.py")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for known in sweep.known_good:
        study.enqueue_trial(known)
    out = []
    for _ in range(n):
        trial = study.ask()
        params = mask_classifier_space(  # sweeps/smoke.py's suggest() with its ranges, t_max up to `epochs`
            trial,
            epochs=epochs,
            batch_sizes=[16, 32],
            lr=(1e-3, 3e-2),
            dropout=(0.0, 0.5),
            dropout_step=None,
            t_max_min=2,
            age_loss_weight=(0.5, 2.0),
        )
        study.tell(trial, 0.0)
        frozen = study.trials[-1]
        out.append(
            {
                "params": params,
                "distributions": {
                    k: optuna.distributions.distribution_to_json(d) for k, d in frozen.distributions.items()
                },
            }
        )
    return out


def train_curve(
    params: dict, data_dir: Path, cache_dir: Path, epochs: int, seed: int, predictions: bool = False
) -> dict:
    """Train the smoke sweep's config + ``params`` for ``epochs`` epochs; the per-epoch val macro F1 and seconds.

    With `predictions`, also ``val``: the best epoch's val predictions, one entry per val image in the order of
    ``val_predictions.csv`` ({"person": [person id], "true": [class], "pred": [class]}, classes 0-17)."""
    import tempfile

    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.metrics import read_val_predictions
    from maskcls_hpo.train import train

    sweep = load_sweep(REPO / "sweeps" / "smoke.py")
    overrides = {"data_dir": str(data_dir), "cache_dir": str(cache_dir), "device": "cpu", "epochs": epochs}
    config = sweep.build_config(params, {**overrides, "seed": seed})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train(config, out_dir=out if predictions else None)
        wall = time.perf_counter() - t0
        val = None
        if predictions and result.val_predictions is not None:
            frame = read_val_predictions(result.val_predictions)
            val = {
                "person": frame["person_id"].tolist(),
                "true": frame["true_class"].astype(int).tolist(),
                "pred": frame["pred_class"].astype(int).tolist(),
            }
    return {
        "f1": [round(float(h.val_f1), 4) for h in result.history],
        "seconds": [round(float(h.seconds), 2) for h in result.history],
        "wall_s": round(wall, 1),
        **({"val": val} if predictions else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="dataset (default storage/b2_demo or b2_faces)")
    ap.add_argument("--faces", type=Path, default=None, help="UTKFace folder: real-face demo data")
    ap.add_argument("--persons", type=int, default=60)
    ap.add_argument("--size", default="36x48", help="W x H of the written images (the sweep trains at 48x36 HxW)")
    ap.add_argument("--configs", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--noise-configs", type=int, default=3)
    ap.add_argument("--noise-seeds", type=int, default=2, help="extra seeds per noise config (besides 42)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None, help="default b2_curves_demo / b2_curves_faces")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in the JSON (same draws)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kind = "faces" if args.faces else "demo"
    name = args.name or f"b2_curves_{kind}"
    data = args.data or REPO / "storage" / f"b2_{kind}_{args.persons}_{args.size}"
    w, h = (int(v) for v in args.size.lower().split("x"))
    demo_dataset(data, args.persons, (w, h), faces=args.faces)
    cache = data.parent / (data.name + "_cache")
    configs = draw_configs(args.configs, args.epochs)
    result = {
        "settings": {
            "space": "sweeps/smoke.py's mask_classifier_space ranges, t_max up to epochs",
            "sampler": "RandomSampler(seed=0), KNOWN_GOOD first",
            "data_dir": str(data),
            "data": "UTKFace photos (demo-data --faces)" if args.faces else "procedural demo faces",
            "persons": args.persons,
            "image_size_wh_written": [w, h],
            "epochs": args.epochs,
            "model": "test_efficientnet",
            "train_image_size_hw": [48, 36],
            "device": "cpu",
            "torch_threads": args.threads,
            "seed": 42,
        },
        "configs": [],
        "noise": [],
        "eps": None,
    }
    if args.resume and (RESULTS / f"{name}.json").is_file():
        old = json.loads((RESULTS / f"{name}.json").read_text())
        if old["settings"] != result["settings"]:
            sys.exit(f"{name}.json was recorded with other settings; drop --resume")
        result["configs"] = old["configs"][: args.configs]
        result["noise"] = [n for n in old["noise"] if n["index"] < args.noise_configs]
        result["elapsed_before_resume_s"] = old.get("total_s", old.get("elapsed_s", 0.0))
    started = time.perf_counter()
    for i, c in enumerate(configs):
        if i < len(result["configs"]):
            assert result["configs"][i]["params"] == c["params"], "the recorded draws differ from this run's"
            continue
        r = train_curve(c["params"], data, cache, args.epochs, seed=42)
        result["configs"].append({"index": i, **c, **r})
        print(f"  config {i}: final F1 {r['f1'][-1]}, best {max(r['f1'])}, {r['wall_s']} s", flush=True)
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        save_result(name, result)
    result["noise_std"] = []
    for i in range(min(args.noise_configs, len(configs))):
        runs = [max(result["configs"][i]["f1"])]  # the trial value: the best epoch
        for s in range(args.noise_seeds):
            done = [n for n in result["noise"] if n["index"] == i and n["seed"] == 43 + s]
            if done:
                runs.append(max(done[0]["f1"]))
                continue
            r = train_curve(configs[i]["params"], data, cache, args.epochs, seed=43 + s)
            result["noise"].append({"index": i, "seed": 43 + s, **r})
            runs.append(max(r["f1"]))
            print(f"  noise config {i} seed {43 + s}: final F1 {r['f1'][-1]}", flush=True)
        result["noise_std"].append(round(statistics.stdev(runs), 4))
        result["eps"] = round(statistics.mean(result["noise_std"]), 4)
        save_result(name, result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    path = save_result(name, result)
    print(f"eps (seed std of the best-epoch F1) = {result['eps']}; wrote {path} in {result['total_s']} s")


if __name__ == "__main__":
    main()
