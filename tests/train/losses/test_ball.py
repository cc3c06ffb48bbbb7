import math

import pytest
import torch
import torch.nn.functional as F

from train.losses import BallLoss, GroupState, LossConfig, TumorStatus
from train.losses.ball import BallParams, BallSize, ball_loss_terms, place_tumors
from train.losses.morphology import dilate_mm
from train.losses.targets import GroupEntry, TargetTumor, build_report_targets

from .synthetic import dice, ellipsoid

S = 40
ISO = (1.0, 1.0, 1.0)
ORGAN = ellipsoid((S, S, S), (20, 20, 20), (15, 13, 13))


def _logits(*masks, shape=(S, S, S), background=-6.0):
    z = torch.full((1, 2, *shape), background)
    for m in masks:
        z[0, 1][m] = 6.0
    return z.requires_grad_(True)


def _eq_diameter(mask, spacing=ISO):
    return (6.0 * mask.sum().item() * math.prod(spacing) / math.pi) ** (1.0 / 3.0)


def _targets(organ, diameters, spacing=ISO, shape=(S, S, S), **group_kw):
    tumors = tuple(TargetTumor(None if d is None else (d, d, d)) for d in diameters)
    return build_report_targets([[GroupEntry(organ, 1, tumors=tumors, **group_kw)]], shape, [spacing])


# The geometry checks take 90 % of the reported volume as positives, so the pseudo-mask nearly covers the tumour.
NINETY = LossConfig(ball_positive_fraction=0.9)


def test_default_positives_are_the_most_confident_half_of_the_tumour():
    ball = ellipsoid((S, S, S), (18, 21, 22), (5, 5, 5))
    z = _logits(ball).detach()
    z[0, 1][ball] += torch.linspace(0.0, 1.0, int(ball.sum()))  # a confidence ranking inside the tumour
    out = BallLoss()(z.requires_grad_(True), _targets(ORGAN, [_eq_diameter(ball)]))
    placement, _ = out.placements[0]
    pos = placement.positive.bool()
    assert abs(pos.sum().item() - 0.5 * ball.sum().item()) <= 2 and not (pos & ~ball).any()
    assert z[0, 1][pos].min() >= z[0, 1][ball & ~pos].max()  # the most confident voxels first


def test_exact_ball_is_covered_by_the_pseudo_mask():
    ball = ellipsoid((S, S, S), (18, 21, 22), (5, 5, 5))
    out = BallLoss(NINETY)(_logits(ball), _targets(ORGAN, [_eq_diameter(ball)]))
    placement, _ = out.placements[0]
    assert dice(placement.positive, ball) >= 0.9
    assert (placement.positive.bool() & ~ball).sum() == 0
    assert out.status.tolist() == [[int(TumorStatus.PLACED)]]
    assert out.bce.item() < 0.01


def test_two_tumours_give_disjoint_masks_of_the_right_sizes():
    big = ellipsoid((S, S, S), (14, 20, 20), (6, 6, 6))
    small = ellipsoid((S, S, S), (28, 20, 20), (3, 3, 3))
    out = BallLoss(NINETY)(_logits(big, small), _targets(ORGAN, [_eq_diameter(small), _eq_diameter(big)]))
    placement, slots = out.placements[0]
    assert slots == [1, 0]  # largest first
    first, second = placement.core == 1, placement.core == 2
    assert not (first & second).any()
    pos = placement.positive.bool()
    assert dice(pos & first, big) > 0.9 and dice(pos & second, small) > 0.85
    assert abs((pos & first).sum().item() - 0.9 * big.sum().item()) <= 2
    assert abs((pos & second).sum().item() - 0.9 * small.sum().item()) <= 2


