import json

import numpy as np
import pytest

from train.data.labels import LabelFileError, canonical_lut, load_label_names, organ_of_label


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
    lut = canonical_lut({0: "background", 3: "pancreas_head", 5: "liver_lesion"})
    assert lut[5] == 0 and lut[3] > 0 and len(lut) == 6
    assert organ_of_label("pancreas_head") == "pancreas" and organ_of_label("kidney_right") == "kidney"
    assert np.issubdtype(lut.dtype, np.uint8)
