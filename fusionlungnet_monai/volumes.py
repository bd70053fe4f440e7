"""Lung volumes from masks, and the left/right split of a lung mask."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["split_left_right", "lung_volumes", "RIGHT_LABEL", "LEFT_LABEL"]

RIGHT_LABEL, LEFT_LABEL = 1, 2


def split_left_right(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Label a binary lung mask ``1`` = right lung, ``2`` = left lung.

    The two largest 3D components are the lungs when they are separate; the one towards the patient's right
    (larger RAS x of its centre: RAS +x points to the patient's right) is the right lung, and smaller components
    join the nearer lung. When the lungs touch (one component), voxels are split at the mask's median along the
    patient's left-right axis. Works slice by slice on 16-bit labels, so memory stays near the mask's own.

    Args:
        mask: binary mask ``(x, y[, z])``.
        affine: voxel-to-RAS affine (4x4, or 3x3 for 2D).

    Returns:
        uint8 label array of the same shape.
    """
    from fusionlungnet_monai.transforms.array import binary_view, bounding_box, label_components

    m = binary_view(mask)
    out = np.zeros(m.shape, dtype=np.uint8)
    if not m.any():
        return out
    w = np.asarray(affine, dtype=float)[0, : m.ndim]  # RAS x (towards the patient's right) per voxel step
    # the work runs on the mask's bounding box: components, centres and sides are the same, on a third of the voxels
    box = bounding_box(m)
    m, out_box = m[box], out[box]
    labels, n = label_components(m)
    m3, lab3, out3 = (a[..., None] for a in (m, labels, out_box)) if m.ndim == 2 else (m, labels, out_box)
    wz = float(w[2]) if m.ndim == 3 else 0.0
    z0 = box[2].start if m.ndim == 3 else 0
    # RAS x up to a constant, in the full volume's voxel indices
    grid = (w[0] * (box[0].start + np.arange(m3.shape[0]))[:, None]
            + w[1] * (box[1].start + np.arange(m3.shape[1]))[None, :])
    count, xsum = np.zeros(n + 1), np.zeros(n + 1)
    for k in range(m3.shape[2]):
        lab = lab3[:, :, k].ravel()
        count += np.bincount(lab, minlength=n + 1)
        xsum += np.bincount(lab, weights=(grid + wz * (z0 + k)).ravel(), minlength=n + 1)
    sizes = count[1:]
    order = np.argsort(sizes)
    if n >= 2 and sizes[order[-2]] > 0.1 * sizes.max():
        big = order[-2:] + 1
        centres = xsum[big] / count[big]
        right, left = (big[0], big[1]) if centres[0] > centres[1] else (big[1], big[0])
        c_r, c_l = centres.max(), centres.min()

        def side(x: np.ndarray, lab: np.ndarray) -> np.ndarray:
            s = np.where(np.abs(x - c_r) <= np.abs(x - c_l), RIGHT_LABEL, LEFT_LABEL).astype(np.uint8)
            s[lab == right], s[lab == left] = RIGHT_LABEL, LEFT_LABEL
            return s
    else:
        middle = np.median(np.concatenate([(grid + wz * (z0 + k))[m3[:, :, k]] for k in range(m3.shape[2])]))

        def side(x: np.ndarray, lab: np.ndarray) -> np.ndarray:
            return np.where(x > middle, RIGHT_LABEL, LEFT_LABEL).astype(np.uint8)
    for k in range(m3.shape[2]):
        mk = m3[:, :, k]
        if mk.any():
            out3[:, :, k] = np.where(mk, side(grid + wz * (z0 + k), lab3[:, :, k]), 0)
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
        labelled = m.dtype.kind in "ui" and m.max() == LEFT_LABEL  # already a right/left label map
        lab = m if labelled else split_left_right(m, affine)
        out["right_ml"] = int(np.count_nonzero(lab == RIGHT_LABEL)) * voxel_ml
        out["left_ml"] = int(np.count_nonzero(lab == LEFT_LABEL)) * voxel_ml
    return out
