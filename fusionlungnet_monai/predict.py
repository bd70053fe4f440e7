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

__all__ = ["Predictor", "CaseResult", "case_name", "list_cases", "PLAUSIBLE_LUNG_ML"]

logger = logging.getLogger(__name__)

#: adult total lung volume range used for the plausibility warning (mL)
PLAUSIBLE_LUNG_ML = (1000.0, 10000.0)
FAST_SIZE = (160, 160)


def _is_case_dir(d: Path) -> bool:
    """A folder is one case when it holds DICOM files itself (a series folder)."""
    return any(p.is_file() and (p.suffix.lower() == ".dcm" or ("." not in p.name and is_dicom_file(p)))
               for p in d.iterdir())


def list_cases(path: str | os.PathLike) -> list[Path]:
    """One case for a file or a DICOM series folder; otherwise every sub-folder and image file of ``path``."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file() or _is_case_dir(path):
        return [path]
    cases = sorted(p for p in path.iterdir() if p.is_dir() or p.name.lower().endswith(IMAGE_SUFFIXES))
    if not cases:
        # nested DICOM layouts (study/series/...): treat the folder as one case and let series selection decide
        return [path]
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
        fast: the faster profile: 160×160 network input instead of 320×320 (~6× fewer FLOPs; the paper's Table 5
            reports IoU 97.93 at 160² vs 98.04 at 320²). Weights trained at 320² still run; best accuracy needs
            weights trained at the same size.
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
            raise ValueError(f"formats: unsupported {sorted(bad)}; choose from nifti, png, dicom-seg.")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise InputError(None, "--device cuda requested but no CUDA device is available")
        self.device, self.batch_size, self.fast = device, int(batch_size), fast
        self.series_uid, self.split_lr, self.formats, self.progress = series_uid, split_lr, set(formats), progress
        self.input_size = input_size
        self._workflows: dict = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="fusionlungnet_"))

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

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
                         "series_uid": self.series_uid, "output_dir": str(self._tmp / key), "input": []}
            if key == "volume":  # SliceInferer's progress bar over slice batches
                overrides["inferer#progress"] = bool(self.progress)
            if self.input_size:
                overrides["spatial_size"] = [int(self.input_size)] * 2
            elif self.fast:
                overrides["spatial_size"] = list(FAST_SIZE)
            quiet = logging.getLogger("monai.bundle.workflows")
            level, quiet.level = quiet.level, logging.ERROR  # "logging file is set to False" is not news here
            try:  # builds the network and loads the checkpoint once
                wf = load_inference_workflow(self.bundle, overrides, pictures=key == "picture")
            finally:
                quiet.setLevel(level)
            self._workflows[key] = wf
        return self._workflows[key]

    def _run_bundle(self, case: Path, kind: str) -> Path:
        wf = self.workflow(kind)
        out = Path(wf.parser.get_parsed_content("output_dir"))
        shutil.rmtree(out, ignore_errors=True)
        infer_tensors(wf, [case])
        produced = sorted(out.glob("*"))
        if len(produced) != 1:
            raise RuntimeError(f"expected one mask from the bundle, found {len(produced)} in {out}")
        return produced[0]

    def predict(self, case: str | os.PathLike, output_dir: str | os.PathLike) -> CaseResult:
        """Segment one case into ``output_dir`` (mask, report.json, qc.png, optional seg.dcm).

        Bad input is reported in the result (``ok=False``, ``error``), not raised.
        """
        case = Path(case)
        res = CaseResult(input=str(case))
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # geometry warnings are collected into the report instead
                kind = check_input(case, self.series_uid)
                out = check_output_dir(output_dir, inputs=(case,))
                t1 = time.perf_counter()
                mask_file = self._run_bundle(case, kind)
                t2 = time.perf_counter()
                report = self._finish(case, kind, mask_file, out)
            report["timings_s"] = {"checks": round(t1 - t0, 3), "bundle_inference": round(t2 - t1, 3),
                                   "postprocess_and_outputs": round(time.perf_counter() - t2, 3),
                                   "total": round(time.perf_counter() - t0, 3)}
            (out / "report.json").write_text(json.dumps(report, indent=1))
            res.ok, res.report = True, report
        except InputError as e:
            res.error = str(e)
        except Exception as e:  # an unexpected failure in one case must not stop a batch
            logger.exception("case %s failed", case)
            res.error = f"{case}: {type(e).__name__}: {e}"
        return res

    def _finish(self, case: Path, kind: str, mask_file: Path, out: Path) -> dict:
        from fusionlungnet_monai.qc import qc_overlay
        from fusionlungnet_monai.volumes import lung_volumes, split_left_right

        report: dict = {"input": str(case), "kind": kind, "version": __version__, "model": str(self.model),
                        "network_input": self.input_size or (FAST_SIZE[0] if self.fast else "bundle spatial_size"), "outputs": {}, "warnings": []}
        if kind == "picture":
            dst = out / "lungmask.png"
            shutil.move(str(mask_file), dst)
            report["outputs"]["mask_png"] = str(dst)
            from PIL import Image

            pic = np.asarray(Image.open(case).convert("L"), dtype=np.float32).T[..., None]
            m = (np.asarray(Image.open(dst)).T > 0)[..., None]
            report["shape"] = list(pic.shape[:2])
            report["lung_pixels"] = int(m.sum())
            if not m.any():
                report["warnings"].append("empty mask: no lung found")
            report["outputs"]["qc_png"] = qc_overlay(pic, m, out / "qc.png", window=(0, 255))
            return report
        import nibabel as nib
        from monai.transforms import LoadImage

        from fusionlungnet_monai.data.series import CTSeriesReader, select_ct_series

        nii = nib.load(str(mask_file))
        mask = np.asarray(nii.dataobj) > 0
        affine = nii.affine
        spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
        labels = split_left_right(mask, affine) if self.split_lr else mask.astype(np.uint8)
        dst = out / "lungmask.nii.gz"
        img = nib.Nifti1Image(labels.astype(np.uint8), affine, nii.header)
        nib.save(img, str(dst))
        report["outputs"]["mask_nifti"] = str(dst)
        report["labels"] = {"1": "right lung", "2": "left lung"} if self.split_lr else {"1": "lung"}
        ct = np.asarray(LoadImage(reader=CTSeriesReader(series_uid=self.series_uid), image_only=True)(str(case)))
        if ct.ndim == 2:
            ct = ct[..., None]
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
        report["warnings"] += self._sanity(mask, ct, affine, report["volumes_ml"]["total_ml"])
        report["outputs"]["qc_png"] = qc_overlay(ct, mask, out / "qc.png", spacing=spacing)
        if "dicom-seg" in self.formats:
            if kind not in ("series", "dicom"):
                report["warnings"].append("DICOM SEG needs DICOM input; not written for this input")
            else:
                from fusionlungnet_monai.data.dicom_seg import write_dicom_seg

                seg = out / "seg.dcm"
                if seg.exists():
                    seg.unlink()
                report["outputs"]["dicom_seg"] = write_dicom_seg(labels, source_files, seg, split=self.split_lr)
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
