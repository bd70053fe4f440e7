"""Paper preprocessing (§4.7, Fig. 11) as MONAI array transforms: median filter, dynamic threshold (eq. 13),
artifact removal, and CT intensity normalisation shared by DICOM/NIfTI (HU) and PNG/JPG (8-bit) inputs; and two
post-processing steps of ours, :class:`HUBoundaryRefine` (the network's blurred lung border re-decided in HU) and
:class:`RemoveAirways` (the trachea and main bronchi out of the lung mask).

Images are channel-first: ``(C, H, W)`` slices or ``(C, X, Y, Z)`` volumes with ``Z`` the slice axis; every
filter here works in-plane (per slice) on volumes. numpy arrays, torch tensors and MetaTensors are accepted;
the output type follows the input and MetaTensor meta (affine, filename) is kept.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, KeepLargestConnectedComponent, MedianSmooth, Pad, SqueezeDim, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, convert_to_tensor
from scipy import ndimage

from fusionlungnet_monai.transforms.picture import LUMA, PICTURE_META

__all__ = ["ArtifactRemoval", "BinarizeMask", "FieldOfViewPad", "edge_line", "fill_where", "SqueezeSingleSlice",
           "CTIntensityNormalize", "DynamicThreshold",
           "MedianFilter", "HUBoundaryRefine", "RemoveAirways", "KeepLargestComponents", "FillMaskHoles", "compact_hu",
           "median3x3_below", "is_hu_image", "lps_orientation", "head_foot_axis", "axial_dims",
           "DEFAULT_HU_WINDOW", "EIGHT_BIT_SUFFIXES", "HU_AIR_CHECK", "LUNG_HU_THRESHOLD", "AIR_HU", "OUTSIDE_AIR_HU",
           "bounding_box", "replace_in_box",
           "in_plane_structure", "lung_like_components", "component_sizes", "planewise_copy"]

#: HU window mapped to [0, 1]; the PNG export of the phantoms uses the same window.
DEFAULT_HU_WINDOW = (-1024.0, 600.0)
#: a CT in HU holds air (outside the body, the lungs) below this; an image without any such voxel is not in HU
HU_AIR_CHECK = -500.0
#: lung/tissue threshold in HU of the classical segmentation and of the HU boundary refinement
LUNG_HU_THRESHOLD = -320.0
#: pure air (room air, FOV padding, stomach and bowel gas, the trachea) has its 3x3 median at or below this; lung
#: parenchyma, even emphysematous, mostly does not
AIR_HU = -950.0
#: room air outside the body and scanner padding lie below this, on an image edge's outer lines (mean of 3 deep, median
#: of 5 along it); lung parenchyma cut by a crop mostly lies above (:class:`FieldOfViewPad`)
OUTSIDE_AIR_HU = -990.0
#: file suffixes read as 8-bit images
EIGHT_BIT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _as_slices(img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(C, H, W) or (C, X, Y, Z) -> (N, 1, H, W) stack of in-plane slices, plus what is needed to undo it."""
    if img.dim() == 3:
        return img.unsqueeze(1), tuple(img.shape)
    if img.dim() == 4:
        c, x, y, z = img.shape
        return img.permute(0, 3, 1, 2).reshape(c * z, 1, x, y), tuple(img.shape)
    raise ValueError(f"expected a channel-first 2D (C, H, W) or 3D (C, X, Y, Z) image, got shape {tuple(img.shape)}.")


