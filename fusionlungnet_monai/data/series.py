"""DICOM series discovery and selection, and a MONAI reader that loads the selected CT series of a folder.

A folder may hold several series (localizers, reformats, SEG/RTSTRUCT/SR objects, other modalities). We group
files by SeriesInstanceUID (empty UIDs form one group), drop what cannot be an axial CT volume and pick the axial
CT series with the most slices (ties: ORIGINAL before DERIVED, then the thinnest slices).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import OrderedDict
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.data import ImageReader, ITKReader
from monai.transforms import LoadImage, LoadImaged
from monai.utils import ensure_tuple

from fusionlungnet_monai.data.errors import InputError, NothingToSegment
from fusionlungnet_monai.data.readers import (CTNiftiReader, MetaWithoutPreamble, metaimage_messages,
                                              picture_reader, quiet_logger, read_dicom, read_failure)
from fusionlungnet_monai.utils.geometry import planewise_copy

__all__ = ["SeriesInfo", "scan_dicom_folder", "select_ct_series", "multiframe_info", "CTSeriesReader", "LoadCTImage",
           "LoadCTImaged", "is_dicom_file", "load_ct_lps", "functional_value", "rescale_slope"]

logger = logging.getLogger(__name__)

_NON_IMAGE_SOP = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
}


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file has the DICM preamble marker, or parses as DICOM without it (:func:`read_dicom`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    try:
        read_dicom(path, stop_before_pixels=True)
        return True
    except Exception:
        return False


@dataclass
class SeriesInfo:
    """What we know about one series in a folder (or, with ``kind`` other than ``"series"``, about one image file)."""

    uid: str
    files: list = field(default_factory=list)
    modality: str = ""
    image_type: str = ""
    description: str = ""
    orientation: tuple = ()
    positions: list = field(default_factory=list)
    slice_thickness: float = 0.0
    rejected: str = ""  # why it cannot be used ("" when usable)
    nothing_to_segment: bool = False  # rejected as no CT volume at all (not CT, localizer, report, reformat ...)
    warnings: list = field(default_factory=list)
    sizes: set = field(default_factory=set)  # (Rows, Columns) of its slices
    no_pixels: list = field(default_factory=list)  # files without PixelData
    short_pixels: list = field(default_factory=list)  # files whose PixelData is shorter than Rows x Columns say
    photometric: set = field(default_factory=set)  # PhotometricInterpretation of its slices
    frame_positions: list = field(default_factory=list)  # a multi-frame file's ImagePositionPatient per frame
    samples: set = field(default_factory=set)  # SamplesPerPixel of its slices (3: RGB)
    no_spacing: int = 0  # slices without a usable PixelSpacing (absent, zero or negative: ITK assumes 1 mm)
    no_rescale: int = 0  # slices without RescaleIntercept (stored values read as HU)
    zero_slope: int = 0  # slices with RescaleSlope 0 (invalid: ITK reads it as 1)
    negative_slope: list = field(default_factory=list)  # files with a negative RescaleSlope (HU would come inverted)
    kind: str = "series"  # what check_input calls the input: series, dicom, volume or picture
    identity: dict = field(default_factory=dict)  # PatientID / StudyInstanceUID / FrameOfReferenceUID -> values seen
    pixel_spacings: dict = field(default_factory=dict)  # usable PixelSpacing (mm, rounded) -> the first file with it
    unread: list = field(default_factory=list)  # (path, why) of the folder's files not read as DICOM

    @property
    def num_slices(self) -> int:
        return len(self.frame_positions) or len(self.files)

    @property
    def is_axial(self) -> bool:
        """Whether its slices are axial (slice normal within about 25 degrees of the head-foot axis)."""
        return len(self.orientation) == 6 and abs(float(_normal(self.orientation)[2])) >= 0.9

    def summary(self) -> str:
        status = f"rejected: {self.rejected}" if self.rejected else "usable"
        return (f"series {self.uid or '<empty UID>'} ({self.modality or '?'}, {self.image_type or '?'}, "
                f"'{self.description}', {len(self.files)} file(s)) {status}")


def functional_value(ds, name: str, sequence: str, frame: int = 0):
    """The value of ``name``: top-level in a single-frame image; in a multi-frame (enhanced) one, in ``sequence`` of
    the shared functional groups or of frame ``frame``'s (``None`` when absent)."""
    if name in ds:
        return ds.get(name)
    for groups, i in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", frame)):
        items = ds.get(groups) or []
        inner = items[i].get(sequence) if len(items) > i else None
        if inner and name in inner[0]:
            return inner[0].get(name)
    return None


def rescale_slope(ds) -> float | None:
    """A DICOM image's ``RescaleSlope`` (multi-frame: its functional groups' first), ``None`` when absent or not a
    number."""
    value = functional_value(ds, "RescaleSlope", "PixelValueTransformationSequence")
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _usable_spacing(value) -> bool:
    """Whether a ``PixelSpacing`` value gives two positive, finite sizes (ITK reads anything else as 1 mm)."""
    try:
        sizes = [float(v) for v in value]
    except (TypeError, ValueError):
        return False
    return len(sizes) == 2 and all(np.isfinite(v) and v > 0 for v in sizes)


