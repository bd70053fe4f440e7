"""Synthetic chest CT with exact lung masks, and its writers (DICOM series, NIfTI, PNG slices).

- :func:`make_phantom` (``basic``): a simple, fast phantom for plumbing tests (two textured lungs in a body ellipse);
- :func:`make_chest_phantom` (``chest``, version 2): domain-randomised anatomy, pathology and scanner, for training.
"""

from fusionlungnet_monai.phantom.basic import Phantom, make_phantom, write_phantom_case
from fusionlungnet_monai.phantom.chest import make_chest_phantom
from fusionlungnet_monai.phantom.writers import (
    DEFAULT_HU_WINDOW,
    hu_to_uint8,
    write_dicom_series,
    write_localizer,
    write_nifti,
    write_png,
    write_png_slices,
)

__all__ = [
    "DEFAULT_HU_WINDOW",
    "Phantom",
    "hu_to_uint8",
    "make_chest_phantom",
    "make_phantom",
    "write_dicom_series",
    "write_localizer",
    "write_nifti",
    "write_phantom_case",
    "write_png",
    "write_png_slices",
]
