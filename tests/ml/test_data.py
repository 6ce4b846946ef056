"""Tests for maskcls_hpo.data: layout, labels, the C9 checks, corrections, the person split, eval, summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from maskcls_hpo import data
from maskcls_hpo.cli import app
from maskcls_hpo.data import DataError


def _folder(root: Path, name: str) -> Path:
    return root / "train" / "images" / name


# --- labels -----------------------------------------------------------------------------------------


def test_encode_decode_all_18_classes():
    ids = [data.encode_label(m, g, a) for m in range(3) for g in range(2) for a in range(3)]
    assert ids == list(range(18))
    assert data.encode_label(2, 1, 2) == 17  # not wear, female, >= 60
    assert data.encode_label(1, 0, 1) == 7  # incorrect, male, 30-59
    assert data.decode_label(17) == (2, 1, 2)
    assert data.decode_label(10) == (1, 1, 1)
    m, g, a = data.decode_label(np.arange(18))
    assert m.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert g.tolist() == ([0] * 3 + [1] * 3) * 3
    assert a.tolist() == [0, 1, 2] * 6
    mt, gt, at = data.decode_label(torch.tensor([4, 16]))
    assert (mt.tolist(), gt.tolist(), at.tolist()) == ([0, 2], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="mask=3"):
        data.encode_label(3, 0, 0)


def test_age_band_edges():
    assert [data.age_band(a) for a in (18, 29, 30, 59, 60, 61)] == [0, 0, 1, 1, 2, 2]
    assert data.age_band(np.array([29, 30, 60]), (30, 60)).tolist() == [0, 1, 2]
    assert data.age_band(45, (50, 60)) == 0
    with pytest.raises(ValueError, match="age_bins"):
        data.age_band(45, (60, 30))


def test_labels_match_folder_and_file_names(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    samples = data.load_train(root)
    assert len(samples) == 4 * 7  # the hidden ._mask1.jpg files are not images of the set
    assert sorted(samples["person_id"].unique()) == ["000001", "000020", "001498-1", "006359"]
    # by hand: 000001 is female (1), 45 years (band 1): mask1 -> 0*6+1*3+1 = 4, incorrect -> 10, normal -> 16
    p1 = samples[samples["person_id"] == "000001"].set_index("mask_file")["label"]
    assert p1.to_dict() == {
        "mask1": 4,
        "mask2": 4,
        "mask3": 4,
        "mask4": 4,
        "mask5": 4,
        "incorrect_mask": 10,
        "normal": 16,
    }
    # 001498-1 is male (0), 25 (band 0): mask1 -> 0, incorrect -> 6, normal -> 12; 000020 male 62: normal -> 14
    p2 = samples[samples["person_id"] == "001498-1"].set_index("mask_file")["label"]
    assert (p2["mask1"], p2["incorrect_mask"], p2["normal"]) == (0, 6, 12)
    assert samples[(samples.person_id == "000020") & (samples.mask_file == "normal")]["label"].item() == 14
    # every row, from its own path: <id>_<gender>_<race>_<age>/<file>.<ext>
    for row in samples.itertuples():
        folder, file = Path(row.path).parts[-2:]
        pid, gender, _race, age = folder.split("_")
        stem = file.rsplit(".", 1)[0]
        mask = 0 if stem.startswith("mask") else (1 if stem == "incorrect_mask" else 2)
        band = 0 if int(age) < 30 else (1 if int(age) < 60 else 2)
        assert row.person_id == pid
        assert row.label == mask * 6 + ("male", "female").index(gender) * 3 + band
    assert samples["label"].dtype == np.int64
    assert Path(samples["path"].iloc[0]).is_absolute()
    # rows sorted by person, then mask1..mask5, incorrect_mask, normal
    assert samples["mask_file"].iloc[:7].tolist() == list(data.MASK_FILES)


def test_mixed_extensions_and_modes_load(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    samples = data.load_train(root)
    suffixes = {Path(p).suffix for p in samples["path"]}
    assert suffixes == {".jpg", ".JPEG", ".png", ".jpeg", ".PNG"}
    assert data.check_train(root) == []


def test_age_bins_move_a_45_year_old(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", persons=[("000001", "female", 45)])
    default = data.load_train(root)
    shifted = data.load_train(root, age_bins=(50, 60))
    low = data.load_train(root, age_bins=(20, 40))
    assert set(default["age_band"]) == {1} and default["label"].iloc[0] == 4
    assert set(shifted["age_band"]) == {0} and shifted["label"].iloc[0] == 3
    assert set(low["age_band"]) == {2} and low["label"].iloc[0] == 5


# --- the C9 faults: one line each, naming the path ----------------------------------------------------


def _one_problem(root: Path) -> str:
    problems = data.check_train(root)
    assert len(problems) == 1, problems
    with pytest.raises(DataError) as info:
        data.load_train(root)
    assert info.value.problems == problems
    assert str(info.value) == problems[0]
    return problems[0]


def test_fault_missing_column(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    csv = root / "train" / "train.csv"
    pd.read_csv(csv, dtype=str).drop(columns=["race"]).to_csv(csv, index=False)
    line = _one_problem(root)
    assert line.startswith(f"{csv}: missing column(s) race")


def test_missing_column_does_not_hide_folder_problems(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    csv = root / "train" / "train.csv"
    pd.read_csv(csv, dtype=str).drop(columns=["race"]).to_csv(csv, index=False)
    folder = _folder(root, "000020_male_Asian_62")
    (folder / "normal.png").unlink()
    (folder / "mask1.jpg").write_bytes(b"not an image")
    problems = data.check_train(root)
    assert problems[0].startswith(f"{csv}: missing column(s) race")
    assert any(p.startswith(f"{folder}: has 6 of the 7 image files; missing normal") for p in problems)
    assert any(p.startswith(str(folder / "mask1.jpg")) for p in problems)
    assert len(problems) == 3


def test_fault_missing_train_csv(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    (root / "train" / "train.csv").unlink()
    assert _one_problem(root).startswith(f"{root / 'train' / 'train.csv'}: train.csv not found")


def test_fault_six_files(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    folder = _folder(root, "000020_male_Asian_62")
    (folder / "normal.png").unlink()
    line = _one_problem(root)
    assert line.startswith(f"{folder}: has 6 of the 7 image files; missing normal")


def test_fault_eight_files(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    folder = _folder(root, "000001_female_Asian_45")
    shutil.copy(folder / "mask1.jpg", folder / "mask1.png")
    line = _one_problem(root)
    assert line.startswith(f"{folder}: has 8 image files, expected 7: mask1 2 times (mask1.jpg, mask1.png)")


def test_fault_unknown_file_name(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    extra = _folder(root, "006359_female_Asian_33") / "mask6.jpg"
    shutil.copy(extra.with_name("mask1.jpg"), extra)
    line = _one_problem(root)
    assert line.startswith(f"{extra}: unknown file name")


def test_fault_unreadable_image(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    bad = _folder(root, "001498-1_male_Asian_25") / "mask4.jpeg"
    bad.write_bytes(b"this is not a jpeg")
    line = _one_problem(root)
    assert line.startswith(f"{bad}: unreadable image")


def test_fault_truncated_jpeg(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", size=(64, 48))
    bad = _folder(root, "000001_female_Asian_45") / "mask1.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header fine, data cut off
    assert _one_problem(root).startswith(f"{bad}: unreadable image")


def test_fault_bad_gender_value(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", persons=[("000001", "female", 45), ("000002", "mail", 30)])
    line = _one_problem(root)
    csv = root / "train" / "train.csv"
    assert line.startswith(f"{csv} line 3 (000002_mail_Asian_30): bad gender value 'mail'")


@pytest.mark.parametrize("age", ["abc", "200", "-3", "4.5"])
def test_fault_bad_age(tmp_path, make_layout, age):
    root = make_layout(tmp_path / "d", persons=[("000007", "male", age)])
    assert f"line 2 (000007_male_Asian_{age}): bad age '{age}'" in _one_problem(root)


def test_fault_row_without_folder(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    folder = _folder(root, "006359_female_Asian_33")
    shutil.rmtree(folder)
    line = _one_problem(root)
    assert line.startswith(f"{folder}: image folder not found")


def test_every_problem_is_reported_at_once(tmp_path, make_layout, many_persons):
    root = make_layout(tmp_path / "d", persons=[*many_persons(3), ("000002", "mail", 30)])
    (_folder(root, "000100_male_Asian_" + str(many_persons(3)[0][2])) / "normal.png").unlink()
    (_folder(root, "000002_mail_Asian_30") / "mask2.JPEG").write_bytes(b"")
    problems = data.check_train(root)
    assert len(problems) == 3
    assert any("bad gender value 'mail'" in p for p in problems)
    assert any("missing normal" in p for p in problems)
    assert any("mask2.JPEG: unreadable image" in p for p in problems)


def test_hidden_files_are_ignored(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", hidden=True)
    folder = _folder(root, "000001_female_Asian_45")
    (folder / "._normal.png").write_bytes(b"junk")
    (folder / ".DS_Store").write_bytes(b"junk")
    assert data.check_train(root) == []


def test_folder_name_disagreeing_with_row(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", persons=[("000001", "female", 45)])
    csv = root / "train" / "train.csv"
    csv.write_text(csv.read_text().replace("000001,female,", "000001,male,", 1))
    assert "disagrees with its folder name" in _one_problem(root)


# --- corrections --------------------------------------------------------------------------------------


def _labels(samples, pid):
    return samples[samples["person_id"] == pid].set_index("mask_file")["label"].to_dict()


def test_known_corrections(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    before = data.load_train(root)
    after = data.apply_corrections(before, "known")
    # 000020 (male, 62): incorrect_mask file really shows no mask -> 2*6+0+2 = 14, normal -> 1*6+2 = 8
    assert _labels(before, "000020")["incorrect_mask"] == 8 and _labels(before, "000020")["normal"] == 14
    assert _labels(after, "000020")["incorrect_mask"] == 14 and _labels(after, "000020")["normal"] == 8
    assert _labels(after, "000020")["mask1"] == 2
    # 001498-1 male -> female: every label + 3; 006359 female -> male: every label - 3
    assert {k: v - 3 for k, v in _labels(after, "001498-1").items()} == _labels(before, "001498-1")
    assert {k: v + 3 for k, v in _labels(after, "006359").items()} == _labels(before, "006359")
    assert set(after.loc[after.person_id == "001498-1", "gender"]) == {1}
    # 000001 is not in the preset; the preset's other ids are not in this data and are skipped silently
    assert _labels(after, "000001") == _labels(before, "000001")
    assert "004418" in after.attrs["corrections_skipped"]
    assert len(after.attrs["corrections"]) == 3
    assert _labels(before, "000020")["incorrect_mask"] == 8  # the input is not modified
    # applying twice changes nothing more (a swap sets, never toggles)
    again = data.apply_corrections(after, "known")
    assert again["label"].tolist() == after["label"].tolist()
    # load_train applies them too
    assert data.load_train(root, corrections="known")["label"].tolist() == after["label"].tolist()


@pytest.mark.parametrize(
    "text",
    [
        "id,field,value\n000001,gender,male\n001498-1,swap_mask_normal,1\n999999,gender,female\n",
        "id,gender\n000001,male\n",
        "id,swap_mask_normal\n001498-1,true\n000001,0\n",
    ],
    ids=["id-field-value", "id-gender", "id-swap"],
)
def test_corrections_csv(tmp_path, make_layout, text):
    root = make_layout(tmp_path / "d")
    csv = tmp_path / "fixes.csv"
    csv.write_text(text)
    before = data.load_train(root)
    after = data.apply_corrections(before, csv)
    changed = set(after.loc[after["label"] != before["label"], "person_id"])
    expected = set()
    if "gender" in text:
        expected.add("000001")
        assert set(_labels(after, "000001").values()) == {1, 7, 13}  # female 45 -> male 45: 4/10/16 -> 1/7/13
    if "swap" in text:
        expected.add("001498-1")
        assert (_labels(after, "001498-1")["incorrect_mask"], _labels(after, "001498-1")["normal"]) == (12, 6)
    assert changed == expected


def test_corrections_csv_unknown_field_names_file_and_line(tmp_path, make_layout):
    root = make_layout(tmp_path / "d")
    csv = tmp_path / "fixes.csv"
    csv.write_text("id,field,value\n000001,gender,male\n000020,age,61\n000020,gender,woman\n")
    with pytest.raises(DataError) as info:
        data.load_train(root, corrections=csv)
    assert info.value.problems[0].startswith(f"{csv} line 3: unknown field 'age'")
    assert info.value.problems[1].startswith(f"{csv} line 4: bad gender value 'woman'")
    csv.write_text("person,sex\n000001,male\n")
    with pytest.raises(DataError, match="columns person, sex"):
        data.apply_corrections(data.load_train(root), csv)
    with pytest.raises(DataError, match="corrections file not found"):
        data.apply_corrections(data.load_train(root), tmp_path / "nope.csv")


# --- split --------------------------------------------------------------------------------------------


def test_split_by_person(tmp_path, make_layout, many_persons):
    root = make_layout(tmp_path / "d", persons=many_persons(40))
    samples = data.load_train(root)
    train, val = data.split_by_person(samples, 0.2, seed=7)
    assert len(train) + len(val) == 280 and len(np.intersect1d(train, val)) == 0
    train_p = set(samples["person_id"].iloc[train])
    val_p = set(samples["person_id"].iloc[val])
    assert not train_p & val_p
    assert len(val_p) == 8 and len(val) == 56  # ceil(0.2 * 40) persons, 7 images each
    assert set(samples["gender"].iloc[val]) == {0, 1}  # stratified: both genders held out
    again_t, again_v = data.split_by_person(samples.sample(frac=1, random_state=1).reset_index(drop=True), 0.2, 7)
    assert set(samples.sample(frac=1, random_state=1).reset_index(drop=True)["person_id"].iloc[again_v]) == val_p
    t2, v2 = data.split_by_person(samples, 0.2, seed=7)
    assert t2.tolist() == train.tolist() and v2.tolist() == val.tolist()
    _, v3 = data.split_by_person(samples, 0.2, seed=8)
    assert set(samples["person_id"].iloc[v3]) != val_p


def test_split_stratifies_gender_and_age_band(tmp_path, make_layout):
    # 24 persons: 4 in each of the 6 gender x band strata; val_ratio 0.5 -> 2 of each stratum held out
    ages = (20, 40, 65)
    persons = [(f"{i:06d}", ("male", "female")[i % 2], ages[(i // 2) % 3]) for i in range(24)]
    samples = data.load_train(make_layout(tmp_path / "d", persons=persons, eval_images=0))
    _, val = data.split_by_person(samples, 0.5, seed=0)
    per_stratum = samples.iloc[val].groupby(["gender", "age_band"])["person_id"].nunique()
    assert per_stratum.tolist() == [2] * 6


def test_split_small_sets_never_crash(tmp_path, make_layout):
    persons = [("000001", "female", 45), ("000002", "male", 20), ("000003", "male", 70)]  # 3 lone strata
    samples = data.load_train(make_layout(tmp_path / "d", persons=persons, eval_images=0))
    train, val = data.split_by_person(samples, 0.3, seed=0)
    assert len(val) == 7 and len(train) == 14
    train, val = data.split_by_person(samples, 0.0, seed=0)
    assert len(train) == 21 and len(val) == 0
    with pytest.raises(ValueError, match="val_ratio"):
        data.split_by_person(samples, 1.0, seed=0)


def _strata_persons(counts: dict[tuple[str, int], int]) -> list[tuple[str, str, int]]:
    """Persons with the given count per (gender, age) stratum, ids interleaved across strata."""
    persons, i = [], 0
    for (gender, age), n in counts.items():
        for _ in range(n):
            persons.append((f"{i * 7 % 1000:06d}", gender, age))
            i += 1
    return persons


def test_folds_keep_each_person_in_one_fold_and_balance_strata(tmp_path, make_layout):
    # 36 persons: strata (male <30, male 30-59, male >=60, female ...) of 9, 6, 3, 6, 6, 6 persons
    counts = {("male", 20): 9, ("male", 40): 6, ("male", 65): 3, ("female", 20): 6, ("female", 40): 6}
    counts[("female", 65)] = 6
    samples = data.load_train(make_layout(tmp_path / "d", persons=_strata_persons(counts), eval_images=0))
    folds = data.assign_folds(samples, 3, seed=0)
    assert folds.shape == (252,) and set(folds.tolist()) == {0, 1, 2}
    per_person = samples.assign(fold=folds).groupby("person_id")["fold"].nunique()
    assert (per_person == 1).all() and len(per_person) == 36  # all 7 rows of a person in one fold
    table = samples.assign(fold=folds).groupby(["gender", "age_band", "fold"])["person_id"].nunique().unstack()
    # each stratum split 3/3/3, 2/2/2 or 1/1/1 over the 3 folds: the counts a person would write down
    assert table.to_numpy().tolist() == [[3, 3, 3], [2, 2, 2], [1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    # the same folds whatever the row order; another seed moves persons
    shuffled = samples.sample(frac=1, random_state=3).reset_index(drop=True)
    again = dict(zip(shuffled["person_id"], data.assign_folds(shuffled, 3, seed=0), strict=True))
    assert again == dict(zip(samples["person_id"], folds, strict=True))
    other = data.assign_folds(samples, 3, seed=1)
    assert other.tolist() != folds.tolist()
    # a fold run: val = fold k's persons (12 persons = 84 rows), train = the other 24 persons
    train, val = data.split_by_fold(samples, 3, 1, seed=0)
    assert len(val) == 84 and len(train) == 168 and set(folds[val]) == {1} and 1 not in set(folds[train])


def test_folds_refuse_too_many_folds_for_a_stratum(tmp_path, make_layout):
    counts = {("male", 20): 4, ("male", 40): 4, ("male", 65): 2, ("female", 20): 4, ("female", 40): 4}
    counts[("female", 65)] = 4
    samples = data.load_train(make_layout(tmp_path / "d", persons=_strata_persons(counts), eval_images=0))
    assert sorted(np.bincount(data.assign_folds(samples, 2, seed=0)).tolist()) == [77, 77]
    with pytest.raises(DataError, match="3 folds but stratum male / age band 2 has only 2 person"):
        data.assign_folds(samples, 3, seed=0)
    with pytest.raises(DataError, match="folds must be at least 2"):
        data.check_folds(samples, 1)
    with pytest.raises(DataError, match="fold must be in 0..1"):
        data.split_by_fold(samples, 2, 2, seed=0)


# --- eval ---------------------------------------------------------------------------------------------


def test_load_eval_keeps_info_csv_order(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", eval_images=6)
    ids = pd.read_csv(root / "eval" / "info.csv", dtype=str)["ImageID"].tolist()
    assert ids != sorted(ids)
    ev = data.load_eval(root)
    assert ev["ImageID"].tolist() == ids
    assert [Path(p).name for p in ev["path"]] == ids


def test_load_eval_names_each_missing_or_unreadable_image(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", eval_images=4)
    ids = pd.read_csv(root / "eval" / "info.csv", dtype=str)["ImageID"].tolist()
    images = root / "eval" / "images"
    (images / ids[1]).unlink()
    (images / ids[3]).write_bytes(b"not an image")
    with pytest.raises(DataError) as info:
        data.load_eval(root)
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith(f"{images / ids[1]}: eval image not found")
    assert info.value.problems[1].startswith(f"{images / ids[3]}: unreadable image")


# --- summary and check-data ---------------------------------------------------------------------------


def test_summarize_counts(tmp_path, make_layout):
    s = data.summarize(data.load_train(make_layout(tmp_path / "d")))
    assert s["persons"] == 4 and s["images"] == 28
    # wear 5 per person, incorrect 1, not wear 1; 2 male (000020, 001498-1) and 2 female persons
    assert s["mask"] == [20, 4, 4] and s["gender"] == [14, 14]
    assert s["age"] == [7, 14, 7]  # 25 | 45, 33 | 62
    assert s["classes"][4] == 10  # wear, female, 30-59: 000001 and 006359, 5 mask files each
    assert sum(s["classes"]) == 28
    assert s["extensions"] == {".JPEG": 4, ".PNG": 4, ".jpeg": 4, ".jpg": 8, ".png": 8}


def test_check_data_command(tmp_path, make_layout):
    root = make_layout(tmp_path / "d", eval_images=3)
    result = CliRunner().invoke(app, ["check-data", "--data-dir", str(root), "--corrections", "known"])
    assert result.exit_code == 0, result.output
    assert "persons" in result.output and "eval images" in result.output
    assert "001498-1: gender -> female" in result.output
    (_folder(root, "000001_female_Asian_45") / "normal.png").unlink()
    result = CliRunner().invoke(app, ["check-data", "--data-dir", str(root)])
    assert result.exit_code == 1
    assert "000001_female_Asian_45: has 6 of the 7 image files" in result.output.replace("\n", "")
