"""The `maskcls-hpo` command line (Typer). Each verb parses its options, calls the Python API, prints.

Heavy imports (torch, timm, optuna) happen inside the verbs so that `--help` stays fast. Errors that a
user can fix (every :class:`~maskcls_hpo.errors.MaskclsError`) are caught in one place (:func:`verb`),
printed as one line and exit with code 1.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from maskcls_hpo.errors import DataError, MaskclsError, PredictError
from maskcls_hpo.hpo.logs import setup_logging
from maskcls_hpo.versions import version_line

if TYPE_CHECKING:
    from maskcls_hpo.config import TrainConfig
    from maskcls_hpo.hpo.launch import SweepResult
    from maskcls_hpo.hpo.select import ConfirmResult
    from maskcls_hpo.hpo.store import ResolvedStorage
    from maskcls_hpo.hpo.workers import Progress, RunOptions, SweepEvents
    from maskcls_hpo.train import EpochResult, TrainResult

__all__ = ["app"]

app = typer.Typer(add_completion=True, no_args_is_help=True, help=__doc__.splitlines()[0])
# NOTE soft_wrap: a line is never broken at 80 columns when stderr is a file or a pipe (a log, CI, `2>&1 |`)
console = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the versions of maskcls-hpo, Optuna, torch, timm, ... (from the installed packages) and exit.",
    ),
) -> None:
    """The `maskcls-hpo` command line (Typer)."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one red line on stderr and exit with `code` (never a traceback); `message` is shown as written."""
    # NOTE escape: rich would take `[pretrained]` in "pip install 'maskcls-hpo[pretrained]'" for a style tag
    console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _report(err: Exception) -> NoReturn:
    """The one place where a user-fixable error becomes output: each problem on its own line, then a summary."""
    from maskcls_hpo.hpo.store import mask_password  # lazy: start-up of the CLI (optuna)

    problems = getattr(err, "problems", None)
    if isinstance(err, DataError) and problems and len(problems) > 1:
        for line in problems:
            console.print(mask_password(line), markup=False, highlight=False, soft_wrap=True)
        fail(f"{len(problems)} problem(s); fix them (see `maskcls-hpo check-data`) and try again", err.exit_code)
    fail(mask_password(err), getattr(err, "exit_code", 1))


