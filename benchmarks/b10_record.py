"""B10, part 1: record a real confirm's fold x seed results once, for replaying the race over them.

``b10_confirm_race.py`` replays the race; until now its run results were drawn from a planted noise model. This
trains what ``confirm --top K --folds F --seeds R`` trains, for the ``--top`` configs with the best recorded value
in the UTKFace curves (``results/b2_curves_faces.json``, 48 configs x 8 epochs, the smoke sweep's space) plus the
known-good (config 0, the sweep's KNOWN_GOOD first trial) when it is not among them: each config on each of
``--folds`` person-grouped folds (``folds``/``fold``/``split_seed`` in the config, the same fold assignment for
every config, as confirm does: :func:`maskcls_hpo.data.split_by_fold`) with seed ``42 + r`` for seed index r,
``--epochs`` epochs, no pruning, one torch thread, CPU. A run's value is its best epoch's val macro F1 (confirm's
trial value); its per-epoch F1 and seconds are kept too.

Runs are recorded seed index by seed index, fold by fold (all configs of a round before the next round), and the
JSON (``results/b10_confirm_runs.json``) is rewritten after every run, so a recording cut short keeps whole rounds
and resumes where it stopped; run again with more ``--seeds`` it keeps the runs it has and adds the new seeds.

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b10_record.py --faces ../shared/data/utkface
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from b2_record import train_curve  # noqa: E402
from common import REPO, RESULTS, demo_dataset, save_result  # noqa: E402

NAME = "b10_confirm_runs"


def chosen_configs(curves: dict[str, Any], top: int) -> list[int]:
    """The `top` config indices by recorded value (best epoch F1; ties by index), then config 0 if not among them."""
    values = np.array([max(c["f1"]) for c in curves["configs"]], dtype=float)
    chosen = [int(i) for i in np.argsort(-values, kind="stable")[:top]]
    return chosen if 0 in chosen else [*chosen, 0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=Path, default=RESULTS / "b2_curves_faces.json")
    ap.add_argument("--faces", type=Path, default=None, help="UTKFace folder (the curves' data)")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="default: the curves' epochs")
    ap.add_argument("--split-seed", type=int, default=42)
    ap.add_argument("--name", default=NAME, help="results/<name>.json")
    ap.add_argument(
        "--predictions",
        action="store_true",
        help="keep each run's best-epoch val predictions (person, true, predicted class) for the person-paired race",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    curves = json.loads(args.curves.read_text(encoding="utf-8"))
    s = curves["settings"]
    epochs = args.epochs or int(s["epochs"])
    configs = chosen_configs(curves, args.top)
    settings = {
        "curves": args.curves.name,
        "persons": s["persons"],
        "model": s["model"],
        "train_image_size_hw": s["train_image_size_hw"],
        "epochs": epochs,
        "top": args.top,
        "configs": configs,
        "known_good": 0,
        "folds": args.folds,
        "seeds": args.seeds,
        "split_seed": args.split_seed,
        "seed": "42 + seed index",
        "torch_threads": 1,
        "device": "cpu",
        **({"predictions": "best epoch's val predictions per run (key 'val')"} if args.predictions else {}),
    }
    out: dict[str, Any] = {"settings": settings, "runs": []}
    path = RESULTS / f"{args.name}.json"
    if path.is_file():  # resume; a recording with fewer or more seeds keeps its runs of the seeds asked for
        old = json.loads(path.read_text(encoding="utf-8"))
        if {**old.get("settings", {}), "seeds": args.seeds} == settings:
            out = {**old, "settings": settings, "runs": [r for r in old["runs"] if r["seed_index"] < args.seeds]}
    done = {(r["config"], r["fold"], r["seed_index"]) for r in out["runs"]}
    w, h = s["image_size_wh_written"]
    data = REPO / "storage" / f"b2_faces_{s['persons']}_{w}x{h}"
    demo_dataset(data, s["persons"], (w, h), faces=args.faces)
    cache = data.parent / (data.name + "_cache")
    params = {c["index"]: c["params"] for c in curves["configs"]}
    started = time.perf_counter()
    for r in range(args.seeds):
        for f in range(args.folds):
            for c in configs:
                if (c, f, r) in done:
                    continue
                extra = {"folds": args.folds, "fold": f, "split_seed": args.split_seed}
                run = train_curve(
                    {**params[c], **extra}, data, cache, epochs, seed=42 + r, predictions=args.predictions
                )
                out["runs"].append({"config": c, "fold": f, "seed_index": r, "value": max(run["f1"]), **run})
                print(f"  seed {r} fold {f} config {c}: {max(run['f1'])} ({run['wall_s']} s)", flush=True)
                out["elapsed_s"] = round(out.get("elapsed_s", 0.0) + run["wall_s"], 1)
                save_result(args.name, out)
    print(f"wrote {path}: {len(out['runs'])} runs in {time.perf_counter() - started:.0f} s this time")


if __name__ == "__main__":
    main()
