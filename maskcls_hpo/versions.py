"""Installed versions of the project and the libraries it stamps into exports and `--version`.

Read from the installed distributions' metadata (:mod:`importlib.metadata`), so asking for a version never
imports the library itself: `export` and `--version` stay free of torch and timm (docs/cli.md, "Storage and
study": read-only verbs import no torch).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTIONS", "package_version", "package_versions", "version_line"]

DISTRIBUTIONS = {
    "maskcls_hpo": "maskcls-hpo",
    "optuna": "optuna",
    "optuna_dashboard": "optuna-dashboard",
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "scikit_learn": "scikit-learn",
}
"""Key in the version stamp -> distribution name on PyPI."""


def package_version(distribution: str) -> str:
    """The installed version of `distribution` (e.g. ``"torch"`` -> ``"2.14.1+cu130"``), or ``"not installed"``."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    """{stamp key: version} for :data:`DISTRIBUTIONS` plus ``python`` (strings; no library is imported)."""
    found = {key: package_version(dist) for key, dist in DISTRIBUTIONS.items()}
    found["python"] = platform.python_version()
    return found


def version_line() -> str:
    """``maskcls-hpo 0.1.0 (optuna 5.0.0, optuna-dashboard 0.21.0, torch 2.14.1, ...; python 3.11.9)``."""
    v = package_versions()
    libs = ", ".join(f"{DISTRIBUTIONS[k]} {v[k]}" for k in DISTRIBUTIONS if k != "maskcls_hpo")
    return f"maskcls-hpo {v['maskcls_hpo']} ({libs}; python {v['python']})"