def test_anisotropic_pseudo_mask_has_the_reported_physical_volume():
    spacing = (2.5, 0.7, 0.7)
    shape = (24, 48, 48)
    organ = ellipsoid(shape, (12, 24, 24), (25, 14, 14), spacing)
    tumour = ellipsoid(shape, (11, 22, 26), (6, 6, 6), spacing)
    reported = 12.0
    out = BallLoss(NINETY)(_logits(tumour, shape=shape), _targets(organ, [reported], spacing, shape))
    placement, _ = out.placements[0]
    volume = placement.positive.sum().item() * math.prod(spacing)
    expected = 0.9 * math.pi * reported**3 / 6.0
    assert abs(volume - expected) / expected < 0.01
    assert dice(placement.positive, tumour) > 0.85


def test_place_tumors_handles_empty_regions_and_oversized_tumours():
    probs = torch.rand(16, 16, 16)
    region = torch.zeros(16, 16, 16, dtype=torch.bool)
    empty = place_tumors(probs, region, [BallSize(500.0, 10.0)], ISO, BallParams())
    assert empty.positive.sum() == 0 and empty.status.tolist() == [int(TumorStatus.TRUNCATED)]
    region[4:12, 4:12, 4:12] = True
    huge = place_tumors(probs, region, [BallSize(1e6, 150.0)], ISO, BallParams())
    assert huge.positive.sum() == 512 and huge.status.tolist() == [int(TumorStatus.TRUNCATED)]


def test_gradients_finite_for_empty_organ_empty_crop_and_huge_tumour():
    cfg = LossConfig()
    z = _logits()
    empty_organ = _targets(torch.zeros(S, S, S, dtype=torch.bool), [10.0])
    out = BallLoss(cfg)(z, empty_organ)
    (out.bce + out.dice).backward()
    assert torch.isfinite(z.grad).all()
    assert out.status.tolist() == [[int(TumorStatus.GROUP_EMPTY)]]

    z = _logits()
    out = BallLoss(cfg)(z, build_report_targets([[]], (S, S, S), [ISO]))
    (out.bce + out.dice).backward()
    assert torch.isfinite(z.grad).all() and out.n_groups == 0

    z = _logits()
    out = BallLoss(cfg)(z, _targets(ORGAN, [300.0]))
    (out.bce + out.dice).backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(out.bce)
    assert out.status.tolist() == [[int(TumorStatus.TRUNCATED)]]
    assert z.grad[0, 1][ORGAN].max() < 0  # everything in the organ is pushed up


def test_rest_of_the_segment_is_pushed_to_zero_only_when_all_sizes_are_known():
    ball = ellipsoid((S, S, S), (18, 21, 22), (4, 4, 4))
    far = ellipsoid((S, S, S), (30, 20, 20), (2, 2, 2))
    z = _logits(ball, far)
    out = BallLoss(NINETY)(z, _targets(ORGAN, [_eq_diameter(ball)]))
    out.bce.backward()
    assert z.grad[0, 1][far].min() > 0  # the extra blob is pushed down
    z = _logits(ball, far)
    out = BallLoss(NINETY)(z, _targets(ORGAN, [_eq_diameter(ball), None]))  # second tumour of unknown size
    out.bce.backward()
    assert z.grad[0, 1][far].abs().max() == 0
    assert out.status[0].tolist() == [int(TumorStatus.PLACED), int(TumorStatus.PRESENCE_ONLY)]


def test_count_only_report_with_prior_size_places_balls():
    blob = ellipsoid((S, S, S), (20, 20, 20), (5, 5, 5))
    cfg = LossConfig(count_prior_diameter_mm=10.0, ball_positive_fraction=0.9)
    out = BallLoss(cfg)(_logits(blob), _targets(ORGAN, [], count=1))
    placement, slots = out.placements[0]
    assert slots == [-1]
    assert dice(placement.positive, blob) > 0.85
    assert out.n_groups == 1


def test_lesion_free_groups_are_not_ball_supervised():
    tg = _targets(ORGAN, [], state=GroupState.LESION_FREE)
    assert BallLoss(NINETY)(_logits(), tg).n_groups == 0


