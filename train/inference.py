"""Network inference shared by the trainer (validation) and `rsuper predict`: autocast and sliding windows."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch


def autocast_context(amp: str, device: torch.device):
    """bf16 autocast per ``optim.amp`` (auto: only on CUDA)."""
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def predict_probabilities(
    net: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float,
    device: torch.device | str = "cpu",
    amp: str = "auto",
    sw_batch_size: int = 2,
) -> torch.Tensor:
    """Sigmoid probabilities of a whole volume by Gaussian-blended sliding windows.

    Args:
        net: network in eval mode returning logits (B, C, ...) for input (B, in, ...).
        image: float (in, X, Y, Z) normalised volume.
        roi_size: window size in voxels (the training patch size).
        overlap: fraction of window overlap (0 <= overlap < 1).
        device: where the network runs; the stitched output stays on the CPU.
        amp: ``optim.amp`` setting (bf16 autocast on CUDA under auto).

    Returns:
        float32 (C, X, Y, Z) probabilities on the CPU.
    """
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    net = net.to(device).eval()
    with torch.no_grad(), autocast_context(amp, device):
        logits = sliding_window_inference(
            image[None].float(), roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, predictor=net,
            overlap=overlap, mode="gaussian", sw_device=device, device=torch.device("cpu"),
        )
    return torch.sigmoid(logits[0].float())
