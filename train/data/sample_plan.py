"""A sample in compact form: the crop's label maps plus per-channel rules for its dense masks.

:func:`plan_sample` chooses the crop and works out, per output channel, which labels make its mask and which
voxels are unknown, and which report groups are supervised inside the crop; :mod:`train.data.painting` turns the
plan into dense bool masks. :func:`mirror_plan` flips a plan (mirroring augmentation).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from train.data import labels as L
from train.data.cache import CachedCase
from train.data.cases import TrainingCase
from train.data.config import PatchDatasetConfig
from train.data.crops import choose_crop
from train.data.placement import extract_patch
from train.data.supervision import CaseSupervision, TumorTarget, build_supervision, organ_labels


@functools.lru_cache(maxsize=8)
def _channel_luts(classes: tuple[str, ...]) -> tuple[np.ndarray, dict[int, int]]:
    """(canonical label -> channel membership (n_labels, C) bool, lesion channel index -> lesion code)."""
    lut = np.zeros((len(L.CANONICAL_LABELS), len(classes)), bool)
    lesion_channels: dict[int, int] = {}
    for c, name in enumerate(classes):
        if name in L.LESION_LABELS:
            lesion_channels[c] = L.lesion_code(name.removesuffix("_lesion"))
            continue
        members = (name, *L.ORGAN_PARTS.get(name, ())) if name in L.ORGANS else (name,)
        for m in members:
            lut[L.CANONICAL_INDEX[m], c] = True
    return lut, lesion_channels


def grow_radius_voxels(margin_mm: float, spacing_mm: np.ndarray) -> tuple[int, int, int]:
    """Half-width in voxels of the cuboid that grows a region by ``margin_mm`` (0 when the margin is 0)."""
    if margin_mm <= 0:
        return (0, 0, 0)
    return tuple(int(math.ceil(margin_mm / s)) for s in spacing_mm)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class CropGroupPlan:
    """A group supervised in the crop; its mask is the union of ``label_ids`` in the crop's label map."""

    label_ids: tuple[int, ...]  # canonical label indices present in the crop
    channel: int
    state: int
    count: int
    count_is_lower_bound: bool
    tumors: tuple[TumorTarget, ...]


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """A sample in compact form: cropped label maps plus per-channel rules for the dense bool masks.

    The dense ``labels`` / ``unknown_mask`` / group masks (C x 96^3 bools each) are painted from this by
    :func:`train.data.painting.paint_masks`, directly into the batch tensors, so they are never built twice or pickled.

    Attributes:
        hu: int16 (X, Y, Z) crop in HU (-1024 outside the volume).
        labels: uint8 (X, Y, Z) canonical labels of the crop.
        lesions: uint8 (X, Y, Z) lesion codes of the crop, or None.
        label_ids: per channel, canonical label indices whose union is the channel's label.
        lesion_code: per channel, the lesion code whose voxels are the channel's label (mask cases), or None.
        unknown_all: per channel, the whole channel is unknown.
        unknown_region: per channel, canonical label indices whose union, grown by ``grow_voxels``, is unknown.
        grow_voxels: per channel, cuboid half-width (voxels per axis) of the unknown-region growth.
        groups: groups supervised in this crop.
    """

    ct_id: str
    has_mask: bool
    spacing_mm: np.ndarray
    crop_start: np.ndarray
    chosen_group: int | None
    hu: np.ndarray
    labels: np.ndarray
    lesions: np.ndarray | None
    label_ids: tuple[tuple[int, ...], ...]
    lesion_code: tuple[int | None, ...]
    unknown_all: tuple[bool, ...]
    unknown_region: tuple[tuple[int, ...], ...]
    grow_voxels: tuple[tuple[int, int, int], ...]
    groups: tuple[CropGroupPlan, ...]

    @property
    def num_channels(self) -> int:
        return len(self.label_ids)


