"""Residual Refinement Module (paper §4.5, Fig. 9; BASNet's RefUnet) as a stand-alone MONAI-style network."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from fusionlungnet_monai.networks.blocks import conv_norm_act, resize_to

__all__ = ["ResidualRefinementModule"]


class ResidualRefinementModule(nn.Module):
    """RRM: a small residual encoder-decoder that adds a learned correction to coarse segmentation logits.

    ``3x3 conv -> (levels + 1) conv levels with ``levels`` max-pools -> bilinear up-sampling with shortcut
    concatenation -> 3x3 conv to out_channels``, added to the first ``out_channels`` input channels (logit space).
    The last conv is 3x3 as in the official code (the paper's Fig. 9 draws 1x1). Any input size works: pooling
    uses ``ceil_mode`` and up-sampling goes to the shortcut's size.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels: the coarse logits, optionally followed by extra context channels
            (e.g. the image); the first ``out_channels`` of them are the logits being refined.
        out_channels: channels of the refined logits.
        features: width of every conv level (64).
        levels: number of pooling steps (4, i.e. 5 conv levels).

    Raises:
        ValueError: when ``in_channels < out_channels`` or ``levels < 1``.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, features: int = 64,
                 levels: int = 4) -> None:
        super().__init__()
        if in_channels < out_channels:
            raise ValueError(f"in_channels ({in_channels}) must be >= out_channels ({out_channels}): the residual "
                             "is added to the first out_channels input channels.")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}.")
        self.out_channels = out_channels
        self.stem = conv_norm_act(spatial_dims, in_channels, features, 3, norm=False, act=False)
        self.down = nn.ModuleList([conv_norm_act(spatial_dims, features, features) for _ in range(levels)])
        self.bottom = conv_norm_act(spatial_dims, features, features)
        self.up = nn.ModuleList([conv_norm_act(spatial_dims, 2 * features, features) for _ in range(levels)])
        self.head = conv_norm_act(spatial_dims, features, out_channels, 3, norm=False, act=False)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        skips = []
        for conv in self.down:
            h = conv(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        i = len(skips) - 1
        for conv in self.up:  # deepest shortcut first
            skip = skips[i]
            h = conv(torch.cat([resize_to(h, skip), skip], dim=1))
            i -= 1
        residual = self.head(h)
        return x[:, : self.out_channels] + residual
