"""MONAI transforms of FusionLungNet, split as MONAI splits its own: preprocessing (:mod:`.pre`: the paper's §4.7
steps, the picture-to-HU mapping and the chain every config takes) and post-processing (:mod:`.post`: the HU
boundary refinement, the body outline, the airway removal, the lungs as the largest components, and the slab-wise
inverse of the preprocessing), each with array and dictionary forms."""

from fusionlungnet_monai.transforms.post.array import (
    FillMaskHoles,
    HUBoundaryRefine,
    KeepLargestComponents,
    RemoveAirways,
    RemoveOutsideBody,
)
from fusionlungnet_monai.transforms.post.chain import MASK_THRESHOLD, LogitsToMaskd
from fusionlungnet_monai.transforms.post.dictionary import (
    FillMaskHolesd,
    HUBoundaryRefined,
    KeepLargestComponentsd,
    RemoveAirwaysd,
    RemoveOutsideBodyd,
)
from fusionlungnet_monai.transforms.post.invert import SlabwiseInvertd
from fusionlungnet_monai.transforms.pre.array import (
    ArtifactRemoval,
    BinarizeMask,
    CTIntensityNormalize,
    DynamicThreshold,
    FieldOfViewPad,
    MedianFilter,
    SqueezeSingleSlice,
)
from fusionlungnet_monai.transforms.pre.chain import LungCTPreprocessing, paper_preprocessing
from fusionlungnet_monai.transforms.pre.dictionary import (
    ArtifactRemovald,
    BinarizeMaskd,
    CTIntensityNormalized,
    DynamicThresholdd,
    FieldOfViewPadd,
    KeepHUd,
    MedianFilterd,
    PictureToHUd,
    RandCTWindowd,
    SqueezeSingleSliced,
)
from fusionlungnet_monai.transforms.pre.picture import PictureToHU, RandCTWindow, estimate_picture_window, render_window
from fusionlungnet_monai.utils.hu import DEFAULT_HU_WINDOW, compact_hu
from fusionlungnet_monai.utils.masks import median3x3_below

__all__ = [
    "DEFAULT_HU_WINDOW",
    "MASK_THRESHOLD",
    "ArtifactRemoval",
    "ArtifactRemovald",
    "BinarizeMask",
    "BinarizeMaskd",
    "CTIntensityNormalize",
    "CTIntensityNormalized",
    "DynamicThreshold",
    "DynamicThresholdd",
    "FieldOfViewPad",
    "FieldOfViewPadd",
    "FillMaskHoles",
    "FillMaskHolesd",
    "HUBoundaryRefine",
    "HUBoundaryRefined",
    "KeepHUd",
    "KeepLargestComponents",
    "KeepLargestComponentsd",
    "LogitsToMaskd",
    "LungCTPreprocessing",
    "RemoveAirways",
    "RemoveAirwaysd",
    "RemoveOutsideBody",
    "RemoveOutsideBodyd",
    "MedianFilter",
    "MedianFilterd",
    "PictureToHU",
    "PictureToHUd",
    "RandCTWindow",
    "RandCTWindowd",
    "estimate_picture_window",
    "render_window",
    "SlabwiseInvertd",
    "SqueezeSingleSlice",
    "SqueezeSingleSliced",
    "compact_hu",
    "median3x3_below",
    "paper_preprocessing",
]
