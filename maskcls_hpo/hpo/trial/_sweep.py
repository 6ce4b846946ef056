"""Sweep files: plain Python that states the fixed config and the search space (Optuna define-by-run).

A sweep file defines:

``BASE_CONFIG`` (dict, required)
    The fixed part of the :class:`~maskcls_hpo.config.TrainConfig`.
``suggest(trial) -> dict`` (required)
    Calls ``trial.suggest_*`` and returns config overrides (keys of TrainConfig). Conditional parameters
    are fine (e.g. ``age_loss_weight`` only when ``head == "multi"``).
``make_sampler(seed: int[, n_trials: int | None])`` (optional, default
    ``TPESampler(seed=seed, n_startup_trials=startup_trials(n_trials))``)
    Each worker process passes its own seed (sweep seed + worker index) so that parallel workers do not
    draw the same random start-up trials. A second parameter receives the study's trial budget (None when
    unknown), so the random start-up can be sized to it with :func:`startup_trials`; `launch` warns when the
    sampler's own start-up leaves fewer than half of the budget to the sampler.
``make_pruner(config: TrainConfig)`` (optional, default ``median_pruner(warmup_epochs=1)``)
    Gets the base config, so Hyperband can use ``max_resource=config.epochs``. Steps are epochs counted from 1
    (the epochs `report` shows); Optuna's ``n_warmup_steps=W`` lets a trial be pruned at epoch W, so a
    warm-up of W epochs is ``n_warmup_steps=W + 1`` (:func:`median_pruner` says it in epochs). The pruner is
    never asked after a trial's last epoch (``hpo.objective``).
``KNOWN_GOOD`` (list of param dicts, optional)
    Enqueued as the study's first trials (``enqueue_trial(skip_if_exists=True)``) with the user attr
    ``known_good = True``: never pruned, always confirmed, and the reference the winner is compared with
    (:mod:`maskcls_hpo.hpo.trial._reference`). A key that `suggest` never asks is refused, naming the key.
``SEED`` (int, optional, default 0)
    Each worker seeds its sampler with ``SEED`` + its worker index.
``LR_RANGE_TEST`` (bool, optional, default False)
    `launch` runs a learning-rate range test (:mod:`maskcls_hpo.lr_range`) on the base config before it
    creates the study, stores the range in the study's user attrs (``lr_range``), and the sampler then draws
    ``lr`` (log scale) from that range instead of the file's: every ``suggest_float("lr", ...)`` gets the
    measured bounds (:attr:`Sweep.lr_range`; workers read it from the study).
``PROMOTION`` (bool, optional, default True)
    With a ``SuccessiveHalvingPruner``, a trial pruned at a rung is continued from its checkpoint when it later
    ranks into the rung's top 1/eta (asynchronous successive halving: :mod:`maskcls_hpo.hpo.trial._promotion`).
    False: pruned trials stay stopped (Optuna's own behaviour). Other pruners never promote.

A file that does not load (syntax error, missing object, bad config key, a ``make_sampler`` / ``make_pruner``
that returns no Optuna sampler / pruner) or whose search space differs
from the one stored in the study is refused with :class:`SweepError` before any trial starts (problem C3).
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
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

from maskcls_hpo._util import check_path_name, read_text_file
from maskcls_hpo.config import ConfigError, TrainConfig, config_from_mapping
from maskcls_hpo.errors import SweepError
from maskcls_hpo.hpo._optuna import percentile_warmup_steps, tpe_startup_trials
from maskcls_hpo.hpo.attrs import StudyAttrs
from maskcls_hpo.hpo.trial._promotion import promotion_rungs
from maskcls_hpo.hpo.trial._reference import KnownGoodPruner

OPTUNA_STARTUP_TRIALS = 10
"""Optuna's TPE default of random start-up trials: used when the trial budget is unknown."""


