"""Paper preprocessing (§4.7) as MONAI transforms: array versions, dictionary versions and the chain."""

from fusionlungnet_monai.transforms.array import (
    DEFAULT_HU_WINDOW,
    ArtifactRemoval,
    CTIntensityNormalize,
    DynamicThreshold,
    FieldOfViewPad,
    MedianFilter,
    SqueezeSingleSlice,
)
from fusionlungnet_monai.transforms.dictionary import (
    ArtifactRemovald,
    CTIntensityNormalized,
    DynamicThresholdd,
    FieldOfViewPadd,
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
    "FieldOfViewPad",
    "FieldOfViewPadd",
    "MedianFilter",
    "MedianFilterd",
    "SqueezeSingleSlice",
    "SqueezeSingleSliced",
    "paper_preprocessing",
]