def _from_slices(s: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if len(shape) == 3:
        return s.squeeze(1)
    c, x, y, z = shape
    return s.reshape(c, z, x, y).permute(0, 2, 3, 1)


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k x k windows (valid) of (N, 1, H, W), as two separable 1D passes: 2k instead of k² adds/pixel."""
    return F.avg_pool2d(F.avg_pool2d(x, (k, 1), stride=1), (1, k), stride=1)


def _slab_index(img: torch.Tensor, step: int = 16, dim: int = -1) -> list[tuple]:
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


class MedianFilter(Transform):
    """In-plane median filter (paper §4.7): MONAI ``MedianSmooth`` with radius 0 along the slice axis of volumes.

    Args:
        radius: in-plane radius (1 gives the 3x3 median).

    Raises:
        ValueError: when ``radius`` < 1.
    """

    backend = MedianSmooth.backend

    def __init__(self, radius: int = 1) -> None:
        if int(radius) < 1:
            raise ValueError(f"radius must be >= 1, got {radius}.")
        self.radius = int(radius)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        nd = len(img.shape) - 1
        if nd not in (2, 3):
            raise ValueError(f"expected a channel-first 2D or 3D image, got shape {tuple(img.shape)}.")
        smooth = MedianSmooth(radius=(self.radius, self.radius) + (0,) * (nd - 2))
        t = convert_to_tensor(img, track_meta=False)
        out = torch.empty_like(t)
        for idx in _slab_index(t, 32):  # in-plane, so slab by slab: MONAI's filter holds 9+ copies of its input
            out[idx] = smooth(t[idx])
        return convert_to_dst_type(out, img)[0]  # numpy in -> numpy out, MetaTensor meta kept


class DynamicThreshold(Transform):
    """Dynamic-threshold contrast enhancement (paper eq. 13), vectorised with box filters.

    ``T = local_mean + k · local_std`` over a ``window x window`` neighbourhood (in-plane, reflect padding);
    ``I_enh = α · I + β`` where ``I > T``, else ``I``; the result is clamped to each slice's value range.
    The paper gives no values; ours (window 25, k 0.5, α 1.2, β 0) brighten structures that stand out from
    their neighbourhood (chest wall, vessels) while leaving dark lung parenchyma unchanged.

    Args:
        window: odd window size in pixels.
        k: weight of the local standard deviation in the threshold.
        alpha: gain applied above the threshold (> 0).
        beta: offset applied above the threshold.
        clamp: clamp the output to ``[min(I), max(I)]`` of each slice.

    Raises:
        ValueError: when ``window`` is not a positive odd integer or ``alpha <= 0``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, window: int = 25, k: float = 0.5, alpha: float = 1.2, beta: float = 0.0, clamp: bool = True) -> None:
        if int(window) != window or window <= 0 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd integer, got {window}.")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}.")
        self.window, self.k, self.alpha, self.beta, self.clamp = int(window), float(k), float(alpha), float(beta), clamp

    def _threshold_slices(self, s: torch.Tensor) -> torch.Tensor:
        pad = self.window // 2
        mode = "reflect" if min(s.shape[-2:]) > pad else "replicate"
        sp = F.pad(s, [pad, pad, pad, pad], mode=mode)
        mean, sq = _box_mean(sp, self.window), _box_mean(sp * sp, self.window)
        std = torch.sqrt(torch.clamp(sq - mean * mean, min=0.0))
        return mean + self.k * std

    def threshold(self, img: torch.Tensor) -> torch.Tensor:
        """The local threshold map ``T`` for a float tensor, same shape as ``img``."""
        s, shape = _as_slices(img)
        return _from_slices(self._threshold_slices(s), shape)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        t = convert_to_tensor(img, track_meta=False)
        x = t.float() if not t.is_floating_point() else t
        s, shape = _as_slices(x)
        enhanced = torch.where(s > self._threshold_slices(s), self.alpha * s + self.beta, s)
        if self.clamp:  # to each slice's own range
            lo = s.amin(dim=(1, 2, 3), keepdim=True)
            hi = s.amax(dim=(1, 2, 3), keepdim=True)
            enhanced = torch.minimum(torch.maximum(enhanced, lo), hi)
        out, *_ = convert_to_dst_type(_from_slices(enhanced, shape), img, dtype=x.dtype)
        return out


