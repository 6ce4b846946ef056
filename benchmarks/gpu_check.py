"""GPU check: the project's CUDA path end to end, and the figures a GPU sweep depends on, in one short run.

Run on a CUDA machine (``benchmarks/gpu_check.sh`` installs carried wheels first); without a GPU it runs the
same phases as a small CPU smoke run (``--cpu-smoke``, automatic when CUDA is missing) so the script is known
to work before the one GPU run. Results go to ``<out>/gpu.json`` after every phase (a run cut short still
leaves the finished phases). Phases, in order of importance (each skipped when the time budget is spent):

1. ``data``: procedural demo datasets written on the machine (small images; 40 persons at 384x512 for B1).
2. ``smoke_sweep``: a 3-trial sweep (``benchmarks/sweeps/gpu_smoke.py``) through the project's worker loop
   (``workers.run_worker``) on SQLite, in this process, with the GPU memory capped
   (``torch.cuda.set_per_process_memory_fraction``) so that trial #1 (batch 4096) runs out of memory:
   it must end PRUNED with reason "oom" and trial #2 must then complete. A global forward hook records the
   first convolution's input memory format and output dtype (bf16 autocast + channels_last really used);
   ``torch.cuda.memory_allocated()`` is recorded before the first trial and before every later trial (i.e.
   after the previous one returned), without any collection in between, and again after ``gc.collect()``.
3. ``loader``: ``BatchLoader(device="cuda")`` batches equal the CPU ones (2 shuffled epochs).
4. ``training``: training images/s of efficientnet_b0 and legacy_xception at 512x384 (HxW) with AMP and
   channels_last, pretrained=False, through the project's own epoch loop (``train._setup`` +
   ``train._train_epoch``) with (a) the real ``BatchLoader`` and (b) the same batches already resident on the
   GPU. Share of time the GPU waits for input = time the training loop spends blocked in the loader's
   ``next()`` (the loop synchronises every step, so the GPU is idle then) / epoch time; also
   ``1 - pipeline / resident`` images/s. Plus efficientnet_b0 with ``cudnn.benchmark`` on.
5. ``b1_cuda``: benchmark B1 (``b1_input_pipeline.run_b1``) with the batches delivered to the GPU.
6. ``concurrency``: trial throughput of ``launch`` with 1 worker vs 4 workers on one GPU
   (``benchmarks/sweeps/gpu_concurrency.py``), from the trials' start/complete times.

    python benchmarks/gpu_check.py --out /tmp/gpu            # CPU smoke run here
    bash benchmarks/gpu_check.sh                               # on the GPU machine (OUT set by the device tool)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import REPO, machine_info, median  # noqa: E402

MiB = 2**20


class Check:
    """Collects phase results into one JSON file, written after every phase."""

    def __init__(self, out: Path, budget_s: float, cpu_smoke: bool):
        self.out = out
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.result: dict[str, Any] = {
            "benchmark": "gpu",
            "cpu_smoke": cpu_smoke,
            "machine": machine_info(),
            "budget_s": budget_s,
            "phases": {},
        }
        out.mkdir(parents=True, exist_ok=True)
        self.save()

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.started, 1)
        path = self.out / "gpu.json"
        tmp = path.with_name("gpu.json.tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def phase(self, name: str, fn, need_s: float, *args, **kwargs) -> Any:
        if self.left() < need_s:
            self.result["phases"][name] = {"ok": False, "skipped": f"{self.left():.0f} s left, needs ~{need_s:.0f} s"}
            print(f"== {name}: skipped ({self.left():.0f} s left)", flush=True)
            self.save()
            return None
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        t0 = time.monotonic()
        try:
            value = fn(*args, **kwargs)
            entry = {"ok": True, **(value if isinstance(value, dict) else {})}
        except Exception as err:  # noqa: BLE001 - recorded, the next phase still runs
            traceback.print_exc()
            entry = {"ok": False, "error": f"{type(err).__name__}: {err}"[:2000]}
            value = None
        entry["seconds"] = round(time.monotonic() - t0, 1)
        self.result["phases"][name] = entry
        self.save()
        print(f"== {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s", flush=True)
        print(json.dumps(entry, default=str)[:1500], flush=True)
        return value


# --- 1. data ------------------------------------------------------------------------------------------


def make_data(work: Path, small: dict, big: dict | None) -> dict:
    from maskcls_hpo.demo import write_demo_dataset

    out = {}
    for key, spec in (("small", small), ("real_size", big)):
        if spec is None:
            continue
        t0 = time.perf_counter()
        s = write_demo_dataset(work / key, persons=spec["persons"], size=spec["size"], seed=0, progress=False)
        out[key] = {
            "dir": str(work / key),
            "persons": s.persons,
            "train_images": s.train_images,
            "size_wh": list(s.size),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return out


# --- 2. smoke sweep -----------------------------------------------------------------------------------


class ConvProbe:
    """Global forward hook: per trial, the first few Conv2d calls' input layout and output dtype."""

    def __init__(self) -> None:
        self.trial: int | None = None
        self.seen: dict[int, list[dict]] = {}
        self.calls: dict[int, int] = {}
        self.handle = torch.nn.modules.module.register_module_forward_hook(self.hook)

    def hook(self, module, args, output) -> None:
        if self.trial is None or not isinstance(module, torch.nn.Conv2d) or not args:
            return
        self.calls[self.trial] = self.calls.get(self.trial, 0) + 1
        rows = self.seen.setdefault(self.trial, [])
        if len(rows) < 3 and torch.is_tensor(args[0]) and torch.is_tensor(output):
            x = args[0]
            rows.append(
                {
                    "training": module.training,
                    "input_shape": list(x.shape),
                    "input_channels_last": bool(
                        x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
                    ),
                    "input_dtype": str(x.dtype).removeprefix("torch."),
                    "output_dtype": str(output.dtype).removeprefix("torch."),
                    "device": str(x.device),
                    "autocast": torch.is_autocast_enabled(x.device.type) if x.is_cuda else False,
                }
            )

    def close(self) -> None:
        self.handle.remove()


