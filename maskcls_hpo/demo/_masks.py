"""Masks for the demo dataset: 5 styles drawn onto a face at its landmarks, worn or pulled down."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from maskcls_hpo.demo._faces import Geometry, jitter, mix

__all__ = ["MASK_STYLES", "draw_mask"]

MASK_STYLES = ("surgical", "cloth_black", "kn95", "patterned", "cloth_colour")
"""The 5 mask styles (:mod:`maskcls_hpo.demo` describes them); mask1..mask5 wear a per-person permutation."""

_MASK_COLOURS = {
    "surgical": [(110, 170, 215), (140, 195, 230), (95, 150, 200)],
    "cloth_black": [(28, 28, 32), (40, 38, 42), (20, 22, 30)],
    "kn95": [(238, 238, 232), (226, 228, 226), (245, 243, 236)],
    "patterned": [(30, 45, 110), (150, 30, 45), (35, 95, 70), (230, 200, 60)],
    "cloth_colour": [(230, 110, 160), (90, 190, 110), (240, 200, 40), (140, 90, 200), (250, 140, 60)],
}


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


def draw_mask(img: Image.Image, geo: Geometry, style: str, placement: str, rng: np.random.Generator) -> None:
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

    colour = jitter(rng, _MASK_COLOURS[style][int(rng.integers(len(_MASK_COLOURS[style])))], 12)
    layer = Image.new("RGB", img.size, colour)
    ld = ImageDraw.Draw(layer)
    h = bottom - top
    line = max(1, round(cw / 110))
    shade = mix(colour, (0, 0, 0), 0.22)
    if style == "surgical":  # pleats and a nose wire
        for k in (0.3, 0.5, 0.7):
            y = top + k * h
            ld.line([cx - hw_top * 1.1, y, cx + hw_top * 1.1, y + h * 0.02], fill=shade, width=line)
        ld.line(
            [cx - hw_top * 0.5, top + h * 0.04, cx + hw_top * 0.5, top + h * 0.04], fill=(230, 235, 240), width=line
        )
    elif style == "kn95":  # centre seam, sealed edge
        ld.line([cx, top - 0.16 * h, cx, bottom], fill=mix(colour, (0, 0, 0), 0.3), width=line + 1)
    elif style == "patterned":
        accent = jitter(rng, (245, 240, 230) if sum(colour) < 450 else (40, 40, 60), 10)
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
        d.line(outline + [outline[0]], fill=mix(colour, (0, 0, 0), 0.35), width=line)
    # Ear loops from the mask's upper corners towards the ears.
    loop = (235, 235, 235) if style in ("surgical", "kn95") else mix(colour, (0, 0, 0), 0.2)
    for side in (-1, 1):
        x0 = cx + side * hw_top
        x1 = geo.cx + side * geo.half_width * 1.12
        d.line([x0, top + 0.12 * h, x1, geo.eye_y + 0.35 * face_h], fill=loop, width=line)
        d.line([cx + side * hw_bottom, bottom - 0.3 * h, x1, geo.eye_y + 0.45 * face_h], fill=loop, width=line)