def plan_sample(
    cached: CachedCase, case: TrainingCase, config: PatchDatasetConfig, rng: np.random.Generator
) -> SamplePlan:
    """Choose the crop and work out what every channel and group is made of (no dense mask is built).

    Uses ``rng`` exactly as :func:`choose_crop` does, so a seed gives the same crop as before.
    """
    classes = config.classes
    lut, lesion_channels = _channel_luts(classes)
    available = frozenset(cached.meta["available_labels"])
    lesion_organs = frozenset(classes[c].removesuffix("_lesion") for c in lesion_channels)
    # A lesion mask may annotate some organs' lesions only (a liver-tumour dataset, a new tumour type): the report
    # supervises the lesion channels it leaves out.
    mask_organs = frozenset(cached.meta["lesion_organs"]) if case.has_mask else frozenset()
    by_mask = lesion_organs if "all" in mask_organs else lesion_organs & mask_organs
    supervision = (
        build_supervision(case.records, available, config.max_tumors_per_group)
        if case.records is not None and (not case.has_mask or by_mask != lesion_organs) else None
    )
    crop = choose_crop(rng, cached, supervision, config, lesion_organs, case.has_mask)
    patch, spacing = config.patch_size, cached.spacing_mm

    hu = extract_patch(cached.image, crop.start, patch, fill=-1024)
    lab = extract_patch(cached.labels, crop.start, patch, fill=0)
    les = extract_patch(cached.lesions, crop.start, patch, fill=0) if cached.lesions is not None else None
    counts = np.bincount(lab.ravel(), minlength=len(L.CANONICAL_LABELS))
    in_crop = np.flatnonzero(counts)

    n_c = len(classes)
    label_ids: list[tuple[int, ...]] = [()] * n_c
    lesion_code: list[int | None] = [None] * n_c
    unknown_all = [False] * n_c
    unknown_region: list[tuple[int, ...]] = [()] * n_c
    grow_voxels: list[tuple[int, int, int]] = [(0, 0, 0)] * n_c
    for c, name in enumerate(classes):
        if c in lesion_channels:
            continue
        label_ids[c] = tuple(int(i) for i in in_crop[lut[in_crop, c]])
        members = organ_labels(name, available) if name in L.ORGANS else ((name,) if name in available else ())
        unknown_all[c] = not members  # this mask does not show the structure
    for c, code in lesion_channels.items():
        organ = classes[c].removesuffix("_lesion")
        if organ in by_mask:
            if les is not None:
                lesion_code[c] = code
            else:
                unknown_all[c] = True
            continue
        if supervision is None:
            unknown_all[c] = True  # neither a lesion mask nor a report
            continue
        region: set[str] = set()
        radius_mm = 0.0
        if organ in supervision.unknown_organs:
            members = organ_labels(organ, available)
            if not members:
                unknown_all[c] = True
                continue
            region.update(members)
        for g in supervision.groups:
            if g.organ == organ and g.state == 1:
                region.update(g.labels)
                radius_mm = max([radius_mm, *(0.5 * max(t.diameters_mm) for t in g.tumors)])
        if organ not in supervision.mentioned_organs and not config.not_mentioned_is_negative:
            unknown_all[c] = True
            continue
        unknown_region[c] = _present_ids(region, counts)
        grow_voxels[c] = grow_radius_voxels(config.unknown_margin_mm + radius_mm, spacing)
    groups = _crop_groups(supervision, counts, cached.meta["label_voxels"], classes, by_mask) if supervision else ()
    return SamplePlan(
        ct_id=case.files.ct_id,
        has_mask=case.has_mask,
        spacing_mm=spacing.astype(np.float32),
        crop_start=crop.start,
        chosen_group=crop.chosen_group,
        hu=hu,
        labels=lab,
        lesions=les,
        label_ids=tuple(label_ids),
        lesion_code=tuple(lesion_code),
        unknown_all=tuple(unknown_all),
        unknown_region=tuple(unknown_region),
        grow_voxels=tuple(grow_voxels),
        groups=groups,
    )


def _present_ids(names: set[str] | tuple[str, ...], counts: np.ndarray) -> tuple[int, ...]:
    """Canonical indices of ``names`` that occur in the crop (``counts``: voxels per canonical label)."""
    return tuple(sorted({i for i in (L.CANONICAL_INDEX[n] for n in names) if counts[i] > 0}))


def _crop_groups(supervision: CaseSupervision, counts: np.ndarray, label_voxels: dict[str, int],
                 classes: tuple[str, ...], by_mask: frozenset[str] = frozenset()) -> tuple[CropGroupPlan, ...]:
    """Groups supervised in this crop: lesion groups lying wholly inside it, lesion-free groups touching it; none
    of an organ whose lesions the case's mask annotates (``by_mask``)."""
    out = []
    for g in supervision.groups:
        channel = f"{g.organ}_lesion"
        if channel not in classes or g.organ in by_mask:
            continue
        ids = _present_ids(g.labels, counts)
        inside = int(counts[list(ids)].sum())
        total = sum(label_voxels.get(n, 0) for n in set(g.labels))
        if inside == 0 or (g.state == 1 and inside < total):
            continue  # a lesion group cut by the crop may have its tumours outside: not supervised here
        out.append(CropGroupPlan(ids, classes.index(channel), g.state, g.count, g.count_is_lower_bound, g.tumors))
    return tuple(out)


def mirror_plan(plan: SamplePlan, axes: tuple[int, ...]) -> SamplePlan:
    """The sample mirrored along ``axes`` (of X, Y, Z). Every mask is painted from the crop's label maps, so
    flipping those maps and the HU crop moves labels, unknown regions and report groups with the image."""
    if not axes:
        return plan
    flip = lambda a: None if a is None else np.ascontiguousarray(np.flip(a, axes))  # noqa: E731
    return dataclasses.replace(plan, hu=flip(plan.hu), labels=flip(plan.labels), lesions=flip(plan.lesions))