def smoke_sweep(work: Path, data_dir: str, on_gpu: bool, cap_bytes: int) -> dict:
    import optuna

    from maskcls_hpo.hpo.attrs import TrialAttrs
    from maskcls_hpo.hpo.launch import prepare_study
    from maskcls_hpo.hpo.store import HeartbeatSettings, open_storage
    from maskcls_hpo.hpo.trial import load_sweep, make_objective
    from maskcls_hpo.hpo.workers import RunOptions, WorkerSettings, run_worker

    sweep = load_sweep(HERE / "sweeps" / "gpu_smoke.py")
    url = f"sqlite:///{work / 'smoke.db'}"
    name = "gpu-smoke"
    overrides = {"data_dir": data_dir, "cache_dir": str(work / "cache"), "device": "cuda" if on_gpu else "cpu"}
    storage = open_storage(url, HeartbeatSettings())
    prepare_study(sweep, storage, name, n_trials=3)
    if on_gpu:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(cap_bytes / total)
    probe = ConvProbe()
    memory: list[dict] = []

    def snapshot(label: str) -> dict:
        row = {"when": label}
        if on_gpu:
            row["allocated"] = torch.cuda.memory_allocated()
            row["reserved"] = torch.cuda.memory_reserved()
            gc.collect()
            row["allocated_after_gc"] = torch.cuda.memory_allocated()
        return row

    inner = make_objective(sweep, checkpoint_root=work / "ckpt" / name, overrides=overrides, worker="gpu-check")
    if on_gpu:  # warm up cuBLAS/cuDNN (their workspaces stay allocated for the process's life) before the baseline
        conv = torch.nn.Conv2d(3, 8, 3).cuda().to(memory_format=torch.channels_last)
        lin = torch.nn.Linear(64, 64).cuda()  # backward runs on autograd's device thread: its own cuBLAS handle
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = conv(torch.randn(2, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last))
            z = lin(torch.randn(8, 64, device="cuda"))
        (y.float().sum() + z.float().sum()).backward()
        torch.cuda.synchronize()
        del conv, lin, y, z
    baseline = snapshot("before trial 0")
    memory.append(baseline)

    def objective(trial: optuna.Trial) -> float:
        if trial.number > 0:
            memory.append(snapshot(f"before trial {trial.number} (after trial {trial.number - 1})"))
        probe.trial = trial.number
        try:
            return inner(trial)
        finally:
            probe.trial = None

    settings = WorkerSettings(
        sweep_path=sweep.path,
        storage_url=url,
        study_name=name,
        n_trials=3,
        options=RunOptions(overrides=overrides, checkpoints=work / "ckpt", poll_interval=0.2),
    )
    try:
        report = run_worker(settings, sweep=sweep, objective=objective)
    finally:
        probe.close()
        if on_gpu:
            torch.cuda.set_per_process_memory_fraction(1.0)
    memory.append(snapshot("after the worker loop"))
    study = optuna.load_study(study_name=name, storage=storage)
    trials = []
    for t in study.get_trials(deepcopy=False):
        metrics_file = work / "ckpt" / name / f"trial_{t.number:05d}" / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "reason": t.user_attrs.get(TrialAttrs.REASON),
                "device": t.user_attrs.get(TrialAttrs.DEVICE),
                "peak_memory_bytes": t.user_attrs.get(TrialAttrs.PEAK_MEMORY),
                "images_per_second": t.user_attrs.get(TrialAttrs.IMAGES_PER_SECOND),
                "metrics_amp": metrics.get("amp"),
                "metrics_channels_last": metrics.get("channels_last"),
                "conv_calls": probe.calls.get(t.number, 0),
                "first_convs": probe.seen.get(t.number, []),
            }
        )
    by_number = {t["number"]: t for t in trials}
    base = baseline.get("allocated", 0)
    checks = {
        "3 trials finished": len(trials) == 3 and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
        "trial 0 complete": by_number.get(0, {}).get("state") == "COMPLETE",
        "trial 2 complete after the OOM trial": by_number.get(2, {}).get("state") == "COMPLETE",
    }
    if on_gpu:
        t0 = by_number.get(0, {})
        convs = [c for c in t0.get("first_convs", []) if c["training"]]
        checks.update(
            {
                "trial 1 pruned with reason oom": by_number.get(1, {}).get("state") == "PRUNED"
                and by_number.get(1, {}).get("reason") == "oom",
                "bf16 autocast used (conv output bfloat16)": bool(convs) and convs[0]["output_dtype"] == "bfloat16",
                "channels_last input to the first conv": bool(convs) and convs[0]["input_channels_last"],
                "on cuda": bool(convs) and convs[0]["device"].startswith("cuda"),
                "metrics.json says amp bfloat16 + channels_last": t0.get("metrics_amp") == "bfloat16"
                and t0.get("metrics_channels_last") is True,
                "memory back to the baseline (+1 MiB) after every trial, no gc": all(
                    m["allocated"] <= base + 1 * MiB for m in memory[1:]
                ),
                "memory back to the baseline (+1 MiB) after every trial, after gc": all(
                    m["allocated_after_gc"] <= base + 1 * MiB for m in memory[1:]
                ),
            }
        )
    return {
        "report": {
            "complete": report.complete,
            "pruned": report.pruned,
            "failed": report.failed,
            "stop_reason": report.stop_reason,
        },
        "memory_cap_bytes": cap_bytes if on_gpu else None,
        "memory": memory,
        "trials": trials,
        "checks": checks,
        "all_checks_pass": all(checks.values()),
    }


