"""Lung volumes from masks, and the left/right split of a lung mask."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fusionlungnet_monai.utils.geometry import bounding_box, head_foot_axis
from fusionlungnet_monai.utils.masks import binary_view, label_components

__all__ = ["split_left_right", "lung_volumes", "right_share_warning", "voxel_volume_ml", "shear_degrees",
           "RIGHT_LABEL", "LEFT_LABEL", "PLAUSIBLE_RIGHT_SHARE", "MAX_SHEAR_DEG"]

RIGHT_LABEL, LEFT_LABEL = 1, 2
#: the right lung's share of both lungs' volume: about 0.52-0.56 in adults; outside this range the report warns
PLAUSIBLE_RIGHT_SHARE = (0.35, 0.70)
#: the largest angle (degrees) between voxel axes and square that passes without a warning (rounding in headers)
MAX_SHEAR_DEG = 0.5
#: a piece of the mask with more than this share of its voxels on one side of the body's midline lies on that side
ONE_SIDE = 0.8


def _split_by_midline(m: np.ndarray, affine: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """:func:`split_left_right` by anatomy: each axial plane's body midline (the mean RAS x of its voxels above
    -500 HU) splits it; a 3D piece of the mask with more than :data:`ONE_SIDE` of its voxels on one side is all on
    that side (the right lung's recess behind the oesophagus crosses the midline), a piece across it (lungs that
    touch) is split at the midline voxel by voxel."""

    out = np.zeros(m.shape, dtype=np.uint8)
    hf = head_foot_axis(affine) if m.ndim == 3 else None
    mv, cv, ov = ((np.moveaxis(a, hf, -1) for a in (m, ct, out)) if hf is not None else
                  (a[..., None] for a in (m, ct, out)))
    w = np.asarray(affine, dtype=float)[0, : m.ndim]
    w = np.append(np.delete(w, hf), w[hf]) if hf is not None else np.append(w, 0.0)
    x = w[0] * np.arange(mv.shape[0])[:, None] + w[1] * np.arange(mv.shape[1])[None, :]  # RAS x in a plane
    labels, n = label_components(mv)
    right, total = np.zeros(n + 1), np.zeros(n + 1)
    mids = np.full(mv.shape[2], float(np.median(x[mv.any(axis=2)])))  # planes without a body: the mask's median
    for t in range(mv.shape[2]):
        if not mv[:, :, t].any():
            continue
        body = np.asarray(cv[:, :, t]) > -500.0
        if body.sum() > 0.01 * body.size:  # also the next planes', until they have a body of their own
            mids[t:] = _mediastinum(mv[:, :, t], x, float(x[body].mean()), float(np.ptp(x[body])))
        lab = labels[:, :, t]
        total += np.bincount(lab.ravel(), minlength=n + 1)
        right += np.bincount(lab.ravel(), weights=(x > mids[t]).ravel(), minlength=n + 1)
    share = np.divide(right, total, out=np.full(n + 1, 0.5), where=total > 0)
    for t in range(mv.shape[2]):
        lab = labels[:, :, t]
        if not lab.any():
            continue
        s = np.where(x > mids[t], RIGHT_LABEL, LEFT_LABEL).astype(np.uint8)
        s = np.where(share[lab] > ONE_SIDE, RIGHT_LABEL, np.where(share[lab] < 1 - ONE_SIDE, LEFT_LABEL, s))
        ov[:, :, t] = np.where(lab > 0, s, 0)
    return out


def _mediastinum(plane: np.ndarray, x: np.ndarray, centre: float, width: float) -> float:
    """The RAS x where a plane's lungs meet or part: the least lung across the body's middle (its centre +- 15 % of
    its width, in 2 mm bins), the middle of the gap where there is one; ``centre`` where the mask is not there."""
    lo, hi = centre - 0.15 * width, centre + 0.15 * width
    bins = np.arange(lo, hi + 2.0, 2.0)
    if bins.size < 3 or not plane.any():
        return centre
    profile = np.histogram(x[plane], bins=bins)[0]
    least = np.flatnonzero(profile == profile.min())
    runs = np.split(least, np.flatnonzero(np.diff(least) > 1) + 1)  # stretches of consecutive lowest bins
    middle = (bins.size - 2) / 2.0
    run = min(runs, key=lambda r: abs(r.mean() - middle))  # the stretch nearest the body's centre
    return float(bins[0] + 2.0 * run.mean() + 1.0)


def right_share_warning(right_ml: float | None, left_ml: float | None) -> str | None:
    """The report's warning when the right lung's share of the total lies outside :data:`PLAUSIBLE_RIGHT_SHARE`."""
    if right_ml is None or left_ml is None or right_ml + left_ml <= 0:
        return None
    share = right_ml / (right_ml + left_ml)
    lo, hi = PLAUSIBLE_RIGHT_SHARE
    if lo <= share <= hi:
        return None
    return (f"right/left split implausible: the right lung is {100 * share:.0f} % of the total ({right_ml:.0f} mL "
            f"right, {left_ml:.0f} mL left), outside the {100 * lo:.0f}-{100 * hi:.0f} % of adult lungs: one lung "
            "missed or partly covered, lung added outside the lungs, or a wrong left/right in the file's geometry")


def split_left_right(mask: np.ndarray, affine: np.ndarray, ct: np.ndarray | None = None) -> np.ndarray:
    """Label a binary lung mask ``1`` = right lung, ``2`` = left lung.

    With the CT (``ct``, HU on the mask's grid), by anatomy: which side of the body's midline each lung lies on, in
    patient coordinates, whatever the storage order (:func:`_split_by_midline`). Without it, the two largest 3D
    components are the lungs when they are separate; the one towards the patient's right
    (larger RAS x of its centre: RAS +x points to the patient's right) is the right lung, and smaller components
    join the nearer lung. When the lungs touch (one component), voxels are split at the mask's median along the
    patient's left-right axis. Works slice by slice on 16-bit labels, so memory stays near the mask's own.

    Args:
        mask: binary mask ``(x, y[, z])``.
        affine: voxel-to-RAS affine (4x4, or 3x3 for 2D).
        ct: the CT in HU on the mask's grid (the body's midline decides).

    Returns:
        uint8 label array of the same shape.
    """

    m = binary_view(mask)
    out = np.zeros(m.shape, dtype=np.uint8)
    if not m.any():
        return out
    if ct is not None:
        return _split_by_midline(m, np.asarray(affine, dtype=float), np.asarray(ct).reshape(m.shape))
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


def voxel_volume_ml(spacing: Sequence[float], affine: np.ndarray | None = None) -> float:
    """One voxel's volume in mL: ``|det|`` of the affine's 3x3 part when given (a sheared grid's voxel is smaller than
    the product of its axes' lengths, e.g. a gantry tilt kept in the affine), else the product of ``spacing``."""
    if affine is not None:
        a = np.asarray(affine, dtype=float)
        return abs(float(np.linalg.det(a[:3, :3] if a.shape[0] >= 3 else a))) / 1000.0
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def shear_degrees(affine: np.ndarray) -> float:
    """How far the voxel grid is from square: the largest deviation from 90 degrees between two voxel axes."""
    a = np.asarray(affine, dtype=float)[:3, :3]
    n = a / np.maximum(np.linalg.norm(a, axis=0), 1e-12)
    cos = [abs(float(n[:, i] @ n[:, j])) for i, j in ((0, 1), (0, 2), (1, 2))]
    return float(np.degrees(np.arcsin(min(max(cos), 1.0))))


def lung_volumes(mask: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None,
                 ct: np.ndarray | None = None) -> dict:
    """Lung volumes in mL: total, and right/left when ``affine`` is given (via :func:`split_left_right`).

    Args:
        mask: binary mask or ``1``/``2`` label map ``(x, y, z)``.
        spacing: voxel size in mm per axis (the voxel volume without ``affine``).
        affine: voxel-to-RAS affine: the voxel volume (:func:`voxel_volume_ml`) and the right/left split; ``None``
            skips the split (``right_ml``/``left_ml`` are ``None``).
        ct: the CT in HU on the mask's grid: the split by the body's midline (see :func:`split_left_right`).
    """
    m = np.asarray(mask)
    voxel_ml = voxel_volume_ml(spacing, affine)
    out = {"total_ml": int(np.count_nonzero(m)) * voxel_ml, "right_ml": None, "left_ml": None}
    if affine is not None:
        labelled = m.dtype.kind in "ui" and m.max() == LEFT_LABEL  # already a right/left label map
        lab = m if labelled else split_left_right(m, affine, ct)
        out["right_ml"] = int(np.count_nonzero(lab == RIGHT_LABEL)) * voxel_ml
        out["left_ml"] = int(np.count_nonzero(lab == LEFT_LABEL)) * voxel_ml
    return out
