"""The file readers behind :class:`~fusionlungnet_monai.data.series.CTSeriesReader` that refuse, in one line, what
their MONAI base would read wrongly or raise on from deep inside.

- NIfTI goes through nibabel whether or not ``itk`` is installed: ITK reads a truncated ``.nii.gz`` without a
  word (the missing half comes back as zeros), reads NaN as 0 HU, and cannot open ``int8`` volumes or sheared
  affines. nibabel raises on a truncated stream, keeps NaN (the intensity step reads it as air) and reads both.
- Pictures in modes the network's intensity step has no meaning for (grey + alpha, CMYK, YCbCr, LAB, HSV) are
  converted to grey or RGB by PIL; grey, RGB and 1-bit pictures are read as stored. A palette picture is read by its
  colours (:func:`palette_as_stored`): grey when every colour it uses is grey (a CT picture saved with a palette),
  RGB when it uses more than :data:`MAX_LABEL_COLOURS` colours, and by its indices only when it uses a few colours
  that are not all grey (a label mask). 16-bit and 32-bit pictures, and pictures with transparent pixels (an alpha
  channel or a palette's transparency), are refused (:func:`picture_problem`), as the input checks refuse them.
- DICOM datasets stored without the 128-byte preamble, ``DICM`` marker and file meta group (older exports, which
  GDCM/ITK read) are read by :func:`read_dicom` too: pydicom refuses them unless forced.
- ITK's MetaImage reader writes why it failed to the process's stderr, not into its exception:
  :func:`metaimage_messages` collects those lines, so that the one-line error carries them instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
import zlib

import numpy as np
from monai.data import NibabelReader, PILReader
from monai.utils import ensure_tuple
from pydicom.errors import InvalidDicomError

from fusionlungnet_monai.data.errors import InputError

__all__ = ["CTNiftiReader", "check_one_volume", "picture_problem", "picture_reader", "palette_as_stored", "MAX_LABEL_COLOURS",
           "read_dicom",
           "MetaWithoutPreamble", "archive_kind", "archive_problem", "pydicom_decodes", "quiet_logger", "read_failure",
           "metaimage_messages", "SPACING_UNKNOWN"]

#: image meta key, ``True`` when the file gives no voxel size (NIfTI ``pixdim`` 0) and 1 mm was assumed
SPACING_UNKNOWN = "fln_spacing_unknown"

_CONVERT = {"LA": "L", "RGBA": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """Within the context, logger ``name`` passes only records of ``level`` and above (a library's notices that
    the caller reports in its own words, or that are not news)."""
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(level)
    try:
        yield log
    finally:
        log.setLevel(old)


class MetaWithoutPreamble(InvalidDicomError):
    """A DICOM file meta group stored without the 128-byte preamble and ``DICM`` marker before it: pydicom reads
    this layout, GDCM and ITK do not."""

    problem = ("DICOM file meta group without the 128-byte preamble and 'DICM' marker before it, a layout ITK cannot "
               "read: re-save with them (pydicom: dcmread(path, force=True).save_as(new, enforce_file_format=True))")

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(f"{path}: {self.problem}")


def read_dicom(path: str | os.PathLike, **kwargs):
    """``pydicom.dcmread``, also for a dataset stored alone, without the 128-byte preamble, ``DICM`` marker and file
    meta group (older exports; GDCM and ITK read these). Its transfer syntax is then the little-endian one pydicom
    found while reading, kept in ``file_meta`` so that its pixels decode.

    Args:
        path: the file.
        kwargs: for ``pydicom.dcmread`` (``stop_before_pixels``, ``defer_size`` ...).

    Raises:
        InvalidDicomError: when the file is not DICOM; :class:`MetaWithoutPreamble` for a file meta group stored
            without the preamble before it, which ITK cannot read. ``OSError`` and pydicom's errors for files it
            cannot read.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        return pydicom.dcmread(str(path), **kwargs)
    except InvalidDicomError:
        with open(path, "rb") as f:
            head = f.read(4)
        group = int.from_bytes(head[:2], "little") if len(head) == 4 else None
        if group not in (0x0002, 0x0008) or int.from_bytes(head[2:4], "little") >= 0x0100:
            raise  # a dataset opens with a little-endian tag of group 0x0002 (file meta) or 0x0008 (identification)
    with quiet_logger("pydicom"), warnings.catch_warnings():  # what a forced read of other bytes would say
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path), force=True, **kwargs)
        if not _sop_class_uid(ds):  # bytes that merely began like a tag
            raise InvalidDicomError(f"{path}: no DICOM preamble, and no SOP Class UID in what follows")
    if group == 0x0002:
        raise MetaWithoutPreamble(path)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


