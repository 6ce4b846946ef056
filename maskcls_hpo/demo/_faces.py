"""Faces for the demo dataset: a procedural face drawn with PIL, or a real photo, each with the landmarks where a
mask goes (:class:`Geometry`). What each trait looks like is described in :mod:`maskcls_hpo.demo`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskcls_hpo.labels import GENDERS, age_band

__all__ = ["RGB", "Person", "Geometry", "jitter", "mix", "draw_procedural_face", "load_photo_face"]

RGB = tuple[int, int, int]
"""A colour: red, green, blue in 0..255."""


@dataclass(frozen=True)
class Person:
    """One person of the demo dataset."""

    pid: str
    gender: int  # 0 male, 1 female
    age: int
    race: str
    source: str  # photo path or "procedural"
    seed: int  # the person's own seed: the person's images do not depend on the other persons

    @property
    def folder(self) -> str:
        """The train folder name `<id>_<gender>_<race>_<age>`."""
        return f"{self.pid}_{GENDERS[self.gender]}_{self.race}_{self.age}"


@dataclass(frozen=True)
class Geometry:
    """Face landmarks on the drawing canvas (pixels): where a mask goes."""

    cx: float
    half_width: float  # half the face width at cheek level
    jaw_half_width: float  # half the jaw width near the chin
    eye_y: float
    nose_bridge_y: float
    nose_tip_y: float
    mouth_y: float
    chin_y: float


def jitter(rng: np.random.Generator, colour: Sequence[int], amount: int) -> RGB:
    """`colour` with each channel moved by a uniform integer in [-amount, amount], clipped to 0..255."""
    c = np.asarray(colour[:3], dtype=np.int64) + rng.integers(-amount, amount + 1, size=3)
    r, g, b = (int(v) for v in np.clip(c, 0, 255))
    return r, g, b


def mix(a: Sequence[float], b: Sequence[float], t: float) -> RGB:
    """The colour a fraction `t` of the way from `a` to `b` (rounded)."""
    r, g, b_ = (int(round(x + (y - x) * t)) for x, y in zip(a[:3], b[:3], strict=True))
    return r, g, b_


_SKIN = {
    "Asian": (232, 196, 160),
    "White": (240, 205, 180),
    "Black": (125, 85, 60),
    "Indian": (190, 140, 105),
    "Other": (205, 160, 125),
}
_HAIR = [(25, 20, 18), (60, 40, 25), (100, 70, 40), (185, 150, 90), (120, 55, 30)]
_SHIRT = [(40, 60, 120), (150, 30, 40), (40, 110, 60), (90, 90, 90), (230, 230, 225), (20, 20, 25)]


@dataclass(frozen=True)
class _Sketch:
    """One procedural face's proportions (canvas pixels) and colours: what every drawing step reads."""

    cx: float
    cy: float
    rx: float  # half the head width
    ry: float  # half the head height
    female: bool
    band: int  # age band 0, 1, 2
    grey: float  # hair greyness 0..1
    skin: RGB
    hair: RGB
    line: int  # stroke width


def draw_procedural_face(person: Person, canvas: tuple[int, int]) -> tuple[Image.Image, Geometry, RGB]:
    """The person's bare face on a (CW, CH) canvas: the same for all 7 images (before per-image jitter).

    Returns the RGB image, its landmarks and its background colour. The drawing follows from `person.seed`
    alone (one generator, drawn from in a fixed order)."""
    rng = np.random.default_rng([person.seed, 1])
    cw, ch = canvas
    female = person.gender == 1
    band = age_band(person.age)
    bg = jitter(rng, rng.choice([(200, 205, 210), (225, 220, 205), (170, 185, 200), (90, 100, 110)]), 25)
    img = Image.new("RGB", canvas, bg)
    d = ImageDraw.Draw(img)

    skin = jitter(rng, _SKIN.get(person.race, _SKIN["Other"]), 14)
    # Greyness by age band (per-person noise; a slight trend with age inside the band).
    grey = (rng.uniform(0.0, 0.12), rng.uniform(0.35, 0.6), rng.uniform(0.78, 1.0))[band]
    hair = mix(_HAIR[int(rng.integers(len(_HAIR)))], (215, 215, 212), grey)
    shirt = jitter(rng, _SHIRT[int(rng.integers(len(_SHIRT)))], 20)

    rx = cw * (rng.uniform(0.27, 0.30) if female else rng.uniform(0.30, 0.34))
    ry = rx * (rng.uniform(1.36, 1.45) if female else rng.uniform(1.22, 1.30))
    f = _Sketch(cw * 0.5, ch * 0.44, rx, ry, female, band, grey, skin, hair, max(1, round(cw / 96)))

    _draw_head(d, f, canvas, shirt, rng)
    eye_y = f.cy - f.ry * 0.08
    _draw_eyes(d, f, eye_y)
    _draw_wrinkles(d, f, eye_y)
    nose_y, mouth_y = _draw_nose_and_mouth(d, f, eye_y, rng)
    geo = Geometry(
        cx=f.cx,
        half_width=f.rx * 0.98,
        jaw_half_width=f.rx * 0.55,
        eye_y=eye_y,
        nose_bridge_y=eye_y + f.ry * 0.1,
        nose_tip_y=nose_y,
        mouth_y=mouth_y,
        chin_y=f.cy + f.ry,
    )
    return img, geo, bg


