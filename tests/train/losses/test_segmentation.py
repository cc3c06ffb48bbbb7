import pytest
import torch
import torch.nn.functional as F

from train.losses import segmentation
from train.losses.morphology import dilate_mm
from train.losses.segmentation import coverage_codes, known_from_unknown, masked_bce_dice


def _reference(z, y, k):
    bce = (F.binary_cross_entropy_with_logits(z, y, reduction="none") * k).sum() / k.sum()
    p = torch.sigmoid(z)
    inter = (p * y * k).sum((2, 3, 4))
    sum_y = (y * k).sum((2, 3, 4))
    valid = (sum_y > 0).to(z.dtype)
    d = 1 - (2 * inter + 1e-5) / ((p * k).sum((2, 3, 4)) + sum_y + 1e-5)
    return bce, (d * valid).sum() / valid.sum()


def test_fused_loss_and_gradient_match_autograd():
    torch.manual_seed(0)
    shape = (2, 3, 5, 6, 7)
    y = (torch.rand(shape) > 0.7).double()
    y[0, 1] = 0  # an empty target is skipped by the Dice mean
    k = (torch.rand(shape) > 0.2).double()
    z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    sel = (torch.tensor([0, 1]), torch.tensor([2, 2]))
    bce, dice, selected = masked_bce_dice(z, y, k, sel)
    (bce + 2 * dice + (selected**2).sum()).backward()
    fused = z.grad.clone()
    z.grad = None
    rb, rd = _reference(z, y, k)
    (rb + 2 * rd + (z[sel] ** 2).sum()).backward()
    assert bce.item() == pytest.approx(rb.item(), rel=1e-10)
    assert dice.item() == pytest.approx(rd.item(), rel=1e-10)
    assert torch.allclose(fused, z.grad, atol=1e-12)


@pytest.mark.parametrize("dense_known", [True, False])
def test_positive_weight_matches_torch_bce_pos_weight(dense_known):
    torch.manual_seed(1)
    shape = (2, 4, 5, 6, 7)
    y = (torch.rand(shape) > 0.8).double()
    y[1, 3] = 0  # a weighted channel without positives: the short path
    k = torch.ones(shape, dtype=torch.float64) if dense_known else (torch.rand(shape) > 0.3).double()
    z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = [1.0, 1.0, 8.0, 3.0]
    bce, dice, _ = masked_bce_dice(z, y, k, pos_weight=w)
    (bce + dice).backward()
    fused = z.grad.clone()
    z.grad = None
    pw = torch.tensor(w, dtype=torch.float64).view(1, 4, 1, 1, 1)
    ref_bce = (F.binary_cross_entropy_with_logits(z, y, reduction="none", pos_weight=pw) * k).sum() / k.sum()
    _, ref_dice = _reference(z, y, k)
    (ref_bce + ref_dice).backward()
    assert bce.item() == pytest.approx(ref_bce.item(), rel=1e-10)
    assert torch.allclose(fused, z.grad, atol=1e-12)
    with pytest.raises(ValueError, match="pos_weight"):
        masked_bce_dice(z, y, k, pos_weight=[1.0, 2.0])


def test_unknown_voxels_get_no_gradient_and_extreme_logits_stay_finite():
    z = torch.tensor([[[[[-200.0, 0.0, 200.0, 5.0]]]]], requires_grad=True)
    y = torch.tensor([[[[[1.0, 0.0, 0.0, 1.0]]]]])
    k = torch.tensor([[[[[1.0, 1.0, 1.0, 0.0]]]]])
    bce, dice, _ = masked_bce_dice(z, y, k)
    (bce + dice).backward()
    assert bce.item() == pytest.approx((200.0 + 0.693147 + 200.0) / 3, rel=1e-5)
    assert torch.isfinite(z.grad).all() and z.grad[0, 0, 0, 0, 3] == 0


def test_backward_twice_is_refused():
    z = torch.randn(1, 1, 2, 2, 2, requires_grad=True)
    bce, _, _ = masked_bce_dice(z, torch.ones_like(z), torch.ones_like(z))
    bce.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        bce.backward()


def _unknown_with_every_coverage(shape):
    """Channels: 0 fully known, 1 fully unknown, 2 and 3 partially unknown (a small block)."""
    unknown = torch.zeros(shape, dtype=torch.bool)
    unknown[:, 1] = True
    unknown[:, 2:, 1:3, 2:4, 2:5] = True
    return unknown