def _sop_class_uid(ds) -> bool:
    """Whether a dataset read without its preamble names a DICOM SOP Class (``1.2.840.10008.5.1.4...``), as every
    image does: random bytes that began like a tag do not."""
    try:
        return re.fullmatch(r"1\.2\.840\.10008\.5\.1\.4(\.[0-9]+)+", str(ds.get("SOPClassUID", ""))) is not None
    except Exception:  # an element that does not parse
        return False


def pydicom_decodes(ds) -> bool:
    """Whether pydicom has a decoder for the dataset's transfer syntax here. ITK decodes more: JPEG Lossless, the most
    common compressed CT, needs a GPL plugin in pydicom, so files pydicom cannot decode are left to ITK's reader."""
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(ds.file_meta.TransferSyntaxUID).is_available
    except Exception:  # pydicom 2, or a syntax pydicom does not know: pixel_array says what it can
        return True


def _first_line(error: Exception, limit: int = 120) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:limit]}"


#: a palette picture that uses at most this many colours, not all grey, is a label mask (read by its indices)
MAX_LABEL_COLOURS = 32


def palette_as_stored(image):
    """A palette (``P``) PIL image in the mode that reads it as it looks: ``L`` when every colour it uses is grey,
    ``RGB`` when it uses more than :data:`MAX_LABEL_COLOURS` colours, else the image itself (a label mask: its
    indices are its labels). Other modes pass unchanged."""
    if image.mode != "P":
        return image
    used = [i for _, i in (image.getcolors(256) or [])]
    palette = image.getpalette() or []
    rgb = [tuple(palette[3 * i : 3 * i + 3]) for i in used]
    if all(len(c) == 3 and c[0] == c[1] == c[2] for c in rgb):
        return image.convert("L")
    return image.convert("RGB") if len(used) > MAX_LABEL_COLOURS else image


def picture_problem(image) -> str | None:
    """Why a PIL ``image`` cannot be read as a CT slice or mask, or ``None``: 16-bit or 32-bit values (which the
    picture's 0-255 window would clip: HU belong in DICOM or NIfTI), or transparency (the grey or colour under
    transparent pixels is arbitrary)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return (f"{'16-bit' if mode.startswith('I;16') else mode + '-mode'} image not supported: export 8-bit PNG/JPG, "
                "or use DICOM/NIfTI for HU data")
    if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
        return f"{mode} image with transparency not supported: flatten it to grey or RGB"
    if "transparency" in image.info and image.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        return f"{mode} image with transparency not supported: flatten it to grey or RGB"
    return None


def _grey_or_rgb(image):
    """A PIL image in a mode the intensity step reads: grey + alpha -> grey, CMYK and other colour spaces -> RGB
    (an alpha channel only when fully opaque), a palette by its colours or, for a label mask, its indices
    (:func:`palette_as_stored`); other modes unchanged.

    Raises:
        InputError: for what :func:`picture_problem` refuses, without the file's name (the loader adds it).
    """
    problem = picture_problem(image)
    if problem:
        raise InputError(None, problem)
    image = palette_as_stored(image)
    mode = _CONVERT.get(image.mode)
    return image.convert(mode) if mode else image


def picture_reader() -> PILReader:
    """MONAI ``PILReader`` for PNG/JPG/BMP/TIFF, ``(x, y[, channel])`` order, converting exotic modes (see above)."""
    return PILReader(converter=_grey_or_rgb, reverse_indexing=True)


class CTNiftiReader(NibabelReader):
    """MONAI ``NibabelReader`` for one CT volume: its stored type (scaled data as float32), singleton non-spatial
    dimensions dropped, and a one-line :class:`InputError` for an unreadable, truncated, RGB or complex file.

    A file without voxel sizes (``pixdim`` 0, which nibabel reads as 1 mm) is flagged in the image meta
    (:data:`SPACING_UNKNOWN`) so that reports can say that volumes in mL are not to be trusted.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("squeeze_non_spatial_dims", True)
        super().__init__(**kwargs)

    def read(self, data, **kwargs):
        import nibabel as nib

        # quiet: nibabel logs "pixdim[1,2,3] should be non-zero" (a header fix) on every load, and the SPACING_UNKNOWN
        # meta flag already reports it once, in the case's warnings
        try:
            with quiet_logger("nibabel.global"):
                imgs = super().read(data, **kwargs)
        except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as e:
            raise InputError(data, _misnamed(data) or f"not a readable NIfTI file ({_first_line(e)})") from None
        for img in ensure_tuple(imgs):
            _check_affine(img)
        return imgs

    def _get_array_data(self, img, filename=None):
        name = filename or img.get_filename()
        check_one_volume(name, img.shape)
        dtype = img.get_data_dtype()
        if dtype.names is not None:
            raise InputError(name, f"NIfTI of {'RGB' if len(dtype.names) in (3, 4) else 'structured'} voxels: one "
                                   "grey CT volume in HU expected")
        if dtype.kind == "c":
            raise InputError(name, "NIfTI of complex voxels: one real-valued CT volume in HU expected")
        slope, inter = img.dataobj.slope, img.dataobj.inter
        scaled = not ((np.isnan(slope) or slope in (0, 1)) and (np.isnan(inter) or inter == 0))
        try:  # a scaled integer volume would come back float64 (twice float32)
            return np.asarray(img.dataobj, dtype=np.float32) if scaled else np.asanyarray(img.dataobj)
        except (EOFError, zlib.error, OSError, ValueError) as e:
            raise InputError(name, f"truncated or corrupt NIfTI data ({_first_line(e)})") from None

    def _get_meta_dict(self, img) -> dict:
        meta = super()._get_meta_dict(img)
        meta[SPACING_UNKNOWN] = bool(np.any(_stored_pixdim(img.get_filename())[1:4] == 0))
        return meta


