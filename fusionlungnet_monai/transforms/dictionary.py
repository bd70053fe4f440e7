"""Dictionary wrappers of the array transforms (MONAI style), and the paper's preprocessing chain."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.utils import TransformBackends
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    InvertibleTransform,
    MapTransform,
    RandomizableTransform,
    Resized,
)

from fusionlungnet_monai.transforms.array import (
    AIR_HU,
    DEFAULT_HU_WINDOW,
    LUNG_HU_THRESHOLD,
    ArtifactRemoval,
    BinarizeMask,
    CTIntensityNormalize,
    DynamicThreshold,
    FieldOfViewPad,
    FillMaskHoles,
    HUBoundaryRefine,
    KeepLargestComponents,
    RemoveAirways,
    MedianFilter,
    compact_hu,
    fill_where,
    SqueezeSingleSlice,
)
from fusionlungnet_monai.transforms.body import RemoveOutsideBody
from fusionlungnet_monai.transforms.picture import PictureToHU, RandCTWindow

__all__ = ["SqueezeSingleSliced", "FieldOfViewPadd", "ArtifactRemovald", "CTIntensityNormalized", "DynamicThresholdd",
           "MedianFilterd", "KeepHUd", "HUBoundaryRefined", "RemoveAirwaysd", "KeepLargestComponentsd",
           "FillMaskHolesd", "PictureToHUd", "RandCTWindowd", "paper_preprocessing"]


class _Wrapd(MapTransform):
    """Apply one array transform to every key."""

    transform: object

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


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


class CTIntensityNormalized(_Wrapd):
    """Dictionary :class:`CTIntensityNormalize`. Args: keys, hu_window, mode, channels, allow_missing_keys."""

    backend = CTIntensityNormalize.backend

    def __init__(self, keys: KeysCollection, hu_window: Sequence[float] = DEFAULT_HU_WINDOW, mode: str = "auto",
                 channels: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTIntensityNormalize(hu_window, mode, channels)


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
    """Dictionary :class:`~fusionlungnet_monai.transforms.body.RemoveOutsideBody`: clears the masks under ``keys``
    outside the body found in the HU image under ``hu_key``. Args: keys, hu_key, air_hu, allow_missing_keys.

    Raises:
        KeyError: when ``hu_key`` is missing.
    """

    backend = RemoveOutsideBody.backend

    def __init__(self, keys: KeysCollection, hu_key: str = "image_hu", air_hu: float = AIR_HU,
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


class FillMaskHolesd(_Wrapd):
    """Dictionary :class:`FillMaskHoles` (the bundle's ``post#fill_holes``). Args: keys, allow_missing_keys."""

    backend = FillMaskHoles.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = FillMaskHoles()


def paper_preprocessing(
    keys: Sequence[str] = ("image", "label"),
    spatial_size: Sequence[int] = (320, 320),
    volume: bool = False,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    channels: int = 1,
    median_radius: int = 1,
    dt_window: int = 25,
    dt_k: float = 0.5,
    dt_alpha: float = 1.2,
    dt_beta: float = 0.0,
    artifact_removal: bool = True,
    dynamic_threshold: bool = True,
    median: bool = True,
    min_fov: float | None = 300.0,
) -> Compose:
    """The paper's preprocessing after loading: channel first -> field-of-view padding (ours, see
    :class:`FieldOfViewPad`) -> intensity to [0, 1] -> resize -> median -> dynamic threshold -> artifact removal.
    The first key is the image; further keys (labels) are only resized (nearest) and binarised. Padding and resizing are the only shape changes and MONAI inverts them (``Invertd``).

    Args:
        keys: image key first, then label keys.
        spatial_size: in-plane network input size.
        volume: inputs are ``(X, Y, Z)`` volumes (resize in-plane only, keep the slice count).
        hu_window, channels: see :class:`CTIntensityNormalize`.
        median_radius: see :class:`MedianFilter`.
        dt_window, dt_k, dt_alpha, dt_beta: see :class:`DynamicThreshold`.
        artifact_removal, dynamic_threshold, median: switch steps off (ablation of the preprocessing).
        min_fov: smallest in-plane field of view in mm (``None``: pad to square only).

    Returns:
        a MONAI ``Compose`` (apply after ``LoadImaged``).
    """
    image, labels = keys[0], list(keys[1:])
    size = list(spatial_size) + ([-1] if volume else [])
    xs: list = [
        EnsureChannelFirstd(keys=list(keys)),
        *([] if volume else [SqueezeSingleSliced(keys=list(keys))]),
        FieldOfViewPadd(keys=list(keys), min_fov=min_fov),
        CTIntensityNormalized(keys=image, hu_window=hu_window, channels=channels),
        Resized(keys=list(keys), spatial_size=size, mode=["bilinear"] + ["nearest"] * len(labels)),
    ]
    if median:
        xs.append(MedianFilterd(keys=image, radius=median_radius))
    if dynamic_threshold:
        xs.append(DynamicThresholdd(keys=image, window=dt_window, k=dt_k, alpha=dt_alpha, beta=dt_beta))
    if artifact_removal:
        xs.append(ArtifactRemovald(keys=image, threshold=0.3, background=0.0))
    if labels:
        xs.append(BinarizeMaskd(keys=labels))  # 0/1, 0/255 and JPG masks -> 0/1
    xs.append(EnsureTyped(keys=list(keys), dtype="float32"))
    return Compose(xs)
