"""The competition data as it lies on disk: layout, checks, labels, corrections and the person split.

Layout (docs/architecture.md, "Data layout")::

    DATA_DIR/train/train.csv          columns: id, gender, race, age, path
    DATA_DIR/train/images/<path>/     7 files per person: mask1..mask5, incorrect_mask, normal
                                      (.jpg .jpeg .png in any case; hidden ``._*`` files are ignored)
    DATA_DIR/eval/info.csv            columns: ImageID, ans
    DATA_DIR/eval/images/<ImageID>

Labels: the 18-class scheme of :mod:`maskcls_hpo.labels`, with mask wear=0 (mask1..mask5),
incorrect=1 (incorrect_mask), not wear=2 (normal); gender male=0, female=1; age band by
``age_bins=(a, b)``: age < a -> 0, a <= age < b -> 1, age >= b -> 2.

Every check runs before anything is loaded and reports *every* problem, one line each, in the form
``PATH: what is wrong; what to do`` (problem C9), so a broken dataset never fails deep inside a trial.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from PIL import Image

from maskcls_hpo.errors import DataError
from maskcls_hpo.labels import (
    GENDERS,
    MASK_FILES,
    NUM_CLASSES,
    age_band,
    check_age_bins,
    decode_label,
    encode_label,
    mask_of_file,
)

__all__ = [
    "DataError",
    "MASK_FILES",
    "IMAGE_EXTENSIONS",
    "TRAIN_COLUMNS",
    "KNOWN_CORRECTIONS",
    "encode_label",
    "decode_label",
    "age_band",
    "check_train",
    "load_train",
    "apply_corrections",
    "split_by_person",
    "person_strata",
    "check_folds",
    "assign_folds",
    "split_by_fold",
    "load_eval",
    "summarize",
    "DatasetSummary",
    "DatasetCheck",
    "check_dataset",
    "verify_image",
]

"""The 7 file stems of a person folder, in the order rows are sorted."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
"""Accepted image extensions, compared case-insensitively (``.JPEG`` and ``.Png`` are fine)."""

TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
"""Columns ``train/train.csv`` must have."""


AGE_RANGE = (0, 120)
"""Ages (years, inclusive) accepted as sane; anything else is reported as a problem."""


KNOWN_CORRECTIONS: tuple[tuple[str, str, str], ...] = (
    # incorrect_mask <-> normal swapped in the real set
    ("000020", "swap_mask_normal", "1"),
    ("004418", "swap_mask_normal", "1"),
    ("005227", "swap_mask_normal", "1"),
    # labelled female, actually male
    *((f"00{n}", "gender", "male") for n in range(6359, 6365)),
    # labelled male, actually female
    ("001498-1", "gender", "female"),
    ("004432", "gender", "female"),
)
"""The ``known`` preset: fixes that competitors published for the real set, as ``(id, field, value)``."""

CORRECTION_FIELDS = ("gender", "swap_mask_normal")
"""Fields a corrections CSV may change."""


# --- image checks -----------------------------------------------------------------------------------


def verify_image(path: str | Path) -> str | None:
    """Check that ``path`` is an image PIL can read; ``None`` when fine, else the reason (one line).

    Opens the file, runs ``Image.verify()`` (structure and, for PNG, CRCs) and then decodes it at a
    reduced scale (``Image.draft``; JPEG decodes at 1/8 size) so truncated files are caught too
    while staying cheap (about a millisecond for a 384x512 JPEG).
    """
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.draft(None, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        return f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    return None


def _verify_many(
    paths: Sequence[Path], workers: int | None = None, fix: str = "or remove the person from train.csv"
) -> list[str]:
    """Verify images on a thread pool (PIL releases the GIL while decoding); problem lines by path."""
    if not paths:
        return []
    workers = workers or min(32, max(4, 2 * _cpu_count()))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        reasons = list(pool.map(verify_image, paths, chunksize=16))
    return [
        f"{p}: unreadable image ({why}); replace it with a valid .jpg/.jpeg/.png {fix}"
        for p, why in zip(paths, reasons, strict=True)
        if why is not None
    ]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --- train part: scan -------------------------------------------------------------------------------


@dataclass
class _Person:
    person_id: str
    gender: int
    race: str
    age: int
    folder: str
    files: dict[str, Path]  # mask file stem -> image path


def _read_csv(path: Path) -> pd.DataFrame:
    # NOTE: everything as str so that ids keep their leading zeros ("000001") and values are checked by us.
    return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)


