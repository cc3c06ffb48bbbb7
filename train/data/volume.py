"""A whole CT as validation and prediction see it (network input, HU, masks, reported tumours)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass
class VolumeCase:
    """One whole CT for validation / prediction.

    Attributes:
        ct_id: case identifier.
        image: float (1, D, H, W) network input (normalised intensities).
        image_hu: float (1, D, H, W) Hounsfield units.
        labels: float (C, D, H, W) voxel masks or None (report-only CT).
        affine: (4, 4) voxel -> world mm.
        reported_tumors: per tumour ``{"channel": int, "diameters_mm": [..], "group_mask": bool (D, H, W)}``.
    """

    ct_id: str
    image: torch.Tensor
    image_hu: torch.Tensor
    labels: torch.Tensor | None
    affine: np.ndarray
    reported_tumors: list[dict]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