class ArtifactRemoval(Transform):
    """Artifact removal (paper §4.7): keep the patient's body, set everything else to background.

    Body mask = ``image > threshold`` -> optional binary opening -> largest connected component (per slice) ->
    hole filling (per slice, so the lungs inside the body are kept). Table, burnt-in text, the field-of-view
    ring and detector noise outside the body are disconnected from it and vanish.

    Args:
        threshold: body threshold; ``None`` picks -500 for HU images (minimum below -100) and 0.3 for [0, 1]
            images (-500 HU in the default window).
        background: value written outside the body; ``None`` uses the image minimum (0 for windowed images).
        opening_radius: radius of an in-plane binary opening before the component search (0: none); use it
            when a table touches the body.
        return_mask: also return the body mask (as the input type, shape like the image, 0/1).

    Raises:
        ValueError: for a negative ``opening_radius``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float | None = None, background: float | None = None, opening_radius: int = 0,
                 return_mask: bool = False) -> None:
        if opening_radius < 0:
            raise ValueError(f"opening_radius must be >= 0, got {opening_radius}.")
        self.threshold, self.background = threshold, background
        self.opening_radius, self.return_mask = int(opening_radius), return_mask

    def body_mask(self, img: torch.Tensor) -> torch.Tensor:
        """The body mask (bool, same shape) of a float image."""
        thr = self.threshold
        if thr is None:
            thr = -500.0 if float(img.min()) < -100 else 0.3
        s, shape = _as_slices(img)
        fg = (s[:, 0] > thr).float()  # (N, H, W): one "channel" per slice -> per-slice components
        if self.opening_radius:
            st = ndimage.generate_binary_structure(2, 1)
            st = ndimage.iterate_structure(st, self.opening_radius)[None]
            fg = torch.as_tensor(ndimage.binary_opening(fg.cpu().numpy() > 0, structure=st), dtype=torch.float32)
        # one "channel" per slice; one-hot mode skips channel 0 unless every channel is listed
        lcc = KeepLargestConnectedComponent(is_onehot=True, independent=True, applied_labels=list(range(len(fg))))
        fg = convert_to_tensor(lcc(fg), track_meta=False).cpu().numpy() > 0
        filled = fill_holes_2d(fg) if len(fg) else fg
        return _from_slices(torch.as_tensor(filled, device=img.device)[:, None], shape)

    def __call__(self, img: NdarrayOrTensor):
        t = convert_to_tensor(img, track_meta=False)
        x = t.float() if not t.is_floating_point() else t
        mask = self.body_mask(x)
        bg = float(x.min()) if self.background is None else float(self.background)
        cleaned = torch.where(mask, x, torch.full_like(x, bg))
        out, *_ = convert_to_dst_type(cleaned, img, dtype=x.dtype)
        if self.return_mask:
            m, *_ = convert_to_dst_type(mask.to(torch.uint8), img, dtype=torch.uint8)
            return out, m
        return out


def _source_suffix(img: NdarrayOrTensor) -> str:
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj", "")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else ""
    return os.path.splitext(str(name).lower())[1]


class CTIntensityNormalize(Transform):
    """One intensity step for every input kind: HU -> [0, 1] through a window, 8-bit -> [0, 1], RGB -> grey.

    ``mode="auto"`` decides per image: 8-bit scaling when the source file is PNG/JPG/BMP/TIFF (MetaTensor
    ``filename_or_obj``) or the array is ``uint8``; otherwise the HU window (DICOM, NIfTI, MHA).
    3- or 4-channel inputs become one grey channel (ITU-R 601 luma, alpha dropped); with ``channels=3`` the
    grey image is repeated to 3 channels (for ImageNet-style 3-channel networks).

    Args:
        hu_window: ``(low, high)`` HU mapped to ``[0, 1]`` (clipped).
        mode: ``"auto"`` | ``"hu"`` | ``"uint8"``.
        channels: output channels, 1 or 3.

    Raises:
        ValueError: for an empty window, an unknown mode or ``channels`` not in (1, 3).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    LUMA = LUMA

    def __init__(self, hu_window: Sequence[float] = DEFAULT_HU_WINDOW, mode: str = "auto", channels: int = 1) -> None:
        if len(hu_window) != 2 or hu_window[1] <= hu_window[0]:
            raise ValueError(f"hu_window must be (low, high) with high > low, got {hu_window}.")
        if mode not in ("auto", "hu", "uint8"):
            raise ValueError(f"mode must be 'auto', 'hu' or 'uint8', got {mode!r}.")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        self.hu_window, self.mode, self.channels = (float(hu_window[0]), float(hu_window[1])), mode, channels

    def is_eight_bit(self, img: NdarrayOrTensor) -> bool:
        """Whether ``img`` is scaled as an 8-bit picture."""
        if self.mode != "auto":
            return self.mode == "uint8"
        if PICTURE_META in (getattr(img, "meta", None) or {}):
            return False  # a picture already mapped to HU by PictureToHU
        return _source_suffix(img) in EIGHT_BIT_SUFFIXES or str(img.dtype) in ("uint8", "torch.uint8")

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        # one float32 working copy, changed in place below (a 600-slice CT is 630 MB in float32)
        t = convert_to_tensor(img, track_meta=False).to(torch.float32, copy=True)
        # NaN (missing data) reads as air, +-inf as the window's ends: never NaN into the network
        t.nan_to_num_(nan=-1e9, posinf=1e9, neginf=-1e9)
        if self.is_eight_bit(img):
            t.div_(255.0).clamp_(0.0, 1.0)
        else:
            lo, hi = self.hu_window
            t.sub_(lo).div_(hi - lo).clamp_(0.0, 1.0)
        if t.shape[0] in (3, 4):
            t = sum(w * t[i : i + 1] for i, w in enumerate(self.LUMA))
        if self.channels == 3 and t.shape[0] == 1:
            t = t.repeat(3, *([1] * (t.dim() - 1)))
        out, *_ = convert_to_dst_type(t, img, dtype=torch.float32)
        return out


class SqueezeSingleSlice(Transform):
    """``(C, X, Y, 1)`` -> ``(C, X, Y)``: a one-slice volume (a DICOM slice read by ITK) becomes a 2D slice, so
    DICOM and PNG/JPG slices share one training chain. Anything else passes unchanged (MONAI ``SqueezeDim``,
    affine updated)."""

    backend = SqueezeDim.backend

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if len(img.shape) == 4 and img.shape[-1] == 1:
            return SqueezeDim(dim=-1, update_meta=True)(img)
        return img


