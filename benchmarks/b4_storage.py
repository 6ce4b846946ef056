"""B4 storage: finished trials/s and errors of K worker processes with a no-training objective, through the
project's worker loop (``workers.run_worker(..., objective=...)``) vs plain ``study.optimize``.

Both sides use the same storage (``storage.open_storage``: heartbeat on, SQLite in WAL mode with a busy
timeout, PostgreSQL with pool_pre_ping), the same sampler (``RandomSampler``, seed + worker index) and the
same objective: suggest ``x``, ``trial.report`` 10 steps, return a value. Per run a fresh study (PostgreSQL:
a fresh database on the machine's server, 127.0.0.1:5432, user postgres) and K processes (forked) that
together finish N trials; the project's loop gets the budget N (its exact-budget slot claim), plain Optuna
``n_trials = N / K`` per process. Throughput = finished trials / (last completion - first start), from the
trials' own timestamps, so process start-up is not counted. Errors = FAIL trials + exceptions raised in a
worker + database warnings logged by the loop. Runs alternate (project first, then plain first) and repeat
``--repeats`` times; reported are the medians of trials/s and the median of the paired ratios (project /
plain of the same repeat, which cancels most of the load drift of a shared machine).

    .venv/bin/python benchmarks/b4_storage.py
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table, ratio, save_result  # noqa: E402

SWEEP = Path(__file__).resolve().parent / "sweeps" / "b4_storage.py"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
STEPS = 10


def objective(trial) -> float:
    """No training: suggest, report STEPS intermediate values, return one."""
    x = trial.suggest_float("x", -10.0, 10.0)
    for step in range(1, STEPS + 1):
        trial.report(x * x / step, step)
    return x * x


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:300])


def _child(kind: str, url: str, study: str, n_total: int, n_own: int, index: int, queue) -> None:
    import optuna

    from maskcls_hpo.hpo.store import HeartbeatSettings, open_storage
    from maskcls_hpo.hpo.trial import load_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counter = _Count()
    logging.getLogger().addHandler(counter)
    out = {"kind": kind, "index": index, "exception": None}
    try:
        sweep = load_sweep(SWEEP)
        if kind == "project":
            from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

            settings = WorkerSettings(
                sweep_path=SWEEP,
                storage_url=url,
                study_name=study,
                n_trials=n_total,
                worker_index=index,
                options=RunOptions(heartbeat=HeartbeatSettings()),
            )
            report = run_worker(settings, sweep=sweep, objective=objective)
            out.update(complete=report.complete, failed=report.failed, stop_reason=report.stop_reason)
        else:
            storage = open_storage(url, HeartbeatSettings())
            st = optuna.load_study(
                study_name=study, storage=storage, sampler=sweep.make_sampler(index), pruner=sweep.make_pruner()
            )
            st.optimize(objective, n_trials=n_own)
    except BaseException as err:  # noqa: BLE001 - reported to the parent as an error
        out["exception"] = f"{type(err).__name__}: {err}"[:500]
    out["warnings"] = counter.n
    out["warning_samples"] = counter.first
    queue.put(out)


def _fresh_url(backend: str, tmp: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'b4-{uuid.uuid4().hex[:8]}.db'}", None
    import psycopg

    name = f"maskcls_b4_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def _drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def one_run(kind: str, backend: str, workers: int, n_trials: int, tmp: Path) -> dict:
    import optuna

    from maskcls_hpo.hpo._optuna import rdb_of
    from maskcls_hpo.hpo.store import HeartbeatSettings, open_storage
    from maskcls_hpo.hpo.trial import load_sweep

    url, pg_name = _fresh_url(backend, tmp)
    try:
        sweep = load_sweep(SWEEP)
        storage = open_storage(url, HeartbeatSettings())
        optuna.create_study(study_name="b4", storage=storage, direction="maximize")
        rdb_of(storage).engine.dispose()
        # fork: the children start at once with the modules already imported (the parent's engine was disposed
        # above, so no database connection is shared); each child opens its own storage
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        n_own = n_trials // workers
        procs = [ctx.Process(target=_child, args=(kind, url, "b4", n_trials, n_own, i, queue)) for i in range(workers)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        outs = [queue.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="b4", storage=storage)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state.is_finished() and t.datetime_complete is not None]
        complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
        failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
        bad_reports = [t.number for t in complete if len(t.intermediate_values) != STEPS]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        exceptions = [o["exception"] for o in outs if o["exception"]]
        warnings = sum(o["warnings"] for o in outs)
        rdb_of(storage).engine.dispose()
        del sweep
        return {
            "kind": kind,
            "backend": backend,
            "workers": workers,
            "n_trials": n_trials,
            "complete": len(complete),
            "failed": len(failed),
            "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
            "trials_with_wrong_reports": bad_reports[:10],
            "span_s": round(span, 3),
            "wall_s": round(wall, 3),
            "trials_per_second": round(len(complete) / span, 2) if span else None,
            "exceptions": exceptions,
            "db_warnings": warnings,
            "warning_samples": [w for o in outs for w in o["warning_samples"]][:3],
            "errors": len(failed) + len(exceptions) + warnings + len(bad_reports),
        }
    finally:
        if pg_name:
            _drop_pg(pg_name)


def main() -> None:
    import optuna  # noqa: F401 - imported before forking, so the children start at once

    import maskcls_hpo.hpo.workers  # noqa: F401

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--pg-trials", type=int, default=300)
    ap.add_argument("--sqlite-trials", type=int, default=160)
    ap.add_argument("--setups", default="postgresql:8,sqlite:8,sqlite:4", help="backend:workers,...")
    ap.add_argument("--name", default="b4_storage")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="b4-"))
    runs = []
    summary = []
    for setup in args.setups.split(","):
        backend, workers = setup.split(":")
        workers = int(workers)
        n = args.pg_trials if backend == "postgresql" else args.sqlite_trials
        per = {"project": [], "plain": []}
        for rep in range(args.repeats):
            # alternate which side goes first, so a load change on the shared machine hits both alike
            for kind in ("project", "plain") if rep % 2 == 0 else ("plain", "project"):
                r = one_run(kind, backend, workers, n, tmp)
                r["repeat"] = rep
                runs.append(r)
                per[kind].append(r)
                print(
                    f"  {backend} x{workers} {kind} #{rep}: {r['trials_per_second']} trials/s, "
                    f"{r['complete']} complete, {r['errors']} errors",
                    flush=True,
                )
        p = median([r["trials_per_second"] for r in per["project"]])
        q = median([r["trials_per_second"] for r in per["plain"]])
        paired = [
            ratio(a["trials_per_second"], b["trials_per_second"])
            for a, b in zip(per["project"], per["plain"], strict=True)
        ]
        summary.append(
            {
                "backend": backend,
                "workers": workers,
                "n_trials": n,
                "project_trials_per_second": p,
                "plain_trials_per_second": q,
                "project_vs_plain": round(median(paired), 3),
                "paired_ratios": paired,
                "ratio_of_medians": ratio(p, q),
                "project_errors": sum(r["errors"] for r in per["project"]),
                "plain_errors": sum(r["errors"] for r in per["plain"]),
                "project_complete": [r["complete"] for r in per["project"]],
                "plain_complete": [r["complete"] for r in per["plain"]],
            }
        )
    result = {
        "settings": {
            "objective": f"suggest x, report {STEPS} steps, return x^2 (no training)",
            "sampler": "RandomSampler(seed + worker index)",
            "pruner": "NopPruner",
            "storage": "maskcls_hpo.hpo.store.open_storage (heartbeat 30 s)",
            "repeats": args.repeats,
            "processes": "multiprocessing fork; throughput from the trials' timestamps",
        },
        "target": "project >= 90% of plain Optuna's trials/s; PostgreSQL >= 20 trials/s with 0 errors; "
        "SQLite 0 errors with 4 workers",
        "summary": summary,
        "runs": runs,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    path = save_result(args.name, result)
    print_table(
        "B4 storage: finished trials/s (median of repeats), no-training objective",
        ["storage, workers", "plain optimize", "project loop", "project / plain", "errors plain", "errors project"],
        [
            [
                f"{s['backend']} x{s['workers']}",
                s["plain_trials_per_second"],
                s["project_trials_per_second"],
                s["project_vs_plain"],
                s["plain_errors"],
                s["project_errors"],
            ]
            for s in summary
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
