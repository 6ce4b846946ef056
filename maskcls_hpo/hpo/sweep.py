"""Sweep files: plain Python that states the fixed config and the search space (Optuna define-by-run).

A sweep file defines:

``BASE_CONFIG`` (dict, required)
    The fixed part of the :class:`~maskcls_hpo.config.TrainConfig`.
``suggest(trial) -> dict`` (required)
    Calls ``trial.suggest_*`` and returns config overrides (keys of TrainConfig). Conditional parameters
    are fine (e.g. ``age_loss_weight`` only when ``head == "multi"``).
``make_sampler(seed: int)`` (optional, default ``TPESampler(seed=seed)``)
    Each worker process passes its own seed (sweep seed + worker index) so that parallel workers do not
    draw the same random start-up trials.
``make_pruner(config: TrainConfig)`` (optional, default ``MedianPruner(n_warmup_steps=1)``)
    Gets the base config, so Hyperband can use ``max_resource=config.epochs``.
``KNOWN_GOOD`` (list of param dicts, optional)
    Enqueued as the study's first trials (``enqueue_trial(skip_if_exists=True)``).
``SEED`` (int, optional, default 0)

A file that does not load (syntax error, missing object, bad config key) or whose search space differs
from the one stored in the study is refused with :class:`SweepError` before any trial starts (problem C3).
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from maskcls_hpo.config import ConfigError, TrainConfig, config_from_mapping
from maskcls_hpo.errors import SweepError

__all__ = ["Sweep", "SweepError", "load_sweep", "RecordingTrial", "describe_distribution"]


@dataclass
class Sweep:
    """A loaded sweep file.

    Attributes:
        path: the sweep file; name: its stem (the default study name).
        base_config: the validated fixed config.
        suggest: ``trial -> dict`` of config overrides.
        known_good: param dicts to enqueue first.
        seed: the sweep's base seed for samplers.
    """

    path: Path
    name: str
    base_config: TrainConfig
    suggest: Callable[[Any], dict[str, Any]]
    known_good: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    _make_sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None
    _make_pruner: Callable[[TrainConfig], optuna.pruners.BasePruner] | None = None

    def make_sampler(self, worker_index: int = 0) -> optuna.samplers.BaseSampler:
        """The sweep's sampler, seeded with ``seed + worker_index``."""
        seed = self.seed + worker_index
        if self._make_sampler is None:
            return optuna.samplers.TPESampler(seed=seed)
        return self._make_sampler(seed)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The sweep's pruner (default: ``MedianPruner(n_startup_trials=3, n_warmup_steps=1)``)."""
        if self._make_pruner is None:
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        return self._make_pruner(self.base_config)

    def build_config(self, params: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
        """base config + the trial's overrides + run-time overrides (data_dir, device, ...).

        Raises:
            SweepError: an override key that is not a TrainConfig key, or a bad value.
        """
        data = {**self.base_config.to_dict(), **params, **(overrides or {})}
        try:
            return config_from_mapping(data, source=f"{self.path} (base config + suggest())")
        except ConfigError as err:
            raise SweepError(str(err)) from None

    def search_space(self, max_runs: int = 64) -> dict[str, BaseDistribution]:
        """Distributions that `suggest` asks for, found by dry runs without training.

        Runs `suggest` on a :class:`RecordingTrial` for each KNOWN_GOOD entry and for the defaults, then
        once more for every other choice of every categorical parameter seen (so branches such as
        ``t_max`` under ``scheduler == "cosine"`` are found), at most `max_runs` times. Each run's config
        (base + overrides) is validated too.

        Raises:
            SweepError: `suggest` raised, returned a non-dict or a bad config key, or asked one name with
                two distributions.
        """
        space: dict[str, BaseDistribution] = {}
        queue: list[dict[str, Any]] = [*self.known_good, {}]
        seen: set[str] = set()
        runs = 0
        while queue and runs < max_runs:
            fixed = queue.pop(0)
            key = repr(sorted(fixed.items(), key=lambda kv: kv[0]))
            if key in seen:
                continue
            seen.add(key)
            runs += 1
            rec = RecordingTrial(fixed)
            params = self._call_suggest(rec)
            self.build_config(params)
            for name, dist in rec.distributions.items():
                if name in space and space[name] != dist:
                    raise SweepError(
                        f"{self.path}: parameter '{name}' is suggested with two distributions: "
                        f"{describe_distribution(space[name])} and {describe_distribution(dist)}"
                    )
                space[name] = dist
                if isinstance(dist, CategoricalDistribution):
                    for choice in dist.choices:
                        if choice != rec.params[name]:
                            queue.append({**rec.params, name: choice})
        return space

    def _call_suggest(self, trial: Any) -> dict[str, Any]:
        try:
            params = self.suggest(trial)
        except Exception as err:  # user code: report file and line
            where = _user_line(err, self.path)
            raise SweepError(f"{self.path}: suggest() raised {type(err).__name__}: {err}{where}") from None
        if not isinstance(params, dict):
            got = type(params).__name__
            raise SweepError(f"{self.path}: suggest(trial) must return a dict of config keys, got {got}")
        return params

    def check_study_compatible(self, study: optuna.Study) -> None:
        """Refuse a study whose stored distributions differ from this sweep's (problem C3).

        Compares every parameter the dry runs ask for with the distribution stored on the study's trials
        (any state). Equality is strict: a changed range, step, log flag or choice list is a different
        search space.

        Raises:
            SweepError: naming the parameter, both distributions and the way out (`--study NEW_NAME`).
        """
        stored: dict[str, BaseDistribution] = {}
        for t in study.get_trials(deepcopy=False):
            stored.update(t.distributions)
        problems = []
        for name, dist in self.search_space().items():
            old = stored.get(name)
            if old is not None and old != dist:
                problems.append(
                    f"parameter '{name}': study has {describe_distribution(old)}, "
                    f"sweep file asks {describe_distribution(dist)}"
                )
        if problems:
            raise SweepError(
                f"{self.path}: the search space differs from the one stored in study '{study.study_name}': "
                + "; ".join(problems)
                + ". Nothing was run. Start a new study with --study NEW_NAME (or restore the old ranges)."
            )


def describe_distribution(dist: BaseDistribution) -> str:
    """Short human form: `categorical[16, 32]`, `float[1e-05, 0.01] log`, `int[1, 10] step 1`."""
    if isinstance(dist, CategoricalDistribution):
        return f"categorical{list(dist.choices)}"
    if isinstance(dist, FloatDistribution | IntDistribution):
        kind = "int" if isinstance(dist, IntDistribution) else "float"
        extra = " log" if dist.log else (f" step {dist.step}" if dist.step is not None else "")
        return f"{kind}[{dist.low}, {dist.high}]{extra}"
    return distribution_to_json(dist)


class RecordingTrial:
    """A stand-in for :class:`optuna.Trial` that records the distributions `suggest` asks for.

    Returns the value in `fixed` when given (and valid), else the first choice / the low end, so a dry
    run follows one branch of a conditional space without training anything.
    """

    def __init__(self, fixed: dict[str, Any] | None = None) -> None:
        self.fixed = dict(fixed or {})
        self.distributions: dict[str, BaseDistribution] = {}
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}
        self.number = -1

    def _record(self, name: str, dist: BaseDistribution, default: Any) -> Any:
        if name in self.distributions and self.distributions[name] != dist:
            raise ValueError(f"parameter '{name}' suggested twice with different distributions")
        self.distributions[name] = dist
        value = self.fixed.get(name, default)
        if name in self.fixed and not dist._contains(dist.to_internal_repr(value)):
            value = default
        self.params[name] = value
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._record(name, FloatDistribution(low, high, step=step, log=log), low)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._record(name, IntDistribution(low, high, step=step, log=log), low)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._record(name, CategoricalDistribution(choices), list(choices)[0])

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def report(self, value: float, step: int) -> None:  # pragma: no cover - sweeps should not report
        pass

    def should_prune(self) -> bool:  # pragma: no cover
        return False


