import pytest
import torch

from train.losses import Attenuation, GroupState, LossConfig, ReportSupervisionLoss, ReportTargets, TumorStatus
from train.losses.targets import GroupEntry, TargetTumor, build_report_targets

from .synthetic import ellipsoid

S = 32
ISO = (1.0, 1.0, 1.0)
PANCREAS = ellipsoid((S, S, S), (16, 16, 16), (12, 8, 8))
KIDNEY = ellipsoid((S, S, S), (16, 8, 24), (6, 5, 5))


def _batch():
    """Item 0: report CT with a pancreas tumour and a lesion-free kidney; item 1: mask CT, no report groups."""
    labels = torch.zeros(2, 4, S, S, S)
    labels[:, 0] = PANCREAS.float()
    labels[1, 2] = ellipsoid((S, S, S), (16, 16, 16), (3, 3, 3)).float()
    unknown = torch.zeros(2, 4, S, S, S, dtype=torch.bool)
    unknown[0, 2] = PANCREAS  # lesion channel unknown where the report puts a tumour
    groups = [
        GroupEntry(PANCREAS, 2, tumors=(TargetTumor((8.0, 6.0, 7.0), Attenuation.HYPO),)),
        GroupEntry(KIDNEY, 3, state=GroupState.LESION_FREE),
    ]
    targets = build_report_targets([groups, []], (S, S, S), [ISO, ISO])
    hu = torch.full((2, 1, S, S, S), 100.0)
    return labels, unknown, torch.tensor([False, True]), targets, hu


def _two_head_loss(seed: int, aux_size: int):
    """Random two-head logits (the auxiliary head ``aux_size``³) through the full loss, backward done."""
    torch.manual_seed(seed)
    batch = _batch()
    heads = [torch.randn(2, 4, S, S, S, requires_grad=True),
             torch.randn(2, 4, aux_size, aux_size, aux_size, requires_grad=True)]
    loss, parts = ReportSupervisionLoss(LossConfig(lesion_channels=[2, 3]))(heads, *batch)
    loss.backward()
    return heads, loss, parts, batch


def test_two_heads_give_finite_gradients_and_all_components():
    heads, loss, parts, (labels, unknown, has_mask, targets, hu) = _two_head_loss(0, 16)
    assert torch.isfinite(loss) and all(torch.isfinite(h.grad).all() for h in heads)
    assert parts["n_volume"].item() == 2.0  # tumour group + lesion-free kidney
    assert parts["n_ball_groups"].item() == 1.0 and parts["n_attenuation"].item() == 1.0
    assert parts["volume"].item() > 0 and parts["ball_bce"].item() > 0 and parts["seg_bce"].item() > 0
    assert parts["tumor_status"].tolist() == [[int(TumorStatus.PLACED)], [int(TumorStatus.PADDING)]]
    # Unknown voxels (plus the 2 mm margin) get no segmentation gradient from item 0's lesion channel, while the
    # Ball Loss (final head) does reach them.
    assert heads[0].grad[0, 2][PANCREAS].abs().sum() > 0
    cfg_no_report = LossConfig(report_weight=0.0)
    heads2 = [h.detach().clone().requires_grad_(True) for h in heads]
    ReportSupervisionLoss(cfg_no_report)(heads2, labels, unknown, has_mask, targets, hu)[0].backward()
    assert heads2[0].grad[0, 2][PANCREAS].abs().max() == 0


