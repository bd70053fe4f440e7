"""FusionLungNet and its blocks as MONAI-style networks."""

from fusionlungnet_monai.networks.blocks import (
    ChannelAggregationAttention,
    MultiScaleFeatureFusion,
    SelfRefinement,
    SideHead,
    SumFusion,
)
from fusionlungnet_monai.networks.fuse import fuse_conv_bn
from fusionlungnet_monai.networks.fusionlungnet import FusionLungNet, load_resnet50_weights
from fusionlungnet_monai.networks.rrm import ResidualRefinementModule

#: short aliases named after the paper
CAA = ChannelAggregationAttention
MFF = MultiScaleFeatureFusion
SR = SelfRefinement
RRM = ResidualRefinementModule

__all__ = [
    "CAA",
    "ChannelAggregationAttention",
    "FusionLungNet",
    "MFF",
    "MultiScaleFeatureFusion",
    "RRM",
    "ResidualRefinementModule",
    "SR",
    "SelfRefinement",
    "SideHead",
    "SumFusion",
    "fuse_conv_bn",
    "load_resnet50_weights",
]
