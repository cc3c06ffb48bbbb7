"""Training samples: patches from the cache with labels, unknown-voxel masks and report targets; mixed batches.

A sample is drawn by ``dataset[(case_index, seed)]``: the same pair always gives the same patch (seedable and
worker-independent). :class:`MixedBatchSampler` yields batches that mix mask-annotated and report-supervised cases
at a configured ratio; :func:`collate` pads the group (K) and tumour (T) axes into
:class:`train.losses.targets.ReportTargets`.
"""

from __future__ import annotations

import collections
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
from train.data.supervision import CaseSupervision, Group, build_supervision, organ_labels
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
        unknown_margin_mm: lesion-channel unknown regions grow by this much (cuboid), so a tumour bulging out of
            its sub-segment is not supervised as background.
        not_mentioned_is_negative: an organ the report does not mention counts as lesion-free for the ordinary
            segmentation loss (radiology reports name abnormal organs); no lesion-free group is made for it.
        max_tumors_per_group: tumour targets kept per group (the count stays exact).
        intensity_augmentation: MONAI intensity augmentations on the normalised image.
        augmentation_probability: probability of each augmentation.
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

    @model_validator(mode="after")
    def _known_classes(self) -> "DataConfig":
        unknown = [c for c in self.classes if c not in L.KNOWN_LABELS or c in (L.BACKGROUND, L.GENERIC_LESION)]
        if unknown:
            raise ValueError(f"classes: unknown channel names {unknown}")
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


def _grow(mask: np.ndarray, margin_mm: float, spacing_mm: np.ndarray) -> np.ndarray:
    """Cuboid dilation by ``margin_mm`` (separable max filter)."""
    if margin_mm <= 0 or not mask.any():
        return mask
    size = [2 * int(math.ceil(margin_mm / s)) + 1 for s in spacing_mm]
    return ndimage.maximum_filter(mask.view(np.uint8), size=size).astype(bool)


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
            return Crop(start_around(rng, np.asarray(fg[rng.integers(len(fg))]), shape, patch), None)
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


