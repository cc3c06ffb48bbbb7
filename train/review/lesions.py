"""Predicted lesions as a report would state them: connected components per lesion channel, each with its
volume (mm³), largest diameter (mm), organ, sub-segment and side, measured through the voxel spacing.

Pure numpy / scipy on arrays; reading the prediction files is :mod:`train.review.files`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from schemas.vocab import SUBSEGMENTS
from train.data.labels import CANONICAL_INDEX, CANONICAL_LABELS, organ_of_label
from train.data.subsegments import derive_subsegments
from train.predict import MIN_LESION_COMPONENT_MM3

_CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-connected, as `train.predict.remove_small_components`
_SUBSEGMENT_SET = frozenset(SUBSEGMENTS)


@dataclasses.dataclass(frozen=True)
class PredictedLesion:
    """One predicted lesion (a connected component of one lesion channel).

    Attributes:
        organ: organ key of the lesion channel (``liver`` for ``liver_lesion``).
        value: the channel's value in the lesion label map.
        voxels: component size in voxels.
        volume_mm3: voxels x voxel volume (mm³).
        diameter_mm: largest diameter (mm): the component's extent along its longest principal axis, voxel
            footprint included (a voxelised ball of diameter D measures D).
        center_voxel: centroid (i, j, k) in voxel indices of the prediction grid.
        box: (lo, hi) voxel index bounds, hi exclusive.
        segment: majority sub-segment key under the component (``liver_segment_7``), None when the organ map has
            none there.
        side: ``left`` / ``right`` of a paired organ (majority of the sided organ labels), else None.
        max_probability: largest lesion probability inside, None when no probabilities were written.
        hu_contrast: mean HU of the lesion minus the mean HU of its organ outside every predicted lesion, None
            without CT or organ map.
        organ_share: share of its voxels on its own organ's labels (any part or side) of the organ map, None
            without organ map. Near 0: the channel fired outside its organ (in air, in another organ).
    """

    organ: str
    value: int
    voxels: int
    volume_mm3: float
    diameter_mm: float
    center_voxel: tuple[float, float, float]
    box: tuple[tuple[int, int, int], tuple[int, int, int]]
    segment: str | None = None
    side: str | None = None
    max_probability: float | None = None
    hu_contrast: float | None = None
    organ_share: float | None = None


def largest_diameter_mm(indices: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Extent (mm) of a set of voxels along its longest principal axis, the voxel footprint included.

    Args:
        indices: int (N, 3) voxel indices of one component.
        spacing_mm: voxel size along the three array axes (mm).
    """
    spacing = np.asarray(spacing_mm, float)
    points = indices.astype(float) * spacing
    if len(points) < 2:
        return float(spacing.max())
    centred = points - points.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    best = 0.0
    for v in vectors.T:  # the longest axis of an elongated shape; the largest of the three for a round one
        proj = centred @ v
        best = max(best, float(proj.max() - proj.min() + np.abs(v) @ spacing))
    return best


def organ_map_from_channels(channels: np.ndarray, classes: Sequence[str], affine: np.ndarray) -> np.ndarray:
    """A canonical organ label map (uint8, :data:`train.data.labels.CANONICAL_LABELS`) from predicted organ
    channels, with kidney sides and pancreas parts derived from geometry (liver segments cannot be).

    Args:
        channels: bool (X, Y, Z, C) of `rsuper predict`'s ``channels.nii.gz``.
        classes: the C channel names.
        affine: voxel -> world (RAS+, mm).
    """
    out = np.zeros(channels.shape[:3], np.uint8)
    for c, name in enumerate(classes):
        if name in CANONICAL_INDEX and organ_of_label(name) is not None and not name.endswith("_lesion"):
            out[channels[..., c].astype(bool) & (out == 0)] = CANONICAL_INDEX[name]
    return derive_subsegments(out, affine)[0]


def _organ_values(organ: str) -> list[int]:
    """Canonical label values of an organ and its parts."""
    return [i for i, name in enumerate(CANONICAL_LABELS) if organ_of_label(name) == organ]


