import pytest

from schemas.audit import AuditReason
from train.data.records import CaseRecords, ReportedTumor
from train.review.audit import audit_case, match_lesions, reported_lesions
from train.review.config import AuditConfig, load_audit_config
from train.review.lesions import PredictedLesion

CFG = AuditConfig()
ORGANS = ["liver", "pancreas", "kidney"]


def lesion(organ, d, segment=None, side=None, prob=None, contrast=None, share=None):
    return PredictedLesion(organ=organ, value=1, voxels=100, volume_mm3=3.14159 / 6 * d**3, diameter_mm=d,
                           center_voxel=(0.0, 0.0, 0.0), box=((0, 0, 0), (1, 1, 1)), segment=segment, side=side,
                           max_probability=prob, hu_contrast=contrast, organ_share=share)


def records(*tumors, free=(), equivocal=()):
    return CaseRecords("R1", tuple(tumors), frozenset(free), frozenset(equivocal))


def reasons(row):
    return [r.value for r in row.reasons]


def test_agreement_scores_zero():
    row, findings, pairs = audit_case(
        "c", records(ReportedTumor("liver", ("liver_segment_7",), None, (21.0,), "hypo")),
        [lesion("liver", 20.0, "liver_segment_7", contrast=-40.0)], ORGANS, CFG)
    assert row.score == 0 and findings == [] and row.reasons == []
    assert (row.n_reported, row.n_predicted, row.reported_largest_mm, row.predicted_largest_mm) == (1, 1, 21.0, 20.0)
    assert pairs[0][1].diameter_mm == 20.0


def test_a_size_ten_times_off_is_a_likely_unit_error():
    row, findings, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(450.0,))),
                                  [lesion("liver", 44.1)], ORGANS, CFG)
    assert reasons(row) == ["likely_unit_error"] and row.score == 2.0
    assert row.findings == ["likely_unit_error: liver: reported 450.0 mm, predicted 44.1 mm (x10.20)"]
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(3.0,))), [lesion("liver", 30.0)],
                           ORGANS, CFG)
    assert reasons(row) == ["likely_unit_error"]


def test_a_size_larger_than_the_organ_is_a_likely_unit_error():
    row, _, _ = audit_case("c", records(ReportedTumor("kidney", diameters_mm=(150.0,))), [lesion("kidney", 40.0)],
                           ORGANS, CFG, organ_extents_mm={"kidney": 110.0})
    assert reasons(row) == ["likely_unit_error"]
    assert row.findings[0].endswith("organ 110 mm")


def test_size_mismatch_beyond_the_tolerance_weighs_by_the_factor():
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(40.0,))), [lesion("liver", 20.0)],
                           ORGANS, CFG)
    assert reasons(row) == ["size_mismatch"] and row.score == pytest.approx(0.5 * 1.0)  # log2(2) = 1
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(28.0,))), [lesion("liver", 20.0)],
                           ORGANS, CFG)
    assert row.score == 0  # x1.4 is within the 50 % tolerance


def test_reported_not_found_and_count_mismatch():
    row, findings, pairs = audit_case(
        "c", records(ReportedTumor("pancreas", ("pancreas_head",), None, (25.0,))), [], ORGANS, CFG)
    assert reasons(row) == ["reported_not_found", "count_mismatch"]
    assert row.score == pytest.approx(1.0)  # the count names the missing lesion; only reported_not_found weighs it
    assert [f.weight for f in findings] == [1.0, 0.0]
    assert pairs[0][1] is None
    assert findings[0].text == "pancreas (pancreas_head): reported 25.0 mm lesion, none predicted"


def test_a_component_mostly_outside_its_organ_is_not_compared_with_the_report():
    normal_liver = records(free=["liver"])
    row, _, _ = audit_case("c", normal_liver, [lesion("liver", 20.0, share=0.05)], ORGANS, CFG)
    assert row.score == 0 and row.n_predicted == 0  # the liver channel fired in air: the model's error
    row, _, _ = audit_case("c", normal_liver, [lesion("liver", 20.0, share=0.6)], ORGANS, CFG)
    assert reasons(row) == ["lesion_in_normal_organ"] and row.n_predicted == 1
    row, _, _ = audit_case("c", normal_liver, [lesion("liver", 20.0, share=0.05)], ORGANS,
                           AuditConfig(min_organ_share=0))
    assert reasons(row) == ["lesion_in_normal_organ"]  # 0 compares every component
    found_in_air = [lesion("liver", 21.0, share=0.0)]
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(21.0,))), found_in_air, ORGANS, CFG)
    assert reasons(row) == ["reported_not_found", "count_mismatch"]  # a blob in air is not the reported tumour


def test_a_small_unfound_lesion_weighs_less_and_an_unsized_one_least():
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(5.0,))), [], ORGANS, CFG)
    assert row.score == pytest.approx(1.0 * 0.5)  # 5 mm of the 10 mm full weight
    row, _, _ = audit_case("c", records(ReportedTumor("liver")), [], ORGANS, CFG)
    assert reasons(row) == ["reported_not_found", "count_mismatch"]
    assert row.score == pytest.approx(1.0 * 0.25)  # "too small to characterize": a quarter


