"""The sweep service on Optuna, in layers (lower never imports higher; import-linter checks it):

- :mod:`~maskcls_hpo.hpo.store`: where a study lives and how it is read;
- :mod:`~maskcls_hpo.hpo.trial`: what one trial is (sweep file, confirm plan, objective, what a trial writes);
- :mod:`~maskcls_hpo.hpo.workers`: who runs trials (options, worker loop, watchdog, pre-flight, progress,
  backends);
- the two use cases side by side: :mod:`~maskcls_hpo.hpo.launch` (a sweep) and :mod:`~maskcls_hpo.hpo.select`
  (confirm, ranking, export, finalize); neither imports the other.

Below them all: ``_optuna`` (every private Optuna name), ``attrs`` (attribute names), ``signals``, ``logs``.
Names are resolved on first use, so ``import maskcls_hpo.hpo`` loads no Optuna.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "run_sweep",
    "SweepResult",
    "open_study",
    "run_worker",
    "WorkerSettings",
    "run_confirm",
    "confirm",
    "export_best",
    "finalize",
]

_LAZY = {
    "run_sweep": "maskcls_hpo.hpo.launch",
    "SweepResult": "maskcls_hpo.hpo.launch",
    "open_study": "maskcls_hpo.hpo.store",
    "run_worker": "maskcls_hpo.hpo.workers",
    "WorkerSettings": "maskcls_hpo.hpo.workers",
    "run_confirm": "maskcls_hpo.hpo.select",
    "confirm": "maskcls_hpo.hpo.select",
    "export_best": "maskcls_hpo.hpo.select",
    "finalize": "maskcls_hpo.hpo.select",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'maskcls_hpo.hpo' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