def test_coverage_codes_classify_channels():
    unknown = _unknown_with_every_coverage((2, 4, 5, 6, 7))
    unknown[1, 3] = False
    assert coverage_codes(unknown).tolist() == [[1, 0, 2, 2], [1, 0, 2, 1]]


@pytest.mark.parametrize("chunk_elements", [1, 2 * 5 * 6 * 7, 1 << 22])  # one channel, two, everything
def test_compact_known_voxels_match_the_dense_mask(monkeypatch, chunk_elements):
    monkeypatch.setattr(segmentation, "_CPU_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(2)
    shape = (2, 4, 5, 6, 7)
    unknown = _unknown_with_every_coverage(shape)
    spacing = [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)]
    known = known_from_unknown(unknown, coverage_codes(unknown).tolist(), 1.0, spacing, skip_items=frozenset({1}))
    dense = torch.stack([~dilate_mm(unknown[b], 1.0, spacing[b]) for b in range(2)]).double()
    dense[1] = 0.0  # skipped item
    assert known.coverage == ((1, 0, 2, 2), (0, 0, 0, 0))
    y = (torch.rand(shape) > 0.6).double()
    z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    sel = (torch.tensor([0, 1]), torch.tensor([3, 2]))
    grads, values = [], []
    for k in (known, dense):
        z.grad = None
        bce, dice, selected = masked_bce_dice(z, y, k, sel)
        (bce + 0.5 * dice + (selected**3).sum()).backward()
        grads.append(z.grad.clone())
        values.append((bce.item(), dice.item()))
    rb, rd = _reference(z.detach(), y, dense)
    assert values[0] == pytest.approx((rb.item(), rd.item()), rel=1e-10)
    assert values[1] == pytest.approx(values[0], rel=1e-10)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)
    assert grads[0][1, :2].abs().max() == 0  # skipped item, channels without selection: no gradient


def test_known_voxels_downsample_marks_any_unknown_sub_voxel():
    unknown = torch.zeros(1, 2, 4, 4, 4, dtype=torch.bool)
    unknown[0, 1, 0, 0, 0] = True
    known = known_from_unknown(unknown, coverage_codes(unknown).tolist(), 0.0, [(1.0, 1.0, 1.0)])
    low = known.downsample((2, 2, 2))
    assert low.coverage == known.coverage and low.masks.shape == (1, 2, 2, 2)
    expected = torch.ones(2, 2, 2, dtype=torch.bool)
    expected[0, 0, 0] = False
    assert torch.equal(low.masks[0], expected)


def test_labels_of_another_dtype_are_converted_per_chunk():
    torch.manual_seed(3)
    y = torch.rand(1, 3, 4, 4, 4) > 0.5
    z = torch.randn(1, 3, 4, 4, 4)
    k = torch.ones_like(z)
    assert masked_bce_dice(z, y, k)[0].item() == pytest.approx(masked_bce_dice(z, y.float(), k)[0].item(), rel=1e-6)


@pytest.mark.parametrize("chunk_elements", [1, 2 * 5 * 6 * 7, 1 << 22])
def test_label_free_pairs_take_the_short_path_with_the_same_result(monkeypatch, chunk_elements):
    monkeypatch.setattr(segmentation, "_CPU_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(5)
    shape = (2, 4, 5, 6, 7)
    unknown = _unknown_with_every_coverage(shape)
    known = known_from_unknown(unknown, coverage_codes(unknown).tolist(), 1.0, [(1.0, 1.0, 1.0)] * 2)
    y = (torch.rand(shape) > 0.6).double()
    y[0, 0] = 0  # fully known, no label
    y[1, 3] = 0  # partly known, no label
    y[0, 1] = 0  # unknown, no label
    occupancy = segmentation.label_occupancy(y).tolist()
    assert occupancy == [[False, False, True, True], [True, True, True, False]]
    assert segmentation.label_occupancy(y > 0).tolist() == occupancy
    z = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_(True)
    sel = (torch.tensor([0, 1]), torch.tensor([3, 2]))
    results = []
    for nonempty in (None, occupancy):
        z.grad = None
        bce, dice, selected = masked_bce_dice(z, y, known, sel, nonempty)
        (bce + 0.5 * dice + (selected**3).sum()).backward()
        results.append((bce.item(), dice.item(), z.grad.clone()))
    assert results[1][:2] == pytest.approx(results[0][:2], rel=1e-12)
    assert torch.allclose(results[1][2], results[0][2], atol=1e-14)
