"""B2 pruning as time-to-target: Optuna's pruners replayed over recorded learning curves.

``b2_record.py`` trained every config of a set once without pruning and stored its val macro F1 after every
epoch (``results/b2_curves_*.json``). This script replays sweeps over those curves in simulation, many times:
each replay is one sweep of one worker over all recorded configs in a random order (seeded; for a random
sampler this is exact: its draws are independent of the results, so a sweep is a random order of draws). The
real Optuna pruner decides: an in-memory study per replay, ``study.ask()`` per trial, the recorded values
reported epoch by epoch with ``trial.report(f1, epoch)``, ``trial.should_prune()`` after each but the last
(as ``hpo/trial/_objective.py`` asks), and ``study.tell`` with PRUNED (the epochs so far are spent) or COMPLETE
with the trial's value (its best epoch's F1, what the objective returns). TPE is not replayed (its draws
depend on the results, and the recorded set is not a dense lookup table for it).

Measured per pruner, over the replays:

- **R** (time-to-target ratio) = epochs spent until the incumbent (best COMPLETE value so far, what `export`
  would give) is within eps of the no-pruning sweep's final best, divided by the epochs the no-pruning sweep
  of the same order needs to reach that best. eps = the seed noise of one config (``eps`` in the curves file:
  the mean standard deviation over seeds of a config's value). A replay that never gets there counts as
  not reached (R = inf, written as null); the median is over all replays. The headline is **R_eps**: the same numerator
  over the epochs the no-pruning sweep needs to get within eps (a stricter, symmetric ratio).
- **false-prune rate**: the share of trials of top-decile configs (by value) that the pruner pruned.
- **epochs share**: epochs of the whole sweep / the no-pruning sweep's.

Besides Optuna's pruners, ``promote_*`` rows replay asynchronous successive halving with promotion from
checkpoints (``b2_promotion.py``: a paused trial continues its recorded curve when it ranks into the top 1/eta
of its rung). The ``*_promote`` rows replay what the product does (Optuna's SuccessiveHalvingPruner with the
product's promotion); the ``promote_*`` rows replay Li et al.'s ASHA, which the product does not run.

And, for the curves themselves, the Spearman correlation between epoch-k F1 and the value over the configs
(how well an early epoch ranks the configs: what every pruner relies on).

    .venv/bin/python benchmarks/b2_pruning.py                     # the three curve sets, 300 replays each
    .venv/bin/python benchmarks/b2_pruning.py --curves results/b2_curves_demo.json --replays 50
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from b2_promotion import PROMOTION, replay_asha, replay_sha_promotion  # noqa: E402
from common import REPO, RESULTS, print_table, save_result  # noqa: E402

PLOTTED = ("none", "hyperband_rf2", "hyperband_rf3", "sha_rf3", "sha_rf2_min4", "median", "wilcoxon")
"""The pruners drawn in the figure (all are in the JSON and the tables)."""
TARGET_R = 0.35
"""The old headline (R <= 0.35); kept as a column: no pruning meets it on these sets, so it does not measure pruning."""
TARGET_R_EPS = 0.6
"""The headline target: R_eps <= 0.6 (pruning reaches best - eps on at most 60% of the epochs no pruning needs)."""
TARGET_FALSE_PRUNE = 0.10
PREVIOUS_DEFAULT = "sha_rf2_min4"
"""The sweeps' pruner before this measurement: `SuccessiveHalvingPruner(min_resource=4, reduction_factor=2)`."""
HEADLINE_DATA = "UTKFace"
"""The set the shipped default is chosen on (its `data` contains this); on the others false prunes stay low too."""


HALF = "sha_rf2_half"
"""The sweeps' rule before the 16-epoch curves: ``SuccessiveHalvingPruner(min_resource=epochs // 2,
reduction_factor=2)``; a row of its own only where it is not one of the fixed rows (more than 9 epochs). The
sweeps now use ``hpo.trial.first_rung`` (min(4, epochs // 2)): for 8 epochs the same rung, for 16 epochs
``sha_rf2_min4``."""