def region_key(parts: Sequence[str]) -> str:
    """The key of a set of sub-segments in :func:`organ_extents_mm`'s result (``liver_segment_5+liver_segment_6``)."""
    return "+".join(sorted(parts))


def organ_extents_mm(organ_map: np.ndarray, spacing_mm: Sequence[float], *, boxes: Sequence | None = None,
                     regions: Sequence[Sequence[str]] = ()) -> dict[str, float]:
    """Largest bounding-box extent (mm) of each organ in a canonical label map (its parts together), and of each of
    ``regions`` (sets of canonical part names, e.g. the sub-segments one reported lesion names: their boxes'
    union) under :func:`region_key`; a region with a part the map lacks is left out. ``boxes``:
    :func:`scipy.ndimage.find_objects` of the map when the caller has it already."""
    spacing = np.asarray(spacing_mm, float)
    found = ndimage.find_objects(organ_map) if boxes is None else boxes
    by_label: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by_organ: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def union(a, b):
        return (np.minimum(a[0], b[0]), np.maximum(a[1], b[1])) if a is not None else b

    for value, box in enumerate(found, start=1):
        organ = organ_of_label(CANONICAL_LABELS[value]) if box is not None else None
        if organ is None:
            continue
        lo_hi = (np.array([s.start for s in box]), np.array([s.stop for s in box]))
        by_label[CANONICAL_LABELS[value]] = lo_hi
        by_organ[organ] = union(by_organ.get(organ), lo_hi)  # several parts: the union of their boxes
    out = {organ: float(((hi - lo) * spacing).max()) for organ, (lo, hi) in by_organ.items()}
    for parts in regions:
        if parts and all(part in by_label for part in parts):
            box = None
            for part in parts:
                box = union(box, by_label[part])
            out[region_key(parts)] = float(((box[1] - box[0]) * spacing).max())
    return out


def _majority(labels: np.ndarray, names: frozenset[str] | None, suffixes: tuple[str, ...] = ()) -> str | None:
    """The most frequent canonical name among ``labels`` that is in ``names`` or ends with a suffix."""
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    best, best_n = None, 0
    for value, n in zip(values, counts):
        name = CANONICAL_LABELS[int(value)]
        if ((names is not None and name in names) or name.endswith(suffixes)) and n > best_n:
            best, best_n = name, int(n)
    return best


