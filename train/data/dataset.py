"""Training samples: patches from the cache with labels, unknown-voxel masks and report targets; mixed batches.

A sample is drawn by ``dataset[(case_index, seed)]``: the same pair always gives the same patch (seedable and
worker-independent). An item is compact (:class:`SamplePlan`: int16 / uint8 crops plus per-channel rules);
:func:`collate` paints the dense bool labels, unknown masks and group masks straight into the batch tensors (in
shared memory inside a DataLoader worker) and pads the group (K) and tumour (T) axes into
:class:`train.losses.targets.ReportTargets`. :class:`MixedBatchSampler` yields batches that mix mask-annotated and
report-supervised cases at a configured ratio.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import functools
import math
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator
from scipy import ndimage

from train.data import labels as L
from train.data.cache import CachedCase, CaseFiles, PreprocessConfig, ensure_cached
from train.data.records import CaseRecords
from train.data.sampler import extract_patch, random_start, start_around, start_containing
from train.data.supervision import CaseSupervision, Group, TumorTarget, build_supervision, organ_labels
from train.losses.targets import ReportTargets

DEFAULT_CLASSES: tuple[str, ...] = (
    "liver", *(f"liver_segment_{i}" for i in range(1, 9)),
    "pancreas", "pancreas_head", "pancreas_body", "pancreas_tail",
    "kidney", "kidney_left", "kidney_right", "spleen",
    "liver_lesion", "pancreas_lesion", "kidney_lesion",
)


class DataConfig(BaseModel):
    """Patch sampling, intensity handling and supervision rules (defaults documented in docs/data.md).

    Attributes:
        classes: output channels: organ keys, sub-segment / sided labels, ``<organ>_lesion`` channels.
        patch_size: crop size in voxels (X, Y, Z of the RAS-oriented volume).
        preprocess: settings of the cached volumes (target spacing).
        hu_window: HU clipping range before normalisation.
        normalization: ``zscore`` (per-CT body statistics) or ``window`` (window mapped to [-1, 1]).
        mask_fraction: share of each batch drawn from mask-annotated cases (when both kinds exist).
        random_crop_probability: report cases: chance of a random crop instead of one around a lesion group.
        foreground_probability: mask cases: chance of a crop centred on a lesion (else organ) voxel.
        group_margin_mm: context kept around the chosen group inside the crop (shrunk if it does not fit).
        unknown_margin_mm: lesion-channel unknown regions grow by this much (cuboid) plus the largest reported
            tumour radius of the organ, so a tumour centred in its sub-segment but reaching into the next one, or
            out of the organ, is not supervised as background.
        not_mentioned_is_negative: an organ the report does not mention counts as lesion-free for the ordinary
            segmentation loss (radiology reports name abnormal organs); no lesion-free group is made for it.
        max_tumors_per_group: tumour targets kept per group (the count stays exact).
        intensity_augmentation: MONAI intensity augmentations on the normalised image.
        augmentation_probability: probability of each augmentation.
        mirror_axes: RAS axes (0 = left-right, 1 = posterior-anterior, 2 = inferior-superior) each mirrored with
            probability 0.5 per crop (nnU-Net's mirroring); image, labels, unknown regions and report groups move
            together. Axis 0 is refused when a channel is a side- or segment-specific label (``kidney_left``).
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    patch_size: tuple[int, int, int] = (96, 96, 96)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    hu_window: tuple[float, float] = (-991.0, 500.0)
    normalization: Literal["zscore", "window"] = "zscore"
    mask_fraction: float = Field(0.5, ge=0.0, le=1.0)
    random_crop_probability: float = Field(0.1, ge=0.0, le=1.0)
    foreground_probability: float = Field(0.5, ge=0.0, le=1.0)
    group_margin_mm: float = Field(8.0, ge=0.0)
    unknown_margin_mm: float = Field(5.0, ge=0.0)
    not_mentioned_is_negative: bool = True
    max_tumors_per_group: int = Field(16, ge=1)
    intensity_augmentation: bool = True
    augmentation_probability: float = Field(0.3, ge=0.0, le=1.0)
    mirror_axes: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _known_classes(self) -> "DataConfig":
        unknown = [c for c in self.classes if c not in L.KNOWN_LABELS or c in (L.BACKGROUND, L.GENERIC_LESION)]
        if unknown:
            raise ValueError(f"classes: unknown channel names {unknown}")
        if any(a not in (0, 1, 2) for a in self.mirror_axes) or len(set(self.mirror_axes)) != len(self.mirror_axes):
            raise ValueError(f"mirror_axes: distinct axes among 0, 1, 2 expected, got {list(self.mirror_axes)}")
        parts = {p for members in L.ORGAN_PARTS.values() for p in members}
        sided = [c for c in self.classes if c in parts]
        if 0 in self.mirror_axes and sided:
            raise ValueError(f"mirror_axes: mirroring axis 0 (left-right) would swap the sides of channels {sided}")
        return self


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    """One CT with its files and (optional) report records."""

    files: CaseFiles
    records: CaseRecords | None = None

    @property
    def has_mask(self) -> bool:
        return self.files.lesion_mask_path is not None


@dataclasses.dataclass(frozen=True)
class Crop:
    """Where a patch was taken and which group it was centred on (index into the case's groups, or None)."""

    start: np.ndarray
    chosen_group: int | None


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


def choose_crop(
    rng: np.random.Generator,
    cached: CachedCase,
    supervision: CaseSupervision | None,
    config: DataConfig,
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


def grow_radius_voxels(margin_mm: float, spacing_mm: np.ndarray) -> tuple[int, int, int]:
    """Half-width in voxels of the cuboid that grows a region by ``margin_mm`` (0 when the margin is 0)."""
    if margin_mm <= 0:
        return (0, 0, 0)
    return tuple(int(math.ceil(margin_mm / s)) for s in spacing_mm)  # type: ignore[return-value]


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


@dataclasses.dataclass(frozen=True)
class GroupPlan:
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
    :func:`paint_masks`, directly into the batch tensors, so they are never built twice or pickled.

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
    groups: tuple[GroupPlan, ...]

    @property
    def num_channels(self) -> int:
        return len(self.label_ids)


def plan_sample(cached: CachedCase, case: TrainingCase, config: DataConfig, rng: np.random.Generator) -> SamplePlan:
    """Choose the crop and work out what every channel and group is made of (no dense mask is built).

    Uses ``rng`` exactly as :func:`choose_crop` does, so a seed gives the same crop as before.
    """
    classes = config.classes
    lut, lesion_channels = _channel_luts(classes)
    available = frozenset(cached.meta["available_labels"])
    supervision = (
        build_supervision(case.records, available, config.max_tumors_per_group)
        if case.records is not None and not case.has_mask else None
    )
    lesion_organs = frozenset(classes[c].removesuffix("_lesion") for c in lesion_channels)
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
        if case.has_mask:
            annotated = {"all", organ} & set(cached.meta["lesion_organs"])
            if annotated and les is not None:
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
    groups = _crop_groups(supervision, counts, cached.meta["label_voxels"], classes) if supervision else ()
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
                 classes: tuple[str, ...]) -> tuple[GroupPlan, ...]:
    """Groups supervised in this crop: lesion groups lying wholly inside it, lesion-free groups touching it."""
    out = []
    for g in supervision.groups:
        channel = f"{g.organ}_lesion"
        if channel not in classes:
            continue
        ids = _present_ids(g.labels, counts)
        inside = int(counts[list(ids)].sum())
        total = sum(label_voxels.get(n, 0) for n in set(g.labels))
        if inside == 0 or (g.state == 1 and inside < total):
            continue  # a lesion group cut by the crop may have its tumours outside: not supervised here
        out.append(GroupPlan(ids, classes.index(channel), g.state, g.count, g.count_is_lower_bound, g.tumors))
    return tuple(out)


def _union_of_labels(lab: np.ndarray, ids: tuple[int, ...], out: np.ndarray, scratch: np.ndarray) -> None:
    """``out |= (lab in ids)`` without temporaries (``scratch``: a bool array shaped like ``lab``)."""
    for i in ids:
        np.equal(lab, i, out=scratch)
        np.logical_or(out, scratch, out=out)


def mirror_plan(plan: SamplePlan, axes: tuple[int, ...]) -> SamplePlan:
    """The sample mirrored along ``axes`` (of X, Y, Z). Every mask is painted from the crop's label maps, so
    flipping those maps and the HU crop moves labels, unknown regions and report groups with the image."""
    if not axes:
        return plan
    flip = lambda a: None if a is None else np.ascontiguousarray(np.flip(a, axes))  # noqa: E731
    return dataclasses.replace(plan, hu=flip(plan.hu), labels=flip(plan.labels), lesions=flip(plan.lesions))


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


def normalise_image(hu: np.ndarray, config: DataConfig, meta: dict) -> np.ndarray:
    """Float32 network input from a HU crop: clipped to ``hu_window``, then z-scored (per-CT body statistics)
    or mapped window -> [-1, 1]."""
    lo, hi = config.hu_window
    clipped = np.clip(hu.astype(np.float32), lo, hi)
    if config.normalization == "zscore":
        return (clipped - meta["hu_mean"]) / meta["hu_std"]
    return (clipped - (lo + hi) / 2) / ((hi - lo) / 2)


def build_sample(
    cached: CachedCase, case: TrainingCase, config: DataConfig, rng: np.random.Generator
) -> dict:
    """One training sample as dense numpy arrays (the per-sample view of the :func:`collate` batch layout).

    Returns:
        ``image`` float32 (1,X,Y,Z) normalised (not augmented), ``image_hu`` float32 (1,X,Y,Z), ``labels`` and
        ``unknown_mask`` bool (C,X,Y,Z), ``groups`` (dicts with a bool ``mask`` (X,Y,Z), ``channel``, ``state``,
        ``count``, ``count_is_lower_bound``, ``tumors``), ``has_mask``, ``spacing_mm``, ``crop_start``,
        ``chosen_group``, ``ct_id``.
    """
    plan = plan_sample(cached, case, config, rng)
    shape = plan.labels.shape
    labels = np.zeros((plan.num_channels, *shape), bool)
    unknown = np.zeros(labels.shape, bool)  # np.zeros_like would write the zeros
    group_masks = np.zeros((len(plan.groups), *shape), bool)
    paint_masks(plan, labels, unknown, group_masks)
    groups = [
        {"mask": group_masks[j], "channel": g.channel, "state": g.state, "count": g.count,
         "count_is_lower_bound": g.count_is_lower_bound, "tumors": g.tumors}
        for j, g in enumerate(plan.groups)
    ]
    return {
        "ct_id": plan.ct_id,
        "image": normalise_image(plan.hu, config, cached.meta)[None],
        "image_hu": plan.hu.astype(np.float32)[None],
        "labels": labels,
        "unknown_mask": unknown,
        "has_mask": plan.has_mask,
        "groups": groups,
        "spacing_mm": plan.spacing_mm,
        "crop_start": plan.crop_start,
        "chosen_group": plan.chosen_group,
    }


class IntensityAugmentation:
    """Intensity augmentations on a normalised image (1, X, Y, Z), each with probability ``p``: Gaussian blur
    sigma [0.5, 1.5] voxels, brightness x[0.7,1.3], shift +-0.1, gamma [0.7, 1.5], noise std up to 0.2.

    Scale, shift and gamma give exactly what MONAI's RandScaleIntensity(0.3), RandShiftIntensity(0.1) and
    RandAdjustContrast((0.7, 1.5)) give with the same seeds, without their per-call metadata overhead.
    """

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        if rng.random() < self.p:
            # Gaussian blur sigma in [0.5, 1.5] voxels; scipy is ~5x faster than MONAI's conv3d on CPU.
            image = torch.from_numpy(ndimage.gaussian_filter(image.numpy(), sigma=(0, *rng.uniform(0.5, 1.5, 3))))
        if rng.random() < self.p:
            image = image * (1 + _monai_uniform(rng, -0.3, 0.3))
        if rng.random() < self.p:
            image = image + _monai_uniform(rng, -0.1, 0.1)
        if rng.random() < self.p:
            image = _adjust_gamma(image, _monai_uniform(rng, 0.7, 1.5))
        if rng.random() < self.p:  # Gaussian noise, std ~ U(0, 0.2); numpy's float32 generator is ~10x faster
            noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 0.2)
            image = image + torch.from_numpy(noise)
        return image.float()


