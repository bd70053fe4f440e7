"""DICOM SEG writer (highdicom) for lung masks on a source CT series."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from fusionlungnet_monai.data.readers import read_dicom
from fusionlungnet_monai.data.series import functional_value
from fusionlungnet_monai.version import __version__

__all__ = ["DicomSegUnavailable", "write_dicom_seg"]

_SEGMENTS = {
    1: ("Lung", "39607008", "Lung"),
}
_SIDES = {1: ("Right lung", "3341006", "Right lung"), 2: ("Left lung", "44029006", "Left lung")}

#: what highdicom copies from every source image into a SEG (a missing one raises from deep inside it)
REQUIRED_SOURCE_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                              "FrameOfReferenceUID")


class DicomSegUnavailable(ValueError):
    """The source series lacks what a DICOM SEG must reference or copy: the SEG is skipped, the other outputs stand."""


def _missing_attributes(src: Sequence, files: Sequence) -> str | None:
    """Which attributes a SEG needs are absent from the source images (one line naming a file), or ``None``."""
    lacking = []
    for ds, f in zip(src, files):
        missing = [k for k in REQUIRED_SOURCE_ATTRIBUTES  # a UID must also have a value (PatientID may be empty)
                   if k not in ds or (k.endswith("UID") and not str(ds.get(k) or "").strip())]
        if functional_value(ds, "PixelSpacing", "PixelMeasuresSequence") is None:
            missing.append("PixelSpacing")
        if missing:
            lacking.append((os.path.basename(str(f)), missing))
    if not lacking:
        return None
    name, missing = lacking[0]
    return f"{len(lacking)} of {len(src)} source images have no (or an empty) {', '.join(missing)} (e.g. {name})"


def write_dicom_seg(labels: np.ndarray, source_files: Sequence[str | os.PathLike], path: str | os.PathLike,
                    split: bool = False) -> str:
    """Write a DICOM Segmentation object that references the source CT instances.

    Args:
        labels: ``(x, y, z)`` mask (binary) or ``1`` right / ``2`` left label map when ``split``; slice ``k`` belongs
            to ``source_files[k]`` (the series sorted by position, as :func:`select_ct_series` returns it), or to
            frame ``k`` of a single multi-frame source file.
        source_files: the CT series' files, in slice order (or one multi-frame file).
        path: output ``.dcm`` file (must not exist).
        split: write two segments (right, left lung) instead of one (lung).

    Returns:
        the written path.

    Raises:
        DicomSegUnavailable: when the source images lack what a SEG must reference or copy (no
            FrameOfReferenceUID, PixelSpacing, patient or study identifiers ...).
        FileExistsError: when ``path`` exists.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if os.path.exists(path):
        raise FileExistsError(f"{path}: already exists; refusing to overwrite")
    src = [read_dicom(f) for f in source_files]
    missing = _missing_attributes(src, source_files)
    if missing:
        raise DicomSegUnavailable(f"the source series lacks what a SEG must reference: {missing}")
    lab = np.asarray(labels)
    # a multi-frame (enhanced) CT is one source file; ITK stacks its frames in the file's order, as the SEG does
    slices = int(src[0].get("NumberOfFrames", 1) or 1) if len(src) == 1 else len(src)
    if lab.ndim != 3 or lab.shape[2] != slices:
        raise ValueError(f"labels {lab.shape} must be (x, y, {slices}) to match the source series.")
    frames = np.ascontiguousarray(np.moveaxis(lab, 2, 0).transpose(0, 2, 1)).astype(np.uint8)  # (z, rows=y, cols=x)
    if not split:
        frames = (frames > 0).astype(np.uint8)
    algo = hd.AlgorithmIdentificationSequence(name="FusionLungNet", version=__version__,
                                              family=codes.cid7162.ArtificialIntelligence)
    table = _SIDES if split else _SEGMENTS
    descriptions = [
        hd.seg.SegmentDescription(segment_number=n, segment_label=label,
                                  segmented_property_category=codes.SCT.AnatomicalStructure,
                                  segmented_property_type=Code(code, "SCT", meaning),
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                  algorithm_identification=algo)
        for n, (label, code, meaning) in table.items()
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=src, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="fusionlungnet-monai",
            manufacturer_model_name="FusionLungNet", software_versions=__version__, device_serial_number="0",
            series_description="Lung segmentation (FusionLungNet)", omit_empty_frames=False,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # what else highdicom finds missing or invalid
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise DicomSegUnavailable(f"highdicom refused the source series ({type(e).__name__}: {reason})") from e
    seg.save_as(str(path))
    return str(path)
