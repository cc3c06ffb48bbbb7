import dataclasses
import math

import numpy as np
import pytest

from train.dicom.config import SeriesRule
from train.dicom.geometry import LPS_TO_RAS, SeriesProblem, axial_deviation_deg, series_geometry
from train.dicom.headers import SliceHeader

RULE = SeriesRule(min_slices=1)


def headers(affine_ras: np.ndarray, n: int, thickness: float | None = None) -> list[SliceHeader]:
    """Slice headers of an n-slice series laid out by a voxel -> RAS affine (as a scanner would write them)."""
    lps = np.linalg.inv(LPS_TO_RAS) @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    orientation = tuple(lps[:3, 0] / spacing[0]) + tuple(lps[:3, 1] / spacing[1])
    return [SliceHeader(path=f"f{k}", size=1, study_uid="st", series_uid="se", sop_uid=f"sop{k}",
                        sop_class="1.2.840.10008.5.1.4.1.1.2", modality="CT", series_number=1,
                        series_description="", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                        orientation=orientation, position=tuple(lps[:3, 3] + k * lps[:3, 2]),
                        pixel_spacing=(spacing[1], spacing[0]), slice_thickness=thickness, instance_number=k + 1,
                        contrast_agent="", keys=()) for k in range(n)]


def affine(spacing=(0.7, 0.8, 2.5), flip_xy=False) -> np.ndarray:
    a = np.diag([*(-s if flip_xy and i < 2 else s for i, s in enumerate(spacing)), 1.0])
    a[:3, 3] = (-100.0, 50.0, -300.0)
    return a


@pytest.mark.parametrize("flip_xy", [False, True])
def test_affine_and_order_from_positions(flip_xy):
    a = affine(flip_xy=flip_xy)
    hs = headers(a, 10, thickness=5.0)  # SliceThickness 5 mm overlaps: the step is the positions' 2.5 mm
    g = series_geometry(hs[::-1][3:] + hs[::-1][:3], RULE)  # any file order
    assert [h.sop_uid for h in g.slices] == [f"sop{k}" for k in range(10)]
    np.testing.assert_allclose(g.affine_ras, a, atol=1e-9)
    assert g.spacing_mm == pytest.approx((0.7, 0.8, 2.5))


def test_oblique_within_the_limit_keeps_its_true_affine():
    t = math.radians(6.0)
    rot = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    a = affine()
    a[:3, :3] = rot @ a[:3, :3]
    g = series_geometry(headers(a, 8), RULE)
    np.testing.assert_allclose(g.affine_ras, a, atol=1e-9)
    assert axial_deviation_deg(g.slices[0].orientation) == pytest.approx(6.0)
    with pytest.raises(SeriesProblem, match="not axial: slice normal 6.0°"):
        series_geometry(headers(a, 8), SeriesRule(max_axial_deviation_deg=5))


def test_gantry_tilt_is_refused():
    a = affine()
    a[1, 2] += math.tan(math.radians(15)) * 2.5
    with pytest.raises(SeriesProblem, match=r"gantry tilt 15.0°.*sheared"):
        series_geometry(headers(a, 8), RULE)


def test_missing_slice_names_the_gap():
    hs = headers(affine(), 12)
    with pytest.raises(SeriesProblem, match=r"2 missing slice\(s\): a gap of 7.50 mm between files f4 and f7") as e:
        series_geometry(hs[:5] + hs[7:], RULE)
    assert e.value.path == "f4"


def test_uneven_spacing():
    hs = headers(affine(), 12)
    moved = hs[6].position
    hs[6] = dataclasses.replace(hs[6], position=(*moved[:2], moved[2] + 1))
    with pytest.raises(SeriesProblem, match="uneven slice spacing: steps from 1.50 to 3.50 mm"):
        series_geometry(hs, RULE)


def test_mixed_orientations_and_shared_positions():
    hs = headers(affine(), 6)
    coronal = headers(np.array([[0.7, 0, 0, 0], [0, 0, 2.5, 0], [0, -0.8, 0, 0], [0, 0, 0, 1.0]]), 1)[0]
    with pytest.raises(SeriesProblem, match="mixed orientations: 2 distinct"):
        series_geometry(hs + [coronal], RULE)
    with pytest.raises(SeriesProblem, match="2 slices share a position"):
        series_geometry(hs + hs[2:3], RULE)


def test_one_slice_uses_slice_thickness_and_needs_it():
    g = series_geometry(headers(affine(), 1, thickness=5.0), RULE)
    assert g.spacing_mm[2] == 5.0
    with pytest.raises(SeriesProblem, match="no SliceThickness"):
        series_geometry(headers(affine(), 1), RULE)


def test_missing_geometry_attribute():
    hs = headers(affine(), 3)
    bad = dataclasses.replace(hs[1], position=None)
    with pytest.raises(SeriesProblem, match="no ImagePositionPatient in 1 of 3 files"):
        series_geometry([hs[0], bad, hs[2]], RULE)
