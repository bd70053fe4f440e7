"""Lung masks people can use: run the bundle's own inference workflow on DICOM series, DICOM files, NIfTI or
pictures, then add left/right volumes, a QC picture, an optional DICOM SEG and a report (writers in
:mod:`fusionlungnet_monai.outputs`).

The network, preprocessing, inferer and post-processing are the bundle's (``configs/inference.json``, plus
``configs/inference_2d.json`` for pictures) run through MONAI's ``ConfigWorkflow``; nothing here re-implements them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fusionlungnet_monai import outputs
from fusionlungnet_monai.config import as_bool, check_weights
from fusionlungnet_monai.data.checks import IMAGE_SUFFIXES, check_input, check_output_dir, file_stem
from fusionlungnet_monai.data.errors import InputError, NothingToSegment
from fusionlungnet_monai.data.readers import SPACING_UNKNOWN, archive_kind, quiet_logger, read_dicom
from fusionlungnet_monai.data.series import (
    LoadCTImage,
    SeriesInfo,
    is_dicom_file,
    multiframe_info,
    preload_itk,
    select_ct_series,
)
from fusionlungnet_monai.networks.fusionlungnet import ENCODER_STRIDE
from fusionlungnet_monai.outputs import PLAUSIBLE_LUNG_ML, SECOND_OPINION_DICE
from fusionlungnet_monai.outputs.lock import PARTIAL_PREFIX
from fusionlungnet_monai.transforms import CTIntensityNormalize, PictureToHU
from fusionlungnet_monai.transforms.pre.picture import POLARITIES
from fusionlungnet_monai.utils.geometry import bounding_box, head_foot_axis
from fusionlungnet_monai.utils.hu import PICTURE_META
from fusionlungnet_monai.utils.masks import binary_view
from fusionlungnet_monai.version import __version__
from fusionlungnet_monai.volumes import split_left_right
from fusionlungnet_monai.workflow import find_bundle, infer_tensors, load_inference_workflow

__all__ = ["Predictor", "CaseResult", "case_name", "list_cases", "check_device", "check_weights", "fast_size",
           "PLAUSIBLE_LUNG_ML", "RESULT_FILES", "SECOND_OPINION_DICE"]

logger = logging.getLogger(__name__)

#: the fast profile runs the network at this fraction of the bundle's ``spatial_size`` (a multiple of 32)
FAST_SCALE = 0.8
#: the bundle's post-processing steps that need the whole volume: they run once on the stitched mask
VOLUME_STEPS = ("remove_airways", "keep_lungs", "fill_holes")
#: every file a case may write (an earlier run's files are kept unless --overwrite)
RESULT_FILES = ("lungmask.nii.gz", "lungmask.png", "qc.png", "report.json", "seg.dcm")


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` with such a GPU present.

    Raises:
        InputError: for anything else.
    """
    import re

    import torch

    if device == "cpu":
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if not m:
        raise InputError(None, f"--device {device!r}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise InputError(None, f"--device {device}: no CUDA device is available")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise InputError(None, f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")


def fast_size(bundle_dir: str | os.PathLike) -> int:
    """The fast profile's network input size: ``FAST_SCALE`` of the bundle's ``spatial_size`` (its larger side),
    rounded to a multiple of 32 (the network downsamples by 32), at least 32."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle_dir) / "configs" / "inference.json"))
    size = max(int(s) for s in parser["spatial_size"])
    return max(ENCODER_STRIDE, int(round(FAST_SCALE * size / ENCODER_STRIDE)) * ENCODER_STRIDE)


def release_freed_memory() -> None:
    """Hand memory that Python and torch have freed back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Reading a series leaves the reader's temporary buffers on the heap; without this the process keeps their pages
    for the rest of the case, and peak memory grows by them."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl ...)
            pass


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM held back while the block runs and raised again, to their own handlers, when it ends (in
    the main thread; elsewhere, where Python cannot change handlers, a no-op). A thread's signal mask would not do:
    the kernel hands a process's signal to any thread that does not block it (torch's, ITK's)."""
    caught: list = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for s in dict.fromkeys(caught):
                signal.raise_signal(s)


