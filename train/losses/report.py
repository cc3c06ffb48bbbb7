"""Report supervision on a batch: Volume, Ball and Attenuation Losses, and their combination with the masked
segmentation loss over deep-supervision heads.

Deep supervision: lower-resolution heads are supervised with *downsampled targets* (labels and group masks by
area averaging, i.e. soft fractions; unknown voxels by max pooling, i.e. a voxel is unknown if any of its
sub-voxels is) and with the voxel spacing scaled accordingly, so volumes in mm3 stay exact. This is cheaper and
lighter than upsampling every head's logits to full resolution.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from train.losses.attenuation import contrast_penalty, placement_prior, tumor_organ_contrast
from train.losses.ball import BallParams, BallSize, ball_loss_terms, place_tumors
from train.losses.buffers import new_tensor
from train.losses.config import LossConfig
from train.losses.morphology import Box, area_downsample, ball_halves, box_slices, dilate_mm, grow_box, union_box
from train.losses.plan import GroupPlan, TumorStatus, plan_groups
from train.losses.segmentation import Coverage, coverage_codes, known_from_unknown, label_occupancy, masked_bce_dice
from train.losses.targets import GroupState, ReportTargets
from train.losses.volume import soft_volume, volume_band_loss, volume_bounds_mm3


@dataclasses.dataclass(frozen=True)
class GroupTensors:
    """Per-group masks at one head's resolution (G = number of supervised groups in the batch).

    Attributes:
        plans: host-side description of each group.
        items: long (G,) batch index of each group.
        channels: long (G,) lesion output channel of each group.
        masks: float (G, D, H, W) organ / sub-segment in [0, 1] (fractions after downsampling).
        grown: float (G, D, H, W) the same grown by ``group_margin_mm``.
        spacing: per group, voxel spacing (mm) of this resolution.
        boxes: per group, a box holding every non-zero voxel of ``grown`` (and so of ``masks``), None when the
            group mask is empty: per-group work is cropped to it.
    """

    plans: list[GroupPlan]
    items: torch.Tensor
    channels: torch.Tensor
    masks: torch.Tensor
    grown: torch.Tensor
    spacing: list[tuple[float, float, float]]
    boxes: list[Box | None]


def build_group_tensors(targets: ReportTargets, plans: list[GroupPlan], margin_mm: float) -> GroupTensors:
    """Gather the supervised groups' masks at full resolution and grow them by ``margin_mm`` (no gradient).

    The growth of each item's groups runs on the union of their boxes (mask box plus the margin's reach), which
    holds every voxel of the result: identical to growing the whole crop.
    """
    device = targets.group_masks.device
    items = torch.tensor([g.item for g in plans], dtype=torch.long, device=device)
    slots = torch.tensor([g.slot for g in plans], dtype=torch.long, device=device)
    channels = torch.tensor([g.channel for g in plans], dtype=torch.long, device=device)
    masks = targets.group_masks[items, slots]
    shape = tuple(masks.shape[-3:])
    boxes = [
        None if g.box is None else grow_box(g.box, ball_halves(margin_mm, g.spacing_mm), shape) for g in plans
    ]
    grown = torch.zeros_like(masks)
    for b in sorted({g.item for g in plans}):
        rows = [i for i, g in enumerate(plans) if g.item == b]  # contiguous: plans are in (item, slot) order
        box = union_box([boxes[i] for i in rows])
        if box is None:
            continue
        index = (slice(rows[0], rows[-1] + 1), *box_slices(box))
        inner = [plans[i].box for i in rows if plans[i].box is not None]
        zero_margin = tuple(min(min(m[a][0] - box[a][0], box[a][1] - m[a][1]) for m in inner) for a in range(3))
        grown[index] = dilate_mm(masks[index], margin_mm, plans[rows[0]].spacing_mm, zero_margin)
    return GroupTensors(
        plans, items, channels, masks.float(), grown.float(), [g.spacing_mm for g in plans], boxes
    )


def _scale_box(box: Box | None, full: tuple[int, ...], shape: tuple[int, ...]) -> Box | None:
    """A box at resolution ``shape`` holding every output voxel that area-averages part of ``box`` at ``full``."""
    if box is None:
        return None
    out = []
    for (lo, hi), f, s in zip(box, full, shape):
        if f % s == 0:
            r = f // s
            out.append((lo // r, -(-hi // r)))
        else:  # adaptive pooling windows overlap: one voxel of slack on each side
            out.append((max(0, lo * s // f - 1), min(s, -(-hi * s // f) + 1)))
    return tuple(out)


def downsample_groups(groups: GroupTensors, shape: tuple[int, int, int]) -> GroupTensors:
    """Area-average the group masks to ``shape`` and scale the spacing by the size ratio."""
    full = groups.masks.shape[-3:]
    if tuple(full) == tuple(shape):
        return groups
    ratio = [f / s for f, s in zip(full, shape)]
    masks = area_downsample(groups.masks, shape)
    grown = area_downsample(groups.grown, shape)
    spacing = [tuple(s * r for s, r in zip(sp, ratio)) for sp in groups.spacing]
    boxes = [_scale_box(b, tuple(full), tuple(shape)) for b in groups.boxes]
    return dataclasses.replace(groups, masks=masks, grown=grown, spacing=spacing, boxes=boxes)


def _same_channel_others(groups: GroupTensors, index: int, state: GroupState) -> list[int]:
    """Other groups of the same item and channel in the given state."""
    g = groups.plans[index]
    return [
        j for j, h in enumerate(groups.plans)
        if j != index and h.item == g.item and h.channel == g.channel and h.state == state
    ]


def report_volume_loss(
    probabilities: torch.Tensor, groups: GroupTensors, cfg: LossConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Volume Loss averaged over the groups that are actually supervised.

    Lesion groups compare the soft volume inside the grown mask with the reported band; lesion-free groups get
    the zero-volume term on their (ungrown) mask minus any lesion group of the same channel. Groups whose mask is
    empty in the crop are not counted.

    Args:
        probabilities: float (G, D, H, W) lesion probabilities of each group's channel.
        groups: group masks at the same resolution.
        cfg: loss configuration.

    Returns:
        ``(loss, n_entries)``: scalar mean loss (0 when nothing is supervised) and the float count of entries.
    """
    weights, lower, upper, smooth, factor = [], [], [], [], []
    for i, g in enumerate(groups.plans):
        factor.append(cfg.report_factor(g.channel))
        voxel_mm3 = math.prod(groups.spacing[i])
        if g.state == GroupState.LESIONS:
            lo, hi = volume_bounds_mm3(
                [t.volume_mm3 for t in g.known_tumors], g.n_unknown_size, g.count_is_lower_bound,
                cfg.volume_tolerance, cfg.presence_min_diameter_mm,
            )
            weights.append(groups.grown[i])
        else:
            lo, hi = 0.0, 0.0
            w = groups.masks[i]
            others = _same_channel_others(groups, i, GroupState.LESIONS)
            if others:
                w = w * (1.0 - groups.grown[others].amax(0))
            weights.append(w)
        lower.append(lo / voxel_mm3)
        upper.append(hi / voxel_mm3)
        smooth.append(cfg.volume_smooth_mm3 / voxel_mm3)
    if not weights:
        zero = probabilities.sum() * 0.0
        return zero, zero.detach()
    w = torch.stack(weights)
    predicted = soft_volume(probabilities, w)
    as_tensor = lambda x: torch.tensor(x, dtype=probabilities.dtype, device=probabilities.device)  # noqa: E731
    losses = volume_band_loss(predicted, as_tensor(lower), as_tensor(upper), as_tensor(smooth))
    present = (groups.masks.flatten(1).sum(1) > 0).to(probabilities.dtype)
    n = present.sum()
    if any(f != 1.0 for f in factor):
        losses = losses * as_tensor(factor)
    return (losses * present).sum() / n.clamp_min(1.0), n.detach()


