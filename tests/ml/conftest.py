"""Fixtures of the ML tests: a tiny dataset in the competition layout (tests/helpers/layout.py) and procedural
demo datasets with one shared image cache for the training tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.layout import (
    LAYOUT_MASK_FILES,
    LAYOUT_PERSONS,
    layout_color,
    layout_gray,
    make_persons,
    write_layout,
    write_solid_image,
)

# --- data layout fixtures (owner: data layer) ----------------------------------------------------------------


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
    return SimpleNamespace(
        color=layout_color,
        gray=layout_gray,
        write_image=write_solid_image,
        mask_files=LAYOUT_MASK_FILES,
        persons=LAYOUT_PERSONS,
    )


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
