"""Synthetic abdominal CT phantoms with organ / lesion masks and free-text reports (the bundled demo data set).

Anatomy and tumours are defined in patient world coordinates (RAS+, mm, origin at the body centre: +x = patient
right, +y = anterior, +z = superior) and only then rendered onto a voxel grid through the case's affine. The ground
truth therefore does not depend on the voxel grid: the same seed rendered with a flipped or anisotropic affine holds
the same physical tumours.

Output layout of :func:`write_phantom_set` (one folder per case, see docs/data.md)::

    OUT/cases/<ct_id>/ct.nii.gz        int16 HU
    OUT/cases/<ct_id>/organs.nii.gz    uint8 label map, names in OUT/labels.json
    OUT/cases/<ct_id>/lesions.nii.gz   uint8 label map, names in OUT/lesion_labels.json
    OUT/labels.json, OUT/lesion_labels.json
    OUT/reports.csv                    `Accession Number`, `Report Text` (input of `rsuper ingest`)
    OUT/case_reports.csv               `ct_id`, `report_id`
    OUT/ground_truth.jsonl             one line per case: what each report states, plus the true geometry
    OUT/phantoms.json                  the generator settings (PhantomConfig), written last
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, PositiveInt, field_validator

LIVER_SEGMENT_LABELS = {i: f"liver_segment_{i}" for i in range(1, 9)}
ORGAN_LABELS: dict[int, str] = {
    0: "background",
    **LIVER_SEGMENT_LABELS,
    9: "pancreas_head",
    10: "pancreas_body",
    11: "pancreas_tail",
    12: "kidney_right",
    13: "kidney_left",
    14: "spleen",
}
LESION_LABELS: dict[int, str] = {0: "background", 1: "liver_lesion", 2: "pancreas_lesion", 3: "kidney_lesion"}
_LESION_VALUE = {"liver": 1, "pancreas": 2, "kidney": 3}
_LABEL_VALUE = {name: value for value, name in ORGAN_LABELS.items()}

# Portal-venous-phase attenuation (HU) of each tissue.
_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 55.0,
    "bone": 450.0,
    "aorta": 170.0,
    "liver": 100.0,
    "pancreas": 90.0,
    "kidney": 160.0,
    "spleen": 110.0,
}
SET_CONFIG_FILE = "phantoms.json"  # the PhantomConfig of a written set
_PANCREAS_HEAD_END, _PANCREAS_BODY_END = 0.3, 0.7  # curve parameter t where head / body end (generator truth)


class PhantomConfig(BaseModel):
    """How many phantoms, of which size, and how varied.

    Attributes:
        n: number of cases.
        seed: master seed; case i only depends on (seed, i), so sets are reproducible and extendable.
        shape: voxels along the array axes (i, j, k).
        field_of_view_xy_mm: range of the in-plane field of view (mm) drawn per case.
        field_of_view_z_mm: cranio-caudal coverage (mm); spacing_z = this / shape[2].
        flip_probability: chance that a case is stored in LPS-like orientation (x and y axes flipped).
        tumor_count_probabilities: probability of 0, 1, 2, 3 ... tumours per case.
        small_lesion_probability: chance that a tumour is tiny and reported as "too small to characterize".
        noise_hu: standard deviation of the Gaussian image noise (HU).
    """

    n: int = Field(24, ge=1)
    seed: int = 0
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (96, 96, 64)  # 0 would divide by zero
    field_of_view_xy_mm: tuple[float, float] = (330.0, 370.0)
    field_of_view_z_mm: float = 240.0
    flip_probability: float = Field(0.25, ge=0.0, le=1.0)
    tumor_count_probabilities: tuple[float, ...] = (0.25, 0.4, 0.2, 0.15)
    small_lesion_probability: float = Field(0.12, ge=0.0, le=1.0)
    noise_hu: float = Field(12.0, ge=0.0)

    @field_validator("tumor_count_probabilities")
    @classmethod
    def _normalised(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or min(v) < 0 or not math.isclose(sum(v), 1.0, abs_tol=1e-6):
            raise ValueError("tumor_count_probabilities must be non-negative and sum to 1")
        return v


# --------------------------------------------------------------------------------------------- anatomy (world mm)


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid in world mm."""

    center: np.ndarray  # (3,)
    semi_axes: np.ndarray  # (3,)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Bool (N,) for points (N, 3) in mm."""
        q = (points - self.center) / self.semi_axes
        return _in_unit_ball(q[:, 0], q[:, 1], q[:, 2])


