"""B6 study size: `status`, `export`, `report` and the dashboard's first API load on studies of 1k-10k trials.

Studies are made without training (as B4 does, but faster): an empty Optuna study in a fresh SQLite file,
then bulk SQL inserts through Optuna's own table models (``hpo._optuna.rdb_models``) of N trials with what a
real sweep stores: the smoke sweep's params with their distributions, 30 intermediate values (val macro F1
per epoch) for every trial, the value, and the user attrs the objective writes (the full config, accuracy,
per-task F1, best epoch, 30 epoch seconds, images/s, device, peak memory, seed, worker; a reason on PRUNED
trials). States: 65% COMPLETE, 30% PRUNED, 5% FAIL, values drawn at random (seeded).

Timed, each as a fresh process from the repository root (process wall time; peak RSS of that process from
GNU ``time -f %M``), alternating, ``--repeats`` times:

- project: ``maskcls-hpo status``, ``maskcls-hpo export --out best.yaml``, ``maskcls-hpo report`` (also the
  file size), and ``maskcls-hpo dashboard``: seconds from the server's first answer to the first complete
  ``GET /api/studies`` and ``GET /api/studies/<id>`` (what the study page loads first);
- Optuna's own on the same file: ``optuna trials`` (its CLI, every trial as a table), ``optuna best-trial``,
  and ``optuna.load_study(...).trials_dataframe()`` in a fresh ``python -c``.

``--before DIR`` also runs the project's commands from another copy of the package (e.g. the code before
this benchmark's changes, written with ``git archive COMMIT maskcls_hpo``), interleaved with the current
code's on the same files, at ``--before-sizes``.

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b6_study_size.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, median, print_table, save_result  # noqa: E402

EPOCHS = 30
VENV = REPO / ".venv" / "bin"
TARGET_RATIO = 2.0
REPORT_LIMIT_BYTES = 5 * 2**20


def _params(rng: random.Random) -> tuple[dict, dict]:
    """One point of the smoke sweep's space: (params, distributions as Optuna JSON)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
        distribution_to_json,
    )

    dists = {
        "batch_size": CategoricalDistribution([16, 32]),
        "lr": FloatDistribution(1e-3, 3e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "scheduler": CategoricalDistribution(["step", "cosine"]),
        "loss": CategoricalDistribution(["cross_entropy", "label_smoothing", "focal", "f1"]),
        "head": CategoricalDistribution(["single", "multi"]),
    }
    p = {
        "batch_size": rng.choice([16, 32]),
        "lr": 10 ** rng.uniform(-3, math.log10(3e-2)),
        "dropout": rng.uniform(0, 0.5),
        "scheduler": rng.choice(["step", "cosine"]),
        "loss": rng.choice(["cross_entropy", "label_smoothing", "focal", "f1"]),
        "head": rng.choice(["single", "multi"]),
    }
    if p["scheduler"] == "cosine":
        dists["t_max"] = IntDistribution(2, EPOCHS)
        p["t_max"] = rng.randint(2, EPOCHS)
    if p["head"] == "multi":
        dists["age_loss_weight"] = FloatDistribution(0.5, 2.0)
        p["age_loss_weight"] = rng.uniform(0.5, 2.0)
    return p, {k: distribution_to_json(d) for k, d in dists.items()}


def make_study(path: Path, n: int, seed: int = 0) -> dict:
    """A SQLite study `big` of `n` trials x EPOCHS epochs at `path`, by bulk inserts; returns timings."""
    import optuna
    import sqlalchemy
    from optuna.trial import TrialState

    from maskcls_hpo.config import TrainConfig
    from maskcls_hpo.hpo._optuna import rdb_models, study_id_of

    t0 = time.perf_counter()
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="big", storage=storage, direction="maximize")
    study.set_user_attr("n_trials", n)
    study.set_user_attr("sweep_file", "sweeps/smoke.py")
    sid = study_id_of(study)
    m = rdb_models()
    rng = random.Random(seed)
    base = TrainConfig(model="test_efficientnet", epochs=EPOCHS, image_size=(48, 36)).to_dict()
    # keys newer than the code a --before copy may run are left out while unset (their defaults apply)
    base = {k: v for k, v in base.items() if not (k in ("folds", "fold", "split_seed") and v is None)}
    start = dt.datetime(2026, 1, 1)
    trials, params, values, inter, attrs, dist_cache = [], [], [], [], [], {}
    for i in range(n):
        tid = i + 1
        u = rng.random()
        state = TrialState.COMPLETE if u < 0.65 else TrialState.PRUNED if u < 0.95 else TrialState.FAIL
        begin = start + dt.timedelta(seconds=60 * i)
        trials.append(
            {
                "trial_id": tid,
                "number": i,
                "study_id": sid,
                "state": state,
                "datetime_start": begin,
                "datetime_complete": begin + dt.timedelta(seconds=55),
            }
        )
        p, d = _params(rng)
        for k, v in p.items():
            if d[k] not in dist_cache:
                dist_cache[d[k]] = optuna.distributions.json_to_distribution(d[k])
            dist = dist_cache[d[k]]
            params.append(
                {"trial_id": tid, "param_name": k, "param_value": dist.to_internal_repr(v), "distribution_json": d[k]}
            )
        top = rng.uniform(0.3, 0.85)
        curve = [round(top * (1 - 0.8 ** (e + 1)) + rng.gauss(0, 0.01), 4) for e in range(EPOCHS)]
        for e, f in enumerate(curve, 1):
            inter.append(
                {
                    "trial_id": tid,
                    "step": e,
                    "intermediate_value": f,
                    "intermediate_value_type": m.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE,
                }
            )
        if state != TrialState.FAIL:
            value = max(curve) if state == TrialState.COMPLETE else curve[-1]
            values.append(
                {
                    "trial_id": tid,
                    "objective": 0,
                    "value": value,
                    "value_type": m.TrialValueModel.TrialValueType.FINITE,
                }
            )
        ua = {
            "config": {**base, **p, "seed": 42},
            "seed": 42,
            "worker": f"host:{1000 + i % 8}/{i % 8}",
            "epoch_seconds": [round(rng.uniform(1.5, 2.5), 3) for _ in range(EPOCHS)],
            "images_per_second": round(rng.uniform(300, 600), 1),
        }
        if state == TrialState.COMPLETE:
            ua.update(
                accuracy=round(rng.uniform(0.5, 0.9), 4),
                task_f1={"mask": 0.9, "gender": 0.8, "age": 0.6},
                best_epoch=curve.index(max(curve)) + 1,
                device="cpu",
                peak_memory_bytes=400_000_000,
            )
        elif state == TrialState.PRUNED:
            ua["reason"] = f"pruned at epoch {EPOCHS} (val macro F1 {curve[-1]:.4f})"
        else:
            ua["reason"] = "RuntimeError: a failure"
        attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in ua.items()]
    built = time.perf_counter() - t0
    with storage.engine.begin() as con:
        for model, rows in (
            (m.TrialModel, trials),
            (m.TrialParamModel, params),
            (m.TrialValueModel, values),
            (m.TrialIntermediateValueModel, inter),
            (m.TrialUserAttributeModel, attrs),
        ):
            con.execute(sqlalchemy.insert(model.__table__), rows)
    storage.engine.dispose()
    return {
        "trials": n,
        "rows": {"params": len(params), "values": len(values), "intermediate": len(inter), "user_attrs": len(attrs)},
        "build_rows_s": round(built, 1),
        "create_s": round(time.perf_counter() - t0, 1),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }


