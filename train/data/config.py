"""Settings of the patch dataset: output channels, crop size, intensity handling, supervision rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from train.data import labels as L
from train.data.cache import PreprocessConfig

DEFAULT_CLASSES: tuple[str, ...] = (
    "liver", *(f"liver_segment_{i}" for i in range(1, 9)),
    "pancreas", "pancreas_head", "pancreas_body", "pancreas_tail",
    "kidney", "kidney_left", "kidney_right", "spleen",
    "liver_lesion", "pancreas_lesion", "kidney_lesion",
)


class PatchDatasetConfig(BaseModel):
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
    def _known_classes(self) -> "PatchDatasetConfig":
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
