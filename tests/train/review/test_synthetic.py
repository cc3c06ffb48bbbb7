import numpy as np
import pytest

from train.data.records import CaseRecords, ReportedTumor
from train.review.synthetic import ERROR_KINDS, inject_error, truth_probabilities

REC = CaseRecords("R1", (ReportedTumor("liver", ("liver_segment_7",), None, (20.0, 15.0)),),
                  frozenset({"pancreas", "kidney", "spleen"}))


def test_each_error_kind():
    rng = np.random.default_rng(0)
    assert inject_error(REC, "size_x10", rng).tumors[0].diameters_mm == (200.0, 150.0)
    assert inject_error(REC, "size_div10", rng).tumors[0].diameters_mm == pytest.approx((2.0, 1.5))
    left = inject_error(REC, "left_out", rng)
    assert left.tumors == () and left.lesion_free == REC.lesion_free | {"liver"}
    moved = inject_error(REC, "wrong_organ", rng)
    (t,) = moved.tumors
    assert t.organ in ("pancreas", "kidney") and t.diameters_mm == (20.0, 15.0) and t.segments == ()
    assert "liver" in moved.lesion_free and t.organ not in moved.lesion_free
    added = inject_error(REC, "normal_called_abnormal", rng)
    assert len(added.tumors) == 2 and added.tumors[1].diameters_mm == (20.0,)
    assert added.tumors[1].organ not in added.lesion_free and added.tumors[1].organ in ("pancreas", "kidney")


def test_a_report_that_cannot_carry_the_error_gives_none():
    normal = CaseRecords("R2", (), frozenset({"liver", "pancreas", "kidney"}))
    unsized = CaseRecords("R3", (ReportedTumor("liver"),), frozenset({"pancreas"}))
    full = CaseRecords("R4", (ReportedTumor("liver", diameters_mm=(9.0,)),), frozenset())
    rng = np.random.default_rng(0)
    assert all(inject_error(normal, k, rng) is None for k in ("size_x10", "size_div10", "left_out", "wrong_organ"))
    assert inject_error(unsized, "size_x10", rng) is None
    assert inject_error(full, "normal_called_abnormal", rng) is None and inject_error(full, "wrong_organ", rng) is None
    assert set(ERROR_KINDS) == {"size_x10", "size_div10", "wrong_organ", "left_out", "normal_called_abnormal"}


def test_truth_probabilities_take_an_organ_with_its_parts():
    organs = np.array([[[0, 1, 2, 9]]])
    lesions = np.array([[[0, 1, 0, 2]]])
    prob = truth_probabilities(organs, lesions, ["liver", "pancreas", "liver_lesion", "pancreas_lesion"],
                               {0: "background", 1: "liver_segment_1", 2: "liver_segment_2", 9: "pancreas_head"},
                               {0: "background", 1: "liver_lesion", 2: "pancreas_lesion"})
    assert prob[:, 0, 0].tolist() == [[0, 1, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1]]