def test_total_is_the_documented_weighted_sum():
    torch.manual_seed(1)
    labels, unknown, has_mask, targets, hu = _batch()
    heads = [torch.randn(2, 4, S, S, S), torch.randn(2, 4, 16, 16, 16)]
    cfg = LossConfig(deep_supervision_weights=[0.7, 0.3], report_weight=0.5, attenuation_weight=0.2)
    loss, p = ReportSupervisionLoss(cfg)(heads, labels, unknown, has_mask, targets, hu)
    # Components are already head-weighted; the volume is on the last head only, the ball on the first.
    expected = (p["seg_bce"] + p["seg_dice"]) + 0.5 * (p["volume"] + p["ball_bce"] + p["ball_dice"]
                                                        + 0.2 * p["attenuation"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_empty_crop_and_no_report_groups():
    labels = torch.zeros(1, 4, S, S, S)
    unknown = torch.zeros(1, 4, S, S, S, dtype=torch.bool)
    z = torch.randn(1, 4, S, S, S, requires_grad=True)
    targets = ReportTargets.empty(1, (S, S, S))
    loss, parts = ReportSupervisionLoss()(z, labels, unknown, torch.tensor([True]), targets)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert parts["volume"].item() == 0.0 and parts["n_ball_groups"].item() == 0.0


def test_report_ct_can_be_excluded_from_the_segmentation_loss():
    labels, unknown, has_mask, targets, hu = _batch()
    z = torch.randn(2, 4, S, S, S, requires_grad=True)
    cfg = LossConfig(seg_on_report_cts=False, report_weight=0.0)
    ReportSupervisionLoss(cfg)(z, labels, unknown, has_mask, targets)[0].backward()
    assert z.grad[0].abs().max() == 0 and z.grad[1].abs().max() > 0


def test_config_errors_are_clear():
    labels, unknown, has_mask, targets, hu = _batch()
    z = torch.randn(2, 4, S, S, S)
    with pytest.raises(ValueError, match="deep_supervision_weights"):
        ReportSupervisionLoss(LossConfig(deep_supervision_weights=[0.5, 0.5]))(z, labels, unknown, has_mask, targets)
    with pytest.raises(ValueError, match="lesion_channels"):
        ReportSupervisionLoss(LossConfig(lesion_channels=[1]))(z, labels, unknown, has_mask, targets)


def test_targets_contract():
    labels, unknown, has_mask, targets, hu = _batch()
    targets.validate()
    assert targets.to("cpu").tumor_volume_mm3[0, 0].item() == pytest.approx(torch.pi * 8 * 6 * 7 / 6, rel=1e-6)
    assert targets.group_channel.tolist() == [[2, 3], [-1, -1]]
    bad = ReportTargets.empty(1, (4, 4, 4))
    object.__setattr__(bad, "tumor_group", torch.tensor([[5]]))
    with pytest.raises(ValueError, match="tumor_group"):
        bad.validate()


def test_nothing_supervised_is_still_a_differentiable_zero():
    labels, unknown, has_mask, targets, hu = _batch()
    z = torch.randn(2, 4, S, S, S, requires_grad=True)
    cfg = LossConfig(seg_weight=0.0, report_weight=0.0)
    loss, _ = ReportSupervisionLoss(cfg)(z, labels, unknown, has_mask, targets)
    loss.backward()
    assert loss.item() == 0.0 and z.grad.abs().max() == 0


def test_auxiliary_head_with_a_non_integer_size_ratio():
    heads, loss, parts, _ = _two_head_loss(2, 12)
    assert torch.isfinite(loss) and all(torch.isfinite(h.grad).all() for h in heads)
    assert parts["n_volume"].item() == 2.0 and heads[1].grad[0, 2].abs().sum() > 0


def test_early_channels_keep_their_report_losses_while_the_schedule_holds_the_others():
    torch.manual_seed(2)
    labels, unknown, has_mask, targets, hu = _batch()  # pancreas tumour on channel 2, lesion-free kidney on 3
    z = torch.randn(2, 4, S, S, S)

    def parts(**cfg):
        return ReportSupervisionLoss(LossConfig(lesion_channels=[2, 3], seg_weight=0.0, **cfg))(
            z, labels, unknown, has_mask, targets, hu)[1]

    full = parts()
    before_start = parts(report_early_channels=[2], report_late_factor=0.0)
    # the kidney's lesion-free volume term is off; the pancreas keeps its Ball and Volume Losses at full weight
    assert before_start["n_volume"].item() == 1.0 and before_start["n_ball_groups"].item() == 1.0
    assert before_start["ball_bce"].item() == pytest.approx(full["ball_bce"].item())
    nothing = parts(report_early_channels=[3], report_late_factor=0.0)  # only the lesion-free kidney
    assert nothing["n_ball_groups"].item() == 0.0 and nothing["n_volume"].item() == 1.0
    half = parts(report_early_channels=[3], report_late_factor=0.5)  # the pancreas ramping up: half its terms
    assert half["ball_bce"].item() == pytest.approx(0.5 * full["ball_bce"].item(), rel=1e-5)
    assert half["ball_dice"].item() == pytest.approx(0.5 * full["ball_dice"].item(), rel=1e-5)
    assert half["attenuation"].item() == pytest.approx(0.5 * full["attenuation"].item(), rel=1e-5)
    crop = parts(ball_bce_normalization="crop")
    early_class = parts(ball_bce_normalization="crop", report_early_channels=[2], ball_bce_normalization_early="class")
    assert early_class["ball_bce"].item() == pytest.approx(full["ball_bce"].item())
    assert crop["ball_bce"].item() != pytest.approx(full["ball_bce"].item())
    with pytest.raises(ValueError, match="not lesion channels"):
        LossConfig(lesion_channels=[2, 3], report_early_channels=[1])
