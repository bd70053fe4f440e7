"""Lung volumes from masks, and the left/right split of a lung mask."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["split_left_right", "lung_volumes", "RIGHT_LABEL", "LEFT_LABEL"]

RIGHT_LABEL, LEFT_LABEL = 1, 2


def split_left_right(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Label a binary lung mask ``1`` = right lung, ``2`` = left lung.

    The two largest 3D components are the lungs when they are separate; the one towards the patient's right
    (larger RAS x of its centre: RAS +x points to the patient's right) is the right lung, and smaller components join the nearer lung. When the lungs touch
    (one component), voxels are split at the mask's centre along the patient's left-right axis.

    Args:
        mask: binary mask ``(x, y[, z])``.
        affine: voxel-to-RAS affine (4x4, or 3x3 for 2D).

    Returns:
        uint8 label array of the same shape.
    """
    m = np.asarray(mask) > 0
    out = np.zeros(m.shape, dtype=np.uint8)
    if not m.any():
        return out
    aff = np.asarray(affine, dtype=float)
    nd = m.ndim
    lin = aff[:nd, :nd]
    idx = np.argwhere(m)
    ras_x = idx @ lin[0, :nd]  # RAS x (towards the patient's right) up to a constant
    labels, n = ndimage.label(m)
    sizes = ndimage.sum(m, labels, range(1, n + 1))
    lab_at = labels[tuple(idx.T)]
    if n >= 2 and sizes[np.argsort(sizes)[-2]] > 0.1 * sizes.max():
        big = np.argsort(sizes)[-2:] + 1
        centres = [ras_x[lab_at == b].mean() for b in big]
        right, left = (big[0], big[1]) if centres[0] > centres[1] else (big[1], big[0])
        c_r, c_l = max(centres), min(centres)
        side = np.where(np.abs(ras_x - c_r) <= np.abs(ras_x - c_l), RIGHT_LABEL, LEFT_LABEL)
        side[lab_at == right], side[lab_at == left] = RIGHT_LABEL, LEFT_LABEL
    else:
        side = np.where(ras_x > np.median(ras_x), RIGHT_LABEL, LEFT_LABEL)
    out[tuple(idx.T)] = side
    return out


def lung_volumes(mask: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None) -> dict:
    """Lung volumes in mL: total, and right/left when ``affine`` is given (via :func:`split_left_right`).

    Args:
        mask: binary mask or ``1``/``2`` label map ``(x, y, z)``.
        spacing: voxel size in mm per axis.
        affine: voxel-to-RAS affine; ``None`` skips the left/right split (``right_ml``/``left_ml`` are ``None``).
    """
    m = np.asarray(mask)
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    out = {"total_ml": int(np.count_nonzero(m)) * voxel_ml, "right_ml": None, "left_ml": None}
    if affine is not None:
        lab = m if set(np.unique(m)) <= {0, RIGHT_LABEL, LEFT_LABEL} and m.max() == LEFT_LABEL else split_left_right(m, affine)
        out["right_ml"] = int(np.count_nonzero(lab == RIGHT_LABEL)) * voxel_ml
        out["left_ml"] = int(np.count_nonzero(lab == LEFT_LABEL)) * voxel_ml
    return out
