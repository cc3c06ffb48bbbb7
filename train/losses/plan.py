"""Host-side view of the small report tensors, read once per batch (one device synchronisation).

The report losses loop over groups and tumours in Python and need their sizes as plain numbers (kernel shapes,
top-k sizes); reading them once up front keeps the rest of the forward pass free of host synchronisations.
"""

from __future__ import annotations

import dataclasses
import enum

import torch

from train.losses.targets import GroupState, ReportTargets


class TumorStatus(enum.IntEnum):
    """Per-tumour outcome of the Ball Loss, returned as a (B, T) long tensor."""

    PADDING = 0  # no tumour in this slot
    PLACED = 1  # pseudo-mask of the full size inside the placement ball
    GROWN = 2  # the placement ball was too small (crop border / segment edge): the mask grew outside it
    TRUNCATED = 3  # fewer candidate voxels than the size (tumour larger than the segment / crop)
    PRESENCE_ONLY = 4  # no size: supervised by the Volume Loss lower bound only
    GROUP_EMPTY = 5  # its organ / sub-segment is not in the crop
    NOT_SUPERVISED = 6  # group ignored, or the loss is not computed on any head


@dataclasses.dataclass(frozen=True)
class TumorPlan:
    """One reported tumour, sizes in mm / mm3 (``volume_mm3 = 0`` when unknown)."""

    slot: int
    diameters_mm: tuple[float, float, float]
    volume_mm3: float
    size_known: bool
    attenuation: int


@dataclasses.dataclass(frozen=True)
class GroupPlan:
    """One supervised group of one batch item."""

    item: int
    slot: int
    channel: int
    state: GroupState
    count: int
    count_is_lower_bound: bool
    tumors: tuple[TumorPlan, ...]
    spacing_mm: tuple[float, float, float]
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None
    """Bounding box of the group mask at full resolution, ``(start, stop)`` per axis (None = empty mask)."""

    @property
    def known_tumors(self) -> tuple[TumorPlan, ...]:
        """Tumours with a size, largest volume first."""
        return tuple(sorted((t for t in self.tumors if t.size_known), key=lambda t: -t.volume_mm3))

    @property
    def n_unknown_size(self) -> int:
        """Lesions without a size: unknown-size rows plus the excess of the reported count over the rows.

        A group reported with lesions but neither rows nor a count holds at least one lesion of unknown size.
        """
        if self.state != GroupState.LESIONS:
            return 0
        return max(self.count, len(self.tumors), 1) - len(self.known_tumors)

    @property
    def fully_sized(self) -> bool:
        """True when every reported lesion has a size and the count is exact: the rest is known tumour-free."""
        return self.n_unknown_size == 0 and not self.count_is_lower_bound


def _mask_projections(masks: torch.Tensor) -> torch.Tensor:
    """uint8 (B, K, D + H + W): which slices along each axis of bool (B, K, D, H, W) masks hold a voxel."""
    m = (masks if masks.dtype == torch.bool else masks != 0).view(torch.uint8)  # uint8 max: faster than bool any
    rows = m.amax(-1)  # (B, K, D, H)
    return torch.cat([rows.amax(-1), rows.amax(-2), m.amax(-2).amax(-2)], dim=-1)


def _box(projection: list[int], shape: tuple[int, int, int]):
    """Bounding box ``((start, stop),) * 3`` from one group's concatenated axis projections (None if empty)."""
    box = []
    offset = 0
    for n in shape:
        hits = [i for i, v in enumerate(projection[offset : offset + n]) if v]
        if not hits:
            return None
        box.append((hits[0], hits[-1] + 1))
        offset += n
    return tuple(box)


def plan_groups(targets: ReportTargets, lesion_channels: list[int] | None = None) -> list[GroupPlan]:
    """Read the small report tensors to the host and list the groups to supervise.

    Args:
        targets: batch report targets.
        lesion_channels: if non-empty, every supervised group must point to one of these channels.

    Returns:
        Groups with state LESIONS or LESION_FREE and a valid channel, in (item, slot) order.

    Raises:
        ValueError: a supervised group points to a channel that is not a lesion channel.
    """
    small = [
        targets.group_channel,
        targets.group_state,
        targets.group_count,
        targets.group_count_is_lower_bound,
        targets.tumor_group,
        targets.tumor_diameters_mm,
        targets.tumor_volume_mm3,
        targets.tumor_size_known,
        targets.tumor_attenuation,
        targets.spacing_mm,
        _mask_projections(targets.group_masks),
    ]
    host = [t.cpu().tolist() for t in small]
    channel, state, count, lower, t_group, diam, vol, known, att, spacing, projections = host
    shape = tuple(targets.group_masks.shape[-3:])
    allowed = set(lesion_channels or [])
    plans = []
    for b in range(len(channel)):
        for k in range(len(channel[b])):
            if state[b][k] == GroupState.IGNORE or channel[b][k] < 0:
                continue
            if allowed and channel[b][k] not in allowed:
                raise ValueError(
                    f"ReportTargets.group_channel[{b}, {k}] = {channel[b][k]} is not in LossConfig.lesion_channels"
                )
            tumors = tuple(
                TumorPlan(
                    slot=t,
                    diameters_mm=tuple(diam[b][t]),
                    volume_mm3=vol[b][t],
                    size_known=bool(known[b][t]) and vol[b][t] > 0,
                    attenuation=att[b][t],
                )
                for t in range(len(t_group[b]))
                if t_group[b][t] == k
            )
            plans.append(
                GroupPlan(
                    item=b,
                    slot=k,
                    channel=channel[b][k],
                    state=GroupState(state[b][k]),
                    count=count[b][k],
                    count_is_lower_bound=bool(lower[b][k]),
                    tumors=tumors,
                    spacing_mm=tuple(spacing[b]),
                    box=_box(projections[b][k], shape),
                )
            )
    return plans
