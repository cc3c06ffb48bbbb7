import math

from train.data.records import CaseRecords, ReportedTumor
from train.data.supervision import build_supervision, tumor_target

AVAILABLE = frozenset({f"liver_segment_{i}" for i in range(1, 9)} | {"pancreas_head", "pancreas_body",
                      "pancreas_tail", "kidney_left", "kidney_right", "spleen"})


def test_tumor_target_axes_and_volume():
    t = tumor_target(ReportedTumor("liver", diameters_mm=(20.0, 10.0), attenuation="hyper"))
    assert t.diameters_mm == (20.0, 10.0, 15.0) and t.attenuation == 3
    assert math.isclose(t.volume_mm3, math.pi * 20 * 10 * 15 / 6)
    assert not tumor_target(ReportedTumor("liver")).size_known


def test_overlapping_locations_merge_and_others_stay_apart():
    rec = CaseRecords("r", (
        ReportedTumor("liver", ("liver_segment_7",), diameters_mm=(12.0,)),
        ReportedTumor("liver", ("liver_segment_7", "liver_segment_8"), diameters_mm=(8.0,)),
        ReportedTumor("liver", ("liver_segment_3",), diameters_mm=(9.0,)),
        ReportedTumor("kidney", (), side="left", diameters_mm=(30.0,)),
    ), frozenset({"pancreas", "kidney_right"}))
    sup = build_supervision(rec, AVAILABLE)
    lesion = {g.labels: g for g in sup.groups if g.state == 1}
    assert set(lesion) == {("liver_segment_7", "liver_segment_8"), ("liver_segment_3",), ("kidney_left",)}
    assert lesion[("liver_segment_7", "liver_segment_8")].count == 2
    free = {g.labels for g in sup.groups if g.state == 2}
    assert free == {("pancreas_body", "pancreas_head", "pancreas_tail"), ("kidney_right",)}


def test_unknown_location_makes_the_whole_organ_one_group():
    rec = CaseRecords("r", (ReportedTumor("liver", ("liver_segment_2",)), ReportedTumor("liver", ())))
    (g,) = build_supervision(rec, AVAILABLE).groups
    assert g.labels == tuple(f"liver_segment_{i}" for i in range(1, 9)) and g.count == 2


def test_multiple_lesions_count_lower_bound_and_equivocal():
    rec = CaseRecords("r", (ReportedTumor("pancreas", ("pancreas_neck",), count=2, count_is_lower_bound=True,
                                       diameters_mm=(15.0,)),), equivocal=frozenset({"kidney_left"}))
    sup = build_supervision(rec, AVAILABLE)
    (g,) = sup.groups
    assert g.labels == ("pancreas_body", "pancreas_head") and g.count_is_lower_bound
    assert [t.size_known for t in g.tumors] == [True, False]  # the size is the largest one's only
    assert sup.unknown_organs == {"kidney"}