def group_box(group: Group, boxes: dict[str, list[list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel box of the union of a group's labels."""
    present = [boxes[lab] for lab in group.labels if lab in boxes]
    lo = np.min([b[0] for b in present], axis=0)
    hi = np.max([b[1] for b in present], axis=0)
    return lo, hi


def build_sample(
    cached: CachedCase, case: TrainingCase, config: DataConfig, rng: np.random.Generator
) -> dict:
    """One training sample as numpy arrays (see :func:`collate` for the batch layout)."""
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

    hu = extract_patch(cached.image, crop.start, patch, fill=-1024).astype(np.float32)
    lab = extract_patch(cached.labels, crop.start, patch, fill=0)
    les = extract_patch(cached.lesions, crop.start, patch, fill=0) if cached.lesions is not None else None

    n_c = len(classes)
    labels = np.zeros((n_c, *patch), bool)
    unknown = np.zeros((n_c, *patch), bool)
    in_crop = np.flatnonzero(np.bincount(lab.ravel(), minlength=len(L.CANONICAL_LABELS)))
    for c, name in enumerate(classes):
        if c in lesion_channels:
            continue
        for idx in in_crop[lut[in_crop, c]]:  # compare only against labels present in the crop
            labels[c] |= lab == idx
        members = organ_labels(name, available) if name in L.ORGANS else ((name,) if name in available else ())
        if not members:
            unknown[c] = True  # this mask does not show the structure
    groups: list[dict] = []
    for c, code in lesion_channels.items():
        organ = classes[c].removesuffix("_lesion")
        if case.has_mask:
            annotated = {"all", organ} & set(cached.meta["lesion_organs"])
            if annotated and les is not None:
                labels[c] = les == code
            else:
                unknown[c] = True
            continue
        if supervision is None:
            unknown[c] = True  # neither a lesion mask nor a report
            continue
        region = np.zeros(patch, bool)
        if organ in supervision.unknown_organs:
            members = organ_labels(organ, available)
            if not members:
                unknown[c] = True
                continue
            region |= _label_mask(lab, members)
        for g in supervision.groups:
            if g.organ == organ and g.state == 1:
                region |= _label_mask(lab, g.labels)
        if organ not in supervision.mentioned_organs and not config.not_mentioned_is_negative:
            unknown[c] = True
            continue
        unknown[c] = _grow(region, config.unknown_margin_mm, spacing)
    if supervision is not None:
        groups = _crop_groups(supervision, lab, cached.meta["label_voxels"], classes)

    lo, hi = config.hu_window
    clipped = np.clip(hu, lo, hi)
    if config.normalization == "zscore":
        image = (clipped - cached.meta["hu_mean"]) / cached.meta["hu_std"]
    else:
        image = (clipped - (lo + hi) / 2) / ((hi - lo) / 2)
    return {
        "ct_id": case.files.ct_id,
        "image": image[None].astype(np.float32),
        "image_hu": hu[None],
        "labels": labels,
        "unknown_mask": unknown,
        "has_mask": case.has_mask,
        "groups": groups,
        "spacing_mm": spacing.astype(np.float32),
        "crop_start": crop.start,
        "chosen_group": crop.chosen_group,
    }


def _label_mask(lab: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    out = np.zeros(lab.shape, bool)
    for n in names:
        out |= lab == L.CANONICAL_INDEX[n]
    return out


def _crop_groups(supervision: CaseSupervision, lab: np.ndarray, label_voxels: dict[str, int],
                 classes: tuple[str, ...]) -> list[dict]:
    """Groups supervised in this crop: lesion groups lying wholly inside it, lesion-free groups touching it."""
    out = []
    for g in supervision.groups:
        channel = f"{g.organ}_lesion"
        if channel not in classes:
            continue
        mask = _label_mask(lab, g.labels)
        inside = int(mask.sum())
        total = sum(label_voxels.get(n, 0) for n in g.labels)
        if inside == 0 or (g.state == 1 and inside < total):
            continue  # a lesion group cut by the crop may have its tumours outside: not supervised here
        out.append({
            "mask": mask,
            "channel": classes.index(channel),
            "state": g.state,
            "count": g.count,
            "count_is_lower_bound": g.count_is_lower_bound,
            "tumors": g.tumors,
        })
    return out


class IntensityAugmentation:
    """Intensity augmentations on a normalised image (1, X, Y, Z), each with probability ``p``: brightness x[0.7,1.3],
    shift +-0.1, gamma [0.7, 1.5] (MONAI), Gaussian blur sigma [0.5, 1.5] voxels (scipy), noise std up to 0.2."""

    def __init__(self, p: float) -> None:
        from monai.transforms import RandAdjustContrast, RandScaleIntensity, RandShiftIntensity

        # Each runs with probability 1 once chosen: the choice is drawn here, so skipped ones cost nothing.
        self._transforms = [
            RandScaleIntensity(factors=0.3, prob=1.0),
            RandShiftIntensity(offsets=0.1, prob=1.0),
            RandAdjustContrast(gamma=(0.7, 1.5), prob=1.0),
        ]
        self.p = p

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        if rng.random() < self.p:
            # Gaussian blur sigma in [0.5, 1.5] voxels; scipy is ~5x faster than MONAI's conv3d on CPU.
            image = torch.from_numpy(ndimage.gaussian_filter(image.numpy(), sigma=(0, *rng.uniform(0.5, 1.5, 3))))
        for transform in self._transforms:
            if rng.random() < self.p:
                transform.set_random_state(seed=int(rng.integers(2**31)))
                image = torch.as_tensor(transform(image))
        if rng.random() < self.p:  # Gaussian noise, std ~ U(0, 0.2); numpy's float32 generator is ~10x faster
            noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 0.2)
            image = image + torch.from_numpy(noise)
        return image.float()


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
        index, seed = item
        case = self.cases[index]
        cached = self.cached(index)
        rng = np.random.default_rng([seed, index])
        sample = build_sample(cached, case, self.config, rng)
        image = torch.from_numpy(sample["image"])
        if self._augment is not None:
            image = self._augment(image, int(rng.integers(2**31)))
        sample["image"] = image
        return sample


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


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch; groups and tumours are padded into :class:`ReportTargets`.

    Returns:
        ``image`` float (B,1,X,Y,Z) normalised, ``image_hu`` float (B,1,X,Y,Z), ``labels`` bool (B,C,X,Y,Z),
        ``unknown_mask`` bool (B,C,X,Y,Z), ``has_mask`` bool (B,), ``targets`` ReportTargets, ``ct_id`` list.
    """
    b = len(samples)
    spatial = tuple(samples[0]["labels"].shape[1:])
    k = max(1, max(len(s["groups"]) for s in samples))
    t = max(1, max(sum(len(g["tumors"]) for g in s["groups"]) for s in samples))
    targets = ReportTargets.empty(b, spatial, num_groups=k, num_tumors=t)
    for i, s in enumerate(samples):
        targets.spacing_mm[i] = torch.as_tensor(s["spacing_mm"])
        n = 0
        for j, g in enumerate(s["groups"]):
            targets.group_masks[i, j] = torch.from_numpy(g["mask"])
            targets.group_channel[i, j] = g["channel"]
            targets.group_state[i, j] = g["state"]
            targets.group_count[i, j] = g["count"]
            targets.group_count_is_lower_bound[i, j] = g["count_is_lower_bound"]
            for tumor in g["tumors"]:
                targets.tumor_group[i, n] = j
                targets.tumor_diameters_mm[i, n] = torch.tensor(tumor.diameters_mm)
                targets.tumor_volume_mm3[i, n] = tumor.volume_mm3
                targets.tumor_size_known[i, n] = tumor.size_known
                targets.tumor_attenuation[i, n] = tumor.attenuation
                n += 1
    return {
        "ct_id": [s["ct_id"] for s in samples],
        "image": torch.stack([torch.as_tensor(s["image"]) for s in samples]),
        "image_hu": torch.stack([torch.from_numpy(s["image_hu"]) for s in samples]),
        "labels": torch.from_numpy(np.stack([s["labels"] for s in samples])),
        "unknown_mask": torch.from_numpy(np.stack([s["unknown_mask"] for s in samples])),
        "has_mask": torch.tensor([bool(s["has_mask"]) for s in samples]),
        "targets": targets,
    }