def _short_pixel_data(ds, path: Path) -> bool:
    """Whether uncompressed ``PixelData`` holds fewer bytes than ``Rows x Columns x frames`` need, or runs past the
    end of the file (a truncated copy): the readers would fill the slice with zeros or garbage without a word. Read
    from the header alone (the pixels are a deferred element)."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if elem is None or (syntax is not None and syntax.is_compressed):
        return False
    length = getattr(elem, "length", None)
    if length is None:  # a value pydicom has already converted (under ``defer_size``)
        length = len(elem.value or b"")
    if length == 0xFFFFFFFF:  # undefined length: encapsulated frames, whatever the transfer syntax says
        return False
    tell = getattr(elem, "value_tell", None)  # in a deflated file: a place in the inflated stream, not in the file
    if tell is not None and not (syntax is not None and syntax.is_deflated) and tell + length > path.stat().st_size:
        return True
    try:
        bits = int(ds.get("BitsAllocated", 0) or 0)
        need = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(
            ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return False
    return bits % 8 == 0 and length < need * bits // 8


def _plane_geometry(ds) -> tuple[tuple, list]:
    """``(ImageOrientationPatient, [ImagePositionPatient of each frame])`` of a single- or multi-frame image."""
    ori = functional_value(ds, "ImageOrientationPatient", "PlaneOrientationSequence")
    frames = len(ds.get("PerFrameFunctionalGroupsSequence") or []) or 1
    positions = [functional_value(ds, "ImagePositionPatient", "PlanePositionSequence", i) for i in range(frames)]
    positions = [[float(v) for v in p] if p else None for p in positions]
    return tuple(round(float(v), 4) for v in (ori or [])), positions if any(positions) else []


def _unread_note(unread: list) -> str:
    """One line naming the files of a folder that were not read as DICOM slices, and why."""
    return (f"{len(unread)} file(s) in the folder are not DICOM slices and were not read: "
            + ", ".join(f"{p.name} ({why})" for p, why in unread[:6]) + (" ..." if len(unread) > 6 else ""))


def _why_unread(path: Path, error: Exception) -> str:
    """Why a file of a series folder was not read as DICOM, in a few words."""
    if path.stat().st_size == 0:
        return "empty file"
    if path.name.lower().endswith(PICTURE_SUFFIXES + VOLUME_SUFFIXES):
        return "an image file, not DICOM: give it as an input of its own"
    return f"not DICOM, or damaged: {type(error).__name__}"


def _normal(orientation: Sequence[float]) -> np.ndarray:
    o = np.asarray(orientation, dtype=float)
    return np.cross(o[:3], o[3:])


def scan_dicom_folder(folder: str | os.PathLike, recursive: bool = True) -> list[SeriesInfo]:
    """Read the headers of every DICOM file under ``folder`` and describe each series.

    The last few scans are kept: scanning the same files again (same paths, sizes and modification times) costs a
    ``stat`` per file, not a header read, so the input checks, the reader and the report share one scan.

    Raises:
        InputError: when the folder does not exist, is empty, or holds no DICOM file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder" if folder.exists() else "no such folder")
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    if not files:
        raise InputError(folder, "empty folder: no files to read")
    return _scan_cached(folder, files)


def _scan_cached(folder: Path, files: list[Path]) -> list[SeriesInfo]:
    """:func:`_scan_files`, or a copy of its earlier result when the same files are unchanged (paths, sizes and
    modification times): the input checks, the reader and the report share one scan of the headers."""
    key = (str(folder.resolve()), tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()]))
    if key in _SCANNED:
        _SCANNED.move_to_end(key)
        return deepcopy(_SCANNED[key])
    series = _scan_files(folder, files)
    _SCANNED[key] = deepcopy(series)
    while len(_SCANNED) > _SCANNED_MAX:
        _SCANNED.popitem(last=False)
    return series


#: the last scans (folder, and every file's path, size and mtime) -> their series
_SCANNED: OrderedDict = OrderedDict()
_SCANNED_MAX = 4


#: what must be one value across a series' slices, and what a second value means
_IDENTITY = {"PatientID": "patients", "StudyInstanceUID": "studies", "FrameOfReferenceUID": "frames of reference"}


