"""Spacing-aware kernels, FFT correlation, dilations (no gradients, diameter-independent cost), area downsampling.

Everything physical is in mm; voxel spacing is given as ``(s_d, s_h, s_w)`` in mm along the D, H, W axes, so
a "ball of radius r mm" is an axis-aligned ellipsoid in voxel space when the spacing is anisotropic.
"""

from __future__ import annotations

import collections
import math

import torch
import torch.nn.functional as F

from train.losses.buffers import new_tensor

Spacing = tuple[float, float, float]
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (start, stop) voxel range per axis


def ball_halves(radius_mm: float, spacing: Spacing) -> tuple[int, int, int]:
    """Reach in voxels along each axis of a physical ball of ``radius_mm`` (the half-size of its kernel)."""
    return tuple(int(math.floor(max(radius_mm, 0.0) / s + 1e-6)) for s in spacing)


def grow_box(box: Box, margin: tuple[int, int, int], shape: tuple[int, ...]) -> Box:
    """``box`` widened by ``margin`` voxels per axis, clipped to a volume of ``shape`` (D, H, W)."""
    return tuple((max(0, lo - m), min(n, hi + m)) for (lo, hi), m, n in zip(box, margin, shape[-3:]))


def union_box(boxes: list[Box | None]) -> Box | None:
    """Smallest box holding every given box (None entries are empty)."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple((min(b[a][0] for b in boxes), max(b[a][1] for b in boxes)) for a in range(3))


def box_slices(box: Box) -> tuple[slice, slice, slice]:
    """Index of a box into the last three dimensions."""
    return tuple(slice(lo, hi) for lo, hi in box)


def mask_box(mask: torch.Tensor) -> Box | None:
    """Bounding box of the non-zero voxels of a (D, H, W) mask (host read), None when empty."""
    m = (mask != 0).view(torch.uint8)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = m.amax(dim=other).nonzero().flatten().tolist()
        if not hits:
            return None
        box.append((hits[0], hits[-1] + 1))
    return tuple(box)


def next_fast_len(n: int) -> int:
    """Smallest even 2-3-5-smooth integer >= ``n`` (fast sizes for pocketfft / cuFFT)."""
    m = max(2, n + (n % 2))
    while True:
        r = m
        for f in (2, 3, 5):
            while r % f == 0:
                r //= f
        if r == 1:
            return m
        m += 2


def ellipsoid_kernel(
    diameter_mm: float,
    spacing: Spacing,
    max_half: tuple[int, int, int] | None = None,
    sigma_factor: float | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Voxelised physical ball of the given diameter, centred in an odd grid.

    Args:
        diameter_mm: ball diameter in mm (a ball in mm is an ellipsoid in voxels for anisotropic spacing).
        spacing: voxel spacing (mm) along D, H, W.
        max_half: optional cap on the half-size per axis (voxels); offsets beyond the volume never contribute.
        sigma_factor: if given, weight voxels by ``exp(-|u|^2 / (2 (sigma_factor * r)^2))`` (mild centre
            preference that breaks plateaus in the score map); otherwise the kernel is a flat indicator.
        device: target device.

    Returns:
        float32 (2hd+1, 2hh+1, 2hw+1) kernel; flat kernels hold 0/1, weighted ones are not normalised.
    """
    radius = max(diameter_mm, 1e-6) / 2.0
    halves = [int(math.floor(radius / s + 1e-6)) for s in spacing]
    if max_half is not None:
        halves = [min(h, m) for h, m in zip(halves, max_half)]
    axes = [
        (torch.arange(-h, h + 1, device=device, dtype=torch.float32) * s) ** 2 for h, s in zip(halves, spacing)
    ]
    dist2 = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
    inside = dist2 <= radius * radius + 1e-6
    if sigma_factor is None:
        return inside.float()
    sigma = sigma_factor * radius
    return torch.exp(-dist2 / (2.0 * sigma * sigma)) * inside


