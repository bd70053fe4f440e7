#!/usr/bin/env python
"""End-to-end demo on synthetic phantoms (called by scripts/demo.sh).

phantoms -> datalist -> `python -m monai.bundle run training` -> `run evaluating` -> DICOM-series inference
with `configs/inference.json` -> lung mask NIfTI in the scanner's geometry, Dice against the phantom's exact
mask, lung volume, and a QC picture. Everything is written under --output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bundle(*args: str) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    print("[demo] $ python -m monai.bundle " + " ".join(args), flush=True)
    r = subprocess.run(cmd, cwd=ROOT / "bundle", capture_output=True, text=True)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "Metrics --" in ln or "train_loss" in ln
             or "writing:" in ln or "picked" in ln]
    for ln in lines[-12:]:
        print("        " + ln.split(" - ")[-1][:160])
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"[demo] bundle command failed: {' '.join(args[:2])}")


def segment_real_sample(out: Path) -> Path | None:
    """Segment the real elastix chest CT crop with the shipped weights and print the Dice against its mask."""
    from fusionlungnet_monai.classical import dice_score
    from fusionlungnet_monai.data import LoadCTImage
    from fusionlungnet_monai.predict import Predictor

    model = ROOT / "bundle" / "models" / "model.pt"
    data = ROOT / "tests" / "data" / "elastix_lung_small"
    if not model.is_file():
        print("[demo] no shipped weights (bundle/models/model.pt): real-CT step skipped")
        return None
    dst = out / "real_elastix"
    with Predictor(model=str(model), progress=False) as predictor:
        res = predictor.predict(data / "3DCT_lung_baseline_small.mha", dst, overwrite=True)
    if not res.ok:
        raise SystemExit(f"[demo] real CT failed: {res.error}")
    import nibabel as nib

    pred = np.asarray(nib.load(str(dst / "lungmask.nii.gz")).dataobj) > 0
    ref = np.asarray(LoadCTImage(image_only=True)(str(data / "3DCT_lung_baseline_small_mask.mha"))) > 0
    pred = pred.reshape(ref.shape)
    dice = dice_score(pred, ref)
    second = res.report["second_opinion"]["dice_with_network"]
    print(f"[demo] real CT (elastix lung crop, shipped weights): Dice {dice:.3f} against its reference mask; "
          f"agreement with the classical second opinion {second:.3f}")
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="output folder (an earlier demo there is replaced)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--size", type=int, default=96, help="network input size for the demo run (paper: 320)")
    args = p.parse_args()
    from fusionlungnet_monai.data import make_datalist
    from fusionlungnet_monai.phantom import write_phantom_case
    from fusionlungnet_monai.outputs import qc_overlay

    out = Path(args.output).resolve()
    if (out / ".fln_demo").exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".fln_demo").touch()
    t0 = time.time()
    data = out / "phantoms"
    for i in range(4):  # training/validation slices
        write_phantom_case(str(data), f"train{i:02d}", seed=i, num_slices=16, size=256, formats=("png",))
    test = write_phantom_case(str(data), "test00", seed=100, num_slices=24, size=256, formats=("dicom", "nifti"))
    make_datalist(data / "png", data / "png" / "datalist.json", val_fraction=0.25)
    print(f"[demo] phantoms written under {data} ({time.time() - t0:.0f} s)")

    run = out / "bundle_run"
    small = ["--spatial_size", f"[{args.size},{args.size}]", "--batch_size", "8", "--num_workers", "0"]
    bundle("run", "training", "--config_file", "configs/train.json", "--bundle_root", str(run),
           "--dataset_dir", str(data / "png"), "--max_epochs", str(args.epochs), "--precise_bn_batches", "4", *small)
    bundle("run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
           "--bundle_root", str(run), "--dataset_dir", str(data / "png"), *small)
    series = data / "dicom" / "test00"
    bundle("run", "--config_file", "configs/inference.json", "--bundle_root", str(run), "--input", str(series),
           "--output_dir", str(out / "predictions"), "--spatial_size", f"[{args.size},{args.size}]")

    import nibabel as nib

    mask_path = out / "predictions" / "test00_lungmask.nii.gz"
    pred = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    ph = test["phantom"]
    gt = ph.mask > 0
    dice = 2 * np.sum(pred & gt) / max(np.sum(pred) + np.sum(gt), 1)
    ml = float(pred.sum()) * float(np.prod(ph.spacing)) / 1000
    qc_overlay(ph.image, pred, out / "qc_overlay.png", spacing=ph.spacing)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    print(f"[demo] validation slices: IoU {summary['val_iou']:.3f}, F1 {summary['val_f1']:.3f} "
          f"(global IoU {summary['val_iou_global']:.3f})")
    print(f"[demo] DICOM series {series.name}: Dice vs exact phantom mask {dice:.3f}; lung volume {ml:.0f} mL "
          f"(exact {ph.lung_volume_ml:.0f} mL)")
    real_out = segment_real_sample(out)
    print(f"[demo] done in {time.time() - t0:.0f} s. Outputs:")
    print(f"        checkpoint      {run / 'models' / 'model.pt'}")
    print(f"        metrics         {run / 'eval' / 'summary.json'}, {run / 'eval' / 'per_image.csv'}")
    print(f"        lung mask       {mask_path}")
    print(f"        QC picture      {out / 'qc_overlay.png'}")
    if real_out:
        print(f"        real CT (shipped weights) {real_out}")


if __name__ == "__main__":
    main()
