"""Paper preprocessing (§4.7, Fig. 11) as MONAI array transforms: CT intensity normalisation shared by DICOM/NIfTI
(HU) and PNG/JPG (8-bit) inputs, median filter, dynamic threshold (eq. 13) and artifact removal; and the steps of ours
around them: the field-of-view padding, the one-slice squeeze and the reference mask's binarisation.

Images are channel-first: ``(C, H, W)`` slices or ``(C, X, Y, Z)`` volumes with ``Z`` the slice axis; every
filter here works in-plane (per slice) on volumes. numpy arrays, torch tensors and MetaTensors are accepted;
the output type follows the input and MetaTensor meta (affine, filename) is kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.transforms import InvertibleTransform, KeepLargestConnectedComponent, MedianSmooth, Pad, SqueezeDim, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor
from scipy import ndimage

from fusionlungnet_monai.transforms.pre.picture import LUMA
from fusionlungnet_monai.utils.geometry import as_slices, from_slices, slab_index
from fusionlungnet_monai.utils.hu import (
    DEFAULT_HU_WINDOW,
    EIGHT_BIT_SUFFIXES,
    HU_AIR_CHECK,
    OUTSIDE_AIR_HU,
    is_eight_bit,
    is_hu_image,
    source_suffix,
)
from fusionlungnet_monai.utils.masks import fill_holes_2d

__all__ = ["CTIntensityNormalize", "MedianFilter", "DynamicThreshold", "ArtifactRemoval", "SqueezeSingleSlice",
           "BinarizeMask", "FieldOfViewPad", "edge_line", "fill_where"]


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k x k windows (valid) of (N, 1, H, W), as two separable 1D passes: 2k instead of k² adds/pixel."""
    return F.avg_pool2d(F.avg_pool2d(x, (k, 1), stride=1), (1, k), stride=1)


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
        return is_eight_bit(img)

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
        for idx in slab_index(t, 32):  # in-plane, so slab by slab: MONAI's filter holds 9+ copies of its input
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
        s, shape = as_slices(img)
        return from_slices(self._threshold_slices(s), shape)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        t = convert_to_tensor(img, track_meta=False)
        x = t.float() if not t.is_floating_point() else t
        s, shape = as_slices(x)
        enhanced = torch.where(s > self._threshold_slices(s), self.alpha * s + self.beta, s)
        if self.clamp:  # to each slice's own range
            lo = s.amin(dim=(1, 2, 3), keepdim=True)
            hi = s.amax(dim=(1, 2, 3), keepdim=True)
            enhanced = torch.minimum(torch.maximum(enhanced, lo), hi)
        out, *_ = convert_to_dst_type(from_slices(enhanced, shape), img, dtype=x.dtype)
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
        s, shape = as_slices(img)
        fg = (s[:, 0] > thr).float()  # (N, H, W): one "channel" per slice -> per-slice components
        if self.opening_radius:
            st = ndimage.generate_binary_structure(2, 1)
            st = ndimage.iterate_structure(st, self.opening_radius)[None]
            fg = torch.as_tensor(ndimage.binary_opening(fg.cpu().numpy() > 0, structure=st), dtype=torch.float32)
        # one "channel" per slice; one-hot mode skips channel 0 unless every channel is listed
        lcc = KeepLargestConnectedComponent(is_onehot=True, independent=True, applied_labels=list(range(len(fg))))
        fg = convert_to_tensor(lcc(fg), track_meta=False).cpu().numpy() > 0
        filled = fill_holes_2d(fg) if len(fg) else fg
        return from_slices(torch.as_tensor(filled, device=img.device)[:, None], shape)

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
        if self.min_fov > 0 and pixdim is not None and source_suffix(img) not in EIGHT_BIT_SUFFIXES:
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
