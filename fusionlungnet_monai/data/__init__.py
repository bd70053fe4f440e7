"""Data in and out: phantoms, readers, series selection, datalists, writers."""

from fusionlungnet_monai.data.checks import check_input, check_output_dir, check_pair, image_size
from fusionlungnet_monai.data.datalist import make_datalist, pair_images_and_masks, split_by_patient
from fusionlungnet_monai.data.errors import InputError
from fusionlungnet_monai.data.series import CTSeriesReader, SeriesInfo, is_dicom_file, scan_dicom_folder, select_ct_series
from fusionlungnet_monai.data.phantom import Phantom, make_phantom, write_phantom_case
from fusionlungnet_monai.data.writers import (
    DEFAULT_HU_WINDOW,
    hu_to_uint8,
    write_dicom_series,
    write_localizer,
    write_nifti,
    write_png,
    write_png_slices,
)

__all__ = [
    "check_input",
    "check_output_dir",
    "check_pair",
    "image_size",
    "make_datalist",
    "pair_images_and_masks",
    "split_by_patient",
    "CTSeriesReader",
    "SeriesInfo",
    "is_dicom_file",
    "scan_dicom_folder",
    "select_ct_series",
    "DEFAULT_HU_WINDOW",
    "InputError",
    "Phantom",
    "hu_to_uint8",
    "make_phantom",
    "write_dicom_series",
    "write_localizer",
    "write_nifti",
    "write_phantom_case",
    "write_png",
    "write_png_slices",
]
