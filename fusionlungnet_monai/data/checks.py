"""Input checks that turn bad data into one clear :class:`InputError` naming the path and the problem,
before any library raises from deep inside (empty folder, not DICOM, truncated file, 16-bit PNG, RGBA,
mask/image size mismatch, empty mask, unwritable output)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from fusionlungnet_monai.data.errors import InputError
from fusionlungnet_monai.data.readers import (CTNiftiReader, MetaWithoutPreamble, archive_problem, check_one_volume, picture_problem,
                                              pydicom_decodes, read_dicom)
from fusionlungnet_monai.data.series import (
    IMAGE_SUFFIXES,
    PICTURE_SUFFIXES,
    VOLUME_SUFFIXES,
    LoadCTImage,
    check_grey_slice_size,
    is_dicom_file,
    multiframe_info,
    rescale_slope,
    select_ct_series,
)

__all__ = ["IMAGE_SUFFIXES", "PICTURE_SUFFIXES", "VOLUME_SUFFIXES", "CheckPaird", "check_input", "check_output_dir",
           "check_pair", "file_stem", "image_size"]



def file_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``a.nii.gz`` -> ``a``); other names are returned whole."""
    name = Path(path).name
    for suf in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PICTURE_SUFFIXES):
        return "picture"
    if name.endswith(VOLUME_SUFFIXES):
        return "volume"
    if name.endswith(".dcm") or is_dicom_file(path):
        return "dicom"
    return "unknown"


def _check_picture(path: Path, mask: bool = False) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode, size, problem = im.mode, im.size, picture_problem(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(path, f"not a readable image ({type(e).__name__})") from None
    if problem:
        raise InputError(path, problem)
    if mask and mode == "RGB":  # slice data sets often store grey masks as RGB with three equal channels
        with Image.open(path) as im:
            if not _channels_equal(np.asarray(im), -1):
                raise InputError(path, DIFFERING_CHANNELS)
    elif mask and mode not in ("L", "1", "P", "LA"):
        raise InputError(path, f"mask must be a single-channel image, got mode {mode}")
    return size  # (width, height) = (x, y)


#: why a colour mask is refused: it is read as grey only when its channels are equal
DIFFERING_CHANNELS = ("mask is a colour image whose channels differ (a mask in colour): save it as one grey channel "
                      "(0/1 or 0/255); RGB masks are read as grey only when R, G and B are equal")


def _channels_equal(a, axis: int) -> bool:
    """Whether every channel of ``a`` along ``axis`` equals the first."""
    a = np.moveaxis(np.asarray(a), axis, 0)
    return bool(all(np.array_equal(a[0], c) for c in a[1:]))


def _check_dicom_file(path: Path) -> tuple[int, ...]:
    try:
        ds = read_dicom(path)
        if pydicom_decodes(ds):  # decoded once here, to refuse a truncated or corrupt file in one line
            ds.pixel_array
        frames, shape = int(ds.get("NumberOfFrames", 1) or 1), (int(ds.Columns), int(ds.Rows))
    except MetaWithoutPreamble as e:
        raise InputError(path, e.problem) from None
    except Exception as e:  # truncated, corrupt, no decoder, no Rows/Columns
        raise InputError(path, f"truncated or corrupt DICOM, or pixel data that cannot be decoded ({type(e).__name__})") from None
    check_grey_slice_size(path, components=int(ds.get("SamplesPerPixel", 1) or 1))  # RGB: no HU
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1" and ds.get("Modality") == "CT":
        raise InputError(path, "MONOCHROME1 pixel data (ITK would read inverted HU); convert it to MONOCHROME2")
    slope = rescale_slope(ds)
    if slope is not None and slope < 0:
        raise InputError(path, f"negative RescaleSlope {slope:g}: its HU would be read inverted; fix the header")
    return shape if frames == 1 else shape + (frames,)


def _check_volume(path: Path) -> tuple[int, ...]:
    if path.name.lower().endswith((".nii", ".nii.gz")):  # the header through the reader that will read it
        return tuple(int(n) for n in CTNiftiReader().read(str(path)).shape)
    import itk

    try:
        io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            raise RuntimeError("no reader")
        io.SetFileName(str(path))
        io.ReadImageInformation()
        size = tuple(int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions()))
        components = int(io.GetNumberOfComponents())
    except Exception as e:
        raise InputError(path, f"not a readable volume ({type(e).__name__})") from None
    check_grey_slice_size(path, size, components)
    return size