def _scan_files(folder: Path, files: list[Path]) -> list[SeriesInfo]:
    groups: dict[str, SeriesInfo] = {}
    seen_sop: dict = {}  # SOPInstanceUID -> (first file, (series, position))
    shared_sop: dict = {}  # series -> [(first file, file)]: another slice under a SOPInstanceUID already seen
    n_dicom, no_preamble, unread = 0, [], []
    for path in files:
        try:
            ds = read_dicom(path, defer_size="1 KB")  # headers + whether PixelData is there, not its bytes
        except MetaWithoutPreamble:
            no_preamble.append(path)
            continue
        except Exception as e:
            if not any(part.startswith(".") for part in path.relative_to(folder).parts):
                unread.append((path, _why_unread(path, e)))
            continue
        n_dicom += 1
        sop = str(ds.get("SOPInstanceUID", "")) or None
        uid = str(ds.get("SeriesInstanceUID", ""))
        ori, positions = _plane_geometry(ds)
        where = (uid, tuple(positions[0]) if positions else None)
        if sop and sop in seen_sop:
            first, first_where = seen_sop[sop]
            if first_where == where or where[1] is None:
                continue  # byte-identical duplicates and copies of the same instance
            shared_sop.setdefault(where[0], []).append((first, path))  # another slice under the same UID: kept
        if sop:
            seen_sop.setdefault(sop, (path, where))
        info = groups.setdefault(uid, SeriesInfo(uid=uid, modality=str(ds.get("Modality", "")),
                                                 image_type="\\".join(ds.get("ImageType", []) or []),
                                                 description=str(ds.get("SeriesDescription", ""))))
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in _NON_IMAGE_SOP or sop_class.startswith("1.2.840.10008.5.1.4.1.1.88"):
            _not_a_ct_volume(info, f"{_NON_IMAGE_SOP.get(sop_class, 'structured report')} object, not an image")
        info.files.append(path)
        if len(positions) > 1:  # a multi-frame (enhanced) image: one file holds the whole series
            info.frame_positions = positions
        info.positions.append(positions[0] if positions else None)
        if info.orientation and ori != info.orientation:
            info.rejected = info.rejected or "inconsistent ImageOrientationPatient within the series"
        info.orientation = info.orientation or ori
        try:
            info.slice_thickness = float(ds.get("SliceThickness", 0) or 0)
        except (TypeError, ValueError):
            pass
        if "Rows" in ds:
            info.sizes.add((int(ds.Rows), int(ds.get("Columns", 0))))
        info.photometric.add(str(ds.get("PhotometricInterpretation", "")).strip())
        for key in _IDENTITY:
            if value := str(ds.get(key, "") or "").strip():
                info.identity.setdefault(key, set()).add(value)
        info.samples.add(int(ds.get("SamplesPerPixel", 1) or 1))
        spacing = functional_value(ds, "PixelSpacing", "PixelMeasuresSequence")
        if _usable_spacing(spacing):
            info.pixel_spacings.setdefault(tuple(round(float(s), 3) for s in spacing), path)
        else:
            info.no_spacing += 1
        info.no_rescale += functional_value(ds, "RescaleIntercept", "PixelValueTransformationSequence") is None
        slope = rescale_slope(ds)
        info.zero_slope += slope == 0
        if slope is not None and slope < 0:
            info.negative_slope.append(path)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            info.no_pixels.append(path)
        elif _short_pixel_data(ds, path):
            info.short_pixels.append(path)
    if n_dicom == 0:
        images = [p for p in files if p.name.lower().endswith(PICTURE_SUFFIXES + VOLUME_SUFFIXES)]
        hint = (f"; it holds {len(images)} image file(s) such as {images[0].name}: give one file as the input (or a "
                "list of files), or run `fusionlungnet predict` on the folder, which takes a folder of cases"
                if images else "")
        if no_preamble:
            hint = f"; {len(no_preamble)} file(s) such as {no_preamble[0].name} hold a {MetaWithoutPreamble.problem}"
        raise InputError(folder, f"no DICOM files found ({len(files)} file(s) checked){hint}")
    for info in groups.values():
        if unread:
            info.unread = unread
            info.warnings.append(_unread_note(unread))
        if pairs := shared_sop.get(info.uid):
            info.warnings.append(f"{len(pairs)} file(s) share their SOPInstanceUID with another slice of the series "
                                 f"(e.g. {pairs[0][1].name} and {pairs[0][0].name}, at other positions): both were "
                                 "read as slices; the export's UIDs are broken (a DICOM SEG of this series cannot "
                                 "reference them one to one)")
        if info.no_pixels and not info.rejected:
            info.rejected = ("no image pixels" if len(info.no_pixels) == len(info.files) else
                             f"{len(info.no_pixels)} of {len(info.files)} slices have no pixel data (e.g. "
                             f"{info.no_pixels[0].name}): the mask would not line up with the CT in z")
        if info.short_pixels and not info.rejected:
            info.rejected = (f"{len(info.short_pixels)} of {len(info.files)} slices hold fewer pixel bytes than their "
                             f"Rows x Columns need (e.g. {info.short_pixels[0].name}): truncated or damaged files")
        if info.negative_slope and not info.rejected:
            info.rejected = (f"{len(info.negative_slope)} of {len(info.files)} slices have a negative RescaleSlope "
                             f"(e.g. {info.negative_slope[0].name}): their HU would be read inverted; fix the header")
        if len(info.sizes) > 1 and not info.rejected:
            info.rejected = "slices of different sizes " + ", ".join(f"{r}x{c}" for r, c in sorted(info.sizes))
        if len(info.pixel_spacings) > 1 and not info.rejected and np.ptp(list(info.pixel_spacings), axis=0).max() > 2e-3:
            info.rejected = ("slices of different PixelSpacing " + ", ".join(
                f"{r:g}x{c:g} mm ({f.name})" for (r, c), f in sorted(info.pixel_spacings.items())) +
                ": ITK would give every slice the first one's")
        mixed = [(k, sorted(v)) for k, v in info.identity.items() if len(v) > 1]
        if mixed and not info.rejected:
            key, values = mixed[0]
            info.rejected = (f"its slices belong to {len(values)} different {_IDENTITY[key]} ({key} "
                             + ", ".join(repr(v) for v in values[:4]) + (" ..." if len(values) > 4 else "")
                             + ") under one SeriesInstanceUID: a data error, they would be merged into one volume; "
                             "separate the series")
        _validate(info)
    return list(groups.values())


