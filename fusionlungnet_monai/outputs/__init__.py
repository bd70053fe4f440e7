"""What ``fusionlungnet predict`` writes for a case: the mask as NIfTI or PNG, an optional DICOM SEG, a QC picture and
the report (lung volumes, sanity warnings, the classical second opinion); the bundle's inference writes the report and
picture through :class:`SaveLungReportd`."""

from fusionlungnet_monai.outputs.dicom_seg import DicomSegUnavailable, write_dicom_seg
from fusionlungnet_monai.outputs.masks import MaskNibabelWriter, affine_3d, write_mask_nifti, write_mask_png
from fusionlungnet_monai.outputs.qc import LUNG_DISPLAY_WINDOW, qc_overlay
from fusionlungnet_monai.outputs.report import (
    CT_MEDIAN_HU,
    MIN_CHEST_FOV_MM,
    PLAUSIBLE_LUNG_ML,
    SECOND_OPINION_DICE,
    SECOND_OPINION_GRID_MM,
    describe_lungs,
    sanity_warnings,
    second_opinion,
    write_json,
)
from fusionlungnet_monai.outputs.picture_check import colour_warning, picture_second_opinion
from fusionlungnet_monai.outputs.save_report import SaveLungReportd

__all__ = ["DicomSegUnavailable", "write_dicom_seg", "MaskNibabelWriter", "affine_3d", "write_mask_nifti", "write_mask_png",
           "LUNG_DISPLAY_WINDOW", "qc_overlay", "CT_MEDIAN_HU", "MIN_CHEST_FOV_MM", "PLAUSIBLE_LUNG_ML",
           "SECOND_OPINION_DICE", "SECOND_OPINION_GRID_MM", "describe_lungs", "sanity_warnings", "second_opinion", "write_json", "SaveLungReportd",
           "picture_second_opinion", "colour_warning"]
