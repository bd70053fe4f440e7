"""Paper preprocessing (§4.7) as MONAI transforms: array versions, dictionary versions and the chain."""

from fusionlungnet_monai.transforms.array import (
    DEFAULT_HU_WINDOW,
    ArtifactRemoval,
    CTIntensityNormalize,
    DynamicThreshold,
    MedianFilter,
    SqueezeSingleSlice,
)
from fusionlungnet_monai.transforms.dictionary import (
    ArtifactRemovald,
    CTIntensityNormalized,
    DynamicThresholdd,
    MedianFilterd,
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
    "MedianFilter",
    "MedianFilterd",
    "SqueezeSingleSlice",
    "SqueezeSingleSliced",
    "paper_preprocessing",
]
