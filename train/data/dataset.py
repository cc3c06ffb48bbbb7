"""Training samples: patches from the cache, indexed by ``(case_index, seed)``.

The same pair always gives the same patch (seedable and worker-independent). An item is compact (the crop's
:class:`~train.data.sample_plan.SamplePlan` plus its augmented float image); :func:`train.data.batching.collate`
paints the dense masks into the batch. :func:`build_sample` gives one sample as dense numpy arrays.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import torch

from train.data.cache import CachedCase, ensure_cached
from train.data.cases import TrainingCase
from train.data.config import PatchDatasetConfig
from train.data.intensity import IntensityAugmentation, normalise_image
from train.data.painting import paint_masks
from train.data.sample_plan import mirror_plan, plan_sample


def build_sample(
    cached: CachedCase, case: TrainingCase, config: PatchDatasetConfig, rng: np.random.Generator
) -> dict:
    """One training sample as dense numpy arrays (the per-sample view of the batch layout of
    :func:`train.data.batching.collate`).

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


class CaseDataset(torch.utils.data.Dataset):
    """Patches from cached cases; index with ``(case_index, seed)``.

    Args:
        cases: the training cases.
        cache_dir: folder of the preprocessed-volume cache.
        config: sampling and supervision settings.
    """

    def __init__(self, cases: list[TrainingCase], cache_dir: str | Path, config: PatchDatasetConfig) -> None:
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
        """A compact sample for :func:`train.data.batching.collate`: the crop's
        :class:`~train.data.sample_plan.SamplePlan` and its augmented float image."""
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
