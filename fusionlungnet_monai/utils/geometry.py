"""Voxel geometry the package shares: orientation from an affine, the head-foot axis, in-plane views of volumes,
slabs, bounding boxes and copies made plane by plane.

Images are channel-first: ``(C, H, W)`` slices or ``(C, X, Y, Z)`` volumes with ``Z`` the slice axis when stored
axially.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy

__all__ = ["as_slices", "from_slices", "slab_index", "lps_orientation", "head_foot_axis", "axial_dims",
           "planewise_copy", "bounding_box", "replace_in_box"]


def as_slices(img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(C, H, W) or (C, X, Y, Z) -> (N, 1, H, W) stack of in-plane slices, plus what is needed to undo it."""
    if img.dim() == 3:
        return img.unsqueeze(1), tuple(img.shape)
    if img.dim() == 4:
        c, x, y, z = img.shape
        return img.permute(0, 3, 1, 2).reshape(c * z, 1, x, y), tuple(img.shape)
    raise ValueError(f"expected a channel-first 2D (C, H, W) or 3D (C, X, Y, Z) image, got shape {tuple(img.shape)}.")


def from_slices(s: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if len(shape) == 3:
        return s.squeeze(1)
    c, x, y, z = shape
    return s.reshape(c, z, x, y).permute(0, 2, 3, 1)


def slab_index(img: torch.Tensor, step: int = 16, dim: int = -1) -> list[tuple]:
    """Index tuples that split a channel-first volume ``(C, X, Y, Z)`` into slabs of ``step`` slices along ``dim``
    (the last by default); one index, the whole image, for a 2D ``(C, H, W)`` slice. Indexing with them gives
    views."""
    if img.dim() != 4:
        return [(...,)]
    dim = dim % 4
    return [(slice(None),) * dim + (slice(z0, z0 + step),) for z0 in range(0, int(img.shape[dim]), step)]


def lps_orientation(affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How to view a volume with voxel-to-world ``affine`` (MONAI's RAS, or any) in LPS voxel order (x to the
    patient's left, y to the back, z to the head: axial slices along the last axis, whatever the storage).

    Returns:
        ``(to_lps, from_lps, spacing)``: nibabel orientation transforms for ``nibabel.orientations.apply_orientation``
        (views, no copy), and the voxel size in mm in LPS order.
    """
    from nibabel import orientations as nio

    aff = np.asarray(convert_to_numpy(affine), dtype=float)
    ornt = nio.io_orientation(aff)
    lps = nio.axcodes2ornt(("L", "P", "S"))
    spacing = np.zeros(3)
    to_lps = nio.ornt_transform(ornt, lps)
    spacing[to_lps[:, 0].astype(int)] = np.linalg.norm(aff[:3, :3], axis=0)
    return to_lps, nio.ornt_transform(lps, ornt), spacing


def head_foot_axis(affine) -> int:
    """The voxel axis of a volume that runs head to foot (world axis S/I) by its voxel-to-world ``affine``: the
    axis axial planes are stacked along. The last for axial storage, another for coronal or sagittal storage."""
    hits = np.flatnonzero(lps_orientation(affine)[0][:, 0] == 2)
    return int(hits[0]) if hits.size else 2


def axial_dims(img: NdarrayOrTensor) -> tuple[int, int, int]:
    """``(slice dim, in-plane dim, in-plane dim)`` of a channel-first image for in-plane (axial) work: ``(3, 1, 2)``
    for a ``(C, X, Y, Z)`` volume stored axially or without an affine, from its MetaTensor affine otherwise; ``(0, 1,
    2)`` for a 2D ``(C, H, W)`` slice (dim 0 is then the channel)."""
    if len(img.shape) != 4:
        return 0, 1, 2
    affine = getattr(img, "affine", None)
    hf = 1 + (head_foot_axis(affine) if affine is not None and tuple(affine.shape) == (4, 4) else 2)
    a, b = (d for d in (1, 2, 3) if d != hf)
    return hf, a, b


def planewise_copy(src: np.ndarray, dtype=None, order: str = "C") -> np.ndarray:
    """A copy of ``src`` in the memory ``order`` asked (``"C"`` or ``"F"``), converted to ``dtype``, made one plane of
    the middle axis at a time. A volume whose memory runs the other way (ITK's ``(z, y, x)`` buffer seen as
    ``(x, y, z)``; a C array that NIfTI writes in Fortran order) copies about 3x faster so than in one 3D call, in
    which every element comes from another cache line (512x512x256: 0.33 s against 1.0 s)."""
    out = np.empty(src.shape, dtype=dtype or src.dtype, order=order)
    if src.ndim == 3:
        for j in range(src.shape[1]):
            out[:, j] = src[:, j]
    else:
        out[...] = src
    return out


def bounding_box(mask: NdarrayOrTensor, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box that holds every nonzero voxel of ``mask`` (numpy or CPU torch), grown by
    ``margin`` voxels on each side and clipped to the array; ``None`` for an empty mask."""
    m = np.asarray(mask)
    if not m.any():
        return None
    hits = [np.flatnonzero(m.any(axis=tuple(d for d in range(m.ndim) if d != a))) for a in range(m.ndim)]
    return tuple(slice(max(int(h[0]) - margin, 0), int(h[-1]) + 1 + margin) for h in hits)


def replace_in_box(img: NdarrayOrTensor, box: tuple[slice, ...], region: np.ndarray) -> NdarrayOrTensor:
    """A copy of the channel-first mask ``img`` (type, dtype, device and meta kept) whose voxels in ``box`` are
    ``region`` (bool, of the box's shape): one copy of the mask, not a whole-grid boolean beside it."""
    out = img.clone() if isinstance(img, torch.Tensor) else np.array(img, copy=True)
    where = (0, *box)
    if isinstance(out, torch.Tensor):
        out[where] = torch.as_tensor(region, device=out.device).to(out.dtype)
    else:
        out[where] = region
    return out
