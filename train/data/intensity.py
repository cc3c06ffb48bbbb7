"""Network-input intensities: HU window and normalisation, and the intensity augmentations."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from train.data.config import PatchDatasetConfig


def normalise_image(hu: np.ndarray, config: PatchDatasetConfig, meta: dict) -> np.ndarray:
    """Float32 network input from a HU crop: clipped to ``hu_window``, then z-scored (per-CT body statistics)
    or mapped window -> [-1, 1]."""
    lo, hi = config.hu_window
    clipped = np.clip(hu.astype(np.float32), lo, hi)
    if config.normalization == "zscore":
        return (clipped - meta["hu_mean"]) / meta["hu_std"]
    return (clipped - (lo + hi) / 2) / ((hi - lo) / 2)


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