def _binary_pred(pred):
    """The workflow's ``(1, ...)`` prediction as a ``uint8`` 0/1 CPU tensor without the channel axis."""
    import torch

    return (pred.detach()[0] > 0).to(torch.uint8).cpu().as_subclass(torch.Tensor)


def _is_dicom_entry(p: Path) -> bool:
    """A ``.dcm`` file, or a file of another name that holds DICOM (``IM000001``, ``CT.1.3.12.2...16573``), but not
    a file named as another image kind."""
    return p.is_file() and (p.suffix.lower() == ".dcm" or (not p.name.lower().endswith(IMAGE_SUFFIXES)
                                                           and is_dicom_file(p)))


def _is_multiframe(p: Path) -> bool:
    """Whether a DICOM file holds several frames (an enhanced CT: a series in one file)."""
    try:
        return int(read_dicom(p, stop_before_pixels=True).get("NumberOfFrames", 1) or 1) > 1
    except Exception:
        return False


def _folder_links(root: Path, entries: list[Path]) -> list[tuple[Path, str]]:
    """The links to folders among ``entries`` of ``root`` that are not followed, with why: a link out of the input
    (``up -> ..``, an absolute path elsewhere), back to the input or above it (``loop -> .``), or to a folder that
    is read already (another entry, or inside one)."""
    top = root.resolve()
    real = {p.resolve() for p in entries if p.is_dir() and not p.is_symlink()}
    out, seen = [], set()
    for p in entries:
        if not (p.is_symlink() and p.is_dir()):
            continue
        target = p.resolve()
        if target == top or target in top.parents:
            why = "back to the input folder" if target == top else "to a folder above the input"
        elif not target.is_relative_to(top):
            why = f"out of the input folder (to {target})"
        elif any(target.is_relative_to(r) for r in real | seen):
            why = "to a folder that is read already"
        else:
            seen.add(target)
            continue
        out.append((p, f"a link {why}: not followed"))
    return out


def list_cases(path: str | os.PathLike, skipped: list | None = None) -> list[Path]:
    """The cases under ``path``: the path itself for a file or a DICOM series folder (DICOM files and no
    sub-folders); otherwise every sub-folder and image file of ``path``.

    Every other entry is added to ``skipped`` as ``(path, reason)``: hidden files, files that are not images,
    loose single-frame DICOM files next to case folders (which would otherwise turn the whole folder into one
    series), and links to folders out of the input, back to it or to a folder read already (:func:`_folder_links`);
    a multi-frame (enhanced) CT file there is a case of its own.

    Raises:
        InputError: when ``path`` does not exist.
    """
    path = Path(path)
    skipped = [] if skipped is None else skipped
    already = len(skipped)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        return [path]
    entries = sorted(path.iterdir())
    links = _folder_links(path, entries)
    for p, why in links:
        skipped.append((p, why))
        entries.remove(p)
    dicoms = [p for p in entries if _is_dicom_entry(p)]
    folders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    visible = [p for p in entries if not p.name.startswith(".")]
    if (dicoms and not folders) or (len(visible) == 1 and folders):
        return [path]  # a series folder, or a patient/study/series chain of single folders
    cases = []
    for p in entries:
        if p.name.startswith("."):
            skipped.append((p, "hidden"))
        elif p.is_dir():
            cases.append(p)
        elif p in dicoms and _is_multiframe(p):
            cases.append(p)  # a multi-frame (enhanced) CT holds a whole series
        elif p in dicoms and p.name.upper() == "DICOMDIR":
            skipped.append((p, "the index of a DICOM disc or export, not an image; the series in the folders "
                               "beside it are read"))
        elif p in dicoms:
            skipped.append((p, "loose DICOM file next to case folders: put a series in a folder of its own"))
        elif p.name.lower().endswith(IMAGE_SUFFIXES):
            cases.append(p)
        elif kind := archive_kind(p):
            skipped.append((p, f"a {kind} archive: unpack it to segment what it holds"))
        else:
            skipped.append((p, "not an image file or case folder"))
    if not cases and not dicoms:
        del skipped[already + len(links):]  # the folder is the one case: its files were not skipped
        return [path]  # let the series selection give its own error (empty folder, nested study layouts ...)
    return cases