def _load_csv(path: Path, not_found: str) -> pd.DataFrame:
    """Read a csv of strings with stripped column names; DataError naming the file when missing/unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: {not_found}")
    try:
        table = _read_csv(path)
    except Exception as err:  # noqa: BLE001 - pandas raises ParserError, UnicodeDecodeError, EmptyDataError
        raise DataError(f"{path}: cannot read the csv ({type(err).__name__}: {err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _is_hidden(name: str) -> bool:
    # macOS leaves "._mask1.jpg" resource forks beside the images; ".DS_Store" and similar are hidden too.
    return name.startswith(".")


def _scan_person_folder(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The 7 image files of one person folder, and a problem line for each thing wrong with it."""
    problems: list[str] = []
    by_stem: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        path = Path(entry.path)
        stem, ext = os.path.splitext(entry.name)
        if not entry.is_file() or ext.lower() not in IMAGE_EXTENSIONS or stem.lower() not in MASK_FILES:
            problems.append(
                f"{path}: unknown file name; a person folder holds exactly {', '.join(MASK_FILES)} "
                f"(extension {'/'.join(IMAGE_EXTENSIONS)}, any case): rename or remove it"
            )
            continue
        by_stem.setdefault(stem.lower(), []).append(path)
    n_images = sum(len(v) for v in by_stem.values())
    missing = [s for s in MASK_FILES if s not in by_stem]
    doubled = {s: v for s, v in by_stem.items() if len(v) > 1}
    if missing:
        problems.append(
            f"{folder}: has {n_images} of the 7 image files; missing {', '.join(missing)}: "
            "add the file(s) or remove the person from train.csv"
        )
    if doubled:
        which = "; ".join(f"{s} {len(v)} times ({', '.join(p.name for p in v)})" for s, v in doubled.items())
        problems.append(f"{folder}: has {n_images} image files, expected 7: {which}; keep one file per name")
    files = {s: v[0] for s, v in by_stem.items()}
    return files, problems