def _user_line(err: BaseException, path: Path) -> str:
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if Path(frame.filename).resolve() == path.resolve():
            return f" (line {frame.lineno}: {(frame.line or '').strip()})"
    return ""


def load_sweep(path: str | Path) -> Sweep:
    """Import a sweep file and validate it (no trial is run).

    Raises:
        SweepError: file missing, syntax error (file:line), an exception at import (file:line), a missing
            or wrong-typed object, or a BASE_CONFIG / suggest() result that is not a valid TrainConfig.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found (see sweeps/ for examples)")
    source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as err:
        raise SweepError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    module_name = f"maskcls_hpo_sweep_{path.stem}"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except Exception as err:
        raise SweepError(f"{path}: loading failed: {type(err).__name__}: {err}{_user_line(err, path)}") from None
    ns = module.__dict__

    base = ns.get("BASE_CONFIG")
    if not isinstance(base, dict):
        raise SweepError(f"{path}: missing BASE_CONFIG (a dict of fixed training-config keys)")
    suggest = ns.get("suggest")
    if not callable(suggest):
        raise SweepError(f"{path}: missing function suggest(trial) -> dict of config overrides")
    try:
        base_config = config_from_mapping(base, source=f"{path} BASE_CONFIG")
    except ConfigError as err:
        raise SweepError(str(err)) from None
    known_good = ns.get("KNOWN_GOOD", [])
    if not isinstance(known_good, list) or not all(isinstance(k, dict) for k in known_good):
        raise SweepError(f"{path}: KNOWN_GOOD must be a list of param dicts")
    for name in ("make_sampler", "make_pruner"):
        if name in ns and not callable(ns[name]):
            raise SweepError(f"{path}: {name} must be a function")
    seed = ns.get("SEED", 0)
    if not isinstance(seed, int):
        raise SweepError(f"{path}: SEED must be an int, got {seed!r}")
    sweep = Sweep(
        path=path,
        name=path.stem,
        base_config=base_config,
        suggest=suggest,
        known_good=[dict(k) for k in known_good],
        seed=seed,
        _make_sampler=ns.get("make_sampler"),
        _make_pruner=ns.get("make_pruner"),
    )
    sweep.search_space()  # dry runs: suggest() works and every branch gives a valid config
    for name, fn in (("make_sampler", sweep.make_sampler), ("make_pruner", sweep.make_pruner)):
        try:
            fn()
        except Exception as err:
            raise SweepError(f"{path}: {name}() raised {type(err).__name__}: {err}{_user_line(err, path)}") from None
    return sweep
