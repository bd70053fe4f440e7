"""Dictionary forms of the preprocessing transforms (MONAI style): each wraps its array transform from
:mod:`fusionlungnet_monai.transforms.pre.array` or :mod:`~fusionlungnet_monai.transforms.pre.picture`."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from fusionlungnet_monai.transforms.pre.array import (
    ArtifactRemoval,
    BinarizeMask,
    CTIntensityNormalize,
    DynamicThreshold,
    FieldOfViewPad,
    MedianFilter,
    SqueezeSingleSlice,
    fill_where,
)
from fusionlungnet_monai.transforms.pre.picture import PictureToHU, RandCTWindow
from fusionlungnet_monai.utils.hu import DEFAULT_HU_WINDOW, compact_hu

__all__ = ["CTIntensityNormalized", "MedianFilterd", "DynamicThresholdd", "ArtifactRemovald", "SqueezeSingleSliced",
           "BinarizeMaskd", "FieldOfViewPadd", "PictureToHUd", "RandCTWindowd", "KeepHUd"]


class _Wrapd(MapTransform):
    """Apply one array transform to every key."""

    transform: object

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class CTIntensityNormalized(_Wrapd):
    """Dictionary :class:`CTIntensityNormalize`. Args: keys, hu_window, mode, channels, allow_missing_keys."""

    backend = CTIntensityNormalize.backend

    def __init__(self, keys: KeysCollection, hu_window: Sequence[float] = DEFAULT_HU_WINDOW, mode: str = "auto",
                 channels: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTIntensityNormalize(hu_window, mode, channels)


class MedianFilterd(_Wrapd):
    """Dictionary :class:`MedianFilter`. Args: keys, radius, allow_missing_keys."""

    backend = MedianFilter.backend

    def __init__(self, keys: KeysCollection, radius: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MedianFilter(radius)


class DynamicThresholdd(_Wrapd):
    """Dictionary :class:`DynamicThreshold`. Args: keys, window, k, alpha, beta, clamp, allow_missing_keys."""

    backend = DynamicThreshold.backend

    def __init__(self, keys: KeysCollection, window: int = 25, k: float = 0.5, alpha: float = 1.2, beta: float = 0.0,
                 clamp: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = DynamicThreshold(window, k, alpha, beta, clamp)


class ArtifactRemovald(MapTransform):
    """Dictionary :class:`ArtifactRemoval`; the body mask is stored under ``mask_key`` when given.

    Args:
        keys: image keys.
        threshold, background, opening_radius: see :class:`ArtifactRemoval`.
        mask_key: key (or ``"{key}"`` pattern) for the body mask, e.g. ``"{key}_body"``; ``None``: not stored.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = ArtifactRemoval.backend

    def __init__(self, keys: KeysCollection, threshold: float | None = None, background: float | None = None,
                 opening_radius: int = 0, mask_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = ArtifactRemoval(threshold, background, opening_radius, return_mask=True)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], mask = self.remover(d[key])
            if self.mask_key:
                d[self.mask_key.format(key=key)] = mask
        return d


class SqueezeSingleSliced(_Wrapd):
    """Dictionary :class:`SqueezeSingleSlice`. Args: keys, allow_missing_keys."""

    backend = SqueezeSingleSlice.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SqueezeSingleSlice()


class BinarizeMaskd(_Wrapd):
    """Dictionary :class:`BinarizeMask`. Args: keys, allow_missing_keys."""

    backend = BinarizeMask.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = BinarizeMask()


class FieldOfViewPadd(MapTransform, InvertibleTransform):
    """Dictionary :class:`FieldOfViewPad` (invertible). The padding is computed from the first key (the image) and
    applied to every key, so an image and its label stay aligned; where the image's padding is soft tissue beyond a
    cut through the body, the other keys' padding is 0 (no lung). Args: keys, min_fov, square, mode, cut_fill_hu,
    max_factor, allow_missing_keys."""

    backend = FieldOfViewPad.backend

    def __init__(self, keys: KeysCollection, min_fov: float | None = 300.0, square: bool = True, mode: str = "edge",
                 cut_fill_hu: float | None = 40.0, max_factor: float = 4.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.padder = FieldOfViewPad(min_fov, square, mode, cut_fill_hu, max_factor)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if keys:
            image = d[keys[0]]
            shape = self.padder.target_shape(image)
            padded = {key: self.padder.pad(d[key], target=shape) for key in keys}
            strips = self.padder.cut_padding(padded[keys[0]], image)
            for key in keys:
                d[key] = fill_where(padded[key], strips, self.padder.cut_fill_hu if key == keys[0] else 0)
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.padder.inverse(d[key])
        return d


class PictureToHUd(_Wrapd):
    """Dictionary :class:`~fusionlungnet_monai.transforms.picture.PictureToHU`. Args: keys, polarity, only_pictures,
    allow_missing_keys."""

    backend = PictureToHU.backend

    def __init__(self, keys: KeysCollection, polarity: str = "auto", only_pictures: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PictureToHU(polarity, only_pictures)


class RandCTWindowd(RandomizableTransform, MapTransform):
    """Dictionary :class:`~fusionlungnet_monai.transforms.picture.RandCTWindow` (one draw for all keys). Args: keys,
    prob, invert_prob, gamma_prob, jpeg_prob, noise_prob, allow_missing_keys."""

    backend = RandCTWindow.backend

    def __init__(self, keys: KeysCollection, prob: float = 0.5, invert_prob: float = 0.2, gamma_prob: float = 0.3,
                 jpeg_prob: float = 0.4, noise_prob: float = 0.3, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.window = RandCTWindow(prob, invert_prob, gamma_prob, jpeg_prob, noise_prob)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.window.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.window.randomize()
        for key in self.key_iterator(d):
            d[key] = self.window(d[key], randomize=False)
        return d


class KeepHUd(MapTransform):
    """Keep the CT in HU, compact (:func:`compact_hu`: ``int16``, meta kept; no copy when it is already ``int16``),
    under ``name``, for :class:`HUBoundaryRefined` and :class:`RemoveAirwaysd`; run it right after loading, before
    any intensity change.

    Args:
        keys: the image key (one).
        name: key of the copy.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        ValueError: for more than one key.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection, name: str = "image_hu", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"KeepHUd copies one image, got keys {self.keys}.")
        self.name = name

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.name] = compact_hu(d[key])
        return d