def _ball_params(cfg: LossConfig) -> BallParams:
    return BallParams(
        search_margin=cfg.ball_search_margin,
        positive_fraction=cfg.ball_positive_fraction,
        guard_fraction=cfg.ball_guard_fraction,
        ignore_band_mm=cfg.ball_ignore_band_mm,
        rank_decay=cfg.ball_rank_decay,
        kernel_sigma_factor=cfg.ball_kernel_sigma_factor,
    )


def _sizes_to_place(g: GroupPlan, cfg: LossConfig) -> tuple[list[BallSize], list[int]]:
    """Sizes (largest first) and tumour slots (-1 for count-only lesions without a row) placed for a group."""
    sizes = [BallSize(t.volume_mm3, max(t.diameters_mm)) for t in g.known_tumors]
    slots = [t.slot for t in g.known_tumors]
    if cfg.count_prior_diameter_mm is not None and g.n_unknown_size > 0:
        d = cfg.count_prior_diameter_mm
        unknown_rows = [t.slot for t in g.tumors if not t.size_known]
        for j in range(g.n_unknown_size):
            sizes.append(BallSize(math.pi * d**3 / 6.0, d))
            slots.append(unknown_rows[j] if j < len(unknown_rows) else -1)
    return sizes, slots


def _placement_prior(g: GroupPlan, organ: torch.Tensor, image_hu: torch.Tensor | None, cfg: LossConfig):
    """Attenuation prior of a group's placement map, when its placed tumours share a hypo / hyper report."""
    if not cfg.ball_attenuation_prior or image_hu is None:
        return None
    codes = {int(t.attenuation) for t in g.known_tumors}
    if len(codes) != 1:
        return None
    lo, hi = cfg.attenuation_hu_window
    return placement_prior(image_hu[g.item, 0].clamp(lo, hi), organ, codes.pop(), cfg.attenuation_margin_hu,
                           cfg.ball_prior_softness_hu, cfg.ball_prior_min_tissue_hu)


