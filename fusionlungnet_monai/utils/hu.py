"""Hounsfield-unit facts the package shares: the thresholds of air, lung and tissue, which images are CTs in HU
and which are 8-bit pictures, and the compact ``int16`` copy of a CT that the HU post-processing steps read."""

from __future__ import annotations

import json
import os

import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.utils import convert_to_dst_type, convert_to_tensor

from fusionlungnet_monai.utils.geometry import slab_index

__all__ = ["DEFAULT_HU_WINDOW", "HU_AIR_CHECK", "LUNG_HU_THRESHOLD", "AIR_HU", "OUTSIDE_AIR_HU", "ROOM_AIR_HU", "EIGHT_BIT_SUFFIXES",
           "PICTURE_META", "NONFINITE_META", "source_suffix", "is_eight_bit", "is_hu_image", "compact_hu"]

#: HU window mapped to [0, 1]; the PNG export of the phantoms uses the same window.
DEFAULT_HU_WINDOW = (-1024.0, 600.0)
#: a CT in HU holds air (outside the body, the lungs) below this; an image without any such voxel is not in HU
HU_AIR_CHECK = -500.0
#: lung/tissue threshold in HU of the classical segmentation and of the HU boundary refinement
LUNG_HU_THRESHOLD = -320.0
#: pure air (room air, FOV padding, stomach and bowel gas, the trachea) has its 3x3 median at or below this; lung
#: parenchyma, even emphysematous, mostly does not
AIR_HU = -950.0
#: room air (about -1000 HU) has its 3x3 median at or below this, even at low dose or under a sharp kernel; lung cut by a
#: crop mostly does not, even emphysematous (median -930 to -960 HU) or sharpened (the body outline's rule)
ROOM_AIR_HU = -975.0
#: room air outside the body and scanner padding lie below this, on an image edge's outer lines (mean of 3 deep, median
#: of 5 along it); lung parenchyma cut by a crop mostly lies above (:class:`FieldOfViewPad`)
OUTSIDE_AIR_HU = -990.0
#: file suffixes read as 8-bit images
EIGHT_BIT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: where :class:`~fusionlungnet_monai.transforms.PictureToHU` records its estimate in the image's meta (MetaTensor
#: ``meta``); an image that holds it is a picture mapped to HU
PICTURE_META = "picture_window"
#: meta key of :func:`compact_hu`'s output: ``[NaN count, infinite count]`` of the input it made finite
NONFINITE_META = "fln_nonfinite"


def source_suffix(img: NdarrayOrTensor) -> str:
    """The lower-case suffix of the file ``img`` was read from (MetaTensor ``filename_or_obj``; ``""`` without)."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj", "")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else ""
    return os.path.splitext(str(name).lower())[1]


def is_eight_bit(img: NdarrayOrTensor) -> bool:
    """Whether ``img`` is an 8-bit picture: its source file is PNG/JPG/BMP/TIFF (MetaTensor ``filename_or_obj``) or
    the array is ``uint8``, and no :class:`~fusionlungnet_monai.transforms.PictureToHU` mapped it to HU yet."""
    if PICTURE_META in (getattr(img, "meta", None) or {}):
        return False  # a picture already mapped to HU by PictureToHU
    return source_suffix(img) in EIGHT_BIT_SUFFIXES or str(img.dtype) in ("uint8", "torch.uint8")


def is_hu_image(img: NdarrayOrTensor) -> bool:
    """Whether ``img`` reads as a CT in HU for the HU post-processing steps: not an 8-bit picture (PNG/JPG source or
    ``uint8``), not empty, and some voxel below ``HU_AIR_CHECK`` (air; NaN, missing data, reads as air). Raw stored
    values without the rescale hold no such voxel. A picture mapped to HU by ``PictureToHU`` counts when its window
    was estimated from its air and soft-tissue peaks, not when the percentile fallback guessed it."""
    if is_eight_bit(img):
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
    for idx in slab_index(t):
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
