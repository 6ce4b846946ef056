"""B3 timeline: where one ``maskcls-hpo launch`` (1 worker, 1 trial of ``sweeps/smoke.py``) spends its wall time.

Runs the launch as a fresh process (output to a file, so the plain progress lines are written) with a
``sitecustomize`` module put first on ``PYTHONPATH``: in the launcher and in the worker process it records the
wall-clock time (``time.time()``) of a few events into a JSON-lines file, by wrapping functions right after
their module is imported (the code itself is not changed, so ``--code`` can point at an older checkout, e.g.
``git archive <commit> maskcls_hpo | tar -x -C /tmp/before``). Times are seconds since the benchmark started the
launch process. The image cache is built once before timing (both the old and the new code find it ready).

    flock /tmp/maskcls-bench.lock .venv/bin/python benchmarks/b3_timeline.py [--code /tmp/before] [--repeats 3]

Events (those a version of the code does not have are left out): launcher: interpreter up, sweep loaded,
storage opened, workers spawned (standby), data check (``prepare_data``: the file scan, the image check, the
cache lookup), study prepared, workers told to start, first progress line, workers exited, exit; worker:
interpreter up, torch / timm imported, standby imports done / told to start (a standby worker), ``check_join``
(the worker's pre-flight), training run start / end, exit (atexit; skipped by a worker that ends with
``os._exit``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, demo_dataset, machine_info, median, save_result  # noqa: E402

# The hook: installed as sitecustomize.py in a scratch folder put first on PYTHONPATH of the launch process.
HOOK = r"""
import atexit, importlib.abc, json, os, sys, time

_FILE = os.environ.get("B3_TIMELINE_FILE")
_ROLE = "launcher" if "launch" in sys.argv[1:2] else "worker"  # `maskcls-hpo launch ...`; workers run with -m


def mark(event):
    if _FILE:
        with open(_FILE, "a") as fh:
            fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), "role": _ROLE, "event": event}) + "\n")


mark("interpreter up")
atexit.register(mark, "exit (atexit)")

if "--standby" in sys.argv:  # a standby worker reads its settings from stdin once its imports are done

    class _Stdin:
        def __init__(self, inner):
            self._inner = inner

        def readline(self, *args):
            mark("standby: imports done, waiting")
            line = self._inner.readline(*args)
            mark("standby: told to start")
            return line

        def __getattr__(self, name):
            return getattr(self._inner, name)

    sys.stdin = _Stdin(sys.stdin)


def _wrap(owner, attr, label, end_only=False):
    fn = getattr(owner, attr, None)
    if fn is None or getattr(fn, "_b3", False):
        return

    def wrapper(*args, **kwargs):
        if not end_only:
            mark(label + " start")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(label + " end")

    wrapper._b3 = True
    wrapper.__wrapped__ = fn
    wrapper.__doc__ = fn.__doc__
    setattr(owner, attr, wrapper)


def _after(name, module):
    if name in ("torch", "timm"):
        mark(name + " imported")
    elif name == "maskcls_hpo.hpo.launch":
        for attr, label in (("load_sweep", "sweep load"), ("open_storage", "storage open"),
                            ("prepare_data", "data check"), ("prepare_study", "study prepare"),
                            ("check_join", "check_join")):
            _wrap(module, attr, label)
    elif name == "maskcls_hpo.hpo.workers":
        cls = module.LocalWorkers
        for attr, label in (("standby", "workers spawn (standby)"), ("start", "workers start"),
                            ("wait", "workers wait")):
            _wrap(cls, attr, label)
    elif name == "maskcls_hpo.data":
        _wrap(module, "load_train", "file scan + image check")
    elif name == "maskcls_hpo.cache":
        _wrap(module, "build_cache", "cache build/lookup")
    elif name == "maskcls_hpo.train":
        _wrap(module, "train", "training run")
    elif name == "maskcls_hpo.hpo.progress":
        cls = module.ProgressLines
        call = cls.__call__

        def first_line(self, p, _call=call):
            lines = _call(self, p)
            if lines and not getattr(self, "_b3_said", False):
                self._b3_said = True
                mark("first progress line: " + lines[0][:40])
            return lines

        cls.__call__ = first_line


