"""The `demo-data` generator: datasets in the competition layout (docs/architecture.md, "Data layout"), contact sheets.

Two kinds of faces:

- procedural (default): faces drawn with PIL. Gender shows in hair length, face shape and lip colour; age band
  in hair greyness and wrinkle lines on the forehead and around the eyes (all above the mask, so the age
  is visible in every mask state); the mask state in the mask itself. Each image adds nuisance variation
  (position, scale, rotation, background, lighting, noise).
- real photos (`faces=DIR`, UTKFace naming `AGE_GENDER_RACE_*.jpg`): each photo is one person; the mask
  is drawn onto it at the landmarks of the aligned UTKFace crops (eyes y=0.40, nose tip 0.58, mouth 0.72,
  chin 0.90 of the height).

Mask states: `mask1`..`mask5` wear one of 5 mask styles each (surgical blue pleated, black cloth, white KN95
with a centre seam, patterned, coloured cloth; a per-person permutation), `incorrect_mask` wears a random
style pulled below the nose or onto the chin, `normal` shows the bare face.

The real set's quirks are reproduced, deterministically from the seed: ids with leading zeros and a few
with a `-1` suffix, `.jpeg`/`.png` files and upper-case extensions mixed into a person's folder, grayscale
and RGBA images, and hidden `._*` AppleDouble files beside the images.

Run as `python -m maskcls_hpo.demo OUT [options]` (the same as `maskcls-hpo demo-data OUT [options]`).
"""

from __future__ import annotations

import csv
import hashlib
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskcls_hpo.errors import DemoDataError
from maskcls_hpo.labels import (
    DEFAULT_AGE_BINS as AGE_BINS,
)
from maskcls_hpo.labels import (
    GENDERS,
    MASK_FILES,
    age_band,
    class_name,
    encode_label,
    mask_of_file,
)

__all__ = [
    "DemoDataError",
    "DemoSummary",
    "MASK_STYLES",
    "parse_size",
    "write_contact_sheet",
    "write_demo_dataset",
]

MASK_STYLES = ("surgical", "cloth_black", "kn95", "patterned", "cloth_colour")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Other")
_SUPERSAMPLE = 2  # faces are drawn at 2x the output size and downsampled (anti-aliasing)
# NOTE: the first bytes of a macOS AppleDouble file, as the real set's `._mask1.jpg` files hold.
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"


@dataclass(frozen=True)
class DemoSummary:
    """What `write_demo_dataset` wrote.

    Attributes:
        out: the dataset root (holds `train/`, `eval/`, `sources.csv`).
        persons / eval_persons: persons in the train / eval part.
        train_images / eval_images: image files written (hidden `._*` files not counted).
        size: (width, height) of every image in pixels.
        seed: the random seed.
        faces: the photo folder, or None for procedural faces.
        train_ids / eval_ids: person ids of each part (disjoint).
        sources: person id -> source photo file name (`"procedural"` without `faces`).
        train_csv / info_csv / answers_csv / sources_csv: the CSV files written.
        seconds: wall time of the call.
    """

    out: Path
    persons: int
    eval_persons: int
    train_images: int
    eval_images: int
    size: tuple[int, int]
    seed: int
    faces: Path | None
    train_ids: tuple[str, ...]
    eval_ids: tuple[str, ...]
    sources: dict[str, str] = field(repr=False)
    train_csv: Path
    info_csv: Path
    answers_csv: Path
    sources_csv: Path
    seconds: float


@dataclass(frozen=True)
class _Person:
    pid: str
    gender: int  # 0 male, 1 female
    age: int
    race: str
    source: str  # photo path or "procedural"
    seed: int  # the person's own seed: the person's images do not depend on the other persons

    @property
    def folder(self) -> str:
        return f"{self.pid}_{GENDERS[self.gender]}_{self.race}_{self.age}"


@dataclass(frozen=True)
class _Geometry:
    """Face landmarks on the drawing canvas (pixels): where a mask goes."""

    cx: float
    half_width: float  # half the face width at cheek level
    jaw_half_width: float  # half the jaw width near the chin
    eye_y: float
    nose_bridge_y: float
    nose_tip_y: float
    mouth_y: float
    chin_y: float


