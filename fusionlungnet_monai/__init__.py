"""FusionLungNet lung CT segmentation as MONAI components and a MONAI bundle.

Public API (also what the bundle configs reference by ``_target_``):

- networks: :class:`FusionLungNet`, :class:`ResidualRefinementModule` and the blocks (CAA, MFF, SR)
- loss: :class:`HybridLoss`
"""

from fusionlungnet_monai.losses import HybridLoss
from fusionlungnet_monai.networks import (
    CAA,
    MFF,
    RRM,
    SR,
    ChannelAggregationAttention,
    FusionLungNet,
    MultiScaleFeatureFusion,
    ResidualRefinementModule,
    SelfRefinement,
)
from fusionlungnet_monai.version import __version__

__all__ = [
    "CAA",
    "ChannelAggregationAttention",
    "FusionLungNet",
    "HybridLoss",
    "MFF",
    "MultiScaleFeatureFusion",
    "RRM",
    "ResidualRefinementModule",
    "SR",
    "SelfRefinement",
    "__version__",
]
