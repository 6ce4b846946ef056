"""B7 connections: PostgreSQL connections each worker process holds, sampled from ``pg_stat_activity``.

K worker processes (forked, as in B4) run the project's worker loop (``hpo.worker.run_worker``) with a
no-training objective (suggest ``x``, 10 reports 30 ms apart, return a value) and a 1 s heartbeat, so the
main thread and the heartbeat thread talk to the database at the same time. A private PostgreSQL server
(``initdb``/``pg_ctl`` as user postgres, ``max_connections=20``) holds the study; a sampler in the parent
reads ``pg_stat_activity`` every 20 ms and counts client connections by ``application_name`` (each process
names itself ``maskcls-hpo HOST:PID``, ``hpo.storage.application_name``). Reported per setup: the peak
connections of any one worker, the peak of all of them together, connection errors (the server log's
"too many clients" lines, exceptions in the workers, database warnings the loop logged, FAIL trials) and
whether the study ended with exactly N finished trials.

Setups, side by side in one run: the pool the workers had before (``pool_size=2, max_overflow=4``: up to 6
per process) and the pool they have now (``pool_size=2, max_overflow=0``).

    .venv/bin/python benchmarks/b7_connections.py            # writes benchmarks/results/b7_connections.json
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import re
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, print_table, save_result  # noqa: E402

SWEEP = HERE / "sweeps" / "b4_storage.py"
STEPS = 10
STEP_SECONDS = 0.03
MAX_CONNECTIONS = 20
POOLS = {
    "before (pool 2 + overflow 4)": {"pool_size": 2, "max_overflow": 4},
    "now (pool 2, no overflow)": None,  # the project's engine_kwargs as they are
}


def objective(trial) -> float:
    """No training: suggest, report STEPS values STEP_SECONDS apart, return one."""
    x = trial.suggest_float("x", -10.0, 10.0)
    for step in range(1, STEPS + 1):
        time.sleep(STEP_SECONDS)
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


def _child(url: str, study: str, n_trials: int, index: int, pool: dict | None, queue) -> None:
    import optuna

    from maskcls_hpo.hpo.store import HeartbeatSettings
    from maskcls_hpo.hpo.store import _rdb as storage_module
    from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

    if pool is not None:  # the earlier pool sizes, for the side-by-side figure
        original = storage_module.engine_kwargs

        def patched(u: str) -> dict:
            kw = original(u)
            if "pool_size" in kw:
                kw.update(pool)
            return kw

        storage_module.engine_kwargs = patched
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counter = _Count()
    logging.getLogger().addHandler(counter)
    out = {"index": index, "exception": None, "application_name": storage_module.application_name()}
    try:
        settings = WorkerSettings(
            sweep_path=SWEEP,
            storage_url=url,
            study_name=study,
            n_trials=n_trials,
            worker_index=index,
            options=RunOptions(heartbeat=HeartbeatSettings(interval=1, grace_period=20), poll_interval=0.2),
        )
        report = run_worker(settings, objective=objective)
        out.update(complete=report.complete, failed=report.failed, stop_reason=report.stop_reason)
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        out["exception"] = f"{type(err).__name__}: {err}"[:500]
    out["warnings"] = counter.n
    out["warning_samples"] = counter.first
    queue.put(out)


class Sampler(threading.Thread):
    """Reads pg_stat_activity every `interval` s: peak connections per application_name and in total."""

    def __init__(self, conninfo: str, dbname: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.dbname, self.interval = conninfo, dbname, interval
        self.peak_per_app: dict[str, int] = {}
        self.peak_total = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as con:
            while not self.done.is_set():
                rows = con.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name LIKE 'maskcls-hpo %%' GROUP BY 1",
                    (self.dbname,),
                ).fetchall()
                self.samples += 1
                self.peak_total = max(self.peak_total, sum(n for _, n in rows))
                for app, n in rows:
                    self.peak_per_app[app] = max(self.peak_per_app.get(app, 0), n)
                time.sleep(self.interval)


def measure(admin_conninfo: str, port: int, server_log: Path | None, workers: int, n_trials: int, pool: dict | None):
    """One setup on the server at `admin_conninfo`: K forked workers until N finished trials; returns the figures."""
    import optuna
    import psycopg

    from maskcls_hpo.hpo._optuna import rdb_of
    from maskcls_hpo.hpo.store import HeartbeatSettings, check_connection_budget, open_storage

    dbname = f"maskcls_b5_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_conninfo, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{dbname}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{dbname}"
    log_before = server_log.read_text(errors="replace") if server_log and server_log.is_file() else ""
    try:
        budget = check_connection_budget(url, workers)
        storage = open_storage(url, HeartbeatSettings(interval=1, grace_period=20))
        optuna.create_study(study_name="b5", storage=storage, direction="maximize")
        rdb_of(storage).engine.dispose()
        sampler = Sampler(psycopg.conninfo.make_conninfo(admin_conninfo, dbname=dbname), dbname)
        sampler.start()
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_child, args=(url, "b5", n_trials, i, pool, queue)) for i in range(workers)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        outs = [queue.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        wall = time.perf_counter() - t0
        sampler.done.set()
        sampler.join(timeout=10)
        study = optuna.load_study(study_name="b5", storage=storage)
        trials = study.get_trials(deepcopy=False)
        rdb_of(storage).engine.dispose()
        states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
        log_new = server_log.read_text(errors="replace")[len(log_before) :] if server_log else ""
        too_many = log_new.count("too many clients") + log_new.count("remaining connection slots")
        exceptions = [o["exception"] for o in outs if o["exception"]]
        db_warnings = sum(o["warnings"] for o in outs)
        apps = {o["application_name"] for o in outs}
        per_worker = {app: n for app, n in sampler.peak_per_app.items() if app in apps}
        # every connection a worker opened over its life (log_connections): catches short-lived overflow
        # connections that a 20 ms sampler could miss; 1 of them is the schema check's, closed before the pool
        opened = {app: 0 for app in apps}
        for m in re.finditer(r"connection authorized: .*application_name=(maskcls-hpo \S+)", log_new):
            if m.group(1) in opened:
                opened[m.group(1)] += 1
        return {
            "workers": workers,
            "n_trials": n_trials,
            "pool": pool or "engine_kwargs",
            "budget_check": budget,
            "states": states,
            "finished": states["COMPLETE"] + states["PRUNED"],
            "exact_budget": states["COMPLETE"] + states["PRUNED"] == n_trials and states["RUNNING"] == 0,
            "peak_connections_per_worker": max(per_worker.values(), default=0),
            "peak_connections_by_worker": sorted(per_worker.values()),
            "peak_connections_all_workers": sampler.peak_total,
            "connections_opened_by_worker": sorted(opened.values()),
            "samples": sampler.samples,
            "too_many_clients_in_server_log": too_many,
            "exceptions": exceptions,
            "db_warnings": db_warnings,
            "warning_samples": [w for o in outs for w in o["warning_samples"]][:3],
            "connection_errors": too_many + len(exceptions) + db_warnings + states["FAIL"],
            "wall_s": round(wall, 2),
        }
    finally:
        with psycopg.connect(admin_conninfo, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    import optuna  # noqa: F401 - imported before forking, so the children start at once

    import maskcls_hpo.hpo.workers  # noqa: F401

    sys.path.insert(0, str(REPO / "tests"))
    from pg import PrivateServer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--n-trials", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--name", default="b7_connections")
    args = ap.parse_args()
    server = PrivateServer(settings={"max_connections": MAX_CONNECTIONS, "log_connections": "on"}).init()
    runs = []
    try:
        server.start()
        admin = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
        for rep in range(args.repeats):
            for label, pool in POOLS.items() if rep % 2 == 0 else reversed(list(POOLS.items())):
                r = measure(admin, server.port, server.logfile, args.workers, args.n_trials, pool)
                r.update(setup=label, repeat=rep)
                runs.append(r)
                print(
                    f"{label:32s} rep {rep}: peak/worker {r['peak_connections_per_worker']}, "
                    f"all {r['peak_connections_all_workers']}, errors {r['connection_errors']}, "
                    f"finished {r['finished']}/{r['n_trials']}",
                    flush=True,
                )
    finally:
        server.cleanup()
    summary = []
    for label in POOLS:
        mine = [r for r in runs if r["setup"] == label]
        summary.append(
            {
                "setup": label,
                "workers": args.workers,
                "max_connections": MAX_CONNECTIONS,
                "peak_per_worker": max(r["peak_connections_per_worker"] for r in mine),
                "peak_all_workers": max(r["peak_connections_all_workers"] for r in mine),
                "max_opened_per_worker": max(max(r["connections_opened_by_worker"], default=0) for r in mine),
                "connection_errors": sum(r["connection_errors"] for r in mine),
                "exact_budget": all(r["exact_budget"] for r in mine),
                "runs": len(mine),
            }
        )
    keys = (
        "setup",
        "peak_per_worker",
        "peak_all_workers",
        "max_opened_per_worker",
        "connection_errors",
        "exact_budget",
        "runs",
    )
    print_table(
        f"B7 PostgreSQL connections: {args.workers} workers, max_connections={MAX_CONNECTIONS}",
        ["setup", "peak per worker", "peak all", "opened per worker", "connection errors", "exact budget", "runs"],
        [[row[k] for k in keys] for row in summary],
    )
    save_result(
        args.name,
        {
            "settings": {
                "workers": args.workers,
                "n_trials": args.n_trials,
                "repeats": args.repeats,
                "max_connections": MAX_CONNECTIONS,
                "heartbeat_interval_s": 1,
                "objective": f"{STEPS} reports, {STEP_SECONDS * 1000:.0f} ms apart",
                "sample_interval_s": 0.02,
            },
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