def verb(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Typer command whose :class:`MaskclsError` is printed as one line (exit 1), never a traceback."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except MaskclsError as err:
                _report(err)

        return app.command(name, cls=PlainHelpCommand)(run)

    return register


class PlainHelpCommand(TyperCommand):
    """A verb whose help texts show as written: each is escaped for rich, which would otherwise take the
    ``[mlflow]`` of ``pip install 'maskcls-hpo[mlflow]'`` for a style tag and print ``'maskcls-hpo'``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = escape(self.help)
        for param in self.params:
            text = getattr(param, "help", None)
            if text:
                param.help = escape(text)  # type: ignore[attr-defined]


# --- data -----------------------------------------------------------------------------------------


@verb("demo-data")
def demo_data_cmd(
    out: str = typer.Argument(..., metavar="OUT", help="Folder to write the dataset into (train/ and eval/)."),
    persons: int = typer.Option(300, help="Train persons (7 images each)."),
    eval_persons: Optional[int] = typer.Option(None, help="Eval persons (default: persons // 3)."),
    size: str = typer.Option("96x128", help="Image size WxH in pixels."),
    seed: int = typer.Option(0, help="Random seed."),
    faces: Optional[Path] = typer.Option(None, help="Folder of UTKFace photos (AGE_GENDER_RACE_*.jpg)."),
    contact_sheet: Optional[Path] = typer.Option(
        None, help="Where to write a PNG of sample images per class (default OUT/contact_sheet.png)."
    ),
    no_contact_sheet: bool = typer.Option(False, "--no-contact-sheet", help="Write no contact sheet."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT/train, OUT/eval if OUT is not empty."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a dataset in the competition layout (procedural faces, or real faces with drawn masks)."""
    from maskcls_hpo.demo import write_contact_sheet, write_demo_dataset  # lazy: start-up of the CLI (numpy, PIL)

    summary = write_demo_dataset(
        out,
        persons=persons,
        eval_persons=eval_persons,
        size=size,
        seed=seed,
        faces=faces,
        progress=not quiet,
        overwrite=overwrite,
    )
    sheet = None if no_contact_sheet else write_contact_sheet(out, contact_sheet or Path(out) / "contact_sheet.png")
    w, h = summary.size
    kind = f"faces from {summary.faces}" if summary.faces else "procedural faces"
    print(
        f"wrote {out}: train {summary.persons} persons / {summary.train_images} images, eval "
        f"{summary.eval_persons} persons / {summary.eval_images} images ({w}x{h}, {kind}, seed {seed}) "
        f"in {summary.seconds:.1f} s"
    )
    if sheet is not None:
        print(f"contact sheet: {sheet}")


@verb("check-data")
def check_data_cmd(
    data_dir: Path = typer.Option(..., "--data-dir", help="Dataset root (train/ and eval/)."),
    age_bins: str = typer.Option("30,60", help="Age band edges in years."),
    corrections: Optional[str] = typer.Option(None, help="'known' or a corrections CSV (id,field,value)."),
) -> None:
    """Check a dataset: print its summary, or every problem by path (exit 1)."""
    from maskcls_hpo.data import check_dataset  # lazy: start-up of the CLI (pandas)
    from maskcls_hpo.labels import check_age_bins  # lazy: start-up of the CLI (numpy)
    from maskcls_hpo.results.dataset import dataset_tables  # lazy: start-up of the CLI (pandas)

    try:
        bins = check_age_bins(age_bins.split(","))
    except ValueError:
        fail(f"--age-bins must be two increasing ages in years, e.g. 30,60 (got {age_bins!r})")
    found = check_dataset(data_dir, age_bins=bins, corrections=corrections)
    if found.problems:
        _print_problems(found.problems)
        fail(f"{len(found.problems)} problem(s) in {data_dir}; fix them and run check-data again")
    out = Console()
    for table in dataset_tables(found, data_dir, bins):
        out.print(table)


def _print_problems(problems: list[str]) -> None:
    """One line per problem on stderr, as it is (no markup, never wrapped)."""
    for line in problems:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


# --- training -------------------------------------------------------------------------------------


@verb("train")
def train_cmd(
    config: Optional[Path] = typer.Option(None, help="Training config (YAML/JSON; an export file works)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Overrides the config's data_dir."),
    out: Optional[str] = typer.Option(
        None,
        metavar="PATH",
        help="Output folder (checkpoints, metrics.json; default runs/train, with --resume RUN_DIR itself).",
    ),
    epochs: Optional[int] = typer.Option(None, help="Overrides the config's epochs."),
    seed: Optional[int] = typer.Option(None, help="Overrides the config's seed (Python, NumPy, torch and the split)."),
    resume: Optional[Path] = typer.Option(
        None,
        help="Continue a run folder of `train` from its last.pt (its config.yaml unless --config; on the CPU the "
        "result equals an uninterrupted run).",
    ),
    full_data: bool = typer.Option(False, "--full-data", help="Train on every person (no validation)."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the config to be used (--config + options, or defaults) and exit."
    ),
) -> None:
    """Train one model from a config (independent of any study)."""
    import yaml  # lazy: start-up of the CLI

    from maskcls_hpo._util import check_output_folder  # lazy: start-up of the CLI
    from maskcls_hpo.config import ConfigError, resume_files, run_config, save_config  # lazy: start-up of the CLI
    from maskcls_hpo.data import load_train  # lazy: start-up of the CLI (pandas)

    last = None
    if resume is not None:
        last, config = resume_files(resume, config)
    out_dir = check_output_folder(out if out is not None else (resume or "runs/train"), "--out", ConfigError)
    flags = {
        "data_dir": str(data_dir) if data_dir else None,
        "epochs": epochs,
        "seed": seed,
        "full_data": full_data or None,
    }
    cfg = run_config(config, flags)
    if print_config:
        typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)
        return
    # Everything that can be checked is checked before anything is written (no run folder for a bad input).
    try:
        load_train(cfg.data_dir, age_bins=cfg.age_bins, corrections=cfg.corrections, verify=False)
    except DataError as err:
        _fail_data(err, cfg.data_dir, "; nothing written")
    done = 0
    if last is not None:
        from maskcls_hpo.checkpoint import check_resume  # lazy: torch

        done = check_resume(last, cfg)
    _setup_logging()
    logging.getLogger("maskcls_hpo.train").setLevel(logging.WARNING)  # the table below shows every epoch
    from maskcls_hpo.train import train  # lazy: torch

    out_console = Console(highlight=False, soft_wrap=True)
    resuming = f" (resuming from {last}, epoch {done + 1})" if last is not None else ""
    out_console.print(_train_header(cfg, out_dir) + resuming)
    out_console.print(EPOCH_COLUMNS)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        result = train(
            cfg,
            out_dir=out_dir,
            on_epoch=lambda r: out_console.print(_epoch_line(r, cfg.full_data)),
            resume_from=last,
            progress=console.is_terminal,
        )
    except DataError as err:
        _fail_data(err, cfg.data_dir)
    for line in _train_footer(result, cfg.full_data, out_dir):
        out_console.print(line)


EPOCH_COLUMNS = (
    f"{'epoch':>5} {'train loss':>10} {'val loss':>9} {'macro F1':>9} {'accuracy':>9} "
    f"{'mask F1':>8} {'gender F1':>9} {'age F1':>7} {'lr':>9} {'s':>6} {'img/s':>7}"
)
"""The header of `train`'s table, one row per epoch (:func:`_epoch_line`)."""