#: the smallest in-plane size (pixels) read as a CT slice: smaller pictures are icons or mistakes, and MONAI's writers
#: fail on them
MIN_IN_PLANE = 16


def check_grey_slice_size(name, size: Sequence[int] = (), components: int = 1) -> None:
    """Refuse an image of several values per voxel or under :data:`MIN_IN_PLANE` pixels in-plane (``size`` starts
    ``(x, y)``; not checked when empty): the rule of the input checks (from headers) and of :class:`CTSeriesReader`
    (after reading).

    Raises:
        InputError: naming ``name`` (``None`` when the caller does not know it).
    """
    if components > 1:
        raise InputError(name, f"{components} values per voxel (a vector, RGB or multi-channel image): one grey CT "
                               "volume in HU expected")
    if len(size) >= 2 and min(size[:2]) < MIN_IN_PLANE:
        raise InputError(name, f"image of {size[0]}x{size[1]} pixels: too small for a CT slice (at least "
                               f"{MIN_IN_PLANE}x{MIN_IN_PLANE} expected)")

#: a coronal or sagittal series becomes axial planes this many pixels deep (one per slice): fewer is no chest plane
MIN_REFORMAT_SLICES = 32


def _not_a_ct_volume(info: SeriesInfo, why: str) -> None:
    """Reject ``info`` as holding no CT volume to segment (a study's localizer, reformat, report or other modality),
    unlike a damaged or unreadable CT series: a batch run skips such a case instead of failing it."""
    info.rejected, info.nothing_to_segment = why, True


def _validate(info: SeriesInfo) -> None:
    """Reject what is not an axial CT volume; sort usable series by slice position; note geometry warnings."""
    if info.rejected:
        return
    if info.modality != "CT":
        return _not_a_ct_volume(info, f"modality {info.modality or 'unknown'}, not CT")
    if any(t in info.image_type.upper() for t in ("LOCALIZER", "SCOUT", "TOPOGRAM")):
        return _not_a_ct_volume(info, "localizer/scout image")
    if "MONOCHROME1" in info.photometric:  # GDCM inverts the stored values, so HU would come out wrong
        info.rejected = "MONOCHROME1 pixel data (ITK would read inverted HU); convert the series to MONOCHROME2"
        return
    if max(info.samples, default=1) > 1:
        return _not_a_ct_volume(info, f"{max(info.samples)} values per pixel (RGB: a secondary capture or "
                                      "screenshot), not CT values in HU")
    if len(info.orientation) != 6:
        info.rejected = "no ImageOrientationPatient: the slices' plane is unknown"
        return
    missing = [f for f, p in zip(info.files, info.positions) if p is None or len(p) != 3]
    if missing:
        info.rejected = (f"{len(missing)} of {len(info.files)} slices have no ImagePositionPatient (e.g. "
                         f"{missing[0].name}): their order and spacing are unknown")
        return
    if info.frame_positions and len(info.files) > 1:
        info.rejected = (f"{len(info.files)} multi-frame files in one series: give one of them (e.g. "
                         f"{info.files[0].name}) as the input")
        return
    if any(p is None or len(p) != 3 for p in info.frame_positions):
        info.rejected = "a multi-frame image without ImagePositionPatient for every frame"
        return
    n = _normal(info.orientation)
    if info.frame_positions:  # ITK stacks the frames in the file's order
        steps = np.diff(np.asarray(info.frame_positions) @ n)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            info.rejected = "a multi-frame image whose frames are not in slice-position order"
            return
    if np.linalg.norm(n) < 0.5:
        info.rejected = (f"ImageOrientationPatient {list(info.orientation)} gives no slice plane (its row and column "
                         "directions are zero or parallel)")
        return
    main = int(np.argmax(np.abs(n)))
    if abs(n[main]) < 0.9:
        info.rejected = f"oblique slices (slice normal {np.round(n, 3).tolist()}, not near one patient axis)"
        return
    z = np.asarray(info.positions) @ n
    order = np.argsort(z)
    info.files = [info.files[i] for i in order]
    info.positions = [info.positions[i] for i in order]
    if info.frame_positions:  # one file: its frames are the slices
        z = np.asarray(info.frame_positions) @ n
    num_slices = len(z)
    if main != 2:  # the pipeline reorients every volume to axial planes (LPS) and writes the mask back
        plane = "sagittal" if main == 0 else "coronal"
        if num_slices == 1:
            return _not_a_ct_volume(info, f"a lone {plane} slice: the 2D model segments axial slices; give the axial "
                                          f"series, or the {plane} series ({MIN_REFORMAT_SLICES} or more slices)")
        if num_slices < MIN_REFORMAT_SLICES:
            return _not_a_ct_volume(info, f"a {plane} series of {num_slices} slice(s): too few to reformat axial "
                                          f"planes from ({MIN_REFORMAT_SLICES} or more needed)")
        info.warnings.append(f"{plane} series: the 2D model sees axial planes reformatted from it")
    if info.no_spacing:
        info.warnings.append(f"no usable PixelSpacing (absent, zero or negative) in {info.no_spacing} of "
                             f"{len(info.files)} files: 1 mm pixels were "
                             "assumed, so the volumes in mL and the field-of-view padding are not to be trusted")
    if info.no_rescale:
        info.warnings.append(f"no RescaleIntercept in {info.no_rescale} of {len(info.files)} files (a CT image "
                             "must have one): the stored values were read as HU")
    if info.zero_slope:
        info.warnings.append(f"RescaleSlope 0 (invalid) in {info.zero_slope} of {len(info.files)} files: read as 1, "
                             "as ITK does")
    if abs(n[main]) < 0.9999:
        info.warnings.append(f"gantry tilt / oblique slices (slice normal {np.round(n, 4).tolist()})")
    if len(z) > 2:
        gaps = np.diff(np.sort(z))
        if np.any(gaps < 1e-3):
            info.rejected = "several slices share one position (multiple phases or duplicates)"
        elif gaps.max() - gaps.min() > 0.1 * np.median(gaps):
            info.warnings.append(f"irregular slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); ITK uses a "
                                 "constant spacing, so positions along z are approximate")


