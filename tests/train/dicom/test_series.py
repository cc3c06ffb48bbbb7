import dataclasses

from train.dicom.config import SeriesRule
from train.dicom.series import check_series, choose_series, group, phase

from .test_geometry import affine, headers

RULE = SeriesRule(min_slices=5)


def series(uid: str, number: int, description: str = "", n: int = 10, step: float = 2.5, **fields):
    hs = headers(affine(spacing=(0.7, 0.7, step)), n)
    return [dataclasses.replace(h, series_uid=uid, series_number=number, series_description=description,
                                sop_uid=f"{uid}.{k}", path=f"{uid}/{k}", **fields) for k, h in enumerate(hs)]


def test_portal_venous_wins_over_thinner_arterial_and_the_rest_is_explained():
    study = {s[0].series_uid: s for s in (
        series("a", 1, "Topogram", n=1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")),
        series("b", 2, "Arterial 1.0", step=1.0, n=30),
        series("c", 3, "Abdomen PORTAL-VENOUS 2.5"),
        series("d", 4, "Dose Report", n=1, sop_class="1.2.840.10008.5.1.4.1.1.7"),
        series("e", 5, "Portal venous 5mm", step=6.0),
    )}
    choice = choose_series("st", study, RULE)
    assert choice.chosen.series_uid == "c"
    assert choice.why.startswith("portal-venous keyword 'portal' in SeriesDescription; 2.50 mm slice step, 10 slices")
    reasons = {v.series_uid: v.reason for v in choice.skipped}
    assert "ImageType ORIGINAL/PRIMARY/LOCALIZER" in reasons["a"]
    assert reasons["b"].startswith("usable but ranked below series 3 'Abdomen PORTAL-VENOUS 2.5': avoided keyword "
                                   "'arterial'")
    assert "Secondary Capture Image Storage" in reasons["d"]
    assert reasons["e"] == "slice thickness 6 mm, over max_slice_thickness_mm 5"


def test_ties_break_on_thinner_then_more_slices_then_series_number():
    study = {s[0].series_uid: s for s in (series("x", 7, step=3.0), series("y", 8, step=2.0, n=8),
                                          series("z", 9, step=2.0, n=12), series("w", 6, step=2.0, n=12))}
    assert choose_series("st", study, RULE).chosen.series_uid == "w"
    del study["w"]
    assert choose_series("st", study, RULE).chosen.series_uid == "z"
    assert choose_series("st", dict(reversed(list(study.items()))), RULE).chosen.series_uid == "z"


def test_phase_ranks():
    assert phase(series("a", 1, "PV 3mm"), RULE)[0] == 0
    assert phase(series("a", 1, "Abdomen", contrast_agent="IOHEXOL"), RULE)[0] == 1
    assert phase(series("a", 1, "Abdomen"), RULE)[0] == 2
    assert phase(series("a", 1, "Portal venous lung kernel"), RULE)[0] == 3
    assert phase(series("a", 1, "Spv"), RULE)[0] == 2  # whole words only


def test_skip_reasons():
    assert check_series(series("a", 1, modality="MR"), RULE).reason == "modality MR, not CT"
    assert check_series(series("a", 1, n=4), RULE).reason == "4 slices, fewer than min_slices 5"
    verdict = choose_series("st", {"a": series("a", 1, n=4)}, RULE)
    assert verdict.chosen is None and verdict.why == "no usable series: series 1: 4 slices, fewer than min_slices 5"


def test_group_drops_a_slice_exported_twice():
    hs = series("a", 1)
    g = group(hs + [dataclasses.replace(hs[0], path="copy/0")])
    assert len(g.studies["st"]["a"]) == 10 and g.repeated_files == ["copy/0"]