def startup_trials(n_trials: int | None) -> int:
    """Random start-up trials for a budget of `n_trials`: ``max(2, min(10, n_trials // 4))``.

    A quarter of the budget, at least 2 (TPE needs a few points to split into good and bad) and at most
    Optuna's default of 10; 10 when the budget is unknown (None). 12 trials -> 3, 40 -> 10, 6 -> 2.
    """
    if not n_trials:
        return OPTUNA_STARTUP_TRIALS
    return max(2, min(OPTUNA_STARTUP_TRIALS, int(n_trials) // 4))


FIRST_RUNG_EPOCH = 4
"""The epoch where the shipped sweeps' first rung sits (fewer for trials of under 8 epochs): see :func:`first_rung`."""


def first_rung(epochs: int) -> int:
    """The shipped sweeps' first rung (``SuccessiveHalvingPruner(min_resource=...)``): ``min(4, max(1, epochs // 2))``.

    Measured on recorded UTKFace curves (docs/performance.md, B2): epochs 1-3 rank configs poorly (Spearman of
    epoch-k F1 with the trial's value 0.08-0.54 over 48 configs), epoch 4 well (0.79 of 8 epochs, 0.64 of 16); so
    the first rung is at epoch 4, or at half the epochs of a shorter trial. For 16-epoch trials that rung (then 8,
    eta 2) with promotion reached the target on R_eps 0.683 of the epochs no pruning needs (0.594 as
    :func:`asha_pruner`), with no top config lost, against 0.833 for the old rule ``epochs // 2``.
    4 -> 2, 8 -> 4, 12 -> 4, 16 -> 4.
    """
    return min(FIRST_RUNG_EPOCH, max(1, int(epochs) // 2))


def asha_pruner(epochs: int, reduction_factor: int = 2) -> optuna.pruners.SuccessiveHalvingPruner:
    """The shipped sweeps' pruner: asynchronous successive halving with its first rung at :func:`first_rung`.

    ``SuccessiveHalvingPruner(min_resource=first_rung(epochs), reduction_factor=eta, bootstrap_count=eta - 1)``.
    Optuna's rule lets a trial go on from rung k when its value is at least the ``max(0, n // eta - 1)``-th best
    of the ``n`` values at rung k so far, so a trial that is alone at a rung (``n < eta``) always goes on;
    ``bootstrap_count=eta - 1`` stops (pauses) it there instead, which makes the rule the promotion rule of
    asynchronous successive halving (top ``floor(n / eta)``; Li et al., "A System for Massively Parallel
    Hyperparameter Tuning", MLSys 2020, Algorithm 2). With promotion on (``PROMOTION``, the default) such a
    trial is continued from its checkpoint as soon as it ranks into that top (hpo/trial/_promotion.py,
    :func:`~maskcls_hpo.hpo.trial.find_promotions`). Known-good trials are never stopped, so a study of a sweep
    with ``KNOWN_GOOD`` always holds a complete trial.

    Measured (docs/performance.md, B2, 300 replays): on 16-epoch UTKFace curves R_eps 0.594 with no top config
    lost, against 0.683 with Optuna's rule (``bootstrap_count=0``) and the same promotion; 8-epoch curves 0.800
    against 0.833.

    Args:
        epochs: the trial's epochs (the base config's).
        reduction_factor: eta (>= 2).
    """
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=first_rung(epochs), reduction_factor=reduction_factor, bootstrap_count=reduction_factor - 1
    )


def sizing_trials(n_trials: int | None, budget_epochs: int | None, epochs: int) -> int | None:
    """The trial count a sampler's start-up is sized to: `n_trials`, or, with an epoch budget, at most
    ``budget_epochs // epochs`` (the trials the budget buys when every trial trains all `epochs`; pruned trials
    buy more, so the start-up is never larger than the budget can pay for). None when neither is known."""
    by_epochs = max(1, budget_epochs // max(1, epochs)) if budget_epochs else None
    if n_trials is None or by_epochs is None:
        return n_trials if by_epochs is None else by_epochs
    return min(n_trials, by_epochs)


def budget_line(sweep: Sweep, n_trials: int, budget_epochs: int | None) -> str:
    """One line for `launch`: the budget, the sampler's start-up it sizes, and the pruner's rungs.

    E.g. ``budget: 64 epochs (8 a trial), at most 20 trials; sampler TPESampler, 2 random start-up trials
    (sized to 8 trials = 64 / 8 epochs); pruner SuccessiveHalvingPruner, rungs at epoch 4 (eta 2), promotion
    from checkpoints on``.
    """
    epochs = sweep.base_config.epochs
    sized = sizing_trials(n_trials, budget_epochs, epochs)
    sampler = sweep.make_sampler(0, sized)
    startup = tpe_startup_trials(sampler)
    budget = (
        f"{n_trials} trials"
        if budget_epochs is None
        else f"{budget_epochs} epochs ({epochs} a trial), at most {n_trials} trials"
    )
    why = (
        f"{sized} trials"
        if budget_epochs is None or sized == n_trials
        else f"{sized} trials = {budget_epochs} / {epochs} epochs"
    )
    line = f"budget: {budget}; sampler {type(sampler).__name__}"
    if startup is not None:
        line += f", {startup} random start-up trials (sized to {why})"
    pruner = sweep.make_pruner()
    line += f"; pruner {type(pruner.inner).__name__}"
    rungs = promotion_rungs(pruner)
    if rungs is not None:
        steps = list(itertools.takewhile(lambda step: step < epochs, map(rungs.step, itertools.count())))
        at = ", ".join(map(str, steps)) if steps else f"none below epoch {epochs}"
        line += f", rungs at epoch {at} (eta {rungs.reduction_factor})"
        line += ", promotion from checkpoints " + ("on" if sweep.promotion else "off (PROMOTION = False)")
    return line


def median_pruner(warmup_epochs: int = 1, n_startup_trials: int = 3) -> optuna.pruners.MedianPruner:
    """``MedianPruner`` whose warm-up is counted in epochs: no trial is pruned in epochs 1..`warmup_epochs`.

    Epochs are reported as steps 1, 2, ... and Optuna prunes from ``step == n_warmup_steps`` on, so this is
    ``MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=warmup_epochs + 1)``; the first epoch a trial
    can be pruned at is `warmup_epochs + 1`. Until `n_startup_trials` trials have finished nothing is pruned.
    """
    if warmup_epochs < 0 or n_startup_trials < 0:
        raise ValueError(f"warmup_epochs and n_startup_trials must be >= 0, got {warmup_epochs}, {n_startup_trials}")
    return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=warmup_epochs + 1)


@dataclass
class Sweep:
    """A loaded sweep file.

    Attributes:
        path: the sweep file; name: its stem (the default study name).
        base_config: the validated fixed config.
        suggest: ``trial -> dict`` of config overrides.
        known_good: param dicts to enqueue first.
        seed: the sweep's base seed for samplers.
        lr_range_test: the file asks for a learning-rate range test at launch (``LR_RANGE_TEST = True``).
        promotion: pruned trials may be promoted from their checkpoints (``PROMOTION``, default True).
        lr_range: (low, high) the sampler draws ``lr`` from (log scale) instead of the file's range; set from
            the range test or the study's ``lr_range`` attr (:meth:`adopt_lr_range`); None: the file's range.
    """

    path: Path
    name: str
    base_config: TrainConfig
    suggest: Callable[[Any], dict[str, Any]]
    known_good: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    lr_range_test: bool = False
    promotion: bool = True
    lr_range: tuple[float, float] | None = None
    _make_sampler: Callable[..., optuna.samplers.BaseSampler] | None = None
    _make_pruner: Callable[[TrainConfig], optuna.pruners.BasePruner] | None = None

    def make_sampler(self, worker_index: int = 0, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
        """The sweep's sampler, seeded with ``seed + worker_index``, for a budget of `n_trials` (None: unknown).

        Default: ``TPESampler(seed=..., n_startup_trials=startup_trials(n_trials))``. A sweep file's
        ``make_sampler`` gets `n_trials` as its second argument when it takes two.
        """
        seed = self.seed + worker_index
        if self._make_sampler is None:
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(n_trials))
        if _positional_arity(self._make_sampler) >= 2:
            return self._make_sampler(seed, n_trials)
        return self._make_sampler(seed)

    def make_pruner(self) -> KnownGoodPruner:
        """The sweep's pruner (default: :func:`median_pruner`: 3 start-up trials, no pruning in epoch 1), wrapped
        in :class:`~maskcls_hpo.hpo.trial.KnownGoodPruner` so that known-good trials are never pruned."""
        inner = self._make_pruner(self.base_config) if self._make_pruner is not None else median_pruner(1, 3)
        return KnownGoodPruner(inner)

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

    def adopt_lr_range(self, study: optuna.Study) -> None:
        """Draw ``lr`` from the range stored in `study` by a range test (its ``lr_range`` user attr), if any."""
        stored = study.user_attrs.get(StudyAttrs.LR_RANGE)
        if isinstance(stored, dict) and "low" in stored and "high" in stored:
            self.lr_range = (float(stored["low"]), float(stored["high"]))

    def _call_suggest(self, trial: Any) -> dict[str, Any]:
        if self.lr_range is not None:
            trial = MeasuredLrTrial(trial, self.lr_range)
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

        The study's measured lr range (``lr_range`` attr) is adopted first (:meth:`adopt_lr_range`).

        Raises:
            SweepError: naming the parameter, both distributions and the way out (`--study NEW_NAME`).
        """
        self.adopt_lr_range(study)
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


class MeasuredLrTrial:
    """A trial whose ``suggest_float("lr", ...)`` draws from a measured range (log scale); all else passes through.

    Args:
        trial: an ``optuna.Trial`` (or a :class:`RecordingTrial`); lr_range: (low, high), 0 < low < high.
    """

    def __init__(self, trial: Any, lr_range: tuple[float, float]) -> None:
        self._trial = trial
        self._range = lr_range

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if name == "lr":
            (low, high), step, log = self._range, None, True
        return float(self._trial.suggest_float(name, low, high, step=step, log=log))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments `fn` accepts (a large number for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 99
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def budget_warnings(sweep: Sweep, n_trials: int) -> list[str]:
    """Lines that say how the sweep's sampler and pruner waste a budget of `n_trials` ([] when they do not).

    - a TPE sampler whose random start-up trials, more than :func:`startup_trials` would choose, leave fewer
      than half of `n_trials` to TPE (Optuna's default 10 turns a 12-trial sweep into random search);
    - a percentile/median pruner with ``n_warmup_steps=1``, which prunes at epoch 1 (epochs count from 1):
      its warm-up does nothing.
    """
    lines = []
    sampler = sweep.make_sampler(0, n_trials)
    startup = tpe_startup_trials(sampler)
    # NOTE only a start-up above the scaled default: a budget of 3 leaves 1 trial to TPE whatever one does
    if startup is not None and startup > startup_trials(n_trials) and n_trials - startup < n_trials / 2:
        lines.append(
            f"{sweep.path}: the sampler starts with {startup} random trials of a {n_trials}-trial budget, so only "
            f"{max(n_trials - startup, 0)} are chosen by TPE; size it to the budget with "
            f"make_sampler(seed, n_trials) and n_startup_trials=startup_trials(n_trials) "
            f"(maskcls_hpo.hpo.trial; {startup_trials(n_trials)} for {n_trials} trials)"
        )
    warmup = percentile_warmup_steps(sweep.make_pruner().inner)
    if warmup == 1:
        lines.append(
            f"{sweep.path}: the pruner has n_warmup_steps=1, which prunes at epoch 1 (epochs count from 1), so "
            f"there is no warm-up; for W epochs of warm-up use n_warmup_steps=W+1, or "
            f"maskcls_hpo.hpo.trial.median_pruner(warmup_epochs=W)"
        )
    return lines


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
    source = read_text_file(path, SweepError, "sweep file", "a sweep file is Python source, see sweeps/ for examples")
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
    check_path_name(path.stem, f"{path}: the sweep's name (its file name without .py)", SweepError)
    lr_range_test = ns.get("LR_RANGE_TEST", False)
    if not isinstance(lr_range_test, bool):
        raise SweepError(f"{path}: LR_RANGE_TEST must be True or False, got {lr_range_test!r}")
    promotion = ns.get("PROMOTION", True)
    if not isinstance(promotion, bool):
        raise SweepError(f"{path}: PROMOTION must be True or False, got {promotion!r}")
    sweep = Sweep(
        path=path,
        name=path.stem,
        base_config=base_config,
        suggest=suggest,
        known_good=[dict(k) for k in known_good],
        seed=seed,
        lr_range_test=lr_range_test,
        promotion=promotion,
        _make_sampler=ns.get("make_sampler"),
        _make_pruner=ns.get("make_pruner"),
    )
    space = sweep.search_space()  # dry runs: suggest() works and every branch gives a valid config
    _check_known_good(sweep, space)
    kinds = (
        ("make_sampler", sweep.make_sampler, optuna.samplers.BaseSampler, "an optuna.samplers sampler"),
        ("make_pruner", lambda: sweep.make_pruner().inner, optuna.pruners.BasePruner, "an optuna.pruners pruner"),
    )
    for name, fn, kind, what in kinds:
        try:
            made = fn()
        except Exception as err:
            raise SweepError(f"{path}: {name}() raised {type(err).__name__}: {err}{_user_line(err, path)}") from None
        if not isinstance(made, kind):
            raise SweepError(f"{path}: {name}() must return {what}, got {type(made).__name__}")
    return sweep


def _check_known_good(sweep: Sweep, space: dict[str, BaseDistribution]) -> None:
    """Refuse a KNOWN_GOOD entry with a key that no parameter of `suggest` has (a typo would be ignored)."""
    for i, entry in enumerate(sweep.known_good):
        unknown = sorted(set(entry) - set(space))
        if unknown:
            raise SweepError(
                f"{sweep.path}: KNOWN_GOOD[{i}] has {', '.join(map(repr, unknown))}, which suggest() never asks; "
                f"its parameters: {', '.join(sorted(space)) or 'none'}"
            )