class BinarizeMask(Transform):
    """A reference mask as 0/1 whatever its stored scale: foreground is at least half of the mask's largest value (and
    at least 0.5). 0/1, 0/255 and lossy JPG masks alike; MONAI ``AsDiscrete(threshold=0.5)`` on a 0/255 JPG would
    call the compression noise around every edge (values 1-127) lung. An all-zero mask stays empty."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        t = convert_to_tensor(img, track_meta=True)
        top = float(t.max()) if t.numel() else 0.0
        out = (t >= max(top / 2.0, 0.5)).to(t.dtype if t.is_floating_point() else torch.float32)
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class FieldOfViewPad(InvertibleTransform):
    """Field-of-view normalisation: pad the in-plane axes so that a slice is square and spans at least
    ``min_fov`` mm, so that cropped or non-square reconstructions reach the network at the scale of the
    whole-chest slices it is trained on (``Resize`` to a square input would otherwise stretch and zoom them).

    Padding is MONAI ``Pad`` (tracked, so ``Invertd`` crops it off again); it is recorded even when nothing is
    padded, so the inverse chain stays aligned. The spacing comes from the MetaTensor; pictures (PNG/JPG, no
    spacing) and plain arrays are only made square.

    Where an edge of a CT in HU cuts through the body (a crop inside the chest: at least half of that edge, per slice,
    is above ``OUTSIDE_AIR_HU``), the padding beyond its lung pixels (between ``OUTSIDE_AIR_HU`` and
    ``HU_AIR_CHECK``) is soft tissue (``cut_fill_hu``) instead of their repetition: lung cut by the crop then ends
    at the crop, as lung does inside a chest wall, instead of running out to the image border like the air around a
    body (which the network does not call lung). Edges in room air, a whole-chest field of view, keep ``mode``.

    With ``mode="edge"`` each padded strip repeats its edge line after a median of 5 along it, so one outlying edge
    pixel (a hot pixel, burnt-in text, a corrupt value) is not smeared into a stripe or a whole corner block.

    Args:
        min_fov: smallest in-plane field of view in mm; ``None`` or 0: square only.
        square: pad the shorter in-plane axis to the longer one.
        mode: ``numpy.pad`` mode, e.g. ``"edge"`` (continues a cropped body outwards) or ``"constant"``.
        cut_fill_hu: HU of the padding beyond lung at an edge that cuts through the body; ``None``: always ``mode``.
        max_factor: a padded in-plane side is at most this many times the image's larger in-plane side, so a field of
            view far under ``min_fov`` (a voxel size in cm or otherwise wrong, a crop of a few mm) is not padded
            without bound (0.01 mm pixels asked for 30000² slices).
    """

    backend = Pad.backend

    def __init__(self, min_fov: float | None = 300.0, square: bool = True, mode: str = "edge",
                 cut_fill_hu: float | None = 40.0, max_factor: float = 4.0) -> None:
        if max_factor < 1:
            raise ValueError(f"max_factor must be at least 1, got {max_factor}.")
        self.min_fov, self.square, self.max_factor = float(min_fov or 0.0), square, float(max_factor)
        self.cut_fill_hu = cut_fill_hu
        self.padder = Pad(mode=mode)

    def target_shape(self, img: NdarrayOrTensor) -> tuple[int, int]:
        """In-plane shape after padding, for a channel-first ``(C, X, Y[, Z])`` image."""
        shape = [int(s) for s in img.shape[1:3]]
        if self.square:
            shape = [max(shape)] * 2
        pixdim = getattr(img, "pixdim", None)
        if self.min_fov > 0 and pixdim is not None and _source_suffix(img) not in EIGHT_BIT_SUFFIXES:
            limit = int(self.max_factor * max(shape))
            shape = [max(s, min(limit, int(np.ceil(self.min_fov / float(p))))) if float(p) > 0 else s
                     for s, p in zip(shape, list(pixdim)[:2])]
        return shape[0], shape[1]

    def pad(self, img: NdarrayOrTensor, target: Sequence[int] | None = None) -> NdarrayOrTensor:
        """``img`` padded with ``mode`` to ``target`` (default :meth:`target_shape`), centred; no tissue fill."""
        if len(img.shape) not in (3, 4):
            raise ValueError(f"expected a channel-first (C, X, Y) or (C, X, Y, Z) image, got shape {tuple(img.shape)}.")
        extra = [t - s for s, t in zip(img.shape[1:3], target or self.target_shape(img))]
        to_pad = [(0, 0)] + [(e // 2, e - e // 2) for e in extra] + [(0, 0)] * (len(img.shape) - 3)
        out = self.padder(img, to_pad=to_pad)
        if self.padder.mode == "edge" and any(extra):
            t = convert_to_tensor(out, track_meta=False)  # shares out's memory: filled in place
            for ax in (1, 2):
                (before, after), other, n = to_pad[ax], 3 - ax, t.shape[ax]
                lo, hi = to_pad[other][0], t.shape[other] - to_pad[other][1]
                for start, length, edge in ((0, before, before), (n - after, after, n - after - 1)):
                    if length:
                        line = edge_line(t, ax, edge, 1, lo, hi)
                        t.narrow(ax, start, length).copy_(line.expand_as(t.narrow(ax, start, length)))
        return out

    def cut_padding(self, padded: NdarrayOrTensor, img: NdarrayOrTensor) -> list[tuple[int, int, int, torch.Tensor]]:
        """Where :meth:`pad` continued lung beyond an edge that cuts through the body: per padded strip, ``(axis,
        start, length, where)`` with ``where`` a bool line that broadcasts along the strip (see :func:`fill_where`);
        empty when nothing is to be filled (no padding, no ``cut_fill_hu``, not a CT in HU)."""
        extra = [t - s for s, t in zip(img.shape[1:3], padded.shape[1:3])]
        if self.cut_fill_hu is None or not any(extra) or not is_hu_image(img):
            return []
        t = convert_to_tensor(padded, track_meta=False)
        strips = []
        for ax, e, size in ((1, extra[0], img.shape[1]), (2, extra[1], img.shape[2])):
            other, depth, n = 3 - ax, min(3, int(size)), t.shape[ax]
            for start, length, edge in ((0, e // 2, e // 2), (n - (e - e // 2), e - e // 2, n - (e - e // 2) - depth)):
                if length == 0:
                    continue
                line = edge_line(t, ax, edge, depth, 0, t.shape[other])
                lung = (line > OUTSIDE_AIR_HU) & (line < HU_AIR_CHECK)
                body = (line > OUTSIDE_AIR_HU).float().mean(other, keepdim=True) >= 0.5
                strips.append((ax, start, length, body & lung))
        return strips

    def __call__(self, img: NdarrayOrTensor, target: Sequence[int] | None = None) -> NdarrayOrTensor:
        """Pad ``img``; ``target``: in-plane shape to pad to (default :meth:`target_shape`), e.g. a label's image's."""
        out = self.pad(img, target)
        return fill_where(out, self.cut_padding(out, img), self.cut_fill_hu)

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.padder.inverse(data)


def edge_line(t: torch.Tensor, ax: int, index: int, depth: int, lo: int, hi: int) -> torch.Tensor:
    """The in-plane line of ``t`` (``(C, X, Y[, Z])``) at ``index`` along axis ``ax`` (1 or 2): the mean of ``depth``
    lines from there (float32 when ``depth > 1``), then a median of 5 along the other in-plane axis within its range
    ``[lo, hi)`` (mirrored at its ends), repeated beyond that range to the axis' full length. Size 1 along ``ax``."""
    other = 3 - ax
    line = t.narrow(ax, index, depth)
    line = line.float().mean(ax, keepdim=True) if depth > 1 else line
    last = hi - lo - 1
    at = (torch.arange(t.shape[other], device=t.device) - lo).clamp(0, last)

    def reflect(i):  # mirrored at the range's ends (an end pixel counts once, as inside it)
        return (last - (last - i.abs()).abs()).clamp(0, last) + lo

    taps = [line.index_select(other, reflect(at + k)) for k in range(-2, 3)]
    return torch.stack(taps).median(0).values


