import torch

from train.losses import Attenuation, AttenuationLoss, BallLoss, LossConfig
from train.losses.attenuation import contrast_penalty, placement_prior, tumor_organ_contrast
from train.losses.targets import GroupEntry, TargetTumor, build_report_targets

from .synthetic import dice, ellipsoid

S = 32
ORGAN = ellipsoid((S, S, S), (16, 16, 16), (12, 10, 10))
BALL = ellipsoid((S, S, S), (15, 16, 17), (4, 4, 4))


def _run(tumour_hu: float, organ_hu: float, attenuation: Attenuation) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.full((1, 2, S, S, S), -5.0)
    z[0, 1][BALL] = 5.0
    z.requires_grad_(True)
    hu = torch.full((1, 1, S, S, S), -100.0)  # fat around the organ
    hu[0, 0][ORGAN] = organ_hu
    hu[0, 0][BALL] = tumour_hu
    d = (6.0 * BALL.sum().item() / torch.pi) ** (1 / 3)
    tg = build_report_targets(
        [[GroupEntry(ORGAN, 1, tumors=(TargetTumor((d, d, d), attenuation),))]], (S, S, S), [(1.0, 1.0, 1.0)]
    )
    # Without the placement prior the tumour is placed on the network's blob, whatever its brightness.
    loss = AttenuationLoss(LossConfig(ball_attenuation_prior=False))(z, tg, hu)
    loss.backward()
    return loss, z.grad


def test_hypo_tumour_on_brighter_organ_costs_nothing():
    loss, _ = _run(40.0, 110.0, Attenuation.HYPO)
    assert loss.item() == 0.0


def test_bright_tumour_reported_hypo_is_penalised():
    loss, grad = _run(150.0, 90.0, Attenuation.HYPO)
    assert abs(loss.item() - (60.0 + 10.0) / 50.0) < 0.05
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_hyper_and_iso():
    assert _run(150.0, 90.0, Attenuation.HYPER)[0].item() == 0.0
    assert _run(40.0, 110.0, Attenuation.HYPER)[0].item() > 1.0
    assert _run(95.0, 90.0, Attenuation.ISO)[0].item() == 0.0
    assert _run(40.0, 110.0, Attenuation.ISO)[0].item() > 1.0


def test_contrast_penalty_table():
    delta = torch.tensor([-30.0, -30.0, -30.0, -30.0, 5.0])
    codes = torch.tensor([0, 1, 2, 3, 2])
    out = contrast_penalty(delta, codes, margin_hu=10.0, scale_hu=10.0)
    assert out.tolist() == [0.0, 0.0, 2.0, 4.0, 0.0]


def test_contrast_is_the_probability_weighted_mean_difference():
    torch.manual_seed(5)
    p = torch.rand(6, 7, 8, dtype=torch.float64)
    hu = 200 * torch.rand(6, 7, 8, dtype=torch.float64) - 50
    regions = (torch.rand(2, 6, 7, 8) > 0.8).double()
    tissue = (torch.rand(6, 7, 8) > 0.3).double()
    got = tumor_organ_contrast(p, hu, regions, tissue)
    mean_t = [(p * r * hu).sum() / ((p * r).sum() + 1e-3) for r in regions]
    mean_o = ((1 - p) * tissue * hu).sum() / (((1 - p) * tissue).sum() + 1e-3)
    assert torch.allclose(got, torch.stack(mean_t) - mean_o, rtol=1e-12)


def test_placement_prior_follows_the_reported_direction():
    # Organ: tissue at 110 and 105 HU, a dark and a bright spot, fat; outside it a dark neighbour and fat.
    hu = torch.tensor([110.0, 105.0, 40.0, 180.0, -100.0, 40.0, -100.0]).view(1, 1, 7)
    organ = torch.tensor([True, True, True, True, True, False, False]).view(1, 1, 7)  # median 105 HU
    hypo = placement_prior(hu, organ, Attenuation.HYPO, margin_hu=10.0, softness_hu=5.0).flatten()
    hyper = placement_prior(hu, organ, Attenuation.HYPER, margin_hu=10.0, softness_hu=5.0).flatten()
    assert hypo[2].item() > 0.99 and hyper[3].item() > 0.99
    assert hypo[3].item() < 1e-6 and hyper[2].item() < 1e-6
    expected = torch.sigmoid(torch.tensor(-3.0)) * torch.sigmoid(torch.tensor(28.0))  # 5 HU brighter: (-5 - 10) / 5
    assert abs(hypo[0].item() - expected.item()) < 1e-6
    assert hypo[4].item() < 1e-5  # fat is darker still, but no tumour
    assert hypo[5].item() == 0.0 and hypo[6].item() == 0.0 and hyper[5].item() == 0.0  # outside the organ
    assert placement_prior(hu, organ, Attenuation.ISO, 10.0, 5.0) is None
    assert placement_prior(hu, organ, Attenuation.UNKNOWN, 10.0, 5.0) is None
    assert not placement_prior(hu, torch.zeros_like(organ), Attenuation.HYPO, 10.0, 5.0).any()  # empty organ


def _placed_core(cfg: LossConfig, hot_logit: float = 2.0, dark_logit: float = -1.0, hot_hu: float | None = None):
    """The Ball Loss's placed tumour when the network is surest of a normal spot (``hot``, organ HU unless
    ``hot_hu``) and the real tumour (``dark``) is hypo-attenuating."""
    dark = ellipsoid((S, S, S), (10, 16, 16), (4, 4, 4))
    hot = ellipsoid((S, S, S), (22, 16, 16), (4, 4, 4))
    z = torch.full((1, 2, S, S, S), -3.0)
    z[0, 1][hot] = hot_logit
    z[0, 1][dark] = dark_logit
    hu = torch.full((1, 1, S, S, S), -100.0)
    hu[0, 0][ORGAN] = 110.0
    if hot_hu is not None:
        hu[0, 0][hot] = hot_hu
    hu[0, 0][dark] = 45.0
    d = (6.0 * dark.sum().item() / torch.pi) ** (1 / 3)
    tg = build_report_targets(
        [[GroupEntry(ORGAN, 1, tumors=(TargetTumor((d, d, d), Attenuation.HYPO),))]], (S, S, S), [(1.0, 1.0, 1.0)]
    )
    placement, _ = BallLoss(cfg)(z, tg, hu).placements[0]
    return placement.core == 1, dark, hot


def test_attenuation_prior_moves_the_ball_onto_the_dark_tumour():
    core, dark, hot = _placed_core(LossConfig(ball_attenuation_prior=True))
    assert dice(core, dark) > 0.8 and not (core & hot).any()
    core, dark, hot = _placed_core(LossConfig(ball_attenuation_prior=False))
    assert dice(core, hot) > 0.8 and not (core & dark).any()  # probability alone picks the network's hot spot


def test_network_trust_zero_places_by_the_reported_attenuation_alone():
    # The hot spot is a little darker than the organ (95 against 110 HU) and the network's favourite.
    spot = dict(hot_logit=4.0, dark_logit=-8.0, hot_hu=95.0)
    core, dark, hot = _placed_core(LossConfig(ball_network_trust=1.0), **spot)
    assert dice(core, hot) > 0.8 and not (core & dark).any()
    core, dark, hot = _placed_core(LossConfig(ball_network_trust=0.0), **spot)
    assert dice(core, dark) > 0.8 and not (core & hot).any()
