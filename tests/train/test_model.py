import pytest
import torch
from torch import nn

from train.config import ModelConfig
from train.model import available_networks, build_network, check_patch_size, register_network


@pytest.mark.parametrize("name", ["dynunet", "segresnet"])
def test_heads_at_input_size_in_training_single_output_in_eval(name):
    net = build_network(ModelConfig(name=name, filters=[4, 8, 16], deep_supervision_heads=1), 1, 3)
    x = torch.randn(1, 1, 16, 16, 8)
    heads = net.train()(x)
    assert isinstance(heads, list) and len(heads) == 2
    assert all(h.shape == (1, 3, 16, 16, 8) for h in heads)
    assert net.eval()(x).shape == (1, 3, 16, 16, 8)


def test_user_networks_by_registry_and_import_path():
    @register_network("tiny_test_net")
    def build(config, in_channels, out_channels):
        return nn.Conv3d(in_channels, out_channels, 1)

    assert "tiny_test_net" in available_networks()
    assert isinstance(build_network(ModelConfig(name="tiny_test_net"), 1, 2), nn.Conv3d)
    # `module:attribute` needs no registration (nn.Identity accepts and ignores the factory arguments).
    assert isinstance(build_network(ModelConfig(name="torch.nn:Identity"), 1, 2), nn.Identity)
    with pytest.raises(ValueError, match="not registered"):
        build_network(ModelConfig(name="nope"), 1, 2)


def test_patch_size_must_pass_every_level():
    check_patch_size(ModelConfig(filters=[4, 8, 16]), (16, 16, 8))
    with pytest.raises(ValueError, match="multiples of 4"):
        check_patch_size(ModelConfig(filters=[4, 8, 16]), (18, 16, 8))


@pytest.mark.parametrize("name", ["dynunet", "segresnet"])
def test_output_bias_sets_a_background_prior_on_every_head(name):
    cfg = ModelConfig(name=name, filters=[4, 8, 16], deep_supervision_heads=1, output_bias=-3.0)
    torch.manual_seed(0)
    net = build_network(cfg, 1, 3).eval()
    with torch.no_grad():
        # A constant input gives constant features; the head's bias decides the mean logit.
        probs = torch.sigmoid(net(torch.zeros(1, 1, 16, 16, 8)))
    assert probs.shape == (1, 3, 16, 16, 8)
    torch.manual_seed(0)
    default = torch.sigmoid(build_network(cfg.model_copy(update={"output_bias": None}), 1, 3).eval()(
        torch.zeros(1, 1, 16, 16, 8)).detach())
    assert default.mean() > 0.3 and probs.mean() < 0.1
