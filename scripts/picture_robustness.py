"""The paper's setting, as people export it: real chest CT slices as 8-bit PNG pictures through the windows viewers
use, segmented by ``fusionlungnet predict``'s ``Predictor`` (shipped weights, defaults). IoU per slice against the
classical HU segmentation of the true HU (a pseudo-label: these LIDC-IDRI slabs have no expert masks).

Windows: lung W1500/L-600, inverted lung, mediastinal W400/L40, wide (the full CT range), the paper's [-1024, 600],
gamma 0.5 and 2 on the lung window, JPEG quality 30, 8-bit noise (sigma 8 grey levels), the mediastinal window
inverted and with noise, and a wide window that keeps the scanner's padding, inverted, as JPEG quality 60.

Usage: python scripts/picture_robustness.py [--no-picture-hu]   # --no-picture-hu: pictures scaled /255 (0.3.13)
       [--model WEIGHTS] [--cases LIDC-IDRI-0003]   # other weights; only the held-out slab (0002 is trained on)
       python scripts/picture_robustness.py --evaluate   # the same pictures and masks as a folder of slice/mask
                                                          # pairs through `python -m monai.bundle run evaluating`
                                                          # (the network alone, at its input grid; six metrics)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "lidc_idri_slabs"
MODEL = ROOT / "bundle" / "models" / "model.pt"
CASES = ("LIDC-IDRI-0002", "LIDC-IDRI-0003")
WINDOWS = {"lung": dict(width=1500, level=-600), "inverted": dict(width=1500, level=-600, invert=True),
           "mediastinal": dict(width=400, level=40), "wide": dict(width=4096, level=1024),
           "paper [-1024, 600]": dict(width=1624, level=-212),
           "gamma 0.5": dict(width=1500, level=-600, gamma=0.5), "gamma 2": dict(width=1500, level=-600, gamma=2.0),
           "JPEG q30": dict(width=1500, level=-600, jpeg_quality=30),
           "noise 8": dict(width=1500, level=-600, noise=8),
           "mediastinal, inverted": dict(width=400, level=40, invert=True),
           "mediastinal, noise 8": dict(width=400, level=40, noise=8),
           "W3000/L-700, JPEG q60, inverted": dict(width=3000, level=-700, jpeg_quality=60, invert=True)}


def main(argv=None) -> dict:
    from PIL import Image

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps
    from fusionlungnet_monai.predict import Predictor
    from fusionlungnet_monai.transforms import render_window

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-picture-hu", action="store_true", help="switch the preprocessing's picture_hu step off (pictures /255)")
    ap.add_argument("--evaluate", action="store_true", help="score through the bundle's evaluate.json instead")
    ap.add_argument("--model", default=str(MODEL), help="the weights (default: the shipped ones)")
    ap.add_argument("--cases", default=",".join(CASES), help="LIDC-IDRI slabs of tests/data (comma-separated)")
    a = ap.parse_args(argv)
    cases = [c for c in a.cases.split(",") if c]
    if a.evaluate:
        return evaluate(a.model, cases)
    pr = Predictor(model=a.model, progress=False)
    if a.no_picture_hu:
        base = pr._overrides
        pr._overrides = lambda: {**base(), "preprocessing#disabled": ["picture_hu"]}
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            ct, sp = load_ct_lps(DATA / case)
            ref = classical_lung_mask(ct, sp) > 0
            for z in (1, ct.shape[2] // 2, ct.shape[2] - 2):
                for name, kw in WINDOWS.items():
                    pic = render_window(ct[:, :, z], rng=np.random.default_rng(z), **kw)
                    path = Path(tmp) / "slice.png"
                    Image.fromarray(np.ascontiguousarray(pic.T)).save(path)  # PIL rows are the y axis
                    m = np.asarray(pr.segment(path)[1]) > 0
                    r = ref[:, :, z]
                    rows.setdefault(name, []).append(float((m & r).sum() / max((m | r).sum(), 1)))
    print("| window | mean IoU | per slice (" + "; ".join(f"{c[-4:]} z1, middle, last but one" for c in cases)
          + ") |\n|---|---|---|")
    for name, v in rows.items():
        print(f"| {name} | {np.mean(v):.3f} | {' '.join(f'{x:.2f}' for x in v)} |")
    return rows


def pictures(folder: Path, cases=None) -> dict:
    """Write every slice through every window as ``folder/images/<window>__<slice>.png`` with its reference mask
    (0/255) under ``folder/masks``; returns ``{file stem: window}``."""
    from PIL import Image

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.data import load_ct_lps
    from fusionlungnet_monai.transforms import render_window

    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    stems = {}
    for case in cases or CASES:
        ct, sp = load_ct_lps(DATA / case)
        ref = classical_lung_mask(ct, sp) > 0
        for z in (1, ct.shape[2] // 2, ct.shape[2] - 2):
            for w, (name, kw) in enumerate(WINDOWS.items()):
                stem = f"w{w:02d}__{case[-4:]}_z{z:02d}"
                pic = render_window(ct[:, :, z], rng=np.random.default_rng(z), **kw)
                Image.fromarray(np.ascontiguousarray(pic.T)).save(folder / "images" / f"{stem}.png")
                Image.fromarray(np.ascontiguousarray(ref[:, :, z].T.astype(np.uint8) * 255)).save(
                    folder / "masks" / f"{stem}.png")
                stems[stem] = name
    return stems


def evaluate(model=None, cases=None) -> dict:
    """The pictures as a folder of slice/mask pairs through ``python -m monai.bundle run evaluating`` (``model``,
    default the shipped weights): per window, the mean of the images' IoU, Dice (F1), precision, recall, accuracy
    and MCC."""
    import csv
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stems = pictures(folder, cases)
        items = [{"image": f"images/{s}.png", "label": f"masks/{s}.png"} for s in sorted(stems)]
        (folder / "datalist.json").write_text(json.dumps({"training": items[:1], "validation": items}))
        cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file",
               "['configs/train.json','configs/evaluate.json']", "--bundle_root", str(ROOT / "bundle"),
               "--dataset_dir", str(folder), "--eval_ckpt", str(model or MODEL),
               "--output_dir", str(folder / "eval"), "--num_workers", "0", "--progress_bar", "false"]
        subprocess.run(cmd, check=True, cwd=ROOT / "bundle", stdout=subprocess.DEVNULL)
        with open(folder / "eval" / "per_image.csv") as f:
            per_image = list(csv.DictReader(f))
    metrics = [k for k in per_image[0] if k != "filename"]
    rows: dict = {}
    for row in per_image:
        rows.setdefault(stems[Path(row["filename"]).stem], []).append({k: float(row[k]) for k in metrics})
    print("| window | " + " | ".join(m.replace("val_", "") for m in metrics) + " |\n|---|" + "---|" * len(metrics))
    for name, v in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean([r[m] for r in v]):.3f}" for m in metrics) + " |")
    return rows


if __name__ == "__main__":
    main()
