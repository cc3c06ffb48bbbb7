"""Derive organ sub-segments that a mask lacks, from geometry (pure numpy / scipy).

* Kidney (and other paired organs) left / right: connected components, assigned to the patient side by the world
  x coordinate of their centroid (RAS+: larger x = patient right). The two largest components define the sides;
  every other voxel goes to the side of the nearer of the two centroids along x. With a single component, its side
  is decided against the body midline (x of the image centre unless given).
* Pancreas head / body / tail: the voxels' world coordinates are projected on the organ's principal axis (largest
  PCA component, in mm), oriented so that the head is the end towards the patient's right; the extent is cut at
  :data:`PANCREAS_FRACTIONS` of its length: head = first 30 %, body = next 40 %, tail = last 30 %.
* Liver segments are never derived: Couinaud segments follow vessels, not shape; they are used only when provided.

All functions take canonical label maps (:mod:`train.data.labels`) and the voxel-to-world affine (mm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from train.data.labels import CANONICAL_INDEX, ORGAN_PARTS

#: Cut points along the pancreas' principal axis, as fractions of its length measured from the head end.
PANCREAS_FRACTIONS: tuple[float, float] = (0.3, 0.7)


def world_coordinates(indices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (N, 3) mm of voxel indices (N, 3)."""
    return indices @ affine[:3, :3].T + affine[:3, 3]


def split_left_right(
    mask: np.ndarray, affine: np.ndarray, midline_x_mm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split a paired organ's mask into (left, right) by connected components and patient side.

    Args:
        mask: bool (X, Y, Z) voxels of the organ (both sides).
        affine: (4, 4) voxel -> world (RAS+, mm).
        midline_x_mm: world x of the body midline, used when only one component exists; default: image centre.

    Returns:
        Two bool arrays of the mask's shape (patient left, patient right) whose union is ``mask``.
    """
    left = np.zeros(mask.shape, bool)
    right = np.zeros(mask.shape, bool)
    if not mask.any():
        return left, right
    components, n = ndimage.label(mask)
    sizes = np.bincount(components.ravel())[1:]
    idx = np.argwhere(mask)
    x = world_coordinates(idx.astype(float), affine)[:, 0]
    comp = components[mask]
    if n >= 2:
        a, b = np.argsort(sizes)[::-1][:2] + 1
        xa, xb = x[comp == a].mean(), x[comp == b].mean()
        cut = (xa + xb) / 2.0
        # Voxels of each kept component stay together; the rest go to the nearer centroid along x.
        is_right = np.where(comp == a, xa > xb, np.where(comp == b, xb > xa, x > cut))
    else:
        if midline_x_mm is None:
            centre = (np.asarray(mask.shape) - 1) / 2.0
            midline_x_mm = float(world_coordinates(centre[None], affine)[0, 0])
        is_right = np.full(len(x), x.mean() > midline_x_mm)
    right[tuple(idx[is_right].T)] = True
    left[tuple(idx[~is_right].T)] = True
    return left, right


def split_pancreas(
    mask: np.ndarray, affine: np.ndarray, fractions: tuple[float, float] = PANCREAS_FRACTIONS
) -> dict[str, np.ndarray]:
    """Split a pancreas mask into head / body / tail along its principal axis (module docstring).

    Args:
        mask: bool (X, Y, Z).
        affine: (4, 4) voxel -> world (RAS+, mm); spacing and orientation enter through it.
        fractions: cut points as fractions of the length from the head end.

    Returns:
        ``{"pancreas_head": ..., "pancreas_body": ..., "pancreas_tail": ...}`` bool arrays; empty if the mask is.
    """
    out = {name: np.zeros(mask.shape, bool) for name in ("pancreas_head", "pancreas_body", "pancreas_tail")}
    idx = np.argwhere(mask)
    if len(idx) < 3:
        if len(idx):
            out["pancreas_body"][mask] = True
        return out
    pts = world_coordinates(idx.astype(float), affine)
    centred = pts - pts.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = vt[0]
    if axis[0] < 0:  # head towards patient right (+x)
        axis = -axis
    proj = centred @ axis
    # Distance from the head end (largest projection), as a fraction of the length.
    frac = (proj.max() - proj) / max(proj.max() - proj.min(), 1e-6)
    part = np.searchsorted(np.asarray(fractions), frac, side="right")
    for k, name in enumerate(("pancreas_head", "pancreas_body", "pancreas_tail")):
        sel = idx[part == k]
        out[name][tuple(sel.T)] = True
    return out


def derive_subsegments(labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Fill in kidney sides and pancreas parts where a canonical label map has only the whole organ.

    An organ is split only when none of its parts is present: a mask that already carries sub-segments is trusted,
    and whole-organ voxels that remain beside provided parts are left as they are.

    Args:
        labels: uint8 canonical label map (X, Y, Z).
        affine: (4, 4) voxel -> world (RAS+, mm).

    Returns:
        The label map with derived parts (a copy when anything changed) and the names of the derived labels.
    """
    derived: list[str] = []
    out = labels
    present = set(np.unique(labels).tolist())

    def has_any(names) -> bool:
        return any(CANONICAL_INDEX[n] in present for n in names)

    kidney = CANONICAL_INDEX["kidney"]
    if kidney in present and not has_any(("kidney_left", "kidney_right")):
        out = out.copy() if out is labels else out
        left, right = split_left_right(labels == kidney, affine)
        out[left], out[right] = CANONICAL_INDEX["kidney_left"], CANONICAL_INDEX["kidney_right"]
        derived += ["kidney_left", "kidney_right"]
    pancreas = CANONICAL_INDEX["pancreas"]
    if pancreas in present and not has_any(ORGAN_PARTS["pancreas"]):
        out = out.copy() if out is labels else out
        for name, part in split_pancreas(labels == pancreas, affine).items():
            out[part] = CANONICAL_INDEX[name]
        derived += ["pancreas_head", "pancreas_body", "pancreas_tail"]
    return out, derived
