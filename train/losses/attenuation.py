"""Attenuation Loss: the reported hypo / iso / hyper-attenuation constrains the tumour-to-organ HU contrast.

For each placed tumour with a known attenuation, the probability-weighted mean HU inside its ranked core
(``sum p * HU / sum p``) is compared with the (1 - p)-weighted mean HU of the organ tissue outside every guard
region. Weighting by the prediction (rather than averaging over a fixed pseudo-mask) lets the gradient move
probability towards voxels of the right brightness inside the candidate region and away from the wrong ones.
HU are clipped to a soft-tissue window so that fat, air or bone at the border cannot satisfy "hypo" or "hyper"
on their own.
"""

from __future__ import annotations

import torch

from train.losses.targets import Attenuation

_EPS = 1e-3


def contrast_penalty(delta_hu: torch.Tensor, attenuation: torch.Tensor, margin_hu: float, scale_hu: float):
    """Penalty of a tumour-minus-organ contrast given the reported attenuation.

    hypo: ``relu(delta + margin)``; hyper: ``relu(margin - delta)``; iso: ``relu(|delta| - margin)``; all divided
    by ``scale_hu``; unknown: 0.

    Args:
        delta_hu: float (N,) contrast in HU.
        attenuation: long (N,) :class:`Attenuation` codes.
        margin_hu: required contrast (hypo / hyper) or allowed contrast (iso), HU.
        scale_hu: HU per unit of loss.

    Returns:
        float (N,) penalties.
    """
    hypo = torch.relu(delta_hu + margin_hu)
    hyper = torch.relu(margin_hu - delta_hu)
    iso = torch.relu(delta_hu.abs() - margin_hu)
    zero = torch.zeros_like(delta_hu)
    out = torch.where(attenuation == Attenuation.HYPO, hypo, zero)
    out = torch.where(attenuation == Attenuation.HYPER, hyper, out)
    out = torch.where(attenuation == Attenuation.ISO, iso, out)
    return out / scale_hu


def tumor_organ_contrast(
    probabilities: torch.Tensor, hu: torch.Tensor, tumor_regions: torch.Tensor, organ_tissue: torch.Tensor
) -> torch.Tensor:
    """Soft mean HU of each tumour region minus the soft mean HU of the organ tissue.

    Args:
        probabilities: float (D, H, W) lesion probabilities (differentiable).
        hu: float (D, H, W) HU, already clipped to the window.
        tumor_regions: float (N, D, H, W) {0, 1} candidate region of each tumour.
        organ_tissue: float (D, H, W) {0, 1} organ voxels away from every tumour.

    Returns:
        float (N,) contrast in HU.
    """
    # Every sum is linear in p, so each one is a dot product with a fixed vector (one pass, one pass back).
    p = probabilities.reshape(-1)
    regions = tumor_regions.reshape(tumor_regions.shape[0], -1).to(p.dtype)
    hu_flat = hu.reshape(-1).to(p.dtype)
    tissue = organ_tissue.reshape(-1).to(p.dtype)
    mean_t = (regions * hu_flat) @ p / (regions @ p + _EPS)
    q = 1.0 - p  # elementwise, not sum(tissue) - tissue @ p: no cancellation when p is close to 1
    mean_o = (tissue * hu_flat) @ q / (tissue @ q + _EPS)
    return mean_t - mean_o


def placement_prior(
    hu: torch.Tensor, organ: torch.Tensor, attenuation: int, margin_hu: float, softness_hu: float,
    min_tissue_hu: float = -30.0,
) -> torch.Tensor | None:
    """How well each voxel's HU fits a reported hypo- or hyper-attenuating tumour, in (0, 1).

    ``sigmoid((organ_median - HU - margin) / softness)`` for hypo, the mirror image for hyper; the organ median
    is taken over ``organ``. Times ``sigmoid((HU - min_tissue_hu) / softness)`` and zero outside ``organ``: the
    grown placement region reaches into fat, air and neighbouring organs, which can be darker or brighter than
    this organ (a liver next to a kidney looks "hypo"). The Ball Loss multiplies its placement map by the prior,
    so an immature network's hot spots in ordinary tissue are not taken for the tumour.

    Args:
        hu: float (D, H, W) HU.
        organ: bool (D, H, W) organ / sub-segment voxels: the reference HU and where the prior is non-zero.
        attenuation: :class:`Attenuation` code shared by the tumours placed.
        margin_hu: contrast (HU) at which the prior is 0.5.
        softness_hu: HU per unit of logit (smaller: sharper).
        min_tissue_hu: darker voxels are not soft tissue (fat, air) and get a prior near 0.

    Returns:
        float (D, H, W) (zero for an empty organ), or None when the attenuation carries no direction (unknown, iso).
    """
    if attenuation not in (Attenuation.HYPO, Attenuation.HYPER):
        return None
    # nanmedian over the masked volume instead of hu[organ]: no host sync on a GPU; an empty organ gives NaN -> 0.
    reference = torch.where(organ, hu, torch.nan).nanmedian()
    contrast = hu - reference
    if attenuation == Attenuation.HYPO:
        contrast = -contrast
    fit = torch.sigmoid((contrast - margin_hu) / softness_hu) * torch.sigmoid((hu - min_tissue_hu) / softness_hu)
    return torch.nan_to_num(fit * organ, nan=0.0)