def select_ct_series(folder: str | os.PathLike, series_uid: str | None = None, quiet: bool = False) -> SeriesInfo:
    """Pick the axial CT series of ``folder`` (or the one with ``series_uid``); logs what was found and picked, and
    warns with its warnings, unless ``quiet`` (a second look at a folder already picked from).

    Raises:
        InputError: when no usable series is there, or ``series_uid`` is not found / not usable.
    """
    series = scan_dicom_folder(folder)
    report = "; ".join(s.summary() for s in series)
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            raise InputError(folder, f"series {series_uid} not found; found: {report}")
        if match[0].rejected:
            raise InputError(folder, f"series {series_uid} cannot be used: {match[0].rejected}")
        picked = match[0]
    else:
        usable = [s for s in series if not s.rejected]
        if not usable:
            error = NothingToSegment if all(s.nothing_to_segment for s in series) else InputError
            unread = next((s.unread for s in series if s.unread), None)  # the folder's: every series has it
            raise error(folder, f"no axial CT series to segment; found: {report}"
                                + (f"; {_unread_note(unread)}" if unread else ""))
        picked = max(usable, key=lambda s: (s.is_axial, s.num_slices, "ORIGINAL" in s.image_type.upper(),
                                            -s.slice_thickness))
        others = [s for s in usable if s is not picked]
        if others:  # a study folder with several reconstructions: say which one was segmented, and how to pick
            name = lambda s: f"{s.uid or '<empty UID>'} ('{s.description}', {s.num_slices} slices)"  # noqa: E731
            picked.warnings.append(f"the folder holds {len(usable)} usable CT series; segmented {name(picked)} (the "
                                   "most slices, then ORIGINAL before DERIVED, then the thinnest); --series-uid picks "
                                   "another: "
                                   + ", ".join(name(s) for s in others[:5]) + (" ..." if len(others) > 5 else ""))
    if quiet:
        return picked
    logger.info("%s: %d series found (%s); picked %s", folder, len(series), report, picked.uid or "<empty UID>")
    for w in picked.warnings:
        warnings.warn(f"{folder}: series {picked.uid or '<empty UID>'}: {w}", stacklevel=2)
    return picked


def multiframe_info(path: str | os.PathLike) -> SeriesInfo | None:
    """The checked :class:`SeriesInfo` of a multi-frame (enhanced) CT file, which holds a whole series, or ``None``
    for a single-frame file (a lone slice), after the series' rules on what holds no CT to segment.

    Raises:
        InputError: when the multi-frame file is not an axial CT volume (the rules of :func:`select_ct_series`).
        NothingToSegment: when a lone slice is no axial CT slice (another modality, a localizer, an RGB screenshot,
            a coronal or sagittal reformat): the rules a series of such slices is refused by.
    """
    path = Path(path)
    info = _scan_cached(path.parent, [path])[0]  # the input check's scan, when it made one
    if not info.frame_positions:
        if info.nothing_to_segment:
            raise NothingToSegment(path, info.rejected)
        return None
    if info.rejected:
        error = NothingToSegment if info.nothing_to_segment else InputError
        raise error(path, f"multi-frame image cannot be used: {info.rejected}")
    info.kind = "dicom"
    return info


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
IMAGE_SUFFIXES = PICTURE_SUFFIXES + VOLUME_SUFFIXES + (".dcm",)
_NIFTI = (".nii", ".nii.gz")
_ITK_VOLUMES = (".mha", ".mhd", ".nrrd")