def test_a_lesion_in_an_organ_called_normal():
    row, _, _ = audit_case("c", records(free=["liver", "pancreas", "kidney"]),
                           [lesion("pancreas", 20.0, prob=0.8)], ORGANS, CFG)
    assert reasons(row) == ["lesion_in_normal_organ"] and row.organs == ["pancreas"]
    assert row.score == pytest.approx(0.8)


def test_a_normal_side_of_a_paired_organ():
    rec = records(ReportedTumor("kidney", (), "right", (30.0,)), free=["kidney_left"])
    row, _, _ = audit_case("c", rec, [lesion("kidney", 30.0, side="right"), lesion("kidney", 15.0, side="left")],
                           ORGANS, CFG)
    assert reasons(row) == ["lesion_in_normal_organ"]


def test_side_and_sub_segment_mismatch():
    rec = records(ReportedTumor("kidney", (), "left", (30.0,)),
                  ReportedTumor("liver", ("liver_segment_2",), None, (20.0,)))
    row, _, _ = audit_case("c", rec, [lesion("kidney", 30.0, side="right"), lesion("liver", 20.0, "liver_segment_6")],
                           ORGANS, CFG)
    assert reasons(row) == ["location_mismatch"]
    assert row.score == pytest.approx(0.5 + 0.1 * 0.5)  # the heaviest finding and a tenth of the other


def test_the_score_is_the_heaviest_finding_plus_a_fraction_of_the_others():
    # one extraction error (a 3 mm record of a 30 mm tumour) against a model's two scattered misses
    unit_error = records(ReportedTumor("liver", diameters_mm=(3.0,)))
    two_misses = records(ReportedTumor("liver", diameters_mm=(15.0,)), ReportedTumor("kidney", (), "left", (12.0,)))
    error_row, _, _ = audit_case("a", unit_error, [lesion("liver", 30.0)], ORGANS, CFG)
    misses_row, _, _ = audit_case("b", two_misses, [], ORGANS, CFG)
    assert error_row.score == 2.0 and misses_row.score == pytest.approx(1.0 + 0.1 * 1.0)
    summed = AuditConfig(other_findings_factor=1.0)
    assert audit_case("b", two_misses, [], ORGANS, summed)[0].score == pytest.approx(2.0)  # a plain sum ties them


def test_a_reported_size_the_grid_cannot_show_is_a_likely_unit_error_even_without_a_match():
    tiny = records(ReportedTumor("liver", ("liver_segment_4",), None, (3.3,)))
    row, findings, pairs = audit_case("c", tiny, [], ORGANS, CFG, voxel_mm=3.7)
    assert reasons(row) == ["likely_unit_error", "count_mismatch"] and row.score == 2.0
    assert findings[0].text == "liver (liver_segment_4): reported 3.3 mm lesion, none predicted, voxel 3.7 mm"
    assert pairs[0][1] is None
    row, _, _ = audit_case("c", tiny, [], ORGANS, CFG, voxel_mm=0.7)  # a fine CT resolves 3.3 mm
    assert reasons(row) == ["reported_not_found", "count_mismatch"]
    row, _, _ = audit_case("c", tiny, [], ORGANS, AuditConfig(measurable_voxels=0), voxel_mm=3.7)
    assert reasons(row)[0] == "reported_not_found"
    huge = records(ReportedTumor("kidney", (), "right", (170.0,)))
    row, findings, _ = audit_case("c", huge, [], ORGANS, CFG, organ_extents_mm={"kidney": 110.0})
    assert reasons(row)[0] == "likely_unit_error" and findings[0].text.endswith("organ 110 mm")
    tail = records(ReportedTumor("pancreas", ("pancreas_tail",), None, (110.0,)))
    extents = {"pancreas": 150.0, "pancreas_tail": 53.0}
    row, findings, _ = audit_case("c", tail, [], ORGANS, CFG, organ_extents_mm=extents)
    assert findings[0].text == "pancreas (pancreas_tail): reported 110.0 mm lesion, none predicted, pancreas_tail 53 mm"
    row, _, _ = audit_case("c", tail, [], ORGANS, AuditConfig(segment_extent_factor=2.5), organ_extents_mm=extents)
    assert reasons(row)[0] == "reported_not_found"  # a tumour may outgrow its segment: only far larger is an error
    row, _, _ = audit_case("c", tiny, [lesion("liver", 8.0, "liver_segment_4")], ORGANS, CFG, voxel_mm=3.7)
    assert reasons(row) == ["likely_unit_error"]  # matched but x0.41: a size mismatch, unless below a voxel