def fill_where(img: torch.Tensor, strips: Sequence[tuple[int, int, int, torch.Tensor]], value: float) -> torch.Tensor:
    """``img`` (a padded tensor) with ``value`` where :meth:`FieldOfViewPad.cut_padding`'s strips say, in place (a
    MetaTensor keeps its meta and applied operations); strip by strip, so no mask of the volume's size is made."""
    for ax, start, length, where in strips:
        img.narrow(ax, start, length).masked_fill_(where.to(img.device), value)
    return img


def is_hu_image(img: NdarrayOrTensor) -> bool:
    """Whether ``img`` reads as a CT in HU for the HU post-processing steps: not an 8-bit picture (PNG/JPG source or
    ``uint8``), not empty, and some voxel below ``HU_AIR_CHECK`` (air; NaN, missing data, reads as air). Raw stored
    values without the rescale hold no such voxel. A picture mapped to HU by ``PictureToHU`` counts when its window
    was estimated from its air and soft-tissue peaks, not when the percentile fallback guessed it."""
    if CTIntensityNormalize().is_eight_bit(img):
        return False
    estimate = (getattr(img, "meta", None) or {}).get(PICTURE_META)
    if estimate and json.loads(estimate).get("method") != "peaks":
        return False
    t = convert_to_tensor(img, track_meta=False)
    if t.numel() == 0:
        return False
    if t.is_floating_point():
        return bool(((t < HU_AIR_CHECK) | torch.isnan(t)).any())
    return float(t.min()) < HU_AIR_CHECK