@dataclasses.dataclass(frozen=True)
class BallOutput:
    """Ball and Attenuation Losses of one head (scalars) plus per-tumour status (B, T) and the placements."""

    bce: torch.Tensor
    dice: torch.Tensor
    attenuation: torch.Tensor
    n_groups: int
    n_attenuation: int
    status: torch.Tensor
    placements: dict[int, object]


def report_ball_losses(
    logits: torch.Tensor,
    groups: GroupTensors,
    cfg: LossConfig,
    batch_size: int,
    num_tumor_slots: int,
    image_hu: torch.Tensor | None = None,
) -> BallOutput:
    """Ball Loss (and Attenuation Loss when ``image_hu`` is given) for every lesion group of the batch.

    Args:
        logits: float (G, D, H, W) lesion logits of each group's channel (differentiable).
        groups: group masks at the same resolution.
        cfg: loss configuration.
        batch_size: B of the batch (for the status tensor).
        num_tumor_slots: T of the batch (for the status tensor).
        image_hu: optional float (B, 1, D, H, W) raw HU at the same resolution.

    Returns:
        :class:`BallOutput`; losses are means over the supervised groups / tumours (0 when none).
    """
    device = logits.device
    params = _ball_params(cfg)
    probabilities = torch.sigmoid(logits)
    detached = probabilities.detach()
    statuses: dict[tuple[int, int], torch.Tensor] = {}
    placements: dict[int, object] = {}
    for i, g in enumerate(groups.plans):
        if g.state != GroupState.LESIONS:
            continue
        sizes, slots = _sizes_to_place(g, cfg)
        region = groups.grown[i] >= 0.5
        box = groups.boxes[i] if groups.boxes[i] is not None else ((0, 0),) * 3
        search = detached[i]
        prior = _placement_prior(g, groups.masks[i] >= 0.5, image_hu, cfg)
        if prior is not None:
            trust = cfg.ball_network_trust  # 1 and 0 skip pow: 1 stays the reference's product bit for bit
            search = search * prior if trust == 1 else prior if trust == 0 else search.pow(trust) * prior
        placement = place_tumors(search, region, sizes, groups.spacing[i], params, box=box)
        placements[i] = (placement, slots)
        nonempty = groups.masks[i].sum() > 0
        for j, slot in enumerate(slots):
            if slot >= 0:
                statuses[(g.item, slot)] = torch.where(nonempty, placement.status[j], int(TumorStatus.GROUP_EMPTY))
        for t in g.tumors:
            if (g.item, t.slot) not in statuses:
                statuses[(g.item, t.slot)] = torch.tensor(int(TumorStatus.PRESENCE_ONLY), device=device)

    # The loss terms only involve voxels of the grown group mask: computed on its box.
    bce_terms, dice_terms, att_terms = [], [], []
    for i, (placement, slots) in placements.items():
        g = groups.plans[i]
        sl = box_slices(groups.boxes[i]) if groups.boxes[i] is not None else (slice(None),) * 3
        region = groups.grown[i][sl] >= 0.5
        exact = g.fully_sized or (cfg.count_prior_diameter_mm is not None and not g.count_is_lower_bound)
        guard_all = placement.guard[sl].clone()
        for j in _same_channel_others(groups, i, GroupState.LESIONS):
            guard_all |= groups.masks[j][sl] >= 0.5
            if j in placements:
                guard_all |= placements[j][0].guard[sl]
        positive = placement.positive[sl]
        negative = (region & ~guard_all).float() if exact else torch.zeros_like(positive)
        if not slots and not exact:
            continue
        crop_voxels = logits[i].numel() if cfg.ball_normalization(g.channel) == "crop" else None
        bce, dice = ball_loss_terms(logits[i][sl], positive, placement.weight[sl], negative, crop_voxels)
        f = cfg.report_factor(g.channel)
        bce_terms.append(bce if f == 1.0 else bce * f)
        dice_terms.append(dice if f == 1.0 else dice * f)
        if image_hu is None:
            continue
        att_slots = [(j, t) for j, t in enumerate(slots) if t >= 0]
        codes = {t.slot: t.attenuation for t in g.tumors}
        att_slots = [(j, codes[t]) for j, t in att_slots if codes[t] != 0]
        if not att_slots:
            continue
        lo, hi = cfg.attenuation_hu_window
        hu = image_hu[g.item, 0][sl].clamp(lo, hi)
        core = placement.core[sl]
        regions = torch.stack([(core == j + 1).float() for j, _ in att_slots])
        tissue = ((groups.masks[i][sl] >= 0.5) & ~guard_all).float()
        delta = tumor_organ_contrast(probabilities[i][sl], hu, regions, tissue)
        codes_t = torch.tensor([c for _, c in att_slots], dtype=torch.long, device=device)
        att = contrast_penalty(delta, codes_t, cfg.attenuation_margin_hu, cfg.attenuation_scale_hu)
        att_terms.append(att if f == 1.0 else att * f)

    zero = logits.sum() * 0.0
    mean = lambda xs: torch.stack(xs).mean() if xs else zero  # noqa: E731
    att = torch.cat(att_terms).mean() if att_terms else zero
    status = torch.full((batch_size, num_tumor_slots), int(TumorStatus.PADDING), dtype=torch.long, device=device)
    for g in groups.plans:
        for t in g.tumors:
            status[g.item, t.slot] = statuses.get((g.item, t.slot), int(TumorStatus.NOT_SUPERVISED))
    return BallOutput(
        bce=mean(bce_terms),
        dice=mean(dice_terms),
        attenuation=att,
        n_groups=len(bce_terms),
        n_attenuation=sum(len(a) for a in att_terms),
        status=status,
        placements=placements,
    )


