"""In-memory synthetic training data (random organ ellipsoids with ball lesions) for tests and benchmarks.

It produces batches with exactly the layout of the real data pipeline (see :class:`train.factories.TrainingData`),
including report-only crops whose lesion channel is unknown inside the organ and supervised by a
:class:`~train.losses.targets.ReportTargets` group, so the trainer can be exercised without files.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from train.config import DataConfig
from train.data.volume import VolumeCase
from train.losses.targets import GroupState, ReportTargets


def _ellipsoid(shape, center, semi) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    q = sum(((grid[i] - center[i]) / semi[i]) ** 2 for i in range(3))
    return q <= 1.0


def synthetic_volume(rng: np.random.Generator, shape: tuple[int, int, int], num_organs: int):
    """One volume: ``num_organs`` ellipsoid organs, each with a ball lesion with probability 0.7.

    Returns:
        hu float32 (D, H, W), organs bool (num_organs, D, H, W), lesions bool (num_organs, D, H, W),
        lesion diameters in voxels (list per organ, 0 = none).
    """
    shape_a = np.asarray(shape, float)
    hu = rng.normal(-80.0, 15.0, shape).astype(np.float32)
    organs = np.zeros((num_organs, *shape), bool)
    lesions = np.zeros((num_organs, *shape), bool)
    diameters = []
    for o in range(num_organs):
        center = rng.uniform(0.3, 0.7, 3) * shape_a
        semi = rng.uniform(0.18, 0.26, 3) * shape_a
        organs[o] = _ellipsoid(shape, center, semi) & ~organs[:o].any(0)
        hu[organs[o]] = 60.0 + 40.0 * o + rng.normal(0, 10.0, int(organs[o].sum()))
        d = 0.0
        if rng.random() < 0.7:
            d = float(rng.uniform(0.3, 0.6) * semi.min() * 2)
            lesion_center = center + rng.uniform(-0.3, 0.3, 3) * semi
            lesions[o] = _ellipsoid(shape, lesion_center, np.full(3, d / 2)) & organs[o]
            hu[lesions[o]] -= 70.0
            d = float(2 * (3 * lesions[o].sum() / (4 * math.pi)) ** (1 / 3)) if lesions[o].any() else 0.0
        diameters.append(d)
    return hu, organs, lesions, diameters


class SyntheticData:
    """Random volumes; the first ``mask_fraction`` of items per batch carry lesion masks, the rest reports only.

    Classes must be organs followed by their ``<organ>_lesion`` channels in the same order.
    """

    def __init__(self, config: DataConfig, volume_shape: tuple[int, int, int] | None = None, num_val: int = 2):
        self.config = config
        self.classes = list(config.classes)
        self.num_organs = len(config.lesion_channels)
        if len(self.classes) != 2 * self.num_organs:
            raise ValueError("data.classes for the synthetic source: N organs then N `_lesion` channels")
        self.in_channels = 1
        self.volume_shape = tuple(volume_shape or config.patch_size)
        self.num_val = num_val

    def fingerprint(self) -> str:
        key = f"synthetic:{self.volume_shape}:{self.classes}:{self.config.mask_fraction}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @staticmethod
    def normalise(hu: np.ndarray) -> np.ndarray:
        return (np.clip(hu, -200.0, 300.0) - 50.0) / 100.0

    def _item(self, rng: np.random.Generator, with_mask: bool) -> dict:
        patch = tuple(self.config.patch_size)
        hu, organs, lesions, diameters = synthetic_volume(rng, patch, self.num_organs)
        n = self.num_organs
        labels = np.concatenate([organs, lesions]).astype(np.float32)
        unknown = np.zeros_like(labels, dtype=bool)
        groups = []
        if not with_mask:
            labels[n:] = 0.0
            for o in range(n):
                if diameters[o] > 0:
                    unknown[n + o] = organs[o]
                groups.append((n + o, organs[o], diameters[o]))
        return dict(hu=hu, labels=labels, unknown=unknown, has_mask=with_mask, groups=groups)

    def collate(self, items: list[dict]) -> dict:
        b = len(items)
        patch = tuple(self.config.patch_size)
        k = max(1, max(len(it["groups"]) for it in items))
        targets = ReportTargets.empty(b, patch, num_groups=k, num_tumors=k)
        for i, it in enumerate(items):
            for g, (channel, mask, d) in enumerate(it["groups"]):
                targets.group_masks[i, g] = torch.from_numpy(mask)
                targets.group_channel[i, g] = channel
                if d > 0:
                    targets.group_state[i, g] = GroupState.LESIONS
                    targets.group_count[i, g] = 1
                    targets.tumor_group[i, g] = g
                    targets.tumor_diameters_mm[i, g] = d
                    targets.tumor_volume_mm3[i, g] = math.pi * d**3 / 6
                    targets.tumor_size_known[i, g] = True
                else:
                    targets.group_state[i, g] = GroupState.LESION_FREE
        hu = torch.from_numpy(np.stack([it["hu"] for it in items]))[:, None]
        return {
            "image": torch.from_numpy(self.normalise(hu.numpy())),
            "image_hu": hu,
            "labels": torch.from_numpy(np.stack([it["labels"] for it in items])),
            "unknown_mask": torch.from_numpy(np.stack([it["unknown"] for it in items])),
            "has_mask": torch.tensor([it["has_mask"] for it in items]),
            "targets": targets,
        }

    def train_batches(self, rank: int, world_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
        """Endless batches; batch ``s`` of rank ``r`` depends only on (seed, r, s), so resuming is exact."""
        step = start_step
        while True:
            rng = np.random.default_rng([seed, rank, step])
            n_mask = round(self.config.mask_fraction * self.config.batch_size)
            items = [self._item(rng, i < n_mask) for i in range(self.config.batch_size)]
            yield self.collate(items)
            step += 1

    def val_cases(self) -> list[VolumeCase]:
        cases = []
        for i in range(self.num_val):
            rng = np.random.default_rng([10_000, i])
            hu, organs, lesions, diameters = synthetic_volume(rng, self.volume_shape, self.num_organs)
            n = self.num_organs
            tumors = [
                {"channel": n + o, "diameters_mm": [diameters[o]] * 3, "group_mask": organs[o]}
                for o in range(n)
                if diameters[o] > 0
            ]
            cases.append(
                VolumeCase(
                    ct_id=f"synthetic_{i:03d}",
                    image=torch.from_numpy(self.normalise(hu))[None],
                    image_hu=torch.from_numpy(hu)[None],
                    labels=torch.from_numpy(np.concatenate([organs, lesions]).astype(np.float32)),
                    affine=np.eye(4),
                    reported_tumors=tumors,
                )
            )
        return cases
