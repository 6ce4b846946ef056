"""labels.py: the 18-class scheme, written out once."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.sourcegrep import package_lines_matching

from maskcls_hpo.labels import (
    NUM_CLASSES,
    age_band,
    age_band_names,
    check_age_bins,
    class_labels,
    decode_label,
    encode_label,
    mask_of_file,
)


def test_encode_decode_round_trip_covers_0_to_17_once():
    ids = [encode_label(m, g, a) for m in range(3) for g in range(2) for a in range(3)]
    assert ids == list(range(18))
    assert NUM_CLASSES == 18
    for y in range(18):
        assert encode_label(*decode_label(y)) == y


def test_hand_checked_classes():
    # incorrect mask (1), female (1), 30-59 (1): 1*6 + 1*3 + 1 = 10
    assert encode_label(1, 1, 1) == 10
    assert decode_label(10) == (1, 1, 1)
    # not wear (2), male (0), >=60 (2): 12 + 0 + 2 = 14
    assert decode_label(14) == (2, 0, 2)
    labels = class_labels()
    assert labels[0] == "0 wear/M/<30"
    assert labels[10] == "10 incorrect/F/30-59"
    assert labels[17] == "17 not wear/F/>=60"
    assert class_labels((25, 55))[4] == "4 wear/F/25-54"


def test_arrays_decode_elementwise():
    y = np.array([0, 10, 17])
    mask, gender, age = decode_label(y)
    assert mask.tolist() == [0, 1, 2] and gender.tolist() == [0, 1, 1] and age.tolist() == [0, 1, 2]
    assert encode_label(mask, gender, age).tolist() == [0, 10, 17]


def test_age_bands_at_the_edges():
    assert [age_band(a) for a in (18, 29, 30, 59, 60, 61)] == [0, 0, 1, 1, 2, 2]
    assert age_band(np.array([29, 30, 60])).tolist() == [0, 1, 2]
    assert age_band_names((30, 60)) == ("<30", "30-59", ">=60")
    assert mask_of_file("mask4") == 0 and mask_of_file("incorrect_mask") == 1 and mask_of_file("normal") == 2


@pytest.mark.parametrize("bins", [(60, 30), (30,), (0, 30), ("a", 3)])
def test_bad_age_bins_name_the_value(bins):
    with pytest.raises(ValueError, match="age_bins must be two increasing ages"):
        check_age_bins(bins)


def test_out_of_range_parts_are_refused():
    with pytest.raises(ValueError, match="gender=2"):
        encode_label(0, 2, 0)


def test_the_class_id_formula_lives_in_labels_py_alone():
    # the formula spelled with the literal strides 6 and 3 (mask * 6, y // 6, (y // 3) % 2) outside labels.py
    assert package_lines_matching(r"\*\s*6\b|//\s*6\b|\(\s*\w+\s*//\s*3\s*\)\s*%\s*2", "labels.py") == []