def _timed(cmd: list[str], env: dict, cwd: Path, timeout: float) -> dict:
    """Run `cmd` as a fresh process; wall seconds, peak RSS (MiB) and return code.

    The peak RSS comes from GNU time (``/usr/bin/time -f %M``) around the command: ``os.wait4`` on a child
    forked from this process reports at least this process's own RSS (Linux keeps the RSS high-water mark
    across fork + exec), and this process holds the study it just made (110-315 MiB at 1k-10k trials), which
    hid the read-only commands' own peak. Without GNU time the wait4 figure is kept (a ceiling, not a peak).
    """
    gnu_time = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        full = [str(gnu_time), "-f", "%M", "-o", rss.name, *cmd] if gnu_time.is_file() else cmd
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            full, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, 9)  # time and the command under it
                os.wait4(proc.pid, 0)
                return {"s": None, "rss_mib": None, "rc": "timeout"}
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
        proc.returncode = rc
        kib = usage.ru_maxrss
        if full is not cmd:
            lines = [x for x in Path(rss.name).read_text().split() if x.isdigit()]
            kib = int(lines[-1]) if lines else None
    out = {"s": round(wall, 2), "rss_mib": round(kib / 1024, 1) if kib is not None else None, "rc": rc}
    if rc != 0:
        out["stderr"] = err
    return out