def _terms_by_autograd(logits, positive, weight, negative, bce_voxels=None, eps=1e-5):
    n_pos, n_neg = positive.sum(), negative.sum()
    if bce_voxels is None:
        bce = (F.softplus(-logits) * weight).sum() / n_pos.clamp_min(1.0)
        bce = bce + (F.softplus(logits) * negative).sum() / n_neg.clamp_min(1.0)
    else:
        bce = ((F.softplus(-logits) * weight).sum() + (F.softplus(logits) * negative).sum()) / bce_voxels
    p = torch.sigmoid(logits)
    inter = (p * positive).sum()
    dice = (1.0 - (2.0 * inter + eps) / ((p * (positive + negative)).sum() + n_pos + eps)) * (n_pos > 0)
    return bce, dice


@pytest.mark.parametrize("bce_voxels", [None, 400])
@pytest.mark.parametrize("case", ["both", "no_positives", "no_negatives"])
def test_fused_ball_terms_match_autograd(case, bce_voxels):
    torch.manual_seed(4)
    shape = (5, 6, 7)
    positive = (torch.rand(shape) > 0.7).double() * (case != "no_positives")
    negative = (torch.rand(shape) > 0.5).double() * (1 - positive) * (case != "no_negatives")
    weight = positive * torch.rand(shape, dtype=torch.float64)
    z = (4 * torch.randn(shape, dtype=torch.float64)).requires_grad_(True)
    results = []
    for fn in (ball_loss_terms, _terms_by_autograd):
        z.grad = None
        bce, dice = fn(z, positive, weight, negative, bce_voxels)
        (1.3 * bce + 0.7 * dice).backward()
        results.append((bce.item(), dice.item(), z.grad.clone()))
    (fb, fd, fg), (rb, rd, rg) = results
    assert fb == pytest.approx(rb, rel=1e-12) and fd == pytest.approx(rd, rel=1e-12, abs=1e-15)
    assert torch.allclose(fg, rg, atol=1e-15)
    assert fg.abs().max() > 0


def test_crop_normalised_bce_weighs_positive_and_negative_voxels_alike():
    positive = torch.zeros(1000)
    positive[:10] = 1.0
    negative = 1.0 - positive
    z = torch.zeros(1000, requires_grad=True)
    bce, _ = ball_loss_terms(z, positive, positive, negative, bce_voxels=1000)
    bce.backward()
    assert bce.item() == pytest.approx(math.log(2.0))  # every voxel at p = 0.5 costs log 2, mean over the crop
    assert z.grad[0].item() == pytest.approx(-0.5 / 1000) and z.grad[-1].item() == pytest.approx(0.5 / 1000)
    z.grad = None
    balanced, _ = ball_loss_terms(z, positive, positive, negative)
    balanced.backward()
    assert z.grad[0].item() / -z.grad[-1].item() == pytest.approx(990 / 10)  # class means: 99x per positive voxel
    with pytest.raises(ValueError, match="bce_voxels"):
        ball_loss_terms(z, positive, positive, negative, bce_voxels=0)


def test_crop_normalisation_divides_the_ball_bce_by_the_crop_voxels():
    ball = ellipsoid((S, S, S), (18, 21, 22), (5, 5, 5))
    targets = _targets(ORGAN, [_eq_diameter(ball)])
    by_class = BallLoss(LossConfig())(_logits(ball), targets)
    by_crop = BallLoss(LossConfig(ball_bce_normalization="crop"))(_logits(ball), targets)
    unit = F.softplus(torch.tensor(-6.0)).item()  # every positive sits at +6 and every negative at -6
    assert by_class.bce.item() == pytest.approx(2 * unit, rel=1e-4)  # mean over positives + mean over negatives
    placement = by_crop.placements[0][0]
    negatives = dilate_mm(ORGAN, LossConfig().group_margin_mm, ISO) & ~placement.guard
    n_voxels = placement.positive.sum().item() + negatives.sum().item()
    assert by_crop.bce.item() == pytest.approx(n_voxels * unit / S**3, rel=1e-4)  # both sums over the crop's S^3
