"""Batch contract between the data pipeline and the report-supervision losses.

The data side turns report records into padded per-sample tensors; the losses only read tensors. Every physical
size is in millimetres (mm) or cubic millimetres (mm3); the losses convert them to voxels with ``spacing_mm``.
"""

from __future__ import annotations

import dataclasses
import enum

import torch


class GroupState(enum.IntEnum):
    """What the report says about one supervised group (organ or sub-segment union)."""

    IGNORE = 0  # padding, or nothing usable
    LESIONS = 1  # one or more lesions reported inside the group
    LESION_FREE = 2  # the report declares the organ free of lesions (zero-volume term)


class Attenuation(enum.IntEnum):
    """Reported attenuation of a tumour relative to the surrounding organ tissue."""

    UNKNOWN = 0  # also heterogeneous / not mentioned
    HYPO = 1
    ISO = 2
    HYPER = 3


@dataclasses.dataclass(frozen=True)
class ReportTargets:
    """Padded report supervision for a batch of B crops, at most K groups and T tumours per crop.

    Groups are the organ / sub-segment unions the report talks about; tumours point to the group that hosts them.
    Padding entries have ``group_channel == -1`` / ``group_state == 0`` and ``tumor_group == -1``.

    Attributes:
        group_masks: bool (B, K, D, H, W). Voxels of the organ / sub-segment union supervised by each group,
            already restricted to the crop (not grown: the losses add the margin in mm).
        group_channel: long (B, K). Output channel of the lesion class for the group; -1 = padding.
        group_state: long (B, K). :class:`GroupState` code: 0 ignore/padding, 1 lesion(s) reported,
            2 organ reported lesion-free.
        group_count: long (B, K). Number of lesions the report gives for the group (0 when unknown); used for
            count-only supervision of tumours without a size.
        group_count_is_lower_bound: bool (B, K). True when the count is "at least" (e.g. "multiple lesions").
        tumor_group: long (B, T). Index into the K axis of the hosting group; -1 = padding.
        tumor_diameters_mm: float (B, T, 3). Three diameters in mm (1 given -> sphere, 2 given -> third is their
            mean; filled by the data side); 0 when the size is unknown.
        tumor_volume_mm3: float (B, T). Ellipsoid volume pi * d1 * d2 * d3 / 6 in mm3; 0 when unknown.
        tumor_size_known: bool (B, T). Whether diameters / volume are valid.
        tumor_attenuation: long (B, T). :class:`Attenuation` code: 0 unknown, 1 hypo, 2 iso, 3 hyper.
        spacing_mm: float (B, 3). Voxel spacing of the crop along D, H, W in mm.
    """

    group_masks: torch.Tensor
    group_channel: torch.Tensor
    group_state: torch.Tensor
    group_count: torch.Tensor
    group_count_is_lower_bound: torch.Tensor
    tumor_group: torch.Tensor
    tumor_diameters_mm: torch.Tensor
    tumor_volume_mm3: torch.Tensor
    tumor_size_known: torch.Tensor
    tumor_attenuation: torch.Tensor
    spacing_mm: torch.Tensor

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.group_channel.shape[0])

    @property
    def num_groups(self) -> int:
        """K (padded)."""
        return int(self.group_channel.shape[1])

    @property
    def num_tumors(self) -> int:
        """T (padded)."""
        return int(self.tumor_group.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ReportTargets:
        """Return a copy with every tensor moved to ``device``."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in dataclasses.fields(self)
            },
        )

    def validate(self) -> None:
        """Check dtypes and shapes against each other.

        Raises:
            ValueError: naming the first inconsistent field.
        """
        b, k = self.group_channel.shape
        t = self.tumor_group.shape[1] if self.tumor_group.dim() == 2 else -1
        expected = {
            "group_masks": ((b, k), torch.bool),
            "group_channel": ((b, k), torch.long),
            "group_state": ((b, k), torch.long),
            "group_count": ((b, k), torch.long),
            "group_count_is_lower_bound": ((b, k), torch.bool),
            "tumor_group": ((b, t), torch.long),
            "tumor_diameters_mm": ((b, t, 3), None),
            "tumor_volume_mm3": ((b, t), None),
            "tumor_size_known": ((b, t), torch.bool),
            "tumor_attenuation": ((b, t), torch.long),
            "spacing_mm": ((b, 3), None),
        }
        for name, (shape, dtype) in expected.items():
            value = getattr(self, name)
            got = tuple(value.shape[: len(shape)]) if name == "group_masks" else tuple(value.shape)
            if got != shape or (name == "group_masks" and value.dim() != 5):
                raise ValueError(f"ReportTargets.{name}: shape {tuple(value.shape)} does not match {shape}")
            if dtype is not None and value.dtype != dtype:
                raise ValueError(f"ReportTargets.{name}: dtype {value.dtype}, expected {dtype}")
            if dtype is None and not value.is_floating_point():
                raise ValueError(f"ReportTargets.{name}: dtype {value.dtype}, expected a floating dtype")
        bad = (self.tumor_group >= k) | (self.tumor_group < -1)
        if bool(bad.any()):
            raise ValueError(f"ReportTargets.tumor_group: index outside [-1, {k})")

    @classmethod
    def empty(
        cls,
        batch_size: int,
        spatial_shape: tuple[int, int, int],
        num_groups: int = 1,
        num_tumors: int = 1,
        spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
        device: torch.device | str = "cpu",
    ) -> ReportTargets:
        """All-padding targets (no report supervision), e.g. for mask-annotated crops or tests."""
        b, k, t = batch_size, num_groups, num_tumors
        long = dict(dtype=torch.long, device=device)
        return cls(
            group_masks=torch.zeros((b, k, *spatial_shape), dtype=torch.bool, device=device),
            group_channel=torch.full((b, k), -1, **long),
            group_state=torch.zeros((b, k), **long),
            group_count=torch.zeros((b, k), **long),
            group_count_is_lower_bound=torch.zeros((b, k), dtype=torch.bool, device=device),
            tumor_group=torch.full((b, t), -1, **long),
            tumor_diameters_mm=torch.zeros((b, t, 3), device=device),
            tumor_volume_mm3=torch.zeros((b, t), device=device),
            tumor_size_known=torch.zeros((b, t), dtype=torch.bool, device=device),
            tumor_attenuation=torch.zeros((b, t), **long),
            spacing_mm=torch.tensor(spacing_mm, dtype=torch.float32, device=device).expand(b, 3).clone(),
        )


@dataclasses.dataclass(frozen=True)
class TargetTumor:
    """One tumour of a loss target, input of :func:`build_report_targets`; ``diameters_mm`` None = size unknown."""

    diameters_mm: tuple[float, float, float] | None = None
    attenuation: Attenuation = Attenuation.UNKNOWN


@dataclasses.dataclass(frozen=True)
class GroupEntry:
    """One supervised group for :func:`build_report_targets`; ``mask`` is bool (D, H, W) in crop coordinates."""

    mask: torch.Tensor
    channel: int
    state: GroupState = GroupState.LESIONS
    tumors: tuple[TargetTumor, ...] = ()
    count: int | None = None  # None: the number of tumour entries
    count_is_lower_bound: bool = False


def build_report_targets(
    samples: list[list[GroupEntry]],
    spatial_shape: tuple[int, int, int],
    spacing_mm: list[tuple[float, float, float]],
    device: torch.device | str = "cpu",
) -> ReportTargets:
    """Pad and stack per-sample groups into :class:`ReportTargets` (volumes from the diameters).

    Args:
        samples: for each batch item, its groups.
        spatial_shape: crop shape (D, H, W).
        spacing_mm: per item, voxel spacing (mm) along D, H, W.
        device: target device.
    """
    b = len(samples)
    k = max([len(s) for s in samples] + [1])
    t = max([sum(len(g.tumors) for g in s) for s in samples] + [1])
    out = ReportTargets.empty(b, spatial_shape, k, t, device=device)
    out.spacing_mm.copy_(torch.tensor(spacing_mm, dtype=torch.float32))
    for i, groups in enumerate(samples):
        slot = 0
        for j, g in enumerate(groups):
            out.group_masks[i, j] = g.mask.to(device)
            out.group_channel[i, j] = g.channel
            out.group_state[i, j] = int(g.state)
            out.group_count[i, j] = len(g.tumors) if g.count is None else g.count
            out.group_count_is_lower_bound[i, j] = g.count_is_lower_bound
            for tumor in g.tumors:
                out.tumor_group[i, slot] = j
                out.tumor_attenuation[i, slot] = int(tumor.attenuation)
                if tumor.diameters_mm is not None:
                    d = torch.tensor(tumor.diameters_mm, dtype=torch.float32)
                    out.tumor_diameters_mm[i, slot] = d
                    out.tumor_volume_mm3[i, slot] = float(torch.pi * d.prod() / 6.0)
                    out.tumor_size_known[i, slot] = True
                slot += 1
    return out