# --- input checks ---------------------------------------------------------------------------------------


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """Parse an image size `"WxH"` (e.g. `"96x128"`) or a `(W, H)` pair into `(width, height)` pixels.

    Raises:
        DemoDataError: not two integers, or a side outside 16..2048 pixels.
    """
    if isinstance(text, str):
        parts = text.lower().replace("*", "x").split("x")
        try:
            w, h = (int(p) for p in parts)
        except ValueError:
            raise DemoDataError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 96x128") from None
    else:
        try:
            w, h = (int(v) for v in text)
        except (TypeError, ValueError):
            raise DemoDataError(f"size {text!r}: expected (width, height) in pixels, e.g. (96, 128)") from None
    if not (16 <= w <= 2048 and 16 <= h <= 2048):
        raise DemoDataError(f"size {w}x{h}: each side must be 16..2048 pixels (e.g. 96x128)")
    return w, h


def _parse_utk_name(name: str) -> tuple[int, int, int] | None:
    """`AGE_GENDER_RACE_*.jpg` -> (age, gender, race code), or None when the name does not parse."""
    parts = name.split("_")
    if len(parts) < 4:
        return None
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if gender not in (0, 1) or not 0 <= race < len(UTK_RACES) or age < 0:
        return None
    return age, gender, race


