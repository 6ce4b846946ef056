"""Contact sheets: a PNG grid of sample train images per class, to look at a dataset in the competition layout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from maskcls_hpo.errors import DemoDataError
from maskcls_hpo.labels import DEFAULT_AGE_BINS as AGE_BINS
from maskcls_hpo.labels import GENDERS, MASK_FILES, age_band, class_name, encode_label, mask_of_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_contact_sheet"]


def _class_of(folder: str, stem: str, age_bins: tuple[int, int]) -> int | None:
    """Class id from a train folder name `<id>_<gender>_<race>_<age>` and a file stem, or None."""
    parts = folder.split("_")
    if len(parts) < 4 or parts[1] not in GENDERS or stem not in MASK_FILES:
        return None
    try:
        age = int(parts[-1])
    except ValueError:
        return None
    return encode_label(mask_of_file(stem), GENDERS.index(parts[1]), age_band(age, age_bins))


def _class_name(y: int, age_bins: tuple[int, int]) -> str:
    return class_name(y, age_bins, genders=GENDERS)


def write_contact_sheet(
    data_dir: str | Path,
    out_png: str | Path,
    per_class: int = 4,
    age_bins: tuple[int, int] = AGE_BINS,
    seed: int = 0,
) -> Path:
    """Write a PNG grid of sample train images per class 0..17 of a dataset in the competition layout.

    Rows are gender x age band (6), column blocks are the mask states (wear, incorrect, not wear), each
    block shows `per_class` images of one class titled with its id and `mask/gender/age` names. For the
    wear classes the samples cycle through mask1..mask5. Hidden `._*` files are ignored; a class with
    fewer images leaves cells empty. Samples are picked by person, seeded.

    Args:
        data_dir: dataset root (holds `train/images/<id>_<gender>_<race>_<age>/`).
        out_png: the PNG to write (parent folders are created).
        per_class: images per class (1..12).
        age_bins: age band edges (years).
        seed: which persons are shown.

    Returns:
        The path of the PNG.

    Raises:
        DemoDataError: `data_dir/train/images` is missing or holds no image; `per_class` out of range.
    """
    import matplotlib  # lazy: matplotlib (0.7 s), only for the contact sheet

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib, after choosing the Agg backend

    images_dir = Path(data_dir) / "train" / "images"
    if not images_dir.is_dir():
        raise DemoDataError(f"{images_dir}: not found; give a dataset root holding train/images/")
    if not 1 <= per_class <= 12:
        raise DemoDataError(f"per_class {per_class}: must be 1..12")
    picks = _pick_samples(images_dir, per_class, age_bins, seed)

    fig = plt.figure(figsize=(3 * per_class * 0.95 + 1.2, 6 * 1.45 + 0.6), dpi=110)
    _draw_grid(fig, picks, per_class, age_bins)
    fig.suptitle(
        f"{Path(data_dir).name}: {per_class} train images per class (class ids as in maskcls_hpo.labels)", fontsize=10
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _pick_samples(images_dir: Path, per_class: int, age_bins: tuple[int, int], seed: int) -> dict[int, list[Path]]:
    """Class id -> up to `per_class` image files, one per person (persons drawn with `seed`).

    Raises:
        DemoDataError: no image in `<id>_<gender>_<race>_<age>/` folders."""
    by_class: dict[int, dict[str, list[Path]]] = {}
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            y = _class_of(folder.name, file.stem, age_bins)
            if y is not None:
                by_class.setdefault(y, {}).setdefault(folder.name, []).append(file)
    if not by_class:
        raise DemoDataError(f"{images_dir}: no image in <id>_<gender>_<race>_<age>/ folders")
    rng = np.random.default_rng(seed)
    picks: dict[int, list[Path]] = {}
    for y, folders in by_class.items():
        names = sorted(folders)
        chosen = [names[i] for i in rng.permutation(len(names))[:per_class]]
        # wear classes: show mask1, mask2, ... in turn so the 5 styles appear
        picks[y] = [sorted(folders[name])[k % len(folders[name])] for k, name in enumerate(chosen)]
    return picks


def _draw_grid(fig: Figure, picks: dict[int, list[Path]], per_class: int, age_bins: tuple[int, int]) -> None:
    """6 rows (gender x age band) x 3 blocks (mask states) of `per_class` images each, titled by class."""
    outer = fig.add_gridspec(6, 3, left=0.07, right=0.995, top=0.95, bottom=0.01, wspace=0.06, hspace=0.32)
    for row in range(6):
        gender, band = row // 3, row % 3
        for mask in range(3):
            y = encode_label(mask, gender, band)
            inner = outer[row, mask].subgridspec(1, per_class, wspace=0.04)
            files = picks.get(y, [])
            for k in range(per_class):
                ax = fig.add_subplot(inner[0, k])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if k < len(files):
                    with Image.open(files[k]) as im:
                        ax.imshow(np.asarray(im.convert("RGB")))
                    ax.set_xlabel(files[k].stem, fontsize=6, labelpad=1)
                if k == 0:
                    ax.set_title(f"{y}: {_class_name(y, age_bins)}", fontsize=8, loc="left", pad=2)
                    if mask == 0:
                        ax.set_ylabel(f"{GENDERS[gender]}\n{_class_name(y, age_bins).split('/')[2]}", fontsize=9)