def _check_affine(img) -> None:
    """Refuse a NIfTI whose voxel-to-world matrix (the sform or qform nibabel picks) is not finite or is singular:
    it gives no orientation and no voxel size, and MONAI's orientation step fails on it from deep inside.

    Raises:
        InputError: naming the file.
    """
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(img.get_filename(), "its voxel-to-world matrix (sform/qform) is singular or not finite: it "
                                             "gives no orientation or voxel size; fix the header")


def check_one_volume(name, size) -> None:
    """Refuse an image of ``size`` with more than three axes of which one beyond the third is longer than 1 (a time
    series, several echoes or phases): a 3D CT volume is expected.

    Raises:
        InputError: naming ``name``.
    """
    if len(size) > 3 and any(int(n) > 1 for n in size[3:]):
        raise InputError(name, f"{len(size)}D image of size {tuple(int(n) for n in size)}: one 3D CT volume expected "
                               "(extract one volume of the series first)")


def _misnamed(name) -> str | None:
    """Why a NIfTI file name does not match its content (gzip or not), or ``None``."""
    try:
        with open(str(name), "rb") as f:
            head = f.read(4)
    except (OSError, TypeError):
        return None
    gz = head[:2] == b"\x1f\x8b"
    nifti = len(head) == 4 and {int.from_bytes(head, "little"), int.from_bytes(head, "big")} & {348, 540}
    if str(name).lower().endswith(".gz") and nifti:
        return "named .nii.gz but not gzip-compressed: rename it to .nii"
    if str(name).lower().endswith(".nii") and gz:
        return "gzip-compressed but named .nii: rename it to .nii.gz"
    return None


def _stored_pixdim(filename) -> np.ndarray:
    """``pixdim`` as the NIfTI-1/2 file stores it (nibabel's loaded header has 0 already replaced by 1)."""
    import gzip

    with (gzip.open if str(filename).lower().endswith(".gz") else open)(filename, "rb") as f:
        head = f.read(540)
    for endian in "<>":
        size = int(np.frombuffer(head[:4], dtype=f"{endian}i4")[0])
        if size == 348:  # NIfTI-1: 8 float32 at byte 76
            return np.frombuffer(head[76:108], dtype=f"{endian}f4").astype(float)
        if size == 540:  # NIfTI-2: 8 float64 at byte 104
            return np.frombuffer(head[104:168], dtype=f"{endian}f8").astype(float)
    return np.ones(8)


