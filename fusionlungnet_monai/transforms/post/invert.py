"""Inverse of the preprocessing one slab of slices at a time (ours): MONAI ``Invertd`` without the whole-volume float
copy at the CT's grid."""

from __future__ import annotations

from copy import deepcopy
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, Invertd, MapTransform
from monai.utils import TraceKeys, ensure_tuple_rep

from fusionlungnet_monai.utils.geometry import head_foot_axis

__all__ = ["SlabwiseInvertd"]


class SlabwiseInvertd(MapTransform):
    """``Invertd`` one slab of network slices at a time, each slab taken through ``slab_transforms`` (the HU
    refinement, the threshold) before the next one is inverted.

    The network's probability is small (160² per slice), but ``Invertd`` makes it float32 at the CT's grid: 630 MB
    for 600 slices of 512². Here that grid exists a slab at a time, and the whole volume only as what
    ``slab_transforms`` return (a ``uint8`` mask in the bundle). The slabs are cut along the last axis of ``keys``
    (the network's slice axis, which the preprocessing keeps: ``Resized`` with ``-1`` on it), each is inverted by
    MONAI's ``Invertd`` with the trace of ``orig_keys`` (its sizes along that axis set to the slab's) and lands where
    it lies in the input's own voxel order, whatever the orientation step did (coronal, sagittal or flipped
    storage). The result equals ``Invertd`` followed by ``slab_transforms`` on the whole volume for transforms that
    work in axial planes. The whole image is inverted at once for 2D images, for a trace kept outside a MetaTensor,
    when a traced transform changed the number of slices, and when the network's slices are not axial (no
    orientation step on a coronal or sagittal series).

    Args:
        keys: keys of the network's output (``"pred"``).
        transform: the preprocessing applied to ``orig_keys`` (as for ``Invertd``).
        orig_keys: keys of the preprocessed input whose trace is inverted; default: ``keys``.
        slab_transforms: callables on a slab's dictionary (``keys`` inverted, ``slab_keys`` cut to the same slices),
            applied in order; ``None`` entries are skipped.
        slab_keys: keys already on the input's grid to cut along with each slab (``"image_hu"``); missing ones are
            skipped.
        slab_slices: slices per slab.
        nearest_interp: as for ``Invertd``.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        ValueError: when ``slab_slices`` is below 1.
    """

    def __init__(self, keys: KeysCollection, transform: InvertibleTransform, orig_keys: KeysCollection | None = None,
                 slab_transforms: Sequence[Callable | None] = (), slab_keys: Sequence[str] = (),
                 slab_slices: int = 16, nearest_interp: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(slab_slices) < 1:
            raise ValueError(f"slab_slices must be at least 1, got {slab_slices}.")
        self.orig_keys = ensure_tuple_rep(orig_keys, len(self.keys)) if orig_keys is not None else self.keys
        self.inverters = [Invertd(k, transform, orig_keys=o, nearest_interp=nearest_interp, to_tensor=True)
                          for k, o in zip(self.keys, self.orig_keys)]
        self.slab_transforms = [t for t in slab_transforms if t is not None]
        self.slab_keys, self.slab_slices = tuple(slab_keys), int(slab_slices)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key, orig_key, inverter in self.key_iterator(d, self.orig_keys, self.inverters):
            d[key] = self._invert(d, key, orig_key, inverter)
        return d

    def _finish(self, item: dict) -> dict:
        for t in self.slab_transforms:
            item = t(item)
        return item

    def _invert(self, d: dict, key: Hashable, orig_key: Hashable, inverter: Invertd):
        pred, ref = d[key], d[orig_key]
        trace = list(getattr(ref, "applied_operations", []))
        n = int(pred.shape[-1])
        first = _orientation_index(trace) + 1  # the ops from here work in the network's voxel order
        if (pred.ndim != 4 or n <= self.slab_slices or not isinstance(ref, MetaTensor)
                or any(_slices(op) not in (None, n) for op in trace[first:]) or head_foot_axis(ref.affine) != 2):
            return self._finish(inverter(d))[key]
        # the input's own affine, as the orientation step recorded it (None without one)
        full = (np.asarray(trace[first - 1][TraceKeys.EXTRA_INFO]["original_affine"], dtype=np.float64)
                if first else None)
        axis = _slab_axis(ref, full)
        out = meta = None
        for z0 in range(0, n, self.slab_slices):
            s = min(self.slab_slices, n - z0)
            inv = inverter({key: pred[..., z0:z0 + s], orig_key: _slab_proxy(ref, trace, first, z0, s)})[key]
            start = _slab_start(inv, full, axis, z0)
            where = (slice(None),) * (axis + 1) + (slice(start, start + s),)
            item = {key: inv, **{k: d[k][where] for k in self.slab_keys if k in d}}
            part = self._finish(item)[key]
            if out is None:
                shape = list(part.shape)
                shape[axis + 1] = n
                out = torch.empty(shape, dtype=part.dtype, device=part.device)
                meta = deepcopy(inv.meta)
                whole = torch.as_tensor(inv.affine, dtype=torch.float64).clone()
                whole[:3, 3] -= whole[:3, axis] * start  # the input's first voxel, not the slab's
                meta["affine"] = whole
            out[where] = part.as_tensor() if isinstance(part, MetaTensor) else torch.as_tensor(part)
        return MetaTensor(out, meta=meta)


def _orientation_index(trace: list) -> int:
    """Index of the last orientation step in ``trace``; -1 when there is none (the ops after it work in the
    network's voxel order, slices along the last axis)."""
    for i in range(len(trace) - 1, -1, -1):
        if trace[i].get(TraceKeys.CLASS_NAME) == "Orientation":
            return i
    return -1


def _slices(op: dict) -> int | None:
    size = op.get(TraceKeys.ORIG_SIZE)
    return int(size[-1]) if size is not None and len(size) == 3 else None


def _slab_proxy(ref, trace: list, first: int, z0: int, s: int) -> MetaTensor:
    """A stand-in for the preprocessed image of slices ``z0 .. z0 + s``: its trace with ``s`` slices from op
    ``first`` on (those after the orientation step), and its affine moved to the slab's first slice."""
    ops = deepcopy(trace)
    for op in ops[first:]:
        if _slices(op) is not None:
            op[TraceKeys.ORIG_SIZE] = (*op[TraceKeys.ORIG_SIZE][:2], s)
    meta = deepcopy(ref.meta)
    affine = torch.as_tensor(ref.affine, dtype=torch.float64).clone()
    affine[:3, 3] += affine[:3, 2] * z0
    meta["affine"] = affine
    proxy = MetaTensor(torch.zeros(1), meta=meta)
    proxy.applied_operations = ops
    return proxy


def _slab_axis(ref, full: np.ndarray | None) -> int:
    """The spatial axis of the input's voxel order (affine ``full``) that the network's slices are stacked along:
    the input's own last axis without an orientation step (``full`` None), else the one closest to the network's
    slice direction."""
    if full is None:
        return 2
    along = np.asarray(torch.as_tensor(ref.affine, dtype=torch.float64))[:3, 2]
    cols = full[:3, :3] / np.linalg.norm(full[:3, :3], axis=0)
    return int(np.argmax(np.abs(cols.T @ along)))


def _slab_start(inv, full: np.ndarray | None, axis: int, z0: int) -> int:
    """The index along ``axis`` of the input's voxel order (affine ``full``; None without an orientation step) where
    the inverted slab of network slices from ``z0`` begins (reversed order when the orientation step flipped that
    axis).

    Raises:
        RuntimeError: when the slab's first voxel does not lie on that axis at a whole index.
    """
    if full is None:
        return z0
    origin = np.asarray(torch.as_tensor(inv.affine, dtype=torch.float64))[:, 3]
    voxel = np.linalg.solve(full, origin)[:3]  # the slab's first voxel in the input's index space
    start = int(round(float(voxel[axis])))
    if np.abs(np.delete(voxel, axis)).max() > 1e-3 or abs(voxel[axis] - start) > 1e-3:
        raise RuntimeError(f"slab {z0} inverted to voxel {voxel.round(3).tolist()}, not along axis {axis}.")
    return start
