"""Tests for `maskcls_hpo.demo`: the demo-data generator (layout, labels, quirks, determinism) and contact sheet."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image
from typer.testing import CliRunner

from maskcls_hpo.demo import DemoDataError, parse_size, write_contact_sheet, write_demo_dataset

UTKFACE = REPO_ROOT.parent / "shared" / "data" / "utkface"
MASK_FILES = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Other")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def images_in(folder: Path) -> list[Path]:
    """The image files of a folder, hidden `._*` files left out."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("._"))


def class_id(stem: str, gender: str, age: int) -> int:
    """mask * 6 + gender * 3 + age band, by hand (bands <30, 30-59, >=60)."""
    mask = 0 if stem in MASK_FILES[:5] else 1 if stem == "incorrect_mask" else 2
    band = 0 if age < 30 else 1 if age < 60 else 2
    return mask * 6 + ("male", "female").index(gender) * 3 + band


def tree_hashes(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def procedural(tmp_path_factory):
    out = tmp_path_factory.mktemp("procedural") / "demo"
    return write_demo_dataset(out, persons=40, size=(48, 64), seed=0, progress=False)


@pytest.fixture(scope="module")
def utk(tmp_path_factory):
    if not UTKFACE.is_dir():
        pytest.skip(f"{UTKFACE} not found")
    out = tmp_path_factory.mktemp("utk") / "demo"
    return write_demo_dataset(out, persons=30, size=(48, 64), seed=3, faces=UTKFACE, progress=False)


def check_layout(summary, persons: int, eval_persons: int) -> list[dict[str, str]]:
    """The checks every generated dataset must pass; returns train.csv's rows."""
    out = summary.out
    rows = read_csv(out / "train" / "train.csv")
    assert list(rows[0]) == ["id", "gender", "race", "age", "path"]
    assert len(rows) == persons
    folders = sorted(p.name for p in (out / "train" / "images").iterdir())
    assert folders == sorted(r["path"] for r in rows)
    n_images = 0
    for r in rows:
        assert r["path"] == f"{r['id']}_{r['gender']}_{r['race']}_{r['age']}"
        assert r["gender"] in ("male", "female")
        files = images_in(out / "train" / "images" / r["path"])
        assert sorted(f.stem for f in files) == sorted(MASK_FILES)
        n_images += len(files)
        for f in files:
            with Image.open(f) as im:
                assert im.size == (48, 64)
    assert n_images == persons * 7 == summary.train_images

    info = read_csv(out / "eval" / "info.csv")
    answers = read_csv(out / "eval" / "answers.csv")
    assert list(info[0]) == ["ImageID", "ans"] and list(answers[0]) == ["ImageID", "ans"]
    assert len(info) == eval_persons * 7 == summary.eval_images
    assert all(r["ans"] == "" for r in info)
    assert [r["ImageID"] for r in answers] == [r["ImageID"] for r in info]
    assert sorted(p.name for p in images_in(out / "eval" / "images")) == sorted(r["ImageID"] for r in info)
    assert all(len(r["ImageID"]) == 44 and r["ImageID"].endswith(".jpg") for r in info)
    int(info[0]["ImageID"][:40], 16)  # a hex hash

    # No person in both parts.
    train_ids = {r["id"] for r in rows}
    assert set(summary.train_ids) == train_ids
    assert len(summary.eval_ids) == eval_persons
    assert not train_ids & set(summary.eval_ids)
    return rows


def eval_answers_by_hand(summary) -> dict[str, int]:
    """ImageID -> class id, from sources.csv's eval persons (ImageID = sha1 of 'seed/id/mask file')."""
    expected = {}
    for r in read_csv(summary.sources_csv):
        if r["part"] == "eval":
            for stem in MASK_FILES:
                image_id = hashlib.sha1(f"{summary.seed}/{r['id']}/{stem}".encode()).hexdigest() + ".jpg"
                expected[image_id] = class_id(stem, r["gender"], int(r["age"]))
    return expected


def test_procedural_layout_counts_and_labels(procedural):
    rows = check_layout(procedural, persons=40, eval_persons=13)
    assert procedural.eval_persons == 40 // 3
    ages = [int(r["age"]) for r in rows]
    assert min(ages) >= 18 and max(ages) == 60
    assert all(a <= 59 or a == 60 for a in ages)
    # Train class counts from folder + file names: 5 wear images, 1 incorrect, 1 normal per person,
    # and every class present (persons are balanced over gender x age band: 40 / 6 -> 6 or 7 each).
    labels = [
        class_id(f.stem, r["gender"], int(r["age"]))
        for r in rows
        for f in images_in(procedural.out / "train" / "images" / r["path"])
    ]
    counts = np.bincount(labels, minlength=18)
    assert counts[:6].sum() == 200 and counts[6:12].sum() == 40 and counts[12:].sum() == 40
    assert all(6 <= counts[12 + k] <= 7 for k in range(6))
    # The eval answers follow the same formula, for the eval persons.
    answers = {r["ImageID"]: int(r["ans"]) for r in read_csv(procedural.answers_csv)}
    assert answers == eval_answers_by_hand(procedural)
    # The eval order is shuffled: not grouped by person (7 consecutive images of one person).
    assert list(answers) != sorted(answers, key=list(eval_answers_by_hand(procedural)).index)


def test_procedural_quirks(procedural):
    train = procedural.out / "train" / "images"
    files = [f for folder in train.iterdir() for f in folder.iterdir()]
    hidden = [f for f in files if f.name.startswith("._")]
    images = [f for f in files if not f.name.startswith("._")]
    suffixes = {f.suffix for f in images}
    assert {".jpg", ".jpeg", ".png"} <= suffixes
    assert any(s != s.lower() for s in suffixes)  # .JPG / .JPEG
    assert any(len({f.suffix.lower() for f in images_in(folder)}) > 1 for folder in train.iterdir())  # mixed
    assert hidden and all(f.stat().st_size < 100 for f in hidden)
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(hidden[0])
    modes = {}
    for f in images:
        with Image.open(f) as im:
            modes.setdefault(im.mode, []).append(f)
    assert set(modes) == {"RGB", "L", "RGBA"}
    assert all(f.suffix.lower() == ".png" for f in modes["RGBA"])
    ids = procedural.train_ids + procedural.eval_ids
    assert all(len(i.split("-")[0]) == 6 and i[:6].isdigit() for i in ids)
    assert any(i.startswith("0000") for i in procedural.train_ids)
    assert any(i.endswith("-1") for i in procedural.train_ids)
    assert set(procedural.sources.values()) == {"procedural"}


def test_same_seed_same_files(tmp_path):
    a = write_demo_dataset(tmp_path / "a", persons=5, size=(32, 40), seed=7, progress=False)
    b = write_demo_dataset(tmp_path / "b", persons=5, size=(32, 40), seed=7, progress=False)
    c = write_demo_dataset(tmp_path / "c", persons=5, size=(32, 40), seed=8, progress=False)
    ha, hb, hc = tree_hashes(a.out), tree_hashes(b.out), tree_hashes(c.out)
    assert len(ha) >= 5 * 7 + 7 + 4  # images, eval images, the 4 csv files
    assert ha == hb
    assert ha != hc


def test_faces_layout_and_labels_match_photo_names(utk):
    rows = check_layout(utk, persons=30, eval_persons=10)
    sources = {r["id"]: r for r in read_csv(utk.sources_csv)}
    assert len(sources) == 40
    photos = [r["source"] for r in sources.values()]
    assert len(set(photos)) == 40 and all((UTKFACE / p).is_file() for p in photos)
    for r in rows:
        age, gender, race = (int(v) for v in sources[r["id"]]["source"].split("_")[:3])
        assert int(r["age"]) == age >= 18
        assert r["gender"] == ("male", "female")[gender]
        assert r["race"] == UTK_RACES[race]
        assert utk.sources[r["id"]] == sources[r["id"]]["source"]
    for r in sources.values():  # the eval persons' rows also agree with their photos
        age, gender, _ = (int(v) for v in r["source"].split("_")[:3])
        assert (int(r["age"]), r["gender"]) == (age, ("male", "female")[gender])
    answers = {r["ImageID"]: int(r["ans"]) for r in read_csv(utk.answers_csv)}
    assert answers == eval_answers_by_hand(utk)
    # Each part balanced over gender x age band (every stratum has > 400 photos): 30 train persons -> 5 each,
    # 10 eval persons -> 1 or 2 each.
    for part, lo, hi in (("train", 5, 5), ("eval", 1, 2)):
        strata = [class_id("mask1", r["gender"], int(r["age"])) for r in sources.values() if r["part"] == part]
        counts = np.bincount(strata, minlength=6)
        assert counts.min() >= lo and counts.max() <= hi, (part, counts)


def test_faces_mask_changes_the_lower_face_only_roughly(utk):
    """mask1 differs from normal mostly below the eyes (both are the same photo, jittered slightly)."""
    diffs = []
    for r in read_csv(utk.train_csv):
        folder = utk.out / "train" / "images" / r["path"]
        files = {f.stem: f for f in images_in(folder)}
        a, b = (np.asarray(Image.open(files[s]).convert("RGB"), dtype=np.float32) for s in ("mask1", "normal"))
        d = np.abs(a - b).mean(axis=(1, 2))  # per row of 64
        # The face spans y = 7..55 (a 48-pixel square photo, 45 % of the padding above): rows 2..19 lie
        # above the eyes (y=26), rows 30..45 between the nose and the chin.
        diffs.append((d[2:20].mean(), d[30:46].mean()))
    upper, lower = np.mean(diffs, axis=0)  # measured: about 22 and 62
    assert lower > 2 * upper, (upper, lower)


def test_refuses_bad_input(tmp_path):
    out = tmp_path / "d"
    write_demo_dataset(out, persons=2, size=(32, 40), progress=False)
    with pytest.raises(DemoDataError, match="not empty.*--overwrite"):
        write_demo_dataset(out, persons=2, size=(32, 40), progress=False)
    (out / "notes.txt").write_text("mine")
    s = write_demo_dataset(out, persons=3, size=(32, 40), progress=False, overwrite=True)
    assert len(list((out / "train" / "images").iterdir())) == 3 and s.eval_persons == 1
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(DemoDataError, match="WIDTHxHEIGHT"):
        write_demo_dataset(tmp_path / "e", size="96by128")
    with pytest.raises(DemoDataError, match="16..2048"):
        parse_size("8x8")
    assert parse_size("96x128") == (96, 128)
    with pytest.raises(DemoDataError, match="--persons must be a whole number from 1 to 1000000, got 0"):
        write_demo_dataset(tmp_path / "e", persons=0)

    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "readme.txt").write_text("no photos")
    with pytest.raises(DemoDataError, match="no usable photo"):
        write_demo_dataset(tmp_path / "e", persons=2, faces=faces, progress=False)
    with pytest.raises(DemoDataError, match="not a folder"):
        write_demo_dataset(tmp_path / "e", persons=2, faces=tmp_path / "nope", progress=False)
    if UTKFACE.is_dir():
        photo = next(UTKFACE.glob("3*_0_0_*.jpg"))
        for name in ("25_0_2_x.jpg", "40_1_0_y.jpg", "61_1_1_z.jpg", "12_0_0_child.jpg", "abc_1_0_w.jpg"):
            (faces / name).symlink_to(photo)
        with pytest.raises(DemoDataError, match="3 usable photos, but persons \\+ eval persons = 4"):
            write_demo_dataset(tmp_path / "e", persons=3, faces=faces, progress=False)
        s = write_demo_dataset(tmp_path / "f", persons=2, eval_persons=1, size=(32, 40), faces=faces, progress=False)
        assert sorted(s.sources.values()) == ["25_0_2_x.jpg", "40_1_0_y.jpg", "61_1_1_z.jpg"]