def _itk_reason(message: str) -> str | None:
    """The informative line of an ITK exception's text (its first line is only a C++ source location), or
    ``None`` when ``message`` is not ITK's."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines or not re.search(r"\.(cxx|hxx|h):\d+:$", lines[0]):
        return None
    for line in lines:
        if line.startswith("Could not create IO object for reading file"):
            return "no image reader accepts " + line.rsplit(" ", 1)[-1]
    nrrd = [line[6:].strip() for line in lines if line.startswith("[nrrd]")]
    if nrrd:
        return nrrd[-1]
    for line in lines:
        if line.startswith("ITK ERROR:"):
            return re.sub(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ", "", line)
    return lines[1] if len(lines) > 1 else lines[0]


_STDERR_LOCK = threading.Lock()  # file descriptor 2 is the process's: one redirection at a time


@contextlib.contextmanager
def metaimage_messages(name: str, lines: list):
    """While the block reads ``name``, collect what C++ code writes to the process's stderr (file descriptor 2) into
    ``lines``, when ``name`` is a MetaImage (``.mha``/``.mhd``): ITK's MetaImage reader prints there why it failed
    (``MetaImage: M_ReadElementsData: data not read completely``) and raises a bare "File cannot be read". When the
    block succeeds, what was collected is written to stderr as it would have been; when it raises, the lines stay
    in ``lines`` for :func:`read_failure`. Other files are read with stderr untouched."""
    if not str(name).lower().endswith((".mha", ".mhd")):
        yield
        return
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            lines.extend(_collected(tmp, saved))
            raise
        else:
            text = _collected(tmp, saved)
            if text:
                os.write(2, ("\n".join(text) + "\n").encode())


def _collected(tmp, saved: int) -> list[str]:
    """Restore stderr from ``saved`` and return the non-empty lines written to ``tmp`` meanwhile."""
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    tmp.seek(0)
    return [line.strip() for line in tmp.read().decode(errors="replace").splitlines() if line.strip()]


def _metaimage_reason(lines: list) -> str | None:
    """What the MetaImage reader printed, in one line (``MetaImage: data not read completely, 409434 of 819200
    bytes``), or ``None`` when it printed nothing of its own."""
    said = [line for line in lines if line.startswith("MetaImage:") or line.startswith("ideal")]
    if not said:
        return None
    sizes = re.search(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)", " ".join(said))
    first = re.sub(r"^MetaImage:\s*(M_\w+:\s*|Read:\s*)?", "", said[0])
    return f"MetaImage: {first}" + (f", {sizes.group(2)} of {sizes.group(1)} bytes" if sizes else "")


def archive_kind(path: str | os.PathLike) -> str | None:
    """``"zip"`` or ``"tar"`` when ``path`` is such an archive (how PACS and download portals hand out studies),
    else ``None``."""
    import tarfile
    import zipfile

    try:
        return "zip" if zipfile.is_zipfile(path) else "tar" if tarfile.is_tarfile(path) else None
    except OSError:
        return None


def archive_problem(path: str | os.PathLike) -> str | None:
    """What to do with ``path`` when it is an archive given as an image (see :func:`archive_kind`), else ``None``."""
    kind = archive_kind(path)
    return kind and f"a {kind} archive: unpack it, then give the folder (a DICOM series, or a folder of cases)"


def read_failure(name: str, error: Exception, files=(), messages=()) -> InputError:
    """One :class:`InputError` for a file or series that a reader failed on.

    Args:
        name: the file or folder read.
        error: what the reader raised.
        files: a DICOM series' files; the first whose pixels cannot be decoded is named (ITK only says that it
            failed somewhere in the series).
        messages: what the reader printed to stderr meanwhile (:func:`metaimage_messages`).
    """
    reason = _metaimage_reason(list(messages)) or _itk_reason(str(error))
    if reason is None and os.path.isfile(name) and (archived := archive_problem(name)):
        return InputError(name, archived)
    if reason is None:
        return InputError(name, f"cannot be read as an image ({_first_line(error, 200)})")
    for f in files:  # the slice that fails, decoded by pydicom, or alone by ITK where pydicom has no decoder
        try:
            ds = read_dicom(f)
            if pydicom_decodes(ds):
                ds.pixel_array
            else:
                import itk

                itk.imread(str(f))
        except Exception as e:
            return InputError(f, f"slice of the series {name} is truncated or corrupt, or its pixel data cannot be "
                                 f"decoded ({type(e).__name__}); remove it or pick another series")
    source = "" if reason.startswith("MetaImage:") else "ITK: "
    return InputError(name, f"truncated or corrupt image file, or its data file is missing ({source}{reason[:200]})")
