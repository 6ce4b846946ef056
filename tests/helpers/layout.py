"""A tiny dataset in the competition layout (docs/architecture.md, "Data layout") with the real set's quirks, so
tests never depend on `demo-data`; tests/ml/conftest.py offers it as the fixtures `make_layout`, `many_persons`
and `layout_helpers`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

LAYOUT_MASK_FILES = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")

# Extensions cycle through every accepted spelling, so each person mixes .jpg/.JPEG/.png/.jpeg/.PNG.
LAYOUT_EXTENSIONS = (".jpg", ".JPEG", ".png", ".jpeg", ".PNG", ".jpg", ".png")

# Image modes that are not RGB, as in the real set: mask2 of every person is grayscale (a grayscale
# JPEG), mask3 has an alpha channel (PNG). Everything else is RGB.
LAYOUT_MODES = {"mask2": "L", "mask3": "RGBA"}

# (id, gender, age): ids with leading zeros and a suffix, and the ids the `known` corrections preset names.
LAYOUT_PERSONS = (
    ("000001", "female", 45),
    ("000020", "male", 62),  # `known`: incorrect_mask <-> normal swapped
    ("001498-1", "male", 25),  # `known`: male -> female
    ("006359", "female", 33),  # `known`: female -> male
)


def layout_color(person_index: int, file_index: int) -> tuple[int, int, int]:
    """The solid RGB colour `write_layout` paints image `file_index` of person `person_index` with."""
    return ((40 * person_index + 13) % 256, (30 * file_index + 50) % 256, (7 * person_index + 200) % 256)


def layout_gray(color: tuple[int, int, int]) -> int:
    """The gray value a grayscale image gets for `color` (PIL's ITU-R 601-2 luma, rounded)."""
    return int(Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0)))


def make_persons(n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """`n` persons `(id, gender, age)` with ids 000100.., genders alternating and ages over 18..70."""
    rng = np.random.default_rng(seed)
    ages = rng.integers(18, 71, size=n)
    return [(f"{100 + i:06d}", ("male", "female")[i % 2], int(a)) for i, a in enumerate(ages)]


def write_layout(
    root: Path,
    persons=LAYOUT_PERSONS,
    size: tuple[int, int] = (24, 32),
    eval_images: int = 5,
    hidden: bool = True,
    race: str = "Asian",
) -> Path:
    """Write a dataset in the competition layout under `root` and return `root`.

    Train: `train/train.csv` (id, gender, race, age, path) and `train/images/<id>_<gender>_<race>_<age>/`
    with the 7 files, extensions from LAYOUT_EXTENSIONS, modes from LAYOUT_MODES, each a solid
    `layout_color(person_index, file_index)` image of `size` = (W, H) pixels, plus a hidden `._mask1.jpg`
    of junk bytes when `hidden`. Eval: `eval/info.csv` (ImageID, ans empty) and `eval_images` flat images
    named by a hex hash, listed in an order that is not sorted. Images are RGB PNG/JPEG as the extension says.
    """
    root = Path(root)
    images_dir = root / "train" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = ["id,gender,race,age,path"]
    for p, (pid, gender, age) in enumerate(persons):
        folder = f"{pid}_{gender}_{race}_{age}"
        rows.append(f"{pid},{gender},{race},{age},{folder}")
        person_dir = images_dir / folder
        person_dir.mkdir(exist_ok=True)
        for f, stem in enumerate(LAYOUT_MASK_FILES):
            write_solid_image(
                person_dir / f"{stem}{LAYOUT_EXTENSIONS[f]}", layout_color(p, f), size, LAYOUT_MODES.get(stem, "RGB")
            )
        if hidden:
            (person_dir / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (root / "train" / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    eval_dir = root / "eval" / "images"
    eval_dir.mkdir(parents=True, exist_ok=True)
    names = [hashlib.sha1(f"eval{i}".encode()).hexdigest()[:16] + ".jpg" for i in range(eval_images)]
    for i, name in enumerate(names):
        write_solid_image(eval_dir / name, layout_color(i, 6 - i % 7), size, "RGB")
    (root / "eval" / "info.csv").write_text("ImageID,ans\n" + "".join(f"{n},\n" for n in names), encoding="utf-8")
    return root


def write_solid_image(path: Path, color: tuple[int, int, int], size: tuple[int, int], mode: str = "RGB") -> Path:
    """One solid-colour image of `size` = (W, H); `mode` L (grayscale), RGB or RGBA (alpha 128)."""
    im = Image.new("RGB", size, color)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(128)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    im.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path
