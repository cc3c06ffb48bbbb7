"""Volume Loss: soft predicted lesion volume in a reported organ / sub-segment against the reported volume."""

from __future__ import annotations

import math

import torch


def volume_band_loss(
    predicted_vox: torch.Tensor, lower_vox: torch.Tensor, upper_vox: torch.Tensor, smooth_vox: torch.Tensor
) -> torch.Tensor:
    """Log-ratio loss with a zero-loss band ``[lower, upper]`` (all in voxels).

    ``relu(log((lower + E) / (P + E))) + relu(log((P + E) / (upper + E)))``: relative errors count the same for
    every tumour size above ``E``, the per-voxel gradient is at most ``1 / E`` (no blow-up at P = 0), and gross
    over-segmentation keeps a ``1 / P`` gradient instead of saturating. ``upper = inf`` gives a lower bound only
    (presence); ``lower = upper = 0`` gives the zero-volume term ``log(1 + P / E)``.

    Args:
        predicted_vox: float (N,) soft predicted volume P.
        lower_vox: float (N,) lower edge of the band.
        upper_vox: float (N,) upper edge (may be ``inf``).
        smooth_vox: float (N,) small-tumour constant E (> 0).

    Returns:
        float (N,) non-negative losses.
    """
    log_p = torch.log(predicted_vox + smooth_vox)
    under = torch.relu(torch.log(lower_vox + smooth_vox) - log_p)
    over = torch.relu(log_p - torch.log(upper_vox + smooth_vox))
    return under + over


def soft_volume(probabilities: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Soft volume ``sum_v p_v w_v`` in voxels.

    Args:
        probabilities: float (N, D, H, W) sigmoid probabilities.
        weights: float (N, D, H, W) voxel weights (1 inside the region; fractional after area downsampling).

    Returns:
        float (N,).
    """
    return (probabilities * weights).flatten(1).sum(1)


def volume_bounds_mm3(
    known_volumes_mm3: list[float],
    n_unknown_size: int,
    count_is_lower_bound: bool,
    tolerance: float,
    presence_min_diameter_mm: float,
) -> tuple[float, float]:
    """Band ``(lower, upper)`` in mm3 for the total lesion volume of one group.

    Known sizes contribute ``(1 -/+ tolerance) * V``; each lesion of unknown size (or beyond a reported count)
    adds a sphere of ``presence_min_diameter_mm`` to the lower edge and removes the upper edge, as does an
    "at least" count.
    """
    total = sum(known_volumes_mm3)
    presence = n_unknown_size * math.pi * presence_min_diameter_mm**3 / 6.0
    lower = (1.0 - tolerance) * total + presence
    unbounded = n_unknown_size > 0 or count_is_lower_bound
    upper = float("inf") if unbounded else (1.0 + tolerance) * total
    return lower, upper