def _fail_data(err: DataError, data_dir: str, then: str = "") -> NoReturn:
    """Exit with a dataset's problems: one line each and a count, or the one problem; `then` ends the last line."""
    if len(err.problems) > 1:
        _print_problems(err.problems)
        fail(f"{len(err.problems)} problem(s) in {data_dir}; see `maskcls-hpo check-data`{then}")
    fail(f"{err}{then}")


def _train_header(cfg: TrainConfig, out: Path) -> str:
    """`train`'s first line: model, head, loss, optimizer, batch, seed, epochs, data and the run folder."""
    return (
        f"training {cfg.model} ({cfg.head} head, {cfg.loss}, {cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}, "
        f"seed {cfg.seed}) for {cfg.epochs} epoch(s) on {cfg.data_dir}{' (all persons)' if cfg.full_data else ''} "
        f"-> {out}"
    )


def _epoch_line(r: EpochResult, full_data: bool) -> str:
    """One row of `train`'s table (:data:`EPOCH_COLUMNS`); ``*`` marks a new best epoch (not with full_data)."""
    t = r.task_f1
    return (
        f"{r.epoch:>5} {r.train_loss:>10.4f} {r.val_loss:>9.4f} {r.val_f1:>9.4f} {r.val_accuracy:>9.4f} "
        f"{t['mask']:>8.4f} {t['gender']:>9.4f} {t['age']:>7.4f} {r.lr:>9.3g} {r.seconds:>6.1f} "
        f"{r.images_per_second:>7.0f}{'  *' if r.is_best and not full_data else ''}"
    )


def _train_footer(result: TrainResult, full_data: bool, out: Path) -> list[str]:
    """`train`'s closing lines: the epoch kept and its scores, the device, peak memory and the files written."""
    if full_data:
        kept = f"trained on all persons; the last epoch ({result.best_epoch}) is kept"
    else:
        kept = f"best epoch {result.best_epoch}: val macro F1 {result.best_f1:.4f}, accuracy {result.best_accuracy:.4f}"
    return [
        kept,
        f"device {result.device}, peak memory {result.peak_memory_bytes / 2**20:.0f} MiB, seed {result.seed}; "
        f"wrote {out}/model.pt, best.pt, last.pt, metrics.json, config.yaml",
    ]


# --- sweep service --------------------------------------------------------------------------------

STORAGE_HELP = (
    "Storage URL or SQLite path (default: env MASKCLS_HPO_STORAGE, else env OPTUNA_STORAGE, else "
    "sqlite:///storage/maskcls_hpo.db)."
)
PASSWORD_FILE_HELP = (
    "File holding the PostgreSQL password (default: env MASKCLS_HPO_PASSWORD_FILE; libpq also reads "
    "PGPASSWORD and ~/.pgpass), so that it is never on the command line."
)
STUDY_HELP = "Study name (default: the sweep file's stem; for readers: the only study in the storage)."
MLFLOW_HELP = (
    "MLflow tracking URI (e.g. sqlite:///mlflow.db, http://host:5000): each trial is logged as an MLflow run "
    "(needs pip install 'maskcls-hpo[mlflow]'). TensorBoard scalars are written in any case."
)
READER_STUDY_HELP = "Study name (default: the only study in the storage)."
CHECKPOINTS_HELP = (
    "Checkpoint root shared by all workers (default: checkpoints/ beside an SQLite file, else storage/checkpoints)."
)
WATCHDOG_HELP = (
    "Seconds without a finished epoch before a trial counts as hung: failed (reason hung), re-queued once, and "
    "its worker process replaced. The limit is the larger of this and 5x the trial's slowest epoch; the first "
    "epoch gets at least an hour. Default 600; 0 turns the watchdog off."
)