def _draw_head(
    d: ImageDraw.ImageDraw, f: _Sketch, canvas: tuple[int, int], shirt: RGB, rng: np.random.Generator
) -> None:
    """Shoulders, neck, long hair (female), ears, the head and the hair on top."""
    cw, ch = canvas
    cx, cy, rx, ry, skin, hair = f.cx, f.cy, f.rx, f.ry, f.skin, f.hair
    # Shoulders and neck.
    d.ellipse([cx - cw * 0.48, ch * 0.86, cx + cw * 0.48, ch * 1.35], fill=shirt)
    d.rectangle([cx - rx * 0.42, cy + ry * 0.6, cx + rx * 0.42, ch * 0.92], fill=mix(skin, (0, 0, 0), 0.12))
    # Long hair (female) lies behind the head down to the shoulders.
    if f.female:
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
    if f.female:
        d.chord([cx - rx * 1.1, cy - ry * 1.15, cx + rx * 1.1, cy + ry * 0.25], 180, 360, fill=hair)
    else:
        d.chord([cx - rx * 1.04, cy - ry * 1.1, cx + rx * 1.04, cy - ry * 0.1], 180, 360, fill=hair)
        if f.grey > 0.75 and rng.random() < 0.5:  # receding hairline
            d.ellipse([cx - rx * 0.45, cy - ry * 0.98, cx + rx * 0.45, cy - ry * 0.5], fill=skin)


def _draw_eyes(d: ImageDraw.ImageDraw, f: _Sketch, eye_y: float) -> None:
    """Eyes, brows and (female) eyeliner at height `eye_y`."""
    cx, rx, line = f.cx, f.rx, f.line
    brow = mix(f.hair, (0, 0, 0), 0.2)
    for side in (-1, 1):
        ex = cx + side * rx * 0.4
        ew, eh = rx * 0.16, rx * (0.08 if f.female else 0.065)
        d.ellipse([ex - ew, eye_y - eh, ex + ew, eye_y + eh], fill=(250, 250, 248))
        d.ellipse([ex - eh, eye_y - eh, ex + eh, eye_y + eh], fill=(50, 35, 25))
        by = eye_y - rx * (0.2 if f.female else 0.16)
        d.line([ex - ew * 1.1, by, ex + ew * 1.1, by - side * 0], fill=brow, width=line * (1 if f.female else 2))
        if f.female:
            d.line([ex - ew, eye_y - eh, ex + ew, eye_y - eh], fill=(20, 15, 15), width=line)


def _draw_wrinkles(d: ImageDraw.ImageDraw, f: _Sketch, eye_y: float) -> None:
    """Forehead lines and crow's feet (age bands 30-59 and >= 60); eye bags for >= 60."""
    cx, cy, rx, ry, band, line = f.cx, f.cy, f.rx, f.ry, f.band, f.line
    wr = mix(f.skin, (60, 30, 20), 0.5)
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


def _draw_nose_and_mouth(
    d: ImageDraw.ImageDraw, f: _Sketch, eye_y: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Nose, mouth (female lips; male a line, sometimes stubble), nasolabial folds for >= 60.

    Returns (nose tip y, mouth y) in canvas pixels."""
    cx, cy, rx, ry, skin, line = f.cx, f.cy, f.rx, f.ry, f.skin, f.line
    dark = mix(skin, (40, 20, 10), 0.45)
    nose_y = cy + ry * 0.25
    d.line([cx, eye_y + rx * 0.1, cx - rx * 0.07, nose_y], fill=dark, width=line)
    d.line([cx - rx * 0.1, nose_y, cx + rx * 0.08, nose_y], fill=dark, width=line)
    mouth_y = cy + ry * 0.52
    if f.female:
        lips = jitter(rng, (185, 60, 80), 20)
        d.ellipse([cx - rx * 0.26, mouth_y - rx * 0.07, cx + rx * 0.26, mouth_y + rx * 0.08], fill=lips)
    else:
        d.line([cx - rx * 0.26, mouth_y, cx + rx * 0.26, mouth_y], fill=dark, width=line + 1)
        if rng.random() < 0.3:  # stubble
            d.chord([cx - rx * 0.8, cy + ry * 0.2, cx + rx * 0.8, cy + ry * 1.0], 0, 180, fill=mix(skin, f.hair, 0.35))
            d.line([cx - rx * 0.26, mouth_y, cx + rx * 0.26, mouth_y], fill=dark, width=line + 1)
    if f.band == 2:  # nasolabial folds
        wr = mix(skin, (60, 30, 20), 0.5)
        for side in (-1, 1):
            d.line([cx + side * rx * 0.2, nose_y, cx + side * rx * 0.34, mouth_y + rx * 0.05], fill=wr, width=line)
    return nose_y, mouth_y


def load_photo_face(person: Person, faces: Path, canvas: tuple[int, int]) -> tuple[Image.Image, Geometry, RGB]:
    """The person's photo on a (CW, CH) canvas: the square crop fills the short side, the rest is padded
    with the photo's blurred edge rows/columns. Landmarks from the UTKFace alignment (see
    :mod:`maskcls_hpo.demo`)."""
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
    r, g, b = (int(v) for v in np.concatenate([arr[0], arr[-1]]).mean(axis=0))
    bg = (r, g, b)
    geo = Geometry(
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
