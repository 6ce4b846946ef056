"""The demo dataset itself: persons, the real set's file quirks, rendering each person's 7 images, and the files
of the competition layout (docs/architecture.md, "Data layout"). :mod:`maskcls_hpo.demo` says what it holds."""

from __future__ import annotations

import csv
import hashlib
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from maskcls_hpo._util import check_output_folder, check_whole_number, progress_bar
from maskcls_hpo.demo._faces import RGB, Person, draw_procedural_face, load_photo_face
from maskcls_hpo.demo._masks import MASK_STYLES, draw_mask
from maskcls_hpo.errors import DemoDataError
from maskcls_hpo.labels import GENDERS, MASK_FILES, age_band, encode_label

__all__ = ["UTK_RACES", "DemoSummary", "parse_size", "write_demo_dataset"]

UTK_RACES = ("White", "Black", "Asian", "Indian", "Other")
_SUPERSAMPLE = 2  # faces are drawn at 2x the output size and downsampled (anti-aliasing)
# NOTE: the first bytes of a macOS AppleDouble file, as the real set's `._mask1.jpg` files hold.
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"

MAX_PERSONS = 1_000_000
"""The most train (or eval) persons one demo dataset holds (7 images each)."""


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
) -> list[Person]:
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
            persons.append(Person(pid, gender, age, UTK_RACES[race], path.name, int(seeds[i])))
            continue
        gender, band = strata[order[i] % len(strata)]
        age = (int(rng.integers(18, 30)), int(rng.integers(30, 60)), 60)[band]
        race = str(rng.choice(["Asian", "White", "Black"], p=[0.6, 0.25, 0.15]))
        persons.append(Person(pid, gender, age, race, "procedural", int(seeds[i])))
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


# --- rendering ------------------------------------------------------------------------------------------