class HUBoundaryRefine(Transform):
    """HU boundary refinement (ours, not in the paper): voxels where the network's probability, resized back to the
    CT's grid, is uncertain are re-decided by their HU: lung where the in-plane 3x3 median is below
    ``threshold_hu``.

    The network sees slices at ``spatial_size`` (160² by default), about three times coarser than a chest CT's
    pixels, so its probability is blurred across a band of a few CT pixels at every lung border. Inside that band
    the CT itself is sharp: lung parenchyma (about -850 HU) against chest wall, mediastinum and diaphragm (about +40
    HU). Voxels the network is sure of (outside ``band``) keep its probability, so dense lung that it calls lung
    (consolidation, nodules) stays lung away from the border.

    Images that are not in HU pass unchanged: 8-bit pictures (PNG/JPG sources or ``uint8`` arrays) and images with
    no voxel below ``HU_AIR_CHECK`` (-500: no air, so no calibrated CT; e.g. raw stored values without the rescale).

    Args:
        threshold_hu: lung/tissue threshold in HU (the classical segmentation's, -320).
        band: ``(low, high)``: probabilities strictly between them are re-decided.
        inplace: change the probability itself instead of a copy (a 600-slice 512² volume is 630 MB in float32).
        threshold: when given, return the refined mask ``prob >= threshold`` as ``uint8`` instead of the refined
            probability, made a slab at a time: no second float volume and no whole-volume boolean (the bundle's
            ``post#refine`` sets it: only the mask is kept).

    Raises:
        ValueError: when not ``0 <= low < high <= 1``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold_hu: float = LUNG_HU_THRESHOLD, band: Sequence[float] = (0.01, 0.99),
                 inplace: bool = False, threshold: float | None = None) -> None:
        if len(band) != 2 or not 0.0 <= float(band[0]) < float(band[1]) <= 1.0:
            raise ValueError(f"band must be (low, high) with 0 <= low < high <= 1, got {band}.")
        self.threshold_hu, self.band = float(threshold_hu), (float(band[0]), float(band[1]))
        self.inplace = bool(inplace)
        self.threshold = None if threshold is None else float(threshold)

    def __call__(self, prob: NdarrayOrTensor, hu: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: ``prob``: channel-first probability ``(1, H, W[, D])``; ``hu``: the CT in HU on the same grid (one
        channel). Returns: ``prob`` with its uncertain voxels set to 0 or 1 (type, dtype and meta kept; with
        ``inplace``, its voxels are ``prob``'s own: ``prob`` is changed too); with ``threshold``, the refined mask
        as ``uint8`` (type and meta kept).

        Raises:
            ValueError: when the two grids differ.
        """
        if tuple(hu.shape[1:]) != tuple(prob.shape[1:]) or hu.shape[0] != 1:
            raise ValueError(f"the HU image {tuple(hu.shape)} is not on the probability's grid {tuple(prob.shape)}.")
        p = convert_to_tensor(prob, track_meta=False)
        binary = self.threshold is not None
        refine = is_hu_image(hu)
        if not (refine or binary):
            return prob
        out = torch.empty(p.shape, dtype=torch.uint8, device=p.device) if binary else p if self.inplace else p.clone()
        if refine:
            h = convert_to_tensor(hu, track_meta=False, device=p.device)
            if h.is_floating_point():
                h = torch.nan_to_num(h, nan=-1024.0)  # NaN (missing data) reads as air
        lo, hi = self.band
        slab, *plane = axial_dims(prob)  # axial planes, whatever the storage order
        for idx in _slab_index(p, dim=slab):  # volumes 16 planes at a time (less memory); parts are views
            part = p[idx]
            decided = part >= self.threshold if binary else part
            if refine:
                uncertain = (part > lo) & (part < hi)
                if bool(uncertain.any()):  # torch.where: boolean-mask indexing is several times slower on the CPU
                    below = median3x3_below(h[idx], self.threshold_hu, dims=plane)
                    decided = torch.where(uncertain, below.to(decided.dtype), decided)
            if decided is not part:  # else out already holds it (out is p, or p's clone)
                out[idx].copy_(decided)
        return convert_to_dst_type(out, prob, dtype=out.dtype)[0]


