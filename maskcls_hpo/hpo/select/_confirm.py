"""`confirm`: re-train the K best COMPLETE configs of a study on F person-grouped folds (x R seeds).

The known-good trials of S (enqueued from the sweep file's KNOWN_GOOD) are confirmed besides the K best
(:func:`with_known_good`): the reference that the winner is compared with on the same folds.

One validation split of a few hundred persons cannot tell the top configs of a sweep apart (README,
"Trustworthy winner"). `confirm` re-trains each of the K best COMPLETE configs of study S on every fold of
a person-grouped, gender x age band stratified K-fold (:func:`maskcls_hpo.data.assign_folds`, one fold
assignment for all configs, so their fold scores are paired) and ranks the configs by their mean val macro
F1 over the folds.

The runs are the trials of a *linked study* in the same storage (default name ``S-confirm``), queued with
fixed params ``source_trial`` (the trial number in S), ``fold`` (0..F-1) and ``seed_index`` (0..R-1). The
ordinary worker loop (:func:`maskcls_hpo.hpo.workers.run_worker` with ``WorkerSettings(kind="confirm")``)
runs them, so a confirm gets what a sweep gets: K*F*R finished trials exactly, parallel workers and GPUs,
heartbeats, a killed run resumed from its last checkpoint, artifacts and the dashboard. A run that fails
is queued again with the same params (a sweep would sample a new config instead). The study's user attrs
link it back to S and record K, F, R, the source trial numbers and their single-split values.

Run ``seed_index`` r of source trial n trains the stored config of trial n with ``seed + r``,
``folds=F``, ``fold=f`` and ``split_seed`` fixed (the source config's split seed), no pruning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from maskcls_hpo._util import check_path_name, check_whole_number
from maskcls_hpo.config import config_from_mapping
from maskcls_hpo.data import check_folds, load_train
from maskcls_hpo.errors import ConfirmError
from maskcls_hpo.hpo.attrs import KIND_CONFIRM, PARAM_FOLD, PARAM_SEED, PARAM_SOURCE, ConfirmAttrs, StudyAttrs
from maskcls_hpo.hpo.select._race import check_race, race_by_default, race_words
from maskcls_hpo.hpo.select._summary import ConfirmSummary, summarize_confirm
from maskcls_hpo.hpo.store import display_url, open_storage, ranked_complete_trials, state_counts_text
from maskcls_hpo.hpo.trial import (
    PAIR_PERSONS,
    ConfirmPlan,
    confirm_study_name,
    is_known_good,
    known_good_trials,
    load_plan,
    missing_runs,
    save_study_note,
    source_configs,
)
from maskcls_hpo.hpo.workers import (
    MAX_WORKERS,
    Backend,
    LocalBackend,
    ProgressReader,
    RunOptions,
    SweepEvents,
    WorkerSettings,
    check_device_here,
    check_free_space,
    check_run_folders,
    follow,
    prepare_data,
    run_options,
)

log = logging.getLogger(__name__)


@dataclass
class ConfirmResult:
    """What :func:`run_confirm` did: the summary, the worker exit codes, wall seconds and a closing line."""

    summary: ConfirmSummary
    storage: str
    seconds: float = 0.0
    worker_exit_codes: list[int] = field(default_factory=list)
    interrupted: bool = False
    message: str = ""
    log_dir: Path | None = None

    @property
    def reached(self) -> bool:
        return self.summary.finished


def _check_existing(study: optuna.Study, source: str, top: int, folds: int, seeds: int) -> None:
    a = study.user_attrs
    if a.get(ConfirmAttrs.KIND) != KIND_CONFIRM or a.get(ConfirmAttrs.SOURCE) != source:
        raise ConfirmError(
            f"study '{study.study_name}' exists and is not the confirm study of '{source}'; pass another --name"
        )
    stored = (int(a[ConfirmAttrs.TOP]), int(a[ConfirmAttrs.FOLDS]), int(a[ConfirmAttrs.SEEDS]))  # TOP: the asked K
    if stored != (top, folds, seeds):
        raise ConfirmError(
            f"confirm study '{study.study_name}' was made with --top {stored[0]} --folds {stored[1]} --seeds "
            f"{stored[2]}; run it again with those to resume it, or pass --name NEW for another confirm"
        )


def _checked_name(source_name: str, name: str | None) -> str:
    """The confirm study's name (`name`, else ``<source>-confirm``), checked as a folder name (its logs and
    checkpoints live in ``<root>/<name>``); ConfirmError naming the option otherwise."""
    check_path_name(source_name, "--study", ConfirmError)
    if name is not None:
        return check_path_name(name, "--name", ConfirmError)
    return check_path_name(confirm_study_name(source_name), "--study (its confirm study's name)", ConfirmError)


def prepare_confirm(
    storage: optuna.storages.BaseStorage,
    source_name: str,
    top: int,
    folds: int,
    seeds: int = 1,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
    race: bool | None = None,
    protected: list[int] | None = None,
    race_pairing: str | None = None,
) -> tuple[optuna.Study, ConfirmPlan]:
    """Check everything, then create (or resume) the confirm study and queue its missing runs.

    Order: the source study and its COMPLETE trials, the counts (top, folds, seeds), an existing confirm
    study's settings, the configs, the data (folds vs persons per stratum, every image) and the image cache;
    only then is anything written. So every refusal leaves the storage as it was.

    Raises:
        StorageError: no source study.
        ConfirmError: fewer COMPLETE trials than `top`, folds < 2, seeds < 1, an existing confirm study made
            with other counts; with `race`, fewer than 4 rounds (folds x seeds) or a `protected` trial that is
            not among the confirmed ones.
        DataError: more folds than persons in a gender x age band stratum, or a broken dataset.
        ConfigError: a bad override.
    """
    name = _checked_name(source_name, name)
    source = _source_study(storage, source_name)
    _check_counts(top, folds, seeds)
    ranked = ranked_complete_trials(source, limit=top)
    if len(ranked) < top:
        raise ConfirmError(
            f"study '{source_name}' has {len(ranked)} COMPLETE trial(s), --top asks for {top} "
            f"({state_counts_text(source)}); lower --top or run more trials"
        )
    study: optuna.Study | None = None
    if name in set(optuna.get_all_study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        _check_existing(study, source_name, top, folds, seeds)
        plan = load_plan(storage, name)
        race = plan.race if race is None else race  # resumed as it was made unless said otherwise
        protected = plan.protected if protected is None else protected
        race_pairing = plan.race_pairing if race_pairing is None else race_pairing
    else:
        race = race_by_default(folds, seeds) if race is None else race
        race_pairing = PAIR_PERSONS if race_pairing is None else race_pairing
        plan = _new_plan(source, with_known_good(source, ranked[:top]), name, folds, seeds, overrides)
        plan.race, plan.protected = race, sorted(set(protected or []))
        plan.race_pairing = race_pairing
        plan.known_good = [t.number for t in known_good_trials(source) if t.number in plan.sources]
    check_race(plan, race, protected, race_pairing)
    meta = _check_data(plan, overrides)
    if study is None:
        study = _create(storage, plan, with_known_good(source, ranked), meta, top)
    for params in missing_runs(study, plan):
        study.enqueue_trial(params)
    return study, plan


def with_known_good(source: optuna.Study, chosen: list[FrozenTrial]) -> list[FrozenTrial]:
    """`chosen` plus the source study's COMPLETE known-good trials that are not among them (always confirmed:
    the reference the winner is judged against, :mod:`maskcls_hpo.hpo.trial._reference`)."""
    numbers = {t.number for t in chosen}
    return [*chosen, *(t for t in known_good_trials(source) if t.number not in numbers)]


def _source_study(storage: optuna.storages.BaseStorage, source_name: str) -> optuna.Study:
    """The sweep's study whose configs are confirmed (not itself a confirm study)."""
    try:
        source = optuna.load_study(study_name=source_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfirmError(f"no study '{source_name}' (studies: {', '.join(names) or 'none'})") from None
    if source.user_attrs.get(ConfirmAttrs.KIND) == KIND_CONFIRM:
        raise ConfirmError(f"study '{source_name}' is itself a confirm study; pass the sweep's study")
    return source


def _check_counts(top: int, folds: int, seeds: int) -> None:
    """--top, --folds and --seeds within bounds (one line naming the flag)."""
    if not 1 <= top <= 1000:
        raise ConfirmError(f"--top must be between 1 and 1000, got {top}")
    if not 1 <= seeds <= 1000:
        raise ConfirmError(f"--seeds must be between 1 and 1000, got {seeds}")
    if not 2 <= folds <= 1000:
        raise ConfirmError(f"--folds must be between 2 and 1000 (one fold validates, the others train), got {folds}")


def _new_plan(
    source: optuna.Study,
    chosen: list[FrozenTrial],
    name: str,
    folds: int,
    seeds: int,
    overrides: dict[str, Any] | None,
) -> ConfirmPlan:
    """The plan of a new confirm study of the `chosen` trials (their stored configs)."""
    configs = source_configs(source, [t.number for t in chosen])
    first = config_from_mapping({**configs[chosen[0].number], **(overrides or {})}, source="confirm")
    return ConfirmPlan(
        study_name=name,
        source_study=source.study_name,
        sources=[t.number for t in chosen],
        configs=configs,
        folds=folds,
        seeds=seeds,
        split_seed=first.effective_split_seed,
    )


def _check_data(plan: ConfirmPlan, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Every run's config builds (bad overrides refuse here), the data holds `folds` persons per stratum, and the
    data check of `launch` (:func:`~maskcls_hpo.hpo.workers.prepare_data`: every image, the cache); its study attrs.
    """
    checked = set()
    for params in plan.runs():
        config = plan.build_config(params, overrides)
        key = (config.data_dir, tuple(config.age_bins), config.corrections)
        if key not in checked:
            checked.add(key)
            samples = load_train(
                config.data_dir, age_bins=config.age_bins, corrections=config.corrections, verify=False
            )
            check_folds(samples, plan.folds)
    return prepare_data(plan.build_config(plan.runs()[0], overrides))


def _create(
    storage: optuna.storages.BaseStorage,
    plan: ConfirmPlan,
    ranked: list[FrozenTrial],
    meta: dict[str, Any],
    top: int,
) -> optuna.Study:
    """Create the confirm study with its attrs (the link to the source, K, F, R, the budget, the known-good trials
    confirmed besides the top K) and its note."""
    study = optuna.create_study(
        study_name=plan.study_name,
        storage=storage,
        direction="maximize",
        sampler=plan.make_sampler(),
        pruner=plan.make_pruner(),
    )
    values = {t.number: float(t.value) for t in ranked if t.value is not None}
    attrs = {
        ConfirmAttrs.KIND: KIND_CONFIRM,
        ConfirmAttrs.SOURCE: plan.source_study,
        ConfirmAttrs.TOP: top,
        ConfirmAttrs.KNOWN_GOOD: [t.number for t in ranked if is_known_good(t) and t.number in plan.sources],
        ConfirmAttrs.FOLDS: plan.folds,
        ConfirmAttrs.SEEDS: plan.seeds,
        ConfirmAttrs.SOURCE_TRIALS: plan.sources,
        ConfirmAttrs.SOURCE_VALUES: [values[n] for n in plan.sources],
        ConfirmAttrs.SPLIT_SEED: plan.split_seed,
        StudyAttrs.N_TRIALS: len(plan.runs()),
        ConfirmAttrs.RACE: plan.race,
        ConfirmAttrs.RACE_PAIRING: plan.race_pairing,
        ConfirmAttrs.PROTECTED: plan.protected,
        **meta,
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    save_study_note(study, _note(plan, attrs))
    return study


def _note(plan: ConfirmPlan, attrs: dict[str, Any]) -> str:
    sources = ", ".join(f"{n} ({v:.4f})" for n, v in zip(plan.sources, attrs[ConfirmAttrs.SOURCE_VALUES], strict=True))
    return (
        f"## Confirm study `{plan.study_name}`\n\n"
        f"- re-trains the {len(plan.sources)} best COMPLETE configs of study `{plan.source_study}` "
        f"(trials, single-split val macro F1: {sources})\n"
        f"- on {plan.folds} person-grouped folds stratified by gender x age band (split seed {plan.split_seed})"
        f" x {plan.seeds} seed(s): {attrs[StudyAttrs.N_TRIALS]} runs\n"
        f"- params: `{PARAM_SOURCE}` (trial in the source study), `{PARAM_FOLD}`, `{PARAM_SEED}` "
        f"(seed = the config's seed + index)\n"
        f"- the value of a run is its best epoch's val macro F1 on the held-out fold\n"
    )


def run_confirm(
    study_name: str,
    top: int,
    folds: int,
    seeds: int = 1,
    *,
    name: str | None = None,
    workers: int = 1,
    options: RunOptions | None = None,
    backend: Backend | None = None,
    events: SweepEvents | None = None,
    race: bool | None = None,
    protected: list[int] | None = None,
    race_pairing: str | None = None,
    **flags: Any,
) -> ConfirmResult:
    """Confirm the `top` best COMPLETE configs of `study_name` on `folds` folds x `seeds` seeds.

    Creates (or resumes) the linked study ``<study_name>-confirm`` (or `name`) and runs `workers` workers
    (through `backend`, local processes by default) until it holds top * folds * seeds finished trials;
    `workers=0` only prepares it (join with ``maskcls-hpo worker --confirm --study NAME``). Run it again after a
    crash or Ctrl-C: finished runs are kept, killed ones resume from their last checkpoint.

    Args:
        options: how the runs are trained (:class:`~maskcls_hpo.hpo.workers.RunOptions`: the source study's
            storage, heartbeat, data_dir, overrides such as ``epochs`` in tests, timeout, checkpoints, mlflow,
            watchdog, ...), or give them as `flags` (not both).
        backend, events: as :func:`maskcls_hpo.hpo.launch.run_sweep`.
        race: run it as a race (``hpo/trial/_race.py``): runs round by round, a config worse than the leader
            with 95% confidence is not trained further; its remaining runs are recorded PRUNED. Needs folds x
            seeds >= 4. None (default): a new study races when folds x seeds >= 4 (:func:`race_by_default`), an
            existing one as it was made.
        protected: source trial numbers the race never stops (the known-good configs).
        race_pairing: ``"persons"`` (a new study's default: a person bootstrap over the val persons of the
            rounds both ran, from the first round) or ``"folds"`` (one-sided paired t test over >= 4 fold x seed
            results); None: a new study persons, an existing one as it was made.

    Returns:
        ConfirmResult with the :class:`ConfirmSummary` (per-config mean, standard error, winner; with a race,
        ``summary.race``: the stopped configs and the epochs saved).

    Raises:
        MaskclsError: before anything is stored (see :func:`prepare_confirm`); LaunchError for a bad option or
            a worker process that cannot start.
    """
    opts = run_options(options, flags)
    events = events or SweepEvents()
    backend = backend if backend is not None else LocalBackend()
    url = _checked_run(study_name, name, workers, opts, backend)
    rdb = open_storage(url, opts.heartbeat, create=False)
    race_options: dict[str, Any] = {"race": race, "protected": protected, "race_pairing": race_pairing}
    overrides = opts.config_overrides()
    study, plan = prepare_confirm(rdb, study_name, top, folds, seeds, name=name, overrides=overrides, **race_options)
    settings = WorkerSettings.for_study(
        study.study_name, opts, storage_url=url, kind="confirm", n_trials=len(plan.runs())
    )
    summary = summarize_confirm(study)
    result = ConfirmResult(summary, display_url(url), log_dir=settings.log_dir)
    c = summary.counts
    events.say(
        f"confirm study '{study.study_name}' on {display_url(url)}: trials {plan.sources} of '{study_name}' on "
        f"{folds} folds x {seeds} seed(s){race_words(plan)}; {c.finished} of {summary.n_trials} runs finished; "
        f"{backend.describe(workers)}"
    )
    result.message = _nothing_to_run(summary, study.study_name, workers)
    if result.message:
        return result
    for note in backend.preflight(settings, workers):
        events.say(note)
    check_free_space(settings)
    pool = backend.pool(settings, workers)
    reader = ProgressReader(rdb, study, summary.n_trials, default_epochs=_epochs(plan))
    followed = follow(pool, reader, events, poll_interval=opts.poll_interval)
    result.seconds, result.interrupted = followed.seconds, followed.interrupted
    result.worker_exit_codes = followed.exit_codes
    result.summary = summarize_confirm(study)
    result.message = _closing_line(result, pool.last_lines([i for i, x in enumerate(followed.exit_codes) if x]))
    return result


def _nothing_to_run(summary: ConfirmSummary, confirm_name: str, workers: int) -> str:
    """Why `run_confirm` starts no worker (every run finished, or ``workers=0``), else ""."""
    if summary.finished:
        return f"nothing to do: all {summary.n_trials} runs are finished"
    if workers == 0:
        return (
            f"study '{confirm_name}' is ready; start workers with: maskcls-hpo worker --confirm --study {confirm_name}"
        )
    return ""


def _checked_run(study_name: str, name: str | None, workers: int, opts: RunOptions, backend: Backend) -> str:
    """The storage URL, after the checks `run_confirm` makes before the confirm study is stored: --workers, the
    confirm study's name (a folder name), the run folders and, for local workers, the device."""
    check_whole_number(workers, "--workers", 0, MAX_WORKERS, ConfirmError)
    _checked_name(study_name, name)  # before the storage is opened
    url = opts.resolve_storage(must_exist=True).url
    # the study name does not change the folders' roots, so they are checked under the name asked for
    check_run_folders(WorkerSettings.for_study(name or study_name, opts, storage_url=url, kind="confirm"))
    if workers > 0 and isinstance(backend, LocalBackend):
        check_device_here(opts.device)
    return url


def _epochs(plan: ConfirmPlan) -> int | None:
    """Epochs of the plan's first config (the live view's ETA); None when not stored."""
    first = plan.configs.get(plan.sources[0], {})
    return int(first["epochs"]) if isinstance(first.get("epochs"), int) else None


def _closing_line(result: ConfirmResult, last_lines: str) -> str:
    """How a confirm run ended, in one line."""
    c, total = result.summary.counts, result.summary.n_trials
    if result.interrupted:
        return f"interrupted: {c.finished} of {total} runs finished; run confirm again to resume"
    if result.reached:
        return (
            f"{c.finished} runs finished ({c.complete} complete, {c.pruned} pruned), {c.failed} failed in "
            f"{result.seconds:,.0f} s; worker logs in {result.log_dir}"
        )
    return (
        f"the confirm study did not reach {total} finished runs ({c.finished} finished, {c.failed} "
        f"failed); {last_lines}; run confirm again to resume"
    )


def confirm(study_name: str, top: int = 3, folds: int = 5, seeds: int = 1, **kwargs: Any) -> ConfirmResult:
    """Re-train the `top` best COMPLETE configs of a study on `folds` person-grouped folds x `seeds` seeds.

    The Python API of `maskcls-hpo confirm` (``maskcls_hpo.confirm``): :func:`run_confirm` with its keyword
    arguments (`workers`, `backend`, `options` or the flags `storage`, `data_dir`, ...). Resumable: call it again
    after a crash.

    Returns:
        ConfirmResult; ``.summary.rows`` holds each config's mean val macro F1 over the folds and its standard
        error, ``.summary.winner`` the best config.

    Raises:
        MaskclsError: fewer COMPLETE trials than `top`, folds < 2, more folds than persons in a gender x age
            band stratum, ... (nothing stored is changed).

    Example::

        import maskcls_hpo as m
        r = m.confirm("smoke", top=3, folds=3, storage="storage/nb.db", workers=2)
        print(r.summary.winner.source_trial, r.summary.winner.mean, r.summary.winner.se)
    """
    return run_confirm(study_name, top, folds, seeds, **kwargs)
