"""Masked BCE + soft Dice for multi-label sigmoid outputs, fused for speed and memory.

The gradient is written out by hand and every full-size step runs in place, so forward + backward allocate only
two C x D x H x W float tensors (the saved probabilities and the returned gradient) plus one scratch buffer in
the forward pass; a plain autograd graph of the same formula keeps about ten of them alive. On a CPU each fresh
full-size allocation costs as much as several arithmetic passes (page faults), so this matters there too.

The same function can hand out selected channels (the lesion channels the report losses need): their gradient
is added in place into the segmentation gradient instead of materialising a second full-size gradient.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

_EPS = 1e-5


class _MaskedBceDice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, known, sel_b, sel_c):  # type: ignore[override]
        dims = tuple(range(2, logits.dim()))
        with torch.no_grad():
            p = torch.sigmoid(logits)
            n_known = known.sum().clamp_min(1.0)
            # BCE(z, y) = log1p(exp(-|z|)) + relu(z) - z * y, and log1p(exp(-|z|)) = -log(max(p, 1 - p)),
            # which reuses p and needs one logarithm (no overflow: the argument lies in [0.5, 1]).
            buf = torch.sub(p, 0.5)
            buf.abs_().add_(0.5).log_().mul_(known)
            bce = -buf.sum()
            buf.copy_(logits).clamp_(min=0).mul_(known)
            bce = bce + buf.sum()
            buf.copy_(logits).mul_(labels).mul_(known)
            bce = (bce - buf.sum()) / n_known
            buf.copy_(p).mul_(known)
            sum_p = buf.sum(dims)
            inter = buf.mul_(labels).sum(dims)
            sum_y = buf.copy_(labels).mul_(known).sum(dims)
            del buf
            valid = (sum_y > 0).to(logits.dtype)  # empty targets give Dice 1 with no gradient: skip them
            n_valid = valid.sum().clamp_min(1.0)
            den = sum_p + sum_y + _EPS
            dice = ((1.0 - (2.0 * inter + _EPS) / den) * valid).sum() / n_valid
            selected = logits[sel_b, sel_c]
        ctx.save_for_backward(p, labels, known, inter, den, valid, n_valid, n_known, sel_b, sel_c)
        ctx.consumed = False
        return torch.stack([bce, dice]), selected

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_selected):  # type: ignore[override]
        if ctx.consumed:
            raise RuntimeError("masked_bce_dice: backward reuses its saved buffer and can run only once")
        ctx.consumed = True
        p, labels, known, inter, den, valid, n_valid, n_known, sel_b, sel_c = ctx.saved_tensors
        g_bce, g_dice = grad[0], grad[1]
        shape = (*den.shape, *([1] * (p.dim() - 2)))
        # d(1 - Dice)/dp = k * (a * y + b) per (item, class); written as b * (1 + (a / b) * y) to stay in place.
        b = ((2.0 * inter + _EPS) * valid / (n_valid * den * den) * g_dice).view(shape)
        a_over_b = (-2.0 * den / (2.0 * inter + _EPS) * valid).view(shape)
        out = p - labels
        out.mul_(g_bce / n_known)
        sp = p.addcmul_(p, p, value=-1.0)  # sigmoid'(z) = p - p^2, overwriting the saved p
        sp.mul_(b)
        out.add_(sp)
        sp.mul_(a_over_b).mul_(labels)
        out.add_(sp)
        out.mul_(known)
        if grad_selected is not None:
            out.index_put_((sel_b, sel_c), grad_selected, accumulate=True)
        return out, None, None, None, None


def masked_bce_dice(
    logits: torch.Tensor,
    labels: torch.Tensor,
    known: torch.Tensor,
    select: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BCE and soft Dice restricted to known voxels, optionally returning selected channels.

    Args:
        logits: float (B, C, D, H, W) sigmoid logits.
        labels: (B, C, D, H, W) targets in [0, 1] (soft targets allowed, e.g. area-downsampled masks); bool is
            converted (one extra full-size copy).
        known: float (B, C, D, H, W) in {0, 1}: 1 = supervise this voxel / class (bool is converted; float is
            much faster than bool in the CPU kernels).
        select: optional ``(item_index, channel_index)`` long (G,) tensors.

    Returns:
        ``(bce, dice, selected)``: BCE averaged over known voxels; ``1 - Dice`` per (item, class) on known voxels,
        averaged over the pairs whose known target is non-empty (0 if none); ``logits[item_index,
        channel_index]`` as (G, D, H, W), differentiable (empty when ``select`` is None).

    The backward pass may run only once (it reuses its saved buffer).
    """
    if labels.dtype != logits.dtype:
        labels = labels.to(logits.dtype)
    if known.dtype != logits.dtype:
        known = known.to(logits.dtype)
    if select is None:
        empty = torch.zeros(0, dtype=torch.long, device=logits.device)
        select = (empty, empty)
    out, selected = _MaskedBceDice.apply(logits, labels, known, select[0], select[1])
    return out[0], out[1], selected
