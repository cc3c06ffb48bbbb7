import pytest

from schemas.label_aliases import (
    ALIASES, IGNORED, MASK_LABELS, OWN_LABELS, TOTALSEGMENTATOR_LIVER_SEGMENTS, TOTALSEGMENTATOR_TOTAL, LabelAlias,
    normalise_label_name, organ_of_own_label, resolve_label_name,
)
from schemas.vocab import ORGANS


def test_totalsegmentator_total_class_map_ids():
    # Ids from TotalSegmentator v2's map_to_binary.py class_map["total"] (id = position + 1).
    ids = {name: i for i, name in enumerate(TOTALSEGMENTATOR_TOTAL, 1)}
    assert len(TOTALSEGMENTATOR_TOTAL) == 117 == len(ids)
    assert (ids["spleen"], ids["kidney_right"], ids["pancreas"], ids["lung_upper_lobe_left"],
            ids["urinary_bladder"], ids["kidney_cyst_right"], ids["vertebrae_S1"], ids["vertebrae_C1"],
            ids["heart"], ids["brain"], ids["rib_left_1"], ids["rib_right_12"], ids["costal_cartilages"]) == (
        1, 2, 7, 10, 21, 24, 26, 50, 51, 90, 92, 115, 117)
    assert TOTALSEGMENTATOR_LIVER_SEGMENTS == tuple(f"liver_segment_{i}" for i in range(1, 9))


def test_every_totalsegmentator_class_resolves_and_organs_map():
    for name in (*TOTALSEGMENTATOR_TOTAL, *TOTALSEGMENTATOR_LIVER_SEGMENTS):
        assert resolve_label_name(name) is not None, name
    expected = {
        "kidney_left": "kidney_left", "kidney_right": "kidney_right", "urinary_bladder": "bladder",
        "lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left",
        "lung_middle_lobe_right": "lung_right", "lung_lower_lobe_right": "lung_right", "liver": "liver",
        "pancreas": "pancreas", "spleen": "spleen", "adrenal_gland_left": "adrenal_gland_left",
        "stomach": "stomach", "duodenum": "duodenum", "colon": "colon", "esophagus": "esophagus",
        "gallbladder": "gallbladder", "prostate": "prostate", "liver_segment_1": "liver_segment_1",
        "liver_segment_8": "liver_segment_8", "vertebrae_L3": "bone", "rib_left_7": "bone", "sacrum": "bone",
        "femur_right": "bone",
    }
    assert {n: resolve_label_name(n).label for n in expected} == expected
    assert resolve_label_name("kidney_cyst_left") == LabelAlias("kidney_lesion", "kidney_left")
    ignored = [n for n in TOTALSEGMENTATOR_TOTAL if resolve_label_name(n).label is None]
    assert {"aorta", "trachea", "small_bowel", "heart", "iliopsoas_left", "costal_cartilages", "spinal_cord",
            "portal_vein_and_splenic_vein", "brain"} <= set(ignored)
    assert len(ignored) == 34  # 117 classes: 19 organs, 2 kidney cysts, 62 bones


@pytest.mark.parametrize("name, label, host", [
    ("liver_tumor", "liver_lesion", "liver"), ("pancreatic_lesion", "pancreas_lesion", "pancreas"),
    ("kidney_cyst", "kidney_lesion", "kidney"), ("kidney_tumor_right", "kidney_lesion", "kidney_right"),
    ("colon cancer primaries", "colon_lesion", "colon"), ("renal_cell_carcinoma", "kidney_lesion", "kidney"),
    ("tumor", "lesion", None), ("Cancer", "lesion", None), ("liver_lesion", "liver_lesion", "liver"),
    ("lung_nodules", "lung_lesion", "lung"),
])
def test_lesion_names(name, label, host):
    assert resolve_label_name(name) == LabelAlias(label, host)


@pytest.mark.parametrize("name, label", [
    ("Right Kidney", "kidney_right"), ("left adrenal gland", "adrenal_gland_left"), ("kidney_L", "kidney_left"),
    ("gall_bladder", "gallbladder"), ("gall bladder", "gallbladder"), ("bladder", "bladder"), ("rectum", "colon"),
    ("Liver", "liver"), ("pancreas_head", "pancreas_head"), ("liver_segment_4a", "liver_segment_4"),
    ("lung_left", "lung_left"), ("vertebrae", "bone"), ("background", "background"),
])
def test_organ_spellings(name, label):
    assert resolve_label_name(name).label == label


def test_abdomenatlas_and_pants_files():
    atlas = ["aorta", "gall_bladder", "kidney_left", "kidney_right", "liver", "pancreas", "postcava", "spleen",
             "stomach", "adrenal_gland_left", "adrenal_gland_right", "bladder", "celiac_trunk", "colon", "duodenum",
             "esophagus", "femur_left", "femur_right", "hepatic_vessel", "intestine", "lung_left", "lung_right",
             "portal_vein_and_splenic_vein", "prostate", "rectum", "celiac_artery", "common_bile_duct",
             "pancreas_body", "pancreas_head", "pancreas_tail", "pancreatic_duct", "superior_mesenteric_artery",
             "veins", "pancreatic_lesion"]
    resolved = {n: resolve_label_name(n) for n in atlas}
    assert all(a is not None for a in resolved.values())
    assert sorted(n for n, a in resolved.items() if a.label is None) == [
        "aorta", "celiac_artery", "celiac_trunk", "common_bile_duct", "hepatic_vessel", "intestine",
        "pancreatic_duct", "portal_vein_and_splenic_vein", "postcava", "superior_mesenteric_artery", "veins"]


@pytest.mark.parametrize("name", ["spleen_right", "liver_vessel_tree", "foo", "left_liver", "portal_vein"])
def test_unknown_stays_unknown(name):
    assert resolve_label_name(name) is None


def test_tables_are_consistent():
    assert normalise_label_name(" Right-Kidney ") == "right_kidney"
    assert not set(ALIASES) & IGNORED and not set(ALIASES) & OWN_LABELS and not IGNORED & OWN_LABELS
    assert all(a.label is None or a.label in OWN_LABELS for a in ALIASES.values())
    assert all(a.host is None or a.host in MASK_LABELS for a in ALIASES.values())
    assert organ_of_own_label("lung_right") == "lung" and organ_of_own_label("liver_segment_7") == "liver"
    assert {organ_of_own_label(f"{o}_lesion") for o in ORGANS} == set(ORGANS)
