import json

import numpy as np
import pytest

from train.data.labels import (
    CANONICAL_INDEX, LabelFileError, canonical_lut, load_label_names, organ_of_label, read_label_file,
)


def test_both_directions_and_nnunet(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"0": "background", "1": "liver", "2": "kidney_left"}))
    b = tmp_path / "b.yaml"
    b.write_text("liver: 1\nkidney_left: 2\n")
    c = tmp_path / "dataset.json"
    c.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "kidney_left": 2}}))
    assert load_label_names(a) == load_label_names(b) == load_label_names(c) == {0: "background", 1: "liver",
                                                                                  2: "kidney_left"}


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"1": "liver", "2": "liver"}))
    with pytest.raises(LabelFileError, match="bad.json.*twice"):
        load_label_names(p)
    with pytest.raises(LabelFileError, match="unknown label names"):
        canonical_lut({0: "background", 1: "livre"})


def test_lut_and_organs():
    lut = canonical_lut({0: "background", 3: "pancreas_head", 5: "liver_lesion", 6: "lesion"})
    # A lesion value in an organ label map is inside its organ; the generic lesion has no organ here.
    assert lut[5] == CANONICAL_INDEX["liver"] and lut[6] == 0 and lut[3] == CANONICAL_INDEX["pancreas_head"]
    assert len(lut) == 7
    assert organ_of_label("pancreas_head") == "pancreas" and organ_of_label("kidney_right") == "kidney"
    assert np.issubdtype(lut.dtype, np.uint8)


def test_names_as_users_have_them(tmp_path):
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps({"labels": {"background": 0, "urinary_bladder": 1, "lung_upper_lobe_left": 2,
                                        "lung_lower_lobe_left": [3], "aorta": 4, "Right Kidney": 5,
                                        "pancreatic_lesion": 6, "iliopsoas_left": 7}}))
    table = read_label_file(p)
    assert table.names == {0: "background", 1: "bladder", 2: "lung_left", 3: "lung_left", 4: "background",
                           5: "kidney_right", 6: "pancreas_lesion", 7: "background"}
    assert table.ignored == {4: "aorta", 7: "iliopsoas_left"} and table.error() is None
    assert load_label_names(p) == table.names


def test_generic_lesion_of_a_one_organ_file(tmp_path):
    kits = tmp_path / "kits.json"
    kits.write_text(json.dumps({"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"}))
    assert load_label_names(kits) == {0: "background", 1: "kidney", 2: "kidney_lesion", 3: "kidney_lesion"}
    msd = tmp_path / "msd.json"
    msd.write_text(json.dumps({"0": "background", "1": "liver", "2": "cancer"}))
    assert load_label_names(msd)[2] == "liver_lesion"
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"0": "background", "1": "liver", "2": "spleen", "3": "tumor"}))
    assert load_label_names(two)[3] == "lesion"


def test_unknown_names_are_named_with_the_file(tmp_path):
    p = tmp_path / "labels.json"
    p.write_text(json.dumps({"0": "background", "1": "liver", "2": "livre", "3": "mystery"}))
    table = read_label_file(p)
    assert table.unknown == ["livre", "mystery"]
    assert table.error().startswith(f"{p}: unknown label names ['livre', 'mystery']")
    region = tmp_path / "regions.json"
    region.write_text(json.dumps({"labels": {"background": 0, "whole_tumor": [1, 2, 3]}}))
    with pytest.raises(LabelFileError, match="regions.json.*region of several labels"):
        read_label_file(region)
