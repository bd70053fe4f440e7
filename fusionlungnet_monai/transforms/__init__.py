"""Paper preprocessing (§4.7) as MONAI transforms: array versions, dictionary versions and the chain; plus the HU
boundary refinement and the airway removal of the network's output (post-processing, ours)."""

from fusionlungnet_monai.transforms.array import (
    DEFAULT_HU_WINDOW,
    ArtifactRemoval,
    CTIntensityNormalize,
    DynamicThreshold,
    FieldOfViewPad,
    HUBoundaryRefine,
    MedianFilter,
    RemoveAirways,
    SqueezeSingleSlice,
    compact_hu,
    median3x3_below,
)
from fusionlungnet_monai.transforms.dictionary import (
    ArtifactRemovald,
    CTIntensityNormalized,
    DynamicThresholdd,
    FieldOfViewPadd,
    HUBoundaryRefined,
    KeepHUd,
    MedianFilterd,
    RemoveAirwaysd,
    SqueezeSingleSliced,
    paper_preprocessing,
)

__all__ = [
    "DEFAULT_HU_WINDOW",
    "ArtifactRemoval",
    "ArtifactRemovald",
    "CTIntensityNormalize",
    "CTIntensityNormalized",
    "DynamicThreshold",
    "DynamicThresholdd",
    "FieldOfViewPad",
    "FieldOfViewPadd",
    "HUBoundaryRefine",
    "HUBoundaryRefined",
    "KeepHUd",
    "RemoveAirways",
    "RemoveAirwaysd",
    "MedianFilter",
    "MedianFilterd",
    "SqueezeSingleSlice",
    "SqueezeSingleSliced",
    "compact_hu",
    "median3x3_below",
    "paper_preprocessing",
]
