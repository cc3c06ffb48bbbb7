"""Where a training patch is cut: around a reported lesion group, around foreground, or at random."""

from __future__ import annotations

import dataclasses

import numpy as np

from train.data.cache import CachedCase
from train.data.config import PatchDatasetConfig
from train.data.placement import random_start, start_around, start_containing
from train.data.supervision import CaseSupervision, Group


@dataclasses.dataclass(frozen=True)
class Crop:
    """Where a patch was taken and which group it was centred on (index into the case's groups, or None)."""

    start: np.ndarray
    chosen_group: int | None


def choose_crop(
    rng: np.random.Generator,
    cached: CachedCase,
    supervision: CaseSupervision | None,
    config: PatchDatasetConfig,
    lesion_channel_organs: frozenset[str],
    has_mask: bool,
) -> Crop:
    """Pick a crop: around a lesion group (report cases), around foreground (mask cases), or at random.

    A report crop holds the chosen group's whole bounding box, with ``group_margin_mm`` of context where it fits;
    candidate groups are distinct, drawn uniformly; a group larger than the patch is skipped for another.
    """
    shape, patch = tuple(cached.meta["shape"]), config.patch_size
    boxes = cached.meta["label_boxes"]
    if has_mask or supervision is None:
        fg = cached.foreground
        if len(fg) and rng.random() < config.foreground_probability:
            return Crop(start_around(rng, np.asarray(fg[_balanced_foreground_index(rng, cached)]), shape, patch), None)
        return Crop(random_start(rng, shape, patch), None)
    candidates = [
        i for i, g in enumerate(supervision.groups)
        if g.state == 1 and g.organ in lesion_channel_organs and any(lab in boxes for lab in g.labels)
    ]
    if candidates and rng.random() >= config.random_crop_probability:
        margin = np.ceil(config.group_margin_mm / cached.spacing_mm).astype(int)
        for i in rng.permutation(candidates):
            lo, hi = group_box(supervision.groups[i], boxes)
            start = start_containing(rng, lo, hi, shape, patch, margin)
            if start is not None:
                return Crop(start, int(i))
    return Crop(random_start(rng, shape, patch), None)


def _balanced_foreground_index(rng: np.random.Generator, cached: CachedCase) -> int:
    """A foreground voxel drawn lesion class first, then voxel (nnU-Net's class-balanced oversampling).

    Drawing voxels uniformly would centre nearly every crop on the largest tumour of a case and almost never on a
    small one of another organ. Cases without a lesion mask keep the uniform draw over their organ voxels.
    """
    classes = cached.foreground_by_lesion
    if len(classes) <= 1:
        return int(rng.integers(len(cached.foreground)))
    members = classes[rng.integers(len(classes))]
    return int(members[rng.integers(len(members))])


def group_box(group: Group, boxes: dict[str, list[list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel box of the union of a group's labels."""
    present = [boxes[lab] for lab in group.labels if lab in boxes]
    lo = np.min([b[0] for b in present], axis=0)
    hi = np.max([b[1] for b in present], axis=0)
    return lo, hi
