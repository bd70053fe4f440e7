"""Quality-control picture: axial, coronal and sagittal lung-window views with the mask outline."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from fusionlungnet_monai.utils.masks import binary_view

__all__ = ["qc_overlay", "outline_view", "LUNG_DISPLAY_WINDOW"]

#: display window for lungs (level -600, width 1500)
LUNG_DISPLAY_WINDOW = (-1350.0, 150.0)


#: volumes at least this tall (mm along z) get coronal and sagittal views in the QC picture
MIN_SIDE_VIEW_MM = 20.0
#: every view of the QC picture is at least this many pixels high (a 64² CT is enlarged; a person must read it)
MIN_VIEW_PX = 300


def outline_view(img2d: np.ndarray, m2d: np.ndarray, window: Sequence[float],
                 m2: np.ndarray | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB uint8 picture of a 2D image in ``window`` with the outline of ``m2d`` in red, over the outline of an
    optional second mask ``m2`` in cyan (both bool, the image's shape). With ``size`` (width, height), the image is
    resized to it first (bilinear; the masks nearest) and the outlines are drawn at that resolution, so a small CT's
    outline stays a thin line (2 pixels from 3x enlargement on)."""
    from PIL import Image
    from scipy import ndimage

    g = np.clip((img2d.astype(np.float32) - window[0]) / (window[1] - window[0]), 0, 1)
    masks = [m2d, m2]
    width = 1
    if size is not None and tuple(size) != (g.shape[1], g.shape[0]):
        width = 2 if size[1] >= 3 * g.shape[0] else 1
        g = np.asarray(Image.fromarray(g).resize(tuple(size), Image.BILINEAR))
        masks = [None if m is None else np.asarray(Image.fromarray(np.asarray(m, np.uint8)).resize(
            tuple(size), Image.NEAREST)) > 0 for m in masks]
    rgb = np.stack([g, g, g], -1)

    def edge(m):
        return m & ~ndimage.binary_erosion(m, iterations=width, border_value=1)

    if masks[1] is not None:  # second opinion outline in cyan, under the network's red
        rgb[edge(masks[1])] = [0.1, 0.9, 0.9]
    rgb[edge(masks[0])] = [1.0, 0.15, 0.15]
    return (rgb * 255).astype(np.uint8)


def qc_overlay(ct_hu: np.ndarray, mask: np.ndarray, path: str | os.PathLike,
               spacing: Sequence[float] = (1.0, 1.0, 1.0), window: Sequence[float] = LUNG_DISPLAY_WINDOW,
               second: np.ndarray | None = None) -> str:
    """Write a PNG of three views through the mask (axial, coronal, sagittal), outline in red (and a second
    mask's outline in cyan, e.g. the classical second opinion), each at least :data:`MIN_VIEW_PX` high (small CTs
    enlarged, outlines drawn at display resolution). A volume less than ``MIN_SIDE_VIEW_MM`` tall (a
    single slice, a thin slab) gets the axial view only: its coronal and sagittal views would be thin strips.

    Args:
        ct_hu: HU volume ``(x, y, z)`` in the DICOM patient frame (x to the patient's left, y posterior, z head).
        mask: binary mask, same shape.
        path: output PNG.
        spacing: voxel size ``(x, y, z)`` in mm, so the coronal/sagittal views keep physical proportions.
        window: HU display window.
        second: optional second binary mask of the same shape, drawn in cyan.

    Returns:
        the written path.
    """
    from PIL import Image


    ct, m = np.asarray(ct_hu), binary_view(mask)  # only the three views are converted to float
    if ct.ndim != 3 or ct.shape != m.shape:
        raise ValueError(f"ct_hu {ct.shape} and mask {m.shape} must be 3D arrays of one shape.")
    # slices through the most mask (the middle of the volume when the mask is empty)
    x = int(np.argmax(m.sum((1, 2)))) if m.any() else ct.shape[0] // 2
    y = int(np.argmax(m.sum((0, 2)))) if m.any() else ct.shape[1] // 2
    z = int(np.argmax(m.sum((0, 1)))) if m.any() else ct.shape[2] // 2
    m2 = None if second is None else binary_view(second)
    sx, sy, sz = (float(s) for s in spacing)
    # the axial view at least MIN_VIEW_PX high, in the pixels' physical proportions
    h = max(ct.shape[1], MIN_VIEW_PX)
    axial = outline_view(ct[:, :, z].T, m[:, :, z].T, window, None if m2 is None else m2[:, :, z].T,
                         size=(max(int(round(h * ct.shape[0] * sx / (ct.shape[1] * sy))), 1), h))

    def fit(v: np.ndarray, vm: np.ndarray, v2: np.ndarray | None, width_mm: float) -> np.ndarray:
        height_mm = ct.shape[2] * sz
        scale = h / max(height_mm, width_mm)
        size = (max(int(round(width_mm * scale)), 1), max(int(round(height_mm * scale)), 1))
        img = outline_view(v, vm, window, v2, size=size)
        out = np.zeros((h, size[0], 3), dtype=np.uint8)
        top = (h - img.shape[0]) // 2
        out[top : top + img.shape[0], : img.shape[1]] = img
        return out

    tiles = [axial]
    if ct.shape[2] * sz >= MIN_SIDE_VIEW_MM:  # coronal and sagittal, head at the top
        tiles += [fit(ct[:, y, :].T[::-1], m[:, y, :].T[::-1], None if m2 is None else m2[:, y, :].T[::-1],
                      ct.shape[0] * sx),
                  fit(ct[x, :, :].T[::-1], m[x, :, :].T[::-1], None if m2 is None else m2[x, :, :].T[::-1],
                      ct.shape[1] * sy)]
    Image.fromarray(np.concatenate(tiles, 1)).save(str(path))
    return str(path)