_WATCH = {"torch", "timm", "maskcls_hpo.hpo.launch", "maskcls_hpo.hpo.workers", "maskcls_hpo.data",
          "maskcls_hpo.cache", "maskcls_hpo.train", "maskcls_hpo.hpo.progress"}


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _WATCH:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                run = spec.loader.exec_module

                def exec_module(module, _run=run, _name=name):
                    _run(module)
                    _after(_name, module)

                spec.loader.exec_module = exec_module
                return spec
        return None


sys.meta_path.insert(0, _Hook())
"""


def run_once(cli: str, code: Path, sweep: Path, data_dir: Path, work: Path, i: int, threads: int) -> dict:
    """One launch; its events as (seconds since the process was started, role, event), and the trial's times."""
    import optuna

    hook_dir = work / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK, encoding="utf-8")
    events_file = work / f"events-{i}.jsonl"
    db = work / f"tl-{i}.db"
    env = {
        **os.environ,
        "PYTHONPATH": f"{hook_dir}{os.pathsep}{code}",
        "B3_TIMELINE_FILE": str(events_file),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "COLUMNS": "120",
    }
    argv = [cli, "launch", str(sweep), "--n-trials", "1", "--workers", "1", "--storage", f"sqlite:///{db}"]
    argv += ["--checkpoints", str(work / f"ckpt-{i}"), "--data-dir", str(data_dir), "--study", f"tl-{i}"]
    out = work / f"launch-{i}.log"
    t0 = time.time()
    with open(out, "wb") as fh:
        code_rc = subprocess.run(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    t_end = time.time()
    if code_rc != 0:
        raise RuntimeError(f"launch failed ({code_rc}): {out.read_text()[-2000:]}")
    rows = [json.loads(line) for line in events_file.read_text().splitlines()]
    events = [{"s": round(r["t"] - t0, 3), "role": r["role"], "event": r["event"]} for r in rows]
    trial = optuna.load_study(study_name=f"tl-{i}", storage=f"sqlite:///{db}").trials[0]
    # NOTE FrozenTrial times are naive local times
    stored = (("trial start (stored)", trial.datetime_start), ("trial end (stored)", trial.datetime_complete))
    for label, when in stored:
        events.append({"s": round(when.timestamp() - t0, 3), "role": "study", "event": label})
    events.append({"s": round(t_end - t0, 3), "role": "launcher", "event": "process ended"})
    events.sort(key=lambda e: e["s"])
    return {"process_s": round(t_end - t0, 3), "events": events, "output": out.read_text()[-3000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", type=Path, default=REPO, help="folder holding the maskcls_hpo package to time")
    ap.add_argument("--data", type=Path, default=REPO / "storage" / "demo")
    ap.add_argument("--persons", type=int, default=300)
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "smoke.py")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="b3_timeline")
    args = ap.parse_args()
    demo_dataset(args.data, args.persons, (96, 128))
    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.hpo.workers import prepare_data

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        prepare_data(load_sweep(args.sweep).build_config({}, {"data_dir": str(args.data)}))
    finally:
        os.chdir(cwd)
    cli = str(Path(sys.executable).with_name("maskcls-hpo"))
    work = Path(tempfile.mkdtemp(prefix="b3tl-"))
    runs = []
    try:
        for i in range(args.repeats):
            runs.append(run_once(cli, args.code.resolve(), args.sweep, args.data, work, i, args.threads))
            print(f"  #{i}: {runs[-1]['process_s']} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for i in range(args.repeats):
            shutil.rmtree(REPO / "storage" / "logs" / f"tl-{i}", ignore_errors=True)
    # median time of each (role, event) over the runs that have it
    keys: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        seen = set()
        for e in run["events"]:
            key = (e["role"], e["event"])
            if key in seen:  # the first occurrence of an event in a run
                continue
            seen.add(key)
            keys.setdefault(key, []).append(e["s"])
    table = sorted(((median(v), role, event) for (role, event), v in keys.items()), key=lambda r: r[0])
    print(f"\nB3 timeline: median seconds since the launch process started ({len(runs)} runs, code {args.code})")
    for s, role, event in table:
        print(f"  {s:7.2f}  {role:9s} {event}")
    save_result(
        args.name,
        {
            "settings": {"code": str(args.code), "sweep": str(args.sweep), "repeats": args.repeats},
            "machine": machine_info(),
            "median": [{"s": round(s, 3), "role": role, "event": event} for s, role, event in table],
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
