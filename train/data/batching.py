"""Batches: :class:`MixedBatchSampler` mixes mask-annotated and report-supervised cases at a configured ratio;
:func:`collate` paints the dense bool labels, unknown masks and group masks straight into the batch tensors and
pads the group (K) and tumour (T) axes into :class:`train.losses.targets.ReportTargets`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
from typing import Iterator

import numpy as np
import torch

from train.data.cases import TrainingCase
from train.data.painting import paint_masks
from train.data.sample_plan import SamplePlan
from train.losses.targets import ReportTargets


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
    """Batch :class:`train.data.dataset.CaseDataset` items; groups and tumours are padded into :class:`ReportTargets`.

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