def case_name(path: Path) -> str:
    """Output folder name of a case: the file name without its image suffix, or the folder name."""
    return file_stem(path)


@dataclass
class CaseResult:
    """What one case produced (also written as ``report.json``)."""

    input: str
    ok: bool = False
    error: str = ""
    report: dict = field(default_factory=dict)
    nothing_to_segment: str = ""  # why the input holds no CT volume (a study's localizer, reformat ...): a batch skips it
    input_error: bool = False  # refused as input (InputError), not failed inside the pipeline


def _estimated_from_peaks(image) -> bool:
    """Whether the preprocessing's ``picture_hu`` step found the picture's air and soft-tissue peaks (the HU steps then run on it)."""
    estimate = image.meta.get(PICTURE_META)
    return bool(estimate) and json.loads(estimate).get("method") == "peaks"


class Predictor:
    """Load the bundle's inference workflow once and segment cases with it.

    Args:
        bundle_dir: bundle folder (see :func:`find_bundle`).
        model: checkpoint (state dict, e.g. ``models/model.pt``); default ``<bundle>/models/model.pt``.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` ...).
        batch_size: slices per forward pass.
        fast: the faster profile: the network at ``FAST_SCALE`` (0.8) of the bundle's ``spatial_size``, rounded to
            a multiple of 32 (128² for the shipped 160² weights: 1.56× fewer pixels; 256² for a 320² bundle). The HU
            boundary refinement restores most of the border detail the smaller input loses (see
            ``docs/validation.md``).
        series_uid: pick this series in DICOM folders.
        split_lr: label the mask 1 = right lung, 2 = left lung (NIfTI and DICOM SEG).
        formats: any of ``"nifti"``, ``"png"``, ``"dicom-seg"`` (volumes always get NIfTI, pictures PNG).
        progress: show progress bars.
        input_size: network input size (square) if the weights were trained at another size than the bundle's
            ``spatial_size``; overrides ``fast``.
        slab_slices: volumes go through the bundle's workflow in slabs of this many slices (every step before the
            3D post-processing is in-plane, so slabs give the same mask, up to the network's rounding on batches of
            other sizes); the slabs' masks are stitched into one uint8 volume, and the config's 3D steps
            (:data:`VOLUME_STEPS`) run on it. Memory then grows with the series only by the
            image and its uint8 mask.
        refine: the bundle's HU boundary refinement (``refine_boundary``: the network's blurred lung border
            re-decided by the CT's HU, volumes only); ``False``: the network's mask alone.
        remove_airways: the bundle's airway removal (``remove_airways``: the trachea and main bronchi, found in
            the CT's HU, are not lung; volumes only); ``False``: keep what the network calls lung there.
        picture_polarity: the bundle's ``picture_polarity`` for PNG/JPG input: ``"auto"`` (detect an inverted
            picture), ``"normal"`` or ``"inverted"``.

    Raises:
        InputError: when the bundle or the model file is missing.
    """

    def __init__(self, bundle_dir: str | None = None, model: str | None = None, device: str = "cpu",
                 batch_size: int = 8, fast: bool = False, series_uid: str | None = None, split_lr: bool = False,
                 formats: Sequence[str] = ("nifti",), progress: bool = True,
                 input_size: int | None = None, slab_slices: int = 64, refine: bool = True,
                 remove_airways: bool = True, picture_polarity: str = "auto") -> None:
        self.bundle = find_bundle(bundle_dir)
        self.model = Path(model) if model else self.bundle / "models" / "model.pt"
        if not self.model.is_file():
            raise InputError(self.model, "no trained weights here: train with `python -m monai.bundle run training "
                                         "--config_file configs/train.json ...` or pass --model PATH")
        bad = set(formats) - {"nifti", "png", "dicom-seg"}
        if bad:
            raise InputError(None, f"--format: unsupported {sorted(bad)}; choose from nifti, png, dicom-seg")
        check_device(device)
        if int(batch_size) < 1:
            raise InputError(None, f"--batch-size must be 1 or more, got {batch_size}")
        if int(slab_slices) < 1:
            raise InputError(None, f"--slab-slices must be 1 or more, got {slab_slices}")
        if input_size is not None and int(input_size) < ENCODER_STRIDE:
            raise InputError(None, f"--input-size must be {ENCODER_STRIDE} or more, got {input_size}")
        check_weights(self.model)
        self.device, self.batch_size, self.fast = device, int(batch_size), fast
        self.series_uid, self.split_lr, self.formats, self.progress = series_uid, split_lr, set(formats), progress
        self.input_size, self.slab_slices, self.refine = input_size, int(slab_slices), bool(refine)
        self.remove_airways = bool(remove_airways)
        if picture_polarity not in POLARITIES:
            raise InputError(None, f"--picture-polarity: expected auto, normal or inverted, got {picture_polarity!r}")
        self.picture_polarity = picture_polarity
        #: the network input size this Predictor overrides (``None``: the bundle's ``spatial_size``)
        self.network_size = int(input_size) if input_size else (fast_size(self.bundle) if fast else None)
        self._workflows: dict = {}
        self._volume_steps = None
        #: the last case whose files were all moved into place (``None`` before the first): a caller interrupted while
        #: ``predict`` returned can tell a finished case from an interrupted one
        self.last_done: CaseResult | None = None

    def close(self) -> None:
        """Release the workflows (network, checkpoint)."""
        self._workflows.clear()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def workflow(self, kind: str):
        """The bundle's inference ``ConfigWorkflow`` for ``"volume"`` kinds or ``"picture"`` (built once)."""
        key = "picture" if kind == "picture" else "volume"
        if key not in self._workflows:
            overrides = self._overrides()
            if key == "volume":
                overrides.update({f"post#{k}#_disabled_": True for k in VOLUME_STEPS})  # run on the stitched mask
                preload_itk()  # ITK's readers load on first use: here, not in the first case
            with quiet_logger("monai.bundle.workflows"):  # "logging file is set to False" is not news here
                # builds the network and loads the checkpoint once
                wf = load_inference_workflow(self.bundle, overrides, pictures=key == "picture", save=False)
            self._workflows[key] = wf
        return self._workflows[key]

    def _overrides(self) -> dict:
        overrides = {"ckpt_path": str(self.model), "device": f"$torch.device('{self.device}')",
                     "sw_batch_size": self.batch_size, "series_uid": self.series_uid, "input": [],
                     "check_weights": None}  # checked once, in __init__
        if not self.refine:
            overrides["refine_boundary"] = False
        if not self.remove_airways:
            overrides["remove_airways"] = False
        if self.picture_polarity != "auto":
            overrides["preprocessing#picture_polarity"] = self.picture_polarity
        if self.network_size:
            overrides["spatial_size"] = [self.network_size] * 2
        return overrides

    def _switch(self, name: str, kind: str = "volume") -> bool:
        """A boolean config id of the workflow for ``kind`` as configured (``refine_boundary``, ``remove_airways``)."""

        return as_bool(self.workflow(kind).parser.get_parsed_content(name), name)

    def volume_steps(self) -> list:
        """The bundle's 3D post-processing steps (:data:`VOLUME_STEPS`: ``post#remove_airways``, ``post#keep_lungs``,
        ``post#fill_holes`` of ``inference.json``, with their ``_disabled_`` flags and config values), parsed from the
        config; they run on whole masks."""
        if self._volume_steps is None:
            from monai.bundle import ConfigParser

            parser = ConfigParser()
            parser.read_config(str(self.bundle / "configs" / "inference.json"))
            parser.update({"bundle_root": str(self.bundle), **self._overrides()})
            steps = (parser.get_parsed_content(f"post#{k}") for k in VOLUME_STEPS)
            self._volume_steps = [t for t in steps if t is not None]
        return self._volume_steps

    def _infer_volume(self, image):
        """uint8 mask of a volume (or 2D slice), slab by slab through the bundle's workflow, then its 3D steps."""
        import torch
        from monai.data import MetaTensor


        wf, affine = self.workflow("volume"), image.affine
        mask = torch.zeros(tuple(image.shape), dtype=torch.uint8)
        if image.ndim == 2:
            mask[:] = _binary_pred(infer_tensors(wf, [image])[0]["pred"])
        else:
            meta = {k: v for k, v in image.meta.items() if k != "affine"}
            axis = head_foot_axis(affine)  # axial slabs, whatever the storage order (coronal/sagittal series too)
            starts = range(0, int(image.shape[axis]), self.slab_slices)
            if self.progress and len(starts) > 1:
                from tqdm import tqdm

                starts = tqdm(starts, desc="slabs", unit="slab")
            for z0 in starts:
                z = tuple(slice(z0, z0 + self.slab_slices) if a == axis else slice(None) for a in range(3))
                slab_affine = affine.clone()
                slab_affine[:3, 3] += affine[:3, axis] * z0  # the slab's first voxel is where it is in the volume
                slab = MetaTensor(image.as_tensor()[z], affine=slab_affine, meta=dict(meta))  # a meta of its own
                mask[z] = _binary_pred(infer_tensors(wf, [slab])[0]["pred"])
                del slab
        # the 3D steps (components, hole filling) on the mask's bounding box plus one voxel: the same result (the
        # box's background shell connects to the outside), on a third of a chest CT's voxels
        box = bounding_box(mask, margin=1)
        if box is None:
            return mask
        item = {"pred": MetaTensor(mask[box][None], affine=affine.clone()),
                "image_hu": image.as_tensor()[box][None]}  # a view: for post#remove_airways
        for step in self.volume_steps():  # a one-slice volume gets each step's slice rules (they check for it)
            item = step(item)
        mask[box] = _binary_pred(item["pred"])
        del item
        release_freed_memory()
        return mask

    def segment(self, case: str | os.PathLike, kind: str | None = None):
        """Segment one case in memory: the series is scanned once, its pixels are read once, and the image is handed
        to the bundle's inference workflow.

        Args:
            case: a DICOM series folder or file, a NIfTI/MHA/NRRD volume or a PNG/JPG slice.
            kind: what :func:`check_input` says ``case`` is (checked here when not given).

        Returns:
            ``(image, mask, info)``: the image as read (MetaTensor, no channel axis), the lung mask (``uint8``
            MetaTensor of the image's shape, on its grid, with its affine and meta) and a :class:`SeriesInfo`
            (``info.kind``; for DICOM series the selected series' UID, description, files in slice order and
            geometry warnings).

        Raises:
            InputError: for input the project's checks refuse.
        """
        from monai.data import MetaTensor


        case = Path(case)
        kind = kind or check_input(case, self.series_uid)
        if kind == "picture":
            image = LoadCTImage(series_uid=self.series_uid, image_only=True)(str(case))
            pred = infer_tensors(self.workflow(kind), [image])[0]["pred"]
            mask = _binary_pred(pred)
            image.meta[PICTURE_META] = pred.meta.get(PICTURE_META)  # how the picture_hu step read it as HU
        else:
            image = self._read_ct(case)
            mask = self._infer_volume(image)
        grid = tuple(image.shape[:2]) if kind == "picture" else tuple(image.shape)  # pictures: (x, y[, colour])
        if tuple(mask.shape) != grid:
            raise RuntimeError(f"mask shape {tuple(mask.shape)} differs from the image's {grid}")
        if kind == "series":
            info = select_ct_series(case, self.series_uid)  # the scan check_input made, not a second one
            info.kind = kind
        elif kind == "dicom" and (info := multiframe_info(case)) is not None:
            pass  # a multi-frame file: its series' description and geometry warnings
        else:
            tag = lambda t: str(image.meta.get(t, "")).strip()  # noqa: E731  (DICOM files carry their tags)
            info = SeriesInfo(uid=tag("0020|000e"), files=[case], kind=kind, modality=tag("0008|0060"),
                              description=tag("0008|103e"))
        meta = {k: v for k, v in image.meta.items() if k != "affine"}
        return image, MetaTensor(mask, affine=image.affine.clone(), meta=meta), info

    def _read_ct(self, case: Path):
        """A CT read once, in its stored type (``LoadCTImage(dtype="compact")``: int16 is half of float32)."""

        image = LoadCTImage(series_uid=self.series_uid, image_only=True, dtype="compact")(str(case))
        release_freed_memory()  # the reader's buffers
        return image

    def predict(self, case: str | os.PathLike, output_dir: str | os.PathLike, overwrite: bool = False) -> CaseResult:
        """Segment one case into ``output_dir`` (mask, report.json, qc.png, optional seg.dcm).

        The case's files are written into a temporary folder inside ``output_dir`` and moved into place together
        at the end, so they appear all at once or not at all. Existing results are kept unless ``overwrite``;
        with ``overwrite``, files of an earlier run that this run does not write again are removed.
        Bad input is reported in the result (``ok=False``, ``error``), not raised. ``KeyboardInterrupt`` (Ctrl-C,
        or SIGTERM through the CLI) propagates after the temporary folder is removed.
        """
        case = Path(case)
        res = CaseResult(input=str(case))
        self.last_done = None
        t0 = time.perf_counter()
        stage = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # geometry warnings are collected into the report instead
                kind = check_input(case, self.series_uid)
                out = check_output_dir(output_dir, inputs=(case,))
                existing = [out / n for n in RESULT_FILES if (out / n).exists()]
                if existing and not overwrite:
                    raise InputError(out, f"holds results of an earlier run ({existing[0].name}); "
                                          "pass --overwrite to replace them")
                stage = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=out))
                t1 = time.perf_counter()
                image, mask, info = self.segment(case, kind)
                t2 = time.perf_counter()
                report = self._finish(case, info, image, mask, stage)
            report["timings_s"] = {"checks": round(t1 - t0, 3), "read_and_bundle_inference": round(t2 - t1, 3),
                                   "postprocess_and_outputs": round(time.perf_counter() - t2, 3),
                                   "total": round(time.perf_counter() - t0, 3)}
            report["outputs"] = {k: str(out / Path(v).name) for k, v in report["outputs"].items()}
            outputs.write_json(report, stage / "report.json")
            with _signals_held():  # the files and the result together: an interrupt lands before or after both
                for old in existing:  # --overwrite: nothing of the earlier run survives next to the new files
                    old.unlink()
                for f in sorted(stage.iterdir()):
                    os.replace(f, out / f.name)
                res.ok, res.report = True, report
                self.last_done = res
        except NothingToSegment as e:
            res.error, res.nothing_to_segment, res.input_error = str(e), e.problem, True
        except InputError as e:
            res.error, res.input_error = str(e), True
        except KeyboardInterrupt:
            if not res.ok:  # else the interrupt came as the finished case returned: its files are all in place
                res.error = f"{case}: interrupted"
            raise
        except Exception as e:  # an unexpected failure in one case must not stop a batch
            logger.debug("case %s failed", case, exc_info=True)
            res.error = f"{case}: {type(e).__name__}: {e}"
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
        return res

    def _finish(self, case: Path, info, image, mask, out: Path) -> dict:
        """Write the case's outputs into ``out`` and return its report (see :mod:`fusionlungnet_monai.outputs`)."""

        kind = info.kind
        report: dict = {"input": str(case), "kind": kind, "version": __version__, "model": str(self.model),
                        "network_input": self.network_size or "bundle spatial_size",
                        "hu_boundary_refinement": self._switch("refine_boundary", kind) and (
                            kind != "picture" or _estimated_from_peaks(image)),
                        "airway_removal": kind != "picture" and self._switch("remove_airways"),
                        "body_mask": self._switch("body_mask", kind) and (kind != "picture" or _estimated_from_peaks(image)),
                        "outputs": {}, "warnings": []}
        mask = binary_view(mask)
        if kind == "picture":
            report["outputs"]["mask_png"] = outputs.write_mask_png(mask, out / "lungmask.png")
            pic = np.asarray(image, dtype=np.float32)
            if colour := outputs.colour_warning(pic):
                report["warnings"].append(colour)
            if pic.ndim == 3:  # RGB(A) -> grey, the luma the network's preprocessing uses
                pic = pic[..., :3] @ np.asarray(CTIntensityNormalize.LUMA, dtype=np.float32)
            report.update({"shape": list(mask.shape), "lung_pixels": int(mask.sum())})
            report["picture_window"] = json.loads(image.meta[PICTURE_META]) if image.meta.get(PICTURE_META) else None
            if (report["picture_window"] or {}).get("inverted"):
                report["warnings"].append("inverted picture (air brighter than tissue): segmented inverted; "
                                          "--picture-polarity normal|inverted says otherwise")
            if not mask.any():
                report["warnings"].append("empty mask: no lung found")
            second = None
            if report["picture_window"]:  # the picture's estimated HU, read as the picture_hu step read it
                est = report["picture_window"]
                hu = PictureToHU("inverted" if est["inverted"] else "normal", only_pictures=False)(pic[None])[0]
                report["second_opinion"], second, warn = outputs.picture_second_opinion(
                    mask, np.asarray(hu), trusted_hu=est["method"] == "peaks")
                report["warnings"] += warn
            report["outputs"]["qc_png"] = outputs.qc_overlay(pic[..., None], mask[..., None], out / "qc.png",
                                                             window=(0, 255),
                                                             second=None if second is None else second[..., None])
            return report
        if mask.ndim == 2:  # a 2D image (one slice): keep a slice axis for volumes and the NIfTI
            mask = mask[..., None]
        affine = outputs.affine_3d(np.asarray(image.affine))  # MONAI's RAS affine: what NIfTI stores
        ct = np.asarray(image).reshape(mask.shape)
        labels = split_left_right(mask, affine, ct) if self.split_lr else mask.view(np.uint8)
        report["outputs"]["mask_nifti"] = outputs.write_mask_nifti(labels, affine, out / "lungmask.nii.gz")
        report["labels"] = {"1": "right lung", "2": "left lung"} if self.split_lr else {"1": "lung"}
        if kind == "series" or info.frame_positions:  # a series, or a multi-frame file that holds one
            report.update({"series_uid": info.uid, "series_description": info.description})
        report["warnings"] += info.warnings
        lungs = outputs.describe_lungs(mask, ct, affine, out / "qc.png",
                                       labels=labels, spacing_known=not image.meta.get(SPACING_UNKNOWN))
        report["warnings"] += lungs.pop("warnings")
        report["outputs"].update(lungs.pop("outputs"))
        report.update(lungs)
        if "dicom-seg" in self.formats:
            if kind not in ("series", "dicom"):
                report["warnings"].append("DICOM SEG needs DICOM input; not written for this input")
            else:
                try:
                    report["outputs"]["dicom_seg"] = outputs.write_dicom_seg(labels, info.files, out / "seg.dcm",
                                                                             split=self.split_lr)
                except outputs.DicomSegUnavailable as e:  # the mask, volumes and picture still stand
                    report["warnings"].append(f"DICOM SEG not written: {e}")
        return report
