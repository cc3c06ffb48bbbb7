"""Masked BCE + soft Dice for multi-label sigmoid outputs, streamed over channel chunks.

The forward pass only accumulates per-channel sums; the backward pass recomputes each chunk's probabilities and
writes its gradient straight into the output gradient. Apart from that gradient (which autograd needs anyway)
nothing of the full (B, C, D, H, W) size is allocated: on a CPU every fresh full-size tensor costs page faults
worth several arithmetic passes, so each pass works through a few chunk-sized scratch buffers made once, and
the gradient itself comes from :func:`train.losses.buffers.new_tensor`.

Pairs whose labels are all zero (given by ``nonempty``) have no Dice term; their BCE is ``softplus(z)``, one pass
forward and one back, without reading the labels.

Which voxels are supervised is described by :class:`KnownVoxels`: per (item, channel) nothing, everything, or a
mask, so channels that are entirely known or entirely unknown (the usual case) carry no mask at all.

The function can also hand out selected channels (the lesion channels the report losses need): their gradient is
added in place into the segmentation gradient instead of materialising a second full-size gradient.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from train.losses.buffers import new_tensor
from train.losses.morphology import CPU_BLOCK_ELEMENTS, Spacing, dilate_mm

_EPS = 1e-5
_CPU_CHUNK_ELEMENTS = CPU_BLOCK_ELEMENTS  # 8 channels of 96^3 per chunk


class Coverage(enum.IntEnum):
    """Which voxels of one (item, channel) pair the segmentation loss supervises."""

    NONE = 0  # channel entirely unknown: no loss, zero gradient
    ALL = 1  # every voxel known: no mask needed
    PARTIAL = 2  # known voxels given by a mask row


@dataclasses.dataclass(frozen=True)
class KnownVoxels:
    """Supervised voxels of a (B, C, D, H, W) output in compact form.

    Attributes:
        coverage: host (B x C) nested tuple of :class:`Coverage` codes.
        masks: (N, D, H, W) known voxels (bool, or {0, 1} floats) of the PARTIAL pairs in row-major (item,
            channel) order; N may be 0.
    """

    coverage: tuple[tuple[int, ...], ...]
    masks: torch.Tensor

    @classmethod
    def dense(cls, known: torch.Tensor) -> KnownVoxels:
        """Every pair PARTIAL with its row of a dense (B, C, D, H, W) known tensor (a view, no copy)."""
        b, c = known.shape[:2]
        return cls(((int(Coverage.PARTIAL),) * c,) * b, known.reshape(b * c, *known.shape[2:]))

    def downsample(self, shape: tuple[int, int, int]) -> KnownVoxels:
        """Known voxels at a lower resolution: a voxel is unknown if any of its sub-voxels is (max pooling)."""
        if self.masks.shape[0] == 0 or tuple(self.masks.shape[-3:]) == tuple(shape):
            return self
        unknown = (self.masks == 0).to(torch.float32)
        return dataclasses.replace(self, masks=F.adaptive_max_pool3d(unknown, shape) == 0)


def coverage_codes(unknown: torch.Tensor) -> torch.Tensor:
    """long (B, C) :class:`Coverage` code of each pair of a bool (B, C, D, H, W) unknown mask (on its device)."""
    flat = unknown.flatten(2).view(torch.uint8)  # uint8 max / min reductions are far faster than bool any / all
    partial = torch.where(flat.amax(-1) > 0, int(Coverage.PARTIAL), int(Coverage.ALL))
    return torch.where(flat.amin(-1) > 0, int(Coverage.NONE), partial)


def known_from_unknown(
    unknown: torch.Tensor,
    coverage: list[list[int]],
    dilation_mm: float,
    spacing: list[Spacing],
    skip_items: frozenset[int] = frozenset(),
) -> KnownVoxels:
    """Known voxels = not (unknown grown by ``dilation_mm``); only PARTIAL pairs are dilated and stored.

    Args:
        unknown: bool (B, C, D, H, W), True = not supervised.
        coverage: host (B x C) codes from :func:`coverage_codes` of the same mask.
        dilation_mm: safety margin around unknown voxels (mm).
        spacing: per item, voxel spacing (mm) along D, H, W.
        skip_items: items excluded from the loss altogether (every pair NONE).
    """
    codes = tuple(
        tuple(int(Coverage.NONE) if b in skip_items else int(code) for code in row) for b, row in enumerate(coverage)
    )
    pairs = [(b, c) for b, row in enumerate(codes) for c, code in enumerate(row) if code == Coverage.PARTIAL]
    if not pairs:
        return KnownVoxels(codes, unknown.new_zeros((0, *unknown.shape[2:])))
    index = torch.tensor(pairs, dtype=torch.long, device=unknown.device)
    rows = unknown[index[:, 0], index[:, 1]]
    for b in sorted({b for b, _ in pairs}):
        idx = [i for i, (item, _) in enumerate(pairs) if item == b]
        sl = slice(idx[0], idx[-1] + 1)  # rows of one item are contiguous (row-major order)
        rows[sl] = dilate_mm(rows[sl], dilation_mm, spacing[b])
    return KnownVoxels(codes, ~rows)


def _chunks(coverage, voxels: int, max_elements: int | None, nonempty=None):
    """Runs of consecutive channels of one item with the same coverage and label occupancy.

    Yields ``(item, c0, c1, code, first mask row, has labels)``; ``nonempty`` (host B x C bools, None = all True)
    tells which pairs have any positive label.
    """
    max_rows = len(coverage[0]) if max_elements is None else max(1, max_elements // max(voxels, 1))
    row = 0
    for b, codes in enumerate(coverage):
        full = nonempty[b] if nonempty is not None else (True,) * len(codes)
        c = 0
        while c < len(codes):
            end = c + 1
            while end < len(codes) and end - c < max_rows and codes[end] == codes[c] and full[end] == full[c]:
                end += 1
            yield b, c, end, codes[c], row, bool(full[c])
            if codes[c] == Coverage.PARTIAL:
                row += end - c
            c = end


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of (n, V) tensors: one BLAS dot per row (no temporary of the rows' size)."""
    if a.shape[0] == 1:
        return torch.dot(a[0], b[0]).unsqueeze(0)
    return torch.stack([torch.dot(x, y) for x, y in zip(a, b)])


