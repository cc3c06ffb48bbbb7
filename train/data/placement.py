"""Patch placement (pure numpy): crops that contain a whole group, foreground-centred and random crops.

Boxes are inclusive voxel index ranges ``(lo, hi)``, each an int array (3,). A crop is given by its start index;
starts may be negative or run past the volume, the missing part is padded (see :func:`extract_patch`).
"""

from __future__ import annotations

import numpy as np


def feasible_start_range(
    box_lo: np.ndarray, box_hi: np.ndarray, shape: tuple[int, ...], patch: tuple[int, ...], margin: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Range of crop starts (inclusive) that keep ``box`` grown by ``margin`` voxels inside the patch.

    Starts inside the volume are preferred; a group at the border may need padding. The margin shrinks to 0 on
    axes where the grown box does not fit.

    Returns:
        (lowest, highest) start per axis, or None when the box itself is larger than the patch.
    """
    patch_a, shape_a = np.asarray(patch), np.asarray(shape)
    lo_out, hi_out = np.zeros(3, int), np.zeros(3, int)
    for ax in range(3):
        for m in (int(margin[ax]), 0):
            lo = int(box_hi[ax]) + m - patch_a[ax] + 1
            hi = int(box_lo[ax]) - m
            if lo <= hi:
                break
        else:
            return None
        v_lo, v_hi = min(0, shape_a[ax] - patch_a[ax]), max(0, shape_a[ax] - patch_a[ax])
        a, b = max(lo, v_lo), min(hi, v_hi)
        if a > b:  # cannot stay inside the volume: take the feasible start nearest to it
            a = b = hi if hi < v_lo else lo
        lo_out[ax], hi_out[ax] = a, b
    return lo_out, hi_out


def start_containing(
    rng: np.random.Generator,
    box_lo: np.ndarray,
    box_hi: np.ndarray,
    shape: tuple[int, ...],
    patch: tuple[int, ...],
    margin: np.ndarray,
) -> np.ndarray | None:
    """A uniformly drawn crop start among those that contain the box (plus margin); None if none exists."""
    rng_range = feasible_start_range(box_lo, box_hi, shape, patch, margin)
    if rng_range is None:
        return None
    lo, hi = rng_range
    return rng.integers(lo, hi + 1)


def random_start(rng: np.random.Generator, shape: tuple[int, ...], patch: tuple[int, ...]) -> np.ndarray:
    """Uniform crop start inside the volume (centred with padding on axes shorter than the patch)."""
    slack = np.asarray(shape) - np.asarray(patch)
    return np.where(slack >= 0, rng.integers(0, np.maximum(slack, 0) + 1), slack // 2)


def start_around(
    rng: np.random.Generator, center: np.ndarray, shape: tuple[int, ...], patch: tuple[int, ...]
) -> np.ndarray:
    """Crop start that holds voxel ``center`` at a random position, kept inside the volume where possible."""
    patch_a, shape_a = np.asarray(patch), np.asarray(shape)
    start = np.asarray(center) - rng.integers(0, patch_a)
    low, high = np.minimum(0, shape_a - patch_a), np.maximum(0, shape_a - patch_a)
    return np.clip(start, low, high)


def extract_patch(array: np.ndarray, start: np.ndarray, patch: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """Copy ``array[start:start+patch]`` over the last three axes, padding outside the volume with ``fill``."""
    spatial = array.shape[-3:]
    out = np.full(array.shape[:-3] + tuple(patch), fill, dtype=array.dtype)
    src, dst = [], []
    for ax in range(3):
        a = max(int(start[ax]), 0)
        b = min(int(start[ax]) + patch[ax], spatial[ax])
        if a >= b:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(start[ax]), b - int(start[ax])))
    out[(..., *dst)] = array[(..., *src)]
    return out
