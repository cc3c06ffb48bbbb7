"""Slice geometry of one series from its headers: order, spacing from the slice positions, the NIfTI affine.

DICOM positions are in the patient's LPS axes (mm): +x = patient left, +y = posterior, +z = superior. A slice's
first ImageOrientationPatient triplet is the direction of increasing column index, the second of increasing row
index; PixelSpacing is (row spacing, column spacing). The volume is laid out as array axes (column, row, slice),
slices ordered along the slice normal (row x column), and its affine maps those indices to RAS mm, the NIfTI
convention: RAS = diag(-1, -1, 1) @ LPS.

The slice step comes from the positions, never from SliceThickness (which may overlap or leave gaps). A series
is refused, with the reason, when its slices do not form one straight, evenly spaced stack: mixed orientations,
slices sharing a position, gantry tilt (the stack leaves the slice normal: a sheared volume), a missing slice or
uneven steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from train.dicom.config import SeriesRule
from train.dicom.headers import SliceHeader

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SAME_COSINE = 1e-4  # direction cosines this close are one orientation
_SAME_POSITION_MM = 1e-3


class SeriesProblem(Exception):
    """Why a series cannot be used; ``path`` names the file where the problem shows, when there is one."""

    def __init__(self, reason: str, path: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.path = path


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesGeometry:
    """A series' slices in volume order and where its voxels are.

    Attributes:
        slices: the headers ordered along the slice normal (array axis 2).
        spacing_mm: voxel size along the array axes (column step, row step, slice step), mm.
        affine_ras: (4, 4) voxel index -> RAS mm.
    """

    slices: tuple[SliceHeader, ...]
    spacing_mm: tuple[float, float, float]
    affine_ras: np.ndarray

    @property
    def slice_step_mm(self) -> float:
        return self.spacing_mm[2]


def _distinct(rows: Sequence[Sequence[float]], tolerance: float) -> int:
    return len({tuple(round(v / tolerance) for v in row) for row in rows})


def axial_deviation_deg(orientation: Sequence[float]) -> float:
    """Angle between the slice normal of an ImageOrientationPatient and the patient's z axis (degrees)."""
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    return math.degrees(math.acos(min(1.0, abs(float(normal[2])))))


def series_geometry(slices: Sequence[SliceHeader], rule: SeriesRule) -> SeriesGeometry:
    """Order the slices of one series and derive spacing and affine.

    Raises:
        SeriesProblem: missing geometry attributes, mixed orientations or pixel spacings, a non-axial series,
            slices sharing a position, gantry tilt, a missing slice or uneven slice steps.
    """
    for keyword, attr in (("ImageOrientationPatient", "orientation"), ("ImagePositionPatient", "position"),
                          ("PixelSpacing", "pixel_spacing")):
        lacking = [s for s in slices if getattr(s, attr) is None]
        if lacking:
            raise SeriesProblem(f"no {keyword} in {len(lacking)} of {len(slices)} files", lacking[0].path)
    orientations = np.array([s.orientation for s in slices], float)
    if _distinct(orientations, _SAME_COSINE) > 1:
        odd = int(np.argmax(np.abs(orientations - orientations[0]).max(1)))
        raise SeriesProblem(f"mixed orientations: {_distinct(orientations, _SAME_COSINE)} distinct "
                            "ImageOrientationPatient values in one series", slices[odd].path)
    spacings = np.array([s.pixel_spacing for s in slices], float)
    if _distinct(spacings, _SAME_POSITION_MM) > 1:
        raise SeriesProblem("mixed PixelSpacing values in one series", slices[0].path)
    row_cos, col_cos = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row_cos, col_cos)
    if not math.isclose(float(np.linalg.norm(normal)), 1.0, abs_tol=1e-3):
        raise SeriesProblem("ImageOrientationPatient is not two orthogonal unit vectors", slices[0].path)
    deviation = axial_deviation_deg(orientations[0])
    if deviation > rule.max_axial_deviation_deg:
        raise SeriesProblem(f"not axial: slice normal {deviation:.1f}° from the patient z axis "
                            f"(limit {rule.max_axial_deviation_deg:g}°)", slices[0].path)
    positions = np.array([s.position for s in slices], float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    ordered = tuple(slices[i] for i in order)
    positions, along = positions[order], along[order]
    if len(ordered) == 1:
        step = ordered[0].slice_thickness
        if not step:
            raise SeriesProblem("one slice and no SliceThickness: the slice step is unknown", ordered[0].path)
    else:
        step = _check_steps(ordered, positions, along, normal, rule)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacings[0, 1]
    lps[:3, 1] = col_cos * spacings[0, 0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[0]
    return SeriesGeometry(ordered, (float(spacings[0, 1]), float(spacings[0, 0]), float(step)), LPS_TO_RAS @ lps)


def _check_steps(ordered: Sequence[SliceHeader], positions: np.ndarray, along: np.ndarray, normal: np.ndarray,
                 rule: SeriesRule) -> float:
    """The slice step (mm) of a straight, evenly spaced stack; raises SeriesProblem otherwise."""
    steps = np.diff(along)
    same = np.flatnonzero(steps < _SAME_POSITION_MM)
    if same.size:
        raise SeriesProblem(f"{same.size + 1} slices share a position (several acquisitions in one series?)",
                            ordered[int(same[0]) + 1].path)
    offset = positions[-1] - positions[0]
    sideways = float(np.linalg.norm(offset - (offset @ normal) * normal))
    tilt = math.degrees(math.atan2(sideways, float(offset @ normal)))
    if tilt > rule.max_tilt_deg:
        raise SeriesProblem(f"gantry tilt {tilt:.1f}°: the slices step {sideways / (len(ordered) - 1):.2f} mm "
                            f"sideways per slice (limit {rule.max_tilt_deg:g}°); the volume would be sheared",
                            ordered[0].path)
    median = float(np.median(steps))
    tolerance = rule.spacing_tolerance * median
    bad = np.flatnonzero(np.abs(steps - median) > tolerance)
    if bad.size:
        multiples = np.round(steps[bad] / median)
        first = int(bad[0])
        names = os.path.basename(ordered[first].path), os.path.basename(ordered[first + 1].path)
        where = f"between files {names[0]} and {names[1]}"
        if np.all(multiples >= 2) and np.all(np.abs(steps[bad] - multiples * median) <= tolerance * multiples):
            missing = int((multiples - 1).sum())
            raise SeriesProblem(f"{missing} missing slice(s): a gap of {steps[first]:.2f} mm {where} "
                                f"(slice step {median:.2f} mm)", ordered[first].path)
        raise SeriesProblem(f"uneven slice spacing: steps from {steps.min():.2f} to {steps.max():.2f} mm "
                            f"(median {median:.2f} mm, first off {where})", ordered[first].path)
    return float((along[-1] - along[0]) / (len(ordered) - 1))
