"""Dictionary forms of the post-processing transforms (MONAI style): each wraps its array transform from
:mod:`fusionlungnet_monai.transforms.post.array`; those that read the CT take it in HU from ``hu_key``
(:class:`~fusionlungnet_monai.transforms.KeepHUd`'s copy)."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform

from fusionlungnet_monai.transforms.post.array import (
    FillMaskHoles,
    HUBoundaryRefine,
    KeepLargestComponents,
    RemoveAirways,
    RemoveOutsideBody,
)
from fusionlungnet_monai.utils.hu import AIR_HU, LUNG_HU_THRESHOLD, ROOM_AIR_HU

__all__ = ["HUBoundaryRefined", "RemoveOutsideBodyd", "RemoveAirwaysd", "KeepLargestComponentsd", "FillMaskHolesd"]


class _WithHUd(MapTransform):
    """Base of the dictionary post-processing steps that also read the CT in HU under ``hu_key`` (:class:`KeepHUd`'s
    copy, on the prediction's grid once ``Invertd`` has run): ``d[key] = transform(d[key], d[hu_key])``
    (``transform(d[key], None)`` when ``hu_key`` is ``None``).

    Raises:
        KeyError: when ``hu_key`` is given and missing.
    """

    def __init__(self, keys: KeysCollection, transform, hu_key: str | None, allow_missing_keys: bool) -> None:
        super().__init__(keys, allow_missing_keys)
        self.hu_key, self.transform = hu_key, transform

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.hu_key is not None and self.hu_key not in d:
            raise KeyError(f"{type(self).__name__}: no {self.hu_key!r} in the data (copy the HU image there before "
                           "preprocessing: KeepHUd(keys='image', name='image_hu')).")
        hu = None if self.hu_key is None else d[self.hu_key]
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], hu)
        return d


class HUBoundaryRefined(_WithHUd):
    """Dictionary :class:`HUBoundaryRefine`: refines the probability under ``keys`` with the HU image under
    ``hu_key`` (a copy of the image taken before preprocessing by :class:`KeepHUd`, on the probability's grid once
    ``Invertd`` has run; in the bundle, :class:`SlabwiseInvertd` runs it on each inverted slab).

    Args:
        keys: probability keys (``"pred"``).
        hu_key: key of the CT in HU.
        threshold_hu, band, inplace, threshold: see :class:`HUBoundaryRefine`.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        KeyError: when ``hu_key`` is missing.
    """

    backend = HUBoundaryRefine.backend

    def __init__(self, keys: KeysCollection, hu_key: str = "image_hu", threshold_hu: float = LUNG_HU_THRESHOLD,
                 band: Sequence[float] = (0.01, 0.99), inplace: bool = False, threshold: float | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, HUBoundaryRefine(threshold_hu, band, inplace, threshold), hu_key, allow_missing_keys)


class RemoveOutsideBodyd(_WithHUd):
    """Dictionary :class:`RemoveOutsideBody`: clears the masks under ``keys`` outside the body found in the HU image
    under ``hu_key``. Args: keys, hu_key, air_hu, allow_missing_keys.

    Raises:
        KeyError: when ``hu_key`` is missing.
    """

    backend = RemoveOutsideBody.backend

    def __init__(self, keys: KeysCollection, hu_key: str = "image_hu", air_hu: float = ROOM_AIR_HU,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RemoveOutsideBody(air_hu), hu_key, allow_missing_keys)


class RemoveAirwaysd(_WithHUd):
    """Dictionary :class:`RemoveAirways`: takes the trachea and main bronchi out of the masks under ``keys``, found in
    the HU image under ``hu_key`` (:class:`KeepHUd`'s copy, on the mask's grid once ``Invertd`` has run).

    Args:
        keys: binary mask keys (``"pred"``, after the threshold).
        hu_key: key of the CT in HU.
        airway_hu: see :class:`RemoveAirways`.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        KeyError: when ``hu_key`` is missing.
    """

    backend = RemoveAirways.backend

    def __init__(self, keys: KeysCollection, hu_key: str = "image_hu", airway_hu: float = AIR_HU,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RemoveAirways(airway_hu), hu_key, allow_missing_keys)


class KeepLargestComponentsd(_WithHUd):
    """Dictionary :class:`KeepLargestComponents`.

    Args:
        keys: binary mask keys (``"pred"``, after the threshold).
        num_components, air_hu, max_air_fraction, slice_fraction: see :class:`KeepLargestComponents`.
        hu_key: key of the CT in HU (:class:`KeepHUd`'s copy, on the mask's grid once ``Invertd`` has run), for the
            pure-air rule; ``None`` (the default): no HU rule, as for pictures.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        KeyError: when ``hu_key`` is given and missing.
    """

    backend = KeepLargestComponents.backend

    def __init__(self, keys: KeysCollection, num_components: int = 2, hu_key: str | None = None,
                 air_hu: float = AIR_HU, max_air_fraction: float = 0.9, slice_fraction: float | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, KeepLargestComponents(num_components, air_hu, max_air_fraction, slice_fraction), hu_key,
                         allow_missing_keys)


class FillMaskHolesd(MapTransform):
    """Dictionary :class:`FillMaskHoles` (the bundle's ``post#fill_holes``). Args: keys, allow_missing_keys."""

    backend = FillMaskHoles.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = FillMaskHoles()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