def _pick_photos(faces: Path, count: int, rng: np.random.Generator) -> list[tuple[Path, int, int, int]]:
    """`count` distinct adult photos, balanced over gender x age band as far as the folder allows."""
    if not faces.is_dir():
        raise DemoDataError(f"--faces {faces}: not a folder; give a folder of AGE_GENDER_RACE_*.jpg photos")
    strata: dict[tuple[int, int], list[tuple[Path, int, int, int]]] = {}
    for path in sorted(faces.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        parsed = _parse_utk_name(path.name)
        if parsed is None or parsed[0] < 18:
            continue
        age, gender, race = parsed
        strata.setdefault((gender, age_band(age)), []).append((path, age, gender, race))
    usable = sum(len(v) for v in strata.values())
    if usable == 0:
        raise DemoDataError(
            f"--faces {faces}: no usable photo (names AGE_GENDER_RACE_*.jpg with AGE >= 18, GENDER 0/1, "
            f"RACE 0-4, as in UTKFace)"
        )
    if usable < count:
        raise DemoDataError(
            f"--faces {faces}: {usable} usable photos, but persons + eval persons = {count} need one each; "
            f"lower --persons/--eval-persons or add photos"
        )
    pools = []
    for key in sorted(strata):
        pool = strata[key]
        pools.append([pool[i] for i in rng.permutation(len(pool))])
    picked: list[tuple[Path, int, int, int]] = []
    while len(picked) < count:  # round-robin over the strata: balanced until a stratum runs out
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(pool.pop())
    return picked  # in round-robin order: any leading slice is balanced too


# --- persons and quirks ---------------------------------------------------------------------------------


def _make_persons(
    n_train: int, n_total: int, rng: np.random.Generator, photos: list[tuple[Path, int, int, int]] | None
) -> list[_Person]:
    """Persons with unique zero-padded ids (a few with a `-1` suffix): the first `n_train` for the train part,
    the rest for the eval part, each part balanced over gender x age band (round-robin, then shuffled)."""
    numbers = np.sort(rng.choice(np.arange(1, 3 * n_total + 10), size=n_total, replace=False))
    numbers = numbers[rng.permutation(n_total)]
    n_suffix = max(1, round(0.02 * n_total))
    suffixed = set(rng.choice(n_total, size=n_suffix, replace=False).tolist())
    seeds = rng.integers(0, 2**31 - 1, size=n_total)
    strata = [(g, b) for b in range(3) for g in range(2)]
    order = np.concatenate([rng.permutation(n_train), rng.permutation(n_total - n_train) + n_train])
    persons = []
    for i in range(n_total):
        pid = f"{numbers[i]:06d}" + ("-1" if i in suffixed else "")
        if photos is not None:
            path, age, gender, race = photos[order[i]]
            persons.append(_Person(pid, gender, age, UTK_RACES[race], path.name, int(seeds[i])))
            continue
        gender, band = strata[order[i] % len(strata)]
        age = (int(rng.integers(18, 30)), int(rng.integers(30, 60)), 60)[band]
        race = str(rng.choice(["Asian", "White", "Black"], p=[0.6, 0.25, 0.15]))
        persons.append(_Person(pid, gender, age, race, "procedural", int(seeds[i])))
    return persons


@dataclass
class _Quirks:
    """Per (person index, mask file index): extension, grayscale, RGBA; hidden junk files per person."""

    ext: dict[tuple[int, int], str] = field(default_factory=dict)
    gray: set[tuple[int, int]] = field(default_factory=set)
    rgba: set[tuple[int, int]] = field(default_factory=set)
    junk: set[int] = field(default_factory=set)

    def extension(self, p: int, f: int) -> str:
        return self.ext.get((p, f), ".jpg")


def _plan_quirks(n: int, rng: np.random.Generator) -> _Quirks:
    """Spread the real set's file quirks over `n` train persons (each quirk at least once)."""
    q = _Quirks()
    people = rng.permutation(n).tolist()
    k = max(1, round(0.03 * n))

    def take(count: int) -> list[int]:
        nonlocal people
        if len(people) < count:
            people += rng.permutation(n).tolist()
        chosen, people = people[:count], people[count:]
        return chosen

    for p in take(k):  # whole folder saved as .jpeg
        for f in range(7):
            q.ext[(p, f)] = ".jpeg"
    for p in take(k):  # whole folder saved as .png, one file of it RGBA
        for f in range(7):
            q.ext[(p, f)] = ".png"
        q.rgba.add((p, int(rng.integers(7))))
    for p in take(k):  # mixed folder: two files in another format, one upper-case extension
        a, b, c = rng.choice(7, size=3, replace=False).tolist()
        q.ext[(p, a)] = ".png"
        q.ext[(p, b)] = ".jpeg"
        q.ext[(p, c)] = ".JPG"
    for p in take(k):  # upper-case extensions
        for f in range(7):
            q.ext[(p, f)] = ".JPG" if f != 6 else ".JPEG"
    for p in take(max(1, n // 100)):  # a grayscale photo
        q.gray.add((p, int(rng.integers(7))))
    q.junk.update(take(max(1, round(0.1 * n))))
    for key in q.rgba:  # on small sets a later quirk can reuse the png person: RGBA stays a png
        if q.extension(*key).lower() != ".png":
            q.ext[key] = ".png"
    return q


# --- drawing --------------------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator, colour: Sequence[int], amount: int) -> tuple[int, int, int]:
    c = np.asarray(colour[:3], dtype=np.int64) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a[:3], b[:3], strict=True))


_SKIN = {
    "Asian": (232, 196, 160),
    "White": (240, 205, 180),
    "Black": (125, 85, 60),
    "Indian": (190, 140, 105),
    "Other": (205, 160, 125),
}
_HAIR = [(25, 20, 18), (60, 40, 25), (100, 70, 40), (185, 150, 90), (120, 55, 30)]
_SHIRT = [(40, 60, 120), (150, 30, 40), (40, 110, 60), (90, 90, 90), (230, 230, 225), (20, 20, 25)]
_MASK_COLOURS = {
    "surgical": [(110, 170, 215), (140, 195, 230), (95, 150, 200)],
    "cloth_black": [(28, 28, 32), (40, 38, 42), (20, 22, 30)],
    "kn95": [(238, 238, 232), (226, 228, 226), (245, 243, 236)],
    "patterned": [(30, 45, 110), (150, 30, 45), (35, 95, 70), (230, 200, 60)],
    "cloth_colour": [(230, 110, 160), (90, 190, 110), (240, 200, 40), (140, 90, 200), (250, 140, 60)],
}


def _draw_procedural_face(person: _Person, canvas: tuple[int, int]) -> tuple[Image.Image, _Geometry, tuple]:
    """The person's bare face on a (CW, CH) canvas: the same for all 7 images (before per-image jitter)."""
    rng = np.random.default_rng([person.seed, 1])
    cw, ch = canvas
    female = person.gender == 1
    band = age_band(person.age)
    bg = _jitter(rng, rng.choice([(200, 205, 210), (225, 220, 205), (170, 185, 200), (90, 100, 110)]), 25)
    img = Image.new("RGB", canvas, bg)
    d = ImageDraw.Draw(img)

    skin = _jitter(rng, _SKIN.get(person.race, _SKIN["Other"]), 14)
    # Greyness by age band (per-person noise; a slight trend with age inside the band).
    grey = (rng.uniform(0.0, 0.12), rng.uniform(0.35, 0.6), rng.uniform(0.78, 1.0))[band]
    hair = _mix(_HAIR[int(rng.integers(len(_HAIR)))], (215, 215, 212), grey)
    shirt = _jitter(rng, _SHIRT[int(rng.integers(len(_SHIRT)))], 20)

    rx = cw * (rng.uniform(0.27, 0.30) if female else rng.uniform(0.30, 0.34))
    ry = rx * (rng.uniform(1.36, 1.45) if female else rng.uniform(1.22, 1.30))
    cx, cy = cw * 0.5, ch * 0.44

    # Shoulders and neck.
    d.ellipse([cx - cw * 0.48, ch * 0.86, cx + cw * 0.48, ch * 1.35], fill=shirt)
    d.rectangle([cx - rx * 0.42, cy + ry * 0.6, cx + rx * 0.42, ch * 0.92], fill=_mix(skin, (0, 0, 0), 0.12))
    # Long hair (female) lies behind the head down to the shoulders.
    if female:
        d.rounded_rectangle(
            [cx - rx * 1.28, cy - ry * 1.12, cx + rx * 1.28, cy + ry * rng.uniform(1.15, 1.45)],
            radius=rx * 0.7,
            fill=hair,
        )
    # Ears and head.
    for side in (-1, 1):
        ex = cx + side * rx * 0.98
        d.ellipse([ex - rx * 0.13, cy - ry * 0.15, ex + rx * 0.13, cy + ry * 0.18], fill=skin)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    # Hair on top: a cap (male, short) or a cap with a fringe (female).
    if female:
        d.chord([cx - rx * 1.1, cy - ry * 1.15, cx + rx * 1.1, cy + ry * 0.25], 180, 360, fill=hair)
    else:
        d.chord([cx - rx * 1.04, cy - ry * 1.1, cx + rx * 1.04, cy - ry * 0.1], 180, 360, fill=hair)
        if grey > 0.75 and rng.random() < 0.5:  # receding hairline
            d.ellipse([cx - rx * 0.45, cy - ry * 0.98, cx + rx * 0.45, cy - ry * 0.5], fill=skin)

    line = max(1, round(cw / 96))
    dark = _mix(skin, (40, 20, 10), 0.45)
    eye_y = cy - ry * 0.08
    brow = _mix(hair, (0, 0, 0), 0.2)
    for side in (-1, 1):
        ex = cx + side * rx * 0.4
        ew, eh = rx * 0.16, rx * (0.08 if female else 0.065)
        d.ellipse([ex - ew, eye_y - eh, ex + ew, eye_y + eh], fill=(250, 250, 248))
        d.ellipse([ex - eh, eye_y - eh, ex + eh, eye_y + eh], fill=(50, 35, 25))
        by = eye_y - rx * (0.2 if female else 0.16)
        d.line([ex - ew * 1.1, by, ex + ew * 1.1, by - side * 0], fill=brow, width=line * (1 if female else 2))
        if female:
            d.line([ex - ew, eye_y - eh, ex + ew, eye_y - eh], fill=(20, 15, 15), width=line)
    # Wrinkles: forehead lines and crow's feet (age bands 30-59 and >= 60); eye bags for >= 60.
    wr = _mix(skin, (60, 30, 20), 0.5)
    n_lines = (0, 2, 3)[band]
    for k in range(n_lines):
        y = cy - ry * (0.32 + 0.09 * k)
        d.arc([cx - rx * 0.5, y - ry * 0.05, cx + rx * 0.5, y + ry * 0.05], 200, 340, fill=wr, width=line)
    if band >= 1:
        for side in (-1, 1):
            ex = cx + side * rx * 0.62
            for k in range(band):
                d.line(
                    [ex, eye_y + (k - 0.5) * rx * 0.07, ex + side * rx * 0.14, eye_y + (k - 0.5) * rx * 0.12],
                    fill=wr,
                    width=line,
                )
    if band == 2:
        for side in (-1, 1):
            ex = cx + side * rx * 0.4
            d.arc([ex - rx * 0.16, eye_y, ex + rx * 0.16, eye_y + rx * 0.16], 20, 160, fill=wr, width=line)
    # Nose and mouth.
    nose_y = cy + ry * 0.25
    d.line([cx, eye_y + rx * 0.1, cx - rx * 0.07, nose_y], fill=dark, width=line)
    d.line([cx - rx * 0.1, nose_y, cx + rx * 0.08, nose_y], fill=dark, width=line)
    mouth_y = cy + ry * 0.52
    if female:
        lips = _jitter(rng, (185, 60, 80), 20)
        d.ellipse([cx - rx * 0.26, mouth_y - rx * 0.07, cx + rx * 0.26, mouth_y + rx * 0.08], fill=lips)
    else:
        d.line([cx - rx * 0.26, mouth_y, cx + rx * 0.26, mouth_y], fill=dark, width=line + 1)
        if rng.random() < 0.3:  # stubble
            d.chord([cx - rx * 0.8, cy + ry * 0.2, cx + rx * 0.8, cy + ry * 1.0], 0, 180, fill=_mix(skin, hair, 0.35))
            d.line([cx - rx * 0.26, mouth_y, cx + rx * 0.26, mouth_y], fill=dark, width=line + 1)
    if band == 2:  # nasolabial folds
        for side in (-1, 1):
            d.line([cx + side * rx * 0.2, nose_y, cx + side * rx * 0.34, mouth_y + rx * 0.05], fill=wr, width=line)

    geo = _Geometry(
        cx=cx,
        half_width=rx * 0.98,
        jaw_half_width=rx * 0.55,
        eye_y=eye_y,
        nose_bridge_y=eye_y + ry * 0.1,
        nose_tip_y=nose_y,
        mouth_y=mouth_y,
        chin_y=cy + ry,
    )
    return img, geo, bg


def _load_photo_face(person: _Person, faces: Path, canvas: tuple[int, int]) -> tuple[Image.Image, _Geometry, tuple]:
    """The person's photo on a (CW, CH) canvas: the square crop fills the short side, the rest is padded
    with the photo's blurred edge rows/columns. Landmarks from the UTKFace alignment (see the module doc)."""
    cw, ch = canvas
    with Image.open(faces / person.source) as im:
        photo = im.convert("RGB")
    side = min(cw, ch)
    photo = photo.resize((side, side), Image.Resampling.BICUBIC)
    x0, y0 = (cw - side) // 2, round((ch - side) * 0.45)
    arr = np.asarray(photo)
    padded = np.pad(arr, ((y0, ch - side - y0), (x0, cw - side - x0), (0, 0)), mode="edge")
    img = Image.fromarray(padded).filter(ImageFilter.GaussianBlur(radius=side * 0.04))
    img.paste(photo, (x0, y0))
    bg = tuple(int(v) for v in np.concatenate([arr[0], arr[-1]]).mean(axis=0))
    geo = _Geometry(
        cx=x0 + side * 0.5,
        half_width=side * 0.40,
        jaw_half_width=side * 0.24,
        eye_y=y0 + side * 0.40,
        nose_bridge_y=y0 + side * 0.48,
        nose_tip_y=y0 + side * 0.58,
        mouth_y=y0 + side * 0.72,
        chin_y=y0 + side * 0.90,
    )
    return img, geo, bg


def _mask_outline(
    cx: float, top: float, bottom: float, hw_top: float, hw_bottom: float, style: str, n: int = 16
) -> list[tuple[float, float]]:
    """Closed outline of a mask from `top` to `bottom` (y, pixels), centred at `cx`."""
    h = bottom - top
    # (nose bump as a fraction of h, bump profile exponent, bottom drop fraction, bottom profile exponent)
    bump, bump_p, drop, drop_p = {
        "surgical": (0.03, 2.0, 0.22, 5.0),
        "cloth_black": (0.10, 1.5, 0.45, 2.0),
        "kn95": (0.16, 1.0, 0.55, 1.2),
        "patterned": (0.08, 1.5, 0.40, 2.2),
        "cloth_colour": (0.06, 2.0, 0.32, 3.0),
    }[style]
    pts = []
    for i in range(n + 1):  # top edge, left to right
        u = -1 + 2 * i / n
        pts.append((cx + u * hw_top, top - bump * h * (1 - abs(u) ** bump_p)))
    for i in range(n + 1):  # right side down, bottom edge right to left
        u = 1 - 2 * i / n
        pts.append((cx + u * hw_bottom, bottom - drop * h * abs(u) ** drop_p))
    return pts


def _draw_mask(img: Image.Image, geo: _Geometry, style: str, placement: str, rng: np.random.Generator) -> None:
    """Draw a mask onto `img` (in place). placement: "worn" (nose to chin), "below_nose" or "chin"."""
    cw, ch = img.size
    j = lambda s: rng.uniform(-s, s)  # noqa: E731 - small per-image variation
    face_h = geo.chin_y - geo.eye_y
    if placement == "worn":
        top = geo.nose_bridge_y + j(0.04) * face_h
        bottom = geo.chin_y + (0.06 + j(0.03)) * face_h
    elif placement == "below_nose":
        top = geo.nose_tip_y + (0.14 + j(0.04)) * face_h
        bottom = geo.chin_y + (0.14 + j(0.03)) * face_h
    else:  # "chin": only the chin is covered, mouth and nose are bare
        top = geo.mouth_y + (0.12 + j(0.03)) * face_h
        bottom = geo.chin_y + (0.16 + j(0.03)) * face_h
    hw_top = geo.half_width * (1.0 + j(0.05)) * (0.92 if placement == "chin" else 1.0)
    hw_bottom = geo.jaw_half_width * (1.0 + j(0.08)) * (1.3 if style == "surgical" else 1.0)
    cx = geo.cx + j(0.03) * geo.half_width
    outline = _mask_outline(cx, top, bottom, hw_top, hw_bottom, style)

    colour = _jitter(rng, _MASK_COLOURS[style][int(rng.integers(len(_MASK_COLOURS[style])))], 12)
    layer = Image.new("RGB", img.size, colour)
    ld = ImageDraw.Draw(layer)
    h = bottom - top
    line = max(1, round(cw / 110))
    shade = _mix(colour, (0, 0, 0), 0.22)
    if style == "surgical":  # pleats and a nose wire
        for k in (0.3, 0.5, 0.7):
            y = top + k * h
            ld.line([cx - hw_top * 1.1, y, cx + hw_top * 1.1, y + h * 0.02], fill=shade, width=line)
        ld.line(
            [cx - hw_top * 0.5, top + h * 0.04, cx + hw_top * 0.5, top + h * 0.04], fill=(230, 235, 240), width=line
        )
    elif style == "kn95":  # centre seam, sealed edge
        ld.line([cx, top - 0.16 * h, cx, bottom], fill=_mix(colour, (0, 0, 0), 0.3), width=line + 1)
    elif style == "patterned":
        accent = _jitter(rng, (245, 240, 230) if sum(colour) < 450 else (40, 40, 60), 10)
        if rng.random() < 0.5:  # polka dots
            step = max(4.0, hw_top * 0.28)
            r = step * 0.22
            for yi, y in enumerate(np.arange(top - h * 0.2, bottom, step)):
                for x in np.arange(cx - hw_top - step + (yi % 2) * step / 2, cx + hw_top + step, step):
                    ld.ellipse([x - r, y - r, x + r, y + r], fill=accent)
        else:  # diagonal stripes
            step = max(4.0, hw_top * 0.3)
            for x in np.arange(cx - hw_top - h, cx + hw_top + h, step):
                ld.line([x, top - h * 0.2, x + h * 1.2, bottom], fill=accent, width=max(1, round(step * 0.3)))
    elif style == "cloth_colour":  # darker hem along the edge
        ld.line(outline + [outline[0]], fill=shade, width=line * 2)
    # Soft vertical shading: darker towards the bottom, as a mask curves under the chin.
    grad = np.linspace(1.0, 0.82, ch, dtype=np.float32)[:, None, None]
    layer = Image.fromarray((np.asarray(layer, dtype=np.float32) * grad).astype(np.uint8))

    alpha = Image.new("L", img.size, 0)
    ImageDraw.Draw(alpha).polygon(outline, fill=255)
    img.paste(layer, (0, 0), alpha)
    d = ImageDraw.Draw(img)
    if style != "kn95":  # an outline so light masks on light skin stay visible
        d.line(outline + [outline[0]], fill=_mix(colour, (0, 0, 0), 0.35), width=line)
    # Ear loops from the mask's upper corners towards the ears.
    loop = (235, 235, 235) if style in ("surgical", "kn95") else _mix(colour, (0, 0, 0), 0.2)
    for side in (-1, 1):
        x0 = cx + side * hw_top
        x1 = geo.cx + side * geo.half_width * 1.12
        d.line([x0, top + 0.12 * h, x1, geo.eye_y + 0.35 * face_h], fill=loop, width=line)
        d.line([cx + side * hw_bottom, bottom - 0.3 * h, x1, geo.eye_y + 0.45 * face_h], fill=loop, width=line)


def _finish(
    img: Image.Image, size: tuple[int, int], bg: tuple, rng: np.random.Generator, strength: float
) -> np.ndarray:
    """Per-image nuisance: affine jitter (shift, scale, rotation), downsample to `size`, lighting and noise.

    Returns (H, W, 3) uint8."""
    cw, ch = img.size
    angle = math.radians(rng.uniform(-7, 7) * strength)
    scale = 1.0 + rng.uniform(-0.1, 0.1) * strength
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * strength * np.array([cw, ch])
    # Inverse affine map (output -> input) about the canvas centre, as PIL's AFFINE expects.
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    ocx, ocy = cw / 2, ch / 2
    a, b = cos, sin
    c = ocx - a * (ocx + tx) - b * (ocy + ty)
    d_, e = -sin, cos
    f = ocy - d_ * (ocx + tx) - e * (ocy + ty)
    img = img.transform(img.size, Image.Transform.AFFINE, (a, b, c, d_, e, f), Image.Resampling.BILINEAR, fillcolor=bg)
    img = img.resize(size, Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float32)
    w = size[0]
    gain = rng.uniform(1 - 0.25 * strength, 1 + 0.2 * strength)
    slope = rng.uniform(-0.2, 0.2) * strength
    light = gain * (1 + slope * np.linspace(-1, 1, w, dtype=np.float32))[None, :, None]
    cast = 1 + rng.uniform(-0.06, 0.06, size=3).astype(np.float32) * strength
    arr = arr * light * cast + rng.normal(0, rng.uniform(1.5, 6.0) * strength, size=arr.shape).astype(np.float32)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def _render_person(person: _Person, size: tuple[int, int], faces: Path | None) -> list[np.ndarray]:
    """The person's 7 images in MASK_FILES order, each (H, W, 3) uint8."""
    canvas = (size[0] * _SUPERSAMPLE, size[1] * _SUPERSAMPLE)
    if faces is None:
        base, geo, bg = _draw_procedural_face(person, canvas)
        strength = 1.0
    else:
        base, geo, bg = _load_photo_face(person, faces, canvas)
        strength = 0.5  # real photos vary already; keep the drawn landmarks close to the face
    rng = np.random.default_rng([person.seed, 2])
    styles = [MASK_STYLES[i] for i in rng.permutation(len(MASK_STYLES))]
    out = []
    for k, name in enumerate(MASK_FILES):
        img = base.copy()
        if name.startswith("mask"):
            _draw_mask(img, geo, styles[k], "worn", rng)
        elif name == "incorrect_mask":
            style = MASK_STYLES[int(rng.integers(len(MASK_STYLES)))]
            _draw_mask(img, geo, style, "below_nose" if rng.random() < 0.65 else "chin", rng)
        out.append(_finish(img, size, bg, rng, strength))
    return out


def _save(arr: np.ndarray, path: Path, gray: bool = False, rgba: bool = False) -> None:
    img = Image.fromarray(arr, "RGB")
    if gray:
        img = img.convert("L")
    if rgba:
        img = img.convert("RGBA")  # fully opaque: the pixels stay the same once converted back to RGB
    kind = path.suffix.lower()
    if kind == ".png":
        img.save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=92)


