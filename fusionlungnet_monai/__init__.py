"""FusionLungNet lung CT segmentation as MONAI components and a MONAI bundle.

Public API (everything the bundle configs reference by ``_target_`` is importable from here or its subpackage):

- networks: :class:`FusionLungNet`, :class:`ResidualRefinementModule` and the paper's blocks (CAA, MFF, SR)
- transforms (array + dictionary, MONAI style): median filter, dynamic threshold, artifact removal, CT intensity,
  and :func:`paper_preprocessing`
- loss and metrics: :class:`HybridLoss` (with :class:`SeparableSSIMLoss`), :class:`BinarySegmentationMetric`, :class:`SegmentationMetricHandler`,
  :func:`compute_segmentation_metrics`
- data: :class:`CTSeriesReader`, :func:`select_ct_series`, :func:`make_datalist`, :class:`InputError`
- phantoms: :func:`make_phantom` (simple), :func:`make_chest_phantom` (domain-randomised, for training)
- :func:`classical_lung_mask`: classical 3D HU lung segmentation (second opinion, pseudo-labels)
- bundle from Python: :func:`load_inference_workflow`, :func:`infer_tensors`
"""

from fusionlungnet_monai.classical import classical_lung_mask
from fusionlungnet_monai.config import amp_dtype, as_bool, check_checkpoint, check_training_settings
from fusionlungnet_monai.data import CTSeriesReader, InputError, make_datalist, scan_dicom_folder, select_ct_series
from fusionlungnet_monai.phantom import make_chest_phantom, make_phantom, write_phantom_case
from fusionlungnet_monai.losses import HybridLoss, SeparableSSIMLoss
from fusionlungnet_monai.metrics import BinarySegmentationMetric, SegmentationMetricHandler, compute_segmentation_metrics
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
from fusionlungnet_monai.transforms import (
    ArtifactRemoval,
    ArtifactRemovald,
    CTIntensityNormalize,
    CTIntensityNormalized,
    DynamicThreshold,
    DynamicThresholdd,
    FieldOfViewPad,
    FieldOfViewPadd,
    MedianFilter,
    MedianFilterd,
    SqueezeSingleSlice,
    SqueezeSingleSliced,
    paper_preprocessing,
)
from fusionlungnet_monai.version import __version__
from fusionlungnet_monai.workflow import infer_tensors, load_inference_workflow

__all__ = [
    "ArtifactRemoval",
    "ArtifactRemovald",
    "BinarySegmentationMetric",
    "CAA",
    "CTIntensityNormalize",
    "CTIntensityNormalized",
    "CTSeriesReader",
    "ChannelAggregationAttention",
    "DynamicThreshold",
    "DynamicThresholdd",
    "FieldOfViewPad",
    "FieldOfViewPadd",
    "FusionLungNet",
    "HybridLoss",
    "InputError",
    "MFF",
    "MedianFilter",
    "MedianFilterd",
    "MultiScaleFeatureFusion",
    "RRM",
    "ResidualRefinementModule",
    "SR",
    "SegmentationMetricHandler",
    "SeparableSSIMLoss",
    "SelfRefinement",
    "SqueezeSingleSlice",
    "SqueezeSingleSliced",
    "__version__",
    "amp_dtype",
    "as_bool",
    "check_checkpoint",
    "check_training_settings",
    "classical_lung_mask",
    "compute_segmentation_metrics",
    "infer_tensors",
    "load_inference_workflow",
    "make_chest_phantom",
    "make_datalist",
    "make_phantom",
    "paper_preprocessing",
    "scan_dicom_folder",
    "select_ct_series",
    "write_phantom_case",
]
