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

from train.losses.morphology import Spacing, dilate_mm, ellipsoid_kernel, fft_correlate
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
    positive_fraction: float = 0.9
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
    return fft_correlate(probabilities, kernel)


def _axis_dist2(center: torch.Tensor, shape, spacing: Spacing) -> torch.Tensor:
    """Squared physical distance (mm2) of every voxel to ``center`` (long (3,) voxel index)."""
    parts = []
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        coord = torch.arange(n, device=center.device, dtype=torch.float32)
        parts.append(((coord - center[axis].float()) * s) ** 2)
    return parts[0][:, None, None] + parts[1][None, :, None] + parts[2][None, None, :]


@torch.no_grad()
def place_tumors(
    probabilities: torch.Tensor, region: torch.Tensor, sizes: list[BallSize], spacing: Spacing, params: BallParams
) -> Placement:
    """Place the reported tumours of one group on the current prediction.

    Args:
        probabilities: float (D, H, W) sigmoid probabilities of the group's lesion channel (detached).
        region: bool (D, H, W) grown organ / sub-segment where tumours may lie.
        sizes: tumours to place, largest first.
        spacing: voxel spacing (mm) along D, H, W.
        params: Ball Loss constants.

    Returns:
        The group's :class:`Placement`.
    """
    shape = probabilities.shape
    device = probabilities.device
    numel = probabilities.numel()
    voxel_mm3 = math.prod(spacing)
    diag_mm = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))
    positive = torch.zeros(numel, device=device)
    weight = torch.zeros(numel, device=device)
    core = torch.zeros(numel, dtype=torch.long, device=device)
    free = region.clone()
    statuses = []
    for i, size in enumerate(sizes):
        n_vox = max(1, round(size.volume_mm3 / voxel_mm3))
        n_pos = min(numel, max(1, round(params.positive_fraction * n_vox)))
        n_core = min(numel, max(n_pos, round(params.guard_fraction * n_vox)))
        eq_diameter = (6.0 * size.volume_mm3 / math.pi) ** (1.0 / 3.0)
        place_radius = 0.5 * (1.0 + params.search_margin) * max(size.max_diameter_mm, eq_diameter)

        q = probabilities * free
        score = ball_score_map(q, eq_diameter, spacing, params.kernel_sigma_factor)
        center_flat = torch.where(free, score, float("-inf")).flatten().argmax()
        center = torch.stack([center_flat // (shape[1] * shape[2]), (center_flat // shape[2]) % shape[1],
                              center_flat % shape[2]])
        dist2 = _axis_dist2(center, shape, spacing)
        in_ball = dist2 <= place_radius**2
        # Ranking key: inside the placement ball by probability (2 + p); if the ball holds too few free voxels
        # the mask grows to the nearest free voxels (0..1); never taken / outside-region voxels (-1).
        key = torch.where(in_ball, q + 2.0, 1.0 - torch.sqrt(dist2) / (diag_mm + 1.0))
        key = torch.where(free, key, -1.0).flatten()
        top = torch.topk(key, n_core, sorted=True)
        valid = top.values > 0
        last = n_pos - 1
        status = torch.where(
            ~valid[last],
            int(TumorStatus.TRUNCATED),
            torch.where(top.values[last] >= 2.0, int(TumorStatus.PLACED), int(TumorStatus.GROWN)),
        )
        statuses.append(status)

        pos_idx, pos_valid = top.indices[:n_pos], valid[:n_pos].float()
        ranks = torch.arange(n_pos, device=device, dtype=torch.float32)
        w = params.rank_decay ** (ranks / max(n_pos - 1, 1)) * pos_valid
        w = w * (pos_valid.sum() / w.sum().clamp_min(_EPS))
        positive.scatter_add_(0, pos_idx, pos_valid)
        weight.scatter_add_(0, pos_idx, w)
        core.scatter_reduce_(0, top.indices, valid.long() * (i + 1), reduce="amax")
        # Suppress the placed tumour (its equal-volume ball and its ranked voxels) before the next one.
        taken = (dist2 <= (0.5 * eq_diameter) ** 2) | (core.view(shape) == i + 1)
        free &= ~taken

    core = core.view(shape)
    guard = dilate_mm(core > 0, params.ignore_band_mm, spacing)
    status = torch.stack(statuses) if statuses else torch.zeros(0, dtype=torch.long, device=device)
    return Placement(positive.view(shape), weight.view(shape), core, guard, status)


def ball_loss_terms(
    logits: torch.Tensor, positive: torch.Tensor, weight: torch.Tensor, negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced BCE and soft Dice of one group's lesion logits against its pseudo-mask.

    Args:
        logits: float (D, H, W) lesion logits (differentiable).
        positive: float (D, H, W) {0, 1} positives.
        weight: float (D, H, W) rank weights on the positives.
        negative: float (D, H, W) {0, 1} voxels pushed to zero.

    Returns:
        ``(bce, dice)``: mean weighted BCE over positives plus mean BCE over negatives (each 0 when its set is
        empty); ``1 - Dice`` on positives + negatives (0 when there are no positives).
    """
    n_pos = positive.sum()
    n_neg = negative.sum()
    bce_pos = (F.softplus(-logits) * weight).sum() / n_pos.clamp_min(1.0)
    bce_neg = (F.softplus(logits) * negative).sum() / n_neg.clamp_min(1.0)
    p = torch.sigmoid(logits)
    inter = (p * positive).sum()
    den = (p * (positive + negative)).sum() + n_pos
    dice = (1.0 - (2.0 * inter + _EPS) / (den + _EPS)) * (n_pos > 0)
    return bce_pos + bce_neg, dice