# The options every storage-reading verb shares, and every option of RunOptions (hpo/workers/_options.py): each is
# declared once here and used by every verb that takes it. `--study-name` is Optuna's own spelling
# (`optuna trials --study-name`), accepted as an alias. Values are checked by the API (RunOptions.from_flags),
# not here: the CLI parses and prints.
StorageOption = Annotated[Optional[str], typer.Option(help=STORAGE_HELP)]
PasswordFileOption = Annotated[Optional[Path], typer.Option("--password-file", help=PASSWORD_FILE_HELP)]
StudyOption = Annotated[Optional[str], typer.Option("--study", "--study-name", help=STUDY_HELP)]
ReaderStudyOption = Annotated[Optional[str], typer.Option("--study", "--study-name", help=READER_STUDY_HELP)]
WorkersOption = Annotated[
    int, typer.Option(help="Worker processes here (0: only prepare the study; run `maskcls-hpo worker` elsewhere).")
]
GpusOption = Annotated[Optional[str], typer.Option(help="Comma-separated GPU ids, assigned round-robin (e.g. 0,1).")]
DataDirOption = Annotated[
    Optional[str], typer.Option("--data-dir", metavar="PATH", help="Dataset root (overrides the configs' data_dir).")
]
TimeoutOption = Annotated[Optional[float], typer.Option(help="Seconds after which workers start no new trial.")]
HeartbeatOption = Annotated[Optional[int], typer.Option(help="Heartbeat interval in seconds (default 30).")]
GraceOption = Annotated[Optional[int], typer.Option(help="Seconds without heartbeat before a trial is stale (120).")]
CheckpointsOption = Annotated[Optional[str], typer.Option(metavar="PATH", help=CHECKPOINTS_HELP)]
MlflowOption = Annotated[Optional[str], typer.Option("--mlflow", help=MLFLOW_HELP)]
WatchdogOption = Annotated[Optional[float], typer.Option(help=WATCHDOG_HELP)]
MaxFailuresOption = Annotated[
    Optional[int],
    typer.Option("--max-consecutive-failures", help="A worker stops after this many failed trials in a row (5)."),
]
DeviceOption = Annotated[
    Optional[str], typer.Option(help="auto (CUDA when visible), cpu, cuda or cuda:N (default: the configs').")
]


def _setup_logging(verbose: bool = False) -> None:
    setup_logging(console, verbose=verbose)


def _resolve_storage(
    storage: Optional[str], must_exist: bool = False, password_file: Optional[Path] = None
) -> ResolvedStorage:
    """--storage, env MASKCLS_HPO_STORAGE, env OPTUNA_STORAGE or the default -> ``ResolvedStorage`` (url, source)."""
    from maskcls_hpo.hpo.store import resolve_storage  # lazy: start-up of the CLI (optuna)

    return resolve_storage(storage, must_exist=must_exist, password_file=password_file)


def _run_options(params: dict[str, Any]) -> RunOptions:
    """The verb's RunOptions flags (its parameters named as ``RunOptions.from_flags`` keywords) -> RunOptions."""
    from maskcls_hpo.hpo.workers import FLAGS, RunOptions  # lazy: start-up of the CLI (optuna)

    return RunOptions.from_flags(**{k: v for k, v in params.items() if k in FLAGS})


def _given(ctx: typer.Context, *names: str) -> list[str]:
    """The flags among `names` (parameter names) that the user typed (not left at their default)."""
    sources = {n: ctx.get_parameter_source(n) for n in names}
    return [n for n, source in sources.items() if source is not None and source.name != "DEFAULT"]


def _events(on_progress: Callable[[Progress], None] | None, stop_live: Callable[[], None] | None = None) -> SweepEvents:
    """The live view's callbacks: messages on stderr, progress frames, and a yes/no prompt on a terminal."""
    from maskcls_hpo.hpo.workers import SweepEvents  # lazy: start-up of the CLI (optuna)

    def ask(question: str) -> bool:
        if stop_live is not None:
            stop_live()
        try:
            return typer.confirm(question, default=False, err=True)
        except (KeyboardInterrupt, EOFError, typer.Abort):  # a second Ctrl-C: leave it alone
            return False

    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    return SweepEvents(on_progress=on_progress, on_message=say, ask=ask if console.is_terminal else None)


@contextlib.contextmanager
def _live_view() -> Iterator[SweepEvents]:
    """A terminal gets a table redrawn in place; a file (output redirected) one plain line per epoch and trial."""
    from maskcls_hpo.results.live import live_view  # lazy: start-up of the CLI (optuna)

    with live_view(console) as (on_progress, stop):
        yield _events(on_progress, stop)


def _finish_run(result: SweepResult | ConfirmResult, best: str = "") -> None:
    """The closing lines of `launch` / `confirm`: the message, `best` (the best trial) once workers ran, the exit
    code (130 interrupted, 1 short)."""
    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    if result.interrupted:
        say(result.message)
        raise typer.Exit(130)
    if not result.worker_exit_codes:  # nothing to do, or --workers 0
        say(result.message)
        return
    console.print()
    if result.reached:
        say(result.message)
    if best:
        say(best)


SLURM_FLAGS = (
    "gpus_per_worker",
    "cpus_per_task",
    "partition",
    "time_limit",
    "sbatch_arg",
    "detach",
    "dry_run",
    "cancel_on_exit",
)


@verb("lr-range")
def lr_range_cmd(
    sweep_file: Path = typer.Argument(..., help="Sweep file, e.g. sweeps/smoke.py."),
    steps: int = typer.Option(200, "--steps", help="Training steps with an exponentially rising lr (>= 10)."),
    data_dir: DataDirOption = None,
    device: DeviceOption = None,
) -> None:
    """Learning-rate range test (Smith 2017) on the sweep's base config: the usable lr range; stores nothing."""
    from maskcls_hpo.hpo.launch import lr_range  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.hpo.trial import lr_range_line  # lazy: start-up of the CLI (optuna)

    _setup_logging()
    found = lr_range(sweep_file, steps, options=_run_options(locals()))
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"{lr_range_line(found)}; the loss {'diverged' if found['diverged'] else 'did not diverge'}")
    if found["sweep_low"] is not None:
        out.print(f"the sweep file draws lr from {found['sweep_low']:.3g} .. {found['sweep_high']:.3g}")
    out.print("set LR_RANGE_TEST = True in the sweep file to have `launch` measure it and sample lr from it")


