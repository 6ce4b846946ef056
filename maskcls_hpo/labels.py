"""The 18-class label scheme of the face-mask task, in one place.

``class_id = mask * 6 + gender * 3 + age_band`` with

- mask: wear = 0 (files ``mask1`` .. ``mask5``), incorrect = 1 (``incorrect_mask``), not wear = 2 (``normal``);
- gender: male = 0, female = 1;
- age band by ``age_bins = (a, b)`` in years: ``age < a`` -> 0, ``a <= age < b`` -> 1, ``age >= b`` -> 2.

The inverse is ``mask = y // 6``, ``gender = (y // 3) % 2``, ``age_band = y % 3``. Every other module
imports these names; nothing else writes the formula out (docs/architecture.md, "Labels").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import torch

    IntLike = int | np.integer
    """A Python or NumPy integer."""

__all__ = [
    "NUM_CLASSES",
    "NUM_MASK",
    "NUM_GENDER",
    "NUM_AGE",
    "TASK_SIZES",
    "MASK_NAMES",
    "GENDERS",
    "GENDER_SHORT",
    "MASK_FILES",
    "DEFAULT_AGE_BINS",
    "encode_label",
    "decode_label",
    "check_age_bins",
    "age_band",
    "age_band_names",
    "class_name",
    "class_labels",
    "mask_of_file",
]

NUM_MASK, NUM_GENDER, NUM_AGE = 3, 2, 3
NUM_CLASSES = NUM_MASK * NUM_GENDER * NUM_AGE  # 18
TASK_SIZES = {"mask": NUM_MASK, "gender": NUM_GENDER, "age": NUM_AGE}
"""Logits per head of the multi-output model, in the order the class id combines them."""

MASK_NAMES = ("wear", "incorrect", "not wear")
"""Mask states by label (index = label)."""

GENDERS = ("male", "female")
"""Gender values in train.csv and folder names; the index is the label (male=0, female=1)."""

GENDER_SHORT = ("M", "F")
"""Short gender names used in class names (``0 wear/M/<30``)."""

MASK_FILES = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
"""The 7 file stems of one person's train folder, in the order samples are sorted."""

_MASK_OF_FILE = {"incorrect_mask": 1, "normal": 2, **{f"mask{i}": 0 for i in range(1, 6)}}

DEFAULT_AGE_BINS = (30, 60)
"""The competition's age band edges in years (``<30``, ``30-59``, ``>=60``)."""


def mask_of_file(stem: str) -> int:
    """Mask label of a train file stem (``mask3`` -> 0, ``incorrect_mask`` -> 1, ``normal`` -> 2).

    Raises:
        KeyError: `stem` is not one of :data:`MASK_FILES`.
    """
    return _MASK_OF_FILE[stem]


@overload
def encode_label(mask: IntLike, gender: IntLike, age_band: IntLike) -> int: ...
@overload
def encode_label(
    mask: NDArray[np.integer], gender: NDArray[np.integer] | IntLike, age_band: NDArray[np.integer] | IntLike
) -> NDArray[np.int64]: ...
@overload
def encode_label(mask: torch.Tensor, gender: torch.Tensor, age_band: torch.Tensor) -> torch.Tensor: ...
def encode_label(
    mask: IntLike | NDArray[np.integer] | torch.Tensor,
    gender: IntLike | NDArray[np.integer] | torch.Tensor,
    age_band: IntLike | NDArray[np.integer] | torch.Tensor,
) -> int | NDArray[np.int64] | torch.Tensor:
    """The 18-class id ``mask * 6 + gender * 3 + age_band``.

    Works on Python ints (returns ``int``) and on NumPy / torch integer arrays (element-wise, same shape).

    Raises:
        ValueError: a Python int out of range (mask 0..2, gender 0..1, age_band 0..2).
    """
    if (
        isinstance(mask, int | np.integer)
        and isinstance(gender, int | np.integer)
        and isinstance(age_band, int | np.integer)
    ):
        if not (0 <= mask < NUM_MASK and 0 <= gender < NUM_GENDER and 0 <= age_band < NUM_AGE):
            raise ValueError(
                f"label parts out of range: mask={mask} (0..2), gender={gender} (0..1), age_band={age_band} (0..2)"
            )
        return int(mask) * (NUM_GENDER * NUM_AGE) + int(gender) * NUM_AGE + int(age_band)
    return mask * (NUM_GENDER * NUM_AGE) + gender * NUM_AGE + age_band  # type: ignore[operator,return-value]


