"""Per-group work cropped to the box of the grown group mask equals the whole-crop computation.

The whole-crop results are obtained by giving every non-empty group the whole crop as its box, which runs the
code exactly as before the cropping was introduced (FFT sizes differ, so values agree to float rounding).
"""

import dataclasses

import pytest
import torch

from train.losses import Attenuation, BallLoss, GroupState, LossConfig, ReportSupervisionLoss, VolumeLoss, report
from train.losses.ball import BallParams, BallSize, place_tumors
from train.losses.morphology import dilate_mm, mask_box
from train.losses.plan import plan_groups
from train.losses.report import build_group_tensors
from train.losses.targets import GroupEntry, TargetTumor, build_report_targets

from .synthetic import ellipsoid

SHAPE = (30, 40, 36)


def _whole_crop_boxes(monkeypatch):
    """Make every non-empty group's box the whole crop (the computation before cropping)."""
    original = report.plan_groups

    def plan_whole(targets, lesion_channels=None):
        shape = tuple(targets.group_masks.shape[-3:])
        whole = tuple((0, n) for n in shape)
        return [g if g.box is None else dataclasses.replace(g, box=whole) for g in original(targets, lesion_channels)]

    monkeypatch.setattr(report, "plan_groups", plan_whole)


def _case(seed):
    """Two items; item 0 has two lesion groups and a lesion-free group on one channel, one group near a border."""
    gen = torch.Generator().manual_seed(seed)
    seg_a = ellipsoid(SHAPE, (10, 12, 11), (6, 7, 6))
    seg_b = ellipsoid(SHAPE, (12, 25, 12), (5, 6, 5)) & ~seg_a
    organ = ellipsoid(SHAPE, (26, 33, 30), (5, 6, 7), (1.0, 0.8, 0.9))  # at the far corner
    free = ellipsoid(SHAPE, (20, 20, 26), (4, 5, 4))
    empty = torch.zeros(SHAPE, dtype=torch.bool)
    spacing = [(1.0, 1.0, 1.0), (1.5, 0.8, 0.9)]
    samples = [
        [
            GroupEntry(seg_a, 2, tumors=(TargetTumor((9.0, 7.0, 8.0), Attenuation.HYPO), TargetTumor((5.0, 5.0, 5.0)))),
            GroupEntry(seg_b, 2, tumors=(TargetTumor((6.0, 6.0, 6.0), Attenuation.HYPER),)),
            GroupEntry(free, 2, state=GroupState.LESION_FREE),
            GroupEntry(empty, 3, tumors=(TargetTumor((5.0, 5.0, 5.0)),)),
        ],
        [GroupEntry(organ, 3, tumors=(TargetTumor((8.0, 8.0, 8.0), Attenuation.ISO), TargetTumor(None)))],
    ]
    targets = build_report_targets(samples, SHAPE, spacing)
    logits = 3.0 * torch.randn((2, 4, *SHAPE), generator=gen)
    aux = 3.0 * torch.randn((2, 4, 20, 20, 18), generator=gen)  # non-integer ratio along D
    labels = torch.zeros(2, 4, *SHAPE)
    labels[:, 0] = seg_a | seg_b
    labels[:, 1] = organ.float()
    unknown = torch.zeros(2, 4, *SHAPE, dtype=torch.bool)
    unknown[0, 2] = seg_a | seg_b
    hu = 100.0 + 30.0 * torch.randn((2, 1, *SHAPE), generator=gen)
    return logits, aux, labels, unknown, targets, hu


