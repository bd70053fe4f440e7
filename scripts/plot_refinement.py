#!/usr/bin/env python
"""QC figure of the HU boundary refinement on real CT: for each slice, the network's mask alone (red,
``--no-refine``) over the shipped pipeline's mask (cyan, visible where the two differ), on the CT in a lung window
(the QC picture's drawing), with the area the refinement adds and removes.

The slices are the COVID-19-NY-SBU axial slices (consolidation and ground glass touching the pleura: where a
threshold in HU could cut dense lung away), the middle slice of the LIDC-IDRI-0003 slab and a slice of the elastix
crop. Usage: python scripts/plot_refinement.py [--output docs/refinement_qc.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
COVID = DATA / "covid19_ny_sbu_sample" / "dicom"
CASES = [COVID / "A046441" / "axial" / "19001111-045.dcm", COVID / "A046441" / "axial" / "19010101-23.dcm",
         COVID / "A072894" / "axial" / "19010103-40.dcm", COVID / "A072894" / "axial" / "19001203-066.dcm",
         DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003", DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha"]


def _tile(ct: np.ndarray, network: np.ndarray, shipped: np.ndarray, size: int):
    """An RGB PIL tile of an (x, y) HU slice in the lung window: the network's outline red over the shipped one's
    cyan (the QC picture's drawing)."""
    from PIL import Image

    from fusionlungnet_monai.outputs.qc import LUNG_DISPLAY_WINDOW, outline_view

    img = Image.fromarray(outline_view(ct.T, network.T > 0, LUNG_DISPLAY_WINDOW, shipped.T > 0))
    scale = size / max(img.size)
    return img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))), Image.NEAREST)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=str(ROOT / "docs" / "refinement_qc.png"))
    p.add_argument("--tile", type=int, default=300)
    a = p.parse_args()
    from PIL import Image, ImageDraw

    from fusionlungnet_monai.predict import Predictor

    panels = []
    masks = {}
    for refine in (True, False):
        with Predictor(progress=False, refine=refine) as pred:
            for case in CASES:
                image, mask, _ = pred.segment(case)
                masks[(case, refine)] = np.asarray(mask)
                if refine:
                    panels.append((case, np.asarray(image, dtype=np.float32), [float(s) for s in image.pixdim[:2]]))
    tiles, head, pad = [], 34, 6
    for case, ct, sp in panels:
        shipped, network = masks[(case, True)], masks[(case, False)]
        if ct.ndim == 3:  # the slab's middle slice (elastix: a slice through both lung levels' middle)
            k = ct.shape[2] // 2
            ct, shipped, network = ct[..., k], shipped[..., k], network[..., k]
        px = sp[0] * sp[1] / 100.0  # cm² per pixel
        added = float(((shipped > 0) & (network == 0)).sum()) * px
        removed = float(((shipped == 0) & (network > 0)).sum()) * px
        name = case.name if case.suffix else case.name + " (middle slice)"
        text = f"{name}\nrefinement +{added:.1f} / -{removed:.1f} cm2 (lung {float((shipped > 0).sum()) * px:.0f} cm2)"
        tiles.append((text, _tile(ct, network, shipped, a.tile)))
        print(text.replace("\n", ": "), flush=True)
    cols = 3
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (a.tile + pad) + pad, rows * (a.tile + head + pad) + pad + 18), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), "cyan: shipped pipeline (HU boundary refinement), where it differs   red: network alone "
                        "(--no-refine)",
              fill=(0, 0, 0))
    for i, (text, tile) in enumerate(tiles):
        x, y = pad + (i % cols) * (a.tile + pad), 18 + pad + (i // cols) * (a.tile + head + pad)
        draw.text((x, y), text, fill=(0, 0, 0))
        canvas.paste(tile, (x, y + head))
    canvas.quantize(colors=64).save(a.output, optimize=True)  # a small file: greys and two outline colours
    print(a.output)


if __name__ == "__main__":
    main()
