"""Dense bool masks (labels, unknown regions, report groups) painted from a :class:`SamplePlan`."""

from __future__ import annotations

import numpy as np

from train.data.sample_plan import SamplePlan


def _union_of_labels(lab: np.ndarray, ids: tuple[int, ...], out: np.ndarray, scratch: np.ndarray) -> None:
    """``out |= (lab in ids)`` without temporaries (``scratch``: a bool array shaped like ``lab``)."""
    for i in ids:
        np.equal(lab, i, out=scratch)
        np.logical_or(out, scratch, out=out)


def paint_masks(plan: SamplePlan, labels: np.ndarray, unknown: np.ndarray, group_masks: np.ndarray) -> None:
    """Fill the dense masks of one sample into zero-initialised bool arrays.

    Args:
        plan: the sample.
        labels: bool (C, X, Y, Z), set where a voxel belongs to the channel.
        unknown: bool (C, X, Y, Z), set where the channel is not supervised by the ordinary loss.
        group_masks: bool (K, X, Y, Z) with K >= len(plan.groups); row j is group j's mask in the crop.
    """
    lab = plan.labels
    scratch = np.empty(lab.shape, bool)
    for c in range(plan.num_channels):
        _union_of_labels(lab, plan.label_ids[c], labels[c], scratch)
        if plan.lesion_code[c] is not None:
            np.equal(plan.lesions, plan.lesion_code[c], out=labels[c])
        if plan.unknown_all[c]:
            unknown[c] = True
        elif plan.unknown_region[c]:
            _union_of_labels(lab, plan.unknown_region[c], unknown[c], scratch)
            if any(plan.grow_voxels[c]):
                unknown[c] = dilate_box(unknown[c], plan.grow_voxels[c])
    for j, g in enumerate(plan.groups):
        _union_of_labels(lab, g.label_ids, group_masks[j], scratch)


def dilate_box(mask: np.ndarray, radius: tuple[int, ...]) -> np.ndarray:
    """Cuboid dilation of a bool mask by ``radius`` voxels per axis (window clipped at the border).

    Equal to ``scipy.ndimage.maximum_filter(mask, size=2 * radius + 1)``, done as shifted ORs along each axis,
    which is ~10x faster for the small radii of unknown-region margins.
    """
    out = mask
    for axis, r in enumerate(radius):
        if r <= 0:
            continue
        src, out = out, out.copy()
        for d in range(1, min(r, src.shape[axis] - 1) + 1):
            lo = [slice(None)] * src.ndim
            hi = [slice(None)] * src.ndim
            lo[axis], hi[axis] = slice(None, -d), slice(d, None)
            out[tuple(hi)] |= src[tuple(lo)]
            out[tuple(lo)] |= src[tuple(hi)]
    return out
