"""The `maskcls-hpo` command line (Typer). Each verb parses its options, calls one module, prints.

Heavy imports (torch, timm, optuna) happen inside the verbs so that `--help` stays fast. Errors that a
user can fix (bad data, bad config, bad storage URL) are printed as one line and exit with code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one red line on stderr and exit with `code` (never a traceback)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# --- data -----------------------------------------------------------------------------------------


@app.command("demo-data")
def demo_data_cmd(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (train/ and eval/)."),
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
    from maskcls_hpo.demo import DemoDataError, write_contact_sheet, write_demo_dataset

    try:
        summary = write_demo_dataset(
            out, persons=persons, eval_persons=eval_persons, size=size, seed=seed, faces=faces,
            progress=not quiet, overwrite=overwrite,
        )
        sheet = None if no_contact_sheet else write_contact_sheet(out, contact_sheet or out / "contact_sheet.png")
    except DemoDataError as err:
        fail(str(err))
    w, h = summary.size
    kind = f"faces from {summary.faces}" if summary.faces else "procedural faces"
    print(
        f"wrote {out}: train {summary.persons} persons / {summary.train_images} images, eval "
        f"{summary.eval_persons} persons / {summary.eval_images} images ({w}x{h}, {kind}, seed {seed}) "
        f"in {summary.seconds:.1f} s"
    )
    if sheet is not None:
        print(f"contact sheet: {sheet}")


@app.command("check-data")
def check_data_cmd(
    data_dir: Path = typer.Option(..., "--data-dir", help="Dataset root (train/ and eval/)."),
    age_bins: str = typer.Option("30,60", help="Age band edges in years."),
    corrections: Optional[str] = typer.Option(None, help="'known' or a corrections CSV (id,field,value)."),
) -> None:
    """Check a dataset: print its summary, or every problem by path (exit 1)."""
    from rich.table import Table

    from maskcls_hpo.data import DataError, check_train, load_eval, load_train, summarize

    try:
        bins = tuple(int(v) for v in age_bins.split(","))
        if len(bins) != 2 or not 0 < bins[0] < bins[1]:
            raise ValueError
    except ValueError:
        fail(f"--age-bins must be two increasing ages in years, e.g. 30,60 (got {age_bins!r})")
    problems = check_train(data_dir)
    samples = None
    if not problems:
        try:
            samples = load_train(data_dir, age_bins=bins, corrections=corrections, verify=False)
        except DataError as err:
            problems += err.problems
    eval_part = None
    if (data_dir / "eval").exists():
        try:
            eval_part = load_eval(data_dir)
        except DataError as err:
            problems += err.problems
    if problems:
        for line in problems:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        fail(f"{len(problems)} problem(s) in {data_dir}; fix them and run check-data again")

    s = summarize(samples)
    a, b = bins
    mask_names, gender_names = ("wear", "incorrect", "not wear"), ("male", "female")
    band_names = (f"<{a}", f"{a}-{b - 1}", f">={b}")
    out = Console()
    overview = Table(title=f"train part of {data_dir}", show_header=False)
    overview.add_row("persons", str(s["persons"]))
    overview.add_row("images", str(s["images"]))
    overview.add_row("extensions", ", ".join(f"{k} {v}" for k, v in s["extensions"].items()))
    for task, names in (("mask", mask_names), ("gender", gender_names), ("age", band_names)):
        overview.add_row(task, ", ".join(f"{n} {c}" for n, c in zip(names, s[task], strict=True)))
    for change in samples.attrs.get("corrections", []):
        overview.add_row("correction", change)
    skipped = samples.attrs.get("corrections_skipped", [])
    if skipped:
        overview.add_row("corrections skipped", f"{len(skipped)} id(s) not in the data")
    overview.add_row("eval images", str(len(eval_part)) if eval_part is not None else "no eval/ folder")
    out.print(overview)
    classes = Table(title="images per class", caption="class = mask * 6 + gender * 3 + age band")
    for col in ("class", "mask", "gender", "age", "images"):
        classes.add_column(col, justify="right" if col in ("class", "images") else "left")
    for y, count in enumerate(s["classes"]):
        classes.add_row(str(y), mask_names[y // 6], gender_names[(y // 3) % 2], band_names[y % 3], str(count))
    out.print(classes)


# --- training -------------------------------------------------------------------------------------


@app.command("train")
def train_cmd(
    config: Optional[Path] = typer.Option(None, help="Training config (YAML/JSON; an export file works)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Overrides the config's data_dir."),
    out: Path = typer.Option(Path("runs/train"), help="Output folder (checkpoints, metrics.json)."),
    epochs: Optional[int] = typer.Option(None, help="Overrides the config's epochs."),
    full_data: bool = typer.Option(False, "--full-data", help="Train on every person (no validation)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the default config and exit."),
) -> None:
    """Train one model from a config (independent of any study)."""
    fail("train is not implemented yet")
