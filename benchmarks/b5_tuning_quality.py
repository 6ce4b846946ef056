"""B5 tuning quality: does the workflow (sweep + confirm + finalize) earn its compute against the hand setting?

Honest by construction: the known-good is the seed team's hand setting (Adam, StepLR, batch 32, lr 1e-3,
dropout 0.5, cross entropy, single head), not a tuned one; the sweep is the file a user gets
(``sweeps/xception.py``'s structure: the default ranges of ``mask_classifier_space``, its multivariate TPE
sampler sized to the budget and its successive-halving pruner) at the benchmark's model and size, with the
hand setting as its KNOWN_GOOD. Side by side on each data draw (other persons, masks and eval ids, other seeds),
every arm scored on the same held-out eval persons:

(a)    the hand setting, one model (seed 42) trained on all train persons;
(b_eq) the hand setting ensembled over as many seeds as the workflow's epochs buy (its ledger's total epochs /
       the epochs of one run, at least 1), with test-time flips: the equal-compute control;
(r)    random search (``RandomSampler``) with the same trial budget, the same pruner and known-good, through the
       same confirm and finalize;
(d)    the workflow's defaults: the sweep, ``confirm --top K --folds F``, ``finalize --seeds S --tta`` (with the
       known-good default and ensemble selection as shipped).

Figures are pooled over the draws: each arm's eval macro F1 with a 95% person-bootstrap interval
(``metrics.bootstrap_macro_f1``, persons of all draws resampled together), and the paired differences d - a,
d - b_eq, d - r (``metrics.paired_bootstrap_difference`` on the same images). Epochs and image-epochs of d and
r come from the study's compute ledger (``hpo.select.study_ledger``: sweep + confirm + finalize).

Targets: d - b_eq >= +0.02 with the interval's lower end above 0; d - a >= +0.05 with the lower end above 0;
d - r > 0; d at no more than 15x one hand run's epochs.

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b5_tuning_quality.py --draws 3 --persons 300 \\
        --eval-persons 150 --trials 8 --epochs 4
    .venv/bin/python benchmarks/b5_tuning_quality.py --quick --out /tmp/b5   # CI: minutes, procedural faces
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, print_table, save_result  # noqa: E402

FACES = REPO.parent / "shared" / "data" / "utkface"
SHIPPED_SWEEP = REPO / "sweeps" / "xception.py"
HAND = {
    "optimizer": "adam",
    "scheduler": "step",
    "batch_size": 32,
    "lr": 1e-3,
    "dropout": 0.5,
    "loss": "cross_entropy",
    "head": "single",
}
HAND_SEED = 42
TARGETS = {"d_minus_b_eq": 0.02, "d_minus_a": 0.05, "d_minus_r": 0.0, "max_epochs_vs_one_hand_run": 15.0}
RANDOM_SAMPLER = "    return optuna.samplers.RandomSampler(seed=seed)\n"


def write_sweep(
    path: Path, base: dict[str, Any], seed: int, random_search: bool = False, template: Path = SHIPPED_SWEEP
) -> Path:
    """`template` (a shipped sweep file, ``sweeps/xception.py`` by default) with the benchmark's BASE_CONFIG,
    ``SEED = seed``, ``EPOCHS`` where the file has one, and the hand setting as KNOWN_GOOD (the keys its search
    space asks); its sampler replaced by ``RandomSampler(seed)`` for arm r; the ranges, sampler and pruner as
    shipped."""
    from maskcls_hpo.hpo.trial import load_sweep

    text = template.read_text(encoding="utf-8")
    space = load_sweep(template).search_space()
    known = {k: v for k, v in HAND.items() if k in space}  # xception: the optimizer is in BASE_CONFIG, as shipped
    replaced = [
        (r"SEED = \d+", f"SEED = {seed}", 1),
        (r"BASE_CONFIG = \{.*?\n\}\n", f"BASE_CONFIG = {base!r}\n", 1),
        (r"KNOWN_GOOD = \[.*?\n\]\n", f"KNOWN_GOOD = [{known!r}]\n", 1),
        (r"t_max_min=\d+", f"t_max_min={min(4, int(base['epochs']))}", None),  # a literal bound (xception.py)
        (r"^EPOCHS = \d+", f"EPOCHS = {int(base['epochs'])}", None),  # efficientnet_lite.py's suggest() reads it
    ]
    for pattern, new, count in replaced:
        text, n = re.subn(pattern, lambda _m, new=new: new, text, flags=re.S | re.M)
        assert n == 1 or (count is None and n == 0), f"{template} no longer matches {pattern!r}"
    if random_search:  # the return line of make_sampler (after its comment lines)
        sampler = r"(def make_sampler\([^\n]*\n(?:    #[^\n]*\n)*)    return [^\n]*\n"
        text, n = re.subn(sampler, lambda m: m.group(1) + RANDOM_SAMPLER, text)
        assert n == 1, f"{template}: make_sampler no longer matches"
    path.write_text(text, encoding="utf-8")
    return path


def eval_truth(data_dir: Path, seed: int) -> pd.DataFrame:
    """ImageID -> true class and person id (the demo's ImageID is sha1("seed/person/mask file"))."""
    from maskcls_hpo.labels import MASK_FILES

    answers = pd.read_csv(data_dir / "eval" / "answers.csv", dtype={"ImageID": str})
    sources = pd.read_csv(data_dir / "sources.csv", dtype={"id": str})
    person = {
        hashlib.sha1(f"{seed}/{pid}/{name}".encode()).hexdigest() + ".jpg": pid
        for pid in sources.loc[sources["part"] == "eval", "id"]
        for name in MASK_FILES
    }
    answers["person"] = answers["ImageID"].map(person)
    assert answers["person"].notna().all(), "eval ImageIDs do not match sources.csv"
    return answers.set_index("ImageID")


def workflow(args: argparse.Namespace, work: Path, sweep_path: Path, name: str) -> dict[str, Any]:
    """Sweep + confirm + finalize of `sweep_path` in its own SQLite file; the prediction, ledger and messages."""
    import optuna

    from maskcls_hpo.hpo.launch import run_sweep
    from maskcls_hpo.hpo.select import finalize_study, run_confirm, study_ledger
    from maskcls_hpo.hpo.store import open_storage, resolve_storage_url
    from maskcls_hpo.hpo.workers import RunOptions

    url = resolve_storage_url(work / f"{name}.db")
    t0 = time.perf_counter()
    swept = run_sweep(sweep_path, args.trials, storage=url, workers=args.workers, study_name=name)
    assert swept.reached, swept.message
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    top = min(args.top, complete)
    confirmed = run_confirm(name, top, args.folds, 1, storage=url, workers=args.workers)
    assert confirmed.reached, confirmed.message
    said: list[str] = []
    final = finalize_study(
        study,
        work / f"{name}.csv",
        storage_url=url,
        seeds=args.seeds,
        tta=True,
        folder=work / f"{name}-finalize",
        options=RunOptions(device=args.device),
        on_message=said.append,
    )
    ledger = study_ledger(study)
    return {
        "prediction": final.prediction,
        "ledger": ledger,
        "seconds": time.perf_counter() - t0,
        "record": {
            "trials": {"finished": args.trials, "complete": complete, "confirmed_top": top},
            "ranking": final.ranking,
            "models": [{"trial": m.trial, "seed": m.seed} for m in final.models],
            "messages": [line for line in said if "winner" in line or "ensemble selection" in line],
            "winner": confirmed.summary.winner.source_trial if confirmed.summary.winner else None,
            "ledger": ledger,
        },
    }


def base_config(args: argparse.Namespace, hw: list[int], data: Path, cache: Path) -> dict[str, Any]:
    """The benchmark's BASE_CONFIG: for the shipped default (``sweeps/xception.py``) a randomly initialised
    ``test_efficientnet``; for another `--sweep` its own BASE_CONFIG (model, pretrained weights, schedule) at the
    benchmark's image size, epochs, data and device."""
    bench = {"image_size": hw, "epochs": args.epochs, "data_dir": str(data), "cache_dir": str(cache)}
    bench |= {"device": args.device, "val_ratio": 0.2}
    if args.sweep.resolve() == SHIPPED_SWEEP.resolve():
        return {"model": "test_efficientnet", "pretrained": False, "optimizer": "adam", **bench}
    from maskcls_hpo.hpo.trial import load_sweep

    own = load_sweep(args.sweep).base_config.to_dict()
    keep = ("model", "pretrained", "optimizer", "step_size", "gamma", "corrections", "mean", "std")
    return {k: own[k] for k in keep if own.get(k) is not None} | bench


def run_draw(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """One data draw: the dataset drawn with `seed`, the four arms; per arm the eval labels and its compute."""
    from maskcls_hpo.config import config_from_mapping
    from maskcls_hpo.demo import write_demo_dataset
    from maskcls_hpo.predict import predict
    from maskcls_hpo.train import train

    started = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, cache = work / "data", work / "cache"
    w, h = (int(v) for v in args.size.split("x"))
    faces = FACES if FACES.is_dir() and not args.procedural else None
    write_demo_dataset(
        data, persons=args.persons, eval_persons=args.eval_persons, size=(w, h), faces=faces, seed=seed, progress=False
    )
    truth = eval_truth(data, seed)
    E = args.epochs
    base = base_config(args, [h, w], data, cache)
    d = workflow(args, work, write_sweep(work / "b5.py", base, seed, template=args.sweep), "b5")
    r = workflow(args, work, write_sweep(work / "b5r.py", base, seed, random_search=True, template=args.sweep), "b5r")
    d_epochs = d["ledger"]["total"]["epochs"]
    n_seeds = max(1, min(args.max_b_eq_models, round(d_epochs / E)))
    hand_models, hand_images, hand_seconds = [], 0, 0.0
    for i in range(n_seeds):
        config = config_from_mapping({**base, **HAND, "full_data": True, "seed": HAND_SEED + i}, source="B5 hand")
        t0 = time.perf_counter()
        result = train(config, out_dir=work / "hand" / f"seed_{HAND_SEED + i}")
        hand_seconds += time.perf_counter() - t0
        hand_images = int(result.train_images)
        hand_models.append(work / "hand" / f"seed_{HAND_SEED + i}" / "model.pt")
    pred_a = predict(hand_models[:1], data, device=args.device, cache_dir=cache)
    pred_b = predict(hand_models, data, tta=True, device=args.device, cache_dir=cache)
    arms = {"a": pred_a, "b_eq": pred_b, "r": r["prediction"], "d": d["prediction"]}
    ids = list(pred_a.image_ids)
    for name, p in arms.items():
        assert list(p.image_ids) == ids, f"arm {name} predicted other images"
    t = truth.loc[ids]
    compute = {
        "a": {"epochs": E, "image_epochs": E * hand_images},
        "b_eq": {"epochs": n_seeds * E, "image_epochs": n_seeds * E * hand_images, "models": n_seeds},
        "r": {k: r["ledger"]["total"][k] for k in ("epochs", "image_epochs")},
        "d": {k: d["ledger"]["total"][k] for k in ("epochs", "image_epochs")},
    }
    return {
        "seed": seed,
        "y": t["ans"].to_numpy(),
        "persons": np.array([f"{seed}:{p}" for p in t["person"]]),
        "labels": {k: np.asarray(p.labels) for k, p in arms.items()},
        "record": {
            "seed": seed,
            "faces": faces is not None,
            "compute": compute,
            "b_eq_models": n_seeds,
            "d": d["record"],
            "r": r["record"],
            "seconds": {"d": d["seconds"], "r": r["seconds"], "hand": hand_seconds},
            "wall_seconds": time.perf_counter() - started,
        },
    }


def _interval(ci) -> dict[str, Any]:
    return {"estimate": ci.estimate, "ci95": [ci.low, ci.high]}


def summarize(draws: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Pooled over the draws: each arm's eval macro F1 with its person-bootstrap interval, the paired gains of d,
    the mean compute per draw, and which targets are met."""
    from maskcls_hpo.metrics import bootstrap_macro_f1, paired_bootstrap_difference

    y = np.concatenate([dr["y"] for dr in draws])
    persons = np.concatenate([dr["persons"] for dr in draws])
    labels = {k: np.concatenate([dr["labels"][k] for dr in draws]) for k in ("a", "b_eq", "r", "d")}
    arms = {}
    for k, pred in labels.items():
        comp = [dr["record"]["compute"][k] for dr in draws]
        ep = float(np.mean([c["epochs"] for c in comp]))
        arms[k] = {
            "eval_f1": _interval(bootstrap_macro_f1(y, pred, persons)),
            "epochs": ep,
            "image_epochs": float(np.mean([c["image_epochs"] for c in comp])),
            "epochs_vs_one_hand_run": ep / epochs,
        }
    gain = {
        f"d_minus_{k}": _interval(paired_bootstrap_difference(y, labels["d"], labels[k], persons))
        for k in ("a", "b_eq", "r")
    }
    met = {
        "d_minus_b_eq": gain["d_minus_b_eq"]["estimate"] >= TARGETS["d_minus_b_eq"]
        and gain["d_minus_b_eq"]["ci95"][0] > 0,
        "d_minus_a": gain["d_minus_a"]["estimate"] >= TARGETS["d_minus_a"] and gain["d_minus_a"]["ci95"][0] > 0,
        "d_minus_r": gain["d_minus_r"]["estimate"] > TARGETS["d_minus_r"],
        "epochs": arms["d"]["epochs_vs_one_hand_run"] <= TARGETS["max_epochs_vs_one_hand_run"],
    }
    return {"draws": len(draws), "eval_images": int(len(y)), "arms": arms, "gain": gain, "met": met}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "storage" / "b5")
    p.add_argument("--out", type=Path, default=None, help="folder of the result JSON (default benchmarks/results)")
    p.add_argument("--draws", type=int, default=3, help="data draws (seeds 0..D-1: other persons, masks, seeds)")
    p.add_argument("--persons", type=int, default=300)
    p.add_argument("--eval-persons", type=int, default=150)
    p.add_argument("--size", default="36x48", help="demo image size WxH (the model input is HxW 48x36)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3, help="finalize --seeds (with --tta)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-b-eq-models", type=int, default=40, help="cap on the equal-compute control's models")
    p.add_argument("--procedural", action="store_true", help="procedural faces instead of UTKFace")
    p.add_argument("--quick", action="store_true", help="CI size: 1 draw, 40/12 persons, 3 trials, 2 epochs")
    p.add_argument("--keep", action="store_true", help="keep the work folders")
    p.add_argument(
        "--sweep",
        type=Path,
        default=SHIPPED_SWEEP,
        help="the shipped sweep file benchmarked (e.g. sweeps/efficientnet_lite.py: pretrained EfficientNet-Lite0); "
        "a result other than the default's is written as b5_tuning_quality_<stem>.json",
    )
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    args = p.parse_args(argv)
    if args.quick:
        args.draws, args.persons, args.eval_persons, args.trials, args.epochs = 1, 40, 12, 3, 2
        args.top, args.folds, args.seeds, args.max_b_eq_models = 2, 2, 1, 4
        args.size = "24x32"
    return args


def base_model(args: argparse.Namespace) -> str:
    """The backbone as recorded in the JSON: name and whether it starts from pretrained weights."""
    config = base_config(args, [1, 1], Path("data"), Path("cache"))
    return f"{config['model']} ({'ImageNet weights' if config.get('pretrained') else 'random init'})"


def result_name(args: argparse.Namespace) -> str:
    """``b5_tuning_quality`` for the shipped default sweep, else ``b5_tuning_quality_<sweep stem>``."""
    default = args.sweep.resolve() == SHIPPED_SWEEP.resolve()
    return "b5_tuning_quality" if default else f"b5_tuning_quality_{args.sweep.stem}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    draws: list[dict[str, Any]] = []
    for seed in range(args.draws):
        draws.append(run_draw(args, seed, args.work / f"draw_{seed}"))
        result = {
            "settings": {
                "known_good": HAND,
                "draws": [dr["seed"] for dr in draws],
                "persons": args.persons,
                "eval_persons": args.eval_persons,
                "image_size_hw": [int(v) for v in reversed(args.size.split("x"))],
                "model": f"{base_model(args)}",
                "device": args.device,
                "epochs": args.epochs,
                "sweep": f"{args.sweep.resolve().relative_to(REPO)} as shipped: its ranges (mask_classifier_space), "
                "sampler (TPE multivariate, startup_trials(n)) and pruner; KNOWN_GOOD = hand",
                "trials": args.trials,
                "confirm": {"top": args.top, "folds": args.folds, "seeds": 1},
                "finalize": {"seeds": args.seeds, "tta": True, "ensemble_selection": True},
                "workers": args.workers,
                "quick": args.quick,
                "bootstrap": "1000 resamples over eval persons of all draws pooled, seed 0",
            },
            "targets": TARGETS,
            "summary": summarize(draws, args.epochs),
            "draws": [dr["record"] for dr in draws],
            "wall_seconds": time.perf_counter() - started,
        }
        path = save_result(result_name(args), result, args.out)  # rewritten after every draw
        if not args.keep:
            shutil.rmtree(args.work / f"draw_{seed}", ignore_errors=True)
    s = result["summary"]
    f = lambda x: f"{x['estimate']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"  # noqa: E731
    print_table(
        f"B5 over {s['draws']} draw(s), {s['eval_images']} eval images (eval macro F1, 95% person bootstrap)",
        ["arm", "eval macro F1", "epochs / draw", "image-epochs / draw", "x one hand run"],
        [
            [
                k,
                f(a["eval_f1"]),
                f"{a['epochs']:.0f}",
                f"{a['image_epochs']:,.0f}",
                f"{a['epochs_vs_one_hand_run']:.1f}x",
            ]
            for k, a in s["arms"].items()
        ],
    )
    print("gains: " + "; ".join(f"{k} {f(v)}" for k, v in s["gain"].items()))
    print(f"met: {json.dumps(s['met'])}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
