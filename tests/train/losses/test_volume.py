import math

import torch

from train.losses import GroupState, VolumeLoss
from train.losses.targets import GroupEntry, TargetTumor, build_report_targets
from train.losses.volume import volume_band_loss, volume_bounds_mm3

from .synthetic import ellipsoid

S = 40
ORGAN = ellipsoid((S, S, S), (20, 20, 20), (15, 12, 12))
BALL = ellipsoid((S, S, S), (18, 20, 22), (5, 5, 5))


def _diameter(mask: torch.Tensor, voxel_mm3: float = 1.0) -> float:
    return (6.0 * mask.sum().item() * voxel_mm3 / math.pi) ** (1.0 / 3.0)


def _logits(mask: torch.Tensor) -> torch.Tensor:
    z = torch.full((1, 2, S, S, S), -30.0)
    z[0, 1][mask] = 30.0
    return z.requires_grad_(True)


def _targets(diameter: float, state=GroupState.LESIONS, count=None, lower=False):
    tumors = () if diameter is None else (TargetTumor((diameter,) * 3),)
    group = GroupEntry(ORGAN, 1, state=state, tumors=tumors, count=count, count_is_lower_bound=lower)
    return build_report_targets([[group]], (S, S, S), [(1.0, 1.0, 1.0)])


def test_exact_ball_gives_zero_volume_loss():
    loss, n = VolumeLoss()(_logits(BALL), _targets(_diameter(BALL)))
    assert n.item() == 1.0
    assert loss.item() == 0.0


def _soft_ball() -> torch.Tensor:
    z = torch.full((1, 2, S, S, S), -30.0)
    z[0, 1][BALL] = 3.0  # p = 0.95: saturated enough to count, soft enough for a sigmoid gradient
    return z.requires_grad_(True)


def test_twice_too_large_and_too_small_push_in_the_right_direction():
    predicted = torch.sigmoid(torch.tensor(3.0)).item() * BALL.sum().item()
    z = _soft_ball()
    loss, _ = VolumeLoss()(z, _targets(_diameter(BALL) / 2 ** (1 / 3)))  # report = half the ball
    loss.backward()
    assert math.isclose(loss.item(), math.log((predicted + 10) / (1.2 * BALL.sum().item() / 2 + 10)), rel_tol=0.02)
    assert z.grad[0, 1][BALL].min() > 0  # descent lowers the logits
    z = _soft_ball()
    loss, _ = VolumeLoss()(z, _targets(_diameter(BALL) * 2 ** (1 / 3)))  # report = twice the ball
    loss.backward()
    assert loss.item() > 0.4
    assert z.grad[0, 1][BALL].max() < 0  # descent raises the logits
    assert z.grad[0, 0].abs().max() == 0


def test_band_loss_values():
    e = torch.tensor([10.0])
    zero = volume_band_loss(torch.tensor([900.0]), torch.tensor([800.0]), torch.tensor([1200.0]), e)
    under = volume_band_loss(torch.tensor([0.0]), torch.tensor([800.0]), torch.tensor([1200.0]), e)
    over = volume_band_loss(torch.tensor([2410.0]), torch.tensor([800.0]), torch.tensor([1200.0]), e)
    free = volume_band_loss(torch.tensor([90.0]), torch.tensor([0.0]), torch.tensor([0.0]), e)
    assert zero.item() == 0.0
    assert math.isclose(under.item(), math.log(81.0), rel_tol=1e-6)
    assert math.isclose(over.item(), math.log(2.0), rel_tol=1e-6)
    assert math.isclose(free.item(), math.log(10.0), rel_tol=1e-6)


def test_small_tumours_are_not_silent():
    """A 5 mm tumour (65 mm3) with nothing predicted still gets a loss of order 1 (the reference gives 0.09)."""
    loss, _ = VolumeLoss()(_logits(torch.zeros_like(BALL)), _targets(5.0))
    assert loss.item() > 1.0


def test_presence_only_and_lower_bound_counts_have_no_upper_edge():
    lo, hi = volume_bounds_mm3([1000.0], 2, False, 0.2, 5.0)
    assert math.isclose(lo, 800.0 + 2 * math.pi * 125 / 6)
    assert hi == float("inf")
    lo, hi = volume_bounds_mm3([1000.0], 0, True, 0.2, 5.0)
    assert (lo, hi) == (800.0, float("inf"))
    # "multiple lesions" without sizes: a large prediction costs nothing, an empty one does.
    big, _ = VolumeLoss()(_logits(ORGAN), _targets(None, count=2, lower=True))
    empty, _ = VolumeLoss()(_logits(torch.zeros_like(BALL)), _targets(None, count=2, lower=True))
    assert big.item() == 0.0 and empty.item() > 1.0


def test_lesion_free_organ_gets_the_zero_volume_term():
    ok, _ = VolumeLoss()(_logits(torch.zeros_like(BALL)), _targets(None, state=GroupState.LESION_FREE))
    bad, _ = VolumeLoss()(_logits(BALL), _targets(None, state=GroupState.LESION_FREE))
    assert ok.item() < 1e-6
    assert math.isclose(bad.item(), math.log(1 + BALL.sum().item() / 10.0), rel_tol=1e-4)


def test_normalised_over_supervised_entries_only():
    """An extra item without report supervision must not dilute the loss."""
    one = _targets(_diameter(BALL) * 2)
    z1 = _logits(BALL)
    loss1, _ = VolumeLoss()(z1, one)
    group = GroupEntry(ORGAN, 1, tumors=(TargetTumor((_diameter(BALL) * 2,) * 3),))
    two = build_report_targets([[group], []], (S, S, S), [(1.0, 1.0, 1.0)] * 2)
    z2 = torch.cat([z1.detach(), _logits(BALL).detach()]).requires_grad_(True)
    loss2, n = VolumeLoss()(z2, two)
    assert n.item() == 1.0
    assert math.isclose(loss1.item(), loss2.item(), rel_tol=1e-6)


def test_volume_uses_physical_spacing():
    spacing = (3.0, 1.0, 1.0)
    organ = ellipsoid((S, S, S), (20, 20, 20), (40, 12, 12), spacing)
    tumour = ellipsoid((S, S, S), (20, 20, 20), (6, 6, 6), spacing)
    d = _diameter(tumour, math.prod(spacing))
    group = GroupEntry(organ, 1, tumors=(TargetTumor((d, d, d)),))
    loss, _ = VolumeLoss()(_logits(tumour), build_report_targets([[group]], (S, S, S), [spacing]))
    assert loss.item() == 0.0
    loss_wrong, _ = VolumeLoss()(_logits(tumour), build_report_targets([[group]], (S, S, S), [(1.0, 1.0, 1.0)]))
    assert loss_wrong.item() > 0.5