@verb("launch")
def launch_cmd(
    ctx: typer.Context,
    sweep_file: Path = typer.Argument(..., help="Sweep file, e.g. sweeps/smoke.py."),
    n_trials: Optional[int] = typer.Option(
        None,
        "--n-trials",
        help="Finished (COMPLETE + PRUNED) trials the study should hold (default 20; with --budget-epochs: no cap).",
    ),
    budget_epochs: Optional[int] = typer.Option(
        None,
        "--budget-epochs",
        help="The most epochs all trials together may train (promoted trials included); a trial starts only if its "
        "epochs fit.",
    ),
    workers: WorkersOption = 1,
    gpus: GpusOption = None,
    data_dir: DataDirOption = None,
    timeout: TimeoutOption = None,
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    study: StudyOption = None,
    heartbeat_interval: HeartbeatOption = None,
    grace_period: GraceOption = None,
    checkpoints: CheckpointsOption = None,
    mlflow: MlflowOption = None,
    max_consecutive_failures: MaxFailuresOption = None,
    device: DeviceOption = None,
    backend: str = typer.Option(
        "local", help="Where the workers run: local (processes here) or slurm (one Slurm array job of --workers tasks)."
    ),
    gpus_per_worker: int = typer.Option(0, "--gpus-per-worker", help="Slurm: GPUs per task (--gres=gpu:G)."),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task", help="Slurm: CPUs per task."),
    partition: Optional[str] = typer.Option(None, help="Slurm: partition (default: the cluster's default)."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Slurm: time limit per task, HH:MM:SS."),
    sbatch_arg: Optional[list[str]] = typer.Option(
        None, "--sbatch-arg", help="Slurm: one more #SBATCH line, e.g. --sbatch-arg=--qos=short (repeatable)."
    ),
    detach: bool = typer.Option(False, "--detach", help="Slurm: submit the array and return."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Slurm: write the sbatch script under the logs folder; submit nothing."
    ),
    cancel_on_exit: bool = typer.Option(
        False, "--cancel-on-exit", help="Slurm: scancel the array on Ctrl-C without asking."
    ),
    watchdog: WatchdogOption = None,
) -> None:
    """Create or resume a study and run workers until it holds --n-trials finished trials (or --budget-epochs)."""
    from maskcls_hpo.hpo.launch import default_trials, run_sweep  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.hpo.workers import make_backend  # lazy: start-up of the CLI (optuna)

    options = _run_options(locals())
    chosen = make_backend(
        backend,
        given=_given(ctx, *SLURM_FLAGS, "gpus"),
        gpus=gpus,
        gpus_per_worker=gpus_per_worker,
        cpus_per_task=cpus_per_task,
        partition=partition,
        time=time_limit,
        sbatch_args=tuple(sbatch_arg or ()),
        detach=detach,
        dry_run=dry_run,
        cancel_on_exit=True if cancel_on_exit else (None if sys.stdin.isatty() else False),
    )
    _setup_logging()
    with _live_view() as events:
        result = run_sweep(
            sweep_file,
            n_trials if n_trials is not None else default_trials(budget_epochs),
            workers=workers,
            study_name=study,
            options=options,
            backend=chosen,
            events=events,
            budget_epochs=budget_epochs,
        )
    value, trial = result.best_value, result.best_trial
    _finish_run(result, f"best val macro F1 {value:.4f} (trial {trial})" if value is not None else "")
    if not result.reached and result.worker_exit_codes:
        fail(result.message)  # the one line saying why (not also printed as progress)


@verb("worker")
def worker_cmd(
    sweep_file: Optional[Path] = typer.Argument(
        None, help="Sweep file (the same one the study was launched with); none with --confirm."
    ),
    confirm: bool = typer.Option(
        False,
        "--confirm",
        help="Join a confirm study (`maskcls-hpo confirm --workers 0`): its runs need no sweep file.",
    ),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Target finished trials (default: the study's)."),
    data_dir: DataDirOption = None,
    timeout: TimeoutOption = None,
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    study: StudyOption = None,
    worker_index: Optional[int] = typer.Option(
        None,
        help="Index of this worker: offsets the sampler seed (default: a random one, so that workers started "
        "alike on several machines or as compose replicas sample different params).",
    ),
    heartbeat_interval: HeartbeatOption = None,
    grace_period: GraceOption = None,
    checkpoints: CheckpointsOption = None,
    max_consecutive_failures: MaxFailuresOption = None,
    mlflow: MlflowOption = None,
    device: DeviceOption = None,
    watchdog: WatchdogOption = None,
) -> None:
    """Join a study as one worker (from another shell or machine) and run trials until the budget is met."""
    from maskcls_hpo.hpo.workers import join_worker  # lazy: start-up of the CLI (optuna)

    options = _run_options(locals())
    _setup_logging(verbose=True)
    try:
        report = join_worker(
            sweep_file, options, study_name=study, confirm=confirm, n_trials=n_trials, worker_index=worker_index
        )
    except KeyboardInterrupt:
        console.print("worker interrupted")
        raise typer.Exit(130) from None
    console.print(report.summary_line(), highlight=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@verb("status")
def status_cmd(
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    study: ReaderStudyOption = None,
) -> None:
    """Trial counts by state, the best trial, running trials with their last heartbeat, stale trials."""
    from maskcls_hpo.hpo.store import open_study  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.results.status import print_status  # lazy: start-up of the CLI (optuna)

    url = _resolve_storage(storage, must_exist=True, password_file=password_file).url
    print_status(open_study(storage, study, password_file=password_file), console, storage_url=url)


@verb("export")
def export_cmd(
    out: str = typer.Option("best.yaml", metavar="PATH", help="Output file (.yaml/.yml or .json)."),
    trial: Optional[int] = typer.Option(None, help="Export this trial number instead of the best."),
    top: Optional[int] = typer.Option(None, help="Export the best K COMPLETE trials to OUT-1, OUT-2, ..."),
    format: Optional[str] = typer.Option(None, "--format", help="yaml or json (default: from the suffix)."),
    single_split: bool = typer.Option(
        False, "--single-split", help="Rank by the single validation split even when a confirm study is finished."
    ),
    force: bool = typer.Option(
        False, "--force", help="Export --trial N even if it is not COMPLETE (PRUNED, FAIL: not trained to the end)."
    ),
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    study: ReaderStudyOption = None,
) -> None:
    """Write the best COMPLETE trial's full training config (plus study metadata) for `train --config`.

    The best is the confirmed winner when `maskcls-hpo confirm` finished a confirm study of this study. Paths in
    the file (data_dir, cache_dir) are absolute, so `train --config FILE` works from any folder.
    """
    from maskcls_hpo.hpo.select import export_trials, selection_ranking  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.hpo.store import open_study  # lazy: start-up of the CLI (optuna)

    url = _resolve_storage(storage, must_exist=True, password_file=password_file).url
    loaded = open_study(storage, study, password_file=password_file)

    def warn(line: str) -> None:
        console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)

    paths = export_trials(
        loaded, out, trial_number=trial, top=top, fmt=format, single_split=single_split, force=force, on_warning=warn
    )
    ranking = (  # the best only
        selection_ranking(loaded, single_split=single_split, limit=1, known_good=True, storage_url=url)
        if trial is None
        else None
    )
    if ranking is not None:
        console.print(f"ranking: {ranking.label}", highlight=False, soft_wrap=True)
        if ranking.reference is not None:
            console.print(ranking.reference.message, highlight=False, soft_wrap=True)
    for p in paths:
        console.print(f"wrote {p}", highlight=False)
    if ranking is not None and ranking.confirm is None:  # a confirmed ranking says its own runner-up line
        from maskcls_hpo.hpo.select import compare_runner_up  # lazy: start-up of the CLI (optuna)

        comparison = compare_runner_up(loaded, storage_url=url)
        if comparison is not None:
            console.print(comparison.message, highlight=False, soft_wrap=True)


@verb("confirm")
def confirm_cmd(
    study: str = typer.Option(
        ..., "--study", "--study-name", help="The sweep's study whose best configs are confirmed."
    ),
    top: int = typer.Option(3, "--top", help="How many of the best COMPLETE configs to re-train."),
    folds: int = typer.Option(5, "--folds", help="Person-grouped folds (stratified by gender x age band)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per fold."),
    race: Optional[bool] = typer.Option(
        None,
        "--race/--no-race",
        help="Stop a config once it is worse than the leader with 95% confidence (see --race-pairing); default: on "
        "when --folds x --seeds >= 4, a resumed confirm as it was made.",
        show_default=False,
    ),
    keep: Optional[list[int]] = typer.Option(
        None, "--keep", help="With --race: a trial (number in STUDY) that always runs to the end; repeatable."
    ),
    race_pairing: Optional[str] = typer.Option(
        None,
        "--race-pairing",
        help="How the race pairs a config with the leader: 'persons' (person bootstrap over the val persons of "
        "the rounds both ran, from round 1; default for a new confirm) or 'folds' (paired t test over >= 4 fold x "
        "seed results); a resumed confirm as it was made.",
        show_default=False,
    ),
    workers: WorkersOption = 1,
    gpus: GpusOption = None,
    name: Optional[str] = typer.Option(None, help="Name of the confirm study (default STUDY-confirm)."),
    data_dir: DataDirOption = None,
    timeout: TimeoutOption = None,
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    heartbeat_interval: HeartbeatOption = None,
    grace_period: GraceOption = None,
    checkpoints: CheckpointsOption = None,
    mlflow: MlflowOption = None,
    max_consecutive_failures: MaxFailuresOption = None,
    device: DeviceOption = None,
    watchdog: WatchdogOption = None,
) -> None:
    """Re-train the --top best configs on --folds folds (x --seeds) as a linked study; print mean, s.e., winner."""
    from maskcls_hpo.hpo.select import format_summary, run_confirm  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.hpo.workers import LocalBackend  # lazy: start-up of the CLI (optuna)

    options = _run_options(locals())
    _setup_logging()
    with _live_view() as events:
        result = run_confirm(
            study,
            top,
            folds,
            seeds,
            name=name,
            workers=workers,
            options=options,
            backend=LocalBackend.from_flag(gpus),
            events=events,
            race=race,
            protected=keep,
            race_pairing=race_pairing,
        )
    _finish_run(result)
    out = Console(highlight=False, soft_wrap=True)
    for line in format_summary(result.summary):
        out.print(line)
    if not result.reached and result.worker_exit_codes:
        fail(result.message)  # the one line saying why (not also printed as progress)


@verb("finalize")
def finalize_cmd(
    study: str = typer.Option(..., "--study", "--study-name", help="The sweep's study."),
    out: str = typer.Option("submission.csv", metavar="PATH", help="Submission CSV to write (ImageID,ans)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per config (models in the ensemble)."),
    top: int = typer.Option(1, "--top", help="How many of the best configs (confirmed ranking when there is one)."),
    tta: bool = typer.Option(False, "--tta", help="Average each model with its horizontally flipped input."),
    data_dir: DataDirOption = None,
    single_split: bool = typer.Option(
        False, "--single-split", help="Rank by the single validation split even when a confirm study is finished."
    ),
    ensemble_selection: bool = typer.Option(
        True,
        "--ensemble-selection/--no-ensemble-selection",
        help="With a confirm study: mix the confirmed configs by ensemble selection when that beats the winner "
        "out of fold beyond noise.",
    ),
    device: DeviceOption = None,
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """Retrain the winner (confirmed, else best) on all persons with --seeds seeds, ensemble, write the submission."""
    from maskcls_hpo.hpo.select import finalize  # lazy: start-up of the CLI (optuna)

    options = _run_options(locals())
    _setup_logging()
    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    result = finalize(
        study,
        out,
        seeds=seeds,
        top=top,
        tta=tta,
        single_split=single_split,
        options=options,
        on_message=say,
        ensemble_selection=ensemble_selection,
    )
    for line in result.summary_lines():
        say(line)


# --- dashboard and report -------------------------------------------------------------------------


@verb("dashboard")
def dashboard_cmd(
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    study: ReaderStudyOption = None,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (no login: loopback unless you say otherwise)."),
    port: int = typer.Option(8080, min=0, max=65535, help="Port to listen on (0: any free port)."),
    allow_writes: bool = typer.Option(
        False,
        "--allow-writes",
        help="Let visitors change the storage (delete studies, upload artifacts, edit notes, tell trials); "
        "default: read-only, every write answered 403.",
    ),
) -> None:
    """Run optuna-dashboard on the study database and the trials' artifacts (read-only; Ctrl-C stops it)."""
    from maskcls_hpo.results.dashboard import (
        check_host,
        dashboard_app,
        is_loopback,
        serve_dashboard,
    )  # lazy: start-up of the CLI (optuna)

    check_host(host)  # before the storage is opened: a bad --host changes nothing
    _setup_logging()
    resolved = _resolve_storage(storage, must_exist=True, password_file=password_file)
    dash = dashboard_app(resolved.url, allow_writes=allow_writes, study=study)
    studies = ", ".join(dash.studies) if dash.studies else "none yet"
    mode = "writes allowed" if dash.writable else "read-only"
    console.print(
        f"optuna-dashboard on {resolved.shown} (studies: {studies}; {mode}); artifacts in {dash.artifact_dir}",
        highlight=False,
        soft_wrap=True,
    )
    if not is_loopback(host):
        can = "open and change" if dash.writable else "open"
        console.print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can {can} "
            "the dashboard (it has no login)",
            highlight=False,
        )

    def ready(address: str) -> None:
        console.print(f"open {address}  (Ctrl-C to stop)", highlight=False, soft_wrap=True)

    try:
        serve_dashboard(dash, host=host, port=port, on_ready=ready)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}; pass another --port or --host")
    except KeyboardInterrupt:
        console.print("dashboard stopped", highlight=False)


@verb("report")
def report_cmd(
    out: str = typer.Option("report.html", metavar="PATH", help="HTML file to write (self-contained, opens offline)."),
    top: int = typer.Option(10, min=1, help="Rows of the top-trials table."),
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    study: ReaderStudyOption = None,
) -> None:
    """Write one HTML page with Optuna's plots (history, intermediate values, importances, ...) and the top trials."""
    from maskcls_hpo.hpo.store import open_study  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.hpo.trial import open_artifact_store  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.results.report import write_report  # lazy: start-up of the CLI (optuna)

    url = _resolve_storage(storage, must_exist=True, password_file=password_file).url
    loaded = open_study(storage, study, password_file=password_file)
    store, folder = open_artifact_store(url, create=False)
    try:
        path = write_report(loaded, out, top=top, artifact_store=store if folder.is_dir() else None)
    except OSError as err:
        fail(f"cannot write {out}: {err.strerror or err}")
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", highlight=False)


# --- submission -----------------------------------------------------------------------------------


@verb("predict")
def predict_cmd(
    checkpoint: Optional[list[Path]] = typer.Option(
        None, "--checkpoint", help="A checkpoint (model.pt / best.pt of `train`); repeat to ensemble."
    ),
    data_dir: Path = typer.Option(..., "--data-dir", help="Dataset root with eval/info.csv and eval/images/."),
    out: str = typer.Option("submission.csv", metavar="PATH", help="Submission CSV to write (ImageID,ans)."),
    tta: bool = typer.Option(False, "--tta", help="Average each model with its horizontally flipped input."),
    study: Optional[str] = typer.Option(
        None, "--study", "--study-name", help="Ensemble the best checkpoints of this study's top trials."
    ),
    top: Optional[int] = typer.Option(None, min=1, help="How many COMPLETE trials of the study (default 1)."),
    storage: StorageOption = None,
    password_file: PasswordFileOption = None,
    checkpoints: Optional[Path] = typer.Option(None, help=CHECKPOINTS_HELP),
    batch_size: int = typer.Option(64, min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when visible), cpu or cuda."),
    cache_dir: str = typer.Option(
        "storage/cache", metavar="PATH", help="Decoded-image cache folder (shared with training)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Predict eval/info.csv with one checkpoint or an ensemble and write the submission atomically."""
    import numpy as np  # lazy: start-up of the CLI

    from maskcls_hpo.hpo.select import study_checkpoints  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.hpo.store import open_study, storage_folder  # lazy: start-up of the CLI (optuna)
    from maskcls_hpo.labels import NUM_CLASSES  # lazy: start-up of the CLI
    from maskcls_hpo.predict import predict  # lazy: torch

    paths = list(checkpoint or [])
    if study is not None or top is not None:
        url = _resolve_storage(storage, must_exist=True, password_file=password_file).url
        loaded = open_study(storage, study, password_file=password_file)
        paths += study_checkpoints(loaded, top or 1, checkpoints or storage_folder(url, "checkpoints"))
    if not paths:
        fail("nothing to predict with: pass --checkpoint PATH (repeatable) or --study NAME --top K")
    try:
        result = predict(
            paths,
            data_dir,
            out=out,
            tta=tta,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
            progress=not quiet,
        )
    except DataError as err:
        for line in err.problems:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        fail(f"{len(err.problems)} problem(s) in {data_dir / 'eval'}; nothing written to {out}")
    except PredictError as err:
        fail(f"{err}; nothing written to {out}")
    for path, head in zip(result.checkpoints, result.heads, strict=True):
        console.print(f"checkpoint {path} ({head} head)", highlight=False)
    counts = ", ".join(f"{c}: {n}" for c, n in enumerate(np.bincount(result.labels, minlength=NUM_CLASSES)) if n)
    console.print(
        f"wrote {out}: {len(result.labels)} rows from {len(paths)} checkpoint(s) (ensemble rule {result.rule}, "
        f"tta {'on' if tta else 'off'}, device {result.device}); predicted classes {counts}",
        highlight=False,
    )
    answers = data_dir / "eval" / "answers.csv"
    if answers.is_file():
        console.print(f"score it: maskcls-hpo score {out} --answers {answers}", highlight=False)


@verb("score")
def score_cmd(
    submission: Path = typer.Argument(..., help="Submission CSV (ImageID,ans)."),
    answers: Path = typer.Option(..., "--answers", help="True classes (ImageID,ans), e.g. DATA_DIR/eval/answers.csv."),
) -> None:
    """Accuracy and macro F1 (18 classes) of a submission against an answers file, matched by ImageID."""
    from maskcls_hpo.scoring import score  # lazy: start-up of the CLI (pandas)

    result = score(submission, answers)
    t = result["task_f1"]
    print(f"images    {result['n']}")
    print(f"accuracy  {result['accuracy']:.4f}")
    print(f"macro F1  {result['f1']:.4f}")
    print(f"task F1   mask {t['mask']:.4f}, gender {t['gender']:.4f}, age {t['age']:.4f}")