def test_a_reported_lesion_missing_in_its_organ_and_predicted_in_an_organ_called_normal_is_one_finding():
    moved = records(ReportedTumor("kidney", (), None, (23.0,)), free=["pancreas", "liver"])
    row, findings, _ = audit_case("c", moved, [lesion("pancreas", 22.2, "pancreas_head", prob=0.9)], ORGANS, CFG)
    assert reasons(row) == ["lesion_in_other_organ", "count_mismatch"]
    assert row.score == pytest.approx(2.0 * 0.9) and row.organs == ["kidney"]
    assert findings[0].text == ("kidney: reported 23.0 mm lesion, none predicted; pancreas (pancreas_head), "
                                "reported without lesion: predicted 22.2 mm")
    # sizes beyond the tolerance stay two findings: a miss and a false positive
    row, _, _ = audit_case("c", moved, [lesion("pancreas", 8.0, prob=0.9)], ORGANS, CFG)
    assert reasons(row) == ["reported_not_found", "lesion_in_normal_organ", "count_mismatch"]
    assert row.score == pytest.approx(1.0 + 0.1 * 0.8 * 0.9)
    # a lesion in another organ the report does not call normal is the model's own business
    unsaid = records(ReportedTumor("kidney", (), None, (23.0,)))
    row, _, _ = audit_case("c", unsaid, [lesion("pancreas", 22.2, prob=0.9)], ORGANS, CFG)
    assert reasons(row) == ["reported_not_found", "count_mismatch"]


def test_attenuation_against_the_organ():
    rec = records(ReportedTumor("liver", (), None, (20.0,), "hypo"))
    row, _, _ = audit_case("c", rec, [lesion("liver", 20.0, contrast=45.0)], ORGANS, CFG)
    assert reasons(row) == ["attenuation_mismatch"]
    row, _, _ = audit_case("c", rec, [lesion("liver", 20.0, contrast=-45.0)], ORGANS, CFG)
    assert row.score == 0


def test_groups_count_each_lesion_and_lower_bounds_accept_more():
    group = ReportedTumor("liver", (), None, (30.0,), count=3)
    assert [r.diameter_mm for r in reported_lesions([group])] == [30.0, None, None]
    preds = [lesion("liver", 30.0), lesion("liver", 12.0), lesion("liver", 9.0)]
    row, _, _ = audit_case("c", records(group), preds, ORGANS, CFG)
    assert row.score == 0 and row.n_reported == 3
    at_least = ReportedTumor("liver", (), None, (30.0,), count=2, count_is_lower_bound=True)
    row, _, _ = audit_case("c", records(at_least), preds, ORGANS, CFG)
    assert row.score == 0
    row, _, _ = audit_case("c", records(ReportedTumor("liver", (), None, (30.0,))), preds, ORGANS, CFG)
    # the two unreported lesions weigh by their sizes: 12 mm in full, 9 mm at 0.9
    assert reasons(row) == ["count_mismatch"] and row.score == pytest.approx(0.5 * (1.0 + 0.9))


def test_equivocal_and_unmentioned_organs_and_organs_without_a_channel_are_not_scored():
    rec = records(ReportedTumor("spleen", (), None, (30.0,)), equivocal=["liver"])
    row, _, _ = audit_case("c", rec, [lesion("liver", 20.0), lesion("pancreas", 10.0)], ORGANS, CFG)
    assert row.score == 0 and row.n_reported == 0 and row.n_predicted == 2


def test_matching_prefers_size_and_place():
    rep = reported_lesions([ReportedTumor("liver", ("liver_segment_2",), None, (10.0,)),
                            ReportedTumor("liver", ("liver_segment_7",), None, (40.0,))])
    pred = [lesion("liver", 38.0, "liver_segment_7"), lesion("liver", 11.0, "liver_segment_2")]
    assert match_lesions(rep, pred) == [(0, 1), (1, 0)]


def test_weights_come_from_the_config_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("weights: {likely_unit_error: 5}\n")
    cfg = load_audit_config(tmp_path / "a.yaml", ["size_tolerance=0.2"])
    assert cfg.weights.likely_unit_error == 5 and cfg.size_tolerance == 0.2
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(450.0,))), [lesion("liver", 44.0)],
                           ORGANS, cfg)
    assert row.score == 5.0
    row, _, _ = audit_case("c", records(ReportedTumor("liver", diameters_mm=(26.0,))), [lesion("liver", 20.0)],
                           ORGANS, cfg)
    assert reasons(row) == ["size_mismatch"]  # x1.3 is beyond a 20 % tolerance


def test_reason_order_follows_the_weight():
    rec = records(ReportedTumor("liver", ("liver_segment_2",), None, (450.0,)),
                  ReportedTumor("pancreas", (), None, (20.0,)))
    row, findings, _ = audit_case("c", rec, [lesion("liver", 44.0, "liver_segment_8")], ORGANS, CFG)
    assert [f.weight for f in findings] == sorted((f.weight for f in findings), reverse=True)
    assert reasons(row)[0] == AuditReason.LIKELY_UNIT_ERROR.value