def predicted_lesions(
    lesion_map: np.ndarray,
    lesion_names: Mapping[int, str],
    spacing_mm: Sequence[float],
    *,
    organ_map: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    ct_hu: np.ndarray | None = None,
    min_volume_mm3: float = MIN_LESION_COMPONENT_MM3,
    organ_boxes: Sequence | None = None,
) -> list[PredictedLesion]:
    """The lesions of one predicted CT, per lesion channel, largest first within each organ.

    Args:
        lesion_map: uint8 (X, Y, Z) label map of `rsuper predict` (``lesions.nii.gz``: value v = channel
            ``lesion_names[v]``).
        lesion_names: value -> ``<organ>_lesion``.
        spacing_mm: voxel size (mm) of the grid.
        organ_map: canonical organ label map on the same grid (sub-segments and sides), or None.
        probabilities: float (X, Y, Z, C) lesion probabilities, channel c = the c-th value of ``lesion_names``
            in increasing order (`rsuper predict --probabilities`), or None.
        ct_hu: the CT in HU on the same grid (for the attenuation contrast), or None.
        min_volume_mm3: smaller components are dropped (specks, not lesions).
        organ_boxes: :func:`scipy.ndimage.find_objects` of ``organ_map`` when the caller has it already.
    """
    voxel_mm3 = float(np.prod(spacing_mm))
    out: list[PredictedLesion] = []
    crop = _bounding_slices(lesion_map != 0)
    if crop is None:
        return out
    # Components lie inside the box of all lesion voxels: labelling only that box gives the same components at a
    # fraction of the cost (lesions are a small part of a CT).
    lesion_crop = lesion_map[crop]
    start = np.array([s.start for s in crop])
    organ_boxes = list(organ_boxes) if organ_boxes is not None else []  # else found when a lesion needs its HU
    for c, value in enumerate(sorted(lesion_names)):
        organ = lesion_names[value].removesuffix("_lesion")
        labels, n = ndimage.label(lesion_crop == value, structure=_CONNECTIVITY)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        own_values = _organ_values(organ) if organ_map is not None else None
        organ_hu = None
        if organ_map is not None and ct_hu is not None and (sizes[1:] * voxel_mm3 >= min_volume_mm3).any():
            organ_boxes = organ_boxes or ndimage.find_objects(organ_map)
            organ_hu = _organ_mean_hu(own_values, organ_map, ct_hu, lesion_map, organ_boxes)
        found = []
        for index, local_box in enumerate(ndimage.find_objects(labels), start=1):
            if local_box is None or sizes[index] * voxel_mm3 < min_volume_mm3:
                continue
            inside = labels[local_box] == index
            local = np.argwhere(inside)
            offset = np.array([s.start for s in local_box]) + start
            box = tuple(slice(int(a), int(a) + s.stop - s.start) for a, s in zip(offset, local_box))
            segment = side = organ_share = None
            if organ_map is not None:
                under = organ_map[box][inside]
                organ_share = float(np.isin(under, own_values).mean())
                segment = _majority(under, frozenset(s for s in _SUBSEGMENT_SET if s.startswith(organ + "_")))
                sided = _majority(under, None, (f"{organ}_left", f"{organ}_right"))
                side = sided.rsplit("_", 1)[1] if sided else None
            found.append(PredictedLesion(
                organ=organ, value=int(value), voxels=int(sizes[index]), volume_mm3=float(sizes[index]) * voxel_mm3,
                diameter_mm=largest_diameter_mm(local, spacing_mm),
                center_voxel=tuple(float(x) for x in local.mean(0) + offset),
                box=(tuple(int(s.start) for s in box), tuple(int(s.stop) for s in box)),
                segment=segment, side=side,
                max_probability=float(probabilities[..., c][box][inside].max()) if probabilities is not None else None,
                hu_contrast=float(ct_hu[box][inside].mean()) - organ_hu if organ_hu is not None else None,
                organ_share=organ_share,
            ))
        out.extend(sorted(found, key=lambda p: -p.volume_mm3))
    return out


def _bounding_slices(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (slices) holding every True voxel of a 3-D mask, None when there is none."""
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hit):
            return None
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def _organ_mean_hu(values: Sequence[int], organ_map: np.ndarray, ct_hu: np.ndarray, lesion_map: np.ndarray,
                   boxes: Sequence) -> float | None:
    """Mean HU of an organ (its label ``values``, :func:`_organ_values`) outside every predicted lesion, None when it
    has no such voxel; only the box of the organ is scanned (``boxes``: :func:`scipy.ndimage.find_objects` of the
    organ map)."""
    parts = [boxes[v - 1] for v in values if 0 < v <= len(boxes) and boxes[v - 1] is not None]
    if not parts:
        return None
    box = tuple(slice(min(p[a].start for p in parts), max(p[a].stop for p in parts)) for a in range(3))
    around = np.isin(organ_map[box], values) & (lesion_map[box] == 0)
    return float(ct_hu[box][around].mean()) if around.any() else None


def component_in_box(lesion_map: np.ndarray, lesion: PredictedLesion) -> np.ndarray:
    """bool mask, over ``lesion.box``, of the component a :class:`PredictedLesion` stands for: the largest
    component of its channel inside its box (the box holds all of it; others only reach in)."""
    box = tuple(slice(a, b) for a, b in zip(*lesion.box))
    labels, n = ndimage.label(lesion_map[box] == lesion.value, structure=_CONNECTIVITY)
    if n == 0:
        return np.zeros(labels.shape, bool)
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
