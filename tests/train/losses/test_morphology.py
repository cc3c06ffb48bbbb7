import pytest
import torch
import torch.nn.functional as F

from .synthetic import ellipsoid
from train.losses import morphology
from train.losses.morphology import (
    area_downsample,
    dilate_mm,
    ellipsoid_kernel,
    fft_correlate,
    next_fast_len,
)


def test_next_fast_len_is_smooth_and_even():
    assert next_fast_len(97) == 100
    assert next_fast_len(128) == 128
    assert next_fast_len(121) == 128


@pytest.mark.parametrize("diameter,spacing", [(9.0, (1.0, 1.0, 1.0)), (14.0, (2.5, 0.7, 0.7))])
def test_fft_correlation_matches_direct_convolution(diameter, spacing):
    torch.manual_seed(0)
    volume = torch.rand(30, 34, 32) * ellipsoid((30, 34, 32), (14, 18, 15), (9, 12, 10))
    kernel = ellipsoid_kernel(diameter, spacing, sigma_factor=1.5)
    direct = F.conv3d(volume[None, None], kernel[None, None], padding=[k // 2 for k in kernel.shape])[0, 0]
    fast = fft_correlate(volume, kernel)
    assert fast.argmax() == direct.argmax()
    assert torch.allclose(fast, direct, rtol=1e-4, atol=1e-4 * direct.abs().max().item())


def test_dilate_mm_is_the_physical_ball_under_anisotropic_spacing():
    mask = torch.zeros(20, 20, 20, dtype=torch.bool)
    mask[10, 10, 10] = True
    spacing = (2.5, 0.7, 0.7)
    grown = dilate_mm(mask, 5.0, spacing)
    assert torch.equal(grown, ellipsoid((20, 20, 20), (10, 10, 10), (5.0, 5.0, 5.0), spacing))
    assert grown[10, 10, 10 + 7] and not grown[10, 10, 10 + 8]  # 7 * 0.7 = 4.9 mm, 8 * 0.7 = 5.6 mm
    assert grown[12, 10, 10] and not grown[13, 10, 10]  # 2 * 2.5 = 5 mm, 3 * 2.5 = 7.5 mm


@pytest.mark.parametrize("radius", [3.0, 9.0])  # shift path and FFT path
def test_both_dilation_paths_match_brute_force(radius):
    torch.manual_seed(1)
    spacing = (2.0, 0.8, 1.0)
    mask = torch.rand(14, 30, 24) > 0.995
    grown = dilate_mm(mask, radius, spacing)
    sp = torch.tensor(spacing, dtype=torch.float64)
    pts = mask.nonzero().double()
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in mask.shape], indexing="ij"), -1).double()
    d2 = (((grid.view(-1, 1, 3) - pts.view(1, -1, 3)) * sp) ** 2).sum(-1).min(1).values
    assert torch.equal(grown.flatten(), d2 <= radius**2 + 1e-4)


@pytest.mark.parametrize("shape", [(4, 6, 5), (8, 3, 15), (5, 5, 5)])  # ratios 2; 1, 4, 1; non-integer
def test_area_downsample_matches_adaptive_pooling(shape):
    torch.manual_seed(2)
    x = torch.rand(2, 3, 8, 12, 15) > 0.5
    expected = F.adaptive_avg_pool3d(x.float(), shape)
    got = area_downsample(x, shape)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)
    soft = torch.rand(1, 2, 8, 12, 15, dtype=torch.float64)
    assert torch.allclose(area_downsample(soft, shape), F.adaptive_avg_pool3d(soft, shape), atol=1e-12)


def test_area_downsample_keeps_full_resolution_untouched():
    x = torch.rand(1, 2, 4, 4, 4)
    assert area_downsample(x, (4, 4, 4)) is x


def test_cached_kernel_spectrum_gives_the_same_correlation():
    torch.manual_seed(3)
    volume = torch.rand(20, 18, 22)
    kernel = ellipsoid_kernel(7.0, (1.0, 1.5, 1.0))
    morphology._SPECTRUM_CACHE.clear()
    plain = fft_correlate(volume, kernel)
    first = fft_correlate(volume, kernel, cache_key=("test", 7.0))
    assert len(morphology._SPECTRUM_CACHE) == 1
    second = fft_correlate(volume * 2.0, kernel, cache_key=("test", 7.0))
    assert len(morphology._SPECTRUM_CACHE) == 1  # hit, not a new entry
    assert torch.equal(plain, first) and torch.allclose(second, 2.0 * first, atol=1e-4)
    for i in range(morphology._SPECTRUM_CACHE_SIZE + 2):
        fft_correlate(volume, kernel, cache_key=("fill", i))
    assert len(morphology._SPECTRUM_CACHE) == morphology._SPECTRUM_CACHE_SIZE


@pytest.mark.parametrize("diameter,spacing", [(9.0, (1.0, 1.0, 1.0)), (14.0, (2.5, 0.7, 0.7))])
def test_even_kernel_spectrum_matches_the_fft(diameter, spacing):
    torch.manual_seed(4)
    volume = torch.rand(30, 34, 32)
    kernel = ellipsoid_kernel(diameter, spacing, sigma_factor=1.5)
    general = fft_correlate(volume, kernel)
    even = fft_correlate(volume, kernel, even=True)
    assert torch.allclose(even, general, rtol=1e-5, atol=1e-5 * general.abs().max().item())


def test_area_downsample_of_selected_rows_leaves_the_others_zero():
    torch.manual_seed(1)
    x = torch.rand(2, 5, 8, 8, 6)
    rows = [1, 2, 3, 6, 9]
    got = area_downsample(x, (4, 4, 3), rows)
    full = area_downsample(x, (4, 4, 3)).reshape(10, 4, 4, 3)
    got = got.reshape(10, 4, 4, 3)
    for r in range(10):
        assert torch.equal(got[r], full[r]) if r in rows else got[r].abs().max() == 0


@pytest.mark.parametrize("margin", [(0, 0, 0), (3, 5, 9), (9, 9, 9)])
def test_fft_correlation_with_a_zero_margin_uses_a_shorter_period_and_agrees(margin):
    torch.manual_seed(3)
    shape = (30, 34, 32)
    volume = torch.zeros(shape)
    inner = tuple(slice(m, n - m) for m, n in zip(margin, shape))
    volume[inner] = torch.rand(*(n - 2 * m for m, n in zip(margin, shape)))
    kernel = ellipsoid_kernel(19.0, (1.0, 1.0, 1.0), sigma_factor=1.5)  # half-size 9
    direct = F.conv3d(volume[None, None], kernel[None, None], padding=9)[0, 0]
    short = fft_correlate(volume, kernel, zero_margin=margin)
    assert torch.allclose(short, direct, rtol=1e-4, atol=1e-4 * direct.abs().max().item())
    mask, iso = volume > 0.5, (1.0, 1.0, 1.0)
    assert torch.equal(dilate_mm(mask, 9.0, iso, margin), dilate_mm(mask, 9.0, iso))
