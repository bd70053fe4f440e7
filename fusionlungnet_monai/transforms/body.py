"""The body outline as post-processing (ours, not in the paper): lung lies inside the body, so mask voxels in the room
air around the patient (beside and under the back, in the gaps to the table, out to the image's edge) are taken out."""

from __future__ import annotations

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage

from fusionlungnet_monai.transforms.array import (
    AIR_HU,
    axial_dims,
    in_plane_structure,
    is_hu_image,
    label_components,
    lung_like_components,
    median3x3_below,
)

__all__ = ["RemoveOutsideBody", "DARK_HU", "PADDING_HU"]

#: air and lung are darker than this; the body's tissue (fat at -100 HU and up) is brighter
DARK_HU = -500.0
#: below this a voxel is the scanner's padding outside its reconstruction circle (-1024 is read as room air)
PADDING_HU = -1500.0

_IN_PLANE = in_plane_structure(2)


class RemoveOutsideBody(Transform):
    """Body mask (ours, not in the paper): per axial plane, the dark regions (below :data:`DARK_HU`) that reach the
    image's edge or the edge of the reconstruction circle (padding below :data:`PADDING_HU`) and are pure air (more
    than half of their voxels with a 3x3 median at or below ``air_hu``: room air, the gap under the back and to the
    table) are outside the body, as is the padding itself; the mask is cleared there.

    It never cuts lung that reaches the edge: a narrow field of view or a crop through the chest leaves the lung's
    dark region at the edge, but lung parenchyma (about -850 HU) is not pure air, so it stays; and padding is no
    part of any region, so padding beside such a lung does not outweigh it (the failure that made lungmask switch its
    body mask off). Emphysematous lung cut by the edge whose voxels are mostly below ``air_hu`` would be taken out.
    Planes are processed ``chunk`` at a time (no volume-sized float copy); images that are not in HU pass unchanged.

    Args:
        air_hu: the 3x3 median of pure air is at or below this (the classical segmentation's -950 HU).
        chunk: planes labelled at a time.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, air_hu: float = AIR_HU, chunk: int = 16) -> None:
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