@pytest.mark.parametrize("margin", [4.0, 15.0])
def test_group_boxes_hold_the_grown_masks(margin):
    targets = _case(0)[4]
    plans = plan_groups(targets, [2, 3])
    groups = build_group_tensors(targets, plans, margin)
    for i, g in enumerate(plans):
        assert g.box == mask_box(targets.group_masks[g.item, g.slot])
        if g.box is None:
            assert groups.boxes[i] is None and groups.grown[i].sum() == 0
            continue
        assert groups.boxes[i] == mask_box(groups.grown[i])  # margin reach along the axes is exact
        expected = dilate_mm(targets.group_masks[g.item, g.slot], margin, g.spacing_mm)
        assert torch.equal(groups.grown[i].bool(), expected)
        if margin < 5:
            assert all(hi - lo < n for (lo, hi), n in zip(groups.boxes[i], SHAPE))  # the crop is really cropped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_place_tumors_on_the_region_box_equals_the_whole_crop(seed):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.sigmoid(3.0 * torch.randn(SHAPE, generator=gen))
    region = ellipsoid(SHAPE, (20, 14, 24), (7, 9, 8), (1.2, 0.9, 1.0))
    region[25:, 30:, 30:] = True  # a second piece at the border
    sizes = [BallSize(900.0, 14.0), BallSize(300.0, 9.0), BallSize(60.0, 5.0)]
    spacing = (1.2, 0.9, 1.0)
    whole = place_tumors(probs, region, sizes, spacing, BallParams(), box=tuple((0, n) for n in SHAPE))
    for box in (None, mask_box(region)):
        cropped = place_tumors(probs, region, sizes, spacing, BallParams(), box=box)
        for field in ("positive", "weight", "core", "guard", "status"):
            assert torch.equal(getattr(cropped, field), getattr(whole, field)), field


def _run_step(case, cfg):
    logits, aux, labels, unknown, targets, hu = case
    heads = [logits.clone().requires_grad_(True), aux.clone().requires_grad_(True)]
    total, parts = ReportSupervisionLoss(cfg)(heads, labels, unknown, torch.tensor([False, False]), targets, hu)
    total.backward()
    return parts, [h.grad for h in heads]


@pytest.mark.parametrize("seed,margin", [(0, 4.0), (1, 15.0)])
def test_step_loss_with_group_boxes_equals_the_whole_crop(monkeypatch, seed, margin):
    case = _case(seed)
    cfg = LossConfig(lesion_channels=[2, 3], ball_heads=[0, 1], volume_heads=[0, 1], group_margin_mm=margin)
    cropped_parts, cropped_grads = _run_step(case, cfg)
    _whole_crop_boxes(monkeypatch)
    whole_parts, whole_grads = _run_step(case, cfg)
    assert torch.equal(cropped_parts["tumor_status"], whole_parts["tumor_status"])
    scalars = [k for k, v in whole_parts.items() if v.dim() == 0]
    got = [cropped_parts[k].item() for k in scalars]
    assert got == pytest.approx([whole_parts[k].item() for k in scalars], rel=1e-5, abs=1e-7)
    assert cropped_parts["n_ball_groups"].item() == 4 and cropped_parts["ball_bce"].item() > 0
    for got, want in zip(cropped_grads, whole_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6 * want.abs().max().item())


def test_standalone_losses_with_group_boxes_equal_the_whole_crop(monkeypatch):
    logits, _, _, _, targets, hu = _case(3)
    cfg = LossConfig(lesion_channels=[2, 3], group_margin_mm=4.0)

    def run():
        z = logits.clone().requires_grad_(True)
        out = BallLoss(cfg)(z, targets, hu)
        vol, _ = VolumeLoss(cfg)(z, targets)
        (out.bce + out.dice + out.attenuation + vol).backward()
        placements = {i: (p.positive, p.core, p.guard) for i, (p, _) in out.placements.items()}
        return (out.bce, out.dice, out.attenuation, vol), out.status, placements, z.grad

    cropped = run()
    _whole_crop_boxes(monkeypatch)
    whole = run()
    assert [v.item() for v in cropped[0]] == pytest.approx([v.item() for v in whole[0]], rel=1e-5)
    assert torch.equal(cropped[1], whole[1])
    for i, masks in whole[2].items():
        assert all(torch.equal(a, b) for a, b in zip(cropped[2][i], masks))
    assert torch.allclose(cropped[3], whole[3], rtol=1e-4, atol=1e-6 * whole[3].abs().max().item())
    # The standalone gradient is zero outside the lesion channels (and built without writing those zeros).
    assert cropped[3][:, :2].abs().max() == 0 and cropped[3][:, 2:].abs().max() > 0
