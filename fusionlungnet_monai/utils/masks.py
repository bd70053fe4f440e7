"""Binary-mask helpers the package shares: connected components with compact labels, their sizes and how much of
them is pure air, holes, and the exact 3x3 median test without sorting."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["in_plane_structure", "binary_view", "label_components", "lung_like_components", "component_sizes",
           "enclosed_background", "fill_holes_2d", "median3x3_below"]


def in_plane_structure(slice_axis: int) -> np.ndarray:
    """3x3x3 labelling structure, 4-connected within a slice and not across slices (``slice_axis``): labelling a
    stack of slices with it gives every slice's own components in one call."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[(slice(None),) * slice_axis + (1,)] = ndimage.generate_binary_structure(2, 1)
    return structure


def binary_view(mask: np.ndarray) -> np.ndarray:
    """A ``bool`` numpy view of a ``bool`` or 0/1 ``uint8`` mask (no copy), else ``mask > 0``."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    return m.view(bool) if m.dtype == np.uint8 and (m.size == 0 or m.max() <= 1) else m > 0


def label_components(mask: np.ndarray, structure: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label`` with 16-bit labels when they fit (half the memory of its default int32, a quarter
    of scikit-image's int64), else int32. Returns ``(labels, number of components)``."""
    try:
        return ndimage.label(mask, structure=structure, output=np.uint16)
    except RuntimeError:  # more than 65535 components
        return ndimage.label(mask, structure=structure)


def lung_like_components(dense: np.ndarray, labels: np.ndarray, n: int, chunk: int = 16,
                         min_dense_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per label of ``labels`` (``n`` components), its size and whether more than ``min_dense_fraction`` of its voxels
    are ``dense`` (3x3 median above ``AIR_HU``): lung parenchyma (about -850 HU) rather than pure air (room air, FOV
    padding, stomach and bowel gas, an isolated trachea: about -1000 HU). Index 0 (background) has size 0 and is not
    lung-like. Counted with ``bincount``, ``chunk`` slices at a time: no sort, and no volume-sized temporary.

    Returns:
        ``(sizes, lung_like)``: int64 and bool arrays of length ``n + 1``.
    """
    count, above = component_sizes(labels, n, chunk), component_sizes(labels, n, chunk, where=dense)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = above[1:] > min_dense_fraction * count[1:]
    return count, keep


def component_sizes(labels: np.ndarray, n: int, chunk: int = 16, where: np.ndarray | None = None) -> np.ndarray:
    """Voxels per label of ``labels`` (``n`` components; index 0, the background, counts 0), only those where the
    bool ``where`` is true when given, ``chunk`` slices of the last axis at a time: ``np.bincount`` counts an int64
    copy of its input (8 bytes per voxel of the box)."""
    count = np.zeros(n + 1, dtype=np.int64)
    if n:
        lab3 = labels[..., None] if labels.ndim == 2 else labels
        sel3 = None if where is None else where[..., None] if where.ndim == 2 else where
        for z0 in range(0, lab3.shape[2], chunk):
            part = lab3[:, :, z0 : z0 + chunk]
            count += np.bincount(part.ravel() if sel3 is None else part[sel3[:, :, z0 : z0 + chunk]], minlength=n + 1)
        count[0] = 0
    return count


def enclosed_background(mask: np.ndarray, structure: np.ndarray, border_axes: Sequence[int]) -> np.ndarray:
    """The holes of a bool ``mask``: background components (connected by ``structure``) that touch neither end of
    any of ``border_axes``."""
    labels, n = label_components(~mask, structure=structure)
    if n == 0:
        return np.zeros_like(mask)
    outside = np.zeros(n + 1, dtype=bool)
    for axis in border_axes:
        for end in (0, -1):
            outside[np.unique(labels.take(end, axis=axis))] = True
    outside[0] = True  # label 0 is the mask itself
    return ~outside[labels]


def fill_holes_2d(masks: np.ndarray) -> np.ndarray:
    """Fill holes of every 2D mask in an (N, H, W) stack at once: background components (4-connected, in-plane
    only) that do not touch the slice border are holes. Same result as per-slice ``binary_fill_holes``, faster."""
    return masks | enclosed_background(masks, in_plane_structure(0), border_axes=(1, 2))


def _sum3_edge(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of each element and its two neighbours along ``dim``, the edge element repeated outside (a new tensor)."""
    n = t.shape[dim]
    out = t.clone()
    out.narrow(dim, 1, n - 1).add_(t.narrow(dim, 0, n - 1))
    out.narrow(dim, 0, n - 1).add_(t.narrow(dim, 1, n - 1))
    out.narrow(dim, 0, 1).add_(t.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).add_(t.narrow(dim, n - 1, 1))
    return out


def median3x3_below(img: torch.Tensor, threshold: float, strict: bool = True,
                    dims: Sequence[int] = (1, 2)) -> torch.Tensor:
    """Whether the in-plane 3x3 median of a channel-first ``(C, H, W)`` or ``(C, X, Y, Z)`` image is below
    ``threshold`` (``<=`` when not ``strict``), as a bool tensor of its shape, on its device. ``dims``: the two
    in-plane dims (``axial_dims(img)[1:]`` for a volume stored as coronal or sagittal slices).

    Exact without sorting: the median of 9 values is below a threshold when 5 or more of them are, so the 3x3 count
    of voxels below it (two separable 3-sums, in the image's own layout) is compared with 5. The border is repeated
    (``scipy.ndimage.median_filter``'s default "reflect" for a 3x3 window)."""
    if img.dim() not in (3, 4):
        raise ValueError(f"expected a channel-first 2D (C, H, W) or 3D (C, X, Y, Z) image, got shape {tuple(img.shape)}.")
    below = ((img < threshold) if strict else (img <= threshold)).to(torch.uint8)
    if below.numel() == 0:
        return below.bool()
    return _sum3_edge(_sum3_edge(below, dims[0]), dims[1]) >= 5