def promotion_rows(epochs: int) -> dict[str, tuple[int, int, str]]:
    """:data:`PROMOTION`, plus ``sha_rf2_half_promote`` (the shipped pruner + promotion) where ``HALF`` is a row."""
    return PROMOTION | ({f"{HALF}_promote": (epochs // 2, 2, "product", 0)} if epochs // 2 > 4 else {})


def pruners(epochs: int) -> dict[str, tuple[str, Callable[[], object]]]:
    """name -> (description, factory) of the pruners compared, for sweeps of `epochs` epochs per trial."""
    import optuna.pruners as p

    return {
        "none": ("NopPruner()", p.NopPruner),
        "hyperband_rf2": (
            f"HyperbandPruner(min_resource=1, max_resource={epochs}, reduction_factor=2)",
            lambda: p.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=2),
        ),
        "hyperband_rf3": (
            f"HyperbandPruner(min_resource=1, max_resource={epochs}, reduction_factor=3)",
            lambda: p.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3),
        ),
        "sha_rf2": (
            "SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)",
            lambda: p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
        ),
        "sha_rf3": (
            "SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)",
            lambda: p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        ),
        "sha_rf4": (
            "SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)",
            lambda: p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
        ),
        "sha_rf3_min2": (
            "SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)",
            lambda: p.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
        ),
        "sha_rf2_min4": (
            "SuccessiveHalvingPruner(min_resource=4, reduction_factor=2)",
            lambda: p.SuccessiveHalvingPruner(min_resource=4, reduction_factor=2),
        ),
        "sha_rf2_min2": (
            "SuccessiveHalvingPruner(min_resource=2, reduction_factor=2)",
            lambda: p.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2),
        ),
        "sha_rf2_min3": (
            "SuccessiveHalvingPruner(min_resource=3, reduction_factor=2)",
            lambda: p.SuccessiveHalvingPruner(min_resource=3, reduction_factor=2),
        ),
        "sha_rf4_min2": (
            "SuccessiveHalvingPruner(min_resource=2, reduction_factor=4)",
            lambda: p.SuccessiveHalvingPruner(min_resource=2, reduction_factor=4),
        ),
        "median_warmup3": (
            "MedianPruner(n_startup_trials=4, n_warmup_steps=3) = median_pruner(warmup_epochs=2, n_startup_trials=4)",
            lambda: p.MedianPruner(n_startup_trials=4, n_warmup_steps=3),
        ),
        "hyperband_rf3_min2": (
            f"HyperbandPruner(min_resource=2, max_resource={epochs}, reduction_factor=3)",
            lambda: p.HyperbandPruner(min_resource=2, max_resource=epochs, reduction_factor=3),
        ),
        "median_warmup4": (
            "MedianPruner(n_startup_trials=4, n_warmup_steps=4) = median_pruner(warmup_epochs=3, n_startup_trials=4)",
            lambda: p.MedianPruner(n_startup_trials=4, n_warmup_steps=4),
        ),
        "median": (
            "MedianPruner(n_startup_trials=4, n_warmup_steps=2) = median_pruner(warmup_epochs=1, n_startup_trials=4)",
            lambda: p.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
        ),
        "percentile25": (
            "PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=2)",
            lambda: p.PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=2),
        ),
        "wilcoxon": (
            "WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)",
            lambda: p.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2),
        ),
    } | (
        {  # the sweeps' old rule for `epochs` (min_resource = epochs // 2); for 8 epochs it is sha_rf2_min4
            HALF: (
                f"SuccessiveHalvingPruner(min_resource={epochs // 2}, reduction_factor=2)",
                lambda: p.SuccessiveHalvingPruner(min_resource=epochs // 2, reduction_factor=2),
            )
        }
        if epochs // 2 > 4
        else {}
    )


def replay(curves: list[list[float]], order: list[int], make_pruner: Callable[[], object], name: str) -> dict:
    """One sweep over `curves` (per-epoch F1 of each config) in `order`, pruned by a fresh pruner.

    Returns {"trace": [(epochs spent, incumbent value or None)] after each trial, "pruned": [config index],
    "epochs": total epochs spent}.
    """
    import optuna

    study = optuna.create_study(study_name=name, direction="maximize", pruner=make_pruner())
    spent, incumbent, trace, pruned = 0, None, [], []
    for i in order:
        trial = study.ask()
        f1 = curves[i]
        done = True
        for epoch, value in enumerate(f1, 1):
            trial.report(value, epoch)
            spent += 1
            if epoch < len(f1) and trial.should_prune():  # not after the last epoch, as hpo/trial/_objective.py
                done = False
                break
        if done:
            value = max(f1)
            study.tell(trial, value)
            incumbent = value if incumbent is None else max(incumbent, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            pruned.append(i)
        trace.append((spent, incumbent))
    return {"trace": trace, "pruned": pruned, "epochs": spent}


def _num(x: float) -> float | None:
    """Rounded to 3 decimals; None for inf (the target was not reached)."""
    return round(float(x), 3) if math.isfinite(x) else None


def epochs_to(trace: list[tuple[int, float | None]], target: float) -> float:
    """Epochs spent when the incumbent first reached `target` (inf when it never did)."""
    for spent, inc in trace:
        if inc is not None and inc >= target - 1e-12:
            return float(spent)
    return math.inf


def spearman_by_epoch(curves: list[list[float]]) -> list[float]:
    """Spearman rank correlation over configs between the epoch-k F1 and the value (best epoch), k = 1..E."""
    from scipy.stats import spearmanr

    values = [max(c) for c in curves]
    return [round(float(spearmanr([c[k] for c in curves], values).statistic), 3) for k in range(len(curves[0]))]


def evaluate_pruner(key: str, curves: list[list[float]], orders: list[list[int]], eps: float) -> dict:
    """Replay the pruner `key` of :func:`pruners` over `curves` once per order in `orders`; its figures."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n, epochs, replays = len(curves), len(curves[0]), len(orders)
    if key in promotion_rows(epochs):  # promotion from checkpoints (b2_promotion.py)
        min_resource, eta, kind, boot = promotion_rows(epochs)[key]
        if kind == "asha":
            desc = f"ASHA with promotion, min_resource={min_resource}, eta={eta} (replay only)"
        else:
            extra = f", bootstrap_count={boot}" if boot else ""
            desc = f"SuccessiveHalvingPruner(min_resource={min_resource}, reduction_factor={eta}{extra}) + PROMOTION"
        make = None
    else:
        desc, make = pruners(epochs)[key]
    values = [max(c) for c in curves]
    best = max(values)
    top = {i for i, v in enumerate(values) if v >= float(np.quantile(values, 0.9))}
    grid = np.arange(0, n * epochs + 1)
    t0 = time.perf_counter()
    rs, rs_eps, shares, top_trials, top_pruned, reached = [], [], [], 0, 0, 0
    curves_on_grid = np.full((replays, len(grid)), -1.0)  # -1: no COMPLETE trial yet
    for r, order in enumerate(orders):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # WilcoxonPruner's and the experimental warnings
            if make is None:
                if kind == "asha":
                    res = replay_asha(curves, order, min_resource, eta)
                else:
                    res = replay_sha_promotion(curves, order, min_resource, eta, boot)
            else:
                res = replay(curves, order, make, f"{key}-{r}")
        pos_best = next(k for k, i in enumerate(order) if values[i] >= best)
        pos_eps = next(k for k, i in enumerate(order) if values[i] >= best - eps)
        ref, ref_eps = (pos_best + 1) * epochs, (pos_eps + 1) * epochs
        spent = epochs_to(res["trace"], best - eps)
        rs.append(spent / ref)
        rs_eps.append(spent / ref_eps)
        reached += math.isfinite(spent)
        shares.append(res["epochs"] / (n * epochs))
        top_trials += len(top)
        top_pruned += len(top & set(res["pruned"]))
        for spent_k, inc in res["trace"]:
            if inc is not None:
                curves_on_grid[r, spent_k:] = inc  # incumbent from then on (later trials overwrite)
    finite = [x for x in rs if math.isfinite(x)]
    out = {
        "pruner": desc,
        "R_median": _num(np.quantile(rs, 0.5, method="inverted_cdf")),
        "R_p25_p75": [_num(np.quantile(rs, q, method="inverted_cdf")) for q in (0.25, 0.75)],
        "R_mean_reached": round(statistics.mean(finite), 3) if finite else None,
        "R_eps_median": _num(np.quantile(rs_eps, 0.5, method="inverted_cdf")),
        "R_eps_p25_p75": [_num(np.quantile(rs_eps, q, method="inverted_cdf")) for q in (0.25, 0.75)],
        "R_eps_below_1_share": round(float(np.mean([x < 1 for x in rs_eps])), 3),
        "reached_share": round(reached / replays, 3),
        "false_prune_rate_top_decile": round(top_pruned / top_trials, 3),
        "epochs_share": round(float(np.mean(shares)), 3),
        "seconds": round(time.perf_counter() - t0, 1),
        "incumbent_grid": {
            "epochs": grid[:: max(1, epochs // 2)].tolist(),
            **{
                q: [
                    None if v < 0 else round(float(v), 4)
                    for v in np.quantile(curves_on_grid, p, axis=0, method="inverted_cdf")[:: max(1, epochs // 2)]
                ]
                for q, p in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))
            },
        },
    }
    out["target_met"] = (
        None
        if key == "none"
        else out["R_eps_median"] is not None
        and out["R_eps_median"] <= TARGET_R_EPS
        and out["false_prune_rate_top_decile"] <= TARGET_FALSE_PRUNE
    )
    return out


def evaluate(curves_file: Path, replays: int, seed: int = 0, jobs: int = 1) -> dict:
    """Every pruner of :func:`pruners` replayed over one curve set (`jobs` processes, one pruner each)."""
    rec = json.loads(curves_file.read_text())
    curves = [c["f1"] for c in rec["configs"]]
    n, epochs = len(curves), len(curves[0])
    eps = float(rec["eps"]) if rec.get("eps") is not None else 0.01
    values = [max(c) for c in curves]
    best = max(values)
    top = {i for i, v in enumerate(values) if v >= float(np.quantile(values, 0.9))}
    rng = np.random.default_rng(seed)
    orders = [[int(i) for i in rng.permutation(n)] for _ in range(replays)]
    keys = [*pruners(epochs), *promotion_rows(epochs)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {k: pool.submit(evaluate_pruner, k, curves, orders, eps) for k in keys}
        out = {}
        for key in keys:
            out[key] = futures[key].result()
            print(
                f"  {key}: R_eps median {out[key]['R_eps_median']}, false prunes "
                f"{out[key]['false_prune_rate_top_decile']}, epochs {out[key]['epochs_share']}",
                flush=True,
            )
    return {
        "curves_file": str(curves_file.relative_to(REPO)) if curves_file.is_relative_to(REPO) else str(curves_file),
        "data": rec["settings"].get("data"),
        "configs": n,
        "epochs_per_trial": epochs,
        "eps": eps,
        "noise_runs": 1 + len(rec.get("noise", [])) // max(1, len(rec.get("noise_std") or [1])),
        "noise_configs": len(rec.get("noise_std") or []),
        "best_value": best,
        "top_decile_configs": sorted(top),
        "replays": replays,
        "spearman_epoch_k_vs_value": spearman_by_epoch(curves),
        "pruners": out,
    }


def plot(sets: list[dict], path: Path, shipped: str | None = None) -> Path:
    """Incumbent F1 vs epochs spent, median over the replays (10-90% band for no pruning and the shipped pruner),
    one panel per curve set; the y axis shows the region around the target (best - eps, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [k for k in sets[0]["pruners"] if k in PLOTTED or k == shipped]
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    colours = dict(zip([k for k in drawn if k not in ("none", shipped)], palette * 2, strict=False))
    colours.update({"none": "black", shipped: "tab:red"})
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, s in zip(axes[0], sets, strict=True):
        target = s["best_value"] - s["eps"]
        for key in drawn:
            g = s["pruners"][key]["incumbent_grid"]
            x = np.array(g["epochs"], dtype=float)
            med = np.array([np.nan if v is None else v for v in g["median"]])
            style = {"lw": 2.6 if key == "none" else 2.4 if key == shipped else 1.4, "color": colours[key]}
            label = f"{key} (shipped)" if key == shipped else key
            (line,) = ax.plot(x, med, label=label, drawstyle="steps-post", **style)
            if key in ("none", shipped):
                lo = np.array([np.nan if v is None else v for v in g["p10"]])
                hi = np.array([np.nan if v is None else v for v in g["p90"]])
                ax.fill_between(x, lo, hi, alpha=0.12, color=line.get_color(), step="post")
        ax.axhline(target, ls="--", lw=0.9, color="grey", label="target: best - eps")
        ax.set_ylim(max(0.0, s["best_value"] - 4 * s["eps"]), s["best_value"] + 0.25 * s["eps"])
        ax.set_xlim(0, s["configs"] * s["epochs_per_trial"])
        ax.set_xlabel("epochs spent (sum over trials)")
        ax.set_ylabel("incumbent val macro F1 (best COMPLETE trial)")
        ax.set_title(
            f"{s['data']}: {s['configs']} configs x {s['epochs_per_trial']} epochs, {s['replays']} replays",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.005, "lines: median over replays; bands: 10-90% (no pruning, shipped)", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def choose(sets: list[dict]) -> tuple[str, str]:
    """The pruner to ship, by R_eps. The sweep files run a SuccessiveHalvingPruner with promotion from checkpoints
    (``PROMOTION`` defaults to True), so the candidates are the product's promotion rows (``kind`` "product" in
    :data:`PROMOTION`): of those with a false-prune rate <= TARGET_FALSE_PRUNE on every curve set, the one with
    the lowest mean R_eps median over the headline (UTKFace) sets, provided it is below 1; else no pruning.
    Returns (the shipped row's name, a sentence saying so, with the pruner before this round and no pruning beside
    it, and whether the R_eps target is met on every headline set)."""
    heads = [s for s in sets if HEADLINE_DATA in str(s["data"])] or sets[-1:]
    rows = {k for k in promotion_rows(min(s["epochs_per_trial"] for s in sets)) if k.endswith("_promote")}

    def mean_r_eps(k: str) -> float:
        values = [s["pruners"][k]["R_eps_median"] for s in heads]
        return math.inf if None in values else statistics.mean(values)

    safe = [
        k
        for k in sorted(rows)
        if all(k in s["pruners"] for s in sets)
        and all(s["pruners"][k]["false_prune_rate_top_decile"] <= TARGET_FALSE_PRUNE for s in sets)
    ]
    best = min(safe, key=mean_r_eps, default=None)
    if best is None or mean_r_eps(best) >= 1.0:
        return "none", (
            f"No pruner with promotion and at most {TARGET_FALSE_PRUNE:.0%} false prunes reaches the target sooner "
            f"than no pruning on the {HEADLINE_DATA} curves: the shipped default is no pruning (`NopPruner`); "
            f"R_eps <= {TARGET_R_EPS}: not met."
        )

    def figures(key: str) -> str:
        return "; ".join(
            f"{s['epochs_per_trial']} epochs R_eps {s['pruners'][key]['R_eps_median']} (p25-p75 "
            f"{s['pruners'][key]['R_eps_p25_p75'][0]}-{s['pruners'][key]['R_eps_p25_p75'][1]}), false prunes "
            f"{100 * s['pruners'][key]['false_prune_rate_top_decile']:.0f}%, "
            f"{100 * s['pruners'][key]['epochs_share']:.0f}% of the epochs"
            for s in heads
        )

    verdicts = [
        f"{s['epochs_per_trial']} epochs {'met' if s['pruners'][best]['target_met'] else 'not met'}" for s in heads
    ]
    return best, (
        f"Shipped default (sweeps/*.py, `hpo.trial.asha_pruner`): `{best}` = `{heads[0]['pruners'][best]['pruner']}`, "
        f"the lowest mean R_eps on the {HEADLINE_DATA} curves among the promotion rows with at most "
        f"{TARGET_FALSE_PRUNE:.0%} false prunes on every set: {figures(best)}. Before this round `{PREVIOUS_DEFAULT}` "
        f"without promotion: {figures(PREVIOUS_DEFAULT)}; no pruning R_eps 1 by definition. R_eps <= {TARGET_R_EPS} "
        f"with false prunes <= {TARGET_FALSE_PRUNE:.0%}: {', '.join(verdicts)}."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--curves",
        type=Path,
        action="append",
        default=None,
        help="curves JSON (repeatable; default results/b2_curves_demo.json, b2_curves_faces.json and "
        "b2_curves_faces16.json)",
    )
    ap.add_argument("--replays", type=int, default=300)
    ap.add_argument("--name", default="b2_pruning")
    ap.add_argument("--jobs", type=int, default=1, help="processes (one pruner each at a time)")
    args = ap.parse_args()
    default = (RESULTS / "b2_curves_demo.json", RESULTS / "b2_curves_faces.json", RESULTS / "b2_curves_faces16.json")
    files = args.curves or [p for p in default if p.is_file()]
    sets = []
    for f in files:
        print(f"{f.name}:", flush=True)
        sets.append(evaluate(f, args.replays, jobs=args.jobs))
    shipped, choice = choose(sets)
    figure = plot(sets, RESULTS / f"{args.name}.png", shipped)
    result = {
        "settings": {
            "replays": args.replays,
            "sampler": "random order of the recorded configs (exact replay of a random sampler), one worker",
            "target": f"R_eps <= {TARGET_R_EPS} with a false-prune rate <= {TARGET_FALSE_PRUNE:.0%} on the "
            f"{HEADLINE_DATA} curves (shipped default)",
            "previous_default": PREVIOUS_DEFAULT,
            "headline_data": HEADLINE_DATA,
        },
        "figure": str(figure.relative_to(REPO)),
        "choice": choice,
        "shipped": shipped,
        "sets": sets,
    }
    path = save_result(args.name, result)
    for s in sets:
        print_table(
            f"B2 {s['data']}: {s['configs']} configs x {s['epochs_per_trial']} epochs, eps {s['eps']}",
            ["pruner", "R_eps median", "R_eps p25-p75", "R median", "reached", "false prunes top 10%", "epochs share"],
            [
                [k, p["R_eps_median"], f"{p['R_eps_p25_p75'][0]}-{p['R_eps_p25_p75'][1]}", p["R_median"]]
                + [p["reached_share"], p["false_prune_rate_top_decile"], p["epochs_share"]]
                for k, p in s["pruners"].items()
            ],
        )
        print("Spearman(epoch k, value):", s["spearman_epoch_k_vs_value"])
    print(f"wrote {path} and {figure}")


if __name__ == "__main__":
    main()
