"""`check-data`'s summary of a dataset that checked out: the train part's counts, then the images per class.

Counts come from :func:`maskcls_hpo.data.summarize`; class ids, mask/gender names and age bands from
:mod:`maskcls_hpo.labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from maskcls_hpo.data import DatasetCheck, summarize
from maskcls_hpo.labels import GENDERS, MASK_NAMES, age_band_names, decode_label

__all__ = ["dataset_tables"]


def dataset_tables(check: DatasetCheck, data_dir: Path, age_bins: Sequence[int]) -> list[Table]:
    """Two tables for a dataset without problems: an overview of the train part (persons, images, file
    extensions, images by mask, gender and age band, corrections applied or skipped, eval images), and the
    images of each of the 18 classes.

    Args:
        check: what :func:`~maskcls_hpo.data.check_dataset` found (no problems, so `check.samples` is set).
        data_dir: the dataset root, for the first table's title.
        age_bins: the two age band edges in years the samples were loaded with.
    """
    samples = check.samples
    assert samples is not None, "a dataset with problems has no summary"
    s = summarize(samples)
    band_names = age_band_names(age_bins)
    overview = Table(title=f"train part of {data_dir}", show_header=False)
    overview.add_row("persons", str(s["persons"]))
    overview.add_row("images", str(s["images"]))
    overview.add_row("extensions", ", ".join(f"{k} {v}" for k, v in s["extensions"].items()))
    for task, names, counts in (
        ("mask", MASK_NAMES, s["mask"]),
        ("gender", GENDERS, s["gender"]),
        ("age", band_names, s["age"]),
    ):
        overview.add_row(task, ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True)))
    for change in samples.attrs.get("corrections", []):
        overview.add_row("correction", change)
    skipped = samples.attrs.get("corrections_skipped", [])
    if skipped:
        overview.add_row("corrections skipped", f"{len(skipped)} id(s) not in the data")
    overview.add_row("eval images", str(len(check.eval)) if check.eval is not None else "no eval/ folder")
    classes = Table(title="images per class", caption="class id: see maskcls_hpo.labels")
    for col in ("class", "mask", "gender", "age", "images"):
        classes.add_column(col, justify="right" if col in ("class", "images") else "left")
    for y, count in enumerate(s["classes"]):
        mask, gender, band = decode_label(y)
        classes.add_row(str(y), MASK_NAMES[mask], GENDERS[gender], band_names[band], str(count))
    return [overview, classes]