# --- the dataset ----------------------------------------------------------------------------------------


def write_demo_dataset(
    out: str | Path,
    persons: int = 300,
    eval_persons: int | None = None,
    size: tuple[int, int] | str = (96, 128),
    seed: int = 0,
    faces: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> DemoSummary:
    """Write a dataset in the competition layout (docs/architecture.md, "Data layout") under `out`.

    Writes `out/train/train.csv` (id, gender, race, age, path) and `out/train/images/<path>/` with the 7
    files mask1..mask5, incorrect_mask, normal per person; `out/eval/info.csv` (ImageID, ans empty) and
    `out/eval/images/<sha1>.jpg` (the eval persons' 7 images each, shuffled); `out/eval/answers.csv`
    (ImageID, ans = the true class id (maskcls_hpo.labels), bands <30, 30-59, >=60); and `out/sources.csv`
    (part, id, gender, race, age, source: the photo file name or `procedural`). No person is in both parts.
    The same arguments give byte-identical files.

    Args:
        out: the dataset root; must not exist or be empty (unless `overwrite`).
        persons: train persons N (>= 1).
        eval_persons: eval persons M (default N // 3, at least 1; 0 writes an empty eval part).
        size: (width, height) in pixels or "WxH"; the real set is 384x512, the default 96x128 keeps its
            aspect.
        seed: random seed; everything written follows from it.
        faces: folder of UTKFace-named photos (`AGE_GENDER_RACE_*.jpg`, gender 0=male 1=female); N + M
            distinct adult photos are picked (balanced over gender x age band where possible), one per
            person, with the real age kept (the label uses its band). None draws procedural faces
            (ages 18-60, every 60+ person exactly 60, as in the real set).
        progress: show a progress bar (rich, stderr).
        overwrite: replace `out/train`, `out/eval`, `out/sources.csv` and `out/contact_sheet.png` when `out`
            is not empty (nothing else in `out` is touched).

    Returns:
        DemoSummary with counts, person ids per part, sources and the CSV paths.

    Raises:
        DemoDataError: `out` exists and is not empty (without `overwrite`) or is a file; `persons < 1`;
            `eval_persons < 0`; bad `size`; `faces` is not a folder, has no usable photo or fewer than N + M.
    """
    t0 = time.perf_counter()
    out = Path(out)
    size = parse_size(size)
    if persons < 1:
        raise DemoDataError(f"--persons {persons}: need at least 1 train person")
    if eval_persons is None:
        eval_persons = max(1, persons // 3)
    if eval_persons < 0:
        raise DemoDataError(f"--eval-persons {eval_persons}: must be >= 0")
    if out.exists() and not out.is_dir():
        raise DemoDataError(f"{out}: is a file; give a folder to write the dataset into")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DemoDataError(f"{out}: folder is not empty; choose a new folder or pass --overwrite")
        for sub in ("train", "eval"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "sources.csv").unlink(missing_ok=True)
        (out / "contact_sheet.png").unlink(missing_ok=True)
    faces = Path(faces) if faces is not None else None

    rng = np.random.default_rng(seed)
    n_total = persons + eval_persons
    photos = _pick_photos(faces, n_total, rng) if faces is not None else None
    people = _make_persons(persons, n_total, rng, photos)
    train_people = sorted(people[:persons], key=lambda p: p.pid)
    eval_people = people[persons:]
    quirks = _plan_quirks(persons, rng)

    train_dir, eval_dir = out / "train", out / "eval"
    (train_dir / "images").mkdir(parents=True, exist_ok=True)
    (eval_dir / "images").mkdir(parents=True, exist_ok=True)

    jobs: list[tuple[str, int, _Person]] = [("train", i, p) for i, p in enumerate(train_people)]
    jobs += [("eval", i, p) for i, p in enumerate(eval_people)]
    eval_rows: list[tuple[str, int]] = []
    eval_gray = int(rng.integers(eval_persons * 7)) if eval_persons else -1
    n_train_images = 0
    for part, i, person in _progress(jobs, progress, f"demo-data -> {out}"):
        images = _render_person(person, size, faces)
        if part == "train":
            folder = train_dir / "images" / person.folder
            folder.mkdir()
            for f, (name, arr) in enumerate(zip(MASK_FILES, images, strict=True)):
                file = folder / (name + quirks.extension(i, f))
                _save(arr, file, gray=(i, f) in quirks.gray, rgba=(i, f) in quirks.rgba)
                if i in quirks.junk:
                    (folder / ("._" + file.name)).write_bytes(_APPLEDOUBLE)
                n_train_images += 1
        else:
            for f, (name, arr) in enumerate(zip(MASK_FILES, images, strict=True)):
                image_id = hashlib.sha1(f"{seed}/{person.pid}/{name}".encode()).hexdigest() + ".jpg"
                _save(arr, eval_dir / "images" / image_id, gray=i * 7 + f == eval_gray)
                mask = 0 if name.startswith("mask") else 1 if name == "incorrect_mask" else 2
                eval_rows.append((image_id, encode_label(mask, person.gender, age_band(person.age))))

    eval_rows = [eval_rows[i] for i in rng.permutation(len(eval_rows))]
    train_csv = train_dir / "train.csv"
    _write_csv(
        train_csv,
        ["id", "gender", "race", "age", "path"],
        [(p.pid, GENDERS[p.gender], p.race, p.age, p.folder) for p in train_people],
    )
    info_csv = eval_dir / "info.csv"
    _write_csv(info_csv, ["ImageID", "ans"], [(image_id, "") for image_id, _ in eval_rows])
    answers_csv = eval_dir / "answers.csv"
    _write_csv(answers_csv, ["ImageID", "ans"], eval_rows)
    sources_csv = out / "sources.csv"
    _write_csv(
        sources_csv,
        ["part", "id", "gender", "race", "age", "source"],
        [("train", p.pid, GENDERS[p.gender], p.race, p.age, p.source) for p in train_people]
        + [("eval", p.pid, GENDERS[p.gender], p.race, p.age, p.source) for p in eval_people],
    )
    return DemoSummary(
        out=out,
        persons=persons,
        eval_persons=eval_persons,
        train_images=n_train_images,
        eval_images=len(eval_rows),
        size=size,
        seed=seed,
        faces=faces,
        train_ids=tuple(p.pid for p in train_people),
        eval_ids=tuple(p.pid for p in eval_people),
        sources={p.pid: p.source for p in people},
        train_csv=train_csv,
        info_csv=info_csv,
        answers_csv=answers_csv,
        sources_csv=sources_csv,
        seconds=time.perf_counter() - t0,
    )


def _write_csv(path: Path, header: list[str], rows: list[Sequence]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _progress(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)


# --- contact sheet --------------------------------------------------------------------------------------


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images_dir = Path(data_dir) / "train" / "images"
    if not images_dir.is_dir():
        raise DemoDataError(f"{images_dir}: not found; give a dataset root holding train/images/")
    if not 1 <= per_class <= 12:
        raise DemoDataError(f"per_class {per_class}: must be 1..12")
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

    fig = plt.figure(figsize=(3 * per_class * 0.95 + 1.2, 6 * 1.45 + 0.6), dpi=110)
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
    fig.suptitle(
        f"{Path(data_dir).name}: {per_class} train images per class (class ids as in maskcls_hpo.labels)", fontsize=10
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