def test_contact_sheet(procedural, tmp_path):
    png = write_contact_sheet(procedural.out, tmp_path / "sheets" / "sheet.png", per_class=2)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 400
    with pytest.raises(DemoDataError, match="train/images"):
        write_contact_sheet(tmp_path / "nothing", tmp_path / "x.png")


def test_cli_demo_data(tmp_path):
    from maskcls_hpo.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["demo-data", str(out), "--persons", "3", "--size", "32x40", "--seed", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "train 3 persons / 21 images, eval 1 persons / 7 images" in result.output
    assert (out / "contact_sheet.png").is_file()
    assert len(read_csv(out / "train" / "train.csv")) == 3
    again = runner.invoke(app, ["demo-data", str(out), "--persons", "3", "-q"])
    assert again.exit_code == 1
    assert "--overwrite" in again.output and "Traceback" not in again.output


def test_learnable_by_a_linear_model(tmp_path):
    """Logistic regression on 16x12 pixels beats chance on held-out persons for each task.

    Measured (seeds 0, 1, 2; 40 train / 20 held-out persons; balanced accuracy): mask 0.65-0.73,
    gender 0.68-0.83, age band 0.66-0.77; chance is 1/3, 1/2, 1/3.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    s = write_demo_dataset(tmp_path / "d", persons=60, eval_persons=0, size=(48, 64), seed=0, progress=False)
    x, y, pid = [], [], []
    for r in read_csv(s.train_csv):
        for f in images_in(s.out / "train" / "images" / r["path"]):
            with Image.open(f) as im:
                small = im.convert("RGB").resize((12, 16), Image.Resampling.BOX)
            x.append(np.asarray(small, dtype=np.float32).ravel() / 255)
            c = class_id(f.stem, r["gender"], int(r["age"]))
            y.append((c // 6, (c // 3) % 2, c % 3))
            pid.append(r["id"])
    x, y = np.array(x), np.array(y)
    held_out = np.isin(pid, np.random.default_rng(0).choice(sorted(set(pid)), 20, replace=False))
    scores = []
    for task in range(3):
        clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(x[~held_out], y[~held_out, task])
        scores.append(balanced_accuracy_score(y[held_out, task], clf.predict(x[held_out])))
    mask, gender, age = scores
    assert mask > 0.5, scores
    assert gender > 0.62, scores
    assert age > 0.5, scores


@pytest.mark.parametrize("kind", ["procedural", "utk"])
def test_data_layer_loads_the_demo_set(kind, request):
    """`data.load_train` reads a demo set with no problem: labels from the names, a split by person."""
    from maskcls_hpo.data import check_train, load_eval, load_train, split_by_person

    summary = request.getfixturevalue(kind)
    assert check_train(summary.out) == []
    samples = load_train(summary.out)
    assert len(samples) == summary.persons * 7
    assert sorted(samples["person_id"].unique()) == sorted(summary.train_ids)
    expected = [
        class_id(Path(p).stem, folder.split("_")[1], int(folder.split("_")[-1]))
        for p, folder in zip(samples["path"], samples["folder"], strict=True)
    ]
    assert samples["label"].tolist() == expected
    assert (samples["label"] == samples["mask"] * 6 + samples["gender"] * 3 + samples["age_band"]).all()
    train_rows, val_rows = split_by_person(samples, val_ratio=0.2, seed=0)
    train_ids = set(samples["person_id"].iloc[train_rows])
    val_ids = set(samples["person_id"].iloc[val_rows])
    assert not train_ids & val_ids
    assert len(train_ids | val_ids) == summary.persons and len(val_ids) == int(np.ceil(0.2 * summary.persons))
    assert len(train_rows) + len(val_rows) == summary.persons * 7
    ev = load_eval(summary.out)
    assert ev["ImageID"].tolist() == [r["ImageID"] for r in read_csv(summary.info_csv)]
