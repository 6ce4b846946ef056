"""What a confirm race did: the configs it stopped, the epochs it saved (rule: ``hpo/trial/_race.py``).

Called from the confirm use case with small hooks: :func:`check_race` before the study is created,
:func:`race_report` by :func:`~maskcls_hpo.hpo.select.summarize_confirm`, :func:`race_lines` by
:func:`~maskcls_hpo.hpo.select.format_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from maskcls_hpo.errors import ConfirmError
from maskcls_hpo.hpo.attrs import ConfirmAttrs, TrialAttrs
from maskcls_hpo.hpo.trial import PAIR_FOLDS, PAIR_PERSONS, RACE_MIN_PAIRS, ConfirmPlan, RaceStop, race_state, run_key


@dataclass
class RaceReport:
    """The race of one confirm study.

    Attributes:
        stops: {source trial: RaceStop} of the stopped configs; protected: the configs it never stops.
        runs_skipped: runs recorded PRUNED without training; epochs_saved: their epochs (each run's config's
            ``epochs``); epochs_full: the epochs of the confirm without a race (every run of every config).
    """

    stops: dict[int, RaceStop] = field(default_factory=dict)
    protected: list[int] = field(default_factory=list)
    runs_skipped: int = 0
    epochs_saved: int = 0
    epochs_full: int = 0


def race_by_default(folds: int, seeds: int) -> bool:
    """Whether a new confirm study races when neither ``--race`` nor ``--no-race`` is given: when it has the
    rounds the race needs (folds x seeds >= 4). Measured on recorded fold x seed results (docs/performance.md,
    B10): the race kept the full confirm's winner while training fewer runs."""
    return folds * seeds >= RACE_MIN_PAIRS


def race_words(plan: ConfirmPlan) -> str:
    """How the confirm's first line says it races: `` as a race`` / `` (no race: ...)`` / ``""``."""
    if plan.race:
        return f" as a race (paired over {plan.race_pairing})"
    if plan.folds * plan.seeds < RACE_MIN_PAIRS:
        return f" (no race: it needs --folds x --seeds >= {RACE_MIN_PAIRS})"
    return ""


def check_race(plan: ConfirmPlan, race: bool, protected: Sequence[int] | None, pairing: str | None = None) -> None:
    """The race's settings: the same as a resumed confirm study's, a known pairing, at least 4 rounds (folds x
    seeds), and protected trials among the confirmed ones.

    Raises:
        ConfirmError: --race, --keep or --race-pairing given otherwise than the existing study was made, an
            unknown pairing, fewer than 4 rounds, or a protected trial that is not among the confirmed trials.
    """
    pairing = plan.race_pairing if pairing is None else pairing
    if pairing not in (PAIR_PERSONS, PAIR_FOLDS):
        raise ConfirmError(f"--race-pairing {pairing!r}: use {PAIR_PERSONS} or {PAIR_FOLDS}")
    given = (race, sorted(set(protected or [])), pairing if race else plan.race_pairing)
    if (plan.race, plan.protected, plan.race_pairing) != given:
        made = f"{'with' if plan.race else 'without'} --race" + "".join(f" --keep {n}" for n in plan.protected)
        made += f" --race-pairing {plan.race_pairing}" if plan.race else ""
        raise ConfirmError(
            f"confirm study '{plan.study_name}' was made {made}; run it again so to resume it, or pass --name NEW"
        )
    if not plan.race:
        return
    if plan.folds * plan.seeds < RACE_MIN_PAIRS:
        raise ConfirmError(
            f"--race needs at least {RACE_MIN_PAIRS} paired results per config: --folds x --seeds is "
            f"{plan.folds} x {plan.seeds}; raise --folds or --seeds"
        )
    missing = sorted(set(plan.protected) - set(plan.sources))
    if missing:
        raise ConfirmError(
            f"--keep {missing[0]}: trial {missing[0]} is not among the confirmed trials {plan.sources}; "
            "raise --top or drop --keep"
        )


def _epochs_by_config(study: optuna.Study, sources: Sequence[int]) -> dict[int, int]:
    """Epochs of each config's runs, from the config a started run stored (0 where none started yet)."""
    epochs = dict.fromkeys(sources, 0)
    for t in study.get_trials(deepcopy=False):
        key = run_key(t.params)
        config = t.user_attrs.get(TrialAttrs.CONFIG)
        if key is not None and key[0] in epochs and isinstance(config, dict) and "epochs" in config:
            epochs[key[0]] = int(config["epochs"])
    return epochs


def race_report(study: optuna.Study) -> RaceReport | None:
    """The :class:`RaceReport` of confirm study `study`; None when it is not a race."""
    attrs = study.user_attrs
    if not attrs.get(ConfirmAttrs.RACE):
        return None
    sources = [int(n) for n in attrs[ConfirmAttrs.SOURCE_TRIALS]]
    rounds = int(attrs[ConfirmAttrs.FOLDS]) * int(attrs[ConfirmAttrs.SEEDS])
    epochs = _epochs_by_config(study, sources)
    trials = study.get_trials(deepcopy=False)
    _, stops = race_state(trials)
    skipped = [
        t
        for t in trials
        if t.state == TrialState.PRUNED and isinstance(t.user_attrs.get(TrialAttrs.RACE_STOPPED), dict)
    ]
    saved = 0
    for t in skipped:
        key = run_key(t.params)
        saved += epochs.get(key[0], 0) if key is not None else 0
    return RaceReport(
        stops=stops,
        protected=sorted(
            {int(n) for key in (ConfirmAttrs.PROTECTED, ConfirmAttrs.KNOWN_GOOD) for n in attrs.get(key, [])}
        ),
        runs_skipped=len(skipped),
        epochs_saved=saved,
        epochs_full=sum(e * rounds for e in epochs.values()),
    )


def race_lines(report: RaceReport | None) -> list[str]:
    """The lines `confirm` prints about its race: one per stopped config, then the epochs it saved."""
    if report is None:
        return []
    lines = [f"race: trial {n} {stop.describe()}" for n, stop in sorted(report.stops.items())]
    if report.protected:
        lines.append(f"race: known-good trial(s) {report.protected} run to the end")
    share = report.epochs_saved / report.epochs_full if report.epochs_full else 0.0
    lines.append(
        f"the race saved {report.epochs_saved} of {report.epochs_full} epochs ({share:.0%}): "
        f"{report.runs_skipped} run(s) not trained"
    )
    return lines
