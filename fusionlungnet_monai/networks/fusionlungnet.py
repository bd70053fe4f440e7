"""FusionLungNet (paper §4, Fig. 5): ResNet-50 encoder, CAA, MFF + SR decoder, four side heads and an RRM."""

from __future__ import annotations

import logging
import os
from typing import List, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import ResNetFeatures

from fusionlungnet_monai.networks.blocks import (
    ChannelAggregationAttention,
    MultiScaleFeatureFusion,
    SelfRefinement,
    SideHead,
    SumFusion,
    conv_norm_act,
)
from fusionlungnet_monai.networks.rrm import ResidualRefinementModule

__all__ = ["FusionLungNet", "load_resnet50_weights"]

logger = logging.getLogger(__name__)

#: output stride of the encoder: inputs are padded internally to a multiple of it.
ENCODER_STRIDE = 32


def load_resnet50_weights(encoder: nn.Module, path: str | os.PathLike, in_channels: int) -> tuple[list, list]:
    """Load a torchvision-format ResNet-50 state dict from a local file into a MONAI ResNet encoder.

    ``fc.*`` entries are ignored, a ``module.`` prefix (DataParallel) is stripped, and with ``in_channels=1``
    the RGB ``conv1`` weights are summed over the colour axis.

    Args:
        encoder: the MONAI ``ResNetFeatures`` to fill.
        path: the ``.pth``/``.pt`` file (a state dict, or a dict holding one under ``state_dict``/``model``).
        in_channels: channels of the encoder's first conv.

    Returns:
        ``(missing_keys, unexpected_keys)`` of the load.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file holds no ResNet-50 weights or shapes do not match.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained_weights: no such file: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or unsafe content
        raise ValueError(f"pretrained_weights: {path} is not a loadable torch state dict ({type(e).__name__}).") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"pretrained_weights: {path} does not hold a state dict of tensors.")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    if not set(sd) & set(own):
        raise ValueError(f"pretrained_weights: {path} has no ResNet-50 keys (e.g. 'conv1.weight', 'layer1.0.conv1.weight').")
    w = sd.get("conv1.weight")
    if w is not None and w.shape[1] != in_channels:
        if in_channels == 1:
            sd["conv1.weight"] = w.sum(dim=1, keepdim=True)
        else:
            raise ValueError(f"pretrained_weights: conv1 has {w.shape[1]} input channels, network has {in_channels}.")
    bad = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    if bad:
        raise ValueError(f"pretrained_weights: {path} shape mismatch for {bad[:3]} (is it a ResNet-50?).")
    result = encoder.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        logger.warning("pretrained_weights %s: %d missing keys %s, %d unexpected keys %s", path,
                       len(result.missing_keys), result.missing_keys[:5], len(result.unexpected_keys),
                       result.unexpected_keys[:5])
    return list(result.missing_keys), list(result.unexpected_keys)


class FusionLungNet(nn.Module):
    """FusionLungNet for binary (or multi-channel sigmoid) lung segmentation of CT slices.

    Decoder wiring (official code): ``d5 = SR(CAA(B4))``, ``d4 = SR(MFF(B3, d5, d5))``,
    ``d3 = SR(MFF(B2, d4, d5))``, ``d2 = SR(MFF(B1, d3, d5))``; side heads on d2..d5; the RRM refines the d2 logits.

    Outputs are **logits** (never passed through a sigmoid here; losses and post-processing own that).
    In training mode with ``deep_supervision`` the forward returns ``[refined, side2, side3, side4, side5]``
    (without the RRM: ``[side2, side3, side4, side5]``), all at input size; otherwise one tensor, the final logits.
    Inputs of any size work: they are zero-padded to a multiple of 32 inside and the outputs cropped back.

    Args:
        spatial_dims: number of spatial dimensions (2 in the paper; 3 builds the same net with 3D convs).
        in_channels: 1 (CT) or 3 (RGB, e.g. to use ImageNet weights unchanged).
        out_channels: output channels (1 for lung vs background).
        features: width of the decoder (256 in the paper).
        deep_supervision: return the side outputs in training mode.
        pretrained_weights: optional path to a local torchvision ResNet-50 state dict (``None``: random init).
        use_caa: CAA on block 4; off: a 1x1 conv + BN + ReLU channel reduction (Table 4 ablation).
        use_mff: MFF fusion; off: the projected inputs are summed (``SumFusion``).
        use_sr: SR after each fusion; off: identity.
        use_rrm: residual refinement of the d2 logits; off: the d2 logits are the final output.
        rrm_features: width of the RRM.

    Raises:
        ValueError: for unsupported ``spatial_dims`` / ``in_channels``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: int = 256,
        deep_supervision: bool = True,
        pretrained_weights: str | None = None,
        use_caa: bool = True,
        use_mff: bool = True,
        use_sr: bool = True,
        use_rrm: bool = True,
        rrm_features: int = 64,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.use_rrm = use_rrm
        self.encoder = ResNetFeatures("resnet50", pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels)
        if pretrained_weights:
            load_resnet50_weights(self.encoder, pretrained_weights, in_channels)
        enc = (256, 512, 1024, 2048)
        self.caa = (ChannelAggregationAttention(spatial_dims, enc[3], features) if use_caa
                    else conv_norm_act(spatial_dims, enc[3], features, 1))
        fusion = MultiScaleFeatureFusion if use_mff else SumFusion
        self.fuse4 = fusion(spatial_dims, enc[2], features, features, features)
        self.fuse3 = fusion(spatial_dims, enc[1], features, features, features)
        self.fuse2 = fusion(spatial_dims, enc[0], features, features, features)

        def _sr() -> nn.Module:
            return SelfRefinement(spatial_dims, features, features) if use_sr else nn.Identity()

        self.sr5, self.sr4, self.sr3, self.sr2 = _sr(), _sr(), _sr(), _sr()
        self.side5 = SideHead(spatial_dims, features, out_channels)
        self.side4 = SideHead(spatial_dims, features, out_channels)
        self.side3 = SideHead(spatial_dims, features, out_channels)
        self.side2 = SideHead(spatial_dims, features, out_channels)
        self.rrm = (ResidualRefinementModule(spatial_dims, out_channels, out_channels, rrm_features, levels=4)
                    if use_rrm else nn.Identity())

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        stride = 32  # ENCODER_STRIDE, as a local for TorchScript
        pad: List[int] = []
        for size in x.shape[2:][::-1]:  # F.pad lists the last dimension first
            pad += [0, (stride - size % stride) % stride]
        return F.pad(x, pad) if sum(pad) > 0 else x

    def _crop(self, y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        for d in range(2, ref.dim()):
            if y.shape[d] != ref.shape[d]:
                y = y.narrow(d, 0, ref.shape[d])
        return y

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Args:
            x: ``(B, in_channels, *spatial)`` image, intensities in [0, 1].

        Returns:
            logits ``(B, out_channels, *spatial)``; a list of them in training mode with deep supervision.
        """
        xp = self._pad(x)
        feats = self.encoder(xp)
        b1, b2, b3, b4 = feats[1], feats[2], feats[3], feats[4]
        d5 = self.sr5(self.caa(b4))
        d4 = self.sr4(self.fuse4(b3, d5, d5))
        d3 = self.sr3(self.fuse3(b2, d4, d5))
        d2 = self.sr2(self.fuse2(b1, d3, d5))
        s2 = self.side2(d2, xp)
        final = self._crop(self.rrm(s2), x)
        if self.training and self.deep_supervision:
            sides = [self._crop(s2, x), self._crop(self.side3(d3, xp), x), self._crop(self.side4(d4, xp), x),
                     self._crop(self.side5(d5, xp), x)]
            return [final] + sides if self.use_rrm else sides
        return final
