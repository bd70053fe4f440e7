"""Reading data: readers, series selection, input checks, datalists (phantoms live in ``fusionlungnet_monai.phantom``)."""

from fusionlungnet_monai.data.checks import CheckPaird, check_input, check_output_dir, check_pair, image_size
from fusionlungnet_monai.data.datalist import load_datalist, make_datalist, pair_images_and_masks, split_by_patient
from fusionlungnet_monai.data.errors import InputError, NothingToSegment, find_input_error, report_input_errors
from fusionlungnet_monai.data.series import (
    CTSeriesReader,
    LoadCTImage,
    LoadCTImaged,
    SeriesInfo,
    is_dicom_file,
    load_ct_lps,
    scan_dicom_folder,
    select_ct_series,
)

__all__ = [
    "CheckPaird",
    "check_input",
    "check_output_dir",
    "check_pair",
    "image_size",
    "load_datalist",
    "make_datalist",
    "pair_images_and_masks",
    "split_by_patient",
    "CTSeriesReader",
    "LoadCTImage",
    "LoadCTImaged",
    "SeriesInfo",
    "is_dicom_file",
    "load_ct_lps",
    "scan_dicom_folder",
    "select_ct_series",
    "InputError",
    "NothingToSegment",
    "find_input_error",
    "report_input_errors",
]