def image_size(path: str | os.PathLike, mask: bool = False) -> tuple[int, ...]:
    """Spatial size ``(x, y[, z])`` of an image file after the checks above (one-slice volumes count as 2D)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "picture":
        size = _check_picture(path, mask)
    elif kind == "dicom":
        size = _check_dicom_file(path)
    elif kind == "volume":
        size = _check_volume(path)
    elif archived := archive_problem(path):
        raise InputError(path, archived)
    else:
        raise InputError(path, "not an image file (supported: DICOM, NIfTI/MHA/NRRD, PNG/JPG/BMP/TIFF)")
    return _one_slice_as_2d(size)


def _one_slice_as_2d(size: tuple) -> tuple:
    """A one-slice volume's size as a 2D picture's: ``(x, y, 1)`` -> ``(x, y)``."""
    return tuple(size[:2]) if len(size) == 3 and size[2] == 1 else tuple(size)


def check_input(path: str | os.PathLike, series_uid: str | None = None) -> str:
    """Validate an inference input and say what it is: ``"series"`` (DICOM folder), ``"dicom"``, ``"volume"``
    or ``"picture"``.

    Raises:
        InputError: missing path, empty folder, folder without DICOM / only localizers, non-image file, truncated
            DICOM, 16-bit or transparent pictures.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        select_ct_series(path, series_uid)
        return "series"
    kind = _kind(path)
    size = image_size(path)
    check_grey_slice_size(path, size)
    if kind == "dicom":
        multiframe_info(path)  # a multi-frame file holds a series: the series' rules apply
    if kind == "volume":
        check_one_volume(path, size)
    return kind


def check_pair(image: str | os.PathLike, mask: str | os.PathLike, require_foreground: bool = False) -> None:
    """Check an image/mask training pair: readable, mask single-channel (or RGB with equal channels), same in-plane
    size, and (optionally)
    at least one foreground pixel.

    Raises:
        InputError: naming the file at fault.
    """
    _check_sizes(image, mask, image_size(image), image_size(mask, mask=True))
    if require_foreground:
        m = np.asarray(LoadCTImage(image_only=True)(str(mask)))
        if not np.any(m > 0):
            raise InputError(mask, "mask has no foreground pixel (all zero)")


def _check_sizes(image, mask, isz, msz) -> None:
    if tuple(isz) != tuple(msz):
        raise InputError(mask, f"mask size {tuple(msz)} does not match image size {tuple(isz)} of {image}")


class CheckPaird(MapTransform):
    """:func:`check_pair`'s rule on a loaded training item, right after the loader: the label has one value per pixel
    (an RGB mask with three equal channels becomes that grey mask; one whose channels differ is refused) and the
    image's spatial size (a mask of another size was resized with its image and trained on misaligned).

    Args:
        keys: the image's key and the label's, in this order.
        allow_missing_keys: pass items without one of them through.

    Raises:
        InputError: naming the label file.
    """

    def __init__(self, keys: KeysCollection = ("image", "label"), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"CheckPaird takes two keys, the image's and the label's; got {self.keys}")

    @staticmethod
    def _spatial(x):
        meta = getattr(x, "meta", {})
        shape = meta.get("spatial_shape")
        return _one_slice_as_2d(tuple(int(n) for n in (shape if shape is not None else x.shape)))

    def __call__(self, data):
        d = dict(data)
        image_key, label_key = self.keys
        if image_key not in d or label_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"CheckPaird: the item has no {image_key if image_key not in d else label_key!r}")
        image, label = d[image_key], d[label_key]
        name = lambda x, k: getattr(x, "meta", {}).get("filename_or_obj", k)  # noqa: E731
        channel = getattr(label, "meta", {}).get("original_channel_dim")
        if isinstance(channel, (int, np.integer)):  # a colour picture (PIL: -1); NaN when it has no channel axis
            if not _channels_equal(label, int(channel)):
                raise InputError(name(label, label_key), DIFFERING_CHANNELS)
            # three equal channels: the grey mask they repeat, without a channel axis (EnsureChannelFirstd adds it)
            grey = label[(slice(None),) * (int(channel) % label.ndim) + (0,)]
            if isinstance(grey, MetaTensor):
                grey.meta["original_channel_dim"] = float("nan")
            d[label_key] = label = grey
        _check_sizes(name(image, image_key), name(label, label_key), self._spatial(image), self._spatial(label))
        return d


def check_output_dir(path: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Create ``path`` if needed and make sure it is a writable folder that is neither one of the inputs nor
    inside an input folder (symlinks resolved).

    Raises:
        InputError: when it is a file, cannot be created, is not writable, or is (inside) an input.
    """
    path = Path(path)
    for i in inputs:
        src, dst = Path(i).resolve(), path.resolve()
        if dst == src:
            raise InputError(path, "output folder is the input itself; choose another folder (inputs are never "
                                   "written to)")
        if src.is_dir() and src in dst.parents:
            raise InputError(path, f"output folder is inside the input {i}; choose a folder outside it (inputs are "
                                   "never written to)")
    if path.exists() and not path.is_dir():
        raise InputError(path, "output path exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(path, f"cannot create output folder ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(path, "output folder is not writable")
    return path
