"""`launch`: check everything once, build the data cache once, prepare the study, run workers, show progress.

Order (each step refuses with one clear line before any trial starts):
1. load the sweep file (syntax, missing objects, config keys: case C3's first half);
2. check the dataset (every problem by path: C9) and the pretrained weights (offline: C8);
3. build the decoded-image cache once, shared by every worker process;
4. open the storage (schema check: C5), create or resume the study, compare search spaces (C3),
   enqueue the sweep's known-good settings;
5. start K workers and show live progress until the study holds --n-trials finished trials (C1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["LaunchPlan", "run_launch", "prepare_data", "progress_table"]


@dataclass
class LaunchPlan:
    """Options of one `launch` (see `maskcls-hpo launch --help`)."""

    sweep_file: Path
    n_trials: int
    storage_url: str
    workers: int = 1
    gpus: list[str] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    study_name: str | None = None
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    checkpoints: Path | None = None  # None: storage_folder(storage_url, "checkpoints")


def prepare_data(config: Any) -> dict[str, Any]:
    """Check the dataset (every image verified) and the pretrained weights, build the cache once.

    Runs in the launching process before any worker starts, so a bad dataset or missing weights is one
    message instead of a failure in every trial, and every worker finds the cache ready.

    Returns:
        {"data_fingerprint": the cache fingerprint, "dataset": {"data_dir", "persons", "images"}}

    Raises:
        DataError: every problem by path (case C9). PretrainedWeightsError: naming the model (case C8).
    """
    from maskcls_hpo.cache import build_cache
    from maskcls_hpo.data import load_train
    from maskcls_hpo.models import build_model, check_pretrained_available, resolve_preprocessing

    check_pretrained_available(config)
    samples = load_train(config.data_dir, age_bins=config.age_bins, corrections=config.corrections)
    backbone = build_model(config.model_copy(update={"pretrained": False}))
    image_size, _, _ = resolve_preprocessing(config, backbone)
    del backbone
    cache = build_cache(samples["path"].tolist(), size=image_size, cache_dir=config.cache_dir, progress=True,
                        interpolation=config.interpolation)
    return {
        "data_fingerprint": cache.fingerprint,
        "dataset": {
            "data_dir": str(Path(config.data_dir).resolve()),
            "persons": int(samples["person_id"].nunique()),
            "images": int(len(samples)),
        },
    }


def progress_table(study_name: str, n_trials: int, counts: Any, best: float | None, running: list[tuple[int, int]],
                   elapsed: float) -> Table:
    """The live progress table: counts by state, best val macro F1, running trials' last epoch."""
    table = Table(title=f"study '{study_name}'  {elapsed:,.0f} s", show_header=True, header_style="bold")
    for col in ("finished", "complete", "pruned", "failed", "running", "best val macro F1"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{counts.finished}/{n_trials}", str(counts.complete), str(counts.pruned), str(counts.failed),
        str(counts.running), f"{best:.4f}" if best is not None else "-",
    )
    if running:
        table.caption = "running: " + ", ".join(f"#{n} epoch {e}" for n, e in running)
    return table


def _best_value(study: Any) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def _running_epochs(study: Any) -> list[tuple[int, int]]:
    from optuna.trial import TrialState

    return [(t.number, t.last_step or 0) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def run_launch(plan: LaunchPlan, console: Console, fail: Callable[[str], None]) -> int:
    """Carry out a launch; returns the process exit code (0 when the study reached its budget)."""
    from maskcls_hpo.config import ConfigError
    from maskcls_hpo.data import DataError
    from maskcls_hpo.models import PretrainedWeightsError
    from maskcls_hpo.signals import Interrupted
    from maskcls_hpo.storage import HeartbeatSettings, StorageError, display_url, open_storage, storage_folder
    from maskcls_hpo.sweep import SweepError, load_sweep
    from maskcls_hpo.workers import count_trials, launch, prepare_study

    try:
        sweep = load_sweep(plan.sweep_file)
        study_name = plan.study_name or sweep.name
        config = sweep.build_config({}, plan.overrides)
        heartbeat = HeartbeatSettings.from_env(plan.heartbeat_interval, plan.grace_period)
        storage = open_storage(plan.storage_url, heartbeat)
        # The search space is compared before the (slow) data preparation, so C3 refuses at once.
        import optuna

        existing = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        if study_name in existing:
            sweep.check_study_compatible(optuna.load_study(study_name=study_name, storage=storage))
        console.print(f"checking data in {config.data_dir} and building the image cache ...", highlight=False)
        meta = prepare_data(config)
        study = prepare_study(sweep, storage, study_name, plan.n_trials, study_attrs=meta)
    except (SweepError, StorageError, DataError, ConfigError, PretrainedWeightsError) as err:
        fail(str(err))
        return 1
    counts = count_trials(storage, study._study_id)
    console.print(
        f"study '{study_name}' on {display_url(plan.storage_url)}: {counts.finished} finished of {plan.n_trials}; "
        f"{plan.workers} worker(s)", highlight=False,
    )
    if counts.finished >= plan.n_trials:
        console.print(f"nothing to do: the study already holds {counts.finished} finished trials", highlight=False)
        return 0
    if plan.workers == 0:
        console.print(
            f"study '{study_name}' is ready; start workers with: maskcls-hpo worker {plan.sweep_file} --study "
            f"{study_name} (storage from --storage, or env MASKCLS_HPO_STORAGE)", highlight=False,
        )
        return 0
    started = time.monotonic()
    log_dir = storage_folder(plan.storage_url, "logs") / study_name
    checkpoints = plan.checkpoints or storage_folder(plan.storage_url, "checkpoints")
    with Live(console=console, refresh_per_second=2, transient=False) as live:

        def on_poll(st: Any, c: Any) -> None:
            live.update(progress_table(study_name, plan.n_trials, c, _best_value(st), _running_epochs(st),
                                       time.monotonic() - started))

        try:
            counts, codes = launch(
                sweep, plan.storage_url, study_name, plan.n_trials, workers=plan.workers, gpus=plan.gpus,
                data_dir=plan.overrides.get("data_dir"), timeout=plan.timeout, heartbeat=heartbeat,
                checkpoints=checkpoints, log_dir=log_dir, on_poll=on_poll,
            )
        except (KeyboardInterrupt, Interrupted):
            c = count_trials(storage, study._study_id)
            console.print(f"interrupted: {c.finished} finished, {c.running} still running", highlight=False)
            return 130
    console.print()
    console.print(
        f"{counts.finished} finished ({counts.complete} complete, {counts.pruned} pruned), {counts.failed} failed "
        f"in {time.monotonic() - started:,.0f} s; worker logs in {log_dir}", highlight=False,
    )
    best = _best_value(study)
    if best is not None:
        console.print(f"best val macro F1 {best:.4f} (trial {study.best_trial.number})", highlight=False)
    if counts.finished < plan.n_trials:
        bad = [i for i, c in enumerate(codes) if c != 0]
        tail = _log_tail(log_dir, bad)
        console.print(f"[red]the study did not reach {plan.n_trials} finished trials[/]; {tail}", highlight=False)
        return 1
    return 0


def _log_tail(log_dir: Path, workers: list[int]) -> str:
    """The last line of each failed worker's log (it says why the worker stopped)."""
    lines = []
    for i in workers:
        path = log_dir / f"worker-{i}.log"
        text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
        lines.append(text[-1].strip() if text else f"worker {i}: no log")
    return "; ".join(lines) or "see the worker logs"
