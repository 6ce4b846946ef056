"""Shared pytest fixtures. Each group of fixtures sits under its own heading; add yours in a new section.

Data layout fixtures (owner: data layer): `make_layout` writes a tiny dataset in the competition layout
(DESIGN.md section 3) with the real set's quirks, so tests never depend on `demo-data`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# --- data layout fixtures ---------------------------------------------------------------------------

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
            write_solid_image(person_dir / f"{stem}{LAYOUT_EXTENSIONS[f]}", layout_color(p, f), size,
                              LAYOUT_MODES.get(stem, "RGB"))
        if hidden:
            (person_dir / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (root / "train" / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    eval_dir = root / "eval" / "images"
    eval_dir.mkdir(parents=True, exist_ok=True)
    names = [hashlib.sha1(f"eval{i}".encode()).hexdigest()[:16] + ".jpg" for i in range(eval_images)]
    for i, name in enumerate(names):
        write_solid_image(eval_dir / name, layout_color(i, 6 - i % 7), size, "RGB")
    (root / "eval" / "info.csv").write_text(
        "ImageID,ans\n" + "".join(f"{n},\n" for n in names), encoding="utf-8"
    )
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


@pytest.fixture
def make_layout():
    """`write_layout` as a fixture: `make_layout(tmp_path / "d", persons=[...])` -> dataset root."""
    return write_layout


@pytest.fixture
def many_persons():
    """`make_persons` as a fixture: `many_persons(40)` -> 40 `(id, gender, age)` tuples for `make_layout`."""
    return make_persons


@pytest.fixture
def layout_helpers():
    """The layout's helpers and constants: `.color(p, f)`, `.gray(color)`, `.write_image(path, color, size,
    mode)`, `.mask_files`, `.persons` (the default persons)."""
    return SimpleNamespace(color=layout_color, gray=layout_gray, write_image=write_solid_image,
                           mask_files=LAYOUT_MASK_FILES, persons=LAYOUT_PERSONS)


# --- sweep-service fixtures -------------------------------------------------------------------------

TINY_SWEEP = '''
import optuna

BASE_CONFIG = {
    "model": "test_resnet", "pretrained": False, "image_size": [32, 24], "epochs": EPOCHS,
    "val_ratio": 0.25, "augment": False, "data_dir": "DATA_DIR", "cache_dir": "CACHE_DIR", "device": "cpu",
}

def suggest(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }

def make_pruner(config):
    return PRUNER
'''


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 24-person procedural demo set at 36x48 (W x H), written once per test session."""
    from maskcls_hpo.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("tiny_demo") / "data"
    write_demo_dataset(root, persons=24, eval_persons=6, size=(36, 48), seed=1, progress=False)
    return root


@pytest.fixture
def tiny_sweep(tmp_path, tiny_demo):
    """Write a tiny sweep file: `tiny_sweep(epochs=2, pruner="optuna.pruners.NopPruner()", extra="")` -> path.

    `extra` is appended verbatim (e.g. a different `suggest` or a registered timm model).
    """

    def make(epochs: int = 2, pruner: str = "optuna.pruners.NopPruner()", extra: str = "",
             name: str = "tiny.py") -> Path:
        body = (TINY_SWEEP.replace("EPOCHS", str(epochs)).replace("DATA_DIR", str(tiny_demo))
                .replace("CACHE_DIR", str(tmp_path / "cache")).replace("PRUNER", pruner))
        path = tmp_path / name
        path.write_text(body + extra)
        return path

    return make


# --- training fixtures (owner: training engine) ------------------------------------------------------
# One procedural demo dataset per test session (written once, read by every training test), and one image
# cache folder shared by those tests, so each image size is decoded once per session.


@pytest.fixture(scope="session")
def demo_data_60(tmp_path_factory) -> Path:
    """A procedural demo dataset (`demo.write_demo_dataset`) of 60 train persons (420 images, 48x64 px,
    seed 0, no eval part): enough to learn something in 3 epochs on the CPU."""
    from maskcls_hpo.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("demo60")
    write_demo_dataset(out, persons=60, eval_persons=0, size=(48, 64), seed=0, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="session")
def demo_data_20(tmp_path_factory) -> Path:
    """A procedural demo dataset of 20 train persons (140 images, 32x40 px, seed 1, no eval part) for tests
    of the training mechanics (checkpoints, schedules, errors) that need no learning."""
    from maskcls_hpo.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("demo20")
    write_demo_dataset(out, persons=20, eval_persons=0, size=(32, 40), seed=1, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="session")
def train_cache_dir(tmp_path_factory) -> Path:
    """The decoded-image cache folder every training test shares (config `cache_dir`)."""
    return tmp_path_factory.mktemp("train_cache")