def compact_integers(data: np.ndarray) -> np.ndarray:
    """``data`` as a C-contiguous array, with integers wider than 16 bits that fit in 16 bits as ``int16`` (ITK reads
    many CT series as int32, in ``(z, y, x)`` memory order); other arrays unchanged. The copy is
    :func:`~fusionlungnet_monai.utils.geometry.planewise_copy`'s, faster than the one MONAI's ``LoadImage`` would
    make."""

    if data.dtype.kind not in "iu" or data.dtype.itemsize <= 2 or data.size == 0 or not _fits_int16(data):
        return data
    return planewise_copy(data, np.int16)


def _fits_int16(data) -> bool:
    """Whether a non-empty integer array or tensor holds only values that int16 can store."""
    return -(2**15) <= int(data.min()) <= int(data.max()) < 2**15


def _itk_available() -> bool:
    try:
        import itk  # noqa: F401
    except ImportError:
        return False
    return True


def preload_itk() -> None:
    """Load ITK's image readers now (ITK loads its modules on first use: about 2 s), so that a long-lived reader
    (``fusionlungnet predict``'s ``Predictor``) pays it when it is built rather than inside its first case.
    Nothing happens without ``itk``."""
    if _itk_available():
        import itk

        for name in ("ImageFileReader", "ImageSeriesReader", "GDCMImageIO", "GDCMSeriesFileNames"):
            getattr(itk, name)


class CTSeriesReader(ImageReader):
    """MONAI image reader for everything the project reads; given a folder, it loads the selected axial CT series
    (see :func:`select_ct_series`).

    - DICOM folders and files, MetaImage, NRRD: ``ITKReader`` (needs ``itk``);
    - NIfTI: :class:`~fusionlungnet_monai.data.readers.CTNiftiReader` (nibabel, no ``itk`` needed: ITK would read
      a truncated ``.nii.gz`` silently and NaN as 0);
    - PNG/JPG/BMP/TIFF: :func:`~fusionlungnet_monai.data.readers.picture_reader` (PIL, no ``itk`` needed),
      ``(x, y)`` order like the others.

    Use it through :class:`LoadCTImage` / :class:`LoadCTImaged`, which never fall back to another reader: what
    this reader refuses (a folder without a CT series, an MR series, mixed slice sizes) stops with one
    :class:`InputError` naming the path. The selected series' UID is in the image meta (``"0020|000e"``).

    Args:
        series_uid: pick this SeriesInstanceUID instead of the automatic choice.
        kwargs: passed to ``ITKReader``.
    """

    def __init__(self, series_uid: str | None = None, **kwargs) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.kwargs = kwargs

    def _reader(self, name: str) -> ImageReader:
        low = str(name).lower()
        if low.endswith(PICTURE_SUFFIXES):
            return picture_reader()
        if low.endswith(_NIFTI):
            return CTNiftiReader()
        if not _itk_available():
            raise InputError(name, "reading DICOM/MetaImage/NRRD needs the `itk` package (pip install itk)")
        return ITKReader(**self.kwargs)

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        names = ensure_tuple(filename)
        return all(os.path.isdir(n) or str(n).lower().endswith(IMAGE_SUFFIXES)
                   or (os.path.isfile(n) and "." not in os.path.basename(str(n)) and is_dicom_file(n)) for n in names)

    def read(self, data, **kwargs):
        names = [str(n) for n in ensure_tuple(data)]
        reader = self._reader(names[0])
        if isinstance(reader, ITKReader):
            images = []
            for name in names:
                if os.path.isdir(name):
                    info = select_ct_series(name, self.series_uid)
                    files = [str(f) for f in info.files]
                    if len(files) > SERIES_READ_CHUNK:  # the int16 volume, not ITK's int32 one next to it
                        image = _read_in_chunks(files, **kwargs)
                        meta = image.geometry.GetMetaDataDictionary()
                    else:
                        image = _quiet_itk_read(files if len(files) > 1 else files[0], **kwargs)
                        meta = image.GetMetaDataDictionary()  # a series read keeps no tags: name the series at least
                    for tag, value in (("0020|000e", info.uid), ("0008|0060", info.modality),
                                       ("0008|103e", info.description)):
                        if not meta.HasKey(tag):
                            meta[tag] = value
                    images.append(image)
                else:
                    if not name.lower().endswith(_ITK_VOLUMES) and is_dicom_file(name):
                        multiframe_info(name)  # a DICOM file: a lone slice or a series in one file, by the series' rules
                    image = reader.read(name, **kwargs)  # a vector image would reach the network as channels
                    check_grey_slice_size(name, components=image.GetNumberOfComponentsPerPixel())
                    images.append(image)
            img = images if len(images) > 1 else images[0]
        else:
            img = reader.read(names if len(names) > 1 else names[0], **kwargs)
        return reader, img, names

    def get_data(self, img):
        reader, obj, names = img
        data, meta = obj.get_data(reader) if isinstance(obj, _ChunkedSeries) else reader.get_data(obj)
        check_grey_slice_size(meta.get("filename_or_obj"), data.shape)
        if data.ndim == 3 and data.shape[2] == 1 and isinstance(reader, ITKReader) and len(names) == 1:
            _lone_slice_depth(names[0], meta)
        return compact_integers(data), meta