def _in_unit_ball(q0: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """q0^2 + q1^2 + q2^2 <= 1, summed in the order numpy's einsum used before, so phantoms stay bit-identical."""
    return q0 * q0 + q2 * q2 + q1 * q1 <= 1.0


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """One patient's organs in world mm."""

    body_semi_axes: np.ndarray  # (2,) x, y of the elliptic body cylinder
    liver: Ellipsoid
    spleen: Ellipsoid
    kidney_right: Ellipsoid
    kidney_left: Ellipsoid
    pancreas_curve: np.ndarray  # (P, 3) centre line, head (t=0) to tail (t=1)
    pancreas_radius: np.ndarray  # (P,) mm


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw organ positions and sizes around a fixed adult template (mm), jittered per patient."""

    def jitter(center, semi, shift=8.0, scale=0.12):
        return Ellipsoid(
            np.asarray(center, float) + rng.uniform(-shift, shift, 3),
            np.asarray(semi, float) * rng.uniform(1 - scale, 1 + scale, 3),
        )

    t = np.linspace(0.0, 1.0, 48)
    head, body, tail = (np.array(p) + rng.uniform(-6, 6, 3) for p in ([32, -8, -18], [0, -22, 0], [-72, -30, 18]))
    # Quadratic Bezier from head through (near) body to tail.
    curve = (1 - t)[:, None] ** 2 * head + 2 * ((1 - t) * t)[:, None] * body + (t**2)[:, None] * tail
    radius = (14.0 - 6.0 * t) * rng.uniform(0.9, 1.1)
    return Anatomy(
        body_semi_axes=np.array([150.0, 110.0]) * rng.uniform(0.92, 1.05, 2),
        liver=jitter([60, 0, 55], [82, 70, 65]),
        spleen=jitter([-88, -35, 45], [30, 42, 50]),
        kidney_right=jitter([70, -55, -35], [28, 24, 48]),
        kidney_left=jitter([-70, -55, -22], [28, 24, 48]),
        pancreas_curve=curve,
        pancreas_radius=radius,
    )


def _liver_segment(points: np.ndarray, liver: Ellipsoid) -> np.ndarray:
    """Couinaud-like segment number 1..8 for points (N, 3) assumed inside the liver (planes in normalised coords)."""
    u, v, w = ((points - liver.center) / liver.semi_axes).T
    seg = np.where(v >= 0, np.where(w >= 0, 8, 5), np.where(w >= 0, 7, 6))  # right lobe: anterior / posterior
    seg = np.where(u < -0.1, 4, seg)  # left medial
    seg = np.where(u < -0.5, np.where(w >= 0, 2, 3), seg)  # left lateral: superior / inferior
    caudate = ((u + 0.15) / 0.22) ** 2 + ((v + 0.45) / 0.3) ** 2 + (w / 0.35) ** 2 <= 1.0
    return np.where(caudate, 1, seg).astype(np.uint8)


def _pancreas_parameter(points: np.ndarray, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """For points (N, 3): whether they lie in the pancreas tube, and the curve parameter t of the nearest centre."""
    curve, radius = anatomy.pancreas_curve, anatomy.pancreas_radius
    inside = np.zeros(len(points), bool)
    t_near = np.zeros(len(points))
    lo, hi = curve.min(0) - radius.max(), curve.max(0) + radius.max()
    cand = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
    if cand.size:
        p = points[cand]
        dx, dy, dz = ((p[:, w, None] - curve[None, :, w]) ** 2 for w in range(3))
        d2 = dx + dy + dz  # (n, P); the order of .sum(-1) over the last axis
        nearest = d2.argmin(1)
        inside[cand] = d2[np.arange(cand.size), nearest] <= radius[nearest] ** 2
        t_near[cand] = nearest / (len(curve) - 1)
    return inside, t_near


def organ_labels_at(points: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Organ label values (see ORGAN_LABELS) at world points (N, 3) mm. Later organs overwrite earlier ones."""
    labels = np.zeros(len(points), np.uint8)
    in_liver = anatomy.liver.contains(points)
    labels[in_liver] = _liver_segment(points[in_liver], anatomy.liver)
    labels[anatomy.spleen.contains(points)] = _LABEL_VALUE["spleen"]
    in_pancreas, t = _pancreas_parameter(points, anatomy)
    part = np.where(t < _PANCREAS_HEAD_END, 9, np.where(t < _PANCREAS_BODY_END, 10, 11))
    labels[in_pancreas] = part[in_pancreas]
    labels[anatomy.kidney_right.contains(points)] = _LABEL_VALUE["kidney_right"]
    labels[anatomy.kidney_left.contains(points)] = _LABEL_VALUE["kidney_left"]
    inside_body = ((points[:, :2] / anatomy.body_semi_axes) ** 2).sum(1) <= 1.0
    labels[~inside_body] = 0
    return labels


# --------------------------------------------------------------------------------------------- tumours


@dataclasses.dataclass(frozen=True)
class Tumor:
    """One ellipsoidal tumour (truth). ``diameters_mm`` sorted descending, along the columns of ``rotation``."""

    organ: Literal["liver", "pancreas", "kidney"]
    segments: tuple[str, ...]  # sub-segment keys named by the report (several for a lobe)
    laterality: Literal["left", "right"] | None
    center_mm: np.ndarray
    diameters_mm: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3), columns = tumour axes in world coordinates
    attenuation: Literal["hypo", "hyper"]
    hu_delta: float

    @property
    def volume_mm3(self) -> float:
        return float(math.pi * np.prod(self.diameters_mm) / 6.0)

    def contains(self, points: np.ndarray) -> np.ndarray:
        q = (points - self.center_mm) @ self.rotation / (self.diameters_mm / 2.0)
        return np.einsum("ij,ij->i", q, q) <= 1.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _ball_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """n points uniform in the unit ball, (n, 3)."""
    x = rng.normal(size=(n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0, 1, (n, 1)) ** (1 / 3)


_ORGAN_OF_LABEL = {**{v: "liver" for v in range(1, 9)}, 9: "pancreas", 10: "pancreas", 11: "pancreas", 12: "kidney",
                   13: "kidney", 14: "spleen"}
_SIZE_RANGE_MM = {"liver": (8.0, 45.0), "pancreas": (10.0, 32.0), "kidney": (10.0, 40.0)}
_LIVER_LOBES = {"right": (5, 6, 7, 8), "left": (2, 3, 4)}


def sample_tumors(rng: np.random.Generator, anatomy: Anatomy, count: int, small_probability: float) -> list[Tumor]:
    """Place ``count`` non-overlapping tumours, each mostly inside its organ (checked on a point cloud, not a grid)."""
    tumors: list[Tumor] = []
    unit = _ball_points(rng, 400)
    box_lo = np.array([-140.0, -100.0, -110.0])
    box_hi = np.array([140.0, 100.0, 110.0])
    for _ in range(count):
        organ = str(rng.choice(["liver", "pancreas", "kidney"], p=[0.5, 0.25, 0.25]))
        for _attempt in range(200):
            center = rng.uniform(box_lo, box_hi)
            label = int(organ_labels_at(center[None], anatomy)[0])
            if _ORGAN_OF_LABEL.get(label) == organ:
                break
        else:  # pragma: no cover - the template organs are large enough for this never to happen
            continue
        small = rng.random() < small_probability
        lo, hi = (3.0, 5.5) if small else _SIZE_RANGE_MM[organ]
        d1 = rng.uniform(lo, hi)
        diameters = np.sort(d1 * np.array([1.0, *rng.uniform(0.65, 1.0, 2)]))[::-1]
        rotation = _random_rotation(rng)
        for _shrink in range(12):
            cloud = center + (unit * diameters / 2) @ rotation.T
            labels = organ_labels_at(cloud, anatomy)
            in_organ = np.mean([_ORGAN_OF_LABEL.get(int(v)) == organ for v in labels])
            overlap = any(t.contains(cloud).any() for t in tumors)
            # Pancreatic tumours may bulge out of the thin gland; liver / kidney ones stay mostly inside.
            if in_organ >= (0.4 if organ == "pancreas" else 0.75) and not overlap:
                break
            diameters = diameters * 0.88
        else:
            continue
        if organ == "kidney":
            laterality = "right" if label == _LABEL_VALUE["kidney_right"] else "left"
            segments: tuple[str, ...] = ()
        elif organ == "liver":
            laterality = None
            seg = label
            lobe = "right" if seg in _LIVER_LOBES["right"] else "left" if seg in _LIVER_LOBES["left"] else None
            if lobe and rng.random() < 0.15:  # the report names only the lobe
                segments = tuple(f"liver_segment_{s}" for s in _LIVER_LOBES[lobe])
            else:
                segments = (f"liver_segment_{seg}",)
        else:
            laterality = None
            segments = (ORGAN_LABELS[label],)
        attenuation = "hypo" if rng.random() < 0.65 else "hyper"
        delta = -rng.uniform(40, 70) if attenuation == "hypo" else rng.uniform(35, 60)
        tumors.append(Tumor(organ, segments, laterality, center, diameters, rotation, attenuation, float(delta)))
    return tumors


# --------------------------------------------------------------------------------------------- rendering


def case_affine(shape: tuple[int, int, int], spacing_mm: np.ndarray, flip_xy: bool) -> np.ndarray:
    """Affine (4, 4) with the given spacing whose voxel grid is centred on the world origin."""
    direction = np.diag([-1.0, -1.0, 1.0] if flip_xy else [1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing_mm
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def voxel_world_points(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """World coordinates (prod(shape), 3) float32 mm of every voxel centre, C order."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)).T


def voxel_world_axes(affine: np.ndarray, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """World x, y, z (float32 mm) of the voxel centres as three arrays broadcastable to ``shape``.

    A coordinate that depends on one array axis only (any axis-aligned affine, flipped or not) stays 1D along that
    axis, so whole-grid expressions in x and y cost a 2D array. Values equal :func:`voxel_world_points`.
    """
    a32, t32 = affine[:3, :3].astype(np.float32), affine[:3, 3].astype(np.float32)
    out = []
    for w in range(3):
        terms = [
            (a32[w, a] * np.arange(n, dtype=np.float32)).reshape([n if b == a else 1 for b in range(3)])
            for a, n in enumerate(shape) if a32[w, a] != 0
        ]
        acc = terms[0] if terms else np.zeros((1, 1, 1), np.float32)
        for term in terms[1:]:
            acc = acc + term
        out.append(acc + t32[w])
    return out


def _index_box(affine: np.ndarray, shape: tuple[int, ...], lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, ...]:
    """Voxel-index slices covering the world box [lo_mm, hi_mm], one voxel of slack for rounding."""
    corners = np.array(np.meshgrid(*zip(lo_mm, hi_mm), indexing="ij")).reshape(3, -1)
    idx = np.linalg.solve(affine[:3, :3], corners - affine[:3, 3:4])
    lo = np.clip(np.floor(idx.min(1)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(idx.max(1)).astype(int) + 2, 0, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _box_axes(axes: list[np.ndarray], box: tuple[slice, ...]) -> list[np.ndarray]:
    """The part of broadcastable coordinate arrays inside ``box`` (axes of length 1 are kept)."""
    return [c[tuple(s if c.shape[d] > 1 else slice(None) for d, s in enumerate(box))] for c in axes]


def _box_points(axes: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """(N, 3) float32 world points of the voxels set in ``mask`` (a box), C order."""
    return np.stack([np.broadcast_to(c, mask.shape)[mask] for c in axes], axis=1)


def _ellipsoid_in_box(e: Ellipsoid, axes: list[np.ndarray]) -> np.ndarray:
    """Bool mask of the box: voxel centres inside ``e`` (same arithmetic as :meth:`Ellipsoid.contains`)."""
    q = [((c.astype(np.float64) - e.center[w]) / e.semi_axes[w]) for w, c in enumerate(axes)]
    return np.broadcast_to(_in_unit_ball(*q), np.broadcast_shapes(*(c.shape for c in axes)))


def organ_labels_grid(anatomy: Anatomy, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Organ label values (uint8, ``shape``) of every voxel centre; equal to :func:`organ_labels_at` on
    :func:`voxel_world_points`, but each organ is evaluated only on the voxel box around it."""
    axes = voxel_world_axes(affine, shape)
    labels = np.zeros(shape, np.uint8)

    def ellipsoid(e: Ellipsoid) -> tuple[tuple[slice, ...], np.ndarray]:
        box = _index_box(affine, shape, e.center - e.semi_axes, e.center + e.semi_axes)
        return box, _ellipsoid_in_box(e, _box_axes(axes, box))

    box, inside = ellipsoid(anatomy.liver)
    if inside.any():
        sub = labels[box]
        sub[inside] = _liver_segment(_box_points(_box_axes(axes, box), inside), anatomy.liver)
    box, inside = ellipsoid(anatomy.spleen)
    labels[box][inside] = _LABEL_VALUE["spleen"]
    curve, radius = anatomy.pancreas_curve, anatomy.pancreas_radius
    lo, hi = curve.min(0) - radius.max(), curve.max(0) + radius.max()
    box = _index_box(affine, shape, lo, hi)
    box_axes = _box_axes(axes, box)
    sub_shape = np.broadcast_shapes(*(c.shape for c in box_axes))
    cand = np.ones(sub_shape, bool)
    for w, c in enumerate(box_axes):
        cand &= (c >= lo[w]) & (c <= hi[w])
    if cand.any():
        in_pancreas, t = _pancreas_parameter(_box_points(box_axes, cand), anatomy)
        part = np.where(t < _PANCREAS_HEAD_END, 9, np.where(t < _PANCREAS_BODY_END, 10, 11)).astype(np.uint8)
        sub = labels[box]
        values = sub[cand]
        values[in_pancreas] = part[in_pancreas]
        sub[cand] = values
    box, inside = ellipsoid(anatomy.kidney_right)
    labels[box][inside] = _LABEL_VALUE["kidney_right"]
    box, inside = ellipsoid(anatomy.kidney_left)
    labels[box][inside] = _LABEL_VALUE["kidney_left"]
    x, y = axes[0].astype(np.float64), axes[1].astype(np.float64)
    inside_body = (x / anatomy.body_semi_axes[0]) ** 2 + (y / anatomy.body_semi_axes[1]) ** 2 <= 1.0
    labels *= np.broadcast_to(inside_body, shape)
    return labels


def render_case(
    anatomy: Anatomy,
    tumors: list[Tumor],
    affine: np.ndarray,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    noise_hu: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render CT (int16 HU), organ labels and lesion labels (uint8), each of ``shape``."""
    organs = organ_labels_grid(anatomy, affine, shape)
    axes = voxel_world_axes(affine, shape)
    x, y = axes[0], axes[1]

    def fill(where: np.ndarray, value: float) -> None:
        hu[np.broadcast_to(where, shape)] = value

    body_r = (x / anatomy.body_semi_axes[0]) ** 2 + (y / anatomy.body_semi_axes[1]) ** 2
    hu = np.full(shape, _HU["air"], np.float32)
    fill(body_r <= 1.0, _HU["fat"])
    fill((body_r <= 0.93) & (body_r > 0.78), _HU["muscle"])  # abdominal wall
    fill((x**2 + (y + 80) ** 2) <= 18**2, _HU["bone"])  # vertebral body
    fill((x**2 + (y + 50) ** 2) <= 11**2, _HU["aorta"])
    organ_hu = np.array([0.0] + [_HU[_ORGAN_OF_LABEL[v]] for v in range(1, len(ORGAN_LABELS))], np.float32)
    hu = np.where(organs > 0, organ_hu[organs], hu)
    lesions = np.zeros(shape, np.uint8)
    for tumor in tumors:
        lo = tumor.center_mm - tumor.diameters_mm.max() / 2
        hi = tumor.center_mm + tumor.diameters_mm.max() / 2
        box = _index_box(affine, shape, lo, hi)
        box_axes = _box_axes(axes, box)
        cand = np.ones(np.broadcast_shapes(*(c.shape for c in box_axes)), bool)
        for w, c in enumerate(box_axes):
            cand &= (c >= lo[w]) & (c <= hi[w])
        inside = cand.copy()
        inside[cand] = tumor.contains(_box_points(box_axes, cand))
        lesions[box][inside] = _LESION_VALUE[tumor.organ]
        hu[box][inside] = _HU[tumor.organ] + tumor.hu_delta
    hu += rng.normal(0.0, noise_hu, shape).astype(np.float32)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return ct, organs, lesions


# --------------------------------------------------------------------------------------------- reports

_ROMAN = ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII"]
_ATT_WORDS = {
    "hypo": ["hypodense", "hypoattenuating", "low-attenuation", "hypoenhancing"],
    "hyper": ["hyperdense", "hyperattenuating", "hyperenhancing", "avidly enhancing"],
}
_NOUNS = {"liver": ["lesion", "mass", "focus"], "pancreas": ["mass", "lesion"], "kidney": ["mass", "lesion"]}
_NUMBER_WORDS = {2: "Two", 3: "Three"}


@dataclasses.dataclass(frozen=True)
class ReportedSize:
    """What the report states about one tumour's size."""

    text: str | None  # None: no size given
    diameters_mm: list[float] | None  # the stated numbers converted to mm (1 to 3 values)


def _format_size(rng: np.random.Generator, diameters_mm: np.ndarray, small: bool) -> ReportedSize:
    if small:
        return ReportedSize(None, None)
    axes = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    values = diameters_mm[:axes]
    if rng.random() < 0.5:
        stated = [round(float(v) / 10.0, 1) for v in values]
        numbers, unit, mm = [f"{s:.1f}" for s in stated], "cm", [round(s * 10.0, 1) for s in stated]
    else:
        stated = [float(round(float(v))) for v in values]
        numbers, unit, mm = [f"{int(s)}" for s in stated], "mm", stated
    joiner = rng.choice([" x ", " × "]) if axes > 1 else ""
    return ReportedSize(f"{joiner.join(numbers)} {unit}", mm)


def _location_phrase(rng: np.random.Generator, tumor: Tumor) -> str:
    if tumor.organ == "kidney":
        return str(rng.choice([f"the {tumor.laterality} kidney", f"the {tumor.laterality} renal parenchyma",
                               f"the mid {tumor.laterality} kidney"]))
    if tumor.organ == "pancreas":
        part = tumor.segments[0].removeprefix("pancreas_")
        return str(rng.choice([f"the pancreatic {part}", f"the {part} of the pancreas"]))
    if len(tumor.segments) > 1:
        lobe = "right" if "liver_segment_5" in tumor.segments else "left"
        return str(rng.choice([f"the {lobe} hepatic lobe", f"the {lobe} lobe of the liver"]))
    n = int(tumor.segments[0].rsplit("_", 1)[1])
    if n == 1 and rng.random() < 0.6:
        return "the caudate lobe"
    return str(rng.choice([f"hepatic segment {n}", f"segment {_ROMAN[n]}", f"liver segment {_ROMAN[n]}",
                           f"segment {n} of the liver"]))


def _lesion_sentence(rng: np.random.Generator, tumor: Tumor, size: ReportedSize) -> str:
    att = str(rng.choice(_ATT_WORDS[tumor.attenuation]))
    noun = str(rng.choice(_NOUNS[tumor.organ]))
    loc = _location_phrase(rng, tumor)
    if size.text is None:
        return str(rng.choice([
            f"A tiny {att} focus in {loc} is too small to characterize.",
            f"Subtle {att} focus in {loc}, too small to characterize.",
        ]))
    templates = [
        f"There is a {size.text} {att} {noun} in {loc}.",
        f"A {att} {noun} in {loc} measures {size.text}.",
        f"{att.capitalize()} {noun} within {loc} measuring {size.text}.",
        f"In {loc} there is a {att} {noun}, {size.text}.",
    ]
    return str(rng.choice(templates))


_NEGATIVES = {
    "liver": ["No focal hepatic lesion.", "The liver is normal in size and attenuation without focal lesion.",
              "No suspicious liver lesion."],
    "pancreas": ["The pancreas is unremarkable without focal mass or ductal dilatation.",
                 "Normal pancreas. No pancreatic mass.", "No focal pancreatic lesion."],
    "kidney": ["The kidneys enhance symmetrically without focal lesion or hydronephrosis.",
               "No renal mass. No hydronephrosis.", "Both kidneys are unremarkable."],
    "spleen": ["Spleen: Normal in size without focal lesion.", "Spleen: Unremarkable."],
}
_FILLERS = [
    "Gallbladder: Unremarkable.", "Gallbladder: Cholelithiasis without signs of cholecystitis.",
    "Adrenal glands: Normal.", "Bowel: No obstruction or wall thickening.",
    "Lymph nodes: No enlarged abdominal lymph nodes.", "Vessels: Normal caliber abdominal aorta.",
    "Bones: Degenerative changes of the lumbar spine. No aggressive osseous lesion.",
]


def write_report(rng: np.random.Generator, tumors: list[Tumor], small: list[bool], slice_mm: float) -> tuple[str, list[ReportedSize]]:
    """Free-text report (FINDINGS / IMPRESSION) written from the truth; returns it and each tumour's stated size."""
    sizes = [_format_size(rng, t.diameters_mm, s) for t, s in zip(tumors, small)]
    history = str(rng.choice(["Abdominal pain.", "Weight loss.", "Follow-up.", "Staging.", "Elevated liver enzymes."]))
    lines = [
        "EXAMINATION: CT abdomen with intravenous contrast.",
        f"CLINICAL HISTORY: {history}",
        f"TECHNIQUE: Axial images through the abdomen in the portal venous phase, {slice_mm:.1f} mm slices.",
        "COMPARISON: None.",
        "",
        "FINDINGS:",
    ]
    by_organ: dict[str, list[int]] = {"liver": [], "pancreas": [], "kidney": []}
    for i, t in enumerate(tumors):
        by_organ[t.organ].append(i)
    headers = {"liver": "Liver", "pancreas": "Pancreas", "kidney": "Kidneys"}
    steatosis = rng.random() < 0.2
    for organ in ("liver", "pancreas", "kidney"):
        idx = by_organ[organ]
        if not idx:
            text = str(rng.choice(_NEGATIVES[organ]))
            if organ == "liver" and steatosis:
                text = "Mild diffuse hepatic steatosis. " + text
        else:
            sentences = [_lesion_sentence(rng, tumors[i], sizes[i]) for i in idx]
            if len(idx) > 1 and rng.random() < 0.5:
                sentences.insert(0, f"{_NUMBER_WORDS.get(len(idx), 'Multiple')} {organ} lesions are present.")
            if organ == "kidney" and len({tumors[i].laterality for i in idx}) == 1:
                other = "left" if tumors[idx[0]].laterality == "right" else "right"
                sentences.append(f"The {other} kidney is unremarkable.")
            text = " ".join(sentences)
        lines.append(f"{headers[organ]}: {text}")
        if organ == "liver":
            lines.append(str(rng.choice(_FILLERS[:2])))
        if organ == "pancreas":
            lines.append(str(rng.choice(_NEGATIVES["spleen"])))
    lines += [str(f) for f in rng.choice(_FILLERS[2:], size=3, replace=False)]
    lines += ["", "IMPRESSION:"]
    impression = []
    for organ in ("liver", "pancreas", "kidney"):
        idx = by_organ[organ]
        if not idx:
            continue
        att = tumors[idx[0]].attenuation
        word = "lesion" if len(idx) == 1 else "lesions"
        where = f"{tumors[idx[0]].laterality} kidney" if organ == "kidney" and len(idx) == 1 else organ
        impression.append(f"{_ATT_WORDS[att][0].capitalize()} {where} {word} as described above. "
                          + str(rng.choice(["Further characterization with MRI is recommended.",
                                            "Recommend follow-up imaging.", "Indeterminate."])))
    if steatosis:
        impression.append("Hepatic steatosis.")
    if not impression:
        impression.append("No focal lesion in the liver, pancreas, spleen or kidneys. No acute abnormality.")
    lines += [f"{i}. {s}" for i, s in enumerate(impression, 1)]
    return "\n".join(lines) + "\n", sizes


# --------------------------------------------------------------------------------------------- one case / a set


@dataclasses.dataclass(frozen=True)
class PhantomCase:
    """A rendered case with its report and ground truth."""

    ct_id: str
    report_id: str
    affine: np.ndarray
    ct: np.ndarray
    organs: np.ndarray
    lesions: np.ndarray
    report: str
    ground_truth: dict


def case_ids(seed: int, index: int) -> tuple[str, str]:
    """(ct_id, report_id) of case ``index``; the accession number is derived from the seed so sets do not clash."""
    return f"PH{seed:03d}_{index:05d}", f"ACC{(seed * 100_000 + index) % 10**9:09d}"


def generate_case(config: PhantomConfig, index: int, *, spacing_mm=None, flip_xy: bool | None = None) -> PhantomCase:
    """Generate case ``index`` of the set. ``spacing_mm`` / ``flip_xy`` override the grid (the truth is unchanged)."""
    anatomy_rng = np.random.default_rng([config.seed, index, 0])
    grid_rng = np.random.default_rng([config.seed, index, 1])
    noise_rng = np.random.default_rng([config.seed, index, 2])
    report_rng = np.random.default_rng([config.seed, index, 3])

    anatomy = sample_anatomy(anatomy_rng)
    count = int(anatomy_rng.choice(len(config.tumor_count_probabilities), p=config.tumor_count_probabilities))
    tumors = sample_tumors(anatomy_rng, anatomy, count, config.small_lesion_probability)
    small = [t.diameters_mm[0] < 6.0 for t in tumors]

    fov_xy = grid_rng.uniform(*config.field_of_view_xy_mm)
    default_spacing = np.array([fov_xy / config.shape[0], fov_xy / config.shape[1],
                                config.field_of_view_z_mm / config.shape[2]])
    default_flip = grid_rng.random() < config.flip_probability
    spacing = np.asarray(spacing_mm if spacing_mm is not None else default_spacing, float)
    flip = default_flip if flip_xy is None else flip_xy
    affine = case_affine(config.shape, spacing, flip)
    ct, organs, lesions = render_case(anatomy, tumors, affine, config.shape, noise_rng, config.noise_hu)

    report, sizes = write_report(report_rng, tumors, small, float(spacing[2]))
    ct_id, report_id = case_ids(config.seed, index)
    tumor_organs = {t.organ for t in tumors}
    gt = {
        "ct_id": ct_id,
        "report_id": report_id,
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "shape": list(config.shape),
        "orientation": "LPS" if flip else "RAS",
        "tumors": [
            {
                "organ": t.organ,
                "segments": list(t.segments),
                "laterality": t.laterality,
                "diameters_mm": size.diameters_mm,
                "too_small_to_characterize": size.text is None,
                "attenuation": t.attenuation,
                "true_diameters_mm": [round(float(d), 2) for d in t.diameters_mm],
                "true_volume_mm3": round(t.volume_mm3, 1),
                "center_mm": [round(float(c), 2) for c in t.center_mm],
            }
            for t, size in zip(tumors, sizes)
        ],
        "lesion_free_organs": sorted({"liver", "pancreas", "kidney", "spleen"} - tumor_organs),
    }
    return PhantomCase(ct_id, report_id, affine, ct, organs, lesions, report, gt)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a NIfTI with the affine as qform and sform, through a temporary file (never half-written)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)


def write_case(case: PhantomCase, case_dir: Path) -> None:
    """Write the three NIfTI files of one case (atomic per file)."""
    case_dir.mkdir(parents=True, exist_ok=True)
    save_nifti(case.ct, case.affine, case_dir / "ct.nii.gz")
    save_nifti(case.organs, case.affine, case_dir / "organs.nii.gz")
    save_nifti(case.lesions, case.affine, case_dir / "lesions.nii.gz")


def write_phantom_set(out: Path, config: PhantomConfig, progress: bool = False,
                      indices: Sequence[int] | None = None) -> dict:
    """Generate and write a whole phantom set (layout in the module docstring).

    Args:
        indices: only these phantoms of ``config`` (a subset, e.g. a stratified test set). A subset gets no
            ``phantoms.json``: the generator settings alone do not say which phantoms it holds.

    Returns:
        Summary: number of cases and tumours, output paths.
    """
    out = Path(out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "labels.json").write_text(json.dumps({str(k): v for k, v in ORGAN_LABELS.items()}, indent=1) + "\n")
    (out / "lesion_labels.json").write_text(json.dumps({str(k): v for k, v in LESION_LABELS.items()}, indent=1) + "\n")
    subset = indices is not None
    indices = list(indices) if subset else range(config.n)
    n_cases = len(indices)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="phantoms", unit="case")
    n_tumors = 0
    reports, mapping, truth = [], [], []
    # gzip (zlib) releases the GIL: case i is compressed and written while case i + 1 is rendered.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        pending: concurrent.futures.Future | None = None
        for i in indices:
            case = generate_case(config, i)
            if pending is not None:
                pending.result()  # re-raises a failed write; at most two cases are held in memory
            pending = writer.submit(write_case, case, out / "cases" / case.ct_id)
            reports.append((case.report_id, case.report))
            mapping.append((case.ct_id, case.report_id))
            truth.append(json.dumps(case.ground_truth))
            n_tumors += len(case.ground_truth["tumors"])
        if pending is not None:
            pending.result()
    write_csv_atomic(out / "reports.csv", ["Accession Number", "Report Text"], reports)
    write_csv_atomic(out / "case_reports.csv", ["ct_id", "report_id"], mapping)
    tmp = out / "ground_truth.jsonl.tmp"
    tmp.write_text("\n".join(truth) + "\n")
    os.replace(tmp, out / "ground_truth.jsonl")  # a subset's last file: its presence marks a finished subset
    if not subset:
        tmp = out / (SET_CONFIG_FILE + ".tmp")
        tmp.write_text(config.model_dump_json(indent=1) + "\n")
        os.replace(tmp, out / SET_CONFIG_FILE)  # written last: its presence means the set is complete
    return {"cases": n_cases, "tumors": n_tumors, "out": str(out)}


def read_set_config(root: Path) -> PhantomConfig | None:
    """The generator settings a set was written with (None for a set written before they were recorded)."""
    path = Path(root) / SET_CONFIG_FILE
    return PhantomConfig.model_validate_json(path.read_text()) if path.is_file() else None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write indented JSON through a temporary file and a rename, so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_csv_atomic(path: Path, header: list[str], rows: list[tuple]) -> None:
    """Write a CSV through a temporary file and a rename, so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
