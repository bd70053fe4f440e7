"""Writers for volumes and masks: DICOM CT series, NIfTI and 8-bit PNG slices.

Arrays are in MONAI's ITK layout ``(x, y, z)``; geometry is given in the DICOM patient frame (LPS).
None of these writers overwrites an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from fusionlungnet_monai.data.errors import InputError
from fusionlungnet_monai.utils.hu import DEFAULT_HU_WINDOW  # same window for PNG export and network input

__all__ = [
    "DEFAULT_HU_WINDOW",
    "hu_to_uint8",
    "write_dicom_series",
    "write_localizer",
    "write_nifti",
    "write_png_slices",
    "write_png",
]



def _check_new(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; refusing to overwrite (pass overwrite=True to replace it)")


def _prepare_dir(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(folder, f"cannot create output folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise InputError(folder, "output folder is not writable")
    return folder


def hu_to_uint8(hu: np.ndarray, window: Sequence[float] = DEFAULT_HU_WINDOW) -> np.ndarray:
    """Map HU to 0..255 with a linear window (clipped)."""
    lo, hi = float(window[0]), float(window[1])
    out = (np.asarray(hu, dtype=np.float32) - lo) / (hi - lo)
    return np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _save(ds, path: Path) -> None:
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)


def _base_dataset(sop_uid: str, study_uid: str, series_uid: str, patient_id: str, series_number: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(study_uid, "frame")
    ds.Modality = "CT"
    ds.PatientName = f"Phantom^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "fusionlungnet-monai phantom"
    ds.SeriesNumber = series_number
    ds.PositionReferenceIndicator = ""
    ds.KVP = "120"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1  # signed int16 storage
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    return ds


def write_dicom_series(
    image_hu: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    folder: str | os.PathLike,
    patient_id: str = "PHANTOM",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "Chest CT phantom",
    series_number: int = 2,
    overwrite: bool = False,
) -> list[Path]:
    """Write an ``(x, y, z)`` HU volume as a valid CT Image Storage series (one file per axial slice).

    Args:
        image_hu: HU volume, shape ``(x, y, z)``; values are stored as int16 with RescaleIntercept -1024.
        spacing: voxel size in mm ``(x, y, z)``.
        origin: LPS position in mm of voxel ``(0, 0, 0)``.
        folder: output folder (created).
        patient_id, study_uid, series_uid, series_description, series_number: DICOM identifiers; UIDs derive
            deterministically from ``patient_id`` when not given.
        overwrite: replace existing files.

    Returns:
        the written file paths, in slice order.
    """
    folder = _prepare_dir(folder)
    image_hu = np.asarray(image_hu)
    if image_hu.ndim != 3:
        raise ValueError(f"image_hu must be 3D (x, y, z), got shape {image_hu.shape}.")
    study_uid = study_uid or _uid(patient_id, "study")
    series_uid = series_uid or _uid(patient_id, study_uid, "series", series_number)
    stored = np.clip(np.rint(image_hu.astype(np.float32) + 1024.0), -32768, 32767).astype(np.int16)
    paths = []
    for k in range(image_hu.shape[2]):
        sop = _uid(series_uid, k)
        ds = _base_dataset(sop, study_uid, series_uid, patient_id, series_number)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = series_description
        ds.InstanceNumber = k + 1
        pos = [float(origin[0]), float(origin[1]), float(origin[2]) + k * float(spacing[2])]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{pos[2]:.4f}"
        ds.SliceThickness = f"{float(spacing[2]):g}"
        ds.PixelSpacing = [f"{float(spacing[1]):g}", f"{float(spacing[0]):g}"]  # row spacing (y), column (x)
        ds.Rows, ds.Columns = int(image_hu.shape[1]), int(image_hu.shape[0])
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = y, columns = x
        path = folder / f"CT{k + 1:04d}.dcm"
        _check_new(path, overwrite)
        _save(ds, path)
        paths.append(path)
    return paths


def write_localizer(
    folder: str | os.PathLike,
    patient_id: str = "PHANTOM",
    study_uid: str | None = None,
    size: tuple[int, int] = (512, 256),
    overwrite: bool = False,
) -> Path:
    """Write a single coronal scout/localizer image (ImageType ``...\\LOCALIZER``) into ``folder``."""
    folder = _prepare_dir(folder)
    study_uid = study_uid or _uid(patient_id, "study")
    series_uid = _uid(patient_id, study_uid, "series", 1)
    ds = _base_dataset(_uid(series_uid, 0), study_uid, series_uid, patient_id, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesDescription = "Topogram 0.6 T20f"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["-250", "0", "100"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # coronal
    ds.SliceThickness = "1"
    ds.PixelSpacing = ["1", "1"]
    ds.Rows, ds.Columns = int(size[1]), int(size[0])
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    scout = np.where(((xx - size[0] / 2) / (size[0] * 0.4)) ** 2 + ((yy - size[1] / 2) / (size[1] * 0.45)) ** 2 < 1,
                     1064, 24)
    ds.PixelData = scout.astype(np.int16).tobytes()
    path = folder / "SCOUT0001.dcm"
    _check_new(path, overwrite)
    _save(ds, path)
    return path


def write_nifti(array: np.ndarray, affine_ras: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an ``(x, y, z)`` array as NIfTI with the given voxel-to-RAS affine."""
    import nibabel as nib

    path = Path(path)
    _prepare_dir(path.parent)
    _check_new(path, overwrite)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine_ras, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    return path


def write_png(array2d: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a 2D ``(x, y)`` uint8 array as an 8-bit grey PNG (rows = y), MONAI PILReader's layout."""
    from PIL import Image

    path = Path(path)
    _prepare_dir(path.parent)
    _check_new(path, overwrite)
    arr = np.asarray(array2d)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {arr.dtype}.")
    Image.fromarray(np.ascontiguousarray(arr.T), mode="L").save(str(path))
    return path


def write_png_slices(
    image_hu: np.ndarray,
    mask: np.ndarray | None,
    folder: str | os.PathLike,
    case_id: str = "case",
    window: Sequence[float] = DEFAULT_HU_WINDOW,
    slices: Sequence[int] | None = None,
    overwrite: bool = False,
) -> list[tuple[Path, Path | None]]:
    """Write axial slices as 8-bit PNGs (``images/``) with 0/255 PNG masks (``masks/``), same file names.

    Args:
        image_hu: HU volume ``(x, y, z)``.
        mask: binary mask ``(x, y, z)`` or ``None``.
        folder: output root; ``images/`` and ``masks/`` are created below it.
        case_id: file name prefix; files are ``{case_id}_s{k:03d}.png``.
        window: HU window mapped to 0..255.
        slices: which slice indices to write (default: all).
        overwrite: replace existing files.

    Returns:
        ``(image_path, mask_path)`` pairs.
    """
    folder = Path(folder)
    out = []
    for k in range(image_hu.shape[2]) if slices is None else slices:
        name = f"{case_id}_s{int(k):03d}.png"
        ip = write_png(hu_to_uint8(image_hu[:, :, k], window), folder / "images" / name, overwrite)
        mp = None
        if mask is not None:
            mp = write_png((np.asarray(mask[:, :, k]) > 0).astype(np.uint8) * 255, folder / "masks" / name, overwrite)
        out.append((ip, mp))
    return out
