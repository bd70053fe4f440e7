"""Figures for docs/: how real the v2 phantoms look, and what the classical segmentation does on real CT.

- ``docs/phantom_realism.png``: HU histograms inside the lung and inside the body (outside the lung), for real chest
  CT (LIDC-IDRI slabs, elastix crop) against 24 v2 phantoms, plus a sample slice of each; noise (std of a
  high-pass residual in the lung) per source goes into ``docs/phantom_realism.json``.
- ``docs/classical_qc.png``: the classical segmentation's outline on every real sample (axial middle slices).

Usage: python scripts/plot_realism.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DOCS = ROOT / "docs"


def load(path):
    from fusionlungnet_monai.data import load_ct_lps

    ct, spacing = load_ct_lps(path)
    return ct.astype(np.float32), spacing


def noise_hu(ct, lung):
    resid = ct - ndimage.uniform_filter(ct, size=(3, 3, 1))
    core = ndimage.binary_erosion(lung, iterations=3)
    return float(np.std(resid[core])) if core.any() else float("nan")


def gray(sl, lo=-1350, hi=150):
    return (np.clip((sl - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.phantom import make_chest_phantom

    real = {"LIDC-IDRI-0002": DATA / "lidc_idri_slabs" / "LIDC-IDRI-0002",
            "LIDC-IDRI-0003": DATA / "lidc_idri_slabs" / "LIDC-IDRI-0003",
            "elastix crop": DATA / "elastix_lung_small" / "3DCT_lung_baseline_small.mha"}
    bins = np.linspace(-1100, 400, 151)
    stats, hist, samples = {}, {}, {}
    for name, path in real.items():
        ct, sp = load(path)
        lung = classical_lung_mask(ct, sp) > 0
        body = ndimage.binary_fill_holes(ct > -500, structure=np.ones((3, 3, 1))) & ~lung
        hist[name] = (np.histogram(ct[lung], bins, density=True)[0], np.histogram(ct[body], bins, density=True)[0])
        stats[name] = {"lung_median_hu": float(np.median(ct[lung])), "body_median_hu": float(np.median(ct[body])),
                       "lung_noise_hu": noise_hu(ct, lung)}
        samples[name] = gray(ct[:, :, ct.shape[2] // 2].T)
    lh, bh, st = [], [], []
    for seed in range(24):
        ph = make_chest_phantom(20_000 + seed, size=256)
        ct, lung = ph.image.astype(np.float32), ph.mask > 0
        body = ph.body & ~lung
        lh.append(np.histogram(ct[lung], bins, density=True)[0])
        bh.append(np.histogram(ct[body], bins, density=True)[0])
        st.append((float(np.median(ct[lung])), float(np.median(ct[body])), noise_hu(ct, lung)))
        if seed < 3:
            k = int(np.argmax(lung.sum((0, 1))))
            samples[f"phantom v2 #{seed}"] = gray(ct[:, :, k].T)
    hist["phantoms v2 (24)"] = (np.mean(lh, 0), np.mean(bh, 0))
    st = np.asarray(st)
    stats["phantoms v2 (24)"] = {"lung_median_hu": [float(st[:, 0].min()), float(st[:, 0].max())],
                                 "body_median_hu": [float(st[:, 1].min()), float(st[:, 1].max())],
                                 "lung_noise_hu": [float(np.nanmin(st[:, 2])), float(np.nanmax(st[:, 2]))]}
    fig = plt.figure(figsize=(13, 7))
    centres = 0.5 * (bins[1:] + bins[:-1])
    for i, title in enumerate(("inside the lung", "inside the body, outside the lung")):
        ax = fig.add_subplot(2, 2, i + 1)
        for name, h in hist.items():
            ax.plot(centres, h[i], lw=2.5 if "phantom" in name else 1.2, label=name)
        ax.set_title(f"HU histogram {title}")
        ax.set_xlabel("HU")
        ax.legend(fontsize=8)
    for j, (name, img) in enumerate(samples.items()):
        ax = fig.add_subplot(2, len(samples), len(samples) + j + 1)
        ax.imshow(img, cmap="gray")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(DOCS / "phantom_realism.png", dpi=80)
    (DOCS / "phantom_realism.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats, indent=1))

    # classical segmentation QC on every real sample
    covid = sorted((DATA / "covid19_ny_sbu_sample" / "dicom").rglob("axial/*.dcm"))
    items = list(real.items()) + [("TotalSeg abdomen (JPEG 2000)", DATA / "totalseg_example_ct" / "dicom"),
                                  ("TotalSeg small CT", DATA / "totalseg_example_ct" / "nifti_sm" / "example_ct_sm.nii.gz")]
    items += [(f"COVID-19-NY-SBU {p.parent.parent.name}/{p.name}", p) for p in covid]
    fig, axes = plt.subplots(2, (len(items) + 1) // 2, figsize=(3 * ((len(items) + 1) // 2), 6.4))
    for ax, (name, path) in zip(axes.ravel(), items):
        ct, sp = load(path)
        m = classical_lung_mask(ct, sp) > 0
        k = int(np.argmax(m.sum((0, 1)))) if m.any() else ct.shape[2] // 2
        g = gray(ct[:, :, k].T)
        rgb = np.stack([g] * 3, -1)
        edge = m[:, :, k].T & ~ndimage.binary_erosion(m[:, :, k].T)
        rgb[edge] = [255, 40, 40]
        ax.imshow(rgb)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(DOCS / "classical_qc.png", dpi=80)
    print(f"wrote {DOCS / 'phantom_realism.png'} and {DOCS / 'classical_qc.png'}")


if __name__ == "__main__":
    main()
