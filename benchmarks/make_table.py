"""Generate the benchmark tables of docs/performance.md from ``benchmarks/results/*.json``.

The tables sit between ``<!-- performance:begin -->`` and ``<!-- performance:end -->`` in docs/performance.md
(added at the end of the page the first time); the page's other sections (how each figure is measured, how to
run the benchmarks) are written by hand. The README's one-table summary of the targets sits between
``<!-- targets:begin -->`` and ``<!-- targets:end -->``. Every figure between the markers comes from the JSON
files; rerun after a benchmark:

    .venv/bin/python benchmarks/make_table.py            # rewrite the tables and the README's summary
    .venv/bin/python benchmarks/make_table.py --print    # print them only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE.parent / "docs" / "performance.md"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- performance:begin -->", "<!-- performance:end -->"
TARGETS_BEGIN, TARGETS_END = "<!-- targets:begin -->", "<!-- targets:end -->"


# B3 timeline rows: (label, role, event names it may have in either version of the code; first found)
B3_EVENTS = [
    ("launcher: sweep file loaded", "launcher", ("sweep load end",)),
    ("launcher: worker processes started", "launcher", ("workers spawn (standby) end", "workers start end")),
    ("launcher: first progress line", "launcher", ("first progress line",)),
    ("launcher: data checked, cache found", "launcher", ("data check end",)),
    ("launcher: study created", "launcher", ("study prepare end",)),
    ("launcher: workers told to begin", "launcher", ("workers start end",)),
    ("worker: torch and timm imported", "worker", ("timm imported",)),
    ("worker: pre-flight done (`check_join`)", "worker", ("check_join end",)),
    ("first trial starts (stored)", "study", ("trial start (stored)",)),
    ("trial ends (stored)", "study", ("trial end (stored)",)),
    ("launcher: last worker's exit seen", "launcher", ("workers wait end",)),
    ("launcher: process ended", "launcher", ("process ended",)),
]


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(num(c) for c in row) + " |" for row in rows]
    return out


def machine(r: dict) -> str:
    m = r.get("machine", {})
    cuda = m.get("cuda")
    v = m.get("versions", {})
    dev = f"{cuda['device']} (CUDA {cuda['cuda_version']})" if cuda else "no GPU"
    load = m.get("load_average")
    return (
        f"{m.get('cpu_count')} CPUs{f', load {load[0]}' if load else ''}, {dev}; torch {v.get('torch')}, "
        f"timm {v.get('timm')}, optuna {v.get('optuna')}; {m.get('when', '')[:10]}"
    )


def met(flag: bool | None) -> str:
    return "-" if flag is None else ("**met**" if flag else "**not met**")


def b1_rows(r: dict, where: str) -> list[list[Any]]:
    rows = []
    for s in r["sizes"]:
        rows.append(
            [
                f"{where}, {s['size_hw'][0]}x{s['size_hw'][1]}, {s['mode']}",
                s["baseline_images_per_second"],
                s["project_images_per_second"],
                f"{s['speedup_epoch2_on']:.1f}x",
                s["project_epoch1_with_build_images_per_second"],
                s["cache_build_seconds"],
                met(s["speedup_epoch2_on"] >= 10),
            ]
        )
    return rows


def b2_headline(b2: dict) -> list[str]:
    """The headline table: no pruning, the previous default and the shipped default on each headline set."""
    sets = b2["sets"]
    heads = [st for st in sets if b2["settings"].get("headline_data", "UTKFace") in str(st["data"])] or sets[-1:]
    keys = [("none", "no pruning")]
    previous, shipped = b2["settings"].get("previous_default"), b2.get("shipped")
    if previous:
        keys.append((previous, "previous default"))
    if shipped and shipped != "none":
        keys.append((shipped, "shipped default" + (" (unchanged)" if shipped == previous else "")))
    rows = []
    for head in heads:
        for key, role in keys:
            p = head["pruners"][key]
            lo, hi = p.get("R_eps_p25_p75", [None, None])
            rows.append(
                [f"{head['epochs_per_trial']} epochs", role, f"`{p['pruner']}`", num(p["R_eps_median"])]
                + [f"{num(lo)}-{num(hi)}", f"{100 * p['false_prune_rate_top_decile']:.0f}%"]
                + [f"{100 * p['epochs_share']:.0f}%", met(p.get("target_met")) if key == shipped else ""]
            )
    return (
        [
            f"**Headline ({heads[0]['data']}, {heads[0]['configs']} configs, "
            + " and ".join(f"{h['epochs_per_trial']}" for h in heads)
            + f" epochs, {heads[0]['replays']} replay orders)**:",
            "",
        ]
        + table(
            ["curves", "", "pruner", "R_eps (median)", "R_eps p25-p75", "false prunes", "epochs / none", "target"],
            rows,
        )
        + [""]
    )


def b2_findings(b2: dict) -> list[str]:
    """The B2 paragraph that reads the figures: what R says with this noise, what the shipped pruner gains."""
    sets, shipped = b2["sets"], b2.get("shipped")
    parts = []
    for st in sets:
        curves = HERE.parent / st["curves_file"]
        near = None
        if curves.is_file():
            values = [max(c["f1"]) for c in json.loads(curves.read_text())["configs"]]
            near = sum(v >= max(values) - st["eps"] for v in values)
        none = st["pruners"]["none"]
        parts.append(
            f"{st['data']}: {near if near is not None else '?'} of {st['configs']} configs within eps of the best, "
            f"no pruning R {num(none['R_median'])}"
        )
    text = (
        "Several configs lie within eps (the seed noise) of the best one, so a sweep gets within eps of the best "
        "long before it meets the best itself, and even no pruning has a small R ("
        + "; ".join(parts)
        + "). R therefore says little about pruning on these sets; R_eps (the same target on both sides) does."
    )
    if shipped:
        gains = "; ".join(
            f"{st['data']}: R_eps {num(st['pruners'][shipped]['R_eps_median'])}, "
            f"{100 * st['pruners'][shipped]['epochs_share']:.0f}% of the epochs"
            for st in sets
        )
        sooner = all((st["pruners"][shipped]["R_eps_median"] or 9) < 1 for st in sets)
        fp = max(st["pruners"][shipped]["false_prune_rate_top_decile"] for st in sets)
        text += (
            f" The shipped `{shipped}` reaches the target "
            + ("on fewer epochs than no pruning" if sooner else "not sooner than no pruning on every set")
            + f" in the median replay ({gains}), pruning at most {100 * fp:.0f}% of the top-decile configs' "
            "trials."
        )
    sp = "; ".join(
        f"{st['data']}: {num(st['spearman_epoch_k_vs_value'][0], 2)} at epoch 1, "
        f"{num(st['spearman_epoch_k_vs_value'][len(st['spearman_epoch_k_vs_value']) // 2 - 1], 2)} at epoch "
        f"{len(st['spearman_epoch_k_vs_value']) // 2}"
        for st in sets
    )
    text += (
        f" Early epochs rank the configs poorly (Spearman {sp}), which is where the pruners that decide from epoch "
        "1 or 2 lose the top configs (their false prunes in the tables)."
    )
    return [text, ""]


def section() -> str:
    lines = [
        "Generated by `benchmarks/make_table.py` from `benchmarks/results/*.json`; how each figure is measured: "
        "[below](#how-each-figure-is-measured). CPU figures come from a 2-core machine shared with other jobs "
        "(medians and ratios of one run, not absolute speeds); GPU figures from one run on a lent NVIDIA H200 "
        "machine.",
        "",
    ]
    b1 = load("b1_input_pipeline")
    gpu = load("gpu")
    b1_gpu = (gpu or {}).get("phases", {}).get("b1_cuda")
    if b1 or b1_gpu:
        lines += [
            "## B1 input pipeline: images/s delivered to the model",
            "",
            "Project: uint8 cache + `BatchLoader` + `BatchAugment` on the batch's device. Baseline: PIL + "
            "torchvision transforms per image in a `DataLoader` with 2 workers, every epoch. *augment* = the "
            "training path, *plain* = normalise only. Target: >= 10x from the second epoch on.",
            "",
        ]
        rows = []
        if b1:
            rows += b1_rows(b1, f"CPU ({b1['sizes'][0]['images']} images)")
        if b1_gpu and b1_gpu.get("ok"):
            rows += b1_rows(b1_gpu, f"H200 + 16 CPUs ({b1_gpu['sizes'][0]['images']} images)")
        lines += table(
            [
                "machine, size (HxW), path",
                "baseline img/s",
                "project img/s",
                "speed-up",
                "project epoch 1 incl. cache build, img/s",
                "cache build s",
                "target",
            ],
            rows,
        )
        lines += [""]
        if b1:
            lines += [
                f"CPU: {machine(b1)}. The project's path ran on 1 thread, the baseline on 2 worker processes.",
                "On a CPU the project's augmentation is float32 tensor arithmetic on the training process's own "
                "core, against PIL's uint8 operations in 2 worker processes, so the training path gains little "
                "there; the cache's own gain (no decoding, no resizing) is the *plain* rows. On a GPU the "
                "augmentation runs on the GPU and the target is met with a wide margin (H200 rows).",
                "",
            ]
    b2 = load("b2_pruning")
    if b2 and "sets" in b2:
        lines += [
            "## B2 pruning: time to target on recorded learning curves",
            "",
            "Every config of a set was trained once for all its epochs (`benchmarks/b2_record.py`: the smoke "
            "sweep's space, test_efficientnet at 48x36, CPU, one thread; drawn by a random sampler); "
            "`benchmarks/b2_pruning.py` then replays one-worker sweeps over all configs in "
            f"{b2['settings']['replays']} random orders with Optuna's real pruners (in-memory study, the recorded "
            "F1 reported epoch by epoch, `should_prune` after each). **R** = epochs until the incumbent (best "
            "COMPLETE value) is within eps of the no-pruning sweep's final best / epochs the no-pruning sweep "
            "of the same order needs to reach that best (median over replays; a replay that never gets "
            "there counts as not reached); eps = seed standard deviation of one config's value. "
            "**False prunes** = share of the top-decile configs' trials that were pruned. "
            "**R_eps** (the headline) = the same numerator over the epochs the no-pruning sweep needs to get "
            "within eps (the symmetric ratio: pruning against no pruning, the same target; 1 = pruning did not "
            "reach the target sooner; no pruning is 1 by definition). R compares getting within eps against "
            "reaching the exact best, so no pruning already scores well on it; it is kept as a column only. "
            f"Target: {b2['settings']['target']}.",
            "",
        ]
        lines += b2_headline(b2)
        for st in b2["sets"]:
            lines += [
                f"**{st['data']}**: {st['configs']} configs x {st['epochs_per_trial']} epochs, best value "
                f"{num(st['best_value'])}, eps {num(st['eps'])}; Spearman correlation of epoch-k F1 with the "
                f"value, k = 1..{st['epochs_per_trial']}: "
                + ", ".join(num(v, 2) for v in st["spearman_epoch_k_vs_value"])
                + ".",
                "",
            ]
            rows = []
            for key, p in st["pruners"].items():
                lo, hi = p.get("R_eps_p25_p75", [None, None])
                rows.append(
                    [
                        key,
                        f"`{p['pruner']}`",
                        "not reached" if p["R_eps_median"] is None else num(p["R_eps_median"]),
                        f"{num(lo)}-{'not reached' if hi is None else num(hi)}",
                        "not reached" if p["R_median"] is None else num(p["R_median"]),
                        f"{100 * p['reached_share']:.0f}%",
                        f"{100 * p['false_prune_rate_top_decile']:.0f}%",
                        f"{100 * p['epochs_share']:.0f}%",
                        met(p.get("target_met")),
                    ]
                )
            lines += table(
                ["name", "pruner", "R_eps (median)", "R_eps p25-p75", "R", "reached", "false prunes", "epochs / none"]
                + ["target"],
                rows,
            )
            lines += [""]
        if b2.get("figure"):
            lines += [f"![incumbent F1 vs epochs spent per pruner](../{b2['figure']})", ""]
        if b2.get("choice"):
            lines += [b2["choice"], ""]
        lines += b2_findings(b2)
        lines += [
            f"Machine (replay): {machine(b2)}.",
            "",
        ]
    b6 = load("b6_study_size")
    if b6:
        lines += [
            "## B6 study size",
            "",
            "Studies of N trials x 30 epochs made without training (bulk SQL through Optuna's table models; 65% "
            "COMPLETE, 30% PRUNED, 5% FAIL, the attrs a real trial stores), SQLite. Each command as a fresh "
            "process (seconds, wall time, including the interpreter's start); *before* = the code before this "
            "change, interleaved on the same file. Targets: `status` and `export` under 2x `optuna trials` at "
            "10k trials; the report under 5 MB at 10k trials, its time and memory growing no faster than "
            "linearly.",
            "",
        ]
        rows = []
        for n, e in b6["sizes"].items():
            sm = e["summary"]
            base = sm["optuna_trials"]["median_s"]
            for label in ("before", "after"):
                if f"{label}:status" not in sm:
                    continue
                d = (e.get("dashboard") or {}).get(label) or {}
                r = sm[f"{label}:report"]

                def t(key: str, sm: dict = sm) -> Any:
                    x = sm.get(key) or {}
                    return x.get("median_s") if x.get("ok", True) else "failed"

                rows.append(
                    [
                        f"{int(n):,} {label}",
                        t(f"{label}:status"),
                        t(f"{label}:export"),
                        base,
                        t("optuna_best_trial"),
                        t("trials_dataframe"),
                        t(f"{label}:report"),
                        r["peak_rss_mib"] if r.get("ok", True) else "-",
                        r.get("file_mb"),
                        d.get("study_s"),
                    ]
                )
        lines += table(
            [
                "trials, code",
                "status s",
                "export s",
                "optuna trials s",
                "optuna best-trial s",
                "trials_dataframe s",
                "report s",
                "report peak MiB",
                "report file MiB",
                "dashboard first study API s",
            ],
            rows,
        )
        ten = b6["sizes"].get("10000", {}).get("summary", {})
        if ten:
            base = ten["optuna_trials"]["median_s"]
            st, ex, rep = ten["after:status"], ten["after:export"], ten["after:report"]
            ok_st = bool(st.get("ok", True) and st["median_s"] and base and st["median_s"] < 2 * base)
            ok_ex = bool(ex.get("ok", True) and ex["median_s"] and base and ex["median_s"] < 2 * base)
            size_b = rep.get("file_bytes") or (rep["file_mb"] * 2**20 if rep.get("file_mb") is not None else None)
            ok_rep = bool(rep.get("ok", True) and size_b is not None and size_b < 5e6)
            ok_rep_mib = bool(rep.get("ok", True) and size_b is not None and size_b < 5 * 2**20)
            js = b6["settings"].get("plotlyjs_bytes")

            def ratio(x: dict) -> str:
                return f"{x['median_s'] / base:.2f}x" if x.get("ok", True) and x["median_s"] and base else "-"

            lines += [
                "",
                f"- `status` at 10k trials: {num(st['median_s'])} s vs `optuna trials` {num(base)} s ({ratio(st)}): "
                f"{met(ok_st)}.",
                f"- `export` at 10k trials: {num(ex['median_s'])} s vs `optuna trials` {num(base)} s ({ratio(ex)}): "
                f"{met(ok_ex)}.",
                f"- report at 10k trials: {size_b:,.0f} bytes = {num(size_b / 1e6)} MB = {num(size_b / 2**20)} MiB"
                + (
                    f" (plotly.js inlined once: {num(js / 1e6)} MB of it; the study's own content "
                    f"{num((size_b - js) / 1e6)} MB)"
                    if js
                    else ""
                )
                + f": under 5 MB (5,000,000 bytes): {met(ok_rep)}; under 5 MiB (5,242,880 bytes, the benchmark's "
                f"limit): {met(ok_rep_mib)}."
                if size_b
                else "- report at 10k trials: no file (failed).",
            ]
            sizes = sorted(b6["sizes"], key=int)
            reps = {n: b6["sizes"][n]["summary"].get("after:report") or {} for n in sizes}
            a = reps[sizes[0]] if sizes else {}
            if len(sizes) >= 2 and all(r.get("ok", True) and r.get("median_s") for r in reps.values()):
                growth, linear = [], True
                for n in sizes[1:]:
                    z, k = reps[n], int(n) / int(sizes[0])
                    gt, gm = z["median_s"] / a["median_s"], z["peak_rss_mib"] / a["peak_rss_mib"]
                    linear = linear and gt <= k and gm <= k
                    growth.append(f"{int(n):,} ({k:.0f}x the trials): time x{num(gt)}, peak memory x{num(gm)}")
                lines += [
                    f"- report growth from {int(sizes[0]):,} trials to " + "; ".join(growth) + ": "
                    f"{met(linear)} (no faster than linear).",
                ]
        lines += [f"- {note}" for note in b6.get("notes", [])]
        lines += ["", f"Machine: {machine(b6)}.", ""]
    b3 = load("b3_service_overhead")
    if b3:
        s = b3["summary"]
        limit = 3.0 + 0.03 * s["direct_process_s"]
        lines += [
            "## B3 service overhead",
            "",
            f"One trial of `{b3['settings']['sweep']}` ({b3['settings']['config']['model']}, "
            f"{b3['settings']['config']['epochs']} epochs) under `maskcls-hpo launch` (1 worker, 1 trial, "
            "SQLite) vs the same `train.train(config)` in a plain process; medians of "
            f"{b3['settings']['repeats']} alternating repeats (differences: median of the paired differences). "
            "Target: the whole process at most 3 s + 3% longer than the direct one.",
            "",
        ]
        rows = [
            [
                "whole process",
                s["direct_process_s"],
                s["launch_process_s"],
                s["overhead_s"],
                f"{100 * s['overhead_share']:.1f}%",
            ],
            [
                "training run / trial",
                s["direct_train_s"],
                s["launch_trial_s"],
                s["trial_vs_train_s"],
                f"{100 * s['trial_vs_train_share']:.1f}%",
            ],
            [
                "outside the training run",
                s["outside_training_direct_s"],
                s["outside_training_launch_s"],
                s["launch_fixed_overhead_s"],
                "",
            ],
        ]
        before = load("b3_service_overhead_before")
        if before:
            o = before["summary"]
            rows.append(
                [
                    f"whole process, {before['settings'].get('code', 'before')} ({machine(before)[-10:]}, "
                    f"{before['settings']['repeats']} repeats)",
                    o["direct_process_s"],
                    o["launch_process_s"],
                    o["overhead_s"],
                    f"{100 * o['overhead_share']:.1f}%",
                ]
            )
        lines += table(["", "direct s", "launch s", "difference s", "share"], rows)
        per_trial = s["trial_vs_train_s"]
        lines += [
            "",
            f"Same best F1 on both sides: {num(s['same_f1'])}. Machine: {machine(b3)}.",
            "",
            f"- whole process: {num(s['overhead_s'])} s more than direct, against 3 s + 3% of "
            f"{num(s['direct_process_s'])} s = {num(limit)} s: {met(s['overhead_s'] <= limit)}.",
            f"- outside the training run `launch` spends {num(s['launch_fixed_overhead_s'])} s more than the direct "
            "process, once per launch: the worker processes start (and import torch, timm and the training code) "
            "while the launcher checks the data and creates the study, and the end of the run is seen when the last "
            "worker process exits. "
            + (
                f"Inside the trial the service adds {num(per_trial)} s (per-epoch reports and user attrs, the "
                f"artifact upload), which is under 3% for trials longer than {num(per_trial / 0.03)} s."
                if per_trial > 0
                else f"Inside the trial the service added no measurable time in this run ({num(per_trial)} s: "
                "the trial against the direct `train()` call, within the noise of the shared machine)."
            ),
            "",
        ]
    after, before = load("b3_timeline"), load("b3_timeline_before")
    if after:
        lines += [
            "Where one launch's wall time goes (`benchmarks/b3_timeline.py`: the same launch with events recorded "
            "in the launcher and the worker; median seconds since the command started"
            + (", the code before issue 15's launch change beside it" if before else "")
            + "):",
            "",
        ]
        rows = []
        for label, role, names in B3_EVENTS:
            row = [label]
            for r in ([before] if before else []) + [after]:
                found = [e["s"] for e in r["median"] if e["role"] == role and e["event"].startswith(names)]
                row.append(min(found) if found else None)
            rows.append(row)
        head = ["event", "before s", "after s"] if before else ["event", "s"]
        lines += table(head, rows)

        def at(role: str, name: str) -> float | None:
            found = [e["s"] for e in after["median"] if e["role"] == role and e["event"].startswith(name)]
            return min(found) if found else None

        up, ready = at("worker", "interpreter up"), at("worker", "standby: imports done")
        told, trial = at("launcher", "workers start end"), at("study", "trial start (stored)")
        if None not in (up, ready, told, trial):
            lines += [
                "",
                f"The worker process is the critical path now: it takes {num(ready - up)} s from its start to the end "
                "of its imports (interpreter, Optuna, SQLAlchemy, torch, timm, scikit-learn, matplotlib, TensorBoard), "
                f"while the launcher has checked the data and created the study {num(ready - told)} s before that; "
                f"its first trial starts {num(trial - ready)} s after the imports (pre-flight, storage, study).",
            ]
        lines += ["", f"Machine: {machine(after)}.", ""]
    b4 = load("b4_storage")
    if b4:
        lines += [
            "## B4 storage: finished trials/s, no-training objective",
            "",
            "K forked processes, objective = suggest + 10 `report`s; the project's worker loop "
            "(`run_worker(objective=...)`) vs plain `study.optimize`, same storage object and sampler; "
            f"medians of {b4['settings']['repeats']} alternating repeats (project / plain: median of the "
            "paired ratios). Targets: >= 90% of plain Optuna, "
            "PostgreSQL >= 20 trials/s with 0 errors, SQLite 0 errors with 4 workers.",
            "",
        ]
        rows = []
        for s in b4["summary"]:
            pg = s["backend"] == "postgresql"
            ok = (
                s["project_vs_plain"] >= 0.9
                and s["project_errors"] == 0
                and (not pg or s["project_trials_per_second"] >= 20)
            )
            rows.append(
                [
                    f"{s['backend']} x{s['workers']}",
                    s["n_trials"],
                    s["plain_trials_per_second"],
                    s["project_trials_per_second"],
                    f"{100 * s['project_vs_plain']:.0f}%",
                    s["plain_errors"],
                    s["project_errors"],
                    met(ok),
                ]
            )
        lines += table(
            [
                "storage x workers",
                "trials per run",
                "plain trials/s",
                "project trials/s",
                "project / plain",
                "errors plain",
                "errors project",
                "target",
            ],
            rows,
        )
        pg = next((s for s in b4["summary"] if s["backend"] == "postgresql"), None)
        lines += ["", f"Machine: {machine(b4)}."]
        if pg and pg["plain_trials_per_second"] < 20:
            lines += [
                "",
                f"PostgreSQL: the 8 client processes and the server share 2 cores with other jobs, and "
                f"plain Optuna itself reaches {num(pg['plain_trials_per_second'])} trials/s here; the loop "
                f"keeps {100 * pg['project_vs_plain']:.0f}% of that with 0 errors.",
            ]
        lines += [""]
    b8 = load("b8_cli_startup")
    if b8:
        med, ratio_ = b8["median_seconds"], b8["ratio_to_optuna_trials"]
        target = b8["settings"]["target_ratio"]
        lines += [
            "## B8 read-only verbs vs Optuna's CLI",
            "",
            f"`maskcls-hpo status` and `export` against `optuna trials` on the same {b8['settings']['trials']}-trial "
            f"SQLite study, each a fresh process (wall time, start-up included), alternating, "
            f"{b8['settings']['repeats']} repeats; ratio = median of the per-repeat ratios. Target: within "
            f"{num(target)}x of `optuna trials`. `import torch, timm` is what `export` loaded for its version "
            "stamp before (now read from the packages' metadata).",
            "",
        ]
        rows = []
        for name in ("status", "export", "optuna trials", "import torch, timm"):
            r = ratio_.get(name, 1.0)
            mark = met(r <= target) if name in ("status", "export") else ""
            rows.append([f"`{name}`", med[name], f"{num(r)}x", mark])
        lines += table(["command", "median s", "/ `optuna trials`", "target"], rows)
        lines += ["", f"Code: {b8.get('code', '?')}. Machine: {machine(b8)}.", ""]
    if gpu:
        ph = gpu["phases"]
        lines += [
            "## GPU check (one NVIDIA H200)",
            "",
            "`benchmarks/gpu_check.py`: the project's CUDA path end to end and training speed at 512x384 "
            "(HxW) with AMP bf16 + channels_last, pretrained=False.",
            "",
        ]
        rows = []
        for key in ("training_efficientnet_b0", "training_legacy_xception", "training_efficientnet_b0_cudnn_benchmark"):
            t = ph.get(key)
            if not t or not t.get("ok"):
                continue
            label = t["model"] + (" + cudnn.benchmark" if t.get("cudnn_benchmark") else "")
            rows.append(
                [
                    label,
                    t["batch_size"],
                    t["images_per_second"],
                    t["resident_median_images_per_second"],
                    f"{100 * t['input_wait_share']:.1f}%",
                    max(t["resident_no_step_sync_images_per_second"]),
                    t["peak_memory_gib"],
                ]
            )
        lines += table(
            [
                "model",
                "batch",
                "train img/s (real loader)",
                "img/s, batches already on GPU",
                "time blocked on input",
                "img/s without the per-step sync",
                "peak GiB",
            ],
            rows,
        )
        sm = ph.get("smoke_sweep", {})
        conc = ph.get("concurrency", {})
        loader = ph.get("loader", {})
        lines += [""]
        facts = []
        if sm.get("checks"):
            failed = [k for k, v in sm["checks"].items() if not v]
            facts.append(
                f"3-trial CUDA sweep through the worker loop: {len(sm['checks']) - len(failed)}/"
                f"{len(sm['checks'])} checks pass"
                + (f" (failing: {', '.join(failed)})" if failed else "")
                + " — "
                + "; ".join(sm["checks"])
                + "."
            )
        if loader.get("ok"):
            facts.append(
                f'`BatchLoader(device="cuda")` batches equal the CPU ones: {num(loader["equal"])} '
                f"({loader['batches_compared']} batches)."
            )
        if conc.get("runs"):
            r1, r4 = conc["runs"][0], conc["runs"][-1]
            facts.append(
                f"Trial throughput on one GPU (`{conc['sweep']}`): {r1['workers']} worker "
                f"{num(r1.get('trials_per_minute'))} trials/min, {r4['workers']} workers "
                f"{num(r4.get('trials_per_minute'))} trials/min ({num(conc.get('throughput_ratio'))}x)."
            )
        lines += [f"- {f}" for f in facts]
        lines += ["", f"Machine: {machine(gpu)}.", ""]
    return "\n".join(_wrap(line) for line in lines).rstrip() + "\n"


def _verdict(flags: dict[str, bool]) -> str:
    """ "**met**", or which parts are not met ("**not met** (CPU); **met** (H200)")."""
    if all(flags.values()):
        return met(True)
    return "; ".join(f"{met(ok)} ({what})" for what, ok in flags.items())


def _ci(x: dict) -> str:
    """``+0.012 [-0.004, +0.027]`` of an ``{"estimate", "ci95"}`` figure."""
    return f"{x['estimate']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"


def b5_rows(b5: dict | None) -> list[list[Any]]:
    """B5's rows of the README summary: the workflow (d) against the hand setting (a), the equal-compute hand
    ensemble (b_eq) and random search (r), pooled over the draws, and its epochs (new-format JSON only)."""
    if not b5 or "d_minus_b_eq" not in b5.get("summary", {}).get("gain", {}):
        return []
    s, t = b5["summary"], b5["targets"]
    g, m = s["gain"], s["met"]
    where = f"{s['draws']} draws, {s['eval_images']:,} eval images"
    return [
        [
            "B5 tuning quality: d - b_eq",
            f">= +{t['d_minus_b_eq']:.2f} eval macro F1, interval above 0 (hand setting, equal compute + TTA)",
            f"{_ci(g['d_minus_b_eq'])} ({where})",
            met(m["d_minus_b_eq"]),
        ],
        [
            "B5: d - a",
            f">= +{t['d_minus_a']:.2f}, interval above 0 (hand setting, one model)",
            _ci(g["d_minus_a"]),
            met(m["d_minus_a"]),
        ],
        [
            "B5: d - r",
            "> 0 (random search, same trials, same confirm + finalize)",
            _ci(g["d_minus_r"]),
            met(m["d_minus_r"]),
        ],
        [
            "B5: compute of d",
            f"<= {t['max_epochs_vs_one_hand_run']:.0f}x one hand run's epochs",
            f"{s['arms']['d']['epochs_vs_one_hand_run']:.1f}x",
            met(m["epochs"]),
        ],
    ]


def targets() -> str:
    """The README's short summary: one row per benchmark with a target, its figure and whether it is met."""
    rows: list[list[Any]] = []
    b1, gpu = load("b1_input_pipeline"), load("gpu")
    b1_gpu = (gpu or {}).get("phases", {}).get("b1_cuda")
    runs = [("CPU", b1), ("H200", b1_gpu if b1_gpu and b1_gpu.get("ok") else None)]
    speed = {where: [s["speedup_epoch2_on"] for s in r["sizes"]] for where, r in runs if r}
    if speed:
        rows.append(
            [
                "B1 input pipeline",
                ">= 10x the images/s of PIL + torchvision from epoch 2",
                "; ".join(f"{where} {min(v):.1f}x-{max(v):.1f}x" for where, v in speed.items()),
                _verdict({where: min(v) >= 10 for where, v in speed.items()}),
            ]
        )
    b2 = load("b2_pruning")
    if b2 and b2.get("shipped"):
        shipped = [st["pruners"][b2["shipped"]] for st in b2["sets"]]
        rows.append(
            [
                "B2 pruning",
                b2["settings"]["target"],
                f"`{b2['shipped']}`: R_eps "
                + " / ".join(num(p["R_eps_median"]) for p in shipped)
                + ", false prunes "
                + " / ".join(f"{100 * p['false_prune_rate_top_decile']:.0f}%" for p in shipped)
                + " ("
                + " / ".join(f"{st['data'].split(' ')[0]} {st['epochs_per_trial']} ep" for st in b2["sets"])
                + ")",
                met(
                    all(
                        bool(st["pruners"][b2["shipped"]].get("target_met"))
                        for st in b2["sets"]
                        if b2["settings"].get("headline_data", "UTKFace") in str(st["data"])
                    )
                ),
            ]
        )
    b3 = load("b3_service_overhead")
    if b3:
        s = b3["summary"]
        limit = 3.0 + 0.03 * s["direct_process_s"]
        rows.append(
            [
                "B3 service overhead",
                "one trial under `launch` at most 3 s + 3% longer than a direct run",
                f"{s['overhead_s']:+.2f} s (limit {num(limit)} s)",
                met(s["overhead_s"] <= limit),
            ]
        )
    b4 = load("b4_storage")
    if b4:
        flags = {
            f"{x['backend']} x{x['workers']}": x["project_vs_plain"] >= 0.9
            and x["project_errors"] == 0
            and (x["backend"] != "postgresql" or x["project_trials_per_second"] >= 20)
            for x in b4["summary"]
        }
        rows.append(
            [
                "B4 storage",
                ">= 90% of plain Optuna's trials/s, 0 errors; PostgreSQL >= 20 trials/s",
                ", ".join(
                    f"{x['backend']} x{x['workers']} {100 * x['project_vs_plain']:.0f}% "
                    f"({num(x['project_trials_per_second'])}/s)"
                    for x in b4["summary"]
                ),
                _verdict(flags),
            ]
        )
    rows.extend(b5_rows(load("b5_tuning_quality")))
    ten = ((load("b6_study_size") or {}).get("sizes", {}).get("10000") or {}).get("summary")
    if ten:
        base = ten["optuna_trials"]["median_s"]
        st, ex, rep = ten["after:status"], ten["after:export"], ten["after:report"]
        size_b = rep.get("file_bytes") or rep["file_mb"] * 2**20
        rows.append(
            [
                "B6 study size (10k trials)",
                "`status`, `export` < 2x `optuna trials`; report < 5 MB",
                f"status {st['median_s'] / base:.2f}x, export {ex['median_s'] / base:.2f}x; report "
                f"{num(size_b / 1e6)} MB",
                _verdict(
                    {
                        "status, export": st["median_s"] < 2 * base and ex["median_s"] < 2 * base,
                        "report size": size_b < 5e6,
                    }
                ),
            ]
        )
    b8 = load("b8_cli_startup")
    if b8:
        target, r = b8["settings"]["target_ratio"], b8["ratio_to_optuna_trials"]
        rows.append(
            [
                "B8 read-only verbs",
                f"within {num(target)}x of `optuna trials`",
                f"status {num(r['status'])}x, export {num(r['export'])}x",
                met(r["status"] <= target and r["export"] <= target),
            ]
        )
    return "\n".join(table(["benchmark", "target", "measured", ""], rows)) + "\n"


def _wrap(line: str, width: int = 110) -> str:
    """Prose lines wrapped at `width` (tables and headings as they are)."""
    import textwrap

    if line.startswith(("|", "#")) or len(line) <= width:
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(line, width=width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def write_page(text: str, page: Path = PAGE, begin: str = BEGIN, end: str = END) -> None:
    """Put `text` between the markers `begin` and `end` of `page` (at its end when it has none)."""
    body = page.read_text(encoding="utf-8")
    block = f"{begin}\n{text}{end}"
    if begin in body and end in body:
        head, rest = body.split(begin, 1)
        _, tail = rest.split(end, 1)
        body = head + block + tail
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    page.write_text(body, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--print", action="store_true", help="print the tables instead of writing docs/performance.md")
    args = ap.parse_args()
    text = section()
    if args.print:
        print(text)
        print(targets())
    else:
        write_page(text)
        write_page(targets(), README, TARGETS_BEGIN, TARGETS_END)
        print(f"updated the benchmark tables of {PAGE} and the summary of {README}")


if __name__ == "__main__":
    main()
