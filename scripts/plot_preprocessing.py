#!/usr/bin/env python
"""Render the paper's Fig. 11 panel (original, median, dynamic threshold, artifact removal) for a phantom slice
and a real CT slice, each step as the bundle runs it (320×320, default parameters)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from monai.transforms import EnsureChannelFirst, LoadImage, Resize

from fusionlungnet_monai.data import CTSeriesReader
from fusionlungnet_monai.phantom import make_phantom
from fusionlungnet_monai.transforms import ArtifactRemoval, CTIntensityNormalize, DynamicThreshold, MedianFilter

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "covid19_ny_sbu_sample" / "dicom" / "A046441" / "axial" / "19001111-045.dcm"


def stages(hu2d: np.ndarray) -> list[np.ndarray]:
    """[original, median, dynamic threshold, artifact removal] of an (x, y) HU slice, each (x, y) in [0, 1]."""
    x = CTIntensityNormalize(mode="hu")(torch.as_tensor(hu2d, dtype=torch.float32)[None])
    x = Resize((320, 320), mode="bilinear")(x)
    med = MedianFilter(1)(x)
    dt = DynamicThreshold()(med)
    ar = ArtifactRemoval(threshold=0.3, background=0.0)(dt)
    return [np.asarray(t)[0] for t in (x, med, dt, ar)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", default=str(ROOT / "docs" / "preprocessing.png"))
    a = p.parse_args()
    from PIL import Image, ImageDraw

    ph = make_phantom(1, size=512, seed=7, text="FLN 0042 L").image[..., 0].astype(np.float32)
    real = np.asarray(EnsureChannelFirst(channel_dim="no_channel")(LoadImage(reader=CTSeriesReader(),
                                                                           image_only=True)(str(REAL))))[0, ..., 0]
    rows = [stages(ph), stages(real)]
    titles = ["original (window)", "median 3x3", "dynamic threshold", "artifact removal"]
    tile, pad, head = 320, 6, 22
    canvas = Image.new("L", (4 * tile + 5 * pad, head + 2 * tile + 3 * pad), 255)
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(titles):
        draw.text((pad + c * (tile + pad) + 4, 5), t, fill=0)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            canvas.paste(Image.fromarray((np.clip(img.T, 0, 1) * 255).astype(np.uint8)),
                         (pad + c * (tile + pad), head + pad + r * (tile + pad)))
    canvas.save(a.output)
    print(a.output)


if __name__ == "__main__":
    main()
