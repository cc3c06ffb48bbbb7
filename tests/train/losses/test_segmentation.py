import pytest
import torch
import torch.nn.functional as F

from train.losses.segmentation import masked_bce_dice


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
