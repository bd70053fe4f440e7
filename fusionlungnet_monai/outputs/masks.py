"""Mask writers: NIfTI (uint8 labels with the image's affine) and PNG (for picture inputs), and a NIfTI writer for
MONAI's ``SaveImaged`` that keeps a mask's dtype."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from monai.data import NibabelWriter
from monai.utils import convert_data_type

from fusionlungnet_monai.utils.geometry import planewise_copy

__all__ = ["affine_3d", "write_mask_nifti", "write_mask_png", "MaskNibabelWriter"]


class MaskNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` without its float32 working copy when ``resample`` is off.

    ``NibabelWriter.set_metadata`` sends the array through ``SpatialResample`` even when nothing is resampled, and that
    returns a float32 copy: 630 MB for a 600-slice 512² uint8 mask, the largest allocation of a bundle inference run
    at that point. Here, with ``resample=False``, the array is written as it is (with ``output_dtype``) with the meta's
    affine. ``resample=True`` is MONAI's own path.
    """

    def set_metadata(self, meta_dict: Mapping | None, resample: bool = True, **options) -> None:
        """See ``NibabelWriter.set_metadata``; ``options`` apply to ``resample=True`` only."""
        if resample:
            super().set_metadata(meta_dict, resample=True, **options)
            return
        _, affine, _ = self.get_meta_info(meta_dict)
        self.data_obj = convert_data_type(self.data_obj, np.ndarray)[0]
        if self.output_dtype is None:
            self.output_dtype = self.data_obj.dtype
        self.affine = None if affine is None else convert_data_type(affine, np.ndarray)[0]


def affine_3d(affine: np.ndarray) -> np.ndarray:
    """A 4x4 voxel-to-RAS affine: ``affine`` itself, or a 2D image's 3x3 affine with a 1 mm slice axis added."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    if affine.shape != (3, 3):
        raise ValueError(f"expected a 3x3 (2D) or 4x4 (3D) affine, got shape {affine.shape}.")
    out = np.eye(4)
    out[:2, :2], out[:2, 3] = affine[:2, :2], affine[:2, 2]
    return out


def write_mask_nifti(labels: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> str:
    """Write a ``(x, y, z)`` label map as a uint8 NIfTI with the voxel-to-RAS ``affine`` (see :func:`affine_3d`).

    Returns:
        the written path.
    """
    import nibabel as nib


    data = planewise_copy(np.asarray(labels), np.uint8, order="F")  # NIfTI's order: nibabel writes it as it is
    nib.save(nib.Nifti1Image(data, affine_3d(affine)), str(path))
    return str(path)


def write_mask_png(mask: np.ndarray, path: str | os.PathLike) -> str:
    """Write an ``(x, y)`` mask as an 8-bit PNG (lung 255) with the picture's rows and columns.

    Returns:
        the written path.
    """
    from PIL import Image

    Image.fromarray((np.asarray(mask).T > 0).astype(np.uint8) * 255).save(str(path))  # (x, y) -> PIL rows = y
    return str(path)
