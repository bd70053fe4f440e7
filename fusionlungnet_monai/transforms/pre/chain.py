"""The preprocessing chain, defined once: every bundle config (training, evaluation, inference, pictures, volumes,
multi-GPU) and the Python API take it from here, with its settings in one place."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, Orientationd, Resized

from fusionlungnet_monai.data.checks import CheckPaird
from fusionlungnet_monai.data.series import LoadCTImaged
from fusionlungnet_monai.transforms.pre.dictionary import (
    ArtifactRemovald,
    BinarizeMaskd,
    CTIntensityNormalized,
    DynamicThresholdd,
    FieldOfViewPadd,
    KeepHUd,
    MedianFilterd,
    PictureToHUd,
    SqueezeSingleSliced,
)
from fusionlungnet_monai.utils.hu import DEFAULT_HU_WINDOW

__all__ = ["LungCTPreprocessing", "paper_preprocessing", "STEPS", "HU_STEPS"]

#: every step's name, in the order they run (steps that do not apply to a setting are left out)
STEPS = ("load", "check_pair", "channel_first", "squeeze", "to_device", "picture_hu", "keep_hu", "orient", "fov",
         "intensity", "resize", "median", "dynamic_threshold", "artifact_removal", "binarize_label", "to_tensor")
#: the steps that leave the image in HU (the ``"hu"`` stage); the rest is the ``"network"`` stage
HU_STEPS = STEPS[: STEPS.index("fov") + 1]


class LungCTPreprocessing(Compose):
    """The preprocessing chain (paper §4.7, and ours): read the CT or picture (pictures mapped to HU), orient it and
    pad its field of view, then the paper's intensity window, resize, median filter, dynamic threshold (eq. 13) and
    artifact removal. A MONAI ``Compose`` of dictionary transforms, invertible where it changes the grid.

    Steps by name, in order (:data:`STEPS`): ``load`` (:class:`~fusionlungnet_monai.data.LoadCTImaged`),
    ``check_pair`` (with a label), ``channel_first``, ``squeeze`` (slices only: a one-slice volume becomes 2D),
    ``to_device`` (with ``device``), ``picture_hu``, ``keep_hu`` (with ``keep_hu``: the HU copy the post-processing
    reads), ``orient`` (volumes only), ``fov``, ``intensity``, ``resize``, ``median``, ``dynamic_threshold``,
    ``artifact_removal``, ``binarize_label`` (with a label), ``to_tensor``. Steps up to ``fov`` are the ``"hu"``
    stage, the rest the ``"network"`` stage (:meth:`stage`): training puts its picture augmentation between them.
    To nest the chain in a ``Compose`` of your own, take its ``transforms`` (or :func:`paper_preprocessing`): MONAI
    inlines only plain ``Compose`` objects, and ``Invertd`` needs them inlined to invert with keys missing.

    Args:
        image_key: the image's key.
        label_key: the reference mask's key (training, evaluation); ``None``: images only.
        volume: whole volumes ``(X, Y, Z)``: oriented to ``orientation``, resized in-plane with the slice count kept;
            ``False``: 2D slices.
        spatial_size: in-plane network input size.
        hu_window: ``(low, high)`` HU mapped to ``[0, 1]``.
        median_radius: in-plane radius of the median filter.
        threshold_window, threshold_k: window (odd, pixels) and weight of the local standard deviation of the
            dynamic threshold.
        alpha, beta: the dynamic threshold's gain and offset above the threshold (eq. 13).
        artifact_threshold_hu: the artifact removal's body threshold, in HU.
        min_fov_mm: smallest in-plane field of view in mm (``None`` or 0: pad to square only).
        fov_cut_fill_hu: HU of the padding beyond lung cut by a crop (``None``: edge padding only).
        orientation: axis codes volumes are oriented to (``None``: as stored).
        picture_polarity: ``"auto"``, ``"normal"`` or ``"inverted"`` for PNG/JPG pictures.
        in_channels: the network's input channels (1, or 3 for the grey image repeated).
        load: start with ``load`` (and ``check_pair``); ``False``: apply after a loader of your own.
        series_uid: the DICOM series to read from folders holding several.
        load_dtype: ``dtype`` of the loader (``"compact"``: int16 HU, as the bundle's inference reads).
        keep_hu: copy the image in HU under ``hu_key`` after ``picture_hu`` (for the HU post-processing).
        hu_key: key of that copy.
        device: move the image there right after loading (``None``: stay on the CPU).
        disabled: names of steps to leave out (e.g. ``["picture_hu"]``, or ``["median"]`` for an ablation).

    Raises:
        ValueError: for an unknown name in ``disabled``.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = None,
        volume: bool = False,
        spatial_size: Sequence[int] = (160, 160),
        hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
        median_radius: int = 1,
        threshold_window: int = 25,
        threshold_k: float = 0.5,
        alpha: float = 1.2,
        beta: float = 0.0,
        artifact_threshold_hu: float = -537.0,
        min_fov_mm: float | None = 300.0,
        fov_cut_fill_hu: float | None = 40.0,
        orientation: str | None = "LPS",
        picture_polarity: str = "auto",
        in_channels: int = 1,
        load: bool = True,
        series_uid: str | None = None,
        load_dtype=None,
        keep_hu: bool = False,
        hu_key: str = "image_hu",
        device: torch.device | str | None = None,
        disabled: Sequence[str] = (),
    ) -> None:
        unknown = sorted(set(disabled) - set(STEPS))
        if unknown:
            raise ValueError(f"disabled: unknown steps {unknown}; the steps are {', '.join(STEPS)}.")
        self.spatial_size, self.hu_window = [int(s) for s in spatial_size], (float(hu_window[0]), float(hu_window[1]))
        image, labels = image_key, [label_key] if label_key else []
        keys = [image] + labels
        modes = ["bilinear"] + ["nearest"] * len(labels)
        lo, hi = self.hu_window
        steps = {
            "load": LoadCTImaged(keys, series_uid=series_uid, **({} if load_dtype is None else {"dtype": load_dtype}))
            if load else None,
            "check_pair": CheckPaird(keys) if load and labels else None,
            "channel_first": EnsureChannelFirstd(keys),
            "squeeze": None if volume else SqueezeSingleSliced(keys),
            "to_device": None if device is None else EnsureTyped(image, device=device, track_meta=True),
            "picture_hu": PictureToHUd(image, polarity=picture_polarity),
            "keep_hu": KeepHUd(image, name=hu_key) if keep_hu else None,
            "orient": Orientationd(keys, axcodes=orientation, labels=None) if volume and orientation else None,
            "fov": FieldOfViewPadd(keys, min_fov=min_fov_mm, cut_fill_hu=fov_cut_fill_hu),
            "intensity": CTIntensityNormalized(image, hu_window=self.hu_window, channels=in_channels),
            "resize": Resized(keys, spatial_size=self.spatial_size + ([-1] if volume else []), mode=modes),
            "median": MedianFilterd(image, radius=median_radius),
            "dynamic_threshold": DynamicThresholdd(image, window=threshold_window, k=threshold_k, alpha=alpha,
                                                   beta=beta),
            "artifact_removal": ArtifactRemovald(image, threshold=(artifact_threshold_hu - lo) / (hi - lo),
                                                 background=0.0),
            "binarize_label": BinarizeMaskd(labels) if labels else None,
            "to_tensor": EnsureTyped(keys, dtype=torch.float32),
        }
        #: the steps that run, by name, in order
        self.named = {k: steps[k] for k in STEPS if steps[k] is not None and k not in disabled}
        super().__init__(list(self.named.values()))

    def stage(self, name: str) -> list:
        """The steps of one stage, in order: ``"hu"`` (reading to the field of view: the image still in HU) or
        ``"network"`` (the intensity window to the tensor the network takes).

        Raises:
            ValueError: for another name.
        """
        if name not in ("hu", "network"):
            raise ValueError(f"stage must be 'hu' or 'network', got {name!r}.")
        return [t for k, t in self.named.items() if (k in HU_STEPS) == (name == "hu")]


def paper_preprocessing(keys: Sequence[str] = ("image", "label"), spatial_size: Sequence[int] = (320, 320),
                        volume: bool = False, **settings) -> Compose:
    """The bundle's preprocessing (:class:`LungCTPreprocessing`) after a loader of your own (``LoadImaged``), as a
    plain MONAI ``Compose``: nested in your own ``Compose``, MONAI inlines it (``Compose.flatten`` inlines only plain
    ``Compose`` objects), so ``Invertd`` with keys missing works as for MONAI's own chains.

    Args:
        keys: the image's key, then optionally the label's.
        spatial_size: in-plane network input size.
        volume: inputs are ``(X, Y, Z)`` volumes.
        settings: any other argument of :class:`LungCTPreprocessing` (``hu_window``, ``median_radius``, ``alpha``,
            ``disabled`` ...).

    Returns:
        the chain's steps without ``load``.
    """
    return Compose(LungCTPreprocessing(image_key=keys[0], label_key=keys[1] if len(keys) > 1 else None, volume=volume,
                                       spatial_size=spatial_size, load=False, **settings).transforms)