# --- 3. loader equality -------------------------------------------------------------------------------


def loader_equal(data_dir: str, work: Path, size: tuple[int, int], device: str) -> dict:
    from maskcls_hpo.cache import BatchLoader, build_cache
    from maskcls_hpo.data import load_train

    samples = load_train(data_dir, verify=False)
    cache = build_cache(samples["path"].tolist(), size=size, cache_dir=work / "cache", progress=False)
    labels = samples["label"].to_numpy()
    idx = np.arange(len(samples))
    batches = 0
    equal = True
    for epoch in (1, 2):
        a = BatchLoader(cache.images, labels, idx, 32, shuffle=True, seed=7, device="cpu")
        b = BatchLoader(cache.images, labels, idx, 32, shuffle=True, seed=7, device=device)
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            batches += 1
            equal &= xb.device.type == torch.device(device).type
            equal &= torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())
    return {"device": device, "batches_compared": batches, "equal": bool(equal), "prefetch": b.prefetch}


# --- 4. training images/s -----------------------------------------------------------------------------


class TimedLoader:
    """Wraps a BatchLoader: counts the seconds the training loop spends blocked in ``next()``."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.indices = loader.indices
        self.wait_s = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.wait_s = 0.0
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.wait_s += time.perf_counter() - t0
                return
            self.wait_s += time.perf_counter() - t0
            yield item


class ResidentLoader:
    """The same batches, already on the device: training with no input pipeline at all."""

    def __init__(self, batches, indices) -> None:
        self.batches, self.indices = batches, indices

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def _epoch_without_step_sync(T, run, batches) -> float:
    """``train._train_epoch`` on resident batches minus its per-step ``isfinite(loss)`` check (a host sync):
    what the loop would reach if the check ran once per epoch. Returns images/s."""
    run.model.train()
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    started = time.perf_counter()
    for images, labels in batches:
        x = T._prepare_batch(run, images, train=True)
        with T._autocast(run):
            loss = run.loss_fn(run.model(x), labels)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        total += loss.detach() * len(labels)
        seen += len(labels)
    float(total)  # one sync at the end, as the epoch's loss is read
    return seen / (time.perf_counter() - started)


def training_speed(
    model: str,
    batch_size: int,
    data_dir: str,
    work: Path,
    size: tuple[int, int],
    device: str,
    epochs: int,
    cudnn_benchmark: bool = False,
) -> dict:
    from maskcls_hpo import train as T
    from maskcls_hpo.config import TrainConfig

    config = TrainConfig(
        model=model,
        pretrained=False,
        image_size=size,
        batch_size=batch_size,
        epochs=100,
        device=device,
        amp=True,
        channels_last=True,
        data_dir=data_dir,
        cache_dir=str(work / "cache"),
        val_ratio=0.2,
        augment=True,
    )
    on_gpu = device == "cuda"
    old_bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        run = T._setup(config, None, None, False)
        real = run.train_loader
        timed = TimedLoader(real)
        run.train_loader = timed
        pipe = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            _, ips = T._train_epoch(run, epoch)
            seconds = time.perf_counter() - t0
            pipe.append(
                {
                    "epoch": epoch,
                    "images_per_second": round(ips, 1),
                    "seconds": round(seconds, 3),
                    "input_wait_s": round(timed.wait_s, 4),
                    "input_wait_share": round(timed.wait_s / seconds, 4),
                }
            )
        resident_batches = [(x.clone(), y.clone()) for x, y in real]
        run.train_loader = ResidentLoader(resident_batches, real.indices)
        res = []
        for epoch in range(epochs + 1, epochs + 1 + max(2, epochs - 1)):
            _, ips = T._train_epoch(run, epoch)
            res.append(round(ips, 1))
        nosync = [round(_epoch_without_step_sync(T, run, resident_batches), 1) for _ in range(2)]
        peak = torch.cuda.max_memory_allocated() if on_gpu else None
        pipe_ips = median([p["images_per_second"] for p in pipe[1:]])
        res_ips = median(res[1:])
        out = {
            "model": model,
            "image_size_hw": list(size),
            "batch_size": batch_size,
            "amp": str(run.amp_dtype).removeprefix("torch.") if run.amp_dtype is not None else None,
            "channels_last": run.channels_last,
            "cudnn_benchmark": cudnn_benchmark,
            "train_images_per_epoch": len(real.indices),
            "pipeline_epochs": pipe,
            "resident_images_per_second": res,
            "images_per_second": pipe_ips,
            "resident_median_images_per_second": res_ips,
            "resident_no_step_sync_images_per_second": nosync,
            "input_wait_share": median([p["input_wait_share"] for p in pipe[1:]]),
            "slowdown_vs_resident": round(max(0.0, 1 - pipe_ips / res_ips), 4) if res_ips else None,
            "peak_memory_gib": round(peak / 2**30, 2) if peak else None,
        }
        del run, resident_batches, real, timed
    finally:
        torch.backends.cudnn.benchmark = old_bench
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return out


# --- 6. concurrency -----------------------------------------------------------------------------------


def concurrency(
    work: Path,
    data_dir: str,
    gpus: list[str] | None,
    plan: list[tuple[int, int]],
    deadline: float,
    sweep_file: str = "gpu_concurrency.py",
) -> dict:
    import optuna

    from maskcls_hpo.hpo.launch import prepare_study
    from maskcls_hpo.hpo.store import HeartbeatSettings, count_trials, open_storage
    from maskcls_hpo.hpo.trial import load_sweep
    from maskcls_hpo.hpo.workers import LocalWorkers, RunOptions, WorkerSettings, prepare_data

    sweep = load_sweep(HERE / "sweeps" / sweep_file)
    config = sweep.build_config({}, {"data_dir": data_dir})
    prepare_data(config)  # the cache is built once, before any worker (as `launch` does)
    rows = []
    for workers, n_trials in plan:
        left = deadline - time.monotonic()
        if left < 30:
            rows.append({"workers": workers, "skipped": f"{left:.0f} s left"})
            continue
        url = f"sqlite:///{work / f'conc{workers}.db'}"
        name = f"conc-{workers}"
        storage = open_storage(url, HeartbeatSettings())
        prepare_study(sweep, storage, name, n_trials)
        t0 = time.monotonic()
        settings = WorkerSettings(
            sweep_path=sweep.path,
            storage_url=url,
            study_name=name,
            n_trials=n_trials,
            options=RunOptions(
                overrides={"data_dir": data_dir},
                timeout=max(10.0, left - 25),
                checkpoints=work / "ckpt",
                logs=work / "logs",
                poll_interval=0.5,
            ),
        )
        with LocalWorkers(settings, workers, gpus=gpus) as pool:
            codes = pool.wait(poll_interval=0.5)
        wall = time.monotonic() - t0
        study = optuna.load_study(study_name=name, storage=storage)
        counts = count_trials(storage, study._study_id)
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete]
        row = {
            "workers": workers,
            "n_trials": n_trials,
            "finished": counts.finished,
            "failed": counts.failed,
            "exit_codes": codes,
            "wall_s": round(wall, 1),
        }
        if done:
            first = min(t.datetime_start for t in done)
            last = max(t.datetime_complete for t in done)
            span = (last - first).total_seconds()
            per_trial = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
            row.update(
                {
                    "span_s": round(span, 1),
                    "trials_per_minute": round(60 * len(done) / span, 2) if span else None,
                    "median_trial_s": round(median(per_trial), 2),
                }
            )
        rows.append(row)
        print(f"  {workers} worker(s): {row}", flush=True)
    out: dict[str, Any] = {"sweep": f"benchmarks/sweeps/{sweep_file}", "runs": rows}
    tpm = {r["workers"]: r.get("trials_per_minute") for r in rows}
    if len(plan) == 2 and all(tpm.get(w) for w, _ in plan):
        out["throughput_ratio"] = round(tpm[plan[1][0]] / tpm[plan[0][0]], 2)
    return out


# --- main ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "storage" / "gpu_check")))
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting phases after this many seconds")
    ap.add_argument("--cpu-smoke", action="store_true", help="small CPU run (automatic without CUDA)")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip")
    args = ap.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu_smoke
    device = "cuda" if on_gpu else "cpu"
    skip = set(filter(None, args.skip.split(",")))
    if not on_gpu:
        torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.chdir(work)  # storage/cache, storage/logs of spawned workers stay in the scratch folder
    check = Check(args.out, args.budget_s, cpu_smoke=not on_gpu)
    print(json.dumps(check.result["machine"], default=str), flush=True)
    if on_gpu:
        small, big, size = {"persons": 240, "size": (96, 128)}, {"persons": 40, "size": (384, 512)}, (512, 384)
        models = [("efficientnet_b0", 64), ("legacy_xception", 32)]
        epochs, cap, conc_plan, gpus = 4, 1 * 2**30, [(1, 6), (4, 12)], ["0"]
    else:
        small, big, size = {"persons": 12, "size": (48, 64)}, {"persons": 6, "size": (96, 128)}, (64, 48)
        models = [("efficientnet_b0", 16), ("legacy_xception", 16)]
        epochs, cap, conc_plan, gpus = 2, 0, [(1, 1), (2, 2)], None

    data = check.phase("data", make_data, 20, work / "data", small, None if "b1_cuda" in skip else big) or {}
    small_dir = data.get("small", {}).get("dir")
    if small_dir is None:
        return
    if "smoke_sweep" not in skip:
        check.phase("smoke_sweep", smoke_sweep, 40, work, small_dir, on_gpu, cap)
    if "loader" not in skip:
        check.phase("loader", loader_equal, 10, small_dir, work, size, device)
    for model, batch in models:
        if "training" not in skip:
            check.phase(f"training_{model}", training_speed, 35, model, batch, small_dir, work, size, device, epochs)
    if on_gpu and "training" not in skip:
        check.phase(
            "training_efficientnet_b0_cudnn_benchmark",
            training_speed,
            30,
            "efficientnet_b0",
            64,
            small_dir,
            work,
            size,
            device,
            epochs,
            cudnn_benchmark=True,
        )
    if "b1_cuda" not in skip and "real_size" in data:
        from b1_input_pipeline import run_b1

        sizes = [(512, 384), (299, 299)] if on_gpu else [(64, 48)]
        check.phase(
            "b1_cuda" if on_gpu else "b1_cpu_smoke",
            run_b1,
            40,
            Path(data["real_size"]["dir"]),
            sizes,
            3 if on_gpu else 2,
            32,
            2,
            device,
        )
    if "concurrency" not in skip:
        deadline = time.monotonic() + check.left()
        check.phase(
            "concurrency",
            concurrency,
            60,
            work,
            small_dir,
            gpus,
            conc_plan,
            deadline,
            "gpu_concurrency.py" if on_gpu else "gpu_smoke.py",
        )
    check.result["finished"] = True
    check.save()
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out / 'gpu.json'} in {time.monotonic() - check.started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
