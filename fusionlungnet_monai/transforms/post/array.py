"""Post-processing of ours (not in the paper) as MONAI array transforms: the network's blurred lung border
re-decided in HU (:class:`HUBoundaryRefine`), the room air around the body cleared (:class:`RemoveOutsideBody`), the
trachea and main bronchi taken out (:class:`RemoveAirways`), the lungs kept as the largest components
(:class:`KeepLargestComponents`) and their holes filled (:class:`FillMaskHoles`).

Masks and images are channel-first, ``(1, H, W)`` slices or ``(1, X, Y, Z)`` volumes; the output type follows the
input and MetaTensor meta is kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, convert_to_tensor
from nibabel import orientations as nio
from scipy import ndimage

from fusionlungnet_monai.classical import airway_mask
from fusionlungnet_monai.utils.geometry import axial_dims, bounding_box, lps_orientation, replace_in_box, slab_index
from fusionlungnet_monai.utils.hu import AIR_HU, LUNG_HU_THRESHOLD, ROOM_AIR_HU, is_hu_image
from fusionlungnet_monai.utils.masks import (
    binary_view,
    component_sizes,
    enclosed_background,
    in_plane_structure,
    label_components,
    lung_like_components,
    median3x3_below,
)

__all__ = ["HUBoundaryRefine", "RemoveOutsideBody", "RemoveAirways", "KeepLargestComponents", "FillMaskHoles",
           "DARK_HU", "PADDING_HU"]

#: air and lung are darker than this; the body's tissue (fat at -100 HU and up) is brighter
DARK_HU = -500.0
#: below this a voxel is the scanner's padding outside its reconstruction circle (-1024 is read as room air)
PADDING_HU = -1500.0

_IN_PLANE = in_plane_structure(2)


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
        for idx in slab_index(p, dim=slab):  # volumes 16 planes at a time (less memory); parts are views
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


class RemoveOutsideBody(Transform):
    """Body mask (ours, not in the paper): per axial plane, the dark regions (below :data:`DARK_HU`) that reach the
    image's edge or the edge of the reconstruction circle (padding below :data:`PADDING_HU`) and are room air (at
    least half of their voxels with a 3x3 median at or below ``air_hu``: the air around the patient, the gap under
    the back and to the table) are outside the body, as is the padding itself; the mask is cleared there.

    It never cuts lung that reaches the edge: a narrow field of view or a crop through the chest leaves the lung's
    dark region at the edge, but lung parenchyma (about -850 HU) is not room air, and padding is no part of any
    region, so padding beside such a lung does not outweigh it (the failure that made lungmask switch its body mask
    off). ``air_hu`` is :data:`~fusionlungnet_monai.utils.hu.ROOM_AIR_HU` (-975), not the -950 HU of pure air
    elsewhere: emphysematous lung (median -930 to -960 HU) and lung under a sharp kernel cut by a crop reach -950 in
    half their voxels (with -950, 0.3.14 before this: the elastix crop's IoU 0.49 and 0.84; 0.986 and 0.980 now),
    room air reaches -975 in nearly all of them, at low dose too. What it leaves: small air pockets between the body
    and the table that partial volume lifts to about -955 HU (a crop of LIDC-IDRI-0003: IoU 0.976 against 0.991 with
    -950), and lung cut by the edge that reads -975 HU or darker in more than half its voxels. Planes are processed
    ``chunk`` at a time (no volume-sized float copy); images that are not in HU pass unchanged.

    Args:
        air_hu: the 3x3 median of room air is at or below this.
        chunk: planes labelled at a time.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, air_hu: float = ROOM_AIR_HU, chunk: int = 16) -> None:
        self.air_hu, self.chunk = float(air_hu), int(chunk)

    def outside(self, hu: np.ndarray) -> np.ndarray:
        """The outside-the-body voxels of a stack of axial planes ``(X, Y, Z)`` in HU (bool, same shape)."""
        out = np.zeros(hu.shape, dtype=bool)
        for z0 in range(0, hu.shape[2], self.chunk):
            h = np.asarray(hu[:, :, z0 : z0 + self.chunk], dtype=np.float32)
            valid = h > PADDING_HU  # NaN (missing data) counts as padding
            dark = valid & (h < DARK_HU)
            lab, n = label_components(dark, structure=_IN_PLANE)
            if not n:
                out[:, :, z0 : z0 + self.chunk] = ~valid
                continue
            edge = ndimage.binary_dilation(~valid, structure=_IN_PLANE)
            edge[0], edge[-1], edge[:, 0], edge[:, -1] = True, True, True, True
            at_edge = np.zeros(n + 1, dtype=bool)
            at_edge[np.unique(lab[edge])] = True
            at_edge[0] = False
            dense = ~median3x3_below(torch.from_numpy(h[None]), self.air_hu, strict=False)[0].numpy()
            lung_like = lung_like_components(dense, lab, n)[1]
            out[:, :, z0 : z0 + self.chunk] = (at_edge & ~lung_like)[lab] | ~valid
        return out

    def __call__(self, mask: NdarrayOrTensor, hu: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: ``mask``: channel-first binary mask ``(1, H, W)`` or ``(1, X, Y, Z)``; ``hu``: the CT (or picture
        mapped to HU) on its grid. Returns: the mask without voxels outside the body (type and meta kept).

        Raises:
            ValueError: when the two grids differ.
        """
        if tuple(hu.shape[1:]) != tuple(mask.shape[1:]) or hu.shape[0] != 1:
            raise ValueError(f"the HU image {tuple(hu.shape)} is not on the mask's grid {tuple(mask.shape)}.")
        if not is_hu_image(hu):
            return mask
        m = convert_to_numpy(mask).copy()
        h = convert_to_numpy(hu)
        slab, a, b = axial_dims(mask)
        if m.ndim == 3:  # one 2D plane (1, H, W)
            m[0][self.outside(h[0][..., None])[..., 0]] = 0
        else:  # planes last, as views: the cleared voxels land in m itself
            order = (a - 1, b - 1, slab - 1)
            m3 = np.transpose(m[0], order)
            m3[self.outside(np.transpose(h[0], order))] = 0
        return convert_to_dst_type(m, mask)[0]


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
            for idx in slab_index(h, dim=slab):  # 16 axial planes at a time: no box-sized temporaries
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