class RemoveAirways(Transform):
    """Airway removal (ours, not in the paper): the trachea and main bronchi, found in the CT's HU by the classical
    segmentation's airway step (:func:`~fusionlungnet_monai.classical.airway_mask`), are taken out of a lung mask.

    They are air, so the network and the HU boundary refinement can call them lung; reference lung masks (and
    lungmask, TotalSegmentator) leave them out. The step works in any voxel order: the HU image is viewed in LPS
    order (head towards higher ``z``, where the airway search starts) through the mask's affine, and the result is
    viewed back. Images that are not in HU, 2D slices and one-slice volumes pass unchanged (as for
    :class:`HUBoundaryRefine`).

    Args:
        airway_hu: the trachea and main bronchi are darker than this (3x3 median).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, airway_hu: float = AIR_HU) -> None:
        self.airway_hu = float(airway_hu)

    def __call__(self, mask: NdarrayOrTensor, hu: NdarrayOrTensor, affine: NdarrayOrTensor | None = None):
        """Args: ``mask``: channel-first binary mask ``(1, X, Y, Z)``; ``hu``: the CT in HU on its grid (one
        channel); ``affine``: voxel-to-world affine (default: the mask's MetaTensor affine; identity without one).
        Returns: ``mask`` without the airways (type, dtype and meta kept).

        Raises:
            ValueError: when the two grids differ.
        """
        from nibabel import orientations as nio

        from fusionlungnet_monai.classical import airway_mask

        if tuple(hu.shape[1:]) != tuple(mask.shape[1:]) or hu.shape[0] != 1:
            raise ValueError(f"the HU image {tuple(hu.shape)} is not on the mask's grid {tuple(mask.shape)}.")
        if mask.ndim != 4 or mask.shape[-1] == 1 or not is_hu_image(hu):  # a slice has no airway tree to follow
            return mask
        m = convert_to_tensor(mask, track_meta=False)
        # only airways inside the mask can leave it: the search runs on the mask's bounding box (plus one voxel),
        # whose top slices the trachea crosses beside the lung apices; a third of a chest CT's voxels
        box = bounding_box(m[0].detach().cpu(), margin=1)
        if box is None:
            return mask
        to_lps, from_lps, spacing = lps_orientation(getattr(mask, "affine", np.eye(4)) if affine is None else affine)
        h = np.asarray(convert_to_numpy(hu))[0][box]
        airways = airway_mask(nio.apply_orientation(h, to_lps), spacing, airway_hu=self.airway_hu)
        if not airways.any():
            return mask
        airways = nio.apply_orientation(airways, from_lps)
        out = m.clone()
        out[0][box][torch.from_numpy(np.ascontiguousarray(airways)).to(out.device)] = 0
        return convert_to_dst_type(out, mask)[0]


class KeepLargestComponents(Transform):
    """MONAI's ``KeepLargestConnectedComponent`` for one binary mask, in a fraction of its memory: the
    ``num_components`` largest fully connected components (26-connected in 3D), labelled with 16-bit labels on the
    mask's bounding box. MONAI labels the whole grid with int64 labels on the CPU (1.26 GB for 600 slices of 512²),
    which was the peak of the bundle's whole-volume inference run.

    Given the CT in HU, components of a volume that are nearly all pure air (at least ``max_air_fraction`` of their
    voxels with a 3x3 median at or below ``air_hu``: stomach and bowel gas, air outside the body) are not lung and
    are dropped before the largest are chosen (:func:`lung_like_components`, the classical segmentation's rule with
    a stricter fraction). It matters when the lungs touch: they are then one component, and the second largest would
    otherwise be kept whatever it is. Dark lung is not pure air, but it comes close: a quarter of a real lung's
    voxels can lie at or below -950 HU, and more on single slices, so 2D slices and one-slice volumes skip the rule.

    On a single slice the lungs are often more than two pieces (around the diaphragm domes, or split by
    consolidation): with ``slice_fraction``, 2D masks and one-slice volumes keep every component of at least that
    fraction of the largest instead of the ``num_components`` largest.

    Args:
        num_components: how many of the largest components to keep (2: the lungs).
        air_hu: the pure-air threshold (``AIR_HU``, -950) for the HU rule.
        max_air_fraction: components with at least this fraction of pure-air voxels are dropped (0.9).
        slice_fraction: the rule for single slices (the bundle's 0.05); ``None``: ``num_components`` there too.

    Raises:
        ValueError: for ``num_components`` under 1, or ``slice_fraction`` outside (0, 1].
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, num_components: int = 2, air_hu: float = AIR_HU, max_air_fraction: float = 0.9,
                 slice_fraction: float | None = None) -> None:
        if int(num_components) < 1:
            raise ValueError(f"num_components must be 1 or more, got {num_components}.")
        if slice_fraction is not None and not 0.0 < float(slice_fraction) <= 1.0:
            raise ValueError(f"slice_fraction must be in (0, 1] or None, got {slice_fraction}.")
        self.num_components, self.air_hu = int(num_components), float(air_hu)
        self.max_air_fraction = float(max_air_fraction)
        self.slice_fraction = None if slice_fraction is None else float(slice_fraction)

    def __call__(self, img: NdarrayOrTensor, hu: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        """Args: ``img``: a channel-first binary mask ``(1, H, W)`` or ``(1, X, Y, Z)``; ``hu``: the CT in HU on its
        grid (one channel), for the pure-air rule (skipped without it, on 2D slices and one-slice volumes, or when
        :func:`is_hu_image` says it is not in HU). Returns: the mask with the same type.

        Raises:
            ValueError: when ``hu`` is not on the mask's grid.
        """
        if hu is not None and (tuple(hu.shape[1:]) != tuple(img.shape[1:]) or hu.shape[0] != 1):
            raise ValueError(f"the HU image {tuple(hu.shape)} is not on the mask's grid {tuple(img.shape)}.")
        mask = binary_view(convert_to_numpy(img, wrap_sequence=True)[0])  # read only: no copy of a 0/1 uint8 mask
        box = bounding_box(mask, margin=1)  # the margin gives the 3x3 median its true neighbours
        if box is None:
            return img
        labels, n = label_components(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
        single = mask.ndim == 2 or mask.shape[2] == 1
        if hu is not None and n and not single and is_hu_image(hu):
            h = convert_to_tensor(hu, track_meta=False)[(slice(None),) + box]
            slab, *plane = axial_dims(img)
            dense = torch.empty(h.shape, dtype=torch.bool)
            for idx in _slab_index(h, dim=slab):  # 16 axial planes at a time: no box-sized temporaries
                dense[idx] = ~median3x3_below(h[idx], self.air_hu, strict=False, dims=plane).cpu()
            sizes, like = lung_like_components(dense[0].numpy(), labels, n,
                                               min_dense_fraction=1.0 - self.max_air_fraction)
            sizes[~like] = 0
        else:
            sizes = component_sizes(labels, n)
        keep = np.zeros(n + 1, dtype=bool)
        if single and self.slice_fraction is not None:
            keep[1:] = sizes[1:] >= self.slice_fraction * sizes.max()
        else:
            order = np.argsort(sizes, kind="stable")[::-1][: self.num_components]
            keep[order[sizes[order] > 0]] = True
        if keep[1:].all():
            return convert_to_dst_type(mask[None], img, dtype=img.dtype)[0]
        return replace_in_box(img, box, keep[labels])


class FillMaskHoles(Transform):
    """MONAI's ``FillHoles`` for one binary mask, several times faster: background components (fully connected, as
    MONAI's default) that do not reach the border are holes. Labelled on the mask's bounding box (plus one voxel)
    with 16-bit labels, where MONAI propagates a dilation over the whole grid; the same result, since everything
    outside the box is background that reaches the border.

    Axes of size one are not a border: a one-slice volume ``(1, X, Y, 1)`` is filled as the 2D slice it is (MONAI's
    3D fill finds no hole there, as every voxel lies on the volume's first and last slice).
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: ``img``: a channel-first binary mask ``(1, H, W)`` or ``(1, X, Y, Z)``. Returns: the mask with its
        holes filled, same type and dtype (MetaTensor meta kept)."""
        mask = binary_view(convert_to_numpy(img, wrap_sequence=True)[0])  # read only: no copy of a 0/1 uint8 mask
        box = bounding_box(mask, margin=1)
        if box is None:
            return img
        flat = tuple(a for a in range(mask.ndim) if mask.shape[a] == 1)
        sub = np.squeeze(mask[box], axis=flat)
        holes = enclosed_background(sub, np.ones((3,) * sub.ndim, dtype=bool), border_axes=range(sub.ndim))
        if not holes.any():
            return img
        return replace_in_box(img, box, (sub | holes).reshape(mask[box].shape))


#: meta key of :func:`compact_hu`'s output: ``[NaN count, infinite count]`` of the input it made finite
NONFINITE_META = "fln_nonfinite"


def compact_hu(img: NdarrayOrTensor) -> NdarrayOrTensor:
    """A CT in HU as ``int16`` (rounded, clipped to the int16 range, NaN as -1024 HU): half the memory of float32, a
    quarter of int64, exact for the integer HU that scanners store. Volumes are converted 16 slices at a time (no
    float temporary of the whole volume). An image that is already ``int16`` or 8-bit (``uint8``) is not copied: the
    result shares its voxels (with its own meta), so nothing may change the input in place afterwards (no step of the
    bundle's preprocessing does: its first intensity step works on its own float32 copy). The output type follows the
    input; MetaTensor meta is kept, with :data:`NONFINITE_META` where NaN or inf voxels were made finite."""
    t = convert_to_tensor(img, track_meta=False)
    if t.dtype in (torch.uint8, torch.int16):
        return convert_to_dst_type(t, img)[0]
    out = torch.empty(t.shape, dtype=torch.int16, device=t.device)
    nan = inf = 0
    for idx in _slab_index(t):
        part = t[idx]
        if part.is_floating_point():
            if not bool(torch.isfinite(part).all()):
                nan, inf = nan + int(torch.isnan(part).sum()), inf + int(torch.isinf(part).sum())
            part = torch.nan_to_num(part, nan=-1024.0).round()
        out[idx].copy_(part.clamp(-32768, 32767).to(torch.int16))
    out = convert_to_dst_type(out, img, dtype=torch.int16)[0]
    if (nan or inf) and isinstance(out, MetaTensor):  # the report's NaN/inf warning (the copy is finite)
        out.meta[NONFINITE_META] = [nan, inf]
    return out
