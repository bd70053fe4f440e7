"""FusionLungNet building blocks (paper section 4): CAA, MFF, SR and the side heads.

Channel counts and wiring follow the authors' public code where the paper's figures are silent
(see ``docs/network.md``). Every block works for ``spatial_dims`` 2 or 3 (the paper uses 2).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["ChannelAggregationAttention", "MultiScaleFeatureFusion", "SelfRefinement", "SumFusion", "SideHead",
           "conv_norm_act", "resize_to"]


def conv_norm_act(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                  norm: bool = True, act: bool = True) -> Convolution:
    """Conv (with bias, as in the official code) -> optional BatchNorm -> optional ReLU (in place), 'same'
    padding."""
    return Convolution(
        spatial_dims, in_channels, out_channels, kernel_size=kernel_size, strides=1, bias=True,
        norm="BATCH" if norm else None, act=("relu", {"inplace": True}) if act else None,
        conv_only=not (norm or act),
    )


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear (2D) / trilinear (3D) resize of ``x`` to the spatial size of ``ref``; no-op when equal."""
    if x.shape[2:] == ref.shape[2:]:
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=ref.shape[2:], mode=mode, align_corners=False)


class ChannelAggregationAttention(nn.Module):
    """CAA (paper §4.2, Fig. 6, eq. 1-3): ``F_CAA = I4 ⊙ σ(GAP(C3x1(C1x3(F))))`` with ``I4 = C3x3(C1x1(F))``.

    As in the official code, the weight branch starts from the block-4 features through its own 1x1 conv
    (the paper's eq. 2 draws it from ``I4``) and ends with a sigmoid, which the paper does not mention.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the block-4 features (2048 for ResNet-50).
        out_channels: channels of the attended output (256).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int = 256) -> None:
        super().__init__()
        self.reduce = conv_norm_act(spatial_dims, in_channels, out_channels, 1)
        self.context = conv_norm_act(spatial_dims, out_channels, out_channels, 3)
        self.weight_reduce = conv_norm_act(spatial_dims, in_channels, out_channels, 1, norm=False)
        # asymmetric convs, one per spatial axis (3x1 then 1x3 in 2D)
        asym = []
        for axis in range(spatial_dims):
            k = [1] * spatial_dims
            k[axis] = 3
            asym.append(conv_norm_act(spatial_dims, out_channels, out_channels, k, norm=False))
        self.asymmetric = nn.Sequential(*asym)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i4 = self.context(self.reduce(x))
        w = self.asymmetric(self.weight_reduce(x))
        w = torch.sigmoid(w.mean(dim=list(range(2, w.dim())), keepdim=True))
        return i4 * w


class _ProjectedFusion(nn.Module):
    """The three input projections shared by MFF and its ablation: 3x3 conv + BN + ReLU each, the decoder and
    global branches resized to the encoder level's size."""

    def __init__(self, spatial_dims: int, encoder_channels: int, decoder_channels: int, global_channels: int,
                 out_channels: int = 256) -> None:
        super().__init__()
        self.proj_encoder = conv_norm_act(spatial_dims, encoder_channels, out_channels)
        self.proj_decoder = conv_norm_act(spatial_dims, decoder_channels, out_channels)
        self.proj_global = conv_norm_act(spatial_dims, global_channels, out_channels)

    def project(self, encoder: torch.Tensor, decoder: torch.Tensor,
                global_: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = self.proj_encoder(encoder)
        return resize_to(self.proj_decoder(decoder), b), b, resize_to(self.proj_global(global_), b)


class MultiScaleFeatureFusion(_ProjectedFusion):
    """MFF (paper §4.3, Fig. 7, eq. 4-8): pairwise products of three projected inputs, concat, 3x3 conv.

    Inputs are an encoder level ``b`` (sets the output size), the decoder level above ``a`` and the global
    CAA branch ``c``; each gets 3x3 conv + BN + ReLU to ``out_channels``, then ``a`` and ``c`` are resized to
    ``b``'s size (resizing after the conv, as the official code does: cheaper, same receptive field role).

    Args:
        spatial_dims: number of spatial dimensions.
        encoder_channels: channels of the encoder level.
        decoder_channels: channels of the decoder level above.
        global_channels: channels of the global (CAA) branch.
        out_channels: channels of every projection and of the output.
    """

    def __init__(self, spatial_dims: int, encoder_channels: int, decoder_channels: int, global_channels: int,
                 out_channels: int = 256) -> None:
        super().__init__(spatial_dims, encoder_channels, decoder_channels, global_channels, out_channels)
        self.fuse = conv_norm_act(spatial_dims, 3 * out_channels, out_channels)

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        a, b, c = self.project(encoder, decoder, global_)
        return self.fuse(torch.cat([a * b, b * c, a * c], dim=1))


class SumFusion(_ProjectedFusion):
    """Plain fusion used when MFF is ablated (paper Table 4 baseline): the same projections, summed."""

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        a, b, c = self.project(encoder, decoder, global_)
        return a + b + c


class SelfRefinement(nn.Module):
    """SR (paper §4.4, Fig. 8; GCPANet's SRM): ``F1 = ReLU(BN(C3x3(x)))``, ``[Fm, Fc] = C3x3(F1)``,
    output ``ReLU(F1 ⊙ Fm + Fc)``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        channels: channels of ``F1`` and of the output (256); the expansion has ``2 * channels``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: int = 256) -> None:
        super().__init__()
        self.channels = channels
        self.compress = conv_norm_act(spatial_dims, in_channels, channels)
        self.expand = conv_norm_act(spatial_dims, channels, 2 * channels, norm=False, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.compress(x)
        fm, fc = torch.split(self.expand(f1), self.channels, dim=1)
        return F.relu(f1 * fm + fc)


class SideHead(nn.Module):
    """Deep-supervision side output: 3x3 conv to ``out_channels`` logits, resized to the input size."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_norm_act(spatial_dims, in_channels, out_channels, 3, norm=False, act=False)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return resize_to(self.conv(x), ref)
