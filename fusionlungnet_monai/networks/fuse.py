"""Inference-time folding of BatchNorm into the convolution before it (MONAI has no such utility)."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn"]

#: MONAI ResNet modules whose forward applies ``bnK`` right after ``convK``
_RESNET_PAIRS = {ResNetBottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
                 ResNetBlock: (("conv1", "bn1"), ("conv2", "bn2")),
                 ResNet: (("conv1", "bn1"),)}


def _foldable(conv, bn) -> bool:
    return (isinstance(conv, _ConvNd) and not conv.transposed and isinstance(bn, _BatchNorm)
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def _fold(conv: _ConvNd, bn: _BatchNorm) -> _ConvNd:
    """The folded conv, its weight in the conv's memory format (``channels_last`` stays so)."""
    fused = fuse_conv_bn_eval(conv, bn)
    if conv.weight.dim() == 4 and conv.weight.is_contiguous(memory_format=torch.channels_last):
        fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)
    return fused


def _pairs(module: nn.Module):
    """``(parent, conv name, norm parent, norm name)`` of every BatchNorm that directly follows a convolution."""
    if isinstance(module, Convolution):  # MONAI's conv -> ADN block: conv, then ADN's "N" when it comes first
        adn = module._modules.get("adn")
        if adn is not None and next(iter(adn._modules), None) == "N":
            yield module, "conv", adn, "N"
        return
    for cls, names in _RESNET_PAIRS.items():
        if isinstance(module, cls):
            for c, b in names:
                yield module, c, module, b
            return
    if isinstance(module, nn.Sequential):  # e.g. a ResNet's downsample: conv, norm
        names = list(module._modules)
        for c, b in zip(names, names[1:]):
            yield module, c, module, b


def fuse_conv_bn(network: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it, in place, for inference.

    The network is put in eval mode; each folded BatchNorm becomes ``nn.Identity``. The outputs are those of the
    network in eval mode up to float rounding, with one pass fewer over every feature map (BatchNorm in eval mode is
    an affine map per channel). Covers MONAI ``Convolution`` blocks (norm first in their ADN), MONAI ResNets and
    ``conv, norm`` pairs in ``nn.Sequential``. Load weights before folding: the folded state dict has no BatchNorm
    entries, and training a folded network no longer normalises batches.

    Args:
        network: the network, e.g. :class:`~fusionlungnet_monai.networks.FusionLungNet` with its weights loaded.

    Returns:
        ``network`` itself, folded.
    """
    network.eval()
    for module in list(network.modules()):
        for parent, c, norm_parent, b in list(_pairs(module)):
            conv, bn = parent._modules[c], norm_parent._modules[b]
            if _foldable(conv, bn):
                parent._modules[c] = _fold(conv, bn)
                norm_parent._modules[b] = nn.Identity()
    return network