def _head_index(index: int, num_heads: int) -> int | None:
    resolved = index + num_heads if index < 0 else index
    return resolved if 0 <= resolved < num_heads else None


class ReportSupervisionLoss(nn.Module):
    """Masked BCE + Dice on every head plus the report losses (Volume, Ball, Attenuation).

    ``total = sum_j a_j * [seg_weight * (BCE_j + seg_dice_weight * Dice_j)]
    + report_weight * sum_j a_j * [volume_weight * Vol_j (j in volume_heads)
    + ball_bce_weight * BallBCE_j + ball_dice_weight * BallDice_j + attenuation_weight * Att_j (j in ball_heads)]``
    with head weights ``a_j`` from ``cfg.deep_supervision_weights``.
    """

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(
        self,
        outputs: torch.Tensor | list[torch.Tensor],
        labels: torch.Tensor,
        unknown_mask: torch.Tensor,
        has_mask: torch.Tensor,
        targets: ReportTargets,
        image_hu: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached components.

        Args:
            outputs: logits (B, C, D, H, W) or a list of heads, the first at full resolution, the others at
                lower resolutions (any size; targets are downsampled to them).
            labels: float or bool (B, C, D, H, W) multi-label voxel targets.
            unknown_mask: bool (B, C, D, H, W), True = do not supervise this voxel / channel with the
                segmentation loss (grown by ``unknown_dilation_mm``).
            has_mask: bool (B,) whether the CT has voxel annotations.
            targets: report targets of the batch (full resolution).
            image_hu: optional float (B, 1, D, H, W) raw HU (needed for the Attenuation Loss).

        Returns:
            ``(total, components)``: components hold detached scalars ``seg_bce``, ``seg_dice``, ``volume``,
            ``ball_bce``, ``ball_dice``, ``attenuation``, ``total``, counts ``n_volume``, ``n_ball_groups``,
            ``n_attenuation``, and ``tumor_status`` long (B, T) with :class:`TumorStatus` codes.
        """
        cfg = self.cfg
        heads = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        head_w = cfg.head_weights(len(heads))
        batch = heads[0].shape[0]
        device = heads[0].device
        # One host read of small tensors: report plan, spacing, mask flags and which channels are (un)known.
        coverage_dev = coverage_codes(unknown_mask.bool()) if cfg.seg_weight > 0 else None
        occupancy_dev = label_occupancy(labels) if cfg.seg_weight > 0 else None
        # A channel whose report losses are off this step (before its start) has no group: nothing is supervised.
        plans = [g for g in plan_groups(targets, cfg.lesion_channels) if cfg.report_factor(g.channel) > 0]
        spacing_list = [tuple(s) for s in targets.spacing_mm.cpu().tolist()]
        has_mask_list = has_mask.bool().cpu().tolist()
        coverage = coverage_dev.cpu().tolist() if coverage_dev is not None else None
        occupied = occupancy_dev.cpu().tolist() if occupancy_dev is not None else None
        lesion = set(cfg.lesion_channels)
        pos_weight = None if cfg.lesion_pos_weight == 1.0 else [
            cfg.lesion_pos_weight if c in lesion else 1.0 for c in range(heads[0].shape[1])]
        report_on = cfg.report_weight > 0 and bool(plans)
        volume_heads = {_head_index(i, len(heads)) for i in cfg.volume_heads} - {None} if report_on else set()
        ball_heads = {_head_index(i, len(heads)) for i in cfg.ball_heads} - {None} if report_on else set()
        ball_heads = {j for j in ball_heads if any(g.state == GroupState.LESIONS for g in plans)}
        groups = build_group_tensors(targets, plans, cfg.group_margin_mm) if report_on else None

        # Unknown voxels (plus margin) and report-only CTs gate the segmentation loss.
        known = None
        label_rows = None  # (item, channel) rows whose labels the segmentation loss reads at lower resolutions
        if coverage is not None:
            skip = frozenset() if cfg.seg_on_report_cts else frozenset(b for b, m in enumerate(has_mask_list) if not m)
            known = known_from_unknown(unknown_mask.bool(), coverage, cfg.unknown_dilation_mm, spacing_list, skip)
            n_ch = len(coverage[0]) if coverage else 0
            label_rows = [
                b * n_ch + c for b, row in enumerate(known.coverage) for c, code in enumerate(row)
                if code != Coverage.NONE and occupied[b][c]
            ]

        # Not heads[0].sum() * 0: its expanded zero gradient would cost a full-size addition in backward.
        zero = heads[0].new_zeros(())
        total = zero
        parts = {k: zero.detach() for k in ("seg_bce", "seg_dice", "volume", "ball_bce", "ball_dice", "attenuation")}
        counts = {"n_volume": zero.detach(), "n_ball_groups": zero.detach(), "n_attenuation": zero.detach()}
        status = torch.full(
            (batch, targets.num_tumors), int(TumorStatus.NOT_SUPERVISED), dtype=torch.long, device=device
        )
        status[targets.tumor_group < 0] = int(TumorStatus.PADDING)
        for j, (logits, a) in enumerate(zip(heads, head_w)):
            shape = tuple(logits.shape[-3:])
            need_report = j in volume_heads or j in ball_heads
            select = (groups.items, groups.channels) if need_report else None
            if cfg.seg_weight > 0:
                lab = area_downsample(labels, shape, label_rows)
                bce, dice, selected = masked_bce_dice(logits, lab, known.downsample(shape), select, occupied,
                                                      pos_weight)
                del lab
                total = total + a * cfg.seg_weight * (bce + cfg.seg_dice_weight * dice)
                parts["seg_bce"] = parts["seg_bce"] + a * bce.detach()
                parts["seg_dice"] = parts["seg_dice"] + a * dice.detach()
            elif need_report:
                selected = logits[groups.items, groups.channels]
            if not need_report:
                continue
            head_groups = downsample_groups(groups, shape)
            if j in volume_heads:
                vol, n = report_volume_loss(torch.sigmoid(selected), head_groups, cfg)
                total = total + a * cfg.report_weight * cfg.volume_weight * vol
                parts["volume"] = parts["volume"] + a * vol.detach()
                counts["n_volume"] = torch.maximum(counts["n_volume"], n)
            if j in ball_heads:
                hu = None
                if image_hu is not None and (cfg.attenuation_weight > 0 or cfg.ball_attenuation_prior):
                    hu = image_hu if tuple(image_hu.shape[-3:]) == shape else area_downsample(image_hu, shape)
                out = report_ball_losses(selected, head_groups, cfg, batch, targets.num_tumors, hu)
                report = (
                    cfg.ball_bce_weight * out.bce + cfg.ball_dice_weight * out.dice
                    + cfg.attenuation_weight * out.attenuation
                )
                total = total + a * cfg.report_weight * report
                parts["ball_bce"] = parts["ball_bce"] + a * out.bce.detach()
                parts["ball_dice"] = parts["ball_dice"] + a * out.dice.detach()
                parts["attenuation"] = parts["attenuation"] + a * out.attenuation.detach()
                counts["n_ball_groups"] = torch.maximum(counts["n_ball_groups"], zero.detach() + out.n_groups)
                counts["n_attenuation"] = torch.maximum(counts["n_attenuation"], zero.detach() + out.n_attenuation)
                if j == min(ball_heads):
                    status = torch.where(out.status != int(TumorStatus.PADDING), out.status, status)
        if not total.requires_grad and heads[0].requires_grad:
            total = total + heads[0].flatten()[0] * 0.0  # nothing supervised: still a differentiable zero
        components = {**parts, **counts, "total": total.detach(), "tumor_status": status}
        return total, components


class _SelectChannels(torch.autograd.Function):
    """``logits[items, channels]`` whose gradient is a zero tensor with pages touched only where it is non-zero.

    The standalone losses see only a few channels of a (B, C, D, H, W) output; an ordinary index backward would
    write a full-size zero gradient first (:func:`train.losses.buffers.new_tensor`).
    """

    @staticmethod
    def forward(ctx, logits, items, channels):  # type: ignore[override]
        ctx.save_for_backward(items, channels)
        ctx.shape = logits.shape
        return logits.detach()[items, channels]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        items, channels = ctx.saved_tensors
        out = new_tensor(ctx.shape, grad.dtype, grad.device, zero=True)
        out.index_put_((items, channels), grad, accumulate=True)
        return out, None, None


def _select_channels(logits: torch.Tensor, items: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    return _SelectChannels.apply(logits, items, channels) if logits.requires_grad else logits[items, channels]


class VolumeLoss(nn.Module):
    """Volume Loss alone on one head's logits (B, C, D, H, W) at full resolution; returns ``(loss, n_entries)``."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(self, logits: torch.Tensor, targets: ReportTargets) -> tuple[torch.Tensor, torch.Tensor]:
        plans = plan_groups(targets, self.cfg.lesion_channels)
        if not plans:
            zero = logits.sum() * 0.0
            return zero, zero.detach()
        groups = build_group_tensors(targets, plans, self.cfg.group_margin_mm)
        probabilities = torch.sigmoid(_select_channels(logits, groups.items, groups.channels))
        return report_volume_loss(probabilities, groups, self.cfg)


class BallLoss(nn.Module):
    """Ball Loss (and, with ``image_hu``, the Attenuation Loss) on logits (B, C, D, H, W) at full resolution.

    Returns the :class:`BallOutput`; ``bce``, ``dice`` and ``attenuation`` are scalar tensors.
    """

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(
        self, logits: torch.Tensor, targets: ReportTargets, image_hu: torch.Tensor | None = None
    ) -> BallOutput:
        plans = plan_groups(targets, self.cfg.lesion_channels)
        if not plans:
            zero = logits.sum() * 0.0
            status = torch.where(targets.tumor_group < 0, int(TumorStatus.PADDING), int(TumorStatus.NOT_SUPERVISED))
            return BallOutput(zero, zero, zero, 0, 0, status, {})
        groups = build_group_tensors(targets, plans, self.cfg.group_margin_mm)
        selected = _select_channels(logits, groups.items, groups.channels)
        return report_ball_losses(selected, groups, self.cfg, targets.batch_size, targets.num_tumors, image_hu)


class AttenuationLoss(nn.Module):
    """Attenuation Loss alone (places the tumours like the Ball Loss); returns a scalar tensor."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.ball = BallLoss(cfg)

    def forward(self, logits: torch.Tensor, targets: ReportTargets, image_hu: torch.Tensor) -> torch.Tensor:
        return self.ball(logits, targets, image_hu).attenuation
