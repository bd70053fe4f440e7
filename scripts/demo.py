#!/usr/bin/env python
"""End-to-end demo on synthetic phantoms (called by scripts/demo.sh)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from fusionlungnet_monai import FusionLungNet
from fusionlungnet_monai.data import write_phantom_case


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", required=True, help="output folder (replaced if it holds an earlier demo)")
    p.add_argument("--slices", type=int, default=24, help="slices per phantom")
    args = p.parse_args()
    out = Path(args.output)
    if (out / ".fln_demo").exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".fln_demo").touch()
    t0 = time.time()
    for i in range(2):
        res = write_phantom_case(str(out / "phantoms"), case_id=f"phantom{i:03d}", seed=i, num_slices=args.slices)
        print(f"[demo] phantom{i:03d}: DICOM series + localizer, NIfTI, PNG; lung volume {res['phantom'].lung_volume_ml:.0f} mL")
    net = FusionLungNet().eval()
    n = sum(p.numel() for p in net.parameters())
    with torch.inference_mode():
        y = net(torch.rand(1, 1, 320, 320))
    print(f"[demo] FusionLungNet: {n / 1e6:.2f} M parameters, eval output {tuple(y.shape)} (logits)")
    print(f"[demo] done in {time.time() - t0:.1f} s; outputs under {out}")


if __name__ == "__main__":
    main()