def _kernel_spectrum(kernel: torch.Tensor, fast: list[int]) -> torch.Tensor:
    """Conjugate real FFT of a centred kernel in a ``fast`` grid, ready to multiply for a correlation.

    Offset u goes to index -u mod period: the mirrored placement's spectrum is the conjugate of the direct one
    (real kernel), so no conjugated copy is needed later.
    """
    halves = [k // 2 for k in kernel.shape]
    wrap = [-torch.arange(-h, h + 1, device=kernel.device) % f for h, f in zip(halves, fast)]
    padded = torch.zeros(fast, dtype=torch.float32, device=kernel.device)
    padded[wrap[0][:, None, None], wrap[1][None, :, None], wrap[2][None, None, :]] = kernel.float()
    return torch.fft.rfftn(padded)


def _even_kernel_spectrum(kernel: torch.Tensor, fast: list[int]) -> torch.Tensor:
    """Real FFT of a kernel that is symmetric along each axis, as three small cosine-matrix products.

    For such a kernel the spectrum is real, ``K(f) = sum_u k(u) prod_a cos(2 pi f_a u_a / P_a)``: a separable
    transform of the small kernel, much cheaper than an FFT of the zero-padded period (a few ms instead of tens at
    120^3 on a CPU). Phases are reduced modulo the period in integers first, so float32 keeps full precision.
    """
    def cosines(axis: int, n_freq: int) -> torch.Tensor:  # (n_freq, kernel edge)
        h = kernel.shape[axis] // 2
        offsets = torch.arange(-h, h + 1, device=kernel.device)
        phase = (torch.arange(n_freq, device=kernel.device)[:, None] * offsets[None, :]) % fast[axis]
        return torch.cos(phase.float() * (2.0 * math.pi / fast[axis]))

    kd, kh, _ = kernel.shape
    fw = fast[2] // 2 + 1
    out = kernel.float() @ cosines(2, fw).T  # (kd, kh, fw)
    out = out.transpose(1, 2) @ cosines(1, fast[1]).T  # (kd, fw, P_h)
    out = cosines(0, fast[0]) @ out.reshape(kd, -1)  # (P_d, fw * P_h)
    return out.view(fast[0], fw, fast[1]).transpose(1, 2).contiguous()


# Spectra of kernels that recur every step (the group margin and guard balls at a fixed spacing), keyed by the
# kernel's parameters, period and device. Tumour kernels are not cached: their sizes change with every report.
_SPECTRUM_CACHE: collections.OrderedDict = collections.OrderedDict()
_SPECTRUM_CACHE_SIZE = 8


def fft_correlate(
    volume: torch.Tensor,
    kernel: torch.Tensor,
    cache_key: tuple | None = None,
    even: bool = False,
    zero_margin: tuple[int, int, int] = (0, 0, 0),
) -> torch.Tensor:
    """Same-size zero-padded cross-correlation ``out[x] = sum_u volume[x + u] * kernel[u]`` by FFT.

    Equivalent to ``F.conv3d(volume, kernel, padding=half)`` (PyTorch convolutions are correlations) but its
    cost does not depend on the kernel size.

    Args:
        volume: float (..., D, H, W); leading dimensions are batched.
        kernel: float (kd, kh, kw) with odd edges, centred.
        cache_key: hashable description of ``kernel``; if given, its spectrum is kept in a small LRU cache.
        even: the caller guarantees ``kernel`` is symmetric along each axis (``kernel.flip(a) == kernel``), as
            every :func:`ellipsoid_kernel` is; its real spectrum is then computed without an FFT.
        zero_margin: the caller guarantees ``volume`` is zero within this many voxels of both ends of each axis
            (e.g. a mask in a box grown by the kernel's reach); the FFT period can then be that much shorter.

    Returns:
        float (..., D, H, W).
    """
    shape = volume.shape[-3:]
    # Linear (not circular) correlation on [0, n) of an input supported on [m, n - m) needs a period of at least
    # n + half-kernel - m per axis: a wrapped-around offset then never reaches the support.
    fast = [next_fast_len(n + max(0, k // 2 - m)) for n, k, m in zip(shape, kernel.shape, zero_margin)]
    key = None if cache_key is None else (cache_key, even, tuple(fast), str(kernel.device))
    spec_k = _SPECTRUM_CACHE.get(key) if key is not None else None
    if spec_k is None:
        spec_k = _even_kernel_spectrum(kernel, fast) if even else _kernel_spectrum(kernel, fast)
        if key is not None:
            _SPECTRUM_CACHE[key] = spec_k
            while len(_SPECTRUM_CACHE) > _SPECTRUM_CACHE_SIZE:
                _SPECTRUM_CACHE.popitem(last=False)
    else:
        _SPECTRUM_CACHE.move_to_end(key)
    spec_v = torch.fft.rfftn(volume.float(), s=fast, dim=(-3, -2, -1))
    out = torch.fft.irfftn(spec_v.mul_(spec_k), s=fast, dim=(-3, -2, -1))
    return out[..., : shape[0], : shape[1], : shape[2]]


_SMALL_RADIUS_VOXELS = 5
# Blocks of CPU work on many-channel tensors: below glibc's 32 MB mmap ceiling (scratch memory is reused, not
# page-faulted anew) yet few enough calls that threads rarely wait for each other on a busy machine.
CPU_BLOCK_ELEMENTS = 7 << 20


def _dilate_by_shifts(mask: torch.Tensor, radius_mm: float, spacing: Spacing) -> torch.Tensor:
    """Exact Euclidean dilation for small radii: separable min-plus transform of the squared distance.

    Per axis, ``f(x) <- min_o f(x + o) + (o s)^2`` over ``|o s| <= r``; truncating the offsets is exact for every
    distance up to ``r``, which is all a dilation needs. Cost: (2 r / s + 1) shifted minima per axis.
    """
    dist2 = torch.where(mask, 0.0, float("inf"))
    for axis, s in enumerate(spacing):
        dim = dist2.dim() - 3 + axis
        n = dist2.shape[dim]
        steps = min(int(radius_mm / s + 1e-6), n - 1)
        if steps < 1:
            continue
        out = dist2.clone()
        for o in range(1, steps + 1):
            cost = (o * s) ** 2
            for dst, src in ((out.narrow(dim, o, n - o), dist2.narrow(dim, 0, n - o)),
                             (out.narrow(dim, 0, n - o), dist2.narrow(dim, o, n - o))):
                torch.minimum(dst, src + cost, out=dst)
        dist2 = out
    return dist2 <= radius_mm * radius_mm + 1e-6


def dilate_mm(
    mask: torch.Tensor, radius_mm: float, spacing: Spacing, zero_margin: tuple[int, int, int] = (0, 0, 0)
) -> torch.Tensor:
    """Binary dilation by a physical ball of ``radius_mm`` (Euclidean, spacing-aware).

    Small radii (a few voxels) use shifted minima of the squared distance; larger ones an FFT correlation with
    the ball, whose cost does not depend on the radius.

    Args:
        mask: bool (..., D, H, W); leading dimensions are batched and share ``spacing``.
        radius_mm: dilation radius in mm; <= 0 returns a copy.
        spacing: voxel spacing (mm) along D, H, W.
        zero_margin: voxels at both ends of each axis known to be False (see :func:`fft_correlate`).

    Returns:
        bool (..., D, H, W).
    """
    if radius_mm <= 0 or mask.numel() == 0:
        return mask.clone()
    with torch.no_grad():
        if radius_mm / min(spacing) <= _SMALL_RADIUS_VOXELS:
            return _dilate_by_shifts(mask, radius_mm, spacing)
        shape = mask.shape[-3:]
        max_half = tuple(n - 1 for n in shape)
        kernel = ellipsoid_kernel(2.0 * radius_mm, spacing, max_half=max_half, device=mask.device)
        key = ("ball", radius_mm, tuple(spacing), tuple(kernel.shape))
        return fft_correlate(mask.float(), kernel, cache_key=key, even=True, zero_margin=zero_margin) > 0.5


def area_downsample(x: torch.Tensor, shape: tuple[int, int, int], rows: list[int] | None = None) -> torch.Tensor:
    """Area average of (..., D, H, W) to ``shape`` (float; other dtypes become float32).

    Integer ratios are summed by strided slices, a block of volumes (at most ~28 MB) at a time: on a CPU this is
    several times faster than the pooling kernels on a many-channel tensor and never converts the whole input at
    once. Non-integer ratios use ``F.adaptive_avg_pool3d``.

    Args:
        x: (..., D, H, W) input.
        shape: output (D, H, W).
        rows: optional indices into the flattened leading dimensions: only these volumes are computed, the others
            are zero (e.g. channels that are empty or never read).
    """
    full = tuple(x.shape[-3:])
    if full == tuple(shape):
        return x
    if any(f % s for f, s in zip(full, shape)):
        return F.adaptive_avg_pool3d(x if x.is_floating_point() else x.float(), shape)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    factors = [f // s for f, s in zip(full, shape)]
    flat = x.reshape(-1, *full)
    n_rows = flat.shape[0]
    block = max(1, CPU_BLOCK_ELEMENTS // math.prod(full)) if x.device.type == "cpu" else n_rows
    if rows is None:
        out = new_tensor((n_rows, *shape), dtype, x.device)
        spans = [(start, min(start + block, n_rows)) for start in range(0, n_rows, block)]
    else:
        out = new_tensor((n_rows, *shape), dtype, x.device, zero=True)
        spans = []
        for r in sorted(set(rows)):  # runs of consecutive rows, at most ``block`` long
            if spans and spans[-1][1] == r and r - spans[-1][0] < block:
                spans[-1] = (spans[-1][0], r + 1)
            else:
                spans.append((r, r + 1))
    for start, end in spans:
        y = flat[start:end].to(dtype)
        for axis, f in enumerate(factors, start=1):
            if f == 1:
                continue
            index = [slice(None)] * 4
            parts = []
            for k in range(f):
                index[axis] = slice(k, None, f)
                parts.append(y[tuple(index)])
            y = torch.stack(parts).sum(0) if f > 2 else parts[0] + parts[1]
        out[start:end] = y
    return out.mul_(1.0 / math.prod(factors)).view(*x.shape[:-3], *shape)
