"""Mask writers: NIfTI (uint8 labels with the image's affine) and PNG (for picture inputs)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["affine_3d", "write_mask_nifti", "write_mask_png"]


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

    from fusionlungnet_monai.transforms.array import planewise_copy

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