def _parse_row(row: Mapping[Hashable, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Check one train.csv row; return the parsed values and the problems (``where`` names the row)."""
    problems: list[str] = []
    person_id = row["id"].strip()
    gender = row["gender"].strip()
    age_text = row["age"].strip()
    folder = row["path"].strip()
    if not person_id:
        problems.append(f"{where}: empty id; give every person an id such as 000001")
    if gender not in GENDERS:
        problems.append(f"{where}: bad gender value {gender!r}; expected male or female (lower case)")
    age: int | None = None
    if re.fullmatch(r"\d+", age_text) and AGE_RANGE[0] <= int(age_text) <= AGE_RANGE[1]:
        age = int(age_text)
    else:
        problems.append(
            f"{where}: bad age {age_text!r}; expected a whole number of years in {AGE_RANGE[0]}..{AGE_RANGE[1]}"
        )
    if not folder or "/" in folder or "\\" in folder or folder in (".", ".."):
        problems.append(f"{where}: bad path {folder!r}; expected a folder name such as 000001_female_Asian_45")
    parts = folder.split("_")
    if not problems and len(parts) == 4:
        # The folder name repeats the row (<id>_<gender>_<race>_<age>); a disagreement means one was edited.
        named = {"id": parts[0], "gender": parts[1], "age": parts[3]}
        given = {"id": person_id, "gender": gender, "age": age_text}
        diff = [f"{k} {given[k]!r} vs {named[k]!r}" for k in named if named[k] != given[k]]
        if diff:
            problems.append(
                f"{where}: the row disagrees with its folder name {folder!r} ({'; '.join(diff)}); make them "
                "agree (fix wrong labels with a corrections file, not by editing train.csv)"
            )
    values = {"person_id": person_id, "gender": gender, "race": row["race"].strip(), "age": age, "folder": folder}
    return values, problems


def _scan_train(
    data_dir: str | Path, verify: bool = True, workers: int | None = None
) -> tuple[list[_Person], list[str]]:
    """Walk the train part; return ``(persons, problems)`` (persons only meaningful without problems)."""
    data_dir = Path(data_dir)
    train_dir = data_dir / "train"
    csv_path = train_dir / "train.csv"
    images_dir = train_dir / "images"
    if not data_dir.is_dir():
        return [], [f"{data_dir}: dataset folder not found; pass the folder that holds train/ and eval/"]
    if not csv_path.is_file():
        return [], [
            f"{csv_path}: train.csv not found; expected DATA_DIR/train/train.csv with columns "
            f"{', '.join(TRAIN_COLUMNS)} (the competition layout)"
        ]
    try:
        table = _read_csv(csv_path)
    except Exception as err:  # noqa: BLE001 - pandas raises ParserError, UnicodeDecodeError, EmptyDataError
        return [], [f"{csv_path}: cannot read the csv ({type(err).__name__}: {err}); fix or replace the file"]
    table.columns = [str(c).strip() for c in table.columns]
    missing_cols = [c for c in TRAIN_COLUMNS if c not in table.columns]
    if missing_cols:
        problems = [
            f"{csv_path}: missing column(s) {', '.join(missing_cols)}; train.csv needs the columns "
            f"{', '.join(TRAIN_COLUMNS)} (has {', '.join(table.columns)})"
        ]
        # The rows cannot be read, but every person folder can still be checked, so no problem hides behind
        # the column error (problem C9: every problem at once).
        if images_dir.is_dir():
            to_verify: list[Path] = []
            for folder in sorted(p for p in images_dir.iterdir() if p.is_dir() and not _is_hidden(p.name)):
                files, folder_problems = _scan_person_folder(folder)
                problems += folder_problems
                to_verify += files.values()
            if verify:
                problems += _verify_many(to_verify, workers)
        return [], problems
    if not images_dir.is_dir():
        return [], [f"{images_dir}: image folder not found; expected DATA_DIR/train/images/<path>/ per person"]
    if table.empty:
        return [], [f"{csv_path}: no rows; train.csv lists one person per row"]
    persons, problems, to_verify = _scan_rows(table, csv_path, images_dir)
    if verify:
        problems += _verify_many(to_verify, workers)
    return persons, problems


def _scan_rows(table: pd.DataFrame, csv_path: Path, images_dir: Path) -> tuple[list[_Person], list[str], list[Path]]:
    """Check every train.csv row and its person folder; return ``(persons, problems, image files to verify)``.

    A person is kept only when its row has no problem (its folder's problems are reported, not held against
    the row)."""
    problems: list[str] = []
    persons: list[_Person] = []
    seen_ids: dict[str, int] = {}
    seen_folders: dict[str, int] = {}
    to_verify: list[Path] = []
    for i, row in enumerate(table[list(TRAIN_COLUMNS)].to_dict("records")):
        line = i + 2  # the header is line 1
        where = f"{csv_path} line {line} ({row['path'].strip() or 'no path'})"
        values, row_problems = _parse_row(row, where)
        problems += row_problems
        pid, folder_name = values["person_id"], values["folder"]
        if pid and pid in seen_ids:
            problems.append(f"{where}: id {pid!r} already on line {seen_ids[pid]}; list each person once")
        if folder_name and folder_name in seen_folders:
            problems.append(
                f"{where}: path {folder_name!r} already on line {seen_folders[folder_name]}; list each folder once"
            )
        seen_ids.setdefault(pid, line)
        seen_folders.setdefault(folder_name, line)
        if any(p.startswith(f"{where}: bad path") for p in row_problems):
            continue
        folder = images_dir / folder_name
        if not folder.is_dir():
            problems.append(f"{folder}: image folder not found ({where}, id {pid!r}); add the folder or remove the row")
            continue
        files, folder_problems = _scan_person_folder(folder)
        problems += folder_problems
        to_verify += files.values()
        if not row_problems:
            persons.append(
                _Person(pid, GENDERS.index(values["gender"]), values["race"], values["age"], folder_name, files)
            )
    return persons, problems, to_verify


def check_train(data_dir: str | Path, workers: int | None = None) -> list[str]:
    """Every problem of the train part of ``data_dir``, one line each; ``[]`` when it is fine.

    Checks (problem C9): train.csv present and readable with the columns ``id, gender, race, age, path``;
    the image folder; per row: gender ``male``/``female``, age a whole number in 0..120, a ``path``
    whose folder exists and agrees with the row (``<id>_<gender>_<race>_<age>``), no duplicate id/path;
    per folder: exactly the 7 files ``mask1..mask5, incorrect_mask, normal`` (no 6, no 8, no unknown
    names; hidden ``._*`` files are ignored); every image opens and decodes with PIL (checked on a
    thread pool of ``workers`` threads, default ``2 x CPUs``).

    Each line reads ``PATH: what is wrong; what to do`` (PATH is the file, folder or ``train.csv line N``).
    """
    return _scan_train(data_dir, verify=True, workers=workers)[1]


def load_train(
    data_dir: str | Path,
    age_bins: Sequence[int] = (30, 60),
    corrections: str | Path | None = None,
    verify: bool = True,
) -> pd.DataFrame:
    """Load the train part: one row per image, sorted by ``(person_id, MASK_FILES order)``.

    Columns: ``path`` (str, absolute), ``person_id`` (str, e.g. ``"000001"``, ``"001498-1"``),
    ``folder`` (str), ``gender`` (0 male / 1 female), ``age`` (int, years), ``race`` (str),
    ``mask_file`` (the file's stem on disk, e.g. ``"incorrect_mask"``), ``mask`` (0 wear / 1 incorrect /
    2 not wear), ``age_band`` (0..2 by ``age_bins``), ``label`` (0..17, :func:`encode_label`).
    ``corrections`` (``"known"`` or a CSV path) is applied last (:func:`apply_corrections`); after a
    mask swap ``mask_file`` still names the file while ``mask`` holds the corrected state.
    ``verify=False`` skips decoding every image (the other checks still run).

    Raises:
        DataError: listing every problem that :func:`check_train` finds, before anything is loaded;
            or a bad corrections file.
        ValueError: bad ``age_bins``.
    """
    bins = check_age_bins(age_bins)
    persons, problems = _scan_train(data_dir, verify=verify)
    if problems:
        raise DataError(problems)
    records = []
    for person in sorted(persons, key=lambda p: p.person_id):
        band = age_band(person.age, bins)
        for stem in MASK_FILES:
            mask = mask_of_file(stem)
            records.append(
                {
                    "path": os.path.abspath(person.files[stem]),
                    "person_id": person.person_id,
                    "folder": person.folder,
                    "gender": person.gender,
                    "age": person.age,
                    "race": person.race,
                    "mask_file": stem,
                    "mask": mask,
                    "age_band": band,
                    "label": encode_label(mask, person.gender, band),
                }
            )
    samples = pd.DataFrame.from_records(records)
    samples = samples.astype(
        {"gender": "int64", "age": "int64", "mask": "int64", "age_band": "int64", "label": "int64"}
    )
    samples.attrs["age_bins"] = bins
    samples.attrs["data_dir"] = os.path.abspath(data_dir)
    if corrections is not None:
        samples = apply_corrections(samples, corrections)
    return samples


# --- corrections ------------------------------------------------------------------------------------

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


def _read_corrections(path: Path) -> list[tuple[str, str, str]]:
    """Parse a corrections CSV into ``(id, field, value)`` triples; DataError naming file and line."""
    table = _load_csv(path, "corrections file not found; give 'known' or a CSV with columns id,field,value")
    cols = list(table.columns)
    long_form = {"id", "field", "value"} <= set(cols)
    wide_fields = [c for c in cols if c in CORRECTION_FIELDS]
    if not long_form and ("id" not in cols or not wide_fields):
        raise DataError(
            f"{path}: columns {', '.join(cols)}; a corrections file has the columns id,field,value "
            f"(field one of {', '.join(CORRECTION_FIELDS)}) or id,gender or id,swap_mask_normal"
        )
    if not long_form:
        unknown = [c for c in cols if c != "id" and c not in CORRECTION_FIELDS]
        if unknown:
            raise DataError(
                f"{path} line 1: unknown column(s) {', '.join(unknown)}; known fields: {', '.join(CORRECTION_FIELDS)}"
            )
    triples: list[tuple[str, str, str]] = []
    problems: list[str] = []
    for i, row in enumerate(table.to_dict("records")):
        where = f"{path} line {i + 2}"
        pid = row["id"].strip()
        if not pid:
            problems.append(f"{where}: empty id")
            continue
        pairs = (
            [(row["field"].strip(), row["value"].strip())]
            if long_form
            else [(f, row[f].strip()) for f in wide_fields if row[f].strip() != ""]
        )
        for field, value in pairs:
            if field not in CORRECTION_FIELDS:
                problems.append(f"{where}: unknown field {field!r}; known fields: {', '.join(CORRECTION_FIELDS)}")
            elif field == "gender" and value.lower() not in GENDERS:
                problems.append(f"{where}: bad gender value {value!r} for id {pid}; expected male or female")
            elif field == "swap_mask_normal" and value.lower() not in _TRUE + _FALSE:
                problems.append(
                    f"{where}: bad swap_mask_normal value {value!r} for id {pid}; expected 1/true or 0/false"
                )
            else:
                triples.append((pid, field, value.lower()))
    if problems:
        raise DataError(problems)
    return triples


def apply_corrections(
    samples: pd.DataFrame, corrections: str | Path | Iterable[tuple[str, str, str]] | None
) -> pd.DataFrame:
    """Apply label corrections to the rows of :func:`load_train`; returns a corrected copy.

    ``corrections`` is ``None`` (no change), ``"known"`` (:data:`KNOWN_CORRECTIONS`, the fixes
    published for the real set), a CSV path, or an iterable of ``(id, field, value)`` triples.
    A CSV has the columns ``id,field,value`` or the two-column forms ``id,gender`` and
    ``id,swap_mask_normal``. Fields:

    - ``gender``: ``male``/``female``; sets the person's gender.
    - ``swap_mask_normal``: ``1``/``true`` (``0``/``false`` is a no-op); the files ``incorrect_mask``
      and ``normal`` show each other, so the ``incorrect_mask`` file gets mask 2 and ``normal`` mask 1
      (setting, not toggling: listing a person twice changes nothing more).

    Labels are recomputed. Ids that are not in ``samples`` are skipped without a warning (the preset
    names persons of the real set, absent from demo data); ``result.attrs["corrections"]`` lists the
    changes made and ``result.attrs["corrections_skipped"]`` the ids not found.

    Raises:
        DataError: a missing/unreadable CSV, unknown columns or fields, or bad values (file and line).
    """
    out = samples.copy()
    out.attrs = dict(samples.attrs)
    if corrections is None:
        return out
    if isinstance(corrections, (str, Path)):
        if str(corrections) == "known":
            triples = list(KNOWN_CORRECTIONS)
        else:
            triples = _read_corrections(Path(corrections))
    else:
        triples = [(str(pid), str(field), str(value)) for pid, field, value in corrections]
    applied: list[str] = list(out.attrs.get("corrections", []))
    skipped: list[str] = []
    ids = out["person_id"].to_numpy()
    for pid, field, value in triples:
        rows = ids == pid
        if not rows.any():
            skipped.append(pid)
            continue
        if field == "gender":
            out.loc[rows, "gender"] = GENDERS.index(value.lower())
            applied.append(f"{pid}: gender -> {value.lower()}")
        elif field == "swap_mask_normal":
            if value.lower() in _TRUE:
                stems = out["mask_file"].to_numpy()
                out.loc[rows & (stems == "incorrect_mask"), "mask"] = 2
                out.loc[rows & (stems == "normal"), "mask"] = 1
                applied.append(f"{pid}: incorrect_mask <-> normal")
        else:
            raise DataError(f"correction for id {pid}: unknown field {field!r}; known: {', '.join(CORRECTION_FIELDS)}")
    out["label"] = encode_label(out["mask"].to_numpy(), out["gender"].to_numpy(), out["age_band"].to_numpy())
    out["label"] = out["label"].astype("int64")
    out.attrs["corrections"] = applied
    out.attrs["corrections_skipped"] = skipped
    return out


# --- split ------------------------------------------------------------------------------------------


def _merge_rare(keys: NDArray[np.int64]) -> NDArray[np.int64]:
    """Merge strata with a single member: together into one stratum, or into the largest if still alone."""
    keys = keys.copy()
    values, counts = np.unique(keys, return_counts=True)
    rare = values[counts < 2]
    if len(rare) == 0:
        return keys
    is_rare = np.isin(keys, rare)
    keys[is_rare] = -1
    if is_rare.sum() < 2:
        common = values[counts >= 2]
        if len(common):
            keys[is_rare] = common[np.argmax(counts[counts >= 2])]
    return keys


def split_by_person(samples: pd.DataFrame, val_ratio: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split rows by person into ``(train, val)``: int64 arrays of row positions into ``samples``, ascending.

    A person's 7 images are all in train or all in val. Persons (sorted by id, so the row order does
    not matter) are split with scikit-learn's ``train_test_split(test_size=val_ratio,
    random_state=seed, stratify=...)``, stratified by gender x age band; the val part holds
    ``ceil(val_ratio * persons)`` persons. On small sets the strata are coarsened so the split never
    fails: strata with one person are merged, then gender only, then no stratification.
    ``val_ratio == 0`` puts everyone in train.

    Raises:
        ValueError: ``val_ratio`` not in [0, 1), or fewer than 2 persons / an empty train part.
    """
    from sklearn.model_selection import train_test_split  # lazy: sklearn (1 s)

    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1) (a share of persons), got {val_ratio}")
    persons = samples.groupby("person_id", sort=True)[["gender", "age_band"]].first()
    ids = persons.index.to_numpy()
    all_rows = np.arange(len(samples), dtype=np.int64)
    if val_ratio == 0.0:
        return all_rows, np.empty(0, dtype=np.int64)
    n = len(ids)
    n_val = int(np.ceil(val_ratio * n))
    n_train = n - n_val
    if n < 2 or n_train < 1:
        raise ValueError(f"cannot split {n} person(s) with val_ratio={val_ratio}: both parts need at least one person")
    gender = persons["gender"].to_numpy()
    band = persons["age_band"].to_numpy()
    stratify = None
    for keys in (gender * 3 + band, gender.copy()):
        keys = _merge_rare(keys)
        n_classes = len(np.unique(keys))
        if n_classes < 2:
            break
        if n_classes <= n_val and n_classes <= n_train:
            stratify = keys
            break
    _, val_ids = train_test_split(ids, test_size=n_val, random_state=seed, shuffle=True, stratify=stratify)
    is_val = samples["person_id"].isin(set(val_ids)).to_numpy()
    return all_rows[~is_val], all_rows[is_val]


def person_strata(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per person (index ``person_id``, sorted) with columns ``gender``, ``age_band`` and
    ``stratum`` = ``gender * 3 + age_band`` (0..5), the strata of :func:`split_by_person` and the folds."""
    persons = samples.groupby("person_id", sort=True)[["gender", "age_band"]].first()
    persons["stratum"] = persons["gender"].to_numpy(dtype=np.int64) * 3 + persons["age_band"].to_numpy(dtype=np.int64)
    return persons


def check_folds(samples: pd.DataFrame, folds: int) -> None:
    """Refuse a fold count that cannot give every fold a person of every stratum.

    Raises:
        DataError: ``folds < 2``, or more folds than the persons of the smallest gender x age band stratum
            (the message lists that stratum's count and the largest usable fold count).
    """
    if folds < 2:
        raise DataError(f"folds must be at least 2 (one fold validates, the others train), got {folds}")
    counts = person_strata(samples)["stratum"].value_counts()
    smallest = int(counts.min()) if len(counts) else 0
    if folds > smallest:
        stratum = int(counts.index[int(np.argmin(counts.to_numpy()))])
        gender, band = GENDERS[stratum // 3], stratum % 3
        raise DataError(
            f"{folds} folds but stratum {gender} / age band {band} has only {smallest} person(s); "
            f"each fold needs a person of every stratum: use at most {smallest} folds"
        )


def assign_folds(samples: pd.DataFrame, folds: int, seed: int) -> NDArray[np.int64]:
    """The fold (0..folds-1) of every row: person-grouped, stratified by gender x age band, seeded.

    Uses scikit-learn's ``StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)`` on the
    persons (groups = person id, y = :func:`person_strata`), persons sorted by id, so the row order does not
    matter: a person's rows all get the same fold, and each stratum's persons are spread over the folds as
    evenly as the counts allow. Same samples, folds and seed -> the same folds.

    Returns:
        int64 array of shape ``(len(samples),)``.

    Raises:
        DataError: see :func:`check_folds`.
    """
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: sklearn (1 s)

    check_folds(samples, folds)
    persons = person_strata(samples)
    ids = persons.index.to_numpy()
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    person_fold = np.empty(len(ids), dtype=np.int64)
    for k, (_, val) in enumerate(splitter.split(ids, persons["stratum"].to_numpy(), groups=ids)):
        person_fold[val] = k
    fold_of = dict(zip(ids, person_fold, strict=True))
    return samples["person_id"].map(fold_of).to_numpy(dtype=np.int64)


def split_by_fold(
    samples: pd.DataFrame, folds: int, fold: int, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows ``(train, val)`` of fold run `fold` of `folds`: val = the persons of fold `fold`, train = the rest.

    int64 arrays of row positions into ``samples``, ascending (folds from :func:`assign_folds`).

    Raises:
        DataError: see :func:`check_folds`; `fold` not in ``0..folds-1``.
    """
    if not 0 <= fold < folds:
        raise DataError(f"fold must be in 0..{folds - 1} for {folds} folds, got {fold}")
    of = assign_folds(samples, folds, seed)
    rows = np.arange(len(samples), dtype=np.int64)
    return rows[of != fold], rows[of == fold]


# --- eval part --------------------------------------------------------------------------------------


def load_eval(data_dir: str | Path, verify: bool = True, workers: int | None = None) -> pd.DataFrame:
    """The eval part: columns ``ImageID`` (str) and ``path`` (str, absolute), in info.csv order.

    Reads ``DATA_DIR/eval/info.csv`` (column ``ImageID``; ``ans`` may be empty) and checks that every
    ``DATA_DIR/eval/images/<ImageID>`` exists and (``verify``) decodes, on a thread pool.

    Raises:
        DataError: listing every problem (missing csv/column, duplicate id, missing or unreadable image).
    """
    eval_dir = Path(data_dir) / "eval"
    csv_path = eval_dir / "info.csv"
    table = _load_csv(csv_path, "info.csv not found; expected DATA_DIR/eval/info.csv with columns ImageID, ans")
    if "ImageID" not in table.columns:
        raise DataError(f"{csv_path}: missing column ImageID; info.csv needs the columns ImageID, ans")
    problems: list[str] = []
    image_ids = [s.strip() for s in table["ImageID"]]
    paths: list[Path] = []
    seen: dict[str, int] = {}
    existing: list[Path] = []
    for i, image_id in enumerate(image_ids):
        where = f"{csv_path} line {i + 2}"
        path = eval_dir / "images" / image_id
        paths.append(path)
        if not image_id:
            problems.append(f"{where}: empty ImageID")
        elif image_id in seen:
            problems.append(f"{where}: ImageID {image_id!r} already on line {seen[image_id]}; list each image once")
        elif not path.is_file():
            problems.append(f"{path}: eval image not found ({where}); add the image or remove the row")
        else:
            existing.append(path)
        seen.setdefault(image_id, i + 2)
    if verify:
        problems += _verify_many(existing, workers, fix="or remove its row from info.csv")
    if problems:
        raise DataError(problems)
    return pd.DataFrame({"ImageID": image_ids, "path": [os.path.abspath(p) for p in paths]})


# --- summary ----------------------------------------------------------------------------------------


class DatasetSummary(TypedDict):
    """What :func:`summarize` returns (its docstring says what each key counts)."""

    persons: int
    images: int
    classes: list[int]
    mask: list[int]
    gender: list[int]
    age: list[int]
    extensions: dict[str, int]
    age_bins: list[int] | None


def summarize(samples: pd.DataFrame) -> DatasetSummary:
    """Counts a user checks a dataset by (plain Python types, JSON-ready).

    Returns ``{"persons": int, "images": int, "classes": [18 ints] (index = class id),
    "mask": [wear, incorrect, not wear], "gender": [male, female], "age": [3 bands] (images),
    "extensions": {".jpg": n, ".JPEG": n, ...} (as spelled on disk), "age_bins": [a, b] or None}``.
    """
    labels = samples["label"].to_numpy(dtype=np.int64)
    exts = pd.Series([os.path.splitext(p)[1] for p in samples["path"]], dtype=object).value_counts()
    bins = samples.attrs.get("age_bins")
    return {
        "persons": int(samples["person_id"].nunique()),
        "images": len(samples),
        "classes": [int(c) for c in np.bincount(labels, minlength=NUM_CLASSES)],
        "mask": [int(c) for c in np.bincount(samples["mask"].to_numpy(dtype=np.int64), minlength=3)],
        "gender": [int(c) for c in np.bincount(samples["gender"].to_numpy(dtype=np.int64), minlength=2)],
        "age": [int(c) for c in np.bincount(samples["age_band"].to_numpy(dtype=np.int64), minlength=3)],
        "extensions": {str(k): int(v) for k, v in sorted(exts.items())},
        "age_bins": list(bins) if bins is not None else None,
    }


@dataclass
class DatasetCheck:
    """What `check-data` finds in a dataset root (:func:`check_dataset`).

    Attributes:
        samples: the train table (:func:`load_train`), None when it has problems.
        eval: the eval table (:func:`load_eval`), None without an ``eval/`` folder or when it has problems.
        problems: one line per problem (``"PATH: what is wrong; what to do"``), train's first; empty when fine.
    """

    samples: pd.DataFrame | None
    eval: pd.DataFrame | None
    problems: list[str]


def check_dataset(
    data_dir: str | Path, age_bins: Sequence[int] = (30, 60), corrections: str | Path | None = None
) -> DatasetCheck:
    """Check the train part (every image decodes, :func:`check_train`) and, when there is one, the eval part of
    `data_dir`, collecting every problem instead of stopping at the first (what `maskcls-hpo check-data` runs).

    Args:
        age_bins, corrections: as :func:`load_train`.
    """
    data_dir = Path(data_dir)
    problems = check_train(data_dir)
    samples = None
    if not problems:
        try:
            samples = load_train(data_dir, age_bins=age_bins, corrections=corrections, verify=False)
        except DataError as err:
            problems += err.problems
    eval_part = None
    if (data_dir / "eval").exists():
        try:
            eval_part = load_eval(data_dir)
        except DataError as err:
            problems += err.problems
    return DatasetCheck(samples, eval_part, problems)