@overload
def decode_label(y: IntLike) -> tuple[int, int, int]: ...
@overload
def decode_label(y: NDArray[np.integer]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]: ...
@overload
def decode_label(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
def decode_label(
    y: IntLike | NDArray[np.integer] | torch.Tensor,
) -> (
    tuple[int, int, int]
    | tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]
    | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
):
    """Inverse of :func:`encode_label`: ``(mask, gender, age_band) = (y // 6, (y // 3) % 2, y % 3)``.

    Works on ints and on NumPy / torch integer arrays (each part then has the shape of ``y``).
    """
    return y // (NUM_GENDER * NUM_AGE), (y // NUM_AGE) % NUM_GENDER, y % NUM_AGE  # type: ignore[return-value]


def check_age_bins(age_bins: Sequence[int] | Sequence[str]) -> tuple[int, int]:
    """`age_bins` (ints, or their text as in ``"30,60".split(",")``) as a validated ``(a, b)`` tuple of ints with
    ``0 < a < b`` (years).

    Raises:
        ValueError: not two increasing positive ages.
    """
    try:
        bins = tuple(int(b) for b in age_bins)
    except (TypeError, ValueError):
        bins = ()
    if len(bins) != 2 or not 0 < bins[0] < bins[1]:
        raise ValueError(f"age_bins must be two increasing ages in years, e.g. [30, 60], got {list(age_bins)}")
    return bins[0], bins[1]


@overload
def age_band(age: IntLike, age_bins: Sequence[int] = DEFAULT_AGE_BINS) -> int: ...
@overload
def age_band(
    age: NDArray[np.integer] | Sequence[int], age_bins: Sequence[int] = DEFAULT_AGE_BINS
) -> NDArray[np.int64]: ...
def age_band(age: IntLike | ArrayLike, age_bins: Sequence[int] = DEFAULT_AGE_BINS) -> int | NDArray[np.int64]:
    """Age band of `age` (years): 0 below ``a``, 1 from ``a`` to ``b - 1``, 2 from ``b`` on.

    Works on ints (returns ``int``) and on NumPy integer arrays (element-wise, int64).

    Raises:
        ValueError: `age_bins` is not two increasing ages.
    """
    a, b = check_age_bins(age_bins)
    if isinstance(age, int | np.integer):
        return 0 if age < a else 1 if age < b else 2
    ages = np.asarray(age)
    return (ages >= a).astype(np.int64) + (ages >= b).astype(np.int64)


def age_band_names(age_bins: Sequence[int] = DEFAULT_AGE_BINS) -> tuple[str, str, str]:
    """Names of the three age bands, e.g. ``("<30", "30-59", ">=60")`` for ``(30, 60)``."""
    a, b = check_age_bins(age_bins)
    return f"<{a}", f"{a}-{b - 1}", f">={b}"


def class_name(y: int, age_bins: Sequence[int] = DEFAULT_AGE_BINS, genders: Sequence[str] = GENDER_SHORT) -> str:
    """``mask/gender/age`` name of class `y` without the id, e.g. ``wear/M/<30`` for 0."""
    mask, gender, band = decode_label(int(y))
    return f"{MASK_NAMES[mask]}/{genders[gender]}/{age_band_names(age_bins)[band]}"


def class_labels(age_bins: Sequence[int] = DEFAULT_AGE_BINS) -> list[str]:
    """The 18 class names with their ids: ``["0 wear/M/<30", "1 wear/M/30-59", ..., "17 not wear/F/>=60"]``."""
    return [f"{y} {class_name(y, age_bins)}" for y in range(NUM_CLASSES)]
