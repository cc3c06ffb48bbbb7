"""Tiny synthetic volumes shared by the loss tests."""

from __future__ import annotations

import torch


def ellipsoid(shape, center, radii_mm, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """bool mask of a physical ellipsoid (radii in mm) centred at a voxel index."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    dist = sum(((g - c) * s / r) ** 2 for g, c, r, s in zip(grids, center, radii_mm, spacing))
    return dist <= 1.0


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return 2.0 * (a & b).sum().item() / max(a.sum().item() + b.sum().item(), 1)
