"""maskcls-hpo: Optuna hyperparameter sweeps for the 18-class face-mask classification task.

The Python API (what the `maskcls-hpo` verbs call)::

    import maskcls_hpo as m
    m.write_demo_dataset("storage/demo", persons=60)                   # a dataset in the competition layout
    result = m.run_sweep("sweeps/smoke.py", 4, storage="storage/nb.db", data_dir="storage/demo")
    m.export_best("best.yaml", storage="storage/nb.db", study_name="smoke")
    run = m.train(m.load_config("best.yaml"), out_dir="runs/best")
    m.predict(["runs/best/model.pt"], "storage/demo", out="submission.csv")
    m.score("submission.csv", "storage/demo/eval/answers.csv")

Names are resolved on first use, so ``import maskcls_hpo`` loads neither torch, timm nor Optuna.
Every error a user can fix is a :class:`MaskclsError`.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

from maskcls_hpo.errors import MaskclsError

try:
    __version__ = _version("maskcls-hpo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "MaskclsError",
    "TrainConfig",
    "load_config",
    "train",
    "run_sweep",
    "export_best",
    "open_study",
    "confirm",
    "finalize",
    "predict",
    "score",
    "write_demo_dataset",
]

_LAZY = {
    "TrainConfig": "maskcls_hpo.config",
    "load_config": "maskcls_hpo.config",
    "train": "maskcls_hpo.train",
    "run_sweep": "maskcls_hpo.hpo.launch",
    "export_best": "maskcls_hpo.hpo.select",
    "open_study": "maskcls_hpo.hpo.store",
    "confirm": "maskcls_hpo.hpo.select",
    "finalize": "maskcls_hpo.hpo.select",
    "predict": "maskcls_hpo.predict",
    "score": "maskcls_hpo.scoring",
    "write_demo_dataset": "maskcls_hpo.demo",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'maskcls_hpo' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
