"""Shared helpers for the benchmarks: machine info, medians, JSON results and side-by-side tables.

Every benchmark runs the project's path and a baseline in the same process run, on the same machine and the
same images, and stores one JSON file under ``benchmarks/results/`` with the machine it ran on
(:func:`machine_info`), the settings, every raw timing and the medians. Timings are wall-clock seconds from
``time.perf_counter``; the machine is shared, so the figures to quote are medians and ratios measured in one
run, never single timings.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "RESULTS",
    "machine_info",
    "median",
    "ratio",
    "save_result",
    "print_table",
    "Timer",
    "demo_dataset",
]

REPO = Path(__file__).resolve().parent.parent
"""The repository root."""

RESULTS = Path(__file__).resolve().parent / "results"
"""Where every benchmark writes ``<name>.json``."""


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - a missing optional package is reported as None
        return None
    return str(getattr(mod, "__version__", "?"))


def machine_info() -> dict[str, Any]:
    """What the figures were measured on.

    Returns:
        {"host", "platform", "python", "cpu_count" (os.cpu_count()), "cpus_available" (sched affinity),
        "load_average" (1, 5, 15 min at the call), "versions" {torch, torchvision, timm, optuna, numpy, PIL,
        sqlalchemy}, "cuda" (device name, capability, memory GiB, CUDA version) or None, "when" (UTC ISO)}.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count()
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpus_available": available,
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": {m: _version(m) for m in ("torch", "torchvision", "timm", "optuna", "numpy", "PIL", "sqlalchemy")},
        "cuda": None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["cuda"] = {
                "device": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "cuda_version": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
            }
    except ImportError:  # pragma: no cover
        pass
    return info


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (``statistics.median``); NaN when empty."""
    return float(statistics.median(values)) if len(values) else float("nan")


def ratio(a: float, b: float) -> float:
    """``a / b`` rounded to 3 significant decimals; NaN when ``b`` is 0."""
    return round(a / b, 3) if b else float("nan")


def save_result(name: str, payload: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Write ``payload`` (plus ``machine`` when missing) to ``<out_dir or RESULTS>/<name>.json``; returns the path."""
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, **payload}
    payload.setdefault("machine", machine_info())
    path = out / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a side-by-side table (rich) to stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for i, h in enumerate(headers):
        table.add_column(str(h), justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row))
    Console(width=160).print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, ``time.perf_counter``)."""

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def demo_dataset(out: str | Path, persons: int, size: tuple[int, int], faces: str | Path | None = None) -> Path:
    """A demo dataset in the competition layout at ``size`` = (W, H) pixels, written once and reused.

    Uses :func:`maskcls_hpo.demo.write_demo_dataset` (procedural faces, or UTKFace photos from ``faces``);
    an existing folder with a ``train/train.csv`` is reused as it is.
    """
    out = Path(out)
    if (out / "train" / "train.csv").is_file():
        return out
    from maskcls_hpo.demo import write_demo_dataset

    write_demo_dataset(out, persons=persons, size=size, seed=0, faces=faces, progress=False)
    return out