def _finish_image(
    img: Image.Image, size: tuple[int, int], bg: RGB, rng: np.random.Generator, strength: float
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


def _render_person(person: Person, size: tuple[int, int], faces: Path | None) -> list[np.ndarray]:
    """The person's 7 images in MASK_FILES order, each (H, W, 3) uint8."""
    canvas = (size[0] * _SUPERSAMPLE, size[1] * _SUPERSAMPLE)
    if faces is None:
        base, geo, bg = draw_procedural_face(person, canvas)
        strength = 1.0
    else:
        base, geo, bg = load_photo_face(person, faces, canvas)
        strength = 0.5  # real photos vary already; keep the drawn landmarks close to the face
    rng = np.random.default_rng([person.seed, 2])
    styles = [MASK_STYLES[i] for i in rng.permutation(len(MASK_STYLES))]
    out = []
    for k, name in enumerate(MASK_FILES):
        img = base.copy()
        if name.startswith("mask"):
            draw_mask(img, geo, styles[k], "worn", rng)
        elif name == "incorrect_mask":
            style = MASK_STYLES[int(rng.integers(len(MASK_STYLES)))]
            draw_mask(img, geo, style, "below_nose" if rng.random() < 0.65 else "chin", rng)
        out.append(_finish_image(img, size, bg, rng, strength))
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
    out, wh = check_output_folder(out, "OUT", DemoDataError), parse_size(size)
    eval_persons = _check_counts(persons, eval_persons)
    _clear_out(out, overwrite)
    photo_dir = Path(faces) if faces is not None else None

    # NOTE one generator, drawn from in this order (photos, persons, quirks, the grey eval image, the eval
    # order): the same arguments give byte-identical files.
    rng = np.random.default_rng(seed)
    n_total = persons + eval_persons
    photos = _pick_photos(photo_dir, n_total, rng) if photo_dir is not None else None
    people = _make_persons(persons, n_total, rng, photos)
    train_people = sorted(people[:persons], key=lambda p: p.pid)
    eval_people = people[persons:]
    quirks = _plan_quirks(persons, rng)
    eval_gray = int(rng.integers(eval_persons * 7)) if eval_persons else -1
    render = _Render(out, wh, photo_dir, seed, quirks, eval_gray)
    n_train_images, eval_rows = render.write_images(train_people, eval_people, progress)
    eval_rows = [eval_rows[i] for i in rng.permutation(len(eval_rows))]
    train_csv, info_csv, answers_csv, sources_csv = _write_tables(out, train_people, eval_people, eval_rows)
    return DemoSummary(
        out=out,
        persons=persons,
        eval_persons=eval_persons,
        train_images=n_train_images,
        eval_images=len(eval_rows),
        size=wh,
        seed=seed,
        faces=photo_dir,
        train_ids=tuple(p.pid for p in train_people),
        eval_ids=tuple(p.pid for p in eval_people),
        sources={p.pid: p.source for p in people},
        train_csv=train_csv,
        info_csv=info_csv,
        answers_csv=answers_csv,
        sources_csv=sources_csv,
        seconds=time.perf_counter() - t0,
    )


def _check_counts(persons: int, eval_persons: int | None) -> int:
    """The eval persons M (default N // 3, at least 1), after checking both counts."""
    check_whole_number(persons, "--persons", 1, MAX_PERSONS, DemoDataError)
    if eval_persons is None:
        eval_persons = max(1, persons // 3)
    return check_whole_number(eval_persons, "--eval-persons", 0, MAX_PERSONS, DemoDataError)


def _clear_out(out: Path, overwrite: bool) -> None:
    """Refuse a file or a non-empty folder; with `overwrite` remove what a dataset there consists of."""
    if out.exists() and not out.is_dir():
        raise DemoDataError(f"{out}: is a file; give a folder to write the dataset into")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DemoDataError(f"{out}: folder is not empty; choose a new folder or pass --overwrite")
        for sub in ("train", "eval"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "sources.csv").unlink(missing_ok=True)
        (out / "contact_sheet.png").unlink(missing_ok=True)


@dataclass(frozen=True)
class _Render:
    """Where and how every person's images are written."""

    out: Path
    size: tuple[int, int]  # (width, height)
    faces: Path | None
    seed: int
    quirks: _Quirks
    eval_gray: int  # the eval image (person index * 7 + file index) saved as grayscale, -1 for none

    def write_images(
        self, train_people: list[Person], eval_people: list[Person], progress: bool
    ) -> tuple[int, list[tuple[str, int]]]:
        """Render and save every person's 7 images; returns (train images written, eval (ImageID, class))."""
        (self.out / "train" / "images").mkdir(parents=True, exist_ok=True)
        (self.out / "eval" / "images").mkdir(parents=True, exist_ok=True)
        jobs = [("train", i, p) for i, p in enumerate(train_people)] + [
            ("eval", i, p) for i, p in enumerate(eval_people)
        ]
        n_train_images = 0
        eval_rows: list[tuple[str, int]] = []
        with progress_bar(len(jobs), f"demo-data -> {self.out}", enabled=progress, transient=True) as advance:
            for part, i, person in jobs:
                images = _render_person(person, self.size, self.faces)
                if part == "train":
                    n_train_images += self._save_train(i, person, images)
                else:
                    eval_rows += self._save_eval(i, person, images)
                advance()
        return n_train_images, eval_rows

    def _save_train(self, i: int, person: Person, images: list[np.ndarray]) -> int:
        """Train person `i`'s folder with the quirks planned for it; returns the images written (7)."""
        folder = self.out / "train" / "images" / person.folder
        folder.mkdir()
        q = self.quirks
        for f, (name, arr) in enumerate(zip(MASK_FILES, images, strict=True)):
            file = folder / (name + q.extension(i, f))
            _save(arr, file, gray=(i, f) in q.gray, rgba=(i, f) in q.rgba)
            if i in q.junk:
                (folder / ("._" + file.name)).write_bytes(_APPLEDOUBLE)
        return len(images)

    def _save_eval(self, i: int, person: Person, images: list[np.ndarray]) -> list[tuple[str, int]]:
        """Eval person `i`'s images under sha1 ImageIDs; returns (ImageID, true class) per image."""
        rows = []
        for f, (name, arr) in enumerate(zip(MASK_FILES, images, strict=True)):
            image_id = hashlib.sha1(f"{self.seed}/{person.pid}/{name}".encode()).hexdigest() + ".jpg"
            _save(arr, self.out / "eval" / "images" / image_id, gray=i * 7 + f == self.eval_gray)
            mask = 0 if name.startswith("mask") else 1 if name == "incorrect_mask" else 2
            rows.append((image_id, encode_label(mask, person.gender, age_band(person.age))))
        return rows


def _write_tables(
    out: Path, train_people: list[Person], eval_people: list[Person], eval_rows: list[tuple[str, int]]
) -> tuple[Path, Path, Path, Path]:
    """train.csv, info.csv, answers.csv and sources.csv; returns their paths in that order."""
    train_csv = out / "train" / "train.csv"
    _write_csv(
        train_csv,
        ["id", "gender", "race", "age", "path"],
        [(p.pid, GENDERS[p.gender], p.race, p.age, p.folder) for p in train_people],
    )
    info_csv = out / "eval" / "info.csv"
    _write_csv(info_csv, ["ImageID", "ans"], [(image_id, "") for image_id, _ in eval_rows])
    answers_csv = out / "eval" / "answers.csv"
    _write_csv(answers_csv, ["ImageID", "ans"], eval_rows)
    sources_csv = out / "sources.csv"
    _write_csv(
        sources_csv,
        ["part", "id", "gender", "race", "age", "source"],
        [("train", p.pid, GENDERS[p.gender], p.race, p.age, p.source) for p in train_people]
        + [("eval", p.pid, GENDERS[p.gender], p.race, p.age, p.source) for p in eval_people],
    )
    return train_csv, info_csv, answers_csv, sources_csv


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
