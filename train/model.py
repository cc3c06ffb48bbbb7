"""Network registry: networks are chosen by name in the config, and users can register their own.

Every registered factory returns an ``nn.Module`` that maps an image (B, in, D, H, W) to sigmoid logits. In
training mode the module returns a list of heads ``[final, aux_1, ...]``, each (B, out, D, H, W) at the input size
(deep supervision); in eval mode it returns the final head only. :class:`DeepSupervisionAdapter` turns networks
that return heads at lower resolutions into that convention.

Register a network::

    from train.model import register_network

    @register_network("mynet")
    def build_mynet(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module: ...

or, without touching this package, name it in the config as ``model.name: mypackage.nets:build_mynet``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from train.config import ModelConfig

NetworkFactory = Callable[[ModelConfig, int, int], nn.Module]
_REGISTRY: dict[str, NetworkFactory] = {}


def register_network(name: str) -> Callable[[NetworkFactory], NetworkFactory]:
    """Decorator registering ``factory(config, in_channels, out_channels) -> nn.Module`` under ``name``."""

    def deco(factory: NetworkFactory) -> NetworkFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"network {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def available_networks() -> list[str]:
    """Registered names."""
    return sorted(_REGISTRY)


def build_network(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    """Instantiate the network named by ``config.name`` (registry name or ``module:attribute``).

    Raises:
        ValueError: unknown name, naming the registered ones.
    """
    if config.name in _REGISTRY:
        factory = _REGISTRY[config.name]
    elif ":" in config.name:
        module, _, attr = config.name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model.name {config.name!r}: cannot import {attr!r} from {module!r}: {exc}") from exc
    else:
        raise ValueError(f"model.name {config.name!r} is not registered; available: {available_networks()}")
    return factory(config, in_channels, out_channels)


class DeepSupervisionAdapter(nn.Module):
    """Wrap a network returning a list of heads at decreasing resolution into the registry convention.

    Args:
        net: module returning a tensor or a list of tensors (B, C, d, h, w), finest first, in training mode.
        num_heads: heads to keep (1 + auxiliary heads).
    """

    def __init__(self, net: nn.Module, num_heads: int):
        super().__init__()
        self.net = net
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.net(x)
        heads = list(out) if isinstance(out, (list, tuple)) else [out]
        if not self.training:
            return heads[0]
        size = x.shape[2:]
        return [
            h if h.shape[2:] == size else F.interpolate(h, size=size, mode="trilinear", align_corners=False)
            for h in heads[: self.num_heads]
        ]


class _DynUNetHeads(nn.Module):
    """DynUNet returns heads stacked on dim 1 in training mode; unstack them into a list."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.net(x)
        if self.training and out.dim() == x.dim() + 1:
            return list(out.unbind(1))
        return [out] if self.training else out


def dynunet_topology(levels: int) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides of an nnU-Net-like DynUNet with ``levels`` resolution levels (isotropic 3³)."""
    kernels = [[3, 3, 3]] * levels
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (levels - 1)
    return kernels, strides


def fill_output_bias(heads: Sequence[nn.Module], value: float | None) -> None:
    """Set the bias of each output head's convolution to ``value`` (a logit prior); None leaves them alone."""
    if value is None:
        return
    with torch.no_grad():
        for head in heads:
            if head.bias is None:
                raise ValueError(f"model.output_bias: output head {type(head).__name__} has no bias")
            head.bias.fill_(value)


@register_network("dynunet")
def build_dynunet(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI DynUNet (nnU-Net style) with ``deep_supervision_heads`` auxiliary heads."""
    from monai.networks.nets import DynUNet

    levels = len(config.filters)
    if config.deep_supervision_heads > levels - 2:
        raise ValueError(
            f"model.deep_supervision_heads={config.deep_supervision_heads} needs at least "
            f"{config.deep_supervision_heads + 2} levels in model.filters (got {levels})"
        )
    kernels, strides = dynunet_topology(levels)
    kwargs = dict(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(config.filters),
        dropout=config.dropout or None,
        deep_supervision=config.deep_supervision_heads > 0,
        deep_supr_num=max(config.deep_supervision_heads, 1),
        res_block=True,
    )
    kwargs.update(config.kwargs)
    net = DynUNet(**kwargs)
    fill_output_bias([net.output_block.conv.conv, *(h.conv.conv for h in net.deep_supervision_heads)],
                     config.output_bias)
    return _DynUNetHeads(net)


@register_network("segresnet")
def build_segresnet(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI SegResNetDS (deep-supervised SegResNet); ``filters[0]`` is the initial width."""
    from monai.networks.nets import SegResNetDS

    levels = len(config.filters)
    kwargs = dict(
        spatial_dims=3,
        init_filters=config.filters[0],
        in_channels=in_channels,
        out_channels=out_channels,
        blocks_down=tuple([1] + [2] * (levels - 1)),
        dsdepth=config.deep_supervision_heads + 1,
        norm="instance",
    )
    kwargs.update(config.kwargs)
    net = SegResNetDS(**kwargs)
    fill_output_bias([layer.head for layer in net.up_layers if getattr(layer, "head", None) is not None],
                     config.output_bias)
    return DeepSupervisionAdapter(net, config.deep_supervision_heads + 1)


def divisor_of(config: ModelConfig) -> int:
    """Input sizes must be multiples of this (2 ** (levels - 1))."""
    return 2 ** (len(config.filters) - 1)


def check_patch_size(config: ModelConfig, patch_size: Sequence[int]) -> None:
    """Raise ValueError when the patch size cannot pass through every down-sampling level."""
    d = divisor_of(config)
    if any(p % d for p in patch_size):
        raise ValueError(f"data.patch_size {tuple(patch_size)} must be multiples of {d} for {len(config.filters)} levels")
