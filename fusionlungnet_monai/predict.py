"""Lung masks people can use: run the bundle's own inference workflow on DICOM series, DICOM files, NIfTI or
pictures, then add 3D post-processing, left/right volumes, a QC picture, an optional DICOM SEG and a report.

The network, preprocessing, inferer and post-processing are the bundle's (``configs/inference.json``, plus
``configs/inference_2d.json`` for pictures) run through MONAI's ``ConfigWorkflow``; nothing here re-implements them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fusionlungnet_monai.data.checks import IMAGE_SUFFIXES, check_input, check_output_dir, file_stem
from fusionlungnet_monai.data.errors import InputError
from fusionlungnet_monai.data.series import is_dicom_file
from fusionlungnet_monai.version import __version__
from fusionlungnet_monai.workflow import find_bundle, infer_tensors

__all__ = ["Predictor", "CaseResult", "case_name", "list_cases", "check_device", "check_weights", "PLAUSIBLE_LUNG_ML",
           "RESULT_FILES", "SECOND_OPINION_DICE"]

logger = logging.getLogger(__name__)

#: adult total lung volume range used for the plausibility warning (mL)
PLAUSIBLE_LUNG_ML = (1000.0, 10000.0)
FAST_SIZE = (160, 160)
#: below this Dice between the network and the classical segmentation, the report says "check this case"
SECOND_OPINION_DICE = 0.85
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


def check_weights(path: Path) -> None:
    """A FusionLungNet state dict (plain, or a checkpoint holding one under ``"model"``).

    Raises:
        InputError: when the file is not a PyTorch checkpoint or holds another network's weights.
    """
    import torch

    try:  # memory-mapped: only the keys are looked at here; the workflow loads the tensors once, later
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise InputError(path, f"not a PyTorch weights file ({type(e).__name__})") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not any(str(k).startswith("encoder.conv1") for k in sd) or \
            not any(str(k).startswith(("caa.", "fuse2.")) for k in sd):
        raise InputError(path, "does not hold FusionLungNet weights (a state dict with encoder/caa/fuse keys)")


def _is_dicom_entry(p: Path) -> bool:
    return p.is_file() and (p.suffix.lower() == ".dcm" or ("." not in p.name and is_dicom_file(p)))


def list_cases(path: str | os.PathLike, skipped: list | None = None) -> list[Path]:
    """The cases under ``path``: the path itself for a file or a DICOM series folder (DICOM files and no
    sub-folders); otherwise every sub-folder and image file of ``path``.

    Every other entry is added to ``skipped`` as ``(path, reason)``: hidden files, files that are not images,
    and loose DICOM files next to case folders (which would otherwise turn the whole folder into one series).

    Raises:
        InputError: when ``path`` does not exist.
    """
    path = Path(path)
    skipped = [] if skipped is None else skipped
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        return [path]
    entries = sorted(path.iterdir())
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
        elif p in dicoms:
            skipped.append((p, "loose DICOM file next to case folders: put a series in a folder of its own"))
        elif p.name.lower().endswith(IMAGE_SUFFIXES):
            cases.append(p)
        else:
            skipped.append((p, "not an image file or case folder"))
    if not cases and not dicoms:
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


class Predictor:
    """Load the bundle's inference workflow once and segment cases with it.

    Args:
        bundle_dir: bundle folder (see :func:`find_bundle`).
        model: checkpoint (state dict, e.g. ``models/model.pt``); default ``<bundle>/models/model.pt``.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` ...).
        batch_size: slices per forward pass.
        fast: the faster profile, 160×160 network input (~6× fewer FLOPs than 320²; the paper's Table 5 reports IoU
            97.93 at 160² vs 98.04 at 320²). The shipped weights are trained at 160², which is also the bundle's
            default ``spatial_size``; ``fast`` matters for a bundle configured at 320².
        series_uid: pick this series in DICOM folders.
        split_lr: label the mask 1 = right lung, 2 = left lung (NIfTI and DICOM SEG).
        formats: any of ``"nifti"``, ``"png"``, ``"dicom-seg"`` (volumes always get NIfTI, pictures PNG).
        progress: show progress bars.
        input_size: network input size (square) if the weights were trained at another size than the bundle's
            ``spatial_size``; overrides ``fast``.

    Raises:
        InputError: when the bundle or the model file is missing.
    """

    def __init__(self, bundle_dir: str | None = None, model: str | None = None, device: str = "cpu",
                 batch_size: int = 8, fast: bool = False, series_uid: str | None = None, split_lr: bool = False,
                 formats: Sequence[str] = ("nifti",), progress: bool = True,
                 input_size: int | None = None) -> None:
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
        if input_size is not None and int(input_size) < 32:
            raise InputError(None, f"--input-size must be 32 or more, got {input_size}")
        check_weights(self.model)
        self.device, self.batch_size, self.fast = device, int(batch_size), fast
        self.series_uid, self.split_lr, self.formats, self.progress = series_uid, split_lr, set(formats), progress
        self.input_size = input_size
        self._workflows: dict = {}

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
            from fusionlungnet_monai.workflow import load_inference_workflow

            overrides = {"ckpt_path": str(self.model),
                         "device": f"$torch.device('{self.device}')", "sw_batch_size": self.batch_size,
                         "series_uid": self.series_uid, "input": []}
            if key == "volume":  # SliceInferer's progress bar over slice batches
                overrides["inferer#progress"] = bool(self.progress)
            if self.input_size:
                overrides["spatial_size"] = [int(self.input_size)] * 2
            elif self.fast:
                overrides["spatial_size"] = list(FAST_SIZE)
            quiet = logging.getLogger("monai.bundle.workflows")
            level, quiet.level = quiet.level, logging.ERROR  # "logging file is set to False" is not news here
            try:  # builds the network and loads the checkpoint once
                wf = load_inference_workflow(self.bundle, overrides, pictures=key == "picture", save=False)
            finally:
                quiet.setLevel(level)
            self._workflows[key] = wf
        return self._workflows[key]

    def segment(self, case: str | os.PathLike, kind: str | None = None):
        """Segment one case in memory: the image is read once and handed to the bundle's inference workflow.

        Args:
            case: a DICOM series folder or file, a NIfTI/MHA/NRRD volume or a PNG/JPG slice.
            kind: what :func:`check_input` says ``case`` is (checked here when not given).

        Returns:
            ``(image, mask, kind)``: the image as read (MetaTensor, no channel axis), the lung mask (``uint8``
            numpy array of the image's shape, on its grid) and the kind.

        Raises:
            InputError: for input the project's checks refuse.
        """
        from fusionlungnet_monai.data.series import LoadCTImage

        case = Path(case)
        kind = kind or check_input(case, self.series_uid)
        image = LoadCTImage(series_uid=self.series_uid, image_only=True)(str(case))
        pred = infer_tensors(self.workflow(kind), [image])[0]["pred"]
        mask = (np.asarray(pred.detach().cpu())[0] > 0).astype(np.uint8)
        if mask.shape != tuple(image.shape):
            raise RuntimeError(f"mask shape {mask.shape} differs from the image's {tuple(image.shape)}")
        return image, mask, kind

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
                stage = Path(tempfile.mkdtemp(prefix=".fusionlungnet-partial-", dir=out))
                t1 = time.perf_counter()
                image, mask, _ = self.segment(case, kind)
                t2 = time.perf_counter()
                report = self._finish(case, kind, image, mask, stage)
            report["timings_s"] = {"checks": round(t1 - t0, 3), "read_and_bundle_inference": round(t2 - t1, 3),
                                   "postprocess_and_outputs": round(time.perf_counter() - t2, 3),
                                   "total": round(time.perf_counter() - t0, 3)}
            report["outputs"] = {k: str(out / Path(v).name) for k, v in report["outputs"].items()}
            (stage / "report.json").write_text(json.dumps(report, indent=1))
            for old in existing:  # --overwrite: nothing of the earlier run survives next to the new files
                old.unlink()
            for f in sorted(stage.iterdir()):
                os.replace(f, out / f.name)
            res.ok, res.report = True, report
        except InputError as e:
            res.error = str(e)
        except KeyboardInterrupt:
            res.error = f"{case}: interrupted"
            raise
        except Exception as e:  # an unexpected failure in one case must not stop a batch
            logger.debug("case %s failed", case, exc_info=True)
            res.error = f"{case}: {type(e).__name__}: {e}"
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
        return res

    def _finish(self, case: Path, kind: str, image, mask: np.ndarray, out: Path) -> dict:
        from fusionlungnet_monai.qc import qc_overlay
        from fusionlungnet_monai.volumes import lung_volumes, split_left_right

        report: dict = {"input": str(case), "kind": kind, "version": __version__, "model": str(self.model),
                        "network_input": self.input_size or (FAST_SIZE[0] if self.fast else "bundle spatial_size"),
                        "outputs": {}, "warnings": []}
        if kind == "picture":
            from PIL import Image

            dst = out / "lungmask.png"
            Image.fromarray((mask.T > 0).astype(np.uint8) * 255).save(dst)  # numpy (x, y) -> PIL rows = y
            report["outputs"]["mask_png"] = str(dst)
            pic = np.asarray(Image.open(case).convert("L"), dtype=np.float32).T[..., None]
            m = (mask > 0)[..., None]
            report["shape"] = list(pic.shape[:2])
            report["lung_pixels"] = int(m.sum())
            if not m.any():
                report["warnings"].append("empty mask: no lung found")
            report["outputs"]["qc_png"] = qc_overlay(pic, m, out / "qc.png", window=(0, 255))
            return report
        import nibabel as nib

        from fusionlungnet_monai.classical import classical_lung_mask, dice_score
        from fusionlungnet_monai.data.series import select_ct_series

        ct = np.asarray(image, dtype=np.float32)
        mask = mask > 0
        if mask.ndim == 2:  # a 2D image (one slice): keep a slice axis for volumes and the NIfTI
            mask, ct = mask[..., None], ct[..., None]
        affine = np.asarray(image.affine, dtype=np.float64)  # MONAI's RAS affine: what NIfTI stores
        if affine.shape == (3, 3):  # a 2D image's affine -> 3D, slice axis of 1 mm
            affine3d = np.eye(4)
            affine3d[:2, :2], affine3d[:2, 3] = affine[:2, :2], affine[:2, 2]
            affine = affine3d
        spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
        labels = split_left_right(mask, affine) if self.split_lr else mask.astype(np.uint8)
        dst = out / "lungmask.nii.gz"
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(dst))
        report["outputs"]["mask_nifti"] = str(dst)
        report["labels"] = {"1": "right lung", "2": "left lung"} if self.split_lr else {"1": "lung"}
        report.update({"shape": list(mask.shape), "spacing_mm": spacing, "num_slices": int(mask.shape[2])})
        report["volumes_ml"] = {k: (None if v is None else round(v, 1))
                                for k, v in lung_volumes(mask, spacing, affine).items()}
        source_files = [case]
        if kind == "series":
            info = select_ct_series(case, self.series_uid)
            source_files = info.files
            report["series_uid"] = info.uid
            report["series_description"] = info.description
            report["warnings"] += info.warnings
        nan = int(np.isnan(ct).sum())
        if not nan and str(case).lower().endswith((".nii", ".nii.gz")):  # ITK reads NIfTI NaN as 0: count them
            src = nib.load(str(case))
            if np.issubdtype(src.get_data_dtype(), np.floating):  # only float voxels can be NaN on disk
                nan = int(np.isnan(np.asarray(src.dataobj, dtype=np.float32)).sum())
        if nan:
            report["warnings"].append(f"{nan} voxels are NaN (not a number) in the input; they were read as a "
                                      "number (0 HU through ITK) and may punch holes in the mask")
            ct = np.nan_to_num(ct, nan=-1024.0)
        report["warnings"] += self._sanity(mask, ct, affine, report["volumes_ml"]["total_ml"])
        second = classical_lung_mask(ct, spacing)
        agreement = dice_score(mask, second)
        report["second_opinion"] = {"method": "classical 3D HU segmentation (threshold, components, hole filling)",
                                    "dice_with_network": round(agreement, 4),
                                    "check_below": SECOND_OPINION_DICE, "classical_ml": round(
                                        float(second.sum()) * float(np.prod(spacing)) / 1000.0, 1)}
        if mask.any() and agreement < SECOND_OPINION_DICE:
            report["warnings"].append(
                f"check this case: the network and the classical HU segmentation agree only at Dice {agreement:.2f} "
                f"(< {SECOND_OPINION_DICE}); see qc.png (red: network, cyan: classical). Dense lung (consolidation, "
                "effusion) lowers the classical score; a failed network lowers both")
        report["outputs"]["qc_png"] = qc_overlay(ct, mask, out / "qc.png", spacing=spacing, second=second)
        if "dicom-seg" in self.formats:
            if kind not in ("series", "dicom"):
                report["warnings"].append("DICOM SEG needs DICOM input; not written for this input")
            else:
                from fusionlungnet_monai.data.dicom_seg import write_dicom_seg

                report["outputs"]["dicom_seg"] = write_dicom_seg(labels, source_files, out / "seg.dcm",
                                                                 split=self.split_lr)
        return report

    @staticmethod
    def _sanity(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray, total_ml: float) -> list[str]:
        w = []
        if not mask.any():
            w.append("empty mask: no lung found")
        elif mask.shape[2] > 1 and not PLAUSIBLE_LUNG_ML[0] <= total_ml <= PLAUSIBLE_LUNG_ML[1]:
            w.append(f"lung volume {total_ml:.0f} mL is outside the plausible adult range "
                     f"{PLAUSIBLE_LUNG_ML[0]:.0f}-{PLAUSIBLE_LUNG_ML[1]:.0f} mL (partial chest coverage, a child, "
                     "or a failed segmentation)")
        lo = float(np.min(ct))
        if lo > -500:
            w.append(f"intensities do not look like HU (minimum {lo:.0f} > -500): is the input a CT in HU?")
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        normal = normal / max(np.linalg.norm(normal), 1e-9)
        if abs(normal[2]) < 0.9:
            w.append("the volume is not axial (slice normal far from the head-foot axis); a 2D axial model may fail")
        return w