def _monai_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """The value a MONAI random transform (prob 1) seeded with the next ``rng`` integer draws from U(low, high)."""
    state = np.random.RandomState(int(rng.integers(2**31)))
    state.rand()  # MONAI first draws whether to apply the transform
    return float(state.uniform(low, high))


def _adjust_gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """Gamma contrast on the image's own [min, max] range (MONAI AdjustContrast's formula)."""
    img_min = image.min()
    img_range = image.max() - img_min
    return ((image - img_min) / float(img_range + 1e-7)) ** gamma * img_range + img_min


class CaseDataset(torch.utils.data.Dataset):
    """Patches from cached cases; index with ``(case_index, seed)``.

    Args:
        cases: the training cases.
        cache_dir: folder of the preprocessed-volume cache.
        config: sampling and supervision settings.
    """

    def __init__(self, cases: list[TrainingCase], cache_dir: str | Path, config: DataConfig) -> None:
        self.cases = cases
        self.cache_dir = Path(cache_dir)
        self.config = config
        self._augment = IntensityAugmentation(config.augmentation_probability) if config.intensity_augmentation else None
        self._open: collections.OrderedDict[int, CachedCase] = collections.OrderedDict()
        self.max_open = 64  # memory-mapped entries kept open per worker

    def cached(self, index: int) -> CachedCase:
        """The preprocessed case (memory-mapped), kept in a small LRU so metadata is parsed once."""
        hit = self._open.pop(index, None)
        if hit is None:
            hit = ensure_cached(self.cache_dir, self.cases[index].files, self.config.preprocess)
        self._open[index] = hit
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return hit

    def __len__(self) -> int:
        return len(self.cases)

    def prepare(self, progress: bool = False) -> None:
        """Preprocess every case into the cache (skips what is already there)."""
        items = self.cases
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc="cache", unit="case")
        for case in items:
            ensure_cached(self.cache_dir, case.files, self.config.preprocess)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        """A compact sample for :func:`collate`: the crop's :class:`SamplePlan` and its augmented float image."""
        index, seed = item
        case = self.cases[index]
        cached = self.cached(index)
        rng = np.random.default_rng([seed, index])
        plan = plan_sample(cached, case, self.config, rng)
        if self.config.mirror_axes:
            plan = mirror_plan(plan, tuple(a for a in self.config.mirror_axes if rng.random() < 0.5))
        image = torch.from_numpy(normalise_image(plan.hu, self.config, cached.meta)[None])
        if self._augment is not None:
            image = self._augment(image, int(rng.integers(2**31)))
        return {"ct_id": plan.ct_id, "image": image, "plan": plan}


class MixedBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(case_index, seed)`` mixing mask cases and report cases at ``mask_fraction``.

    Each batch takes ``round(mask_fraction * batch_size)`` mask cases (all of the batch when there are no report
    cases, none when there are no mask cases); the split of a fractional remainder is drawn at random.
    """

    def __init__(self, cases: list[TrainingCase], batch_size: int, batches: int, mask_fraction: float,
                 seed: int = 0) -> None:
        self.mask_idx = [i for i, c in enumerate(cases) if c.has_mask]
        self.report_idx = [i for i, c in enumerate(cases) if not c.has_mask and c.records is not None]
        if not self.mask_idx and not self.report_idx:
            raise ValueError("no usable case: every case lacks both a lesion mask and report records")
        self.batch_size, self.batches, self.mask_fraction, self.seed = batch_size, batches, mask_fraction, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.batches):
            want = self.mask_fraction * self.batch_size
            n_mask = int(want) + int(rng.random() < want - int(want))
            if not self.report_idx:
                n_mask = self.batch_size
            elif not self.mask_idx:
                n_mask = 0
            picks = [int(rng.choice(self.mask_idx)) for _ in range(n_mask)]
            picks += [int(rng.choice(self.report_idx)) for _ in range(self.batch_size - n_mask)]
            yield [(i, int(rng.integers(2**31))) for i in picks]


BATCH_KEYS: tuple[str, ...] = ("ct_id", "image", "image_hu", "labels", "unknown_mask", "has_mask", "targets")


class Batch(collections.abc.Mapping):
    """A collated batch (keys :data:`BATCH_KEYS`, layout in :func:`collate`) whose dense tensors are built on
    first access, in the process that reads them.

    A DataLoader worker pickles only the compact items (int16 / uint8 crops, the augmented image, the plans:
    ~7 MB per 96^3 patch instead of ~50 MB of bool masks); moving dense masks through shared memory cost more CPU
    than painting them.
    """

    def __init__(self, items: list[dict] | collections.abc.Mapping) -> None:
        # A mapping of tensors is accepted because DataLoader's pin_memory rebuilds mappings as type(batch)(dict).
        self._items = None if isinstance(items, collections.abc.Mapping) else list(items)
        self._tensors = dict(items) if isinstance(items, collections.abc.Mapping) else None

    def _dense(self) -> dict:
        if self._tensors is None:
            self._tensors, self._items = dense_batch(self._items), None
        return self._tensors

    def __getitem__(self, key: str):
        return self._dense()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(BATCH_KEYS)

    def __len__(self) -> int:
        return len(BATCH_KEYS)


def collate(samples: list[dict]) -> Batch:
    """Batch :class:`CaseDataset` items; groups and tumours are padded into :class:`ReportTargets`.

    Returns:
        A :class:`Batch` mapping ``image`` float (B,1,X,Y,Z) normalised, ``image_hu`` float (B,1,X,Y,Z), ``labels``
        bool (B,C,X,Y,Z), ``unknown_mask`` bool (B,C,X,Y,Z), ``has_mask`` bool (B,), ``targets`` ReportTargets,
        ``ct_id`` list; tensors are built on first access (see :class:`Batch`).
    """
    return Batch(samples)


def dense_batch(samples: list[dict]) -> dict:
    """The tensors of :func:`collate`: dense masks painted straight into the batch arrays (numpy's lazily zeroed
    pages: channels left empty cost nothing)."""
    plans: list[SamplePlan] = [s["plan"] for s in samples]
    b = len(plans)
    spatial = tuple(plans[0].labels.shape)
    k = max(1, max(len(p.groups) for p in plans))
    t = max(1, max(sum(len(g.tumors) for g in p.groups) for p in plans))
    labels = np.zeros((b, plans[0].num_channels, *spatial), bool)
    unknown = np.zeros(labels.shape, bool)  # np.zeros_like would write the zeros
    group_masks = np.zeros((b, k, *spatial), bool)
    image = torch.empty((b, 1, *spatial), dtype=torch.float32)
    image_hu = np.empty((b, 1, *spatial), np.float32)
    targets = dataclasses.replace(ReportTargets.empty(b, (1, 1, 1), num_groups=k, num_tumors=t),
                                  group_masks=torch.from_numpy(group_masks))
    for i, (s, p) in enumerate(zip(samples, plans)):
        paint_masks(p, labels[i], unknown[i], group_masks[i])
        image[i] = s["image"]
        image_hu[i, 0] = p.hu
        targets.spacing_mm[i] = torch.from_numpy(p.spacing_mm)
        n = 0
        for j, g in enumerate(p.groups):
            targets.group_channel[i, j] = g.channel
            targets.group_state[i, j] = g.state
            targets.group_count[i, j] = g.count
            targets.group_count_is_lower_bound[i, j] = g.count_is_lower_bound
            for tumor in g.tumors:
                targets.tumor_group[i, n] = j
                targets.tumor_diameters_mm[i, n] = torch.tensor(tumor.diameters_mm)
                targets.tumor_volume_mm3[i, n] = tumor.volume_mm3
                targets.tumor_size_known[i, n] = tumor.size_known
                targets.tumor_attenuation[i, n] = tumor.attenuation
                n += 1
    return {
        "ct_id": [p.ct_id for p in plans],
        "image": image,
        "image_hu": torch.from_numpy(image_hu),
        "labels": torch.from_numpy(labels),
        "unknown_mask": torch.from_numpy(unknown),
        "has_mask": torch.tensor([bool(p.has_mask) for p in plans]),
        "targets": targets,
    }