def _lone_slice_depth(name: str, meta: dict) -> None:
    """A lone DICOM slice's depth from its SliceThickness where it has no SpacingBetweenSlices: ITK takes the depth
    from SpacingBetweenSlices alone and assumes 1 mm without it (a 5 mm slice's lungs came out 5 times too small in
    mL). Sets ``meta``'s affines and spacing in place."""
    if not os.path.isfile(str(name)) or str(name).lower().endswith(_ITK_VOLUMES):
        return
    try:
        ds = read_dicom(name, stop_before_pixels=True)
        if ds.get("SpacingBetweenSlices") is not None:
            return
        depth = float(ds.get("SliceThickness", 0) or 0)
    except Exception:  # noqa: BLE001  the reader read it; a header it cannot parse keeps ITK's depth
        return
    if not np.isfinite(depth) or depth <= 0:
        return
    for key in ("affine", "original_affine"):
        if key in meta:
            a = np.array(meta[key], dtype=float)
            a[:3, 2] *= depth / max(float(np.linalg.norm(a[:3, 2])), 1e-12)
            meta[key] = a
    if "spacing" in meta:
        meta["spacing"] = np.asarray([*np.asarray(meta["spacing"], dtype=float)[:2], depth])


@contextlib.contextmanager
def _itk_warnings_off():
    """ITK's warnings off within the context: its "Non uniform sampling or missing slices" goes to stderr in the
    middle of a progress bar, and :func:`select_ct_series` already reports irregular spacing in the case's warnings
    (the display is ITK's global switch: restored afterwards)."""
    import itk

    shown = itk.Object.GetGlobalWarningDisplay()
    itk.Object.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        itk.Object.SetGlobalWarningDisplay(shown)


def _quiet_itk_read(files, **kwargs):
    """``itk.imread`` of a selected series (or file) with ITK's warnings off."""
    import itk

    with _itk_warnings_off():
        return itk.imread(files, **kwargs)


#: series of more slices than this are read this many files at a time (:func:`_read_in_chunks`)
SERIES_READ_CHUNK = 64


class _ChunkedSeries:
    """A DICOM series read a chunk of files at a time: ``geometry`` is ITK's whole-series reader output after
    ``UpdateOutputInformation`` (origin, spacing, direction and size, computed from every file's position exactly
    as for a whole read; no pixels), ``data`` the volume in ``(x, y, z)`` order."""

    def __init__(self, geometry, data: np.ndarray) -> None:
        self.geometry, self.data = geometry, data

    def get_data(self, reader: ITKReader) -> tuple[np.ndarray, dict]:
        """``(data, meta)`` as ``reader.get_data`` gives them for the whole series read at once (through the
        ``ITKReader`` helpers that ``get_data`` itself calls; MONAI is pinned below 1.7)."""
        from monai.utils import MetaKeys, SpaceKeys

        header = dict(reader._get_meta_dict(self.geometry))
        header[MetaKeys.ORIGINAL_AFFINE] = reader._get_affine(self.geometry, reader.affine_lps_to_ras)
        header[MetaKeys.SPACE] = SpaceKeys.RAS if reader.affine_lps_to_ras else SpaceKeys.LPS
        header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
        header[MetaKeys.SPATIAL_SHAPE] = reader._get_spatial_shape(self.geometry)
        header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")  # one grey volume: no channel axis
        return self.data, header


def _compact_dtype(part: np.ndarray) -> np.dtype:
    """The type :func:`compact_integers` keeps ``part`` in: ``int16`` for wider integers that fit, else its own."""
    return np.dtype(np.int16) if part.dtype.kind in "iu" and part.dtype.itemsize > 2 and _fits_int16(part) \
        else part.dtype


def _read_in_chunks(files: list, chunk: int | None = None, **kwargs) -> _ChunkedSeries:
    """A series read ``chunk`` (:data:`SERIES_READ_CHUNK`) files at a time into one ``(x, y, z)`` volume of the type
    :func:`compact_integers` gives the whole read: for most 16-bit CT, GDCM widens the pixels to int32 for the rescale,
    so the whole read held an int32 volume beside its int16 copy (3x the int16 volume); here one int16 volume and one
    chunk. The same voxels, geometry and meta as the whole read (tested)."""
    import itk

    chunk = chunk or SERIES_READ_CHUNK
    with _itk_warnings_off():
        whole = itk.ImageSeriesReader.New(FileNames=[str(f) for f in files])  # the pixel type itk.imread would pick
        whole.UpdateOutputInformation()
    data = None
    for z0 in range(0, len(files), chunk):
        part = itk.array_view_from_image(_quiet_itk_read(list(files[z0:z0 + chunk]), **kwargs))
        part = part.reshape((-1,) + part.shape[-2:])  # (z, y, x)
        dtype = _compact_dtype(part) if data is None else np.result_type(data.dtype, _compact_dtype(part))
        dtype = np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize > 4 and part.dtype.itemsize <= 4 else dtype
        if data is None:
            data = np.empty(part.shape[:0:-1] + (len(files),), dtype)
        elif dtype != data.dtype:  # a chunk beyond int16, or of floats: the volume widens, as the whole read's type
            data = data.astype(dtype)
        data[..., z0:z0 + len(part)] = part.transpose(2, 1, 0)
    return _ChunkedSeries(whole.GetOutput(), data)


