"""B2, fidelity: do lower fidelities than "the first epochs" rank configs better per second?

Issue 23 asks for fidelities that fit few epochs "chosen by measurement on recorded curves, not by assumption".
This records, for the 48 configs of the recorded UTKFace curves (``results/b2_curves_faces.json``: same params,
same data, same seed 42, the same config with its full ``epochs`` so schedulers behave as in the sweep), the
val macro F1 of the first ``--epochs`` epochs at two lower fidelities:

- ``half_persons``: the training persons subsampled to ``--fraction`` (persons drawn with numpy seed 0 from the
  run's own train split; the val persons unchanged, so the values are comparable), each epoch costs about
  that fraction of a full one;
- ``small_images``: images trained at ``--small`` (H x W, e.g. 24x18 against the sweep's 48x36).

and then compares, per fidelity and epoch, how well the value ranks the configs' final value (the best-epoch val
macro F1 of the full 8-epoch curve, the trial's value) against its cost in seconds:

- Spearman rank correlation with the final value (scipy.stats.spearmanr), with a 95% bootstrap interval over
  configs (2000 resamples);
- top-8 kept: of the 8 best configs by final value, how many rank in the top half at that point (the top half is
  what a rung with eta 2 keeps; a top config outside it is a false prune);
- cost: epochs so far x the fidelity's cost of one epoch relative to a full-fidelity epoch. The recorded
  seconds of the curves and of these runs were taken under different machine loads, so they are not compared;
  the cost ratio is measured side by side instead (``--cost-configs`` configs x ``--cost-repeats`` rounds, one
  epoch of each fidelity in turn, ratio of the medians of the epoch seconds); "seconds" = cost x the median
  full-fidelity epoch seconds of that measurement.

The full-fidelity rows come from the recorded curves. Before recording, config 0 is trained for 1 epoch at full
fidelity and its val macro F1 compared with the recorded one: equal means the data and code reproduce the
recording (the comparison is then like for like); the JSON says which.

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b2_fidelity.py --faces ../shared/data/utkface
    .venv/bin/python benchmarks/b2_fidelity.py --analyse-only      # the table again from the JSON
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
from common import REPO, RESULTS, demo_dataset, print_table, save_result  # noqa: E402

TOP = 8
"""The configs whose keeping is counted (top-8 kept)."""


class _Stop(Exception):
    """Raised from ``on_epoch`` after the last recorded epoch (the run's config keeps its full ``epochs``)."""


def _subsample_train(fraction: float):  # type: ignore[no-untyped-def]
    """A ``train._load_split`` that keeps `fraction` of the training persons (numpy seed 0), val unchanged."""
    import maskcls_hpo.train as train_module

    original = train_module._load_split

    def load(config):  # type: ignore[no-untyped-def]
        samples, train_idx, val_idx = original(config)
        persons = np.unique(samples["person_id"].iloc[train_idx].astype(str).to_numpy())
        keep = set(np.random.default_rng(0).choice(persons, int(round(fraction * len(persons))), replace=False))
        mask = samples["person_id"].iloc[train_idx].astype(str).isin(keep).to_numpy()
        return samples, train_idx[mask], val_idx

    return original, load


def train_first(params: dict, data: Path, cache: Path, epochs: int, stop_after: int, extra: dict) -> dict[str, Any]:
    """The smoke sweep's config + `params` (+ `extra`), full `epochs` in the config, stopped after `stop_after`."""
    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.train import train

    sweep = load_sweep(REPO / "sweeps" / "smoke.py")
    overrides = {"data_dir": str(data), "cache_dir": str(cache), "device": "cpu", "epochs": epochs, "seed": 42}
    config = sweep.build_config(params, {**overrides, **extra})
    f1: list[float] = []
    seconds: list[float] = []

    def on_epoch(r) -> None:  # type: ignore[no-untyped-def]
        f1.append(round(float(r.val_f1), 4))
        seconds.append(round(float(r.seconds), 2))
        if len(f1) >= stop_after:
            raise _Stop

    try:
        train(config, on_epoch=on_epoch)
    except _Stop:
        pass
    return {"f1": f1, "seconds": seconds}


def spearman_ci(x: np.ndarray, y: np.ndarray, resamples: int = 2000) -> tuple[float, float, float]:
    """Spearman's rho of `x` with `y` and a 95% percentile bootstrap interval over the pairs."""
    from scipy import stats

    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(float(stats.spearmanr(x[i], y[i]).statistic))
    return rho, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def top_kept(values: np.ndarray, final: np.ndarray, top: int = TOP) -> int:
    """How many of the `top` configs by `final` rank in the top half by `values` (ties broken by index)."""
    best = set(np.argsort(-final, kind="stable")[:top].tolist())
    half = set(np.argsort(-values, kind="stable")[: len(values) // 2].tolist())
    return len(best & half)


def cost_ratios(curves: dict, data: Path, cache: Path, small: list[int], configs: int, repeats: int) -> dict:
    """Epoch seconds of each fidelity measured side by side: `configs` configs x `repeats` rounds, one epoch of
    full, half_persons, small_images in turn; {"epoch_seconds": {fidelity: median}, "ratio": {fidelity: x}}."""
    import maskcls_hpo.train as train_module

    original, subsampled = _subsample_train(0.5)
    seconds: dict[str, list[float]] = {"full": [], "half_persons": [], "small_images": []}
    epochs = curves["settings"]["epochs"]
    try:
        for _ in range(repeats):
            for c in curves["configs"][:configs]:
                for fidelity, extra in (("full", {}), ("half_persons", {}), ("small_images", {"image_size": small})):
                    train_module._load_split = subsampled if fidelity == "half_persons" else original  # type: ignore[assignment]
                    seconds[fidelity] += train_first(c["params"], data, cache, epochs, 1, extra)["seconds"]
    finally:
        train_module._load_split = original  # type: ignore[assignment]
    medians = {k: float(np.median(v)) for k, v in seconds.items()}
    return {
        "epoch_seconds": {k: round(v, 3) for k, v in medians.items()},
        "ratio": {k: round(v / medians["full"], 3) for k, v in medians.items()},
        "runs_per_fidelity": len(seconds["full"]),
    }


def analyse(curves: dict, recorded: dict[str, list[dict]], epochs: int, cost: dict) -> list[dict[str, Any]]:
    """One row per (fidelity, epoch): rho with its interval, top-8 kept, cost (full epochs) and seconds so far."""
    final = np.array([max(c["f1"]) for c in curves["configs"]], dtype=float)
    rows = []
    sources = {"full": [{"f1": c["f1"][:epochs], "seconds": c["seconds"][:epochs]} for c in curves["configs"]]}
    sources.update(recorded)
    for name, runs in sources.items():
        if len(runs) < len(final):
            continue
        for e in range(1, epochs + 1):
            values = np.array([r["f1"][e - 1] for r in runs], dtype=float)
            rho, lo, hi = spearman_ci(values, final)
            rows.append(
                {
                    "fidelity": name,
                    "epoch": e,
                    "spearman": round(rho, 3),
                    "spearman_ci": [round(lo, 3), round(hi, 3)],
                    "top8_kept": top_kept(values, final),
                    "cost_full_epochs": round(e * cost["ratio"][name], 2),
                    "seconds": round(e * cost["epoch_seconds"][name], 2),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=Path, default=RESULTS / "b2_curves_faces.json")
    ap.add_argument("--faces", type=Path, default=None, help="UTKFace folder (the curves' data)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs recorded per lower fidelity")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--small", default="24x18", help="H x W of the small-image fidelity")
    ap.add_argument("--cost-configs", type=int, default=3)
    ap.add_argument("--cost-repeats", type=int, default=3)
    ap.add_argument("--analyse-only", action="store_true", help="re-analyse the recorded JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    curves = json.loads(args.curves.read_text(encoding="utf-8"))
    s = curves["settings"]
    name = "b2_fidelity"
    out: dict[str, Any] = {
        "settings": {
            **{k: s[k] for k in ("persons", "epochs", "model", "train_image_size_hw")},
            "curves": args.curves.name,
            "fraction": args.fraction,
            "small_hw": args.small,
            "recorded_epochs": args.epochs,
            "torch_threads": 1,
        },
        "recorded": {"half_persons": [], "small_images": []},
    }
    path = RESULTS / f"{name}.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("settings") == out["settings"]:
            out = old
        elif args.analyse_only:
            sys.exit(f"{path} was recorded with other settings ({old.get('settings')}); pass the same options")
    w, h = s["image_size_wh_written"]
    data = REPO / "storage" / f"b2_faces_{s['persons']}_{w}x{h}"
    cache = data.parent / (data.name + "_cache")
    small = [int(v) for v in args.small.lower().split("x")]
    if not args.analyse_only:
        demo_dataset(data, s["persons"], (w, h), faces=args.faces)
        if "reproduces" not in out:
            again = train_first(curves["configs"][0]["params"], data, cache, s["epochs"], 1, {})
            out["reproduces"] = {"recorded": curves["configs"][0]["f1"][0], "now": again["f1"][0]}
            print(f"config 0 epoch 1: recorded {curves['configs'][0]['f1'][0]}, now {again['f1'][0]}", flush=True)
        import maskcls_hpo.train as train_module

        original, subsampled = _subsample_train(args.fraction)
        started = time.perf_counter()
        for fidelity, extra in (("half_persons", {}), ("small_images", {"image_size": small})):
            runs = out["recorded"][fidelity]
            train_module._load_split = subsampled if fidelity == "half_persons" else original  # type: ignore[assignment]
            for c in curves["configs"][len(runs) :]:
                runs.append(train_first(c["params"], data, cache, s["epochs"], args.epochs, extra))
                print(f"  {fidelity} config {c['index']}: {runs[-1]['f1']}", flush=True)
                out["elapsed_s"] = round(time.perf_counter() - started, 1)
                save_result(name, out)
        train_module._load_split = original  # type: ignore[assignment]
    if "cost" not in out or not args.analyse_only:
        out["cost"] = cost_ratios(curves, data, cache, small, args.cost_configs, args.cost_repeats)
    out["rows"] = analyse(curves, out["recorded"], args.epochs, out["cost"])
    save_result(name, out)
    print_table(
        f"B2 fidelity ({len(curves['configs'])} configs, final = best of {s['epochs']} full epochs)",
        ["fidelity", "epoch", "spearman [95%]", "top-8 in top half", "cost (full epochs)", "seconds"],
        [
            [
                r["fidelity"],
                r["epoch"],
                f"{r['spearman']} {r['spearman_ci']}",
                r["top8_kept"],
                r["cost_full_epochs"],
                r["seconds"],
            ]
            for r in out["rows"]
        ],
    )


if __name__ == "__main__":
    main()