def _plotlyjs_bytes() -> int | None:
    """Bytes of plotly.js that a self-contained report inlines once (the part of its size no study changes)."""
    try:
        import plotly.offline
    except ImportError:
        return None
    return len(plotly.offline.get_plotlyjs().encode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 600) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def dashboard_first_load(url: str, env: dict, timeout: float) -> dict:
    """Start `maskcls-hpo dashboard`, wait for /api/meta, then time the first /api/studies and /api/studies/1."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(VENV / "maskcls-hpo"), "dashboard", "--storage", url, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                _get(base + "/api/meta", timeout=5)
                break
            except OSError:
                if time.perf_counter() - t0 > 60 or proc.poll() is not None:
                    return {"studies_s": None, "study_s": None, "error": "dashboard did not start"}
                time.sleep(0.2)
        up = time.perf_counter() - t0
        t1 = time.perf_counter()
        _get(base + "/api/studies", timeout=timeout)
        t2 = time.perf_counter()
        body = _get(base + "/api/studies/1?after=0", timeout=timeout)
        t3 = time.perf_counter()
        return {
            "start_s": round(up, 2),
            "studies_s": round(t2 - t1, 2),
            "study_s": round(t3 - t2, 2),
            "study_mb": round(len(body) / 2**20, 1),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    db: Path, work: Path, codes: dict[str, Path], repeats: int, timeout: float, dashboard: bool, only: set[str]
) -> dict:
    """Time every command on `db`; the project's commands once per code copy in `codes` (label -> package root),
    all commands interleaved, the order reversed on every other repeat."""
    url = f"sqlite:///{db}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    mh = str(VENV / "maskcls-hpo")
    ours = {
        "status": [mh, "status", "--storage", url, "--study", "big"],
        "export": [mh, "export", "--storage", url, "--study", "big", "--out", str(work / "b.yaml")],
        "report": [mh, "report", "--storage", url, "--study", "big", "--out", str(work / "r.html")],
    }
    theirs = {
        "optuna_trials": [str(VENV / "optuna"), "trials", "--storage", url, "--study-name", "big"],
        "optuna_best_trial": [str(VENV / "optuna"), "best-trial", "--storage", url, "--study-name", "big"],
        "trials_dataframe": [
            str(VENV / "python"),
            "-c",
            f"import optuna; optuna.load_study(study_name='big', storage={url!r}).trials_dataframe()",
        ],
    }
    jobs = [(f"{label}:{k}", cmd, code) for k, cmd in ours.items() for label, code in codes.items()]
    jobs += [(k, cmd, REPO) for k, cmd in theirs.items()]
    if only:
        jobs = [j for j in jobs if j[0] in only]
    runs: dict[str, list[dict]] = {k: [] for k, _, _ in jobs}
    report_bytes: dict[str, list[int]] = {label: [] for label in codes}
    for r in range(repeats):
        for key, cmd, code in jobs if r % 2 == 0 else reversed(jobs):
            res = _timed(cmd, {**env, "PYTHONPATH": str(code)}, REPO, timeout)
            runs[key].append(res)
            print(f"    {key}: {res}", flush=True)
            if key.endswith(":report") and (work / "r.html").is_file():
                report_bytes[key.split(":")[0]].append((work / "r.html").stat().st_size)
                (work / "r.html").unlink()
    summary = {
        k: {
            "median_s": median([x["s"] for x in v if x["s"] is not None]) if any(x["s"] for x in v) else None,
            "peak_rss_mib": max((x["rss_mib"] or 0) for x in v),
            "ok": all(x["rc"] == 0 for x in v),
        }
        for k, v in runs.items()
    }
    for label, sizes in report_bytes.items():
        if f"{label}:report" in summary:
            summary[f"{label}:report"]["file_mb"] = round(max(sizes) / 2**20, 2) if sizes else None
            summary[f"{label}:report"]["file_bytes"] = max(sizes) if sizes else None
    base = (summary.get("optuna_trials") or {}).get("median_s")
    for label in codes:
        for key in ("status", "export"):
            s = summary.get(f"{label}:{key}")
            if s is None:
                continue
            s["vs_optuna_trials"] = round(s["median_s"] / base, 2) if s["median_s"] and base else None
    out = {"runs": runs, "summary": summary}
    if dashboard:
        # the current code only: the app is optuna-dashboard's own either way (this project lists the studies)
        out["dashboard"] = {"after": dashboard_first_load(url, {**env, "PYTHONPATH": str(REPO)}, timeout)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per command before it counts as failed")
    ap.add_argument("--before", type=Path, default=None, help="a package copy to time side by side as 'before'")
    ap.add_argument("--before-sizes", default="1000,10000", help="sizes at which --before runs too")
    ap.add_argument("--no-dashboard", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated commands to run (e.g. after:report); default all")
    ap.add_argument("--merge", action="store_true", help="update these commands' results in the existing JSON")
    ap.add_argument("--name", default="b6_study_size")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="b6-"))
    results: dict[str, dict] = {}
    out_json = REPO / "benchmarks" / "results" / f"{args.name}.json"
    prior = json.loads(out_json.read_text()) if args.merge and out_json.is_file() else {}
    previous = prior.get("sizes", {})
    if args.merge:
        results.update(previous)
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            db = work / f"big{n}.db"
            made = make_study(db, n)
            print(f"{n} trials: created in {made['create_s']} s ({made['file_mb']} MB)", flush=True)
            codes = {"after": REPO}
            if args.before is not None and str(n) in args.before_sizes.split(","):
                codes["before"] = args.before.resolve()
            only = {x for x in args.only.split(",") if x}
            m = measure(db, work, codes, args.repeats, args.timeout, not args.no_dashboard, only)
            if args.merge and str(n) in previous:
                old = previous[str(n)]
                old["runs"].update(m["runs"])
                old["summary"].update(m["summary"])
                old.setdefault("merged", []).append({"commands": sorted(m["runs"]), "study": made})
                results[str(n)] = old
            else:
                results[str(n)] = {"study": made, **m}
            db.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "settings": {
            "epochs_per_trial": EPOCHS,
            "states": "65% COMPLETE, 30% PRUNED, 5% FAIL; every trial 30 intermediate values",
            "storage": "SQLite (one file per size, bulk inserts through Optuna's table models)",
            "repeats": args.repeats,
            "before": str(args.before) if args.before else None,
            "targets": "status and export < 2x `optuna trials` at 10k trials; report < 5 MB at 10k trials, "
            "report time and memory growing no faster than linearly",
            "plotlyjs_bytes": _plotlyjs_bytes(),
        },
        "sizes": results,
    }
    if prior.get("notes"):
        payload["notes"] = prior["notes"]
    if prior.get("machine"):
        payload["machine"] = prior["machine"]
        payload["merged_machine"] = __import__("common").machine_info()
    path = save_result(args.name, payload)
    rows = []
    for n, entry in results.items():
        s = entry["summary"]
        for label in ("before", "after"):
            if f"{label}:status" not in s:
                continue
            d = (entry.get("dashboard") or {}).get(label) or {}
            rows.append(
                [
                    f"{n} {label}",
                    s[f"{label}:status"]["median_s"],
                    s[f"{label}:export"]["median_s"],
                    s[f"{label}:report"]["median_s"],
                    s[f"{label}:report"]["peak_rss_mib"],
                    s[f"{label}:report"].get("file_mb"),
                    d.get("study_s"),
                    s["optuna_trials"]["median_s"],
                    s["optuna_best_trial"]["median_s"],
                    s["trials_dataframe"]["median_s"],
                ]
            )
    print_table(
        "B6 study size (process wall s)",
        ["trials", "status", "export", "report", "report MiB", "report MB", "dash API s", "optuna trials"]
        + ["optuna best-trial", "trials_dataframe"],
        rows,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