def _compact(img: torch.Tensor) -> torch.Tensor:
    """``img`` as int16 when it holds integers that fit in 16 bits, else as float32 (see :class:`LoadCTImage`)."""
    if img.dtype in (torch.int16, torch.float32):
        return img
    if not img.is_floating_point() and img.numel() and _fits_int16(img):
        return img.to(torch.int16)
    return img.to(torch.float32)


class _QuietReaderRegistration:
    """Context for building a MONAI ``LoadImage``: it constructs every reader MONAI knows as a fallback, and its GPU
    DICOM reader announces, as a log line and a warning each time, that the optional nvImageCodec is absent. The
    project's loaders read with :class:`CTSeriesReader` only, so that reader is never used: its notice is dropped."""

    def __enter__(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        self._quiet = quiet_logger("monai.data.nvimgcodec_pydicom_plugin")
        self._quiet.__enter__()

    def __exit__(self, *exc) -> None:
        self._quiet.__exit__(*exc)
        self._warnings.__exit__(*exc)


class LoadCTImage(LoadImage):
    """MONAI ``LoadImage`` that reads with :class:`CTSeriesReader` only, never falling back to MONAI's other readers.

    Args:
        series_uid: see :class:`CTSeriesReader`.
        kwargs: passed to ``LoadImage`` (``image_only``, ``dtype``, ``ensure_channel_first`` ...). ``dtype="compact"``
            gives integer images whose values fit in 16 bits as ``int16`` and every other image as ``float32``:
            half the memory of MONAI's default ``float32`` for a CT series.

    Raises:
        InputError: for what the reader or the series selection refuses (other errors are re-raised as
            ``InputError`` naming the file).
    """

    def __init__(self, series_uid: str | None = None, **kwargs) -> None:
        kwargs.pop("reader", None)
        self.compact = kwargs.get("dtype") == "compact"
        if self.compact:
            kwargs["dtype"] = None
        self.ct_reader = CTSeriesReader(series_uid=series_uid)
        with _QuietReaderRegistration():
            super().__init__(reader=self.ct_reader, **kwargs)

    def __call__(self, filename, reader=None):
        name = str(filename if isinstance(filename, (str, os.PathLike)) else ensure_tuple(filename)[0])
        for n in ensure_tuple(filename):
            if isinstance(n, (str, os.PathLike)) and not os.path.exists(n):
                raise InputError(n, "no such file or folder")
        printed: list[str] = []
        try:
            with metaimage_messages(name, printed):
                img = super().__call__(filename, reader or self.ct_reader)
            return _compact(img) if self.compact and isinstance(img, torch.Tensor) else img
        except InputError as e:
            if e.path is None:  # a reader's check that did not know the file's name
                raise InputError(name, e.problem) from None
            raise
        except Exception as e:
            files = select_ct_series(name, self.ct_reader.series_uid).files if os.path.isdir(name) else ()
            raise read_failure(name, e, files, printed) from e


class LoadCTImaged(LoadImaged):
    """Dictionary version of :class:`LoadCTImage` (MONAI ``LoadImaged`` with the project's reader only)."""

    def __init__(self, keys, series_uid: str | None = None, image_only: bool = True, allow_missing_keys: bool = False,
                 **kwargs) -> None:
        kwargs.pop("reader", None)
        with _QuietReaderRegistration():
            super().__init__(keys, image_only=image_only, allow_missing_keys=allow_missing_keys, **kwargs)
        loader_kwargs = {k: v for k, v in kwargs.items() if k in ("dtype", "ensure_channel_first", "simple_keys",
                                                                     "prune_meta_pattern", "prune_meta_sep",
                                                                     "expanduser")}
        self._loader = LoadCTImage(series_uid=series_uid, image_only=image_only, **loader_kwargs)

    def __call__(self, data, reader=None):
        """Load every key; an item whose keys already hold loaded images (MetaTensors, e.g. from
        :class:`LoadCTImage`) passes unchanged, so a caller that read the CT once can run the bundle on it."""
        from monai.data import MetaTensor

        keys = list(self.key_iterator(dict(data)))
        if keys and all(isinstance(data[k], MetaTensor) for k in keys):
            return dict(data)
        return super().__call__(data, reader)


def load_ct_lps(path: str | os.PathLike, series_uid: str | None = None) -> tuple[np.ndarray, list[float]]:
    """A CT volume, slice or mask as an ``(x, y, z)`` array in the orientation the model is trained in (LPS voxel
    order: x to the patient's left, y to the back), with its voxel spacing in mm.

    Raises:
        InputError: for what :class:`LoadCTImage` refuses.
    """
    from monai.transforms import EnsureChannelFirst, Orientation

    img = LoadCTImage(series_uid=series_uid, image_only=True)(str(path))
    img = Orientation(axcodes="LPS", labels=None)(EnsureChannelFirst()(img))
    return np.asarray(img[0]), [float(v) for v in img.pixdim[:3]]
