"""Classical 3D lung segmentation in Hounsfield units: a second opinion at inference and a pseudo-labeller.

The recipe is the textbook one (Hu et al., IEEE TMI 2001; the "threshold + components" baseline of lungmask's paper):

1. air = voxels below ``threshold`` HU (default -320) after a small in-plane median filter;
2. pure air (median under ``air_hu``, -950 HU) that touches the in-plane border of its slice is outside the body
   (room air, FOV padding, table gaps), and pure-air 3D components are bowel gas or airways: drop them; lung
   parenchyma has a median near -850 HU, so a crop that cuts the lung at the border keeps it;
3. the trachea and main bronchi are found as very dark (< ``airway_hu``) tubes entering from the top of the volume
   near the midline and removed (they are not lung);
4. the largest 3D components are the lungs (two, or one when the lungs touch); components under
   ``min_fraction`` of the largest are dropped (bowel gas, stray air);
5. holes are filled per slice (vessels, nodules inside the lung are lung) and a small in-plane closing takes in
   juxta-pleural nodules.

It is accurate on normal lungs (IoU about 0.95 against expert masks) and fails, by design, where the lung is dense
(consolidation or effusion at the border): that is exactly where it disagrees with the network, which is what the
second opinion is for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["classical_lung_mask", "dice_score"]


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(round(radius_px)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2) <= r * r


def _lung_like(ct: np.ndarray, lab: np.ndarray, n: int, air_hu: float) -> np.ndarray:
    """Per label, whether its median HU is above ``air_hu``: lung parenchyma (about -850 HU) rather than pure air
    (room air, FOV padding, bowel gas, trachea: about -1000 HU). Index 0 (background) is False."""
    keep = np.zeros(n + 1, dtype=bool)
    if n:
        med = ndimage.median(ct, lab, index=np.arange(1, n + 1))
        keep[1:] = np.asarray(med) > air_hu
    return keep


def _drop_outside_air(ct: np.ndarray, air: np.ndarray, air_hu: float) -> np.ndarray:
    """Per slice, remove pure-air components that touch the in-plane border (outside the body).

    Border components whose median is lung-like stay: a crop through the chest cuts the lung at the border.
    """
    out = np.zeros_like(air)
    for k in range(air.shape[2]):
        lab, n = ndimage.label(air[:, :, k])
        if n == 0:
            continue
        keep = np.ones(n + 1, dtype=bool)
        keep[0] = False
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border > 0]
        if border.size:
            like = _lung_like(ct[:, :, k], lab, n, air_hu)
            keep[border] = like[border]
        out[:, :, k] = keep[lab]
    return out


def _airways(ct: np.ndarray, cand: np.ndarray, spacing: Sequence[float], airway_hu: float) -> np.ndarray:
    """Trachea and main bronchi: dark tubes near the midline, grown down from the top (highest z) slices.

    Returns an empty mask when nothing tube-like is found or when the grown region leaks into the lung.
    """
    sx, sy, sz = (float(s) for s in spacing)
    dark = cand & (ct < airway_hu)
    if not dark.any():
        return np.zeros_like(cand)
    nz = ct.shape[2]
    body_x = np.flatnonzero(cand.any(axis=(1, 2)))
    mid = 0.5 * (body_x.min() + body_x.max()) if body_x.size else ct.shape[0] / 2
    # the head end of an LPS volume is the highest z index; seeds: small, round, central dark blobs there
    top = range(nz - 1, max(nz - 1 - max(int(round(20.0 / sz)), 1), -1), -1)
    seeds = np.zeros_like(cand)
    for k in top:
        lab, n = ndimage.label(dark[:, :, k])
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            area_mm2 = float((lab[sl] == i).sum()) * sx * sy
            cx = 0.5 * (sl[0].start + sl[0].stop)
            if 20.0 <= area_mm2 <= 700.0 and abs(cx - mid) * sx < 30.0:
                seeds[:, :, k] |= lab == i
    if not seeds.any():
        return np.zeros_like(cand)
    lab, _ = ndimage.label(dark)
    ids = np.unique(lab[seeds])
    grown = np.isin(lab, ids[ids > 0])
    # a real trachea + main bronchi holds well under 150 mL; more means the region grew into the lung
    if grown.sum() * sx * sy * sz / 1000.0 > 150.0:
        return np.zeros_like(cand)
    return ndimage.binary_dilation(grown, structure=_disk(1.0)[..., None]) & cand


def classical_lung_mask(
    ct: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    threshold: float = -320.0,
    airway_hu: float = -950.0,
    air_hu: float = -950.0,
    min_fraction: float = 0.1,
    closing_mm: float = 4.0,
    remove_airways: bool = True,
) -> np.ndarray:
    """Lung mask of a CT volume in HU by thresholding and connected components.

    Args:
        ct: HU volume ``(x, y, z)`` (axial slices along the last axis, head towards higher ``z`` for airway
            detection), or one slice ``(x, y)``.
        spacing: voxel size in mm per axis.
        threshold: air/tissue threshold in HU.
        airway_hu: the trachea and main bronchi are darker than this.
        air_hu: air components whose median HU is below this are air, not lung (outside air, bowel gas).
        min_fraction: drop components smaller than this fraction of the largest.
        closing_mm: radius of the in-plane closing that takes in juxta-pleural nodules (0: none).
        remove_airways: remove the trachea and main bronchi.

    Returns:
        uint8 mask of the input's shape (1 = lung).
    """
    ct = np.asarray(ct, dtype=np.float32)
    squeeze = ct.ndim == 2
    if squeeze:
        ct = ct[..., None]
    if ct.ndim != 3:
        raise ValueError(f"ct must be 2D or 3D, got shape {ct.shape}.")
    spacing = [float(s) for s in (list(spacing) + [1.0] * 3)[:3]]
    ct = np.nan_to_num(ct, nan=-1024.0, posinf=3071.0, neginf=-3024.0)
    smooth = ndimage.median_filter(ct, size=(3, 3, 1))
    cand = _drop_outside_air(smooth, smooth < threshold, air_hu)
    if remove_airways and cand.any():
        cand &= ~_airways(smooth, cand, spacing, airway_hu)
    lab, n = ndimage.label(cand)
    mask = np.zeros(ct.shape, dtype=bool)
    if n:
        sizes = np.bincount(lab.ravel())[1:].astype(float)
        sizes[~_lung_like(smooth, lab, n, air_hu)[1:]] = 0  # bowel gas, an isolated trachea
        order = [i for i in np.argsort(sizes)[::-1][:2] if sizes[i] > 0]
        for i in order:
            if sizes[i] >= min_fraction * sizes[order[0]]:
                mask |= lab == i + 1
    disk = _disk(closing_mm / spacing[0]) if closing_mm > 0 else None
    for k in range(mask.shape[2]):
        m = mask[:, :, k]
        if not m.any():
            continue
        if disk is not None:
            pad = disk.shape[0]
            m = ndimage.binary_closing(np.pad(m, pad), structure=disk)[pad:-pad, pad:-pad]
        mask[:, :, k] = ndimage.binary_fill_holes(m)
    mask = mask.astype(np.uint8)
    return mask[..., 0] if squeeze else mask


def dice_score(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s