def label_occupancy(labels: torch.Tensor) -> torch.Tensor:
    """bool (B, C): whether each (item, channel) of (B, C, D, H, W) labels has any non-zero voxel (on its device).

    Read to the host (with the coverage codes) and passed to :func:`masked_bce_dice` as ``nonempty``.
    """
    flat = labels.flatten(2)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)  # uint8 reductions are far faster than bool any
    return flat.amax(-1) > 0


class _Scratch:
    """Chunk-sized work buffers, allocated once per pass and reused by every chunk (``out=`` operations).

    Fresh large CPU tensors are expensive (page faults, see :mod:`train.losses.buffers`); on CUDA the chunk is
    a whole item and the caching allocator makes this equivalent to ordinary temporaries.
    """

    def __init__(self, rows: int, voxels: int, dtype: torch.dtype, device: torch.device):
        self.shape = (rows, voxels)
        self.dtype = dtype
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = new_tensor(self.shape, self.dtype, self.device)
        return buf[:rows]

    def cast(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the scratch dtype (itself if it already is; else converted into a buffer)."""
        return x if x.dtype == self.dtype else self.get(name, x.shape[0]).copy_(x)


def _scratch_for(logits: torch.Tensor, voxels: int, max_el: int | None) -> _Scratch:
    rows = logits.shape[1] if max_el is None else max(1, min(logits.shape[1], max_el // max(voxels, 1)))
    return _Scratch(rows, voxels, logits.dtype, logits.device)


class _MaskedBceDice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, sel_b, sel_c, labels, known, nonempty, pos_w, pos_w_dev):  # type: ignore[override]
        b_size, c_size = logits.shape[:2]
        voxels = math.prod(logits.shape[2:])
        dtype = logits.dtype
        z_all = logits.detach().reshape(b_size, c_size, voxels)
        y_all = labels.reshape(b_size, c_size, voxels)
        k_all = known.masks.reshape(known.masks.shape[0], voxels)
        sums = logits.new_zeros(3, b_size, c_size)  # sum p k, sum p y k, sum y k
        bce = logits.new_zeros(())
        n_known = logits.new_zeros(())
        n_all = 0  # known voxels of fully known pairs, counted on the host (exact)
        max_el = _CPU_CHUNK_ELEMENTS if logits.device.type == "cpu" else None
        scratch = _scratch_for(logits, voxels, max_el)
        with torch.no_grad():
            for b, c0, c1, code, row, full in _chunks(known.coverage, voxels, max_el, nonempty):
                if code == Coverage.NONE:
                    continue
                n = c1 - c0
                z = z_all[b, c0:c1]
                buf = scratch.get("buf", n)
                k = scratch.cast("k", k_all[row : row + n]) if code == Coverage.PARTIAL else None
                if not full:
                    # No positive label: BCE = softplus(z) and no Dice (empty target); no sigmoid, no label reads.
                    torch._C._nn.softplus(z, 1.0, 20.0, out=buf)
                    if k is None:
                        bce += buf.sum()
                        n_all += n * voxels
                    else:
                        bce += _rowdot(buf, k).sum()
                        n_known += k.sum()
                    continue
                y = scratch.cast("y", y_all[b, c0:c1])
                torch.sigmoid(z, out=buf)
                # BCE(z, y) = relu(z) + log1p(exp(-|z|)) - z y, and log1p(exp(-|z|)) = -log(max(p, 1 - p)): one
                # logarithm of a value in [0.5, 1] reusing p (no overflow, no second transcendental pass).
                if k is None:
                    sums[0, b, c0:c1] = buf.sum(-1)
                    sums[1, b, c0:c1] = _rowdot(buf, y)
                    sums[2, b, c0:c1] = y.sum(-1)
                    bce -= _rowdot(z, y).sum()
                    bce -= buf.sub_(0.5).abs_().add_(0.5).log_().sum()
                    bce += torch.clamp(z, min=0, out=buf).sum()
                    n_all += n * voxels
                else:
                    yk = torch.mul(y, k, out=scratch.get("yk", n))
                    sums[0, b, c0:c1] = _rowdot(buf, k)
                    sums[1, b, c0:c1] = _rowdot(buf, yk)
                    sums[2, b, c0:c1] = yk.sum(-1)
                    bce -= _rowdot(z, yk).sum()
                    bce -= _rowdot(buf.sub_(0.5).abs_().add_(0.5).log_(), k).sum()
                    bce += _rowdot(torch.clamp(z, min=0, out=buf), k).sum()
                    n_known += k.sum()
                extra = _extra_weight(pos_w, pos_w_dev, c0, c1)
                if extra is not None:  # (w - 1) y softplus(-z) on the weighted channels' positives
                    torch._C._nn.softplus(z, 1.0, 20.0, out=buf).sub_(z)
                    bce += (extra * _rowdot(buf, y if k is None else yk)).sum()
            del scratch
            sum_p, inter, sum_y = sums
            n_known = (n_known + n_all).clamp_min(1.0)
            bce = bce / n_known
            valid = (sum_y > 0).to(dtype)  # empty targets give Dice 1 with no gradient: skip them
            n_valid = valid.sum().clamp_min(1.0)
            den = sum_p + sum_y + _EPS
            dice = ((1.0 - (2.0 * inter + _EPS) / den) * valid).sum() / n_valid
            selected = logits.detach()[sel_b, sel_c]
        ctx.save_for_backward(logits, labels, inter, den, valid, n_valid, n_known, sel_b, sel_c)
        ctx.known = known
        ctx.nonempty = nonempty
        ctx.pos_w, ctx.pos_w_dev = pos_w, pos_w_dev
        return torch.stack([bce, dice]), selected

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_selected):  # type: ignore[override]
        known = ctx.known
        if known is None:
            raise RuntimeError("masked_bce_dice: backward can run only once (it releases its known-voxel masks)")
        ctx.known = None  # free the masks as soon as possible (they can be large)
        logits, labels, inter, den, valid, n_valid, n_known, sel_b, sel_c = ctx.saved_tensors
        b_size, c_size = logits.shape[:2]
        voxels = math.prod(logits.shape[2:])
        dtype = logits.dtype
        z_all = logits.detach().reshape(b_size, c_size, voxels)
        y_all = labels.reshape(b_size, c_size, voxels)
        k_all = known.masks.reshape(known.masks.shape[0], voxels)
        g_bce = grad[0] / n_known
        # d(1 - Dice)/dp = b + a y per (item, class) on known voxels; times sigmoid'(z) = p - p^2.
        coef_b = ((2.0 * inter + _EPS) * valid / (n_valid * den * den) * grad[1]).unsqueeze(-1)
        coef_a = (-2.0 * valid / (n_valid * den) * grad[1]).unsqueeze(-1)
        out = new_tensor(logits.shape, dtype, logits.device, zero=True)  # NONE pairs stay zero (untouched pages)
        out_all = out.view(b_size, c_size, voxels)
        max_el = _CPU_CHUNK_ELEMENTS if logits.device.type == "cpu" else None
        scratch = _scratch_for(logits, voxels, max_el)
        for b, c0, c1, code, row, full in _chunks(known.coverage, voxels, max_el, ctx.nonempty):
            o = out_all[b, c0:c1]
            if code == Coverage.NONE:
                continue
            n = c1 - c0
            z = z_all[b, c0:c1]
            if not full:  # no Dice term: d softplus(z)/dz = p
                torch.sigmoid(z, out=o).mul_(g_bce)
            else:
                y = scratch.cast("y", y_all[b, c0:c1])
                p = torch.sigmoid(z, out=scratch.get("p", n))
                torch.sub(p, y, out=o).mul_(g_bce)
                extra = _extra_weight(ctx.pos_w, ctx.pos_w_dev, c0, c1)
                if extra is not None:  # d/dz (w - 1) y softplus(-z) = (w - 1) y (p - 1)
                    t = torch.sub(p, 1.0, out=scratch.get("t", n)).mul_(y)
                    o.add_(t.mul_((extra * g_bce).unsqueeze(-1)))
                slope = p.addcmul_(p, p, value=-1.0)
                o.addcmul_(slope, torch.addcmul(coef_b[b, c0:c1], y, coef_a[b, c0:c1], out=scratch.get("t", n)))
            if code == Coverage.PARTIAL:
                o.mul_(scratch.cast("k", k_all[row : row + n]))
        del scratch
        if grad_selected is not None and sel_b.numel():
            out.index_put_((sel_b, sel_c), grad_selected, accumulate=True)
        return out, None, None, None, None, None, None, None


def _extra_weight(pos_weight: tuple[float, ...] | None, pos_weight_dev: torch.Tensor | None, c0: int,
                  c1: int) -> torch.Tensor | None:
    """``w - 1`` of channels c0:c1 (on the logits' device), or None when none of them is weighted (host check)."""
    if pos_weight is None or all(w == 1.0 for w in pos_weight[c0:c1]):
        return None
    return pos_weight_dev[c0:c1] - 1.0


def masked_bce_dice(
    logits: torch.Tensor,
    labels: torch.Tensor,
    known: torch.Tensor | KnownVoxels,
    select: tuple[torch.Tensor, torch.Tensor] | None = None,
    nonempty: list[list[bool]] | tuple[tuple[bool, ...], ...] | None = None,
    pos_weight: list[float] | tuple[float, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BCE and soft Dice restricted to known voxels, optionally returning selected channels.

    Args:
        logits: float (B, C, D, H, W) sigmoid logits.
        labels: (B, C, D, H, W) targets in [0, 1] (soft targets allowed, e.g. area-downsampled masks); other
            dtypes are converted chunk by chunk.
        known: :class:`KnownVoxels`, or a dense (B, C, D, H, W) tensor in {0, 1} (1 = supervise this voxel).
        select: optional ``(item_index, channel_index)`` long (G,) tensors.
        nonempty: optional host (B x C) flags, False where a pair's labels are all zero (from
            :func:`label_occupancy`, valid at every resolution): such pairs skip the label reads and the Dice sums
            (their Dice is excluded anyway) and cost one pass forward and one back. None = every pair may have labels.
        pos_weight: optional per-channel weight (C,) of the positive voxels' BCE term, as in
            ``BCEWithLogitsLoss(pos_weight=...)``; the BCE stays divided by the number of known voxels.

    Returns:
        ``(bce, dice, selected)``: BCE averaged over known voxels; ``1 - Dice`` per (item, class) on known voxels,
        averaged over the pairs whose known target is non-empty (0 if none); ``logits[item_index,
        channel_index]`` as (G, D, H, W), differentiable (empty when ``select`` is None).

    The backward pass may run only once (it releases the known-voxel masks).
    """
    if not isinstance(known, KnownVoxels):
        known = KnownVoxels.dense(known)
    if select is None:
        empty = torch.zeros(0, dtype=torch.long, device=logits.device)
        select = (empty, empty)
    weights = tuple(float(w) for w in pos_weight) if pos_weight is not None else None
    if weights is not None and len(weights) != logits.shape[1]:
        raise ValueError(f"pos_weight has {len(weights)} entries for {logits.shape[1]} channels")
    weights_dev = None if weights is None else torch.tensor(weights, dtype=logits.dtype, device=logits.device)
    out, selected = _MaskedBceDice.apply(logits, select[0], select[1], labels, known, nonempty, weights, weights_dev)
    return out[0], out[1], selected
