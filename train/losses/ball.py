"""Ball Loss: turn reported tumour sizes into a pseudo-mask where the prediction is most confident.

For each reported tumour of a group (largest first) an equal-volume ball is correlated with the current
probabilities (FFT, no gradient); its best position defines a placement ball of diameter
``(1 + margin) * largest diameter``; the most confident voxels inside it become the positives, a slightly larger
top set grown by a band is ignored, and the rest of the grown organ / sub-segment is pushed to zero. The placed
tumour (its ball and its ranked voxels) is removed before the next tumour is placed, so pseudo-masks never overlap.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from train.losses.morphology import Box, Spacing, box_slices, dilate_mm, ellipsoid_kernel, fft_correlate, mask_box
from train.losses.plan import TumorStatus

_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class BallSize:
    """Size of one tumour to place: volume in mm3 and its largest diameter in mm."""

    volume_mm3: float
    max_diameter_mm: float


@dataclasses.dataclass(frozen=True)
class BallParams:
    """Ball Loss constants (see :class:`train.losses.config.LossConfig` for meanings and defaults)."""

    search_margin: float = 0.2
    positive_fraction: float = 0.5
    guard_fraction: float = 1.25
    ignore_band_mm: float = 3.0
    rank_decay: float = 0.5
    kernel_sigma_factor: float | None = 1.5


@dataclasses.dataclass(frozen=True)
class Placement:
    """Pseudo-masks of one group, all (D, H, W).

    Attributes:
        positive: float {0, 1}: voxels with target 1 (union over tumours).
        weight: float: rank weights on the positives (mean 1 per tumour), 0 elsewhere.
        core: long: ``i + 1`` on the top ``guard_fraction * N`` voxels of tumour i (its positives are a subset).
        guard: bool: cores grown by the ignore band (never pushed to zero).
        status: long (n_tumours,): :class:`TumorStatus` codes.
    """

    positive: torch.Tensor
    weight: torch.Tensor
    core: torch.Tensor
    guard: torch.Tensor
    status: torch.Tensor


def ball_score_map(probabilities: torch.Tensor, diameter_mm: float, spacing: Spacing, sigma_factor: float | None):
    """Correlation of probabilities with a physical ball: how well a ball of this size fits at each centre.

    Args:
        probabilities: float (D, H, W), restricted to the searchable region (zero elsewhere).
        diameter_mm: ball diameter in mm.
        spacing: voxel spacing (mm) along D, H, W.
        sigma_factor: Gaussian centre weighting of the kernel (None = flat).

    Returns:
        float (D, H, W) scores (kernel-weighted sums of probabilities).
    """
    shape = probabilities.shape
    kernel = ellipsoid_kernel(
        diameter_mm, spacing, max_half=tuple(n - 1 for n in shape), sigma_factor=sigma_factor,
        device=probabilities.device,
    )
    return fft_correlate(probabilities, kernel, even=True)


def _window(center: torch.Tensor, shape, spacing: Spacing, radius_mm: float):
    """Box around ``center`` (long (3,)) holding a ball of ``radius_mm`` plus room to grow, inside the volume.

    Returns the flat volume indices (wd, wh, ww) of the box and its squared physical distances to the centre
    (mm2). Sizes are known on the host and the start is clamped on the device, so no synchronisation is needed.
    """
    flat = None
    dist2 = None
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        w = min(n, 2 * (math.ceil(1.25 * radius_mm / s) + 2) + 1)
        start = (center[axis] - w // 2).clamp(0, n - w)
        coord = start + torch.arange(w, device=center.device)
        d2 = ((coord - center[axis]).float() * s) ** 2
        stride = math.prod(shape[axis + 1 :])
        view = [1, 1, 1]
        view[axis] = w
        flat = coord.view(view) * stride if flat is None else flat + coord.view(view) * stride
        dist2 = d2.view(view) if dist2 is None else dist2 + d2.view(view)
    return flat, dist2


@torch.no_grad()
def place_tumors(
    probabilities: torch.Tensor,
    region: torch.Tensor,
    sizes: list[BallSize],
    spacing: Spacing,
    params: BallParams,
    box: Box | None = None,
) -> Placement:
    """Place the reported tumours of one group on the current prediction.

    The score map covers the box of the region (it is zero outside, and only region voxels can be centres, so
    this equals the whole-crop map); ranking and suppression run in a window around the chosen centre, placed in
    the whole crop exactly as without the box.

    Args:
        probabilities: float (D, H, W) sigmoid probabilities of the group's lesion channel (detached).
        region: bool (D, H, W) grown organ / sub-segment where tumours may lie.
        sizes: tumours to place, largest first.
        spacing: voxel spacing (mm) along D, H, W.
        params: Ball Loss constants.
        box: ``(start, stop)`` per axis holding every voxel of ``region`` (an empty range if it is empty); None
            = computed from ``region`` (one host read).

    Returns:
        The group's :class:`Placement`.
    """
    shape = tuple(probabilities.shape)
    device = probabilities.device
    if box is None:
        box = mask_box(region)
    box_sl = box_slices(box) if box is not None and all(hi > lo for lo, hi in box) else None
    voxel_mm3 = math.prod(spacing)
    diag_mm = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))
    numel = probabilities.numel()
    positive = torch.zeros(numel, device=device)
    weight = torch.zeros(numel, device=device)
    core = torch.zeros(numel, dtype=torch.long, device=device)
    guard = torch.zeros(numel, dtype=torch.bool, device=device)
    free = region.clone().flatten()
    free3 = free.view(shape)
    prob_flat = probabilities.flatten()
    statuses = []
    for i, size in enumerate(sizes):
        n_vox = max(1, round(size.volume_mm3 / voxel_mm3))
        n_pos = max(1, round(params.positive_fraction * n_vox))
        n_core = max(n_pos, round(params.guard_fraction * n_vox))
        eq_diameter = (6.0 * size.volume_mm3 / math.pi) ** (1.0 / 3.0)
        place_radius = 0.5 * (1.0 + params.search_margin) * max(size.max_diameter_mm, eq_diameter)

        if box_sl is not None:
            free_box = free3[box_sl]
            q = probabilities[box_sl] * free_box
            score = ball_score_map(q, eq_diameter, spacing, params.kernel_sigma_factor)
            local = torch.where(free_box, score, float("-inf")).flatten().argmax()
            bh, bw = q.shape[1], q.shape[2]
            offset = torch.tensor([lo for lo, _ in box], device=device)
            center = torch.stack([local // (bh * bw), (local // bw) % bh, local % bw]) + offset
        else:  # nothing free anywhere: every ranked voxel is invalid, wherever the window is
            center = torch.zeros(3, dtype=torch.long, device=device)
        flat, dist2 = _window(center, shape, spacing, place_radius)
        window_shape = flat.shape
        flat, dist2 = flat.flatten(), dist2.flatten()
        free_w = free[flat]
        # Ranking key: inside the placement ball by probability (2 + p); if the ball holds too few free voxels
        # the mask grows to the nearest free voxels of the box (0..1); taken / outside-region voxels: -1.
        key = torch.where(dist2 <= place_radius**2, prob_flat[flat] + 2.0, 1.0 - torch.sqrt(dist2) / (diag_mm + 1.0))
        key = torch.where(free_w, key, -1.0)
        k = min(n_core, key.numel())
        top = torch.topk(key, k, sorted=True)
        valid = top.values > 0
        n_pos_w = min(n_pos, k)
        last = n_pos_w - 1
        if n_pos_w < n_pos:
            status = torch.tensor(int(TumorStatus.TRUNCATED), device=device)
        else:
            status = torch.where(
                ~valid[last],
                int(TumorStatus.TRUNCATED),
                torch.where(top.values[last] >= 2.0, int(TumorStatus.PLACED), int(TumorStatus.GROWN)),
            )
        statuses.append(status)

        chosen = flat[top.indices]
        pos_valid = valid[:n_pos_w].float()
        ranks = torch.arange(n_pos_w, device=device, dtype=torch.float32)
        w = params.rank_decay ** (ranks / max(n_pos_w - 1, 1)) * pos_valid
        w = w * (pos_valid.sum() / w.sum().clamp_min(_EPS))
        positive.scatter_add_(0, chosen[:n_pos_w], pos_valid)
        weight.scatter_add_(0, chosen[:n_pos_w], w)
        core.scatter_reduce_(0, chosen, valid.long() * (i + 1), reduce="amax")
        # Suppress the placed tumour (its equal-volume ball and its ranked voxels) before the next one.
        core_w = core[flat] == i + 1
        free[flat] = free_w & ~((dist2 <= (0.5 * eq_diameter) ** 2) | core_w)
        # The ignored band around the core, grown inside the box (the box leaves room beyond the ball).
        guard[flat] |= dilate_mm(core_w.view(window_shape), params.ignore_band_mm, spacing).flatten()

    core = core.view(shape)
    guard = guard.view(shape)
    status = torch.stack(statuses) if statuses else torch.zeros(0, dtype=torch.long, device=device)
    return Placement(positive.view(shape), weight.view(shape), core, guard, status)


class _BallTerms(torch.autograd.Function):
    """Fused forward / hand-written backward of :func:`ball_loss_terms` (one softplus, one sigmoid, dot products)."""

    @staticmethod
    def forward(ctx, logits, positive, weight, negative, bce_voxels):  # type: ignore[override]
        with torch.no_grad():
            z = logits.reshape(-1)
            pos, w, neg = positive.reshape(-1), weight.reshape(-1), negative.reshape(-1)
            if bce_voxels is None:
                n_pos = pos.sum().clamp_min(1.0)
                n_neg = neg.sum().clamp_min(1.0)
            else:
                n_pos = n_neg = torch.tensor(float(bce_voxels), dtype=z.dtype, device=z.device)
            has_pos = (pos.sum() > 0).to(z.dtype)
            sp = F.softplus(z)
            bce_neg = torch.dot(sp, neg) / n_neg
            bce_pos = torch.dot(sp.sub_(z), w) / n_pos  # softplus(-z) = softplus(z) - z
            p = torch.sigmoid(z)
            inter = torch.dot(p, pos)
            den = inter + torch.dot(p, neg) + pos.sum() + _EPS
            dice = (1.0 - (2.0 * inter + _EPS) / den) * has_pos
        ctx.save_for_backward(p, pos, w, neg, n_pos, n_neg, has_pos, inter, den)
        ctx.shape = logits.shape
        return bce_pos + bce_neg, dice

    @staticmethod
    @once_differentiable
    def backward(ctx, g_bce, g_dice):  # type: ignore[override]
        p, pos, w, neg, n_pos, n_neg, has_pos, inter, den = ctx.saved_tensors
        # d(1 - Dice)/dp = a_pos * positive + a_neg * negative, times sigmoid'(z) = p - p^2.
        a_neg = g_dice * has_pos * (2.0 * inter + _EPS) / (den * den)
        a_pos = a_neg - g_dice * has_pos * 2.0 / den
        grad = torch.addcmul(p, p, p, value=-1.0).mul_(torch.addcmul(pos * a_pos, neg, a_neg))
        grad.addcmul_(p - 1.0, w * (g_bce / n_pos))  # d softplus(-z)/dz = p - 1
        grad.addcmul_(p, neg * (g_bce / n_neg))  # d softplus(z)/dz = p
        return grad.view(ctx.shape), None, None, None, None


def ball_loss_terms(
    logits: torch.Tensor,
    positive: torch.Tensor,
    weight: torch.Tensor,
    negative: torch.Tensor,
    bce_voxels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE and soft Dice of one group's lesion logits against its pseudo-mask.

    Args:
        logits: float (D, H, W) lesion logits (differentiable).
        positive: float (D, H, W) {0, 1} positives.
        weight: float (D, H, W) rank weights on the positives.
        negative: float (D, H, W) {0, 1} voxels pushed to zero.
        bce_voxels: the BCE sums over positives (weighted) and negatives are both divided by this voxel count
            (the crop's: a masked mean, as in the reference); None = class-balanced, each sum divided by the size
            of its own set.

    Returns:
        ``(bce, dice)``: the BCE (0 for an empty set); ``1 - Dice`` on positives + negatives (0 when there are no
        positives).
    """
    if bce_voxels is not None and bce_voxels < 1:
        raise ValueError(f"bce_voxels must be at least 1, got {bce_voxels}")
    bce, dice = _BallTerms.apply(logits, positive, weight, negative, bce_voxels)
    return bce, dice
